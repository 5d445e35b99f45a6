//! `lxc.<ctid>`: an LXC container. Its attributes, how the manifests produce
//! them, and the two-way mapping to a PVE container config (`from_pve_config`,
//! `config_params`), kept pure so every normalization row is unit-tested.
//!
//! | attribute        | manifest                                  | PVE config key            | notes |
//! |------------------|-------------------------------------------|---------------------------|-------|
//! | `hostname`       | `name`                                    | `hostname`                | |
//! | `memory`         | `memory_mb`                               | `memory`                  | MiB |
//! | `swap`           | `swap_mb` (managed only when given)       | `swap`                    | MiB |
//! | `cores`          | `cores` (when given)                      | `cores`                   | |
//! | `net0`           | `network_config`, `mac_address`, `firewall.enabled` | `net0`          | object; `hwaddr` managed only when given |
//! | `nameserver`     | `network_config.nameservers` (when given) | `nameserver`              | |
//! | `searchdomain`   | `searchdomain` (when given)               | `searchdomain`            | |
//! | `features`       | `pct_options`                             | `features`                | every known flag, absent = off |
//! | `onboot`         | `start_at_boot`                           | `onboot`                  | absent = off |
//! | `startup`        | `boot_order`, `boot_delay` (when given)   | `startup`                 | object |
//! | `tags`           | `tags` (when given)                       | `tags`                    | sorted, lowercase |
//! | `unprivileged`   | `unprivileged` (default true, as PVE)     | `unprivileged`            | forces replacement |
//! | `storage`        | `storage_pool`                            | `rootfs` volume's storage | forces replacement |
//! | `rootfs_size`    | `storage_size_gb`                         | `rootfs` `size=`          | grow only |
//! | `status`         | `status` (default running)                | `/status/current`         | |

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::normalize;
use super::propstring::PropString;
use super::{Address, Attrs, DesiredResource, Kind, KindSchema};
use crate::manifest::files::{GuestStatus, LxcConfig};
use crate::manifest::{Diagnostic, GuestKind, Severity, Site};

pub const KIND: &str = "lxc";

pub static SCHEMA: KindSchema = KindSchema {
    kind: KIND,
    provider: "proxmox",
    force_new: &["unprivileged", "storage"],
    grow_only: &["rootfs_size"],
    sensitive: &[],
    destroy_protected: true,
    keep_on_delete: false,
    update_notes: super::no_notes,
};

/// The container feature flags PVE knows as booleans.
const FEATURE_FLAGS: [&str; 5] = ["force_rw_sys", "fuse", "keyctl", "mknod", "nesting"];

const LXC_FILE: &str = "etc/phoenix_lxc_configs.json";

/// `volume:<mount point>` = `<storage>:<size>`: a storage volume mounted in the
/// container (`zfs_volumes`), as `mpN` holds it. Bind mounts are `lxc_conf`'s.
pub const VOLUME_PREFIX: &str = "volume:";

/// The storage volumes of a container config: `(mpN, mount point, storage, size)`.
pub fn volumes_of(cfg: &Map<String, Value>) -> Vec<(String, String, String, String)> {
    let mut out = Vec::new();
    for (k, v) in cfg {
        let is_mp = k
            .strip_prefix("mp")
            .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
        let Some(text) = v.as_str().filter(|_| is_mp) else {
            continue;
        };
        let p = PropString::parse(text);
        let Some((storage, _)) = p.first.as_deref().and_then(|f| f.split_once(':')) else {
            continue; // a bind mount (a host path) or a device
        };
        if p.first.as_deref().is_some_and(|f| f.starts_with('/')) {
            continue;
        }
        let (Some(mp), Some(size)) = (p.get("mp"), p.get("size")) else {
            continue;
        };
        out.push((
            k.clone(),
            mp.to_string(),
            storage.to_string(),
            normalize::size(size),
        ));
    }
    out
}

pub struct LxcKind;

