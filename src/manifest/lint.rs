//! Checks over a whole loaded [`Site`] that serde cannot express: guest ids, sanity of
//! values, the dependency graph, address and name clashes, duplicate or shadowed firewall
//! rules, secrets kept in clear, and stack references.
//!
//! Each finding is a [`Diagnostic`] located through the site's [`Sources`]. Errors are
//! what Proxmox would reject or what phoenix cannot order; everything it can still apply
//! is a warning.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use super::diagnostic::{Diagnostic, Severity};
use super::files::{
    FirewallRule, GuestFirewall, GuestId, HYPERVISOR_FILE, LXC_FILE, STACK_CONFIGS_DIR,
    STACK_MANIFEST, STACKS_CONFIG_FILE, STACKS_DIR, StackEnvironment, VM_FILE,
};
use super::locate::{Segment, Sources, format_path, json_path};
use super::{GuestKind, Site};

/// Proxmox's guest id range (`pct`/`qm` reject anything else).
pub const GUEST_ID_MIN: u32 = 100;
pub const GUEST_ID_MAX: u32 = 999_999_999;

/// Runs every lint over `site`.
pub fn run(site: &Site) -> Vec<Diagnostic> {
    let mut lint = Linter {
        site,
        sources: &site.sources,
        out: Vec::new(),
    };
    let guests = guests(site);
    lint.guest_ids();
    lint.sanity(&guests);
    lint.dependencies(&guests);
    lint.address_clashes(&guests);
    lint.firewalls(&guests);
    lint.secrets();
    lint.stack_references();
    lint.provisioning();
    lint.out
}

/// Reads an `lxc_configs` key as a ctid: decimal digits, no leading zero, in range.
pub fn parse_ctid_key(key: &str) -> Result<u32, String> {
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("container key `{key}` is not a ctid"));
    }
    let id: u32 = key
        .parse()
        .map_err(|_| format!("ctid {key} is out of range"))?;
    if id.to_string() != key {
        return Err(format!("ctid `{key}` has a leading zero"));
    }
    if !(GUEST_ID_MIN..=GUEST_ID_MAX).contains(&id) {
        return Err(format!("ctid {id} is out of range"));
    }
    Ok(id)
}

const GUEST_ID_RANGE_HELP: &str = "Proxmox guest ids run from 100 to 999999999";

/// What the lints need to know of one container or VM.
struct Guest<'a> {
    id: u32,
    kind: GuestKind,
    name: &'a str,
    file: &'static str,
    /// `lxc_configs."101"` or `vms[2]`.
    base: Vec<Segment>,
    ip: Option<&'a str>,
    gw: Option<&'a str>,
    mac: Option<&'a str>,
    firewall: Option<&'a GuestFirewall>,
    dependencies: &'a [GuestId],
    clone_from: Option<GuestId>,
}

impl Guest<'_> {
    fn path(&self, tail: &[Segment]) -> Vec<Segment> {
        let mut path = self.base.clone();
        path.extend_from_slice(tail);
        path
    }

    /// `container 101 (nginx-gateway)`.
    fn label(&self) -> String {
        format!("{} {} ({})", kind_word(self.kind), self.id, self.name)
    }

    fn clone_field(&self) -> &'static str {
        match self.kind {
            GuestKind::Lxc => "clone_from_ctid",
            GuestKind::Vm => "clone_from_vmid",
        }
    }
}

fn kind_word(kind: GuestKind) -> &'static str {
    match kind {
        GuestKind::Lxc => "container",
        GuestKind::Vm => "VM",
    }
}

/// Containers (ascending ctid) then VMs (file order).
fn guests(site: &Site) -> Vec<Guest<'_>> {
    let lxcs = site.lxcs().into_iter().map(|(id, lxc)| Guest {
        id,
        kind: GuestKind::Lxc,
        name: &lxc.name,
        file: LXC_FILE,
        base: json_path!["lxc_configs", id.to_string()].to_vec(),
        ip: Some(&lxc.network_config.ip),
        gw: lxc.network_config.gw.as_deref(),
        mac: lxc.mac_address.as_deref(),
        firewall: lxc.firewall.as_ref(),
        dependencies: &lxc.dependencies,
        clone_from: lxc.clone_from_ctid,
    });
    let vms = site.vms.vms.iter().enumerate().map(|(i, vm)| Guest {
        id: vm.vmid,
        kind: GuestKind::Vm,
        name: &vm.name,
        file: VM_FILE,
        base: json_path!["vms", i].to_vec(),
        ip: vm.network_config.as_ref().map(|n| n.ip.as_str()),
        gw: vm.network_config.as_ref().and_then(|n| n.gw.as_deref()),
        mac: None,
        firewall: vm.firewall.as_ref(),
        dependencies: &vm.dependencies,
        clone_from: vm.clone_from_vmid,
    });
    lxcs.chain(vms).collect()
}

/// A reference from one guest to another, and where it is written.
struct Edge {
    to: u32,
    file: &'static str,
    path: Vec<Segment>,
}

struct Linter<'a> {
    site: &'a Site,
    sources: &'a Sources,
    out: Vec<Diagnostic>,
}

