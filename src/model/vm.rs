//! `vm.<vmid>`: a QEMU virtual machine, a template VM or a clone of one. Its
//! attributes, how the manifests produce them, and the two-way mapping to a PVE
//! VM config (`from_pve_config`, `config_params`), kept pure so every
//! normalization row is unit-tested. How a VM is built lives in
//! `providers/proxmox/vm.rs`; why, in `docs/decisions/0008-vm-kind.md`.
//!
//! | attribute      | manifest                                              | PVE config key               | notes |
//! |----------------|-------------------------------------------------------|------------------------------|-------|
//! | `name`         | `name`                                                | `name`                       | |
//! | `cores`        | `cores`, else `vm_defaults.cores`                     | `cores`                      | needs a reboot |
//! | `memory`       | `memory_mb`, else `vm_defaults.memory_mb`             | `memory` (`[current=]MiB`)   | MiB; a string since PVE 8.1; needs a reboot |
//! | `net0`         | `network_bridge` (else `vm_defaults`, else the host bridge), `firewall.enabled` | `net0` | object: `model` (`virtio`), `bridge`, `firewall`; `macaddr` read, not managed |
//! | `agent`        | always on                                             | `agent`                      | object: `enabled` |
//! | `ciuser`       | `user_config.username` (when given)                   | `ciuser`                     | cloud-init |
//! | `sshkeys`      | `user_config.ssh_public_key` (when given)             | `sshkeys` (URL-encoded)      | cloud-init |
//! | `ipconfig0`    | `network_config.ip`, `.gw`                            | `ipconfig0`                  | object; `ip=dhcp` drops `gw` |
//! | `nameserver`   | `network_config.nameserver` (when given)              | `nameserver`                 | cloud-init |
//! | `searchdomain` | `network_config.searchdomain`, else `domain_name`     | `searchdomain`               | cloud-init |
//! | `onboot`       | `start_at_boot` (absent = off)                        | `onboot`                     | |
//! | `startup`      | `boot_order`, `boot_delay` (when given)               | `startup`                    | object |
//! | `tags`         | `tags` (when given)                                   | `tags`                       | sorted, lowercase |
//! | `template`     | `is_template` (absent = false)                        | `template`                   | forces replacement |
//! | `storage`      | `storage_pool`, else `vm_defaults.storage_pool`       | boot disk volume's storage   | forces replacement |
//! | `disk_size`    | `disk_size_gb` (when given)                           | boot disk `size=`            | grow only |
//! | `status`       | `status` (default running; none for a template)       | `/status/current`            | |
//!
//! The live side is the config *with pending changes applied*: what the VM
//! will run with after its next boot. That is what phoenix asked for, so a
//! plan right after an apply is empty even while a change waits for a
//! reboot; the plan says which changes wait (`update_notes`).

use std::path::Path;

use serde_json::{Map, Value, json};

use super::normalize;
use super::propstring::PropString;
use super::{Address, Attrs, DesiredResource, Kind, KindSchema};
use crate::manifest::files::{GuestStatus, VmConfig, VmDefaults};
use crate::manifest::locate::{Segment, format_path};
use crate::manifest::{Diagnostic, Severity, Site};

pub const KIND: &str = "vm";

pub static SCHEMA: KindSchema = KindSchema {
    kind: KIND,
    provider: "proxmox",
    force_new: &["template", "storage"],
    grow_only: &["disk_size"],
    sensitive: &[],
    destroy_protected: true,
    keep_on_delete: false,
    update_notes,
};

const VM_FILE: &str = "etc/phoenix_vm_configs.json";

/// NIC models PVE knows; in `net0` the model is the key of the MAC (`virtio=BC:24:...`).
const NET_MODELS: [&str; 14] = [
    "e1000",
    "e1000-82540em",
    "e1000-82544gc",
    "e1000-82545em",
    "e1000e",
    "i82551",
    "i82557b",
    "i82559er",
    "ne2k_isa",
    "ne2k_pci",
    "pcnet",
    "rtl8139",
    "virtio",
    "vmxnet3",
];

/// File extensions PVE's `import` content accepts (`IMPORT_EXT_RE_1` in `PVE/Storage.pm`).
const IMPORT_EXTENSIONS: [&str; 5] = ["qcow2", "raw", "vmdk", "ova", "ovf"];

/// Keys PVE cannot change in a running VM by default: they wait in the
/// pending section until the next boot (CPU hotplug only changes `vcpus`,
/// memory hotplug needs NUMA and `hotplug=memory`).
const REBOOT_KEYS: [&str; 3] = ["cores", "memory", "agent"];
/// cloud-init writes these into the guest when it boots.
const CLOUD_INIT_KEYS: [&str; 5] = [
    "ciuser",
    "sshkeys",
    "ipconfig0",
    "nameserver",
    "searchdomain",
];

pub struct VmKind;

