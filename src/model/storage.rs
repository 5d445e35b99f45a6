//! `storage.<id>`: a Proxmox storage the manifests reference. Which storages
//! there are, what each must allow, and the two-way mapping to a PVE storage
//! definition (`from_pve`, `create_params`, `content_param`), kept pure so
//! every row is unit-tested.
//!
//! Two sorts, one kind:
//!
//! - **defined**: a ZFS dataset of `zfs.datasets` with `proxmox_storage_type`
//!   (`zfspool` or `dir`). phoenix creates it when it is missing (`POST
//!   /storage`), changes its content in place, and replaces it when its type,
//!   pool or path changes (`destroy_protected`: needs `--allow-destroy`).
//!   Its id is the seed's rule: `proxmox_storage_ids["<pool>_<name with _>"]`
//!   if present, else `<pool>-<name>`.
//! - **verified**: a storage only named by guests (`storage_pool`) or by a
//!   template's volume id. phoenix never creates or edits it: the plan fails
//!   when it is missing, disabled, or does not allow what the guests need.
//!
//! | attribute | manifest | PVE option | notes |
//! |-----------|----------|------------|-------|
//! | `type`    | `proxmox_storage_type` | `type` | defined only; forces replacement |
//! | `pool`    | `<pool>/<name>` (zfspool) | `pool` | defined only; forces replacement |
//! | `path`    | `/<pool>/<name>` (dir) | `path` | defined only; forces replacement |
//! | `content` | `proxmox_content_type`, plus what guests need | `content` | object of flags: a set; verified storages manage only the flags guests need (`rootdir` for LXC disks, `images` for VM disks, `vztmpl` for templates) |
//!
//! A storage that exists and matches is not taken into the state (see
//! [`super::Kind::verifies_existing`]); the seed's habit of removing every
//! storage not in its list is deliberately not reproduced.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::{Map, Value, json};

use super::{Address, Attrs, DesiredResource, Kind, KindSchema, LiveObject};
use crate::manifest::files::ZfsDataset;
use crate::manifest::locate::{Segment, format_path};
use crate::manifest::{Diagnostic, Severity, Site};

pub const KIND: &str = "storage";

pub static SCHEMA: KindSchema = KindSchema {
    kind: KIND,
    provider: "proxmox",
    force_new: &["type", "pool", "path"],
    grow_only: &[],
    sensitive: &[],
    destroy_protected: true,
    keep_on_delete: false,
    update_notes: super::no_notes,
};

/// Content types PVE knows (`pve-storage-content`), in its order-free set.
pub const CONTENT_TYPES: [&str; 7] = [
    "backup", "images", "import", "iso", "rootdir", "snippets", "vztmpl",
];

/// What each storage type phoenix creates may hold (the plugins' `content` tables).
fn allowed_content(storage_type: &str) -> &'static [&'static str] {
    match storage_type {
        "zfspool" => &["images", "rootdir"],
        _ => &CONTENT_TYPES,
    }
}

const HYPERVISOR_FILE: &str = "etc/phoenix_hypervisor_config.json";
const LXC_FILE: &str = "etc/phoenix_lxc_configs.json";

/// `create` key of a verified storage: phoenix may not create or change it.
pub const VERIFY_ONLY: &str = "verify_only";
/// `create` key: content type -> the addresses that need it, for the plan's messages.
pub const NEEDED_BY: &str = "needed_by";

pub struct StorageKind;

/// A storage defined by a ZFS dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetStorage {
    pub id: String,
    /// Index in `zfs.datasets`, for diagnostics.
    pub index: usize,
    pub storage_type: String,
    /// `<pool>/<name>`: the zfspool's `pool`, and (with a leading `/`) the dir's `path`.
    pub dataset: String,
    /// `None` when the manifest names no content: only what guests need is managed.
    pub content: Option<BTreeSet<String>>,
}

impl DatasetStorage {
    /// The mountpoint the seed gives the dataset, which a `dir` storage uses as its path.
    pub fn mountpoint(&self) -> String {
        format!("/{}", self.dataset)
    }
}

/// The seed's storage id rule (reference §1.1): the `proxmox_storage_ids`
/// entry for `<pool>_<name with - as _>`, matched exactly or ignoring case
/// (the seed's keys are written both ways), else `<pool>-<name>`.
pub fn storage_id(ids: Option<&BTreeMap<String, String>>, pool: &str, name: &str) -> String {
    let key = format!("{pool}_{}", name.replace('-', "_"));
    ids.and_then(|m| {
        m.get(&key).or_else(|| {
            m.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(&key))
                .map(|(_, v)| v)
        })
    })
    .cloned()
    .unwrap_or_else(|| format!("{pool}-{name}"))
}