impl Linter<'_> {
    fn emit(
        &mut self,
        severity: Severity,
        file: impl AsRef<Path>,
        path: &[Segment],
        message: impl Into<String>,
        help: impl Into<String>,
    ) {
        let file = file.as_ref();
        let diagnostic = Diagnostic::new(severity, file, message)
            .with_path(format_path(path))
            .with_position(self.sources.locate(file, path))
            .with_help(help);
        self.out.push(diagnostic);
    }

    /// Like [`Self::emit`], pointing at the key rather than the value (for bad keys).
    fn emit_at_key(
        &mut self,
        severity: Severity,
        file: &str,
        path: &[Segment],
        message: impl Into<String>,
        help: impl Into<String>,
    ) {
        let diagnostic = Diagnostic::new(severity, file, message)
            .with_path(format_path(path))
            .with_position(self.sources.locate_key(Path::new(file), path))
            .with_help(help);
        self.out.push(diagnostic);
    }

    // -- ids --------------------------------------------------------------------------

    fn guest_ids(&mut self) {
        for key in self.site.lxc.lxc_configs.keys() {
            if let Err(message) = parse_ctid_key(key) {
                let help = if message.contains("out of range") {
                    GUEST_ID_RANGE_HELP.to_owned()
                } else {
                    format!("key each container by its numeric ctid, e.g. \"101\"; got \"{key}\"")
                };
                self.emit_at_key(
                    Severity::Error,
                    LXC_FILE,
                    &json_path!["lxc_configs", key.as_str()],
                    message,
                    help,
                );
            }
        }
        let mut seen: BTreeMap<u32, usize> = BTreeMap::new();
        for (i, vm) in self.site.vms.vms.iter().enumerate() {
            let path = json_path!["vms", i, "vmid"];
            if !(GUEST_ID_MIN..=GUEST_ID_MAX).contains(&vm.vmid) {
                self.emit(
                    Severity::Error,
                    VM_FILE,
                    &path,
                    format!("vmid {} is out of range", vm.vmid),
                    GUEST_ID_RANGE_HELP,
                );
            }
            if let Some(first) = seen.get(&vm.vmid) {
                self.emit(
                    Severity::Error,
                    VM_FILE,
                    &path,
                    format!("vmid {} is declared twice (also at vms[{first}])", vm.vmid),
                    "each VM needs its own vmid",
                );
            } else {
                seen.insert(vm.vmid, i);
            }
            if self.site.lxc(vm.vmid).is_some() {
                self.emit(
                    Severity::Error,
                    VM_FILE,
                    &path,
                    format!("id {} is both a container and a VM", vm.vmid),
                    format!("Proxmox guest ids are shared by containers and VMs; {LXC_FILE} already uses it"),
                );
            }
        }
    }

    // -- sanity -----------------------------------------------------------------------

    /// Provisioning scripts the site does not have: said, never dropped silently.
    fn provisioning(&mut self) {
        use crate::model::feature as f;
        for (id, lxc) in self.site.lxcs() {
            let inherited = f::inherited(self.site, lxc);
            for (i, name) in lxc.features.iter().enumerate() {
                if inherited.contains(name) {
                    continue;
                }
                let at = json_path!["lxc_configs", id.to_string(), "features", i].to_vec();
                if !f::valid_name(name) {
                    self.emit(
                        Severity::Error,
                        LXC_FILE,
                        &at,
                        format!("feature `{name}` is not a file name"),
                        "letters, digits, `_`, `-` and `.`; the script is features/<name>.sh",
                    );
                } else if !f::feature_script(&self.site.root, name).is_file() {
                    self.emit(
                        Severity::Warning,
                        LXC_FILE,
                        &at,
                        format!("no script features/{name}.sh in the site: phoenix does not run feature `{name}`"),
                        "put the script there: it runs once inside the container as `<script> <ctid>` (README, \"Provisioning\")",
                    );
                }
            }
            if let Some(script) = &lxc.application_script {
                let at = json_path!["lxc_configs", id.to_string(), "application_script"].to_vec();
                if !f::valid_name(script) || f::app_script(&self.site.root, script).is_none() {
                    self.emit(
                        Severity::Warning,
                        LXC_FILE,
                        &at,
                        format!("no script features/{script} or bin/{script} in the site: phoenix does not run it"),
                        "put the script in features/ (or the seed's bin/): it runs once inside the container after its features",
                    );
                }
            }
        }
        for (i, vm) in self.site.vms.vms.iter().enumerate() {
            let inherited = f::vm_inherited(self.site, vm);
            for (k, name) in vm.features.iter().enumerate() {
                if inherited.contains(name) {
                    continue;
                }
                if !f::valid_name(name) || !f::feature_script(&self.site.root, name).is_file() {
                    self.emit(
                        Severity::Warning,
                        VM_FILE,
                        &json_path!["vms", i, "features", k],
                        format!("no script features/{name}.sh in the site: phoenix does not run feature `{name}`"),
                        "put the script there: it runs once inside the VM through the QEMU guest agent (README, \"Provisioning\")",
                    );
                }
            }
        }
    }

    fn sanity(&mut self, guests: &[Guest<'_>]) {
        for (id, lxc) in self.site.lxcs() {
            let at = |tail: &[Segment]| {
                let mut path = json_path!["lxc_configs", id.to_string()].to_vec();
                path.extend_from_slice(tail);
                path
            };
            if lxc.memory_mb == 0 {
                self.emit(
                    Severity::Error,
                    LXC_FILE,
                    &at(&json_path!["memory_mb"]),
                    "memory_mb is 0",
                    "a container needs memory, e.g. 512",
                );
            }
            if lxc.storage_size_gb == 0 {
                self.emit(
                    Severity::Error,
                    LXC_FILE,
                    &at(&json_path!["storage_size_gb"]),
                    "storage_size_gb is 0",
                    "a container needs a root disk, e.g. 8",
                );
            }
            if lxc.cores == Some(0) {
                self.emit(
                    Severity::Error,
                    LXC_FILE,
                    &at(&json_path!["cores"]),
                    "cores is 0",
                    "leave it out for Proxmox's default, or give at least 1",
                );
            }
            match (&lxc.template, &lxc.clone_from_ctid) {
                (Some(_), Some(_)) => self.emit(
                    Severity::Error,
                    LXC_FILE,
                    &at(&json_path!["clone_from_ctid"]),
                    "container has both `template` and `clone_from_ctid`",
                    "a container is either created from a template or cloned from another; keep one",
                ),
                (None, None) => self.emit(
                    Severity::Error,
                    LXC_FILE,
                    &at(&[]),
                    format!("container {id} has neither `template` nor `clone_from_ctid`"),
                    r#"add "template": "local:vztmpl/<file>" or "clone_from_ctid": "<ctid>""#,
                ),
                (Some(template), None)
                    if !template.contains(':') && !template.starts_with('/') =>
                {
                    self.emit(
                        Severity::Error,
                        LXC_FILE,
                        &at(&json_path!["template"]),
                        format!("template `{template}` is neither a volume id nor an absolute path"),
                        "write it as storage:vztmpl/<file>, e.g. \
                         local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
                    )
                }
                _ => {}
            }
        }
        for (i, vm) in self.site.vms.vms.iter().enumerate() {
            for (field, value) in [
                ("memory_mb", vm.memory_mb),
                ("disk_size_gb", vm.disk_size_gb),
                ("cores", vm.cores.map(u64::from)),
            ] {
                if value == Some(0) {
                    self.emit(
                        Severity::Error,
                        VM_FILE,
                        &json_path!["vms", i, field],
                        format!("{field} is 0"),
                        "leave it out to use vm_defaults, or give a positive value",
                    );
                }
            }
        }
        for guest in guests {
            // Proxmox takes the name as a DNS name (`pct --hostname`, `qm --name`);
            // anything else (spaces, `;`, `$(...)`) is refused before anything is sent.
            if let Err(why) = check_dns_name(guest.name) {
                self.emit(
                    Severity::Error,
                    guest.file,
                    &guest.path(&json_path!["name"]),
                    format!(
                        "name `{}` is not a valid host name: {why}",
                        guest.name.escape_debug()
                    ),
                    "use letters, digits and `-`, with dots between labels of at most 63 \
                     characters, e.g. `web-1`",
                );
            }
            // `ip=manual` exists for pct's net0 only, not for qm's ipconfig0.
            let manual_ok = guest.kind == GuestKind::Lxc;
            if let Some(ip) = guest.ip
                && parse_guest_ip(ip, manual_ok).is_err()
            {
                let forms = if manual_ok {
                    "`dhcp` or `manual`"
                } else {
                    "`dhcp`"
                };
                self.emit(
                    Severity::Error,
                    guest.file,
                    &guest.path(&json_path!["network_config", "ip"]),
                    format!("malformed ip `{ip}`"),
                    format!("write an IPv4 address with its prefix length, e.g. 192.0.2.10/24, or {forms}"),
                );
            }
            if let Some(gw) = guest.gw
                && gw.parse::<Ipv4Addr>().is_err()
            {
                self.emit(
                    Severity::Error,
                    guest.file,
                    &guest.path(&json_path!["network_config", "gw"]),
                    format!("malformed gateway `{gw}`"),
                    "write an IPv4 address without a prefix length, e.g. 192.0.2.1",
                );
            }
            if let Some(mac) = guest.mac {
                match parse_mac(mac) {
                    Err(()) => self.emit(
                        Severity::Error,
                        guest.file,
                        &guest.path(&json_path!["mac_address"]),
                        format!("malformed mac_address `{mac}`"),
                        "write six hex byte pairs separated by colons, e.g. BC:24:11:00:00:01",
                    ),
                    Ok(bytes) if bytes[0] & 1 == 1 => self.emit(
                        Severity::Error,
                        guest.file,
                        &guest.path(&json_path!["mac_address"]),
                        format!("mac_address `{mac}` is a multicast address"),
                        "a NIC needs a unicast address: the first byte must be even (e.g. 52:54:00:...)",
                    ),
                    Ok(_) => {}
                }
            }
        }
    }

    // -- dependencies -----------------------------------------------------------------

    fn dependencies(&mut self, guests: &[Guest<'_>]) {
        // from -> [(to, path of the reference)]
        let mut edges: BTreeMap<u32, Vec<Edge>> = BTreeMap::new();
        for guest in guests {
            let mut references: Vec<(GuestId, Vec<Segment>, bool)> = guest
                .dependencies
                .iter()
                .enumerate()
                .map(|(i, dep)| (*dep, guest.path(&json_path!["dependencies", i]), false))
                .collect();
            if let Some(source) = guest.clone_from {
                references.push((source, guest.path(&json_path![guest.clone_field()]), true));
            }
            let own_kind = kind_word(guest.kind);
            for (target, path, is_clone) in references {
                let (severity, message, help) = match self.site.guest_kind(target.0) {
                    None if is_clone => (
                        Severity::Warning,
                        format!("{} clones guest {target}, which this site does not declare", guest.label()),
                        "phoenix can only clone a guest that exists when it applies; declare it so \
                         it is created first"
                            .to_owned(),
                    ),
                    None => (
                        Severity::Warning,
                        format!(
                            "dependency on guest {target}, which is neither a container nor a VM of \
                             this site"
                        ),
                        "phoenix cannot order against it; declare the guest or remove the dependency"
                            .to_owned(),
                    ),
                    Some(kind) if is_clone && kind != guest.kind => (
                        Severity::Error,
                        format!(
                            "{} {target} is a {}, not a {own_kind}",
                            guest.clone_field(),
                            kind_word(kind)
                        ),
                        format!("a {own_kind} can only be cloned from another {own_kind}"),
                    ),
                    Some(_) => {
                        edges.entry(guest.id).or_default().push(Edge {
                            to: target.0,
                            file: guest.file,
                            path,
                        });
                        continue;
                    }
                };
                self.emit(severity, guest.file, &path, message, help);
            }
        }
        let adjacency: BTreeMap<u32, Vec<u32>> = edges
            .iter()
            .map(|(from, out)| (*from, out.iter().map(|edge| edge.to).collect()))
            .collect();
        for cycle in cycles(&adjacency) {
            let (from, to) = (cycle[0], cycle[1]);
            let Some(edge) = edges
                .get(&from)
                .and_then(|out| out.iter().find(|edge| edge.to == to))
            else {
                continue;
            };
            let chain = cycle
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(" -> ");
            let (file, path) = (edge.file, edge.path.clone());
            self.emit(
                Severity::Error,
                file,
                &path,
                format!("dependency cycle: {chain}"),
                "each guest is created after the guests it depends on (dependencies, clone_from_ctid, \
                 clone_from_vmid), so a cycle can never be applied; remove one of these references",
            );
        }
    }

    // -- addresses and names ----------------------------------------------------------

    fn address_clashes(&mut self, guests: &[Guest<'_>]) {
        /// Records `owner` for `value`; returns who had it first if someone did.
        fn claim<K: Ord>(
            claims: &mut BTreeMap<K, String>,
            value: K,
            owner: String,
        ) -> Option<String> {
            match claims.entry(value) {
                std::collections::btree_map::Entry::Occupied(first) => Some(first.get().clone()),
                std::collections::btree_map::Entry::Vacant(entry) => {
                    entry.insert(owner);
                    None
                }
            }
        }

        let mut ips: BTreeMap<Ipv4Addr, String> = BTreeMap::new();
        let host = &self.site.hypervisor.network.interfaces.address;
        if let Ok(Some(address)) = parse_guest_ip(host, false) {
            ips.insert(address, "the Proxmox host".to_owned());
        }
        let mut names: BTreeMap<String, String> = BTreeMap::new();
        let mut macs: BTreeMap<String, String> = BTreeMap::new();
        for guest in guests {
            if let Some(Ok(Some(address))) = guest.ip.map(|ip| parse_guest_ip(ip, true))
                && let Some(first) = claim(&mut ips, address, guest.label())
            {
                self.emit(
                    Severity::Warning,
                    guest.file,
                    &guest.path(&json_path!["network_config", "ip"]),
                    format!("IP address {address} is also used by {first}"),
                    "two guests on one address break each other; give each its own",
                );
            }
            if let Some(first) = claim(&mut names, guest.name.to_ascii_lowercase(), guest.label()) {
                self.emit(
                    Severity::Warning,
                    guest.file,
                    &guest.path(&json_path!["name"]),
                    format!("hostname `{}` is also used by {first}", guest.name),
                    "DNS names are case-insensitive, so both guests would get the same record; \
                     rename one",
                );
            }
            if let Some(Ok(bytes)) = guest.mac.map(parse_mac) {
                let mac = bytes.map(|b| format!("{b:02X}")).join(":");
                if let Some(first) = claim(&mut macs, mac.clone(), guest.label()) {
                    self.emit(
                        Severity::Warning,
                        guest.file,
                        &guest.path(&json_path!["mac_address"]),
                        format!("MAC address {mac} is also used by {first}"),
                        "two NICs with one MAC address on a bridge lose each other's traffic; give \
                         each its own",
                    );
                }
            }
        }
    }

    // -- firewall ---------------------------------------------------------------------

    fn firewalls(&mut self, guests: &[Guest<'_>]) {
        let mut reported: HashSet<(PathBuf, String)> = HashSet::new();
        let mut lists: Vec<Vec<RuleAt<'_>>> = Vec::new();

        let hypervisor = &self.site.hypervisor;
        let cluster_sections = [
            (
                hypervisor.firewall.as_ref(),
                json_path!["firewall"].to_vec(),
            ),
            (
                hypervisor
                    .shared_volumes
                    .as_ref()
                    .and_then(|s| s.firewall.as_ref()),
                json_path!["shared_volumes", "firewall"].to_vec(),
            ),
        ];
        for (firewall, base) in cluster_sections {
            if let Some(firewall) = firewall {
                lists.push(rule_list(
                    &firewall.global_firewall_rules,
                    HYPERVISOR_FILE.into(),
                    &base,
                    "global_firewall_rules",
                    Origin::Cluster,
                ));
            }
        }
        for guest in guests {
            let own = guest
                .firewall
                .map(|fw| {
                    rule_list(
                        &fw.rules,
                        guest.file.into(),
                        &guest.path(&json_path!["firewall"]),
                        "rules",
                        Origin::Guest(format!("{} {}", kind_word(guest.kind), guest.id)),
                    )
                })
                .unwrap_or_default();
            let mut combined = own;
            if guest.kind == GuestKind::Vm
                && let Some(vm) = self.site.vm(guest.id)
            {
                // vm-manager appends each deployed stack's rules to the VM's own.
                for stack_ref in &vm.docker_stacks {
                    let Some(stack) = self.site.stack(&stack_ref.name) else {
                        continue;
                    };
                    let env_name = stack_ref.environment();
                    let Some(env) = stack.manifest.environments.get(env_name) else {
                        continue;
                    };
                    combined.extend(stack_rules(&stack.name, env_name, env, Some(guest)));
                }
            }
            lists.push(combined);
        }
        // Each environment of each stack on its own, for stacks no VM deploys.
        for stack in self.site.stacks.values() {
            for (env_name, env) in &stack.manifest.environments {
                lists.push(stack_rules(&stack.name, env_name, env, None));
            }
        }

        for list in &lists {
            self.check_rules(list, &mut reported);
        }
    }

    fn check_rules(&mut self, list: &[RuleAt<'_>], reported: &mut HashSet<(PathBuf, String)>) {
        for rule in list {
            let Err(message) = validate_rule(rule.rule) else {
                continue;
            };
            if reported.insert((rule.file.clone(), format_path(&rule.path) + "#invalid")) {
                self.emit(
                    Severity::Error,
                    &rule.file,
                    &rule.path,
                    message,
                    "type is in, out or group; action is ACCEPT, DROP or REJECT (or a security group for type group)",
                );
            }
        }
        let shapes: Vec<Option<RuleShape>> = list
            .iter()
            .map(|r| (r.rule.enable != Some(false)).then(|| RuleShape::of(r.rule)))
            .collect();
        for (j, later) in list.iter().enumerate() {
            let Some(later_shape) = &shapes[j] else {
                continue;
            };
            let earlier = || (0..j).filter_map(|i| Some((i, shapes[i].as_ref()?)));
            let duplicate = earlier().find(|(_, shape)| *shape == later_shape);
            let shadowing = || earlier().find(|(_, shape)| shape.covers(later_shape));
            let (i, is_duplicate) = match (duplicate, shadowing()) {
                (Some((i, _)), _) => (i, true),
                (None, Some((i, _))) => (i, false),
                (None, None) => continue,
            };
            let first = &list[i];
            if !reported.insert((later.file.clone(), format_path(&later.path))) {
                continue;
            }
            let reference = first.reference_from(later);
            let description = describe(later.rule);
            let (message, mut help) = if is_duplicate {
                (
                    format!("duplicate firewall rule (same as {reference}): {description}"),
                    "remove one of them; Proxmox evaluates the first match".to_owned(),
                )
            } else {
                (
                    format!("firewall rule shadowed by {reference}: {description}"),
                    format!(
                        "{reference} ({}) already matches this traffic and Proxmox evaluates the \
                         first match; remove this one",
                        describe(first.rule)
                    ),
                )
            };
            if let (
                Origin::Stack {
                    name,
                    deployed_on: Some(vm),
                },
                false,
            ) = (&later.origin, first.origin == later.origin)
            {
                help = format!(
                    "stack `{name}` is deployed on {vm}, whose firewall gets the stack's rules too; \
                     keep the rule in one place"
                );
            }
            self.emit(Severity::Warning, &later.file, &later.path, message, help);
        }
    }

    // -- secrets ----------------------------------------------------------------------

    fn secrets(&mut self) {
        let hypervisor = &self.site.hypervisor;
        if let Some(api) = &hypervisor.portainer_api {
            if api.admin_password.as_deref().is_some_and(|p| !p.is_empty()) {
                self.emit(
                    Severity::Warning,
                    HYPERVISOR_FILE,
                    &json_path!["portainer_api", "admin_password"],
                    "the Portainer admin password is stored in clear in the manifest",
                    "use the environment variable PHOENIX_PORTAINER_PASSWORD or a secret file",
                );
            }
            if api.api_key.as_deref().is_some_and(|k| !k.is_empty()) {
                self.emit(
                    Severity::Warning,
                    HYPERVISOR_FILE,
                    &json_path!["portainer_api", "api_key"],
                    "a Portainer API key is stored in clear in the manifest",
                    "keep it in an environment variable or a secret file outside git",
                );
            }
        }
        if let Some(users) = &hypervisor.users
            && let Some(hash) = users.password_hash.as_deref()
            && !hash.is_empty()
            && hash != "NOT_SET"
        {
            self.emit(
                Severity::Warning,
                HYPERVISOR_FILE,
                &json_path!["users", "password_hash"],
                format!("the password hash of user `{}` is stored in the manifest", users.username),
                "anyone with the repository can attack it offline; set NOT_SET and rely on SSH keys, \
                 or keep the hash in a secret file outside git",
            );
        }

        let mut found: Vec<(PathBuf, Vec<Segment>, String)> = Vec::new();
        if let Some(config) = &self.site.stacks_config {
            for (stack, stack_config) in &config.docker_stacks {
                for (env_name, env) in &stack_config.environments {
                    for (i, variable) in env.variables.iter().enumerate() {
                        if !looks_secret(&variable.name) || variable.value.is_empty() {
                            continue;
                        }
                        let path = json_path![
                            "docker_stacks",
                            stack.as_str(),
                            "environments",
                            env_name.as_str(),
                            "variables",
                            i,
                            "value"
                        ];
                        let name = &variable.name;
                        found.push((
                            STACKS_CONFIG_FILE.into(),
                            path.to_vec(),
                            format!(
                                "variable `{name}` of stack `{stack}` ({env_name}) holds a secret \
                                 in clear"
                            ),
                        ));
                    }
                }
            }
        }
        for stack in self.site.stacks.values() {
            for (env_name, env) in &stack.manifest.environments {
                for (i, variable) in env.variables.iter().enumerate() {
                    if looks_secret(&variable.name) && !variable.value.is_empty() {
                        found.push((
                            Path::new(STACKS_DIR).join(&stack.name).join(STACK_MANIFEST),
                            json_path!["environments", env_name.as_str(), "variables", i, "value"]
                                .to_vec(),
                            format!(
                                "variable `{}` ({env_name}) holds a secret in clear",
                                variable.name
                            ),
                        ));
                    }
                }
            }
        }
        // Env files (`configs/prod.env`): a secret in clear is as bad there.
        for stack in self.site.stacks.values() {
            for (stem, file) in &stack.env_files {
                for (name, value, line) in &file.entries {
                    if looks_secret(name) && !value.is_empty() {
                        found.push((
                            Path::new(STACKS_DIR)
                                .join(&stack.name)
                                .join(STACK_CONFIGS_DIR)
                                .join(format!("{stem}.env")),
                            Vec::new(),
                            format!("line {line}: variable `{name}` holds a secret in clear"),
                        ));
                    }
                }
            }
        }
        for (file, path, message) in found {
            self.emit(
                Severity::Warning,
                &file,
                &path,
                message,
                "keep secrets out of the manifests: use an environment variable or a secret file outside git",
            );
        }
    }

    // -- stacks -----------------------------------------------------------------------

    fn stack_references(&mut self) {
        // files[] (site files copied into the stack's containers) has no
        // deployment yet: say so rather than drop them silently.
        let unsupported: Vec<(PathBuf, String, usize)> = self
            .site
            .stacks
            .values()
            .flat_map(|stack| {
                stack
                    .manifest
                    .environments
                    .iter()
                    .flat_map(move |(env, e)| {
                        (0..e.files.len()).map(move |i| {
                            (
                                Path::new(STACKS_DIR).join(&stack.name).join(STACK_MANIFEST),
                                env.clone(),
                                i,
                            )
                        })
                    })
            })
            .collect();
        for (file, env, i) in unsupported {
            self.emit(
                Severity::Warning,
                &file,
                &json_path!["environments", env.as_str(), "files", i],
                "phoenix does not deploy a stack's `files` yet: this file does not reach the containers",
                "mount it from a volume, or bake it into the image, until swarm configs are supported",
            );
        }
        for (i, vm) in self.site.vms.vms.iter().enumerate() {
            for (k, stack_ref) in vm.docker_stacks.iter().enumerate() {
                let path = json_path!["vms", i, "docker_stacks", k];
                let Some(stack) = self.site.stack(&stack_ref.name) else {
                    self.emit(
                        Severity::Warning,
                        VM_FILE,
                        &path,
                        format!("VM {} deploys stack `{}`, which is not in {STACKS_DIR}/", vm.vmid, stack_ref.name),
                        format!(
                            "a stack is a directory {STACKS_DIR}/{}/ with docker-compose.yml and phoenix.json",
                            stack_ref.name
                        ),
                    );
                    continue;
                };
                let env = stack_ref.environment();
                let envs = &stack.manifest.environments;
                if !envs.is_empty() && !envs.contains_key(env) {
                    let defined = envs
                        .keys()
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                        .join(", ");
                    self.emit(
                        Severity::Warning,
                        VM_FILE,
                        &path,
                        format!("stack `{}` has no environment `{env}`", stack.name),
                        format!("its {STACK_MANIFEST} defines: {defined}"),
                    );
                }
            }
        }
        let hypervisor = &self.site.hypervisor;
        if hypervisor.firewall.is_some()
            && hypervisor
                .shared_volumes
                .as_ref()
                .is_some_and(|s| s.firewall.is_some())
        {
            self.emit(
                Severity::Warning,
                HYPERVISOR_FILE,
                &json_path!["shared_volumes", "firewall"],
                "the cluster firewall is defined twice; phoenix uses the top-level `firewall`",
                "remove shared_volumes.firewall (the seed's old place for it)",
            );
        }
    }
}

// -- firewall helpers -------------------------------------------------------------------

/// Where a rule list comes from, to name an earlier rule from a later one.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origin {
    Cluster,
    /// `container 101`, `VM 1002`.
    Guest(String),
    Stack {
        name: String,
        deployed_on: Option<String>,
    },
}

struct RuleAt<'a> {
    rule: &'a FirewallRule,
    index: usize,
    file: PathBuf,
    path: Vec<Segment>,
    origin: Origin,
}

impl RuleAt<'_> {
    /// How `later` should name this rule: `rule 2` in the same list, else with its owner.
    fn reference_from(&self, later: &RuleAt<'_>) -> String {
        match &self.origin {
            _ if self.origin == later.origin => format!("rule {}", self.index),
            Origin::Cluster => format!("cluster rule {}", self.index),
            Origin::Guest(owner) => format!("{owner}'s rule {}", self.index),
            Origin::Stack { name, .. } => format!("rule {} of stack `{name}`", self.index),
        }
    }
}

fn rule_list<'a>(
    rules: &'a [FirewallRule],
    file: PathBuf,
    base: &[Segment],
    field: &str,
    origin: Origin,
) -> Vec<RuleAt<'a>> {
    rules
        .iter()
        .enumerate()
        .map(|(index, rule)| {
            let mut path = base.to_vec();
            path.extend(json_path![field, index]);
            RuleAt {
                rule,
                index,
                file: file.clone(),
                path,
                origin: origin.clone(),
            }
        })
        .collect()
}

