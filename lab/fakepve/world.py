"""The Proxmox VE half of phoenix's test world: fakepve on loopback, with a CA of its own.

    .venv/bin/python lab/fakepve/world.py --state-dir /tmp/world [--host 127.0.0.2] [--port 8006]

Serves fakepve (https://pypi.org/project/fakepve/, 0.5.0) the way phoenix's tests and demo need it:
a CA and a server certificate it signs (so clients verify TLS against ca.pem; nothing runs insecure),
an API token for root@pam besides the password login, the seed site's storages, and LXC OS templates
on them. When it listens it writes world.json into the state dir and prints one line,
`READY <path of world.json>`, to stdout.

It stops on SIGTERM or SIGINT, and when its stdin reaches end of file (unless --no-stdin-watch), so
the test binary that started it with a pipe never leaves it behind. See lab/fakepve/README.md.
"""

import argparse
import asyncio
import datetime
import errno
import inspect
import ipaddress
import json
import logging
import os
import secrets
import signal
import sys
import threading
import uuid

# Exit status for "the address is taken": the caller may retry on another loopback address.
EXIT_ADDRESS_IN_USE = 75
TOKEN_USER = 'root@pam'
TOKEN_ID = 'phoenix'
# What the launcher writes into the state dir (and removes with --remove-state-dir).
FILES = ('ca.pem', 'server.crt', 'server.key', 'world.json')

# The seed site's storages (../shared/fixtures/phoenix-seed/etc, proxmox_storage_ids and zfs.datasets),
# plus PVE's two defaults. Options as storage.cfg has them; fakepve checks them against the plugin tables.
DEFAULT_STORAGES = {
    'local': {'type': 'dir', 'path': '/var/lib/vz', 'content': 'iso,vztmpl,backup,import'},
    'local-lvm': {'type': 'lvmthin', 'vgname': 'pve', 'thinpool': 'data', 'content': 'images,rootdir'},
    'quickOS-vm-disks': {'type': 'zfspool', 'pool': 'quickOS/vm-disks', 'content': 'images,rootdir'},
    'quickOS-lxc-disks': {'type': 'zfspool', 'pool': 'quickOS/lxc-disks', 'content': 'rootdir,images'},
    'quickOS-lxc-persistent-data': {'type': 'zfspool', 'pool': 'quickOS/lxc-persistent-data',
                                    'content': 'images,rootdir'},
    'fastData-shared-iso': {'type': 'dir', 'path': '/fastData/shared-iso', 'content': 'iso,vztmpl,backup'},
    'fastData-shared-backups': {'type': 'dir', 'path': '/fastData/shared-backups', 'content': 'backup'},
}
DEBIAN_12 = 'debian-12-standard_12.7-1_amd64.tar.zst'
UBUNTU_24 = 'ubuntu-24.04-standard_24.04-2_amd64.tar.zst'
CLOUD_IMAGE = 'noble-server-cloudimg-amd64.img'
# storage -> files on it, by content type. Sizes are about the real downloads'.
DEFAULT_FILES = {
    'local': {'vztmpl': [DEBIAN_12, UBUNTU_24], 'iso': [CLOUD_IMAGE]},
    'fastData-shared-iso': {'vztmpl': [DEBIAN_12, UBUNTU_24], 'iso': [CLOUD_IMAGE]},
}
FILE_SIZES = {DEBIAN_12: 126 * 1024 ** 2, UBUNTU_24: 141 * 1024 ** 2, CLOUD_IMAGE: 599 * 1024 ** 2}
# PVE's `format` of an OS template in a content listing, by extension.
TEMPLATE_FORMATS = {'zst': 'tzst', 'gz': 'tgz', 'xz': 'txz', 'bz2': 'tbz2'}

log = logging.getLogger('world')


def fail(message, status=1):
    print('world.py: error: ' + message, file=sys.stderr, flush=True)
    sys.exit(status)


# ---------------------------------------------------------------- certificates