/// `"images, rootdir"` -> `{images, rootdir}`; `none` and blanks name nothing.
pub fn content_set(text: &str) -> BTreeSet<String> {
    text.split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty() && *c != "none")
        .map(str::to_string)
        .collect()
}

/// Content as the attribute: every known type a flag (absent = false), plus
/// unknown types PVE reports (true), so sets compare whatever the order.
pub fn content_flags(set: &BTreeSet<String>) -> Value {
    let mut m: Map<String, Value> = CONTENT_TYPES
        .iter()
        .map(|c| (c.to_string(), json!(false)))
        .collect();
    for c in set {
        m.insert(c.clone(), json!(true));
    }
    Value::Object(m)
}

/// Only the given types, each `true`: "must include these", the rest unmanaged.
fn content_includes(set: &BTreeSet<String>) -> Value {
    Value::Object(set.iter().map(|c| (c.clone(), json!(true))).collect())
}

fn hv_error(site: &Site, path: &[Segment], message: String, help: &str) -> Diagnostic {
    Diagnostic::new(Severity::Error, HYPERVISOR_FILE, message)
        .with_path(format_path(path))
        .with_position(site.sources.locate(Path::new(HYPERVISOR_FILE), path))
        .with_help(help)
}

fn dataset_path(index: usize, field: &str) -> Vec<Segment> {
    vec![
        Segment::key("zfs"),
        Segment::key("datasets"),
        Segment::Index(index),
        Segment::key(field),
    ]
}

fn check_dataset(
    site: &Site,
    index: usize,
    ds: &ZfsDataset,
    storage_type: &str,
) -> Result<DatasetStorage, Box<Diagnostic>> {
    if storage_type != "zfspool" && storage_type != "dir" {
        return Err(Box::new(hv_error(
            site,
            &dataset_path(index, "proxmox_storage_type"),
            format!("phoenix cannot make a `{storage_type}` storage from a ZFS dataset"),
            "use `zfspool` (guest disks on the dataset) or `dir` (files in its mountpoint)",
        )));
    }
    let content = match &ds.proxmox_content_type {
        None => None,
        Some(text) => {
            let set = content_set(text);
            let allowed = allowed_content(storage_type);
            if let Some(bad) = set.iter().find(|c| !allowed.contains(&c.as_str())) {
                return Err(Box::new(hv_error(
                    site,
                    &dataset_path(index, "proxmox_content_type"),
                    format!("a `{storage_type}` storage cannot hold content `{bad}`"),
                    &format!("it can hold: {}", allowed.join(", ")),
                )));
            }
            if set.is_empty() {
                return Err(Box::new(hv_error(
                    site,
                    &dataset_path(index, "proxmox_content_type"),
                    "proxmox_content_type names no content type".into(),
                    &format!(
                        "list what the storage holds, e.g. \"{}\"",
                        allowed.join(",")
                    ),
                )));
            }
            Some(set)
        }
    };
    Ok(DatasetStorage {
        id: storage_id(
            site.hypervisor.proxmox_storage_ids.as_ref(),
            &ds.pool,
            &ds.name,
        ),
        index,
        storage_type: storage_type.to_string(),
        dataset: format!("{}/{}", ds.pool, ds.name),
        content,
    })
}