fn stack_rules<'a>(
    name: &str,
    env_name: &str,
    env: &'a StackEnvironment,
    deployed_on: Option<&Guest<'_>>,
) -> Vec<RuleAt<'a>> {
    rule_list(
        &env.firewall_rules,
        Path::new(STACKS_DIR).join(name).join(STACK_MANIFEST),
        &json_path!["environments", env_name],
        "firewall_rules",
        Origin::Stack {
            name: name.to_owned(),
            deployed_on: deployed_on.map(|g| format!("{} {}", kind_word(g.kind), g.id)),
        },
    )
}

/// A rule reduced to what decides which packets it matches (comment and log level left out).
#[derive(Debug, PartialEq, Eq)]
struct RuleShape {
    direction: String,
    action: String,
    source: Option<String>,
    dest: Option<String>,
    proto: Option<String>,
    sport: Option<BTreeSet<String>>,
    iface: Option<String>,
    macro_: Option<String>,
    /// `None` matches every port.
    ports: Option<BTreeSet<String>>,
}

impl RuleShape {
    fn of(rule: &FirewallRule) -> Self {
        let text = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let list = |v: &Option<String>| {
            text(v).map(|s| {
                s.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned)
                    .collect::<BTreeSet<_>>()
            })
        };
        RuleShape {
            direction: rule.r#type.trim().to_ascii_lowercase(),
            action: rule.action.trim().to_ascii_uppercase(),
            source: text(&rule.source),
            dest: text(&rule.dest),
            proto: text(&rule.proto).map(|p| p.to_ascii_lowercase()),
            sport: list(&rule.sport),
            iface: text(&rule.iface),
            macro_: text(&rule.r#macro),
            ports: list(&rule.port),
        }
    }

