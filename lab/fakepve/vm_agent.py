"""A QEMU guest agent that runs things, for VMs that have a file system in the world's host.

fakepve's agent answers with results of the right shape, but nothing runs. phoenix provisions VMs through
the agent (`agent/exec` + `agent/exec-status`, `agent/file-write`, `agent/file-read`), so a VM whose
directory exists under the world's host root, `<host root>/guests/<vmid>` (made with lab/host/fakeguest, as
containers are), gets an agent that runs each command there, through lab/host/pct: chrooted into that
directory, in namespaces of its own. Such a VM answers as soon as it runs (as if the agent were installed).
Every other VM keeps fakepve's agent.
"""

import base64
import os
import subprocess

from fakepve.model import PveError

HERE = os.path.dirname(os.path.abspath(__file__))
PCT = os.path.join(os.path.dirname(HERE), 'host', 'pct')


def agent_in_dirs(cls):
    """cls (a FakePve) with the running agent above; `agent_root` is the host root (None: off)."""

    class WithAgent(cls):
        agent_root = None

        def _guest_dir(self, vmid):
            if self.agent_root is None:
                return None
            d = os.path.join(self.agent_root, 'guests', str(vmid))
            return d if os.path.isdir(d) else None

        def _pct(self, vmid, args, stdin=None):
            env = dict(os.environ, PHOENIX_HOST_ROOT=self.agent_root)
            return subprocess.run([PCT] + args, input=stdin, capture_output=True, env=env, timeout=600)

        async def _agent_call(self, match, values):
            vm = self.find(values['node'], values['vmid'])
            if self._guest_dir(vm.vmid) is None:
                return await super()._agent_call(match, values)
            if vm.status != 'running':
                raise PveError(500, 'QEMU guest agent is not running')
            command = match.template.rsplit('/', 1)[1]
            if command == 'exec':
                argv = values.get('command')
                argv = [argv] if isinstance(argv, str) else list(argv or [])
                if not argv:
                    raise PveError(400, 'Parameter verification failed.', {'command': 'property is missing'})
                data = values.get('input-data')
                out = self._pct(vm.vmid, ['exec', str(vm.vmid), '--'] + argv,
                                data.encode() if data is not None else None)
                vm.agent_pid += 1
                vm.agent_execs[vm.agent_pid] = {
                    'exited': True, 'exitcode': out.returncode,
                    'out-data': out.stdout.decode('utf-8', 'replace'),
                    'err-data': out.stderr.decode('utf-8', 'replace')}
                return {'pid': vm.agent_pid}
            if command == 'exec-status':
                found = vm.agent_execs.get(int(values['pid']))
                if not isinstance(found, dict):
                    raise PveError(500, 'Agent error: Invalid parameter \'pid\'')
                return found
            if command == 'file-write':
                content = values.get('content', '')
                raw = content.encode() if str(values.get('encode', 1)) in ('1', 'true') else \
                    base64.b64decode(content)
                tmp = os.path.join(self.agent_root, 'guests', str(vm.vmid), '.agent-write')
                with open(tmp, 'wb') as f:
                    f.write(raw)
                try:
                    out = self._pct(vm.vmid, ['push', str(vm.vmid), tmp, values['file']])
                finally:
                    os.unlink(tmp)
                if out.returncode != 0:
                    raise PveError(500, 'Agent error: ' + out.stderr.decode('utf-8', 'replace').strip())
                return None
            if command == 'file-read':
                out = self._pct(vm.vmid, ['exec', str(vm.vmid), '--', 'cat', values['file']])
                if out.returncode != 0:
                    raise PveError(500, 'Agent error: ' + out.stderr.decode('utf-8', 'replace').strip())
                return {'content': out.stdout.decode('utf-8', 'replace'), 'truncated': False}
            if command == 'ping':
                return {'result': {}}
            return await super()._agent_call(match, values)

    return WithAgent