def make_pki(state_dir, host):
    """A CA and a server certificate it signs for host; writes ca.pem, server.crt, server.key.

    EC P-256. The CA has keyCertSign and cRLSign and the server certificate digitalSignature and
    keyEncipherment, with serverAuth: strict verifiers (webpki) refuse certificates without them.
    The CA key stays in memory: nothing else is ever signed with it.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=30)

    def usage(**flags):
        names = ('digital_signature', 'content_commitment', 'key_encipherment', 'data_encipherment',
                 'key_agreement', 'key_cert_sign', 'crl_sign', 'encipher_only', 'decipher_only')
        return x509.KeyUsage(**dict((n, flags.get(n, False)) for n in names))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, 'phoenix test world'),
                         x509.NameAttribute(NameOID.COMMON_NAME, 'phoenix fakepve CA')])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (x509.CertificateBuilder()
          .subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(usage(key_cert_sign=True, crl_sign=True), critical=True)
          .add_extension(ca_ski, critical=False)
          .sign(ca_key, hashes.SHA256()))

    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.IPAddress(ipaddress.ip_address(host)), x509.DNSName('localhost')]
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage(digital_signature=True, key_encipherment=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
            .sign(ca_key, hashes.SHA256()))

    pem = serialization.Encoding.PEM
    ca_file = os.path.join(state_dir, 'ca.pem')
    cert_file = os.path.join(state_dir, 'server.crt')
    key_file = os.path.join(state_dir, 'server.key')
    write_file(ca_file, ca.public_bytes(pem), 0o644)
    write_file(cert_file, cert.public_bytes(pem), 0o644)
    write_file(key_file, key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()), 0o600)
    return ca_file, cert_file, key_file


def write_file(path, data, mode):
    """Write data to path with this mode whatever the umask, atomically (a reader never sees half a file)."""
    tmp = path + '.tmp'
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), 'wb') as out:
        os.chmod(tmp, mode)
        out.write(data)
    os.replace(tmp, path)


# ------------------------------------------------------------------- the world

def load_storages(path):
    """--storages FILE: {storage id: {type, content, options..., "files": {content: [names]}}}."""
    with open(path, encoding='utf-8') as fh:
        data = json.load(fh)
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        fail('{0}: expected a JSON object of storage id -> options'.format(path))
    storages, files = {}, {}
    for name, entry in data.items():
        entry = dict(entry)
        files[name] = entry.pop('files', {})
        storages[name] = entry
    return storages, files


def add_storages(pve, storages, files):
    """Replace pve.storages with these, checked as PVE checks a `POST /storage`, and put the files on them."""
    from fakepve import storage as pve_storage
    from fakepve.model import PveError

    pve.storages = {}
    for name, entry in storages.items():
        options = dict((k, v) for k, v in entry.items() if k != 'type')
        spec = pve_storage.TYPES.get(entry.get('type'))
        if spec is None:
            fail('storage {0}: unknown type {1!r}'.format(name, entry.get('type')))
        try:
            options = pve._check_options(name, spec, options, True)
        except PveError as e:
            fail('storage {0}: {1}'.format(name, e.message))
        # The fake's own keys beside the storage.cfg options (see fakepve/storage.py INTERNAL).
        store = {'type': spec['name'], 'active': 1, 'files': set(), 'volumes': {}}
        store['content'] = spec['default']
        store.update(options)
        pve.storages[name] = store
    for name, by_content in files.items():
        if name not in pve.storages:
            fail('files for unknown storage {0}'.format(name))
        for content, names in by_content.items():
            for filename in names:
                put_file(pve, name, content, filename)


def put_file(pve, storage, content, filename):
    """A file on a storage, as `pveam download` or an upload leaves it; volume_exists() then knows it."""
    store = pve.storages[storage]
    if content not in store['content'].split(','):
        fail("storage {0} does not hold content type '{1}'".format(storage, content))
    pve.store_file(storage, filename, FILE_SIZES.get(filename, 100 * 1024 ** 2), content)
    if content == 'vztmpl':
        volume = store['volumes']['vztmpl/' + filename]
        volume['format'] = TEMPLATE_FORMATS.get(filename.rsplit('.', 1)[-1], volume['format'])


def build(args):
    """The FakePve of the world, not yet listening; returns (pve, token secret)."""
    from vm_disks import WorldPve  # fakepve's FakePve plus QEMU import-from and resize
    from pmxcfs import mirrored
    from vm_agent import agent_in_dirs

    FakePve = mirrored(agent_in_dirs(WorldPve)) if args.pmxcfs != 'none' else WorldPve
    pve = FakePve(user=TOKEN_USER, password=secrets.token_urlsafe(18), host=args.host, port=args.port)
    pve.time_scale = args.time_scale
    if args.latency > 0:
        # fakepve scales every pause by time_scale, latency included, and at 0 skips them all; at 1
        # the latency is real seconds while tasks (which take 0 PVE seconds here) still end at once.
        if not pve.time_scale:
            pve.time_scale = 1.0
        pve.slow_network(args.latency)
    if args.node != 'pve1':
        pve.nodes = {args.node: {'online': True}}
    # The token as PVE keys it: 'user@realm!tokenid' -> secret (a UUID on PVE).
    secret = str(uuid.uuid4())
    pve.apitokens['{0}!{1}'.format(TOKEN_USER, TOKEN_ID)] = secret
    if args.storages:
        storages, files = load_storages(args.storages)
    else:
        storages, files = DEFAULT_STORAGES, DEFAULT_FILES
    add_storages(pve, storages, files)
    if args.pmxcfs != 'none':
        pmxcfs = args.pmxcfs or os.path.join(os.path.abspath(args.state_dir), 'host', 'etc', 'pve')
        pve.mirror_to(pmxcfs)
        # The host whose /etc/pve that is also holds the VMs' file systems (lab/fakepve/vm_agent.py).
        if os.path.abspath(pmxcfs).endswith(os.path.join('etc', 'pve')):
            pve.agent_root = os.path.dirname(os.path.dirname(os.path.abspath(pmxcfs)))
    return pve, secret


# ------------------------------------------------------------- control channel

def mirror_all(pve):
    if getattr(pve, 'pmxcfs', None) is not None:
        pve.pmxcfs.save_all()


def control_app(pve):
    """Plain HTTP on loopback: let a test change the world (faults, network, scenarios) while it runs."""
    from aiohttp import web

    def answer(data=None):
        return web.json_response({'ok': True, 'data': data}, dumps=lambda d: json.dumps(d, default=str))

    async def body(request):
        if not request.can_read_body:
            return {}
        data = await request.json()
        if not isinstance(data, dict):
            raise ValueError('the body must be a JSON object')
        return data

    async def fault(request):
        b = await body(request)
        pve.fail(b['method'].upper(), b['suffix'], status=b.get('status'), message=b.get('message'),
                 html=bool(b.get('html')), error=b.get('error'), times=b.get('times'))
        return answer()

    async def clear_faults(request):
        pve.failures.clear()
        pve.flaky_network()
        return answer()

    async def flaky(request):
        pve.flaky_network(**await body(request))
        return answer()

    async def slow(request):
        pve.slow_network(**await body(request))
        return answer()

    async def revoke_tickets(request):
        pve.revoke_tickets()
        return answer()

    async def settings(request):
        # Plain attributes of the fake (time_scale, lock_wait, quorate, ...); dicts (ct_secs) are merged.
        for key, value in (await body(request)).items():
            current = getattr(pve, key, None) if not key.startswith('_') else None
            if isinstance(current, dict) and isinstance(value, dict):
                current.update(value)
            elif isinstance(current, (bool, int, float, str)) or (current is None and hasattr(pve, key)):
                setattr(pve, key, value)
            else:
                raise ValueError('{0} is not a setting of the fake'.format(key))
        return answer()

    async def guest(request):
        # Attributes of one VM or container (start_error, shutdown_secs, ...); config and stats are merged,
        # a null removes the key: an edit made behind phoenix's back, without the API's checks.
        b = await body(request)
        target = pve.guest(int(b['vmid']))
        if target is None:
            raise ValueError('no guest {0}'.format(b['vmid']))
        for key, value in b.get('set', {}).items():
            current = getattr(target, key, None) if not key.startswith('_') else None
            if isinstance(current, dict) and isinstance(value, dict):
                for k, v in value.items():
                    if v is None:
                        current.pop(k, None)
                    else:
                        current[k] = v
            elif hasattr(target, key) and not callable(current) and not key.startswith('_'):
                setattr(target, key, value)
            else:
                raise ValueError('{0} is not an attribute of guest {1}'.format(key, b['vmid']))
        mirror_all(pve)
        return answer()

    async def call(request):
        # Any public method of FakePve: lose_quorum, set_node_offline, hold_config_lock, add_ct, ...
        b = await body(request)
        name = b['name']
        method = getattr(pve, name, None) if not name.startswith('_') else None
        if not callable(method):
            raise ValueError('{0} is not a method of FakePve'.format(name))
        result = method(*b.get('args', []), **b.get('kwargs', {}))
        if inspect.isawaitable(result):
            result = await result
        mirror_all(pve)
        return answer(result)

    async def requests(request):
        return answer([[m, p, b.decode('utf-8', 'replace')] for m, p, b in pve.requests])

    async def clear_requests(request):
        pve.requests.clear()
        return answer()

    async def health(request):
        return answer({'url': pve.url})

    @web.middleware
    async def errors(request, handler):
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except (KeyError, TypeError, ValueError) as e:
            what = 'missing field {0}'.format(e) if isinstance(e, KeyError) else str(e)
            return web.json_response({'ok': False, 'error': what}, status=400)

    app = web.Application(middlewares=[errors])
    for path, handler in (('/fault', fault), ('/clear-faults', clear_faults), ('/flaky', flaky), ('/slow', slow),
                          ('/revoke-tickets', revoke_tickets), ('/set', settings), ('/guest', guest),
                          ('/call', call), ('/requests/clear', clear_requests)):
        app.router.add_post(path, handler)
    app.router.add_get('/requests', requests)
    app.router.add_get('/health', health)
    return app


# ------------------------------------------------------------------- serving

def watch_stdin(loop, stop):
    """Set stop when stdin reaches end of file: whoever started us is gone (or closed the pipe).

    Reads fd 0 itself: a daemon thread blocked in sys.stdin's buffered reader holds its lock, and the
    interpreter aborts at exit (after a SIGTERM) when it cannot take that lock.
    """
    def run():
        try:
            while os.read(0, 65536):
                pass
        except OSError:  # no stdin at all counts as its end
            pass
        loop.call_soon_threadsafe(stop.set)
    threading.Thread(target=run, name='stdin-watch', daemon=True).start()


async def serve(args):
    from aiohttp import web
    from fakepve import __version__, settle

    state_dir = os.path.abspath(args.state_dir)
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    world_file = os.path.join(state_dir, 'world.json')
    if os.path.exists(world_file):
        os.unlink(world_file)  # a stale one from an earlier run
    pve, secret = build(args)
    ca_file, cert_file, key_file = make_pki(state_dir, args.host)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    if args.control_port is not None:
        control_port = args.control_port
    else:
        control_port = args.port + 1 if args.port else None  # --port 0: the system picks both
    control = None
    try:
        await pve.start(cert_file, key_file)
        if control_port != 0:
            control = web.AppRunner(control_app(pve), access_log=None)
            await control.setup()
            await web.TCPSite(control, args.host, control_port or 0).start()
            control_port = control.addresses[0][1]
    except OSError as e:
        await pve.stop()
        if control:
            await control.cleanup()
        clean_state_dir(state_dir, args.remove_state_dir)
        if e.errno == errno.EADDRINUSE:
            fail('{0} port {1} or {2}: address already in use'.format(args.host, args.port, control_port or 'any'),
                 EXIT_ADDRESS_IN_USE)
        fail('cannot listen on {0}: {1}'.format(args.host, e))

    world = {
        'url': pve.url,
        'node': sorted(pve.nodes)[0],
        'ca_file': ca_file,
        'token': '{0}!{1}={2}'.format(TOKEN_USER, TOKEN_ID, secret),
        'user': TOKEN_USER,
        'password': pve.password,
        'pid': os.getpid(),
        'state_dir': state_dir,
        'fakepve_version': __version__,
    }
    if control:
        world['control_url'] = 'http://{0}:{1}'.format(args.host, control_port)
    if not args.no_stdin_watch:
        watch_stdin(loop, stop)
    write_file(world_file, (json.dumps(world, indent=2) + '\n').encode(), 0o600)
    print('READY ' + world_file, flush=True)
    log.info('fakepve %s listening on %s', __version__, pve.url)

    await stop.wait()
    log.info('stopping')
    await settle()
    if control:
        await control.cleanup()
    await pve.stop()
    clean_state_dir(state_dir, args.remove_state_dir)


def clean_state_dir(state_dir, everything):
    """Remove world.json (it names a server that is gone); with everything, all we wrote, and the dir if empty."""
    for name in FILES if everything else ('world.json',):
        try:
            os.unlink(os.path.join(state_dir, name))
        except FileNotFoundError:
            pass
    if everything:
        try:
            os.rmdir(state_dir)
        except OSError:
            pass  # something else lives there too: leave it


def loopback(text):
    try:
        if ipaddress.ip_address(text).is_loopback:
            return text
    except ValueError:
        pass
    raise argparse.ArgumentTypeError('{0!r} is not a loopback IP address (127.0.0.x)'.format(text))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--host', type=loopback, default='127.0.0.2', help='loopback address (default 127.0.0.2)')
    parser.add_argument('--port', type=int, default=8006, help='API port (default 8006)')
    parser.add_argument('--control-port', type=int, default=None,
                        help='plain-HTTP control channel port (default: --port + 1; 0: none)')
    parser.add_argument('--state-dir', required=True, help='where ca.pem, server.crt/.key and world.json go')
    parser.add_argument('--time-scale', type=float, default=0.0,
                        help='real seconds per PVE second; 0 (default) finishes tasks at once')
    parser.add_argument('--latency', type=float, default=0.0,
                        help='PVE seconds added to every response (default 0; sets time scale 1 if it is 0)')
    parser.add_argument('--node', default='pve1', help='the node name (default pve1)')
    parser.add_argument('--pmxcfs', default='',
                        help="where the container config files go, as /etc/pve on a host (default: "
                             "STATE_DIR/host/etc/pve, the tests' PHOENIX_HOST_ROOT; 'none': no files)")
    parser.add_argument('--storages', help='JSON file of storages that replaces the defaults (see README)')
    parser.add_argument('--no-stdin-watch', action='store_true',
                        help='keep running at end of stdin (for a background process; stop it with SIGTERM)')
    parser.add_argument('--remove-state-dir', action='store_true',
                        help='on exit, remove the files written into the state dir, and the dir if then empty')
    parser.add_argument('-v', '--verbose', action='store_true', help='log every request to stderr')
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format='%(asctime)s %(name)s %(levelname)s %(message)s')
    try:
        import fakepve  # noqa: F401
        import cryptography  # noqa: F401
    except ImportError as e:
        fail("{0}: run ./scripts/setup (it installs 'fakepve[crypto]==0.5.0' into .venv)".format(e))
    asyncio.run(serve(args))


if __name__ == '__main__':
    main()