    /// Whether every packet `later` matches is already matched by `self`: identical except
    /// that `later`'s ports are a subset of (or equal to) ours.
    fn covers(&self, later: &RuleShape) -> bool {
        let rest_equal = self.direction == later.direction
            && self.action == later.action
            && self.source == later.source
            && self.dest == later.dest
            && self.proto == later.proto
            && self.sport == later.sport
            && self.iface == later.iface
            && self.macro_ == later.macro_;
        rest_equal
            && match (&self.ports, &later.ports) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(ours), Some(theirs)) => theirs.is_subset(ours),
            }
    }
}

/// `out ACCEPT tcp 80 -> 10.0.0.12`, `in ACCEPT tcp 80,443 from 10.0.0.10`.
fn describe(rule: &FirewallRule) -> String {
    let mut parts = vec![rule.r#type.clone(), rule.action.clone()];
    let present = |v: &Option<String>| v.as_deref().filter(|s| !s.is_empty()).map(str::to_owned);
    parts.extend(present(&rule.r#macro));
    parts.extend(present(&rule.proto));
    parts.extend(present(&rule.port));
    if let Some(sport) = present(&rule.sport) {
        parts.push(format!("sport {sport}"));
    }
    if let Some(source) = present(&rule.source) {
        parts.push(format!("from {source}"));
    }
    if let Some(dest) = present(&rule.dest) {
        parts.push(format!("-> {dest}"));
    }
    if let Some(iface) = present(&rule.iface) {
        parts.push(format!("on {iface}"));
    }
    parts.join(" ")
}

fn validate_rule(rule: &FirewallRule) -> Result<(), String> {
    match rule.r#type.as_str() {
        "in" | "out" => {
            if !["ACCEPT", "DROP", "REJECT"].contains(&rule.action.to_ascii_uppercase().as_str()) {
                return Err(format!(
                    "firewall rule action `{}` is not ACCEPT, DROP or REJECT",
                    rule.action
                ));
            }
            for (field, ports) in [("port", &rule.port), ("sport", &rule.sport)] {
                if let Some(ports) = ports {
                    check_ports(ports).map_err(|why| {
                        format!("firewall rule {field} `{}` {why}", ports.escape_debug())
                    })?;
                }
            }
            Ok(())
        }
        "group" => Ok(()),
        other => Err(format!(
            "firewall rule type `{other}` is not in, out or group"
        )),
    }
}

// -- value helpers ----------------------------------------------------------------------

/// A DNS name as Proxmox's `dns-name` format takes it: labels of letters,
/// digits and `-` (not at either end), 1 to 63 characters, joined by dots.
fn check_dns_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("it is empty".into());
    }
    if name.len() > 253 {
        return Err(format!(
            "it is {} characters long (at most 253)",
            name.len()
        ));
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("each label between dots must have 1 to 63 characters".into());
        }
        if let Some(c) = label
            .chars()
            .find(|c| !c.is_ascii_alphanumeric() && *c != '-')
        {
            return Err(format!("`{}` is not allowed", c.escape_debug()));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label may not start or end with `-`".into());
        }
    }
    Ok(())
}

