"""The container config files of the world, as pmxcfs shows them on a PVE host: /etc/pve/nodes/<node>/lxc/<vmid>.conf.

On PVE a container's config is one file, read and written both by the API and by anyone on the host:
the API cannot set raw `lxc.*` lines, and only root@pam (not an API token) may set bind mount points,
so phoenix edits the file through the host transport for those (lxc_conf.<id>, docs/decisions/0016).
fakepve keeps configs in memory only. This mirror gives the world's host (PHOENIX_HOST_ROOT in the
tests and the demo) the files: written from fakepve's config after every request that can change a
container, and read back before a request touches one, so what phoenix writes into a file is what the
API then shows (`lxc` as [[key, value], ...] and the bind `mpN` keys, as PVE's GET config does).

Only the containers a request names (in its path or its task's UPID) and those created or destroyed
are synced, so a site of thousands of guests costs nothing per request. Snapshot sections are not
mirrored: phoenix never edits them.
"""

import os
import re

RAW = re.compile(r'^(lxc\.[a-zA-Z0-9_.\-]+)\s*[:=]\s*(.*?)\s*$')
KEY = re.compile(r'^([a-z][a-z0-9_\-]*)\s*:\s*(.*?)\s*$')
BIND_MP = re.compile(r'^mp\d+$')
LXC_IN_PATH = re.compile(r'/lxc/(\d+)(?:/|$)')
# UPID:node:pid:pstart:starttime:type:id:user:
UPID_ID = re.compile(r'UPID:[^:]+:[0-9A-F]+:[0-9A-F]+:[0-9A-F]+:[^:]+:(\d+):')


def is_bind(value):
    return str(value).split(',', 1)[0].startswith('/')


class Mirror(object):
    def __init__(self, pve, root):
        self.pve = pve
        self.root = root
        self.written = {}  # vmid -> (path, text) last written

    def path(self, ct):
        return os.path.join(self.root, 'nodes', ct.node, 'lxc', '{0}.conf'.format(ct.vmid))

    def ids(self, request):
        out = set(int(m) for m in LXC_IN_PATH.findall(request.path))
        out.update(int(m) for m in UPID_ID.findall(request.path))
        return out

    def render(self, ct):
        lines = []
        for key in sorted(ct.config):
            if key in ('lxc', 'digest'):
                continue
            lines.append('{0}: {1}'.format(key, ct.config[key]))
        for key, value in ct.config.get('lxc') or []:
            lines.append('{0}: {1}'.format(key, value))
        return '\n'.join(lines) + '\n'

    def load(self, vmid):
        """Take edits made to the file since it was written: raw lines and bind mount points."""
        ct = self.pve.ct(vmid)
        last = self.written.get(vmid)
        if ct is None or last is None:
            return
        try:
            with open(last[0]) as f:
                text = f.read()
        except FileNotFoundError:
            return
        if text == last[1]:
            return
        raw, binds = [], {}
        for line in text.split('\n'):
            if line.startswith('['):
                break  # a snapshot section
            m = RAW.match(line)
            if m:
                raw.append([m.group(1), m.group(2)])
                continue
            m = KEY.match(line)
            if m and BIND_MP.match(m.group(1)) and is_bind(m.group(2)):
                binds[m.group(1)] = m.group(2)
        for key in [k for k, v in ct.config.items() if BIND_MP.match(k) and is_bind(v)]:
            del ct.config[key]
        ct.config.update(binds)
        if raw:
            ct.config['lxc'] = raw
        else:
            ct.config.pop('lxc', None)
        self.written[vmid] = (last[0], None)

    def save(self, vmid):
        ct = self.pve.ct(vmid)
        last = self.written.get(vmid)
        if ct is None:
            if last is not None:
                remove(last[0])
                del self.written[vmid]
            return
        path, text = self.path(ct), self.render(ct)
        if last is not None and last == (path, text):
            return
        if last is not None and last[0] != path:
            remove(last[0])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + '.tmp'
        with open(tmp, 'w') as f:
            f.write(text)
        os.replace(tmp, path)
        self.written[vmid] = (path, text)

    def before(self, request):
        for vmid in self.ids(request):
            self.load(vmid)

    def after(self, request):
        now = set(ct.vmid for ct in self.pve.cts)
        known = set(self.written)
        for vmid in (now ^ known) | self.ids(request):
            self.save(vmid)

    def save_all(self):
        for vmid in set(ct.vmid for ct in self.pve.cts) | set(self.written):
            self.save(vmid)


def remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def mirrored(cls):
    """cls (a FakePve) with the config files mirrored under a directory (see mirror_to)."""

    class Mirrored(cls):
        pmxcfs = None

        def mirror_to(self, root):
            self.pmxcfs = Mirror(self, root)
            self.pmxcfs.save_all()

        async def _answer(self, request, handler, generic, path_node):
            if self.pmxcfs is None:
                return await super()._answer(request, handler, generic, path_node)
            self.pmxcfs.before(request)
            try:
                return await super()._answer(request, handler, generic, path_node)
            finally:
                self.pmxcfs.after(request)

    return Mirrored