impl Kind for VmKind {
    fn schema(&self) -> &'static KindSchema {
        &SCHEMA
    }

    fn observe(
        &self,
        desired: &DesiredResource,
        live: Option<&crate::model::LiveObject>,
    ) -> Vec<String> {
        live.map(|l| super::node_mismatch(desired, l))
            .unwrap_or_default()
    }

    fn desired(&self, site: &Site) -> Result<Vec<DesiredResource>, Vec<Diagnostic>> {
        let mut out = Vec::new();
        let mut errors = Vec::new();
        for (i, cfg) in site.vms.vms.iter().enumerate() {
            match desired_one(site, i, cfg) {
                Ok(r) => out.push(r),
                Err(d) => errors.push(*d),
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }
}

fn error(site: &Site, index: usize, field: &str, message: String, help: &str) -> Box<Diagnostic> {
    let mut path = vec![Segment::key("vms"), Segment::Index(index)];
    if !field.is_empty() {
        path.push(Segment::key(field));
    }
    Box::new(
        Diagnostic::new(Severity::Error, VM_FILE, message)
            .with_path(format_path(&path))
            .with_position(site.sources.locate(Path::new(VM_FILE), &path))
            .with_help(help),
    )
}

fn desired_one(site: &Site, i: usize, cfg: &VmConfig) -> Result<DesiredResource, Box<Diagnostic>> {
    let defaults = site.vms.vm_defaults.as_ref();
    let dflt = |f: fn(&VmDefaults) -> Option<&str>| defaults.and_then(f).map(str::to_string);
    let is_template = cfg.is_template.unwrap_or(false);

    let mut attrs = Map::new();
    attrs.insert("name".into(), json!(cfg.name));
    if let Some(cores) = cfg.cores.or(defaults.and_then(|d| d.cores)) {
        attrs.insert("cores".into(), json!(cores));
    }
    if let Some(mem) = cfg.memory_mb.or(defaults.and_then(|d| d.memory_mb)) {
        attrs.insert("memory".into(), json!(mem));
    }

    let bridge = cfg
        .network_bridge
        .clone()
        .or_else(|| dflt(|d| d.network_bridge.as_deref()))
        .unwrap_or_else(|| site.hypervisor.network.interfaces.name.clone());
    let firewall = cfg
        .firewall
        .as_ref()
        .and_then(|f| f.enabled)
        .unwrap_or(false);
    attrs.insert(
        "net0".into(),
        json!({"model": "virtio", "bridge": bridge, "firewall": firewall}),
    );
    attrs.insert("agent".into(), json!({"enabled": true}));

    if let Some(user) = &cfg.user_config {
        attrs.insert("ciuser".into(), json!(user.username));
        if let Some(key) = &user.ssh_public_key {
            attrs.insert("sshkeys".into(), json!(ssh_keys(key)));
        }
    }
    let net = cfg.network_config.as_ref();
    if let Some(net) = net {
        attrs.insert("ipconfig0".into(), ipconfig(&net.ip, net.gw.as_deref()));
        // The seed ignored this and forced the host's address: the manifest wins here.
        if let Some(ns) = &net.nameserver {
            attrs.insert("nameserver".into(), json!(word_list(ns)));
        }
    }
    let searchdomain = net
        .and_then(|n| n.searchdomain.clone())
        .unwrap_or_else(|| site.hypervisor.domain_name.clone());
    attrs.insert("searchdomain".into(), json!(word_list(&searchdomain)));

    attrs.insert("onboot".into(), json!(cfg.start_at_boot.unwrap_or(false)));
    if cfg.boot_order.is_some() || cfg.boot_delay.is_some() {
        let mut s = Map::new();
        if let Some(o) = cfg.boot_order {
            s.insert("order".into(), json!(o));
        }
        if let Some(d) = cfg.boot_delay {
            s.insert("up".into(), json!(d));
        }
        attrs.insert("startup".into(), Value::Object(s));
    }
    if let Some(tags) = &cfg.tags {
        attrs.insert(
            "tags".into(),
            json!(normalize::tags(tags.iter().map(String::as_str))),
        );
    }
    attrs.insert("template".into(), json!(is_template));
    let storage = cfg
        .storage_pool
        .clone()
        .or_else(|| dflt(|d| d.storage_pool.as_deref()));
    if let Some(s) = &storage {
        attrs.insert("storage".into(), json!(s));
    }
    if let Some(gb) = cfg.disk_size_gb {
        attrs.insert("disk_size".into(), json!(normalize::format_size(gb << 30)));
    }
    match (is_template, cfg.status) {
        (true, Some(GuestStatus::Running)) => {
            return Err(error(
                site,
                i,
                "status",
                format!("VM {} is a template, and a template never runs", cfg.vmid),
                "remove `status` from the template (its clones run)",
            ));
        }
        // A template has no run state to manage.
        (true, _) => {}
        (false, s) => {
            let s = match s {
                Some(GuestStatus::Stopped) => "stopped",
                _ => "running",
            };
            attrs.insert("status".into(), json!(s));
        }
    }

    let mut create = Map::new();
    if let Some(node) = &cfg.node {
        create.insert("node".into(), json!(node));
    }
    // The disk's storage must exist (and allow `images`) first.
    let mut depends_on: Vec<Address> = storage
        .iter()
        .map(|s| Address::new(super::storage::KIND, s.clone()))
        .collect();
    match (&cfg.template_image, &cfg.clone_from_vmid) {
        (Some(image), None) => {
            if storage.is_none() {
                return Err(error(
                    site,
                    i,
                    "storage_pool",
                    format!(
                        "VM {} is built from an image but names no storage for its disk",
                        cfg.vmid
                    ),
                    "set `storage_pool` on the VM or in `vm_defaults` (a storage with `images` content)",
                ));
            }
            match image_source(image) {
                Ok(ImageSource::Volume(v)) => {
                    create.insert("image_volume".into(), json!(v));
                }
                Ok(ImageSource::Download { url, file }) => {
                    create.insert("image_url".into(), json!(url));
                    create.insert("image_file".into(), json!(file));
                }
                Err(help) => {
                    return Err(error(
                        site,
                        i,
                        "template_image",
                        format!("cannot tell where to get the image `{image}`"),
                        &help,
                    ));
                }
            }
        }
        (None, Some(src)) => {
            create.insert("clone_from".into(), json!(src.0));
            // A template is cloned from its base disks; another VM from its
            // clean-state snapshot, which the snapshot kind takes first.
            let snap = site
                .vm(src.0)
                .filter(|s| !s.is_template.unwrap_or(false))
                .and_then(|s| s.template_snapshot_name.as_deref())
                .map(|s| s.trim().to_string());
            if let Some(snap) = snap {
                depends_on.push(super::snapshot::address(src.0, &snap));
                create.insert("clone_snapshot".into(), json!(snap));
            }
            depends_on.push(Address::new(KIND, src.0.to_string()));
        }
        (Some(_), Some(_)) => {
            return Err(error(
                site,
                i,
                "template_image",
                "both `template_image` and `clone_from_vmid` are set".into(),
                "a VM is built either from a cloud image or by cloning another VM; keep one",
            ));
        }
        (None, None) => {
            return Err(error(
                site,
                i,
                "",
                format!(
                    "VM {} has neither `template_image` nor `clone_from_vmid`",
                    cfg.vmid
                ),
                "add `\"template_image\": \"noble-server-cloudimg-amd64.img\"` (a cloud image) or \
                 `\"clone_from_vmid\": <a template's vmid>`",
            ));
        }
    }
    for dep in &cfg.dependencies {
        if let Some(a) = super::lxc::guest_address(site, dep.0)
            && !depends_on.contains(&a)
        {
            depends_on.push(a);
        }
    }

    Ok(DesiredResource {
        address: Address::new(KIND, cfg.vmid.to_string()),
        attrs,
        create,
        depends_on,
    })
}

/// Where a template's boot disk comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// A volume PVE already has (`local:import/noble.qcow2`), used as it is.
    Volume(String),
    /// Download `url` onto a storage with `import` content, as `import/<file>`.
    Download { url: String, file: String },
}