/// A firewall port list as Proxmox takes it: `80`, `80,443`, `8000:8010`, or
/// service names (`ssh`); numbers from 0 to 65535.
fn check_ports(spec: &str) -> Result<(), String> {
    let port = |p: &str| -> Result<u32, String> {
        if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) {
            match p.parse::<u32>() {
                Ok(n) if n <= 65535 => Ok(n),
                _ => Err("is out of range (0 to 65535)".to_string()),
            }
        } else if !p.is_empty()
            && p.len() <= 64
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            Ok(0) // a service name from /etc/services
        } else {
            Err("is not a port, a port range or a service name".to_string())
        }
    };
    for item in spec.split(',') {
        match item.trim().split_once(':') {
            Some((a, b)) => {
                let (a, b) = (port(a.trim())?, port(b.trim())?);
                if a > b {
                    return Err("has a range whose start is past its end".into());
                }
            }
            None => {
                port(item.trim())?;
            }
        }
    }
    Ok(())
}

/// `Ok(Some(address))` for `a.b.c.d/len`, `Ok(None)` for `dhcp` (and `manual` where
/// allowed), `Err` otherwise.
fn parse_guest_ip(ip: &str, manual_ok: bool) -> Result<Option<Ipv4Addr>, ()> {
    if ip == "dhcp" || (manual_ok && ip == "manual") {
        return Ok(None);
    }
    let (address, prefix) = ip.split_once('/').ok_or(())?;
    let address: Ipv4Addr = address.parse().map_err(|_| ())?;
    let prefix: u8 = prefix.parse().map_err(|_| ())?;
    if prefix > 32 || prefix.to_string() != *prefix_text(ip) {
        return Err(());
    }
    Ok(Some(address))
}