/// The storages the ZFS datasets define (those with `proxmox_storage_type`).
pub fn dataset_storages(site: &Site) -> Result<Vec<DatasetStorage>, Vec<Diagnostic>> {
    let mut out: Vec<DatasetStorage> = Vec::new();
    let mut errors = Vec::new();
    let datasets = site.hypervisor.zfs.iter().flat_map(|z| z.datasets.iter());
    for (index, ds) in datasets.enumerate() {
        let Some(storage_type) = ds.proxmox_storage_type.as_deref().map(str::trim) else {
            continue;
        };
        match check_dataset(site, index, ds, storage_type) {
            Ok(s) => {
                if let Some(first) = out.iter().find(|o| o.id == s.id) {
                    errors.push(hv_error(
                        site,
                        &dataset_path(index, "name"),
                        format!(
                            "storage id `{}` is defined twice (zfs.datasets[{}] and [{index}])",
                            s.id, first.index
                        ),
                        "give one of them another name, or another proxmox_storage_ids entry",
                    ));
                } else {
                    out.push(s);
                }
            }
            Err(d) => errors.push(*d),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Which storage content each storage must allow, and for whom:
/// storage id -> content type -> addresses.
pub fn needs(site: &Site) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut out: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut need = |sid: &str, content: &str, who: String| {
        let v = out
            .entry(sid.to_string())
            .or_default()
            .entry(content.to_string())
            .or_default();
        if !v.contains(&who) {
            v.push(who);
        }
    };
    for (ctid, cfg) in site.lxcs() {
        need(&cfg.storage_pool, "rootdir", format!("lxc.{ctid}"));
        if cfg.clone_from_ctid.is_none()
            && let Some(t) = &cfg.template
            && let Ok(volid) = super::template::volume_id(site, t)
            && let Some((sid, _)) = volid.split_once(':')
        {
            need(sid, "vztmpl", format!("{}.{volid}", super::template::KIND));
        }
    }
    // VM disks count only when VMs are planned at all.
    if super::schema_of("vm").is_some() {
        let default = site
            .vms
            .vm_defaults
            .as_ref()
            .and_then(|d| d.storage_pool.clone());
        for vm in &site.vms.vms {
            if let Some(sid) = vm.storage_pool.clone().or_else(|| default.clone()) {
                need(&sid, "images", format!("vm.{}", vm.vmid));
            }
        }
    }
    out
}

fn lxc_storage_error(site: &Site, who: &str, message: String, help: &str) -> Diagnostic {
    // Point at the first guest that needs it: that is where the user looks.
    let ctid = who.strip_prefix("lxc.").unwrap_or(who);
    let path = vec![
        Segment::key("lxc_configs"),
        Segment::key(ctid),
        Segment::key("storage_pool"),
    ];
    Diagnostic::new(Severity::Error, LXC_FILE, message)
        .with_path(format_path(&path))
        .with_position(site.sources.locate(Path::new(LXC_FILE), &path))
        .with_help(help)
}

impl Kind for StorageKind {
    fn schema(&self) -> &'static KindSchema {
        &SCHEMA
    }

    fn desired(&self, site: &Site) -> Result<Vec<DesiredResource>, Vec<Diagnostic>> {
        let defined = dataset_storages(site)?;
        let mut needs = needs(site);
        let mut out = Vec::new();
        let mut errors = Vec::new();
        for ds in &defined {
            let needed = needs.remove(&ds.id).unwrap_or_default();
            let mut attrs = Map::new();
            attrs.insert("type".into(), json!(ds.storage_type));
            if ds.storage_type == "zfspool" {
                attrs.insert("pool".into(), json!(ds.dataset));
            } else {
                attrs.insert("path".into(), json!(ds.mountpoint()));
            }
            let content = match &ds.content {
                Some(set) => {
                    for (c, who) in &needed {
                        if !set.contains(c) {
                            errors.push(hv_error(
                                site,
                                &dataset_path(ds.index, "proxmox_content_type"),
                                format!(
                                    "storage `{}` does not hold content `{c}`, which {} need(s)",
                                    ds.id,
                                    who.join(", ")
                                ),
                                &format!(
                                    "add `{c}` to proxmox_content_type, or use another storage"
                                ),
                            ));
                        }
                    }
                    content_flags(set)
                }
                None => content_includes(&needed.keys().cloned().collect()),
            };
            attrs.insert("content".into(), content);
            out.push(DesiredResource {
                address: Address::new(KIND, ds.id.clone()),
                attrs,
                create: Map::new(),
                depends_on: Vec::new(),
            });
        }
        for (sid, needed) in needs {
            if sid.trim().is_empty() {
                if let Some(who) = needed.values().flatten().next() {
                    errors.push(lxc_storage_error(
                        site,
                        who,
                        "storage_pool is empty".into(),
                        "name the storage for the container's disk, e.g. `local-lvm`",
                    ));
                }
                continue;
            }
            let mut create = Map::new();
            create.insert(VERIFY_ONLY.into(), json!(true));
            create.insert(NEEDED_BY.into(), json!(needed));
            let mut attrs = Map::new();
            attrs.insert(
                "content".into(),
                content_includes(&needed.keys().cloned().collect()),
            );
            out.push(DesiredResource {
                address: Address::new(KIND, sid),
                attrs,
                create,
                depends_on: Vec::new(),
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

    fn precheck(&self, d: &DesiredResource, live: Option<&LiveObject>) -> Option<(String, String)> {
        if d.create.get(VERIFY_ONLY) != Some(&json!(true)) {
            return None;
        }
        verify_problem(d, live)
    }
}

/// `rootdir (lxc.101, lxc.102), vztmpl (template.x)`
fn who_needs(d: &DesiredResource, only: Option<&[String]>) -> String {
    let mut parts = Vec::new();
    if let Some(Value::Object(m)) = d.create.get(NEEDED_BY) {
        for (content, who) in m {
            if only.is_some_and(|o| !o.contains(content)) {
                continue;
            }
            let who: Vec<&str> = who
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            parts.push(format!("{content} for {}", who.join(", ")));
        }
    }
    parts.join("; ")
}

/// Why a storage phoenix only verifies cannot be used as the manifests need.
pub fn verify_problem(d: &DesiredResource, live: Option<&LiveObject>) -> Option<(String, String)> {
    let sid = d.address.name();
    let Some(live) = live else {
        return Some((
            format!(
                "storage `{sid}` does not exist in Proxmox, and no ZFS dataset in {HYPERVISOR_FILE} \
                 defines it, so phoenix cannot create it (needed: {})",
                who_needs(d, None)
            ),
            "create it in Proxmox (Datacenter > Storage > Add, or `pvesm add`), fix the \
             storage name in the manifest, or define it under zfs.datasets with \
             proxmox_storage_type so phoenix creates it; `pvesm status` lists the storages \
             that exist (an API user without `Datastore.Audit` on it does not see it)"
                .to_string(),
        ));
    };
    if live.attrs.get("disabled") == Some(&json!(true)) {
        return Some((
            format!(
                "storage `{sid}` is disabled in Proxmox (needed: {})",
                who_needs(d, None)
            ),
            format!("enable it (`pvesm set {sid} --disable 0`) or use another storage"),
        ));
    }
    let want = d.attrs.get("content").and_then(Value::as_object)?;
    let have = live.attrs.get("content").and_then(Value::as_object);
    let missing: Vec<String> = want
        .iter()
        .filter(|(c, v)| **v == json!(true) && have.and_then(|h| h.get(*c)) != Some(&json!(true)))
        .map(|(c, _)| c.clone())
        .collect();
    if missing.is_empty() {
        return None;
    }
    let current: Vec<String> = have
        .into_iter()
        .flatten()
        .filter(|(_, v)| **v == json!(true))
        .map(|(c, _)| c.clone())
        .collect();
    let mut wanted = current.clone();
    wanted.extend(missing.iter().cloned());
    Some((
        format!(
            "storage `{sid}` does not allow content {} (it allows: {}; needed: {})",
            missing.join(", "),
            if current.is_empty() {
                "nothing".to_string()
            } else {
                current.join(", ")
            },
            who_needs(d, Some(&missing))
        ),
        format!(
            "phoenix does not change storages it only verifies: add the content in Proxmox \
             (`pvesm set {sid} --content {}`), or put the guests on a storage that allows it",
            wanted.join(",")
        ),
    ))
}

/// Normalize a PVE storage definition (an entry of `GET /storage`).
pub fn from_pve(cfg: &Map<String, Value>) -> Attrs {
    let s = |k: &str| cfg.get(k).and_then(Value::as_str).map(str::to_string);
    let flag = |k: &str| super::normalize::lenient_bool(cfg.get(k));
    let mut a = Map::new();
    a.insert("type".into(), json!(s("type")));
    a.insert(
        "content".into(),
        content_flags(&content_set(&s("content").unwrap_or_default())),
    );
    a.insert("pool".into(), json!(s("pool")));
    a.insert("path".into(), json!(s("path").map(|p| trim_path(&p))));
    a.insert("shared".into(), json!(flag("shared")));
    a.insert("disabled".into(), json!(flag("disable")));
    a
}

fn trim_path(p: &str) -> String {
    match p.trim_end_matches('/') {
        "" => "/".to_string(),
        t => t.to_string(),
    }
}

/// The `content` option for these flags, merged over the live ones (flags the
/// manifests leave out keep their value): sorted, comma-joined.
pub fn content_param(want: &Value, live: Option<&Value>) -> String {
    let mut merged: BTreeMap<String, bool> = live
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_bool().unwrap_or(false)))
        .collect();
    for (k, v) in want.as_object().into_iter().flatten() {
        merged.insert(k.clone(), v.as_bool().unwrap_or(false));
    }
    let on: Vec<&str> = merged
        .iter()
        .filter(|(_, v)| **v)
        .map(|(k, _)| k.as_str())
        .collect();
    on.join(",")
}

/// `POST /storage` parameters for a defined storage.
pub fn create_params(id: &str, attrs: &Attrs) -> Result<Vec<(String, String)>, String> {
    let ty = attrs
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("storage `{id}` has no type to create it with"))?;
    let mut p = vec![
        ("storage".to_string(), id.to_string()),
        ("type".to_string(), ty.to_string()),
    ];
    let required = if ty == "zfspool" { "pool" } else { "path" };
    let v = attrs
        .get(required)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("storage `{id}` ({ty}) has no {required} to create it with"))?;
    p.push((required.to_string(), v.to_string()));
    if let Some(c) = attrs.get("content") {
        let text = content_param(c, None);
        if !text.is_empty() {
            p.push(("content".to_string(), text));
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn storage_ids_follow_the_seed_rule() {
        let ids: BTreeMap<String, String> = [
            ("fastData_shared_iso", "iso-store"),
            ("quickos_lxc_persistent_data", "qlpd"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            storage_id(Some(&ids), "fastData", "shared-iso"),
            "iso-store"
        );
        // The seed writes some keys in lower case.
        assert_eq!(
            storage_id(Some(&ids), "quickOS", "lxc-persistent-data"),
            "qlpd"
        );
        assert_eq!(
            storage_id(Some(&ids), "quickOS", "vm-disks"),
            "quickOS-vm-disks"
        );
        assert_eq!(storage_id(None, "tank", "x"), "tank-x");
    }

    #[test]
    fn content_is_a_set_whatever_the_order() {
        let a = content_flags(&content_set("rootdir,images"));
        let b = content_flags(&content_set(" images , rootdir"));
        assert_eq!(a, b);
        assert_eq!(a["images"], json!(true));
        assert_eq!(a["iso"], json!(false));
        assert!(content_set("none").is_empty());
        // Unknown types PVE reports are kept, not dropped.
        assert_eq!(
            content_flags(&content_set("images,newtype"))["newtype"],
            json!(true)
        );
    }

    #[test]
    fn pve_definition_normalizes() {
        let a = from_pve(&obj(json!({
            "storage": "fastData-shared-iso", "type": "dir", "path": "/fastData/shared-iso/",
            "content": "vztmpl,iso,backup", "shared": 1, "digest": "x"
        })));
        assert_eq!(a["type"], json!("dir"));
        assert_eq!(a["path"], json!("/fastData/shared-iso"));
        assert_eq!(a["pool"], Value::Null);
        assert_eq!(a["content"]["backup"], json!(true));
        assert_eq!(a["content"]["rootdir"], json!(false));
        assert_eq!(a["shared"], json!(true));
        assert_eq!(a["disabled"], json!(false));
    }

    #[test]
    fn roundtrip_create_params_read_back_equal() {
        let want = obj(json!({
            "type": "zfspool", "pool": "tank/ct",
            "content": content_flags(&content_set("rootdir,images"))
        }));
        let p = create_params("tank-ct", &want).unwrap();
        assert_eq!(
            p,
            vec![
                ("storage".to_string(), "tank-ct".to_string()),
                ("type".to_string(), "zfspool".to_string()),
                ("pool".to_string(), "tank/ct".to_string()),
                ("content".to_string(), "images,rootdir".to_string()),
            ]
        );
        let cfg: Map<String, Value> = p.into_iter().map(|(k, v)| (k, json!(v))).collect();
        let back = from_pve(&cfg);
        for (k, v) in &want {
            assert_eq!(&back[k], v, "attribute {k}");
        }
        assert!(create_params("x", &obj(json!({"type": "dir"}))).is_err());
    }

    #[test]
    fn content_update_merges_over_unmanaged_flags() {
        let live = content_flags(&content_set("iso,backup"));
        assert_eq!(
            content_param(&json!({"vztmpl": true}), Some(&live)),
            "backup,iso,vztmpl"
        );
        assert_eq!(
            content_param(&content_flags(&content_set("iso,vztmpl")), Some(&live)),
            "iso,vztmpl"
        );
    }

    fn verified(content: &[&str]) -> DesiredResource {
        let set: BTreeSet<String> = content.iter().map(|c| c.to_string()).collect();
        let mut needed = Map::new();
        for c in content {
            needed.insert(c.to_string(), json!(["lxc.701"]));
        }
        DesiredResource {
            address: Address::new(KIND, "nas"),
            attrs: obj(json!({"content": content_includes(&set)})),
            create: obj(json!({VERIFY_ONLY: true, NEEDED_BY: needed})),
            depends_on: vec![],
        }
    }

    fn live(v: Value) -> LiveObject {
        LiveObject {
            attrs: from_pve(&obj(v)),
            remote: Value::Null,
            token: None,
        }
    }

    #[test]
    fn verified_storage_problems() {
        let d = verified(&["rootdir"]);
        let (m, h) = verify_problem(&d, None).unwrap();
        assert!(m.contains("storage `nas` does not exist"), "{m}");
        assert!(m.contains("rootdir for lxc.701"), "{m}");
        assert!(h.contains("zfs.datasets"), "{h}");

        let iso_only = live(json!({"type": "dir", "path": "/x", "content": "iso"}));
        let (m, h) = verify_problem(&d, Some(&iso_only)).unwrap();
        assert!(
            m.contains("does not allow content rootdir (it allows: iso"),
            "{m}"
        );
        assert!(h.contains("pvesm set nas --content iso,rootdir"), "{h}");

        let ok = live(json!({"type": "dir", "path": "/x", "content": "rootdir,iso"}));
        assert_eq!(verify_problem(&d, Some(&ok)), None);

        let off = live(json!({"type": "dir", "path": "/x", "content": "rootdir", "disable": 1}));
        assert!(
            verify_problem(&d, Some(&off))
                .unwrap()
                .0
                .contains("disabled")
        );

        // A defined storage is phoenix's to create: no precheck.
        let mut defined = d.clone();
        defined.create = Map::new();
        assert_eq!(StorageKind.precheck(&defined, None), None);
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
    fn desired_from_the_seed() {
        let site = seed();
        let all = StorageKind.desired(&site).unwrap();
        let ids: Vec<&str> = all.iter().map(|r| r.address.name()).collect();
        assert_eq!(ids.len(), 11, "{ids:?}");
        let get = |id: &str| all.iter().find(|r| r.address.name() == id).unwrap();
        let lxc = get("quickOS-lxc-disks");
        assert_eq!(lxc.attrs["type"], json!("zfspool"));
        assert_eq!(lxc.attrs["pool"], json!("quickOS/lxc-disks"));
        assert_eq!(
            lxc.attrs["content"],
            content_flags(&content_set("images,rootdir"))
        );
        assert!(lxc.create.is_empty(), "defined, so phoenix creates it");
        let iso = get("fastData-shared-iso");
        assert_eq!(iso.attrs["type"], json!("dir"));
        assert_eq!(iso.attrs["path"], json!("/fastData/shared-iso"));
        assert_eq!(iso.attrs["content"]["vztmpl"], json!(true));
        assert_eq!(iso.attrs["content"]["backup"], json!(false));

        // Containers on a storage whose content lacks rootdir: a manifest error.
        let mut bad = site.clone();
        if let Some(z) = bad.hypervisor.zfs.as_mut() {
            for d in &mut z.datasets {
                if d.name == "lxc-disks" {
                    d.proxmox_content_type = Some("images".into());
                }
            }
        }
        let errs = StorageKind.desired(&bad).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].message.contains("does not hold content `rootdir`"),
            "{}",
            errs[0].message
        );
        assert!(errs[0].message.contains("lxc.900"), "{}", errs[0].message);
        assert!(
            errs[0].json_path.ends_with("proxmox_content_type"),
            "{}",
            errs[0].json_path
        );

        // A storage only a container names is verified, with only what it needs.
        let mut other = site.clone();
        if let Some(c) = other.lxc.lxc_configs.get_mut("101") {
            c.storage_pool = "nas".into();
        }
        let all = StorageKind.desired(&other).unwrap();
        let nas = all.iter().find(|r| r.address.name() == "nas").unwrap();
        assert_eq!(nas.attrs["content"], json!({"rootdir": true}));
        assert_eq!(nas.create[VERIFY_ONLY], json!(true));
        assert_eq!(nas.create[NEEDED_BY], json!({"rootdir": ["lxc.101"]}));
    }
}
