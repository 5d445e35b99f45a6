//! `snapshot.<guest>.<name>`: a snapshot the seed's template chain relies on.
//! A guest with `template_snapshot_name` that another guest is cloned from
//! gets that snapshot, taken after the guest is converged; its clones are
//! taken from it (so a running source can be cloned).
//!
//! | attribute     | manifest | PVE | notes |
//! |---------------|----------|-----|-------|
//! | `fingerprint` | the source guest's desired attributes | the snapshot's `description` | `phoenix:<16 hex>`; forces replacement |
//! | `snaptime`    | (not managed) | `snaptime` | read only: when it was taken |
//!
//! The snapshot is re-taken (delete + create) only when what it captures
//! changed: the fingerprint is a hash of the guest's managed attributes
//! except its run status, written into the snapshot's description and read
//! back. A VM source counts when the `vm` kind is planned; a template VM has
//! no snapshots (PVE refuses them; its clones come from its base disks).

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::{Address, Attrs, DesiredResource, Kind, KindSchema, canonical_json};
use crate::manifest::locate::{Segment, format_path};
use crate::manifest::{Diagnostic, GuestKind, Severity, Site};

pub const KIND: &str = "snapshot";

pub static SCHEMA: KindSchema = KindSchema {
    kind: KIND,
    provider: "proxmox",
    force_new: &["fingerprint"],
    grow_only: &[],
    sensitive: &[],
    destroy_protected: false,
    keep_on_delete: false,
    update_notes: super::no_notes,
};

/// What phoenix writes before the hash in a snapshot's description.
pub const PREFIX: &str = "phoenix:";

/// Attributes that do not change what a snapshot captures.
const NOT_CAPTURED: [&str; 1] = ["status"];

pub struct SnapshotKind;

/// The address of a guest's snapshot.
pub fn address(guest: u32, name: &str) -> Address {
    Address::new(KIND, format!("{guest}.{name}"))
}

/// `900.final-form` -> (900, `final-form`).
pub fn parse_name(name: &str) -> Option<(u32, &str)> {
    let (guest, snap) = name.split_once('.')?;
    Some((guest.parse().ok()?, snap)).filter(|(_, s)| !s.is_empty())
}

/// PVE's `pve-configid`, at most 40 characters, minus its reserved names.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    first_ok
        && name.len() >= 2
        && name.len() <= 40
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && name != "current"
        && name != "vzdump"
}

/// `phoenix:<first 16 hex of sha256>` of the attributes a snapshot captures.
pub fn fingerprint(guest_attrs: &Attrs) -> String {
    let captured: Map<String, Value> = guest_attrs
        .iter()
        .filter(|(k, _)| !NOT_CAPTURED.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let digest = Sha256::digest(canonical_json(&Value::Object(captured)).as_bytes());
    format!("{PREFIX}{}", &hex::encode(digest)[..16])
}

/// The live attributes of one entry of `GET .../snapshot`.
pub fn from_pve(entry: &Map<String, Value>) -> Attrs {
    let description = entry
        .get("description")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|d| !d.is_empty());
    let mut a = Map::new();
    a.insert("fingerprint".into(), json!(description));
    a.insert(
        "snaptime".into(),
        json!(
            entry
                .get("snaptime")
                .and_then(super::normalize::lenient_u64)
        ),
    );
    a
}

/// Guest ids that some guest of the same kind is cloned from.
fn clone_sources(site: &Site) -> BTreeSet<(GuestKind, u32)> {
    let mut out = BTreeSet::new();
    for (_, cfg) in site.lxcs() {
        if let Some(src) = &cfg.clone_from_ctid {
            out.insert((GuestKind::Lxc, src.0));
        }
    }
    for vm in &site.vms.vms {
        if let Some(src) = &vm.clone_from_vmid {
            out.insert((GuestKind::Vm, src.0));
        }
    }
    out
}

fn guest_address(kind: GuestKind, id: u32) -> Address {
    match kind {
        GuestKind::Lxc => Address::new(super::lxc::KIND, id.to_string()),
        GuestKind::Vm => Address::new("vm", id.to_string()),
    }
}

/// The desired attributes of a guest, as its own kind computes them; `None`
/// if that kind is not planned or reports an error (it reports it itself).
fn guest_attrs(site: &Site, addr: &Address) -> Option<Attrs> {
    let kind = super::kind_of(addr.kind())?;
    let all = kind.desired(site).ok()?;
    all.into_iter()
        .find(|r| &r.address == addr)
        .map(|r| r.attrs)
}

fn name_error(site: &Site, kind: GuestKind, id: u32, name: &str) -> Diagnostic {
    let (file, path) = match kind {
        GuestKind::Lxc => (
            "etc/phoenix_lxc_configs.json",
            vec![
                Segment::key("lxc_configs"),
                Segment::key(id.to_string()),
                Segment::key("template_snapshot_name"),
            ],
        ),
        GuestKind::Vm => {
            let i = site.vms.vms.iter().position(|v| v.vmid == id).unwrap_or(0);
            (
                "etc/phoenix_vm_configs.json",
                vec![
                    Segment::key("vms"),
                    Segment::Index(i),
                    Segment::key("template_snapshot_name"),
                ],
            )
        }
    };
    Diagnostic::new(
        Severity::Error,
        file,
        format!("`{name}` cannot be a Proxmox snapshot name"),
    )
    .with_path(format_path(&path))
    .with_position(site.sources.locate(Path::new(file), &path))
    .with_help(
        "use 2 to 40 letters, digits, `-` and `_`, starting with a letter (not `current` or `vzdump`)",
    )
}

