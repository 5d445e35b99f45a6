"""QEMU disk calls the world adds to fakepve 0.5.0, so a VM's boot disk behaves as on PVE.

fakepve 0.5.0 keeps `import-from=<volume>` in a new drive as it was given, on a disk of size 0, and
answers `PUT /nodes/{node}/qemu/{vmid}/resize` from the schema alone (a task that changes nothing).
PVE imports the volume into the new disk (which takes the image's size) and drops the option, and a
resize grows the disk. WorldPve does both, with PVE's checks and messages (qemu-server's
PVE/API2/Qemu.pm: `import-from` takes only `images` or `import` volumes; `resize` refuses to shrink
and to touch a CD-ROM). Everything else is fakepve's. See lab/fakepve/README.md.
"""

from fakepve import FakePve
from fakepve.lxc import format_size, parse_size
from fakepve.model import PveError
from fakepve.qemu import NEW_DISK, is_cdrom, join_drive, split_drive, volume_ref
from fakepve.routing import die


class WorldPve(FakePve):
    """FakePve with `import-from` on new disks and a QEMU disk resize."""

    def _routes_world_qemu(self):
        # fakepve registers every `_routes_*` table before its catch-all schema route.
        return [('PUT', '/nodes/{node}/qemu/{vmid}/resize', self._world_qm_resize)]

    def _qm_new_drive(self, vmid, key, value, default):
        volume, props = split_drive(value)
        source = props.pop('import-from', None)
        found = NEW_DISK.match(volume)
        if source is None or not found:
            return super()._qm_new_drive(vmid, key, value, default)
        src = self._qm_volume(source)
        if src is None:
            raise die("volume '{0}' does not exist".format(source))
        if src.get('content') not in ('images', 'import'):
            raise die("{0} has wrong type '{1}' - needs to be 'images' or 'import'".format(source, src.get('content')))
        size = int(src.get('size') or 0)
        volid, _fmt = self._qm_alloc(found.group(1) or default, vmid, props.pop('format', None), size)
        props['size'] = format_size(size)
        return join_drive(volid, props), [volid]

    async def _world_qm_resize(self, v, user):
        vm = self.find(v['node'], v['vmid'])
        self.require(user, '/vms/{0}'.format(vm.vmid), 'VM.Config.Disk')
        if v.get('digest') and v['digest'] != vm.digest():
            raise PveError(500, 'detected modified configuration - file changed by other user? Try again.')
        self._check_lock(vm)
        disk, text = v['disk'], str(v['size'])
        value = vm.config.get(disk)
        if value is None:
            raise die("disk '{0}' does not exist".format(disk))
        volume, props = split_drive(value)
        if is_cdrom(volume, props):
            raise die("you can't resize a cdrom")
        if volume_ref(volume)[0] is None:
            raise die("you can't resize a disk that is not a storage volume ({0})".format(volume))
        request = parse_size(text.lstrip('+'))
        if request is None:
            raise PveError(400, 'Parameter verification failed.', {'size': 'value does not match the regex pattern'})
        size = parse_size(props.get('size', '0')) or 0
        new = size + request if text.startswith('+') else request
        if new < size:
            raise die('shrinking disks is not supported')

        async def body():
            if new == size:
                return None
            vol = self._qm_volume(volume)
            if vol is not None:
                vol['size'] = new
            props['size'] = format_size(new)
            vm.config[disk] = join_drive(volume, props)
            return None
        return await self.task(vm.node, 'resize', vm.vmid, user, body, vm=vm)
