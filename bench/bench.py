#!/usr/bin/env python3
"""phoenix against the round-trip bound at site scale; run through scripts/bench (see docs/performance.md).

Prints one line per figure on stdout, `name value unit`; progress and the machine go to stderr.
Exits 1 when phoenix fails, when a no-op plan is not empty, or when a figure is missing.
Only the Python standard library: the fake's control channel is plain HTTP on loopback.
"""

import argparse
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
TIME = '/usr/bin/time' if os.access('/usr/bin/time', os.X_OK) else None
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import gen_site  # noqa: E402

# Round trips of phoenix's protocol, per object (counted in the fake's request log; the bench checks
# the totals against these and warns when they no longer match). See docs/performance.md.
#
# A no-op plan: /cluster/resources once; then per container its config (the run status comes from the
# inventory); per VM its config and its pending changes; per firewall (each guest's, the datacenter's)
# its options and its rules; /storage, /nodes and one content listing per template storage.
PLAN_PER_LXC = 1
PLAN_PER_VM = 2
PLAN_PER_FIREWALL = 2
PLAN_FIXED = 3  # /storage, /nodes, local's content listing
# A container created from a template: POST create, its task's status, POST start, its task's status,
# the config and status read back.
CREATE_PER_LXC = 6
# A new guest firewall with k rules: /cluster/resources (where the new guest is), options (digest),
# rules; per rule an insert at the top (rules inserted in reverse need no move) and the re-read that
# guards the next edit; PUT options (enable); read back options and rules.
def create_per_firewall(k):
    return 6 + 2 * k


# PVE's own per-node limit on concurrent creates that phoenix keeps (providers/proxmox/lxc.rs).
CREATES_PER_NODE = 4
REQUIRED = ('validate_seed_wall', 'plan_noop_wall', 'plan_noop_requests', 'plan_noop_bound', 'plan_noop_ratio',
            'diff_cpu', 'peak_rss', 'apply_create_wall', 'apply_create_bound', 'apply_create_ratio')


def log(verb, message):
    print('{0:>12} {1}'.format(verb, message), file=sys.stderr, flush=True)


class Failed(Exception):
    pass


class Run:
    """One finished phoenix process: wall time, peak RSS, CPU, output and its PHOENIX_TIMINGS lines."""

    def __init__(self, argv, env, stdout_path):
        # The peak RSS of phoenix itself: a child forked from this Python starts with Python's pages
        # counted, so GNU time (a small C program) starts it when it is there.
        rss_file = stdout_path + '.rss'
        if TIME:
            argv = [TIME, '-f', '%M', '-o', rss_file, '--'] + argv
        with open(stdout_path, 'wb') as out:
            start = time.monotonic()
            proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.PIPE)
            err = proc.stderr.read()
            _, status, usage = os.wait4(proc.pid, 0)
            self.wall = time.monotonic() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        self.code = proc.returncode
        self.rss_kib = usage.ru_maxrss  # KiB on Linux
        if TIME:
            try:
                with open(rss_file, encoding='utf-8') as fh:
                    self.rss_kib = int(fh.read().split()[-1])
            except (OSError, ValueError, IndexError):
                pass
        self.cpu = usage.ru_utime + usage.ru_stime
        self.stderr = err.decode('utf-8', 'replace')
        with open(stdout_path, encoding='utf-8', errors='replace') as fh:
            self.stdout = fh.read()
        self.timings = {}
        for line in self.stderr.splitlines():
            m = re.match(r'^timing (\w+) ([0-9.]+)$', line)
            if m:
                self.timings[m.group(1)] = self.timings.get(m.group(1), 0.0) + float(m.group(2))

    def tail(self, n=25):
        return '\n'.join((self.stdout + self.stderr).splitlines()[-n:])