impl Kind for LxcKind {
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
        for (ctid, cfg) in &site.lxc.lxc_configs {
            match desired_one(site, ctid, cfg) {
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

fn error(ctid: &str, field: &str, message: String, help: Option<&str>) -> Diagnostic {
    Diagnostic {
        severity: Severity::Error,
        file: LXC_FILE.into(),
        json_path: format!("lxc_configs.\"{ctid}\".{field}"),
        line: None,
        column: None,
        message,
        help: help.map(str::to_string),
    }
}

/// The address of a guest id: `lxc.<id>` or `vm.<id>`, whichever the manifests define.
pub fn guest_address(site: &Site, id: u32) -> Option<Address> {
    match site.guest_kind(id)? {
        GuestKind::Lxc => Some(Address::new("lxc", id.to_string())),
        GuestKind::Vm => Some(Address::new("vm", id.to_string())),
    }
}

fn desired_one(
    site: &Site,
    ctid: &str,
    cfg: &LxcConfig,
) -> Result<DesiredResource, Box<Diagnostic>> {
    let mut attrs = Map::new();
    attrs.insert("hostname".into(), json!(cfg.name));
    attrs.insert("memory".into(), json!(cfg.memory_mb));
    if let Some(swap) = cfg.swap_mb {
        attrs.insert("swap".into(), json!(swap));
    }
    if let Some(cores) = cfg.cores {
        attrs.insert("cores".into(), json!(cores));
    }

    let net = &cfg.network_config;
    let mut net0 = Map::new();
    net0.insert("name".into(), json!(net.name));
    net0.insert("bridge".into(), json!(net.bridge));
    net0.insert("ip".into(), json!(net.ip));
    if let Some(gw) = &net.gw {
        net0.insert("gw".into(), json!(gw));
    }
    if let Some(mac) = &cfg.mac_address {
        net0.insert("hwaddr".into(), json!(normalize::mac(mac)));
    }
    // The seed never set the flag, so its LXC rules were not enforced: the
    // manifest's firewall.enabled is what the user meant.
    let fw = cfg
        .firewall
        .as_ref()
        .and_then(|f| f.enabled)
        .unwrap_or(false);
    net0.insert("firewall".into(), json!(fw));
    attrs.insert("net0".into(), Value::Object(net0));

    if let Some(ns) = &net.nameservers {
        attrs.insert("nameserver".into(), json!(ns.trim()));
    }
    if let Some(sd) = &cfg.searchdomain {
        attrs.insert("searchdomain".into(), json!(sd));
    }

    let features = features_from_options(&cfg.pct_options).map_err(|opt| {
        Box::new(error(
            ctid,
            "pct_options",
            format!("unknown container option `{opt}`"),
            Some("pct_options takes feature flags such as `nesting=1`, `keyctl=1`, `fuse=1`"),
        ))
    })?;
    attrs.insert("features".into(), features);
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
    attrs.insert(
        "unprivileged".into(),
        json!(cfg.unprivileged.unwrap_or(true)),
    );
    attrs.insert("storage".into(), json!(cfg.storage_pool));
    attrs.insert(
        "rootfs_size".into(),
        json!(normalize::format_size(cfg.storage_size_gb << 30)),
    );
    let status = match cfg.status {
        Some(GuestStatus::Stopped) => "stopped",
        _ => "running",
    };
    attrs.insert("status".into(), json!(status));
    // One attribute per volume, keyed by its mount point: a volume the manifest
    // stops naming becomes unmanaged and is left with its data (never detached).
    let mut volume_storages = Vec::new();
    for (i, v) in cfg.zfs_volumes.iter().flatten().enumerate() {
        let mp = v.mount_point.trim();
        let path_ok = mp.starts_with('/')
            && !mp.contains([',', '=', '\n', '\r'])
            && !mp.split('/').any(|s| s == "..");
        let storage_ok = !v.pool.is_empty()
            && v.pool
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !path_ok || !storage_ok || v.size_gb == 0 {
            return Err(Box::new(error(
                ctid,
                &format!("zfs_volumes[{i}]"),
                format!(
                    "volume `{}` needs an absolute mount_point, a storage id as `pool` and a size",
                    v.name
                ),
                Some(
                    "e.g. {\"name\": \"models\", \"pool\": \"local-zfs\", \"size_gb\": 50, \"mount_point\": \"/models\"}",
                ),
            )));
        }
        attrs.insert(
            format!("{VOLUME_PREFIX}{mp}"),
            json!(format!(
                "{}:{}",
                v.pool,
                normalize::format_size(v.size_gb << 30)
            )),
        );
        volume_storages.push(v.pool.clone());
    }

    let mut create = Map::new();
    if let Some(node) = &cfg.node {
        create.insert("node".into(), json!(node));
    }
    // The disk's storage, the template and the clone's snapshot must exist first.
    let mut depends_on = vec![Address::new(super::storage::KIND, cfg.storage_pool.clone())];
    for s in volume_storages {
        let a = Address::new(super::storage::KIND, s);
        if !depends_on.contains(&a) {
            depends_on.push(a);
        }
    }
    match (&cfg.template, &cfg.clone_from_ctid) {
        (Some(t), None) => {
            let volid = super::template::volume_id(site, t).map_err(|why| {
                Box::new(error(
                    ctid,
                    "template",
                    why,
                    Some("write it as a volume id, e.g. `local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst`"),
                ))
            })?;
            create.insert("template".into(), json!(volid));
            depends_on.push(Address::new(super::template::KIND, volid));
        }
        (None, Some(src)) => {
            create.insert("clone_from".into(), json!(src.0));
            let snap = site
                .lxc
                .lxc_configs
                .get(&src.0.to_string())
                .and_then(|s| s.template_snapshot_name.as_deref())
                .map(|s| s.trim().to_string());
            if let Some(snap) = snap {
                depends_on.push(super::snapshot::address(src.0, &snap));
                create.insert("clone_snapshot".into(), json!(snap));
            }
            depends_on.push(Address::new(KIND, src.0.to_string()));
        }
        (Some(_), Some(_)) => {
            return Err(Box::new(error(
                ctid,
                "template",
                "both `template` and `clone_from_ctid` are set".into(),
                Some("a container is created either from a template or by cloning; keep one"),
            )));
        }
        (None, None) => {
            return Err(Box::new(error(
                ctid,
                "template",
                "neither `template` nor `clone_from_ctid` is set".into(),
                Some(
                    "add `template` (e.g. `local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst`) or `clone_from_ctid`",
                ),
            )));
        }
    }
    for dep in &cfg.dependencies {
        if let Some(a) = guest_address(site, dep.0)
            && !depends_on.contains(&a)
        {
            depends_on.push(a);
        }
    }

    Ok(DesiredResource {
        address: Address::new(KIND, ctid),
        attrs,
        create,
        depends_on,
    })
}

/// `["nesting=1", "keyctl=1"]` -> every known flag with its value; `Err(option)` for an unknown one.
fn features_from_options(options: &[String]) -> Result<Value, String> {
    let mut flags: BTreeMap<&str, Value> =
        FEATURE_FLAGS.iter().map(|f| (*f, json!(false))).collect();
    for opt in options.iter().flat_map(|o| o.split(',')) {
        let opt = opt.trim();
        if opt.is_empty() {
            continue;
        }
        let (k, v) = opt.split_once('=').unwrap_or((opt, "1"));
        let k = k.trim();
        if let Some(slot) = FEATURE_FLAGS.iter().find(|f| **f == k) {
            let b = normalize::parse_bool(v).ok_or_else(|| opt.to_string())?;
            flags.insert(slot, json!(b));
        } else if k == "mount" {
            flags.insert("mount", json!(v.trim()));
        } else {
            return Err(opt.to_string());
        }
    }
    Ok(Value::Object(
        flags.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
    ))
}

/// Normalize a PVE container config (`GET .../lxc/{vmid}/config`) and its
/// run status into the attributes above.
pub fn from_pve_config(cfg: &Map<String, Value>, status: &str) -> Attrs {
    let s = |k: &str| {
        cfg.get(k).and_then(|v| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
    };
    let mut a = Map::new();
    a.insert("hostname".into(), json!(s("hostname")));
    a.insert(
        "memory".into(),
        json!(cfg.get("memory").and_then(normalize::lenient_u64)),
    );
    a.insert(
        "swap".into(),
        json!(cfg.get("swap").and_then(normalize::lenient_u64)),
    );
    a.insert(
        "cores".into(),
        json!(cfg.get("cores").and_then(normalize::lenient_u64)),
    );
    a.insert(
        "net0".into(),
        s("net0").map_or(Value::Null, |t| net_from_pve(&t)),
    );
    a.insert("nameserver".into(), json!(s("nameserver")));
    a.insert("searchdomain".into(), json!(s("searchdomain")));

    let fp = PropString::parse(&s("features").unwrap_or_default());
    let mut features = Map::new();
    for f in FEATURE_FLAGS {
        features.insert(
            f.into(),
            json!(fp.get(f).and_then(normalize::parse_bool).unwrap_or(false)),
        );
    }
    if let Some(m) = fp.get("mount") {
        features.insert("mount".into(), json!(m));
    }
    a.insert("features".into(), Value::Object(features));
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
        "unprivileged".into(),
        json!(normalize::lenient_bool(cfg.get("unprivileged"))),
    );
    let rootfs = PropString::parse(&s("rootfs").unwrap_or_default());
    let storage = rootfs
        .first
        .as_deref()
        .and_then(|v| v.split_once(':'))
        .map(|(sid, _)| sid.to_string());
    a.insert("storage".into(), json!(storage));
    a.insert(
        "rootfs_size".into(),
        json!(rootfs.get("size").map(normalize::size)),
    );
    a.insert("status".into(), json!(status));
    for (_, mp, storage, size) in volumes_of(cfg) {
        a.insert(
            format!("{VOLUME_PREFIX}{mp}"),
            json!(format!("{storage}:{size}")),
        );
    }
    a
}

fn net_from_pve(text: &str) -> Value {
    let p = PropString::parse(text);
    let mut m = Map::new();
    for (k, v) in &p.props {
        match k.as_str() {
            // `type=veth` is the only type PVE has and it adds it itself.
            "type" if v == "veth" => {}
            "hwaddr" => {
                m.insert(k.clone(), json!(normalize::mac(v)));
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
    let mut p = PropString::default();
    for (k, v) in net {
        let text = match v {
            Value::Bool(b) => (if *b { "1" } else { "0" }).to_string(),
            Value::String(s) => s.clone(),
            Value::Null => continue,
            other => other.to_string(),
        };
        p.props.insert(k.clone(), text);
    }
    p.print(&["name"])
}

fn bool_param(v: &Value) -> String {
    if v.as_bool().unwrap_or(false) {
        "1"
    } else {
        "0"
    }
    .to_string()
}

/// PVE parameters that set the given attributes. `live` is the current object
/// (for an update): attributes PVE only takes whole (`net0`, `features`,
/// `startup`) are merged over it, so unmanaged parts such as a generated MAC
/// are kept. Returns `(params, deletes)`; status, storage and size are not
/// config parameters and are handled by the provider.
pub fn config_params(attrs: &Attrs, live: Option<&Attrs>) -> (Vec<(String, String)>, Vec<String>) {
    let mut params = Vec::new();
    let mut deletes = Vec::new();
    for (k, v) in attrs {
        let live_v = live.and_then(|l| l.get(k));
        match (k.as_str(), v) {
            ("status" | "storage" | "rootfs_size" | "unprivileged", _) => {}
            // Volumes are allocated and grown by the provider, one by one.
            (key, _) if key.starts_with(VOLUME_PREFIX) => {}
            (key, Value::Null) => deletes.push(key.to_string()),
            ("net0", Value::Object(want)) => {
                let mut merged = live_v
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                for (nk, nv) in want {
                    merged.insert(nk.clone(), nv.clone());
                }
                params.push(("net0".into(), net_to_pve(&merged)));
            }
            ("features", Value::Object(want)) => {
                let mut merged = live_v
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                for (nk, nv) in want {
                    merged.insert(nk.clone(), nv.clone());
                }
                let on: Vec<String> = merged
                    .iter()
                    .filter_map(|(fk, fv)| match fv {
                        Value::Bool(true) => Some(format!("{fk}=1")),
                        Value::String(s) if !s.is_empty() => Some(format!("{fk}={s}")),
                        _ => None,
                    })
                    .collect();
                if on.is_empty() {
                    if live.is_some() {
                        deletes.push("features".into());
                    }
                } else {
                    params.push(("features".into(), on.join(",")));
                }
            }
            ("startup", Value::Object(want)) => {
                let mut p = PropString::default();
                for (sk, sv) in want {
                    let t = sv
                        .as_u64()
                        .map_or_else(|| sv.to_string(), |n| n.to_string());
                    p.props.insert(sk.clone(), t);
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
            ("onboot", b) => params.push(("onboot".into(), bool_param(b))),
            (key, Value::String(s)) => params.push((key.to_string(), s.clone())),
            (key, Value::Number(n)) => params.push((key.to_string(), n.to_string())),
            (key, other) => params.push((key.to_string(), other.to_string())),
        }
    }
    (params, deletes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn pve_config_normalizes_what_pve_rewrites() {
        let cfg = obj(json!({
            "hostname": "web",
            "memory": "2048",
            "swap": 512,
            "cores": 2,
            "net0": "name=eth0,bridge=vmbr0,firewall=1,gw=192.0.2.1,hwaddr=52:54:00:aa:bb:cc,ip=192.0.2.5/24,type=veth",
            "features": "nesting=1",
            "onboot": 1,
            "startup": "order=2,up=5",
            "tags": "b;a",
            "unprivileged": 1,
            "rootfs": "local-lvm:vm-101-disk-0,size=16384M",
            "digest": "abc"
        }));
        let a = from_pve_config(&cfg, "running");
        assert_eq!(a["memory"], json!(2048));
        assert_eq!(
            a["net0"],
            json!({"name": "eth0", "bridge": "vmbr0", "firewall": true, "gw": "192.0.2.1",
                   "hwaddr": "52:54:00:AA:BB:CC", "ip": "192.0.2.5/24"})
        );
        assert_eq!(a["features"]["nesting"], json!(true));
        assert_eq!(a["features"]["keyctl"], json!(false));
        assert_eq!(a["startup"], json!({"order": 2, "up": 5}));
        assert_eq!(a["tags"], json!(["a", "b"]));
        assert_eq!(a["storage"], json!("local-lvm"));
        assert_eq!(a["rootfs_size"], json!("16G"));
        assert_eq!(a["unprivileged"], json!(true));
    }

    #[test]
    fn absent_flags_read_as_off_and_absent_values_as_null() {
        let a = from_pve_config(&obj(json!({"hostname": "x", "memory": 512})), "stopped");
        assert_eq!(a["onboot"], json!(false));
        assert_eq!(a["unprivileged"], json!(false));
        assert_eq!(a["nameserver"], Value::Null);
        assert_eq!(a["startup"], Value::Null);
        assert_eq!(a["tags"], json!([]));
    }

    #[test]
    fn features_from_manifest_options() {
        let f = features_from_options(&["nesting=1".into(), "keyctl=true".into()]).unwrap();
        assert_eq!(f["nesting"], json!(true));
        assert_eq!(f["keyctl"], json!(true));
        assert_eq!(f["fuse"], json!(false));
        assert_eq!(
            features_from_options(&["bogus=1".into()]),
            Err("bogus=1".into())
        );
    }

    #[test]
    fn update_params_keep_unmanaged_net_parts() {
        let live = from_pve_config(
            &obj(
                json!({"net0": "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:00:01,ip=dhcp,type=veth"}),
            ),
            "running",
        );
        let want = obj(
            json!({"net0": {"name": "eth0", "bridge": "vmbr1", "ip": "dhcp", "firewall": true}}),
        );
        let (params, deletes) = config_params(&want, Some(&live));
        assert!(deletes.is_empty());
        assert_eq!(
            params,
            vec![(
                "net0".to_string(),
                "name=eth0,bridge=vmbr1,firewall=1,hwaddr=BC:24:11:00:00:01,ip=dhcp".to_string()
            )]
        );
    }

    #[test]
    fn roundtrip_params_read_back_equal() {
        // What we send, read back through the normalizer, equals what we wanted.
        let want = obj(json!({
            "hostname": "web", "memory": 1024, "cores": 2,
            "net0": {"name": "eth0", "bridge": "vmbr0", "ip": "192.0.2.5/24", "gw": "192.0.2.1",
                     "hwaddr": "52:54:00:AA:BB:CC", "firewall": false},
            "features": {"nesting": true, "keyctl": false, "fuse": false, "mknod": false, "force_rw_sys": false},
            "onboot": true, "startup": {"order": 3, "up": 5}, "tags": ["a", "b"], "nameserver": "192.0.2.13"
        }));
        let (params, _) = config_params(&want, None);
        let cfg: Map<String, Value> = params.into_iter().map(|(k, v)| (k, json!(v))).collect();
        let back = from_pve_config(&cfg, "running");
        for (k, v) in &want {
            assert_eq!(&back[k], v, "attribute {k}");
        }
    }

    #[test]
    fn null_attributes_become_deletes() {
        let want = obj(json!({"nameserver": null}));
        let (params, deletes) = config_params(&want, None);
        assert!(params.is_empty());
        assert_eq!(deletes, ["nameserver"]);
    }

    #[test]
    fn storage_volumes_are_one_attribute_per_mount_point_and_bind_mounts_are_not() {
        let cfg = json!({
            "mp0": "/srv/x,mp=/x",
            "mp1": "fastData-shared-bulk-data:subvol-801-disk-1,mp=/vllm_models,size=50G",
            "mp2": "local-lvm:vm-801-disk-2,mp=/data,backup=1,size=1024M"
        });
        let a = from_pve_config(cfg.as_object().unwrap(), "running");
        assert_eq!(
            a["volume:/vllm_models"],
            json!("fastData-shared-bulk-data:50G")
        );
        assert_eq!(a["volume:/data"], json!("local-lvm:1G"));
        assert!(!a.contains_key("volume:/x"));
        let site = crate::render::names::tests::seed();
        let d = LxcKind.desired(&site).unwrap();
        let r801 = d.iter().find(|r| r.address.name() == "801").unwrap();
        assert_eq!(
            r801.attrs["volume:/vllm_models"],
            json!("fastData-shared-bulk-data:50G")
        );
        assert!(
            r801.depends_on
                .contains(&Address::new("storage", "fastData-shared-bulk-data"))
        );
        let (params, _) = config_params(&r801.attrs, None);
        assert!(!params.iter().any(|(k, _)| k.starts_with("volume")));
    }
}