/// `template_image` as the manifests write it: a volume id, an `http(s)://`
/// URL, or (the seed's form) an Ubuntu cloud image's file name, which names
/// its release and so its URL. `Err` is the help line.
pub fn image_source(image: &str) -> Result<ImageSource, String> {
    let image = image.trim();
    if let Some((scheme, rest)) = image.split_once("://") {
        if scheme != "https" && scheme != "http" {
            return Err(format!("PVE downloads over http(s) only, not `{scheme}`"));
        }
        let path = rest.split(['?', '#']).next().unwrap_or(rest);
        let file = path.rsplit('/').next().unwrap_or_default();
        return Ok(ImageSource::Download {
            url: image.to_string(),
            file: import_file_name(file)?,
        });
    }
    if image.contains(':') {
        return Ok(ImageSource::Volume(image.to_string()));
    }
    let release = image
        .split_once("-server-cloudimg-")
        .map(|(r, _)| r)
        .filter(|r| !r.is_empty() && !r.contains('/'));
    match release {
        Some(release) => Ok(ImageSource::Download {
            url: format!("https://cloud-images.ubuntu.com/{release}/current/{image}"),
            file: import_file_name(image)?,
        }),
        None => Err(format!(
            "write it as an https URL, or as the volume id of an image already on a storage \
             with `import` content (e.g. `local:import/{image}`)"
        )),
    }
}

/// The name an image takes under `import/`. PVE lists only `.qcow2`, `.raw`,
/// `.vmdk`, `.ova` and `.ovf` there; Ubuntu's `.img` cloud images are qcow2
/// inside, so they are stored as `.qcow2`.
pub fn import_file_name(file: &str) -> Result<String, String> {
    if file.is_empty() {
        return Err("the URL names no file".into());
    }
    let (stem, ext) = file.rsplit_once('.').unwrap_or((file, ""));
    let ext_lc = ext.to_ascii_lowercase();
    if ext_lc == "img" {
        return Ok(format!("{stem}.qcow2"));
    }
    if IMPORT_EXTENSIONS.contains(&ext_lc.as_str()) {
        return Ok(file.to_string());
    }
    Err(format!(
        "`{file}`: PVE imports disk images named .qcow2, .raw, .vmdk, .ova or .ovf (or Ubuntu's .img, \
         stored as .qcow2)"
    ))
}

/// `ipconfig0` from the manifest. A gateway is managed only with a static address.
fn ipconfig(ip: &str, gw: Option<&str>) -> Value {
    let ip = ip.trim();
    if ip.eq_ignore_ascii_case("dhcp") {
        json!({"ip": "dhcp"})
    } else {
        let mut m = Map::new();
        m.insert("ip".into(), json!(ip));
        if let Some(gw) = gw {
            m.insert("gw".into(), json!(gw.trim()));
        }
        Value::Object(m)
    }
}

