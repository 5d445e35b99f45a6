#!/usr/bin/env python3
"""Generate a large phoenix site in the seed format, for scripts/bench.

    python3 bench/gen_site.py --size 1000 --out DIR [--extra 100] [--summary FILE]

`--size N` means N LXC containers and N/10 VMs (at least 1), every guest with a firewall:

- LXCs: ctids 10000..10000+N-1, created from the world's Debian or Ubuntu template (volume ids on
  `local`), their disks spread over the rootdir storages fakepve has (`local-lvm`, `quickOS-lxc-disks`,
  `quickOS-lxc-persistent-data`); a firewall (on) with 2-4 rules each.
- VMs: vmids 20000..: one template VM per 25 VMs (built from the world's cloud image, as
  tests/common.rs `vm_from_image`), the others full clones of a template (`vm_clone`), half of them on
  `local-lvm`, half on `quickOS-vm-disks`; a firewall with 1-2 rules on every clone.
- The datacenter firewall: options and 3 global rules (`firewall.cluster`).

`--extra K` adds K more LXCs (ctids 30000..), the same shape: the "100 creates" of the benchmark
are the site with `--extra 100` applied on top of the site without it.

The ids stay clear of the seed's (100-999, 9000-9999) and of the tests' ranges.
`--summary FILE` writes the counts the benchmark's bounds are computed from (JSON).
"""

import argparse
import json
import os

DEBIAN = 'local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst'
UBUNTU = 'local:vztmpl/ubuntu-24.04-standard_24.04-2_amd64.tar.zst'
LXC_TEMPLATES = (DEBIAN, UBUNTU)
LXC_STORAGES = ('local-lvm', 'quickOS-lxc-disks', 'quickOS-lxc-persistent-data')
VM_STORAGES = ('local-lvm', 'quickOS-vm-disks')
CLOUD_IMAGE = 'noble-server-cloudimg-amd64.img'
LXC_BASE = 10000
VM_BASE = 20000
EXTRA_BASE = 30000
VMS_PER_TEMPLATE = 25