class Bench:
    def __init__(self, args):
        self.args = args
        self.figures = []
        self.work = args.work or tempfile.mkdtemp(prefix='phoenix-bench.', dir=os.environ.get('TMPDIR', '/tmp'))
        self.pve_dir = os.path.join(self.work, 'fakepve')
        self.world = None

    # ------------------------------------------------------------------ output

    def figure(self, name, value, unit, note=''):
        if isinstance(value, float):
            value = '{0:.3f}'.format(value) if abs(value) < 100 else '{0:.1f}'.format(value)
        self.figures.append((name, str(value), unit))
        print('{0} {1} {2}'.format(name, value, unit), flush=True)
        if note and self.args.verbose:
            log('', '  ' + note)

    # ------------------------------------------------------------------- world

    def start_world(self):
        host = self.args.host or '127.0.66.{0}'.format(20 + os.getpid() % 200)
        cmd = [os.path.join(ROOT, 'scripts', 'fakepve'), 'start', '--host', host, '--state-dir', self.pve_dir,
               '--time-scale', '1']
        log('Starting', 'fakepve on {0} (time scale 1: tasks still take no time; latency set per phase)'.format(host))
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if r.returncode != 0:
            raise Failed('fakepve did not start:\n' + r.stderr)
        with open(os.path.join(self.pve_dir, 'world.json'), encoding='utf-8') as fh:
            self.world = json.load(fh)

    def stop_world(self):
        if os.path.isdir(self.pve_dir):
            subprocess.run([os.path.join(ROOT, 'scripts', 'fakepve'), 'stop', '--state-dir', self.pve_dir],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def control(self, path, body=None):
        url = self.world['control_url'] + path
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method='GET' if body is None else 'POST',
                                     headers={'Content-Type': 'application/json'})
        # A proxy from the environment must not see loopback control calls.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(req, timeout=120) as resp:
            answer = json.load(resp)
        if not answer.get('ok'):
            raise Failed('control {0}: {1}'.format(path, answer))
        return answer.get('data')

    def latency(self, seconds):
        self.control('/slow', {'latency': seconds})

    def requests(self):
        return self.control('/requests')

    def clear_requests(self):
        self.control('/requests/clear', {})

    def env(self):
        env = dict(os.environ)
        for k in list(env):
            if k.startswith('PHOENIX_') and k not in ('PHOENIX_SETUP_DONE',):
                del env[k]
        env.update(PHOENIX_TIMINGS='1', NO_COLOR='1')
        if self.world:
            env.update(PHOENIX_PVE_URL=self.world['url'], PHOENIX_PVE_NODE=self.world['node'],
                       PHOENIX_PVE_TOKEN=self.world['token'], PHOENIX_PVE_CA_FILE=self.world['ca_file'])
        env.pop('RUST_BACKTRACE', None)
        return env

    # ----------------------------------------------------------------- phoenix

    def phoenix(self, root, *args, name, ok=(0,)):
        argv = [self.args.phoenix, '--root', root, '--no-color'] + list(args)
        r = Run(argv, self.env(), os.path.join(self.work, name + '.out'))
        with open(os.path.join(self.work, name + '.err'), 'w', encoding='utf-8') as fh:
            fh.write(self.stderr_header(argv) + r.stderr)
        if r.code not in ok:
            raise Failed('`phoenix {0}` ({1}) exited {2}:\n{3}'.format(' '.join(args), name, r.code, r.tail()))
        return r

    @staticmethod
    def stderr_header(argv):
        return '# ' + ' '.join(argv) + '\n'

    # ------------------------------------------------------------------ bounds

    def plan_min_requests(self, s):
        firewalls = s['guest_firewalls'] - s['extra_lxc'] + 1  # the guests that exist, and the datacenter
        return (1 + PLAN_PER_LXC * (s['lxc'] - s['extra_lxc']) + PLAN_PER_VM * s['vm']
                + PLAN_PER_FIREWALL * firewalls + PLAN_FIXED)

    def plan_rounds(self, requests):
        """The inventory first, then every other read, `parallelism` at a time."""
        return 1 + math.ceil((requests - 1) / self.args.parallelism)

    def create_requests(self, site):
        lxcs = site['lxc_configs']
        extra = [lxcs[str(gen_site.EXTRA_BASE + i)] for i in range(self.args.creates)]
        per_fw = [create_per_firewall(len(c['firewall']['rules'])) for c in extra]
        return CREATE_PER_LXC * len(extra), per_fw

    def create_rounds(self, lxc_requests, per_fw):
        """Creates go CREATES_PER_NODE at a time; everything `parallelism` at a time; the last guest's
        firewall can only start when that guest exists."""
        p = self.args.parallelism
        lanes = min(CREATES_PER_NODE, p)
        return max(math.ceil(lxc_requests / lanes) + max(per_fw or [0]),
                   math.ceil((lxc_requests + sum(per_fw)) / p))

    # --------------------------------------------------------------------- run

    def run(self):
        a = self.args
        lat = a.latency_ms / 1000.0
        machine = describe_machine()
        for line in machine:
            log('Machine', line)
        base_dir = os.path.join(self.work, 'site')
        grown_dir = os.path.join(self.work, 'site-grown')
        log('Generating', '{0} LXCs, {1} VMs (+{2} LXCs to create) in {3}'.format(
            a.size, max(1, a.size // 10), a.creates, self.work))
        summary = write_site(base_dir, a.size, 0)
        grown_summary = write_site(grown_dir, a.size, a.creates)
        with open(os.path.join(grown_dir, 'etc', 'phoenix_lxc_configs.json'), encoding='utf-8') as fh:
            grown_site = json.load(fh)

        # validate on the seed site: no fake involved.
        seed = a.seed
        walls = [self.phoenix(seed, 'validate', name='validate-seed-{0}'.format(i)).wall for i in range(3)]
        self.figure('validate_seed_wall', min(walls), 's', 'best of 3, ' + seed)

        self.start_world()
        try:
            self.latency(0)
            log('Applying', 'the site at latency 0 (setup for the refresh figures)')
            r = self.phoenix(base_dir, 'apply', '--auto-approve', '--parallelism', str(a.parallelism),
                             name='apply-site')
            changes = re.search(r'Finished (\d+) created', r.stderr)
            self.figure('apply_site_wall', r.wall, 's', 'latency 0')
            self.figure('apply_site_creates', int(changes.group(1)) if changes else 0, 'changes')
            self.figure('apply_site_peak_rss', r.rss_kib / 1024.0, 'MiB')
            self.figure('diff_cpu_create_all', 1000 * (r.timings.get('diff', 0) + r.timings.get('render', 0)), 'ms',
                        'diff + render of the plan that creates the whole site')

            # No-op plan at latency 0: what the fake itself costs (its CPU, TLS), not a round-trip figure.
            self.clear_requests()
            r0 = self.phoenix(base_dir, 'plan', '--detailed-exitcode', '--parallelism', str(a.parallelism),
                              name='plan-noop-l0')
            self.figure('plan_noop_wall_l0', r0.wall, 's', 'latency 0: the fake serving every read')

            self.latency(lat)
            best = None
            for i in range(a.repeat):
                self.clear_requests()
                r = self.phoenix(base_dir, 'plan', '--detailed-exitcode', '--parallelism', str(a.parallelism),
                                 name='plan-noop-{0}'.format(i))
                sent = len(self.requests())
                if 'No changes.' not in r.stdout:
                    raise Failed('the plan after apply is not empty:\n' + r.tail())
                if best is None or r.wall < best[0].wall:
                    best = (r, sent)
            r, sent = best
            min_requests = self.plan_min_requests(summary)
            bound = lat * self.plan_rounds(min_requests)
            self.figure('plan_noop_wall', r.wall, 's')
            self.figure('plan_noop_requests', sent, 'requests')
            self.figure('plan_noop_min_requests', min_requests, 'requests')
            self.figure('plan_noop_bound', bound, 's')
            self.figure('plan_noop_ratio', r.wall / bound if bound else 0.0, 'x')
            self.figure('plan_noop_refresh', r.timings.get('refresh', 0.0), 's')
            self.figure('diff_cpu', 1000 * (r.timings.get('diff', 0) + r.timings.get('render', 0)), 'ms')
            self.figure('peak_rss', r.rss_kib / 1024.0, 'MiB')
            self.figure('plan_noop_cpu', r.cpu, 's')
            if sent != min_requests:
                log('Warning', 'the plan sent {0} requests, the protocol says {1}: update bench/bench.py'.format(
                    sent, min_requests))

            # 100 creates on top of the applied site, at latency.
            shutil.copytree(os.path.join(base_dir, 'state'), os.path.join(grown_dir, 'state'))
            self.clear_requests()
            r = self.phoenix(grown_dir, 'apply', '--auto-approve', '--parallelism', str(a.parallelism),
                             name='apply-create', ok=(0, 1))
            sent = len(self.requests())
            out = r.stdout + r.stderr
            lock_errors = len(re.findall(r"can't lock|lock.{0,40}timeout|got timeout", out, re.I))
            if r.code != 0:
                raise Failed('the apply of {0} creates failed ({1} lock errors):\n{2}'.format(
                    a.creates, lock_errors, r.tail()))
            lxc_req, per_fw = self.create_requests(grown_site)
            refresh_req = self.plan_min_requests(grown_summary)
            bound = lat * (self.plan_rounds(refresh_req) + self.create_rounds(lxc_req, per_fw))
            exec_bound = lat * self.create_rounds(lxc_req, per_fw)
            self.figure('apply_create_wall', r.wall, 's')
            self.figure('apply_create_requests', sent, 'requests')
            self.figure('apply_create_min_requests', refresh_req + lxc_req + sum(per_fw), 'requests')
            self.figure('apply_create_bound', bound, 's')
            self.figure('apply_create_ratio', r.wall / bound if bound else 0.0, 'x')
            execute = r.timings.get('execute', 0.0)
            self.figure('apply_create_execute', execute, 's')
            self.figure('apply_create_execute_bound', exec_bound, 's')
            self.figure('apply_create_execute_ratio', execute / exec_bound if exec_bound else 0.0, 'x')
            self.figure('apply_create_lock_errors', lock_errors, 'errors')
            self.figure('apply_create_peak_rss', r.rss_kib / 1024.0, 'MiB')
            self.figure('apply_create_cpu', r.cpu, 's')
            if sent != refresh_req + lxc_req + sum(per_fw):
                log('Warning', 'the apply sent {0} requests, the protocol says {1}: update bench/bench.py'.format(
                    sent, refresh_req + lxc_req + sum(per_fw)))

            # What was created reads back as planned.
            self.latency(0)
            r = self.phoenix(grown_dir, 'plan', '--detailed-exitcode', name='plan-after-create')
            if 'No changes.' not in r.stdout:
                raise Failed('the plan after the creates is not empty:\n' + r.tail())
        finally:
            self.stop_world()

        names = {n for n, _, _ in self.figures}
        missing = [n for n in REQUIRED if n not in names]
        if missing:
            raise Failed('figures missing: ' + ', '.join(missing))


def write_site(path, size, extra):
    hypervisor, lxcs, vms, summary = gen_site.build(size, extra)
    etc = os.path.join(path, 'etc')
    os.makedirs(etc, exist_ok=True)
    gen_site.write_json(os.path.join(etc, 'phoenix_hypervisor_config.json'), hypervisor)
    gen_site.write_json(os.path.join(etc, 'phoenix_lxc_configs.json'), lxcs)
    gen_site.write_json(os.path.join(etc, 'phoenix_vm_configs.json'), vms)
    return summary


def describe_machine():
    cpu = platform.processor() or ''
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as fh:
            names = [l.split(':', 1)[1].strip() for l in fh if l.startswith('model name')]
        cpu = '{0} x {1}'.format(len(names), names[0]) if names else cpu
    except OSError:
        pass
    mem = ''
    try:
        with open('/proc/meminfo', encoding='utf-8') as fh:
            kib = int(fh.readline().split()[1])
        mem = '{0:.0f} GiB RAM'.format(kib / 1024 ** 2)
    except (OSError, ValueError, IndexError):
        pass
    load = ' '.join('{0:.2f}'.format(x) for x in os.getloadavg())
    return ['{0}; {1}; {2} {3}'.format(cpu, mem, platform.system(), platform.release()),
            'load average at start: {0}'.format(load)]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--size', type=int, default=1000, help='LXCs (VMs: size/10); default 1000')
    p.add_argument('--latency-ms', type=float, default=20.0, help='per response, for the timed phases; default 20')
    p.add_argument('--creates', type=int, help='LXCs (with firewalls) to create; default min(100, size)')
    p.add_argument('--parallelism', type=int, default=8, help="phoenix's --parallelism; default 8 (its default)")
    p.add_argument('--repeat', type=int, default=1, help='no-op plans to run (the fastest counts); default 1')
    p.add_argument('--phoenix', required=True, help='the phoenix binary')
    p.add_argument('--seed', required=True, help='the seed site, for validate_seed_wall')
    p.add_argument('--host', help='loopback address for the fake (default 127.0.66.x from the PID)')
    p.add_argument('--work', help='work directory (default: a new temp dir)')
    p.add_argument('--keep', action='store_true', help='keep the work directory (outputs, states, logs)')
    p.add_argument('-v', '--verbose', action='store_true')
    args = p.parse_args()
    if args.creates is None:
        args.creates = min(100, args.size)
    if args.size < 1 or args.creates < 1 or args.parallelism < 1 or args.repeat < 1:
        p.error('--size, --creates, --parallelism and --repeat must be at least 1')
    bench = Bench(args)
    try:
        bench.run()
    except Failed as e:
        print('bench: error: {0}'.format(e), file=sys.stderr)
        log('Keeping', bench.work)
        return 1
    except KeyboardInterrupt:
        bench.stop_world()
        return 130
    if args.keep:
        log('Keeping', bench.work)
    else:
        shutil.rmtree(bench.work, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