impl Kind for SnapshotKind {
    fn schema(&self) -> &'static KindSchema {
        &SCHEMA
    }

    fn destroyed_with_guest(&self) -> bool {
        true
    }

    fn desired(&self, site: &Site) -> Result<Vec<DesiredResource>, Vec<Diagnostic>> {
        let mut out = Vec::new();
        let mut errors = Vec::new();
        for (kind, id) in clone_sources(site) {
            let (name, is_template) = match kind {
                GuestKind::Lxc => match site.lxc(id) {
                    Some(c) => (c.template_snapshot_name.clone(), false),
                    None => continue,
                },
                GuestKind::Vm => match site.vm(id) {
                    Some(v) => (
                        v.template_snapshot_name.clone(),
                        v.is_template.unwrap_or(false),
                    ),
                    None => continue,
                },
            };
            let Some(name) = name.map(|n| n.trim().to_string()) else {
                continue;
            };
            if is_template {
                continue;
            }
            if !valid_name(&name) {
                errors.push(name_error(site, kind, id, &name));
                continue;
            }
            let guest = guest_address(kind, id);
            let Some(attrs) = guest_attrs(site, &guest) else {
                continue;
            };
            let mut a = Map::new();
            a.insert("fingerprint".into(), json!(fingerprint(&attrs)));
            // After the guest's provisioning: what clones start from is the finished guest.
            let mut depends_on = vec![guest];
            depends_on.extend(super::feature::provisioning_of(site, id));
            out.push(DesiredResource {
                address: address(id, &name),
                attrs: a,
                create: Map::new(),
                depends_on,
            });
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }

    fn verifies_existing(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn names_and_addresses() {
        assert_eq!(
            address(900, "final-form").to_string(),
            "snapshot.900.final-form"
        );
        assert_eq!(parse_name("900.final-form"), Some((900, "final-form")));
        assert_eq!(parse_name("x.final-form"), None);
        assert_eq!(parse_name("900."), None);
        assert!(valid_name("final-form"));
        assert!(valid_name("initial_clean_state"));
        assert!(!valid_name("1st"));
        assert!(!valid_name("a"));
        assert!(!valid_name("has.dot"));
        assert!(!valid_name("current"));
        assert!(!valid_name(&"a".repeat(41)));
    }

    #[test]
    fn fingerprint_ignores_status_and_key_order() {
        let a =
            obj(json!({"memory": 512, "net0": {"ip": "a", "bridge": "b"}, "status": "running"}));
        let b =
            obj(json!({"status": "stopped", "net0": {"bridge": "b", "ip": "a"}, "memory": 512}));
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert!(fingerprint(&a).starts_with(PREFIX));
        assert_eq!(fingerprint(&a).len(), PREFIX.len() + 16);
        let c = obj(json!({"memory": 1024, "net0": {"ip": "a", "bridge": "b"}}));
        assert_ne!(fingerprint(&a), fingerprint(&c));
    }

    #[test]
    fn pve_snapshot_entry_normalizes() {
        let a = from_pve(&obj(
            json!({"name": "base", "description": "phoenix:0123456789abcdef\n", "snaptime": "1700000000"}),
        ));
        assert_eq!(a["fingerprint"], json!("phoenix:0123456789abcdef"));
        assert_eq!(a["snaptime"], json!(1_700_000_000u64));
        // A snapshot taken by hand (or by the seed) has no fingerprint: it is re-taken.
        let b = from_pve(&obj(json!({"name": "base", "description": ""})));
        assert_eq!(b["fingerprint"], Value::Null);
    }

    fn seed() -> Site {
        let root = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/fixtures/phoenix-seed"
        );
        crate::manifest::load(std::path::Path::new(root))
            .unwrap()
            .site
    }

    #[test]
    fn desired_from_the_seed_and_the_clones_edges() {
        let site = seed();
        let all = SnapshotKind.desired(&site).unwrap();
        let got: Vec<String> = all.iter().map(|r| r.address.to_string()).collect();
        // 910 and 912 name a snapshot, but nothing is cloned from them.
        assert_eq!(
            got,
            [
                "snapshot.900.final-form",
                "snapshot.901.final-form",
                "snapshot.911.final-form"
            ]
        );
        assert_eq!(all[0].depends_on, [Address::new("lxc", "900")]);

        let lxcs = super::super::lxc::LxcKind.desired(&site).unwrap();
        let get = |id: &str| lxcs.iter().find(|r| r.address.name() == id).unwrap();
        let dep = |id: &str, a: &str| get(id).depends_on.iter().any(|d| d.to_string() == a);
        assert!(dep("900", "storage.quickOS-lxc-disks"));
        assert!(dep(
            "900",
            "template.fastData-shared-iso:vztmpl/ubuntu-24.04-standard_24.04-2_amd64.tar.zst"
        ));
        assert_eq!(
            get("900").create["template"],
            json!("fastData-shared-iso:vztmpl/ubuntu-24.04-standard_24.04-2_amd64.tar.zst")
        );
        for (clone, snap) in [
            ("901", "snapshot.900.final-form"),
            ("801", "snapshot.911.final-form"),
        ] {
            assert!(dep(clone, snap), "{clone} -> {snap}");
        }
        // The hash is the guest's: another guest's change does not move it.
        let mut changed = site.clone();
        if let Some(c) = changed.lxc.lxc_configs.get_mut("901") {
            c.memory_mb += 1;
        }
        let again = SnapshotKind.desired(&changed).unwrap();
        assert_eq!(again[0].attrs, all[0].attrs);
        assert_ne!(again[1].attrs, all[1].attrs);
    }
}