def ip(index):
    """A unique host address in 10.0.0.0/8 (gateway 10.0.0.1) for guest number index, never 10.0.x.x."""
    return '10.{0}.{1}.{2}'.format(1 + index // 62500, (index // 250) % 250, 2 + index % 250)


def rule(kind, action, proto, port, comment, source=None):
    r = {'type': kind, 'action': action, 'proto': proto, 'comment': comment}
    if port:
        r['port'] = port
    if source:
        r['source'] = source
    return r


def lxc_rules(i):
    rules = [rule('in', 'ACCEPT', 'tcp', '22', 'ssh from the LAN', '10.0.0.0/8'),
             rule('in', 'ACCEPT', 'icmp', None, 'ping')]
    if i % 2 == 0:
        rules.append(rule('in', 'ACCEPT', 'tcp', '80,443', 'web'))
    if i % 3 == 0:
        rules.append(rule('in', 'DROP', 'tcp', '8000:8010', 'no debug ports'))
    return rules


def lxc(ctid, i):
    return {
        'name': 'ct-{0}'.format(ctid),
        'memory_mb': 512 + 256 * (i % 4),
        'cores': 1 + i % 2,
        'template': LXC_TEMPLATES[i % len(LXC_TEMPLATES)],
        'storage_pool': LXC_STORAGES[i % len(LXC_STORAGES)],
        'storage_size_gb': 4 + 2 * (i % 3),
        'network_config': {'name': 'eth0', 'bridge': 'vmbr0', 'ip': ip(i) + '/8', 'gw': '10.0.0.1'},
        'unprivileged': True,
        'start_at_boot': i % 5 != 0,
        'boot_order': 2 + i % 3,
        'boot_delay': 5,
        'tags': ['bench', 'tier{0}'.format(i % 3)],
        'firewall': {'enabled': True, 'rules': lxc_rules(i)},
    }


def vm(vmid, i, template_vmid=None):
    v = {
        'vmid': vmid,
        'name': 'vm-{0}'.format(vmid),
        'cores': 1 + i % 2,
        'memory_mb': 1024,
        'storage_pool': VM_STORAGES[i % len(VM_STORAGES)],
        'network_config': {'ip': ip(50000 + i) + '/8', 'gw': '10.0.0.1', 'nameserver': '10.0.0.13'},
        'user_config': {'username': 'phoenix_user'},
    }
    if template_vmid is None:
        v['template_image'] = CLOUD_IMAGE
        v['is_template'] = True
        v['network_config'] = {'ip': 'dhcp', 'nameserver': '10.0.0.13'}
    else:
        v['clone_from_vmid'] = template_vmid
        v['firewall'] = {'enabled': True, 'rules': lxc_rules(i)[:1 + i % 2]}
        v['tags'] = ['bench']
    return v


def build(size, extra):
    lxcs = {}
    for i in range(size):
        lxcs[str(LXC_BASE + i)] = lxc(LXC_BASE + i, i)
    for i in range(extra):
        lxcs[str(EXTRA_BASE + i)] = lxc(EXTRA_BASE + i, size + i)
    n_vms = max(1, size // 10)
    n_templates = max(1, -(-n_vms // VMS_PER_TEMPLATE)) if n_vms > 1 else 1
    vms = []
    templates = [VM_BASE + 9000 + t for t in range(n_templates)]
    for t, vmid in enumerate(templates):
        vms.append(vm(vmid, t))
    for i in range(n_vms - n_templates):
        vms.append(vm(VM_BASE + i, i, templates[i % n_templates]))
    hypervisor = {
        'domain_name': 'bench.example.internal',
        'network': {'interfaces': {'name': 'vmbr0', 'address': '10.0.0.13/8', 'gateway': '10.0.0.1',
                                   'dns_nameservers': ['10.0.0.13']}},
        'shared_volumes': {'firewall': {
            'enabled': True,
            'default_input_policy': 'DROP',
            'default_output_policy': 'ACCEPT',
            'global_firewall_rules': [
                rule('in', 'ACCEPT', 'tcp', '80', 'HTTP for ACME'),
                rule('in', 'ACCEPT', 'tcp', '443', 'HTTPS to the gateway'),
                rule('in', 'ACCEPT', 'tcp', '8006', 'Proxmox UI from the LAN', '10.0.0.0/8'),
            ],
        }},
    }
    vm_file = {'vm_defaults': {'cores': 2, 'memory_mb': 2048, 'storage_pool': 'local-lvm',
                               'network_bridge': 'vmbr0'},
               'vms': vms}
    lxc_file = {'lxc_configs': lxcs}
    clones = [v for v in vms if 'clone_from_vmid' in v]
    summary = {
        'size': size,
        'extra': extra,
        'lxc': len(lxcs),
        'vm': len(vms),
        'vm_templates': len(templates),
        'vm_clones': len(clones),
        # Guests with a firewall section, and the datacenter firewall.
        'guest_firewalls': len(lxcs) + len(clones),
        'extra_lxc': extra,
        'extra_rules': sum(len(lxcs[str(EXTRA_BASE + i)]['firewall']['rules']) for i in range(extra)),
        'lxc_templates': len({c['template'] for c in lxcs.values()}),
        'lxc_storages': len({c['storage_pool'] for c in lxcs.values()}),
    }
    return hypervisor, lxc_file, vm_file, summary


def write_json(path, value):
    with open(path, 'w', encoding='utf-8') as out:
        json.dump(value, out, indent=2)
        out.write('\n')


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--size', type=int, default=1000, help='LXC containers (VMs: size/10); default 1000')
    p.add_argument('--extra', type=int, default=0, help='more LXCs (ctids 30000..), for the create figure')
    p.add_argument('--out', required=True, help='the site directory (etc/ is written into it)')
    p.add_argument('--summary', help='write the counts as JSON to this file')
    args = p.parse_args()
    if args.size < 1 or args.size > 9000 or args.extra < 0 or args.extra > 9000:
        p.error('--size must be 1..9000 and --extra 0..9000 (the vmid ranges)')
    hypervisor, lxcs, vms, summary = build(args.size, args.extra)
    etc = os.path.join(args.out, 'etc')
    os.makedirs(etc, exist_ok=True)
    write_json(os.path.join(etc, 'phoenix_hypervisor_config.json'), hypervisor)
    write_json(os.path.join(etc, 'phoenix_lxc_configs.json'), lxcs)
    write_json(os.path.join(etc, 'phoenix_vm_configs.json'), vms)
    if args.summary:
        write_json(args.summary, summary)


if __name__ == '__main__':
    main()