/// Space-separated lists (`nameserver`, `searchdomain`): PVE keeps what it was
/// given, so both sides collapse commas and runs of blanks to one space.
pub fn word_list(s: &str) -> String {
    s.split([' ', ',', '\t', '\n'])
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// SSH public keys, one per line, trimmed; empty lines dropped.
pub fn ssh_keys(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// PVE wants `sshkeys` URL-encoded: everything but RFC 3986's unreserved
/// characters is escaped (a `+` in a key must not turn into a space).
pub fn encode_ssh_keys(keys: &str) -> String {
    let mut out = String::with_capacity(keys.len() * 3 / 2);
    for b in keys.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The inverse of [`encode_ssh_keys`], tolerant of keys stored unencoded.
pub fn decode_ssh_keys(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    ssh_keys(&String::from_utf8_lossy(&out))
}

/// QEMU `memory` in MiB: a number, `"4096"` (PVE 8.1 and later send a
/// string) or the property-string form `current=4096`.
pub fn memory_mib(v: &Value) -> Option<u64> {
    match v {
        Value::String(s) => {
            let p = PropString::parse(s);
            p.first
                .as_deref()
                .or(p.get("current"))
                .and_then(|t| t.trim().parse().ok())
        }
        other => normalize::lenient_u64(other),
    }
}

fn text(cfg: &Map<String, Value>, k: &str) -> Option<String> {
    cfg.get(k).and_then(|v| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

fn is_disk_key(k: &str) -> bool {
    ["ide", "sata", "scsi", "virtio"].iter().any(|p| {
        k.strip_prefix(p)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

fn is_cdrom(value: &str) -> bool {
    let p = PropString::parse(value);
    p.get("media") == Some("cdrom") || matches!(p.first.as_deref(), Some("cdrom" | "none"))
}

/// The key of the boot disk: the first disk of `boot: order=...`, else the
/// legacy `bootdisk`, else the first disk that is not a CD-ROM (PVE's order:
/// ide, sata, scsi, virtio).
pub fn boot_disk(cfg: &Map<String, Value>) -> Option<String> {
    let usable = |k: &str| is_disk_key(k) && text(cfg, k).is_some_and(|v| !is_cdrom(&v));
    if let Some(order) =
        text(cfg, "boot").and_then(|b| PropString::parse(&b).get("order").map(str::to_string))
        && let Some(k) = order.split(';').map(str::trim).find(|k| usable(k))
    {
        return Some(k.to_string());
    }
    if let Some(k) = text(cfg, "bootdisk").filter(|k| usable(k)) {
        return Some(k);
    }
    let mut disks: Vec<(usize, u32, &String)> = cfg
        .keys()
        .filter(|k| usable(k))
        .filter_map(|k| {
            let rank = ["ide", "sata", "scsi", "virtio"]
                .iter()
                .position(|p| k.starts_with(p))?;
            let n: u32 = k
                .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                .parse()
                .ok()?;
            Some((rank, n, k))
        })
        .collect();
    disks.sort();
    disks.first().map(|(_, _, k)| (*k).clone())
}

/// A VM config with its pending section applied (`GET .../pending`): what
/// the VM runs with after its next boot. Returns the config and the keys
/// still pending.
pub fn apply_pending(
    current: &Map<String, Value>,
    pending: &Value,
) -> (Map<String, Value>, Vec<String>) {
    let mut cfg = current.clone();
    let mut keys = Vec::new();
    for item in pending.as_array().into_iter().flatten() {
        let Some(key) = item["key"].as_str() else {
            continue;
        };
        if normalize::lenient_bool(item.get("delete")) {
            cfg.remove(key);
            keys.push(key.to_string());
        } else if let Some(v) = item.get("pending").filter(|v| !v.is_null()) {
            cfg.insert(key.to_string(), v.clone());
            keys.push(key.to_string());
        }
    }
    (cfg, keys)
}

/// Normalize a PVE VM config (pending applied) and its run status into the
/// attributes above.
pub fn from_pve_config(cfg: &Map<String, Value>, status: &str) -> Attrs {
    let s = |k: &str| text(cfg, k);
    let mut a = Map::new();
    a.insert("name".into(), json!(s("name")));
    a.insert(
        "cores".into(),
        json!(cfg.get("cores").and_then(normalize::lenient_u64)),
    );
    a.insert(
        "memory".into(),
        json!(cfg.get("memory").and_then(memory_mib)),
    );
    a.insert(
        "net0".into(),
        s("net0").map_or(Value::Null, |t| net_from_pve(&t)),
    );
    a.insert("agent".into(), agent_from_pve(s("agent").as_deref()));
    a.insert("ciuser".into(), json!(s("ciuser")));
    a.insert(
        "sshkeys".into(),
        json!(s("sshkeys").map(|k| decode_ssh_keys(&k))),
    );
    a.insert(
        "ipconfig0".into(),
        s("ipconfig0").map_or(Value::Null, |t| {
            let p = PropString::parse(&t);
            Value::Object(p.props.into_iter().map(|(k, v)| (k, json!(v))).collect())
        }),
    );
    a.insert(
        "nameserver".into(),
        json!(s("nameserver").map(|n| word_list(&n))),
    );
    a.insert(
        "searchdomain".into(),
        json!(s("searchdomain").map(|n| word_list(&n))),
    );
    a.insert(
        "onboot".into(),
        json!(normalize::lenient_bool(cfg.get("onboot"))),
    );
    a.insert(
        "startup".into(),
        s("startup").map_or(Value::Null, |t| {
            let p = PropString::parse(&t);
            let mut m = Map::new();
            for (k, v) in &p.props {
                let val = v.parse::<u64>().map_or(json!(v), |n| json!(n));
                m.insert(k.clone(), val);
            }
            Value::Object(m)
        }),
    );
    a.insert(
        "tags".into(),
        json!(normalize::tags(s("tags").as_deref().into_iter())),
    );
    a.insert(
        "template".into(),
        json!(normalize::lenient_bool(cfg.get("template"))),
    );
    let disk = boot_disk(cfg)
        .and_then(|k| s(&k))
        .map(|v| PropString::parse(&v));
    let storage = disk
        .as_ref()
        .and_then(|d| d.first.as_deref())
        .and_then(|v| v.split_once(':'))
        .map(|(sid, _)| sid.to_string());
    a.insert("storage".into(), json!(storage));
    a.insert(
        "disk_size".into(),
        json!(
            disk.as_ref()
                .and_then(|d| d.get("size"))
                .map(normalize::size)
        ),
    );
    a.insert("status".into(), json!(status));
    a
}

/// `virtio=BC:24:11:00:00:01,bridge=vmbr0,firewall=1` -> `{model, macaddr, bridge, firewall}`.
fn net_from_pve(text: &str) -> Value {
    let p = PropString::parse(text);
    let mut m = Map::new();
    if let Some(model) = p.first.as_deref().filter(|f| NET_MODELS.contains(f)) {
        // `virtio,bridge=...` (no MAC yet): a bare model as the first item.
        m.insert("model".into(), json!(model));
    }
    for (k, v) in &p.props {
        match k.as_str() {
            model if NET_MODELS.contains(&model) => {
                m.insert("model".into(), json!(model));
                m.insert("macaddr".into(), json!(normalize::mac(v)));
            }
            "macaddr" => {
                m.insert("macaddr".into(), json!(normalize::mac(v)));
            }
            "firewall" | "link_down" => {
                m.insert(k.clone(), json!(normalize::parse_bool(v).unwrap_or(false)));
            }
            _ => {
                m.insert(k.clone(), json!(v));
            }
        }
    }
    m.entry("firewall").or_insert(json!(false));
    Value::Object(m)
}

fn net_to_pve(net: &Map<String, Value>) -> String {
    let model = net.get("model").and_then(Value::as_str).unwrap_or("virtio");
    let first = match net.get("macaddr").and_then(Value::as_str) {
        Some(mac) => format!("{model}={mac}"),
        None => model.to_string(),
    };
    let mut p = PropString {
        first: Some(first),
        ..Default::default()
    };
    for (k, v) in net {
        if k == "model" || k == "macaddr" {
            continue;
        }
        if let Some(t) = prop_text(v) {
            p.props.insert(k.clone(), t);
        }
    }
    p.print(&["bridge"])
}

/// `agent`: `1`, or `enabled=1,fstrim_cloned_disks=1` -> `{enabled, ...}`; absent is off.
fn agent_from_pve(text: Option<&str>) -> Value {
    let p = PropString::parse(text.unwrap_or_default());
    let mut m = Map::new();
    let enabled = p
        .first
        .as_deref()
        .or(p.get("enabled"))
        .and_then(normalize::parse_bool)
        .unwrap_or(false);
    m.insert("enabled".into(), json!(enabled));
    for (k, v) in &p.props {
        if k != "enabled" {
            let val = normalize::parse_bool(v).map_or(json!(v), |b| json!(b));
            m.insert(k.clone(), val);
        }
    }
    Value::Object(m)
}

fn prop_text(v: &Value) -> Option<String> {
    match v {
        Value::Bool(b) => Some((if *b { "1" } else { "0" }).to_string()),
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        Value::Number(n) => Some(n.to_string()),
        other => Some(other.to_string()),
    }
}

fn merged(want: &Map<String, Value>, live: Option<&Value>) -> Map<String, Value> {
    let mut m = live.and_then(Value::as_object).cloned().unwrap_or_default();
    for (k, v) in want {
        m.insert(k.clone(), v.clone());
    }
    m
}

/// PVE parameters that set the given attributes. `live` is the current object
/// (for an update): attributes PVE only takes whole (`net0`, `agent`,
/// `ipconfig0`) are merged over it, so unmanaged parts such as the MAC are
/// kept. Returns `(params, deletes)`; status, template, storage and disk size
/// are not config parameters and are handled by the provider.
pub fn config_params(attrs: &Attrs, live: Option<&Attrs>) -> (Vec<(String, String)>, Vec<String>) {
    let mut params = Vec::new();
    let mut deletes = Vec::new();
    for (k, v) in attrs {
        let live_v = live.and_then(|l| l.get(k));
        match (k.as_str(), v) {
            ("status" | "storage" | "disk_size" | "template", _) => {}
            (key, Value::Null) => deletes.push(key.to_string()),
            ("net0", Value::Object(want)) => {
                params.push(("net0".into(), net_to_pve(&merged(want, live_v))));
            }
            ("agent", Value::Object(want)) => {
                let m = merged(want, live_v);
                let mut p = PropString::default();
                for (ak, av) in &m {
                    if let Some(t) = prop_text(av) {
                        p.props.insert(ak.clone(), t);
                    }
                }
                // `agent: 1` is how PVE and its UI write the plain form.
                let text = match (p.props.len(), p.get("enabled")) {
                    (1, Some(on)) => on.to_string(),
                    _ => p.print(&["enabled"]),
                };
                params.push(("agent".into(), text));
            }
            ("ipconfig0", Value::Object(want)) => {
                let mut m = merged(want, live_v);
                // A gateway kept from a static address would contradict DHCP (or SLAAC).
                for (ip, gw) in [("ip", "gw"), ("ip6", "gw6")] {
                    if matches!(m.get(ip).and_then(Value::as_str), Some("dhcp" | "auto")) {
                        m.remove(gw);
                    }
                }
                let mut p = PropString::default();
                for (ik, iv) in &m {
                    if let Some(t) = prop_text(iv) {
                        p.props.insert(ik.clone(), t);
                    }
                }
                params.push(("ipconfig0".into(), p.print(&["ip", "gw", "ip6", "gw6"])));
            }
            ("startup", Value::Object(want)) => {
                let mut p = PropString::default();
                for (sk, sv) in want {
                    if let Some(t) = prop_text(sv) {
                        p.props.insert(sk.clone(), t);
                    }
                }
                params.push(("startup".into(), p.print(&["order", "up", "down"])));
            }
            ("tags", Value::Array(items)) => {
                let t: Vec<&str> = items.iter().filter_map(Value::as_str).collect();
                if t.is_empty() {
                    if live.is_some() {
                        deletes.push("tags".into());
                    }
                } else {
                    params.push(("tags".into(), t.join(";")));
                }
            }
            ("sshkeys", Value::String(keys)) => {
                params.push(("sshkeys".into(), encode_ssh_keys(keys)));
            }
            ("onboot", b) => params.push((
                "onboot".into(),
                (if b.as_bool().unwrap_or(false) {
                    "1"
                } else {
                    "0"
                })
                .into(),
            )),
            (key, other) => {
                if let Some(t) = prop_text(other) {
                    params.push((key.to_string(), t));
                }
            }
        }
    }
    (params, deletes)
}

/// What the plan says about an in-place update of a running VM: which
/// changes wait for a reboot. Templates and stopped VMs pick everything up
/// when they next start, so nothing needs saying.
pub fn update_notes(changed: &[String], live: &Attrs) -> Vec<String> {
    let running = live.get("status").and_then(Value::as_str) == Some("running");
    let template = live.get("template").and_then(Value::as_bool) == Some(true);
    if !running || template {
        return Vec::new();
    }
    let mut reboot: Vec<&str> = Vec::new();
    let mut cloud_init: Vec<&str> = Vec::new();
    let mut net = false;
    for path in changed {
        let top = path.split('.').next().unwrap_or(path);
        if let Some(k) = REBOOT_KEYS.iter().find(|k| **k == top) {
            if !reboot.contains(k) {
                reboot.push(k);
            }
        } else if path == "net0.model" {
            if !reboot.contains(&"net0.model") {
                reboot.push("net0.model");
            }
        } else if let Some(k) = CLOUD_INIT_KEYS.iter().find(|k| **k == top) {
            if !cloud_init.contains(k) {
                cloud_init.push(k);
            }
        } else if top == "net0" {
            net = true;
        }
    }
    let mut notes = Vec::new();
    if !reboot.is_empty() {
        let verb = if reboot.len() == 1 { "takes" } else { "take" };
        notes.push(format!(
            "{} {verb} effect at the next reboot (PVE keeps the change pending while the VM runs)",
            reboot.join(", ")
        ));
    }
    if !cloud_init.is_empty() {
        let verb = if cloud_init.len() == 1 {
            "reaches"
        } else {
            "reach"
        };
        notes.push(format!(
            "{} {verb} the guest at its next boot (cloud-init applies it)",
            cloud_init.join(", ")
        ));
    }
    if net {
        notes.push(
            "net0 is changed live when the VM's `hotplug` includes network (PVE's default), \
             otherwise at the next reboot"
                .into(),
        );
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn desired_from_the_seed_vm_file() {
        let seed = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/fixtures/phoenix-seed"
        );
        let site = crate::manifest::load(std::path::Path::new(seed))
            .unwrap()
            .site;
        let all = VmKind.desired(&site).unwrap();
        let get = |id: &str| all.iter().find(|r| r.address.name() == id).unwrap();

        let tpl = get("9000");
        // vm_defaults fill what the template leaves out, as the seed's `qm set` did.
        assert_eq!(tpl.attrs["cores"], json!(2));
        assert_eq!(tpl.attrs["memory"], json!(4096));
        assert_eq!(tpl.attrs["storage"], json!("quickOS-vm-disks"));
        assert_eq!(tpl.attrs["net0"]["bridge"], json!("vmbr0"));
        assert_eq!(tpl.attrs["template"], json!(true));
        assert_eq!(tpl.attrs["ipconfig0"], json!({"ip": "dhcp"}));
        assert_eq!(tpl.attrs["searchdomain"], json!("internal.thinkheads.ai"));
        assert!(
            tpl.attrs.get("status").is_none(),
            "a template has no run state"
        );
        assert!(tpl.attrs.get("disk_size").is_none());
        assert_eq!(
            tpl.create["image_file"],
            json!("noble-server-cloudimg-amd64.qcow2")
        );

        let portainer = get("1001");
        assert_eq!(portainer.attrs["cores"], json!(4));
        assert_eq!(portainer.attrs["memory"], json!(8192));
        assert_eq!(portainer.attrs["disk_size"], json!("32G"));
        assert_eq!(portainer.attrs["net0"]["firewall"], json!(true));
        assert_eq!(portainer.attrs["nameserver"], json!("10.0.0.13"));
        assert_eq!(portainer.attrs["status"], json!("running"));
        assert_eq!(portainer.create["clone_from"], json!(9000));
        // 9000 is a template: no snapshot to clone from.
        assert!(portainer.create.get("clone_snapshot").is_none());
        let deps: Vec<String> = portainer.depends_on.iter().map(|a| a.to_string()).collect();
        assert_eq!(deps, ["storage.quickOS-vm-disks", "vm.9000", "lxc.102"]);
        let deps: Vec<String> = get("1002")
            .depends_on
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(deps, ["storage.quickOS-vm-disks", "vm.9000", "vm.1001"]);
    }

    #[test]
    fn memory_as_number_string_or_property_string() {
        assert_eq!(memory_mib(&json!(4096)), Some(4096));
        assert_eq!(memory_mib(&json!("4096")), Some(4096));
        assert_eq!(memory_mib(&json!("current=8192")), Some(8192));
        assert_eq!(memory_mib(&json!("lots")), None);
        let a = from_pve_config(&obj(json!({"memory": "2048"})), "stopped");
        assert_eq!(a["memory"], json!(2048));
    }

    #[test]
    fn net0_model_mac_case_and_key_order() {
        let a = net_from_pve("virtio=bc:24:11:aa:bb:cc,firewall=1,bridge=vmbr0");
        let b = net_from_pve("bridge=vmbr0,virtio=BC:24:11:AA:BB:CC,firewall=1");
        assert_eq!(a, b);
        assert_eq!(
            a,
            json!({"model": "virtio", "macaddr": "BC:24:11:AA:BB:CC", "bridge": "vmbr0", "firewall": true})
        );
        // A bare model (no MAC yet) and the long form both read the same way.
        assert_eq!(
            net_from_pve("virtio,bridge=vmbr0")["model"],
            json!("virtio")
        );
        assert_eq!(
            net_from_pve("model=e1000,macaddr=52:54:00:00:00:01,bridge=vmbr1")["macaddr"],
            json!("52:54:00:00:00:01")
        );
        assert_eq!(
            net_from_pve("virtio=X,bridge=vmbr0")["firewall"],
            json!(false)
        );
    }

    #[test]
    fn bool_forms() {
        for on in ["1", "true", "on"] {
            let cfg = obj(json!({"onboot": on, "template": on, "agent": on}));
            let a = from_pve_config(&cfg, "stopped");
            assert_eq!(a["onboot"], json!(true), "{on}");
            assert_eq!(a["template"], json!(true), "{on}");
            assert_eq!(a["agent"], json!({"enabled": true}), "{on}");
        }
        let a = from_pve_config(
            &obj(json!({"onboot": 1, "agent": "enabled=0,fstrim_cloned_disks=1"})),
            "stopped",
        );
        assert_eq!(a["onboot"], json!(true));
        assert_eq!(
            a["agent"],
            json!({"enabled": false, "fstrim_cloned_disks": true})
        );
        // Absent flags read as off.
        let a = from_pve_config(&Map::new(), "stopped");
        assert_eq!(a["onboot"], json!(false));
        assert_eq!(a["template"], json!(false));
        assert_eq!(a["agent"], json!({"enabled": false}));
    }

    #[test]
    fn ipconfig0_forms() {
        assert_eq!(ipconfig("dhcp", None), json!({"ip": "dhcp"}));
        assert_eq!(ipconfig("DHCP", Some("192.0.2.1")), json!({"ip": "dhcp"}));
        assert_eq!(
            ipconfig("192.0.2.5/24", Some("192.0.2.1")),
            json!({"ip": "192.0.2.5/24", "gw": "192.0.2.1"})
        );
        let a = from_pve_config(
            &obj(json!({"ipconfig0": "gw=192.0.2.1,ip=192.0.2.5/24"})),
            "running",
        );
        assert_eq!(
            a["ipconfig0"],
            json!({"ip": "192.0.2.5/24", "gw": "192.0.2.1"})
        );
        // Going to DHCP drops the old gateway, keeps the unmanaged IPv6 part.
        let live = from_pve_config(
            &obj(json!({"ipconfig0": "ip=192.0.2.5/24,gw=192.0.2.1,ip6=auto"})),
            "running",
        );
        let want = obj(json!({"ipconfig0": ipconfig("dhcp", None)}));
        let (p, _) = config_params(&want, Some(&live));
        assert_eq!(
            p,
            [("ipconfig0".to_string(), "ip=dhcp,ip6=auto".to_string())]
        );
    }

    #[test]
    fn sshkeys_are_url_encoded_and_decoded() {
        let key = "ssh-ed25519 AAAAC3Nza+/x= me@host";
        let enc = encode_ssh_keys(key);
        assert_eq!(enc, "ssh-ed25519%20AAAAC3Nza%2B%2Fx%3D%20me%40host");
        assert_eq!(decode_ssh_keys(&enc), key);
        // Two keys, with stray blanks and a trailing newline, as PVE's UI stores them.
        let two = "ssh-ed25519%20A%20a%40b%0A%20ssh-rsa%20B%20c%40d%20%0A";
        assert_eq!(decode_ssh_keys(two), "ssh-ed25519 A a@b\nssh-rsa B c@d");
        // Stored unencoded (an older client): read as it is, `+` kept.
        assert_eq!(decode_ssh_keys("ssh-ed25519 AB+C x"), "ssh-ed25519 AB+C x");
        assert_eq!(decode_ssh_keys("50%"), "50%");
    }

    #[test]
    fn word_lists_and_tags() {
        assert_eq!(
            word_list(" 192.0.2.13,  192.0.2.14 "),
            "192.0.2.13 192.0.2.14"
        );
        let a = from_pve_config(
            &obj(json!({"tags": "Web;phoenix", "nameserver": "1.1.1.1  9.9.9.9"})),
            "running",
        );
        assert_eq!(a["tags"], json!(["phoenix", "web"]));
        assert_eq!(a["nameserver"], json!("1.1.1.1 9.9.9.9"));
    }

    #[test]
    fn boot_disk_storage_and_size() {
        let cfg = obj(json!({
            "boot": "order=scsi0;net0",
            "ide2": "local-lvm:vm-600-cloudinit,media=cdrom",
            "scsi0": "quickOS-vm-disks:vm-600-disk-0,size=32768M",
            "scsi1": "local-lvm:vm-600-disk-1,size=4G"
        }));
        assert_eq!(boot_disk(&cfg).as_deref(), Some("scsi0"));
        let a = from_pve_config(&cfg, "running");
        assert_eq!(a["storage"], json!("quickOS-vm-disks"));
        assert_eq!(a["disk_size"], json!("32G"));
        // The seed's legacy `boot: c` + `bootdisk`.
        let legacy = obj(
            json!({"boot": "c", "bootdisk": "virtio0", "scsi0": "x:1,size=1G", "virtio0": "y:2,size=2G"}),
        );
        assert_eq!(boot_disk(&legacy).as_deref(), Some("virtio0"));
        // No boot order: the first disk that is not a CD-ROM.
        let plain =
            obj(json!({"ide0": "local:iso/x.iso,media=cdrom", "scsi10": "a:1", "scsi2": "b:2"}));
        assert_eq!(boot_disk(&plain).as_deref(), Some("scsi2"));
        assert_eq!(boot_disk(&Map::new()), None);
    }

    #[test]
    fn pending_changes_are_what_the_vm_boots_with() {
        let current = obj(json!({"cores": 2, "memory": "2048", "tags": "a", "name": "x"}));
        let pending = json!([
            {"key": "cores", "value": 2, "pending": 4},
            {"key": "memory", "value": "2048", "pending": "4096"},
            {"key": "tags", "value": "a", "delete": 1},
            {"key": "name", "value": "x"}
        ]);
        let (cfg, keys) = apply_pending(&current, &pending);
        assert_eq!(keys, ["cores", "memory", "tags"]);
        let a = from_pve_config(&cfg, "running");
        assert_eq!(a["cores"], json!(4));
        assert_eq!(a["memory"], json!(4096));
        assert_eq!(a["tags"], json!([]));
        assert_eq!(a["name"], json!("x"));
    }

    #[test]
    fn image_sources() {
        assert_eq!(
            image_source("noble-server-cloudimg-amd64.img"),
            Ok(ImageSource::Download {
                url:
                    "https://cloud-images.ubuntu.com/noble/current/noble-server-cloudimg-amd64.img"
                        .into(),
                file: "noble-server-cloudimg-amd64.qcow2".into()
            })
        );
        assert_eq!(
            image_source("https://example.org/img/debian-12-genericcloud-amd64.qcow2?x=1"),
            Ok(ImageSource::Download {
                url: "https://example.org/img/debian-12-genericcloud-amd64.qcow2?x=1".into(),
                file: "debian-12-genericcloud-amd64.qcow2".into()
            })
        );
        assert_eq!(
            image_source("local:import/noble.qcow2"),
            Ok(ImageSource::Volume("local:import/noble.qcow2".into()))
        );
        assert!(image_source("my-image.img").is_err());
        assert!(image_source("ftp://example.org/a.qcow2").is_err());
        assert!(image_source("https://example.org/a.iso").is_err());
    }

    #[test]
    fn update_params_keep_the_mac_and_unmanaged_parts() {
        let live = from_pve_config(
            &obj(
                json!({"net0": "virtio=BC:24:11:00:00:01,bridge=vmbr0,tag=5", "agent": "enabled=1,fstrim_cloned_disks=1"}),
            ),
            "running",
        );
        let want = obj(json!({
            "net0": {"model": "virtio", "bridge": "vmbr1", "firewall": true},
            "agent": {"enabled": true}
        }));
        let (params, deletes) = config_params(&want, Some(&live));
        assert!(deletes.is_empty());
        assert_eq!(
            params,
            [
                (
                    "net0".to_string(),
                    "virtio=BC:24:11:00:00:01,bridge=vmbr1,firewall=1,tag=5".to_string()
                ),
                (
                    "agent".to_string(),
                    "enabled=1,fstrim_cloned_disks=1".to_string()
                ),
            ]
        );
    }

    #[test]
    fn null_attributes_become_deletes() {
        let (params, deletes) =
            config_params(&obj(json!({"nameserver": null, "status": "running"})), None);
        assert!(params.is_empty());
        assert_eq!(deletes, ["nameserver"]);
    }

    #[test]
    fn roundtrip_params_read_back_equal() {
        // What we send, read back through the normalizer, equals what we wanted.
        let want = obj(json!({
            "name": "web", "cores": 2, "memory": 4096,
            "net0": {"model": "virtio", "bridge": "vmbr0", "firewall": true},
            "agent": {"enabled": true},
            "ciuser": "phoenix_user",
            "sshkeys": "ssh-ed25519 AAAAC3Nza+/x= me@host\nssh-rsa B c@d",
            "ipconfig0": {"ip": "192.0.2.5/24", "gw": "192.0.2.1"},
            "nameserver": "192.0.2.13", "searchdomain": "lab.example.internal",
            "onboot": true, "startup": {"order": 4, "up": 2}, "tags": ["a", "b"]
        }));
        let (params, deletes) = config_params(&want, None);
        assert!(deletes.is_empty());
        let cfg: Map<String, Value> = params.into_iter().map(|(k, v)| (k, json!(v))).collect();
        let back = from_pve_config(&cfg, "running");
        for (k, v) in &want {
            assert_eq!(&back[k], v, "attribute {k}");
        }
        // And the DHCP form.
        let dhcp = obj(json!({"ipconfig0": ipconfig("dhcp", None)}));
        let (params, _) = config_params(&dhcp, None);
        let cfg: Map<String, Value> = params.into_iter().map(|(k, v)| (k, json!(v))).collect();
        let back = from_pve_config(&cfg, "running");
        assert_eq!(back["ipconfig0"], json!({"ip": "dhcp"}));
        assert_eq!(back["ipconfig0"].get("gw"), None);
    }

    #[test]
    fn notes_say_what_waits_for_a_reboot() {
        let running = obj(json!({"status": "running", "template": false}));
        let paths: Vec<String> = ["cores", "memory", "name", "ipconfig0.ip", "net0.bridge"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let notes = update_notes(&paths, &running);
        assert_eq!(notes.len(), 3, "{notes:?}");
        assert!(
            notes[0].starts_with("cores, memory take effect at the next reboot"),
            "{notes:?}"
        );
        assert!(
            notes[1].starts_with("ipconfig0 reaches the guest"),
            "{notes:?}"
        );
        assert!(notes[2].starts_with("net0 is changed live"), "{notes:?}");
        let only_name = update_notes(&["name".to_string(), "onboot".to_string()], &running);
        assert!(only_name.is_empty());
        let stopped = obj(json!({"status": "stopped", "template": false}));
        assert!(update_notes(&paths, &stopped).is_empty());
    }
}