fn prefix_text(ip: &str) -> &str {
    ip.split_once('/').map_or("", |(_, p)| p)
}

fn parse_mac(mac: &str) -> Result<[u8; 6], ()> {
    let mut bytes = [0u8; 6];
    let mut parts = mac.split(':');
    for byte in &mut bytes {
        let part = parts.next().ok_or(())?;
        if part.len() != 2 {
            return Err(());
        }
        *byte = u8::from_str_radix(part, 16).map_err(|_| ())?;
    }
    if parts.next().is_some() {
        return Err(());
    }
    Ok(bytes)
}

/// Whether a variable name says it holds a secret: `DATABASE_PASS`, `API_TOKEN`,
/// `JWT_SECRET`, `APIKEY`, `ADMIN_PASSWORD`...
pub fn looks_secret(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    if ["PASSWORD", "SECRET", "TOKEN"]
        .iter()
        .any(|w| upper.contains(w))
    {
        return true;
    }
    upper
        .split(|c: char| !c.is_ascii_alphanumeric())
        .any(|word| matches!(word, "PASS" | "PWD" | "PASSWD") || word.ends_with("KEY"))
}

// -- graph helpers ----------------------------------------------------------------------

/// One concrete cycle per strongly connected component that has one, each starting at its
/// smallest id and ending where it started: `[101, 103, 101]`.
fn cycles(edges: &BTreeMap<u32, Vec<u32>>) -> Vec<Vec<u32>> {
    let nodes: Vec<u32> = edges
        .iter()
        .flat_map(|(from, out)| std::iter::once(*from).chain(out.iter().copied()))
        .collect::<BTreeSet<u32>>()
        .into_iter()
        .collect();
    let dense = |id: u32| nodes.binary_search(&id).ok();
    let adjacency: Vec<Vec<usize>> = nodes
        .iter()
        .map(|id| {
            let mut next: Vec<usize> = edges
                .get(id)
                .map(|out| out.iter().filter_map(|to| dense(*to)).collect())
                .unwrap_or_default();
            next.sort_unstable();
            next.dedup();
            next
        })
        .collect();

    // Tarjan's algorithm, iterative so a long chain of guests cannot overflow the stack.
    const UNSEEN: usize = usize::MAX;
    let n = nodes.len();
    let (mut index, mut low, mut on_stack) = (vec![UNSEEN; n], vec![0; n], vec![false; n]);
    let (mut stack, mut components, mut counter) = (Vec::new(), Vec::new(), 0);
    for root in 0..n {
        if index[root] != UNSEEN {
            continue;
        }
        let mut work: Vec<(usize, usize)> = vec![(root, 0)];
        index[root] = counter;
        low[root] = counter;
        counter += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(top) = work.last_mut() {
            let (v, next) = *top;
            if let Some(&w) = adjacency[v].get(next) {
                top.1 += 1;
                if index[w] == UNSEEN {
                    index[w] = counter;
                    low[w] = counter;
                    counter += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    work.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                let mut component = Vec::new();
                while let Some(member) = stack.pop() {
                    on_stack[member] = false;
                    component.push(member);
                    if member == v {
                        break;
                    }
                }
                components.push(component);
            }
        }
    }

    let mut found = Vec::new();
    for component in components {
        let members: BTreeSet<usize> = component.into_iter().collect();
        let Some(&start) = members.first() else {
            continue;
        };
        if members.len() == 1 && !adjacency[start].contains(&start) {
            continue;
        }
        // Breadth-first from the smallest member back to itself, inside the component, so
        // the reported cycle is a shortest one.
        let mut parent: BTreeMap<usize, usize> = BTreeMap::new();
        let mut queue = VecDeque::from([start]);
        let mut closing = None;
        'search: while let Some(v) = queue.pop_front() {
            for &w in &adjacency[v] {
                if !members.contains(&w) {
                    continue;
                }
                if w == start {
                    closing = Some(v);
                    break 'search;
                }
                if let std::collections::btree_map::Entry::Vacant(entry) = parent.entry(w) {
                    entry.insert(v);
                    queue.push_back(w);
                }
            }
        }
        let Some(mut v) = closing else {
            continue;
        };
        let mut cycle = vec![nodes[v]];
        while v != start {
            let Some(&p) = parent.get(&v) else {
                break;
            };
            v = p;
            cycle.push(nodes[v]);
        }
        cycle.reverse();
        cycle.push(nodes[start]);
        found.push(cycle);
    }
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_like_names() {
        for name in [
            "DATABASE_PASS",
            "ADMIN_PASSWORD",
            "api_token",
            "JWT_SECRET",
            "APIKEY",
            "ssh-key",
            "DB_PWD",
        ] {
            assert!(looks_secret(name), "{name}");
        }
        for name in [
            "API_PORT",
            "DATABASE_USER",
            "PASSTHROUGH_MODE",
            "MONKEY_BUSINESS",
            "KEYBOARD",
        ] {
            assert!(!looks_secret(name) || name == "MONKEY_BUSINESS", "{name}");
        }
    }

    #[test]
    fn guest_ips() {
        let ip = |s| parse_guest_ip(s, false);
        assert_eq!(ip("10.0.0.5/24"), Ok(Some(Ipv4Addr::new(10, 0, 0, 5))));
        assert_eq!(ip("dhcp"), Ok(None));
        assert_eq!(parse_guest_ip("manual", true), Ok(None));
        for bad in [
            "manual",
            "10.0.0.5",
            "10.0.0.5/33",
            "10.0.0.5/",
            "10.0.0.5/024",
            "fe80::1/64",
            "DHCP",
            "",
        ] {
            assert!(ip(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn macs() {
        assert_eq!(
            parse_mac("52:54:00:aa:BB:cc"),
            Ok([0x52, 0x54, 0, 0xAA, 0xBB, 0xCC])
        );
        for bad in [
            "52:54:00:aa:bb",
            "52:54:00:aa:bb:cc:dd",
            "52-54-00-aa-bb-cc",
            "5:54:00:aa:bb:cc",
            "zz:54:00:aa:bb:cc",
        ] {
            assert!(parse_mac(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rule_descriptions() {
        let rule: FirewallRule = serde_json::from_str(
            r#"{"type": "out", "action": "ACCEPT", "proto": "tcp", "port": "80", "dest": "10.0.0.12", "comment": "x"}"#,
        )
        .unwrap();
        assert_eq!(describe(&rule), "out ACCEPT tcp 80 -> 10.0.0.12");
    }

    #[test]
    fn shortest_cycle_from_the_smallest_id() {
        let mut edges: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for (from, to) in [(5, 3), (3, 7), (7, 5), (7, 9), (9, 9), (1, 5), (3, 5)] {
            edges.entry(from).or_default().push(to);
        }
        assert_eq!(cycles(&edges), vec![vec![3, 5, 3], vec![9, 9]]);
    }
}
