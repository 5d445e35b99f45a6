//! `template.<storage>:vztmpl/<file>`: an LXC OS template present on its
//! storage. The address name is the volume id.
//!
//! | attribute | manifest | PVE | notes |
//! |-----------|----------|-----|-------|
//! | `storage` | the volume id's storage | the content listing's storage | identity |
//! | `file`    | the volume id's file name | `volid` after `vztmpl/` | identity |
//!
//! Every container created from a template names one (`template`); containers
//! made by clone do not. The manifest may give a volume id
//! (`local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst`) or, as the seed
//! does, a host path inside a directory storage's template cache
//! (`/fastData/shared-iso/template/cache/<file>`). A host path is mapped to its
//! volume id here, from the manifests alone ([`volume_id`]): the address must
//! be known before anything is read, so that containers can depend on it.
//! The directories known are the `dir` storages the ZFS datasets define (their
//! mountpoint `/<pool>/<name>`) and PVE's `local` (`/var/lib/vz`).
//!
//! A missing template is downloaded once; one that exists is only checked.
//! phoenix never deletes a template: removing it from the manifests only
//! drops it from the state (docs/decisions/0009).

use std::collections::BTreeMap;

use serde_json::{Map, json};

use super::storage::{self, DatasetStorage};
use super::{Address, DesiredResource, Kind, KindSchema};
use crate::manifest::{Diagnostic, Site};

pub const KIND: &str = "template";

pub static SCHEMA: KindSchema = KindSchema {
    kind: KIND,
    provider: "proxmox",
    force_new: &[],
    grow_only: &[],
    sensitive: &[],
    destroy_protected: false,
    keep_on_delete: true,
    update_notes: super::no_notes,
};

/// PVE's default directory storage, present on every node.
const LOCAL: (&str, &str) = ("local", "/var/lib/vz");

/// Where a directory storage keeps OS templates, under its path.
const CACHE_DIR: &str = "template/cache";

pub struct TemplateKind;

/// `local:vztmpl/x.tar.zst` -> (`local`, `x.tar.zst`).
pub fn split_volume_id(volid: &str) -> Option<(&str, &str)> {
    let (sid, rest) = volid.split_once(':')?;
    let file = rest.strip_prefix("vztmpl/")?;
    let ok = !sid.is_empty()
        && !file.is_empty()
        && !file.contains('/')
        && !volid.chars().any(char::is_whitespace);
    ok.then_some((sid, file))
}

/// The volume id of a manifest's `template`: a volume id as it is, or a host
/// path mapped to the directory storage that holds it. `Err` says why not.
pub fn volume_id(site: &Site, template: &str) -> Result<String, String> {
    let defined = storage::dataset_storages(site).unwrap_or_default();
    map_template(&defined, template)
}

fn map_template(defined: &[DatasetStorage], template: &str) -> Result<String, String> {
    let template = template.trim();
    if template.contains(':') {
        return match split_volume_id(template) {
            Some(_) => Ok(template.to_string()),
            None => Err(format!(
                "template `{template}` is not an OS template volume id (`<storage>:vztmpl/<file>`)"
            )),
        };
    }
    let (dir, file) = template.rsplit_once('/').unwrap_or(("", template));
    let base = dir
        .strip_suffix(CACHE_DIR)
        .map(|b| b.trim_end_matches('/'))
        .filter(|_| !file.is_empty());
    let mut dirs: Vec<(String, String)> = defined
        .iter()
        .filter(|d| d.storage_type == "dir")
        .map(|d| (d.id.clone(), d.mountpoint()))
        .collect();
    if !dirs.iter().any(|(id, _)| id == LOCAL.0) {
        dirs.push((LOCAL.0.to_string(), LOCAL.1.to_string()));
    }
    if let Some(base) = base
        && let Some((sid, _)) = dirs.iter().find(|(_, path)| path == base)
    {
        return Ok(format!("{sid}:vztmpl/{file}"));
    }
    let known: Vec<String> = dirs
        .iter()
        .map(|(id, path)| format!("{path} ({id})"))
        .collect();
    Err(format!(
        "template `{template}` is not inside any directory storage phoenix knows \
         (`<path>/{CACHE_DIR}/<file>` of: {})",
        known.join(", ")
    ))
}

impl Kind for TemplateKind {
    fn schema(&self) -> &'static KindSchema {
        &SCHEMA
    }

    fn desired(&self, site: &Site) -> Result<Vec<DesiredResource>, Vec<Diagnostic>> {
        // A template the lxc kind cannot map is its error to report, once.
        let defined = storage::dataset_storages(site).unwrap_or_default();
        let mut out: BTreeMap<String, DesiredResource> = BTreeMap::new();
        for (_, cfg) in site.lxcs() {
            let Some(t) = cfg
                .template
                .as_deref()
                .filter(|_| cfg.clone_from_ctid.is_none())
            else {
                continue;
            };
            let Ok(volid) = map_template(&defined, t) else {
                continue;
            };
            let Some((sid, file)) = split_volume_id(&volid) else {
                continue;
            };
            let mut attrs = Map::new();
            attrs.insert("storage".into(), json!(sid));
            attrs.insert("file".into(), json!(file));
            let d = DesiredResource {
                address: Address::new(KIND, volid.clone()),
                attrs,
                create: Map::new(),
                depends_on: vec![Address::new(storage::KIND, sid)],
            };
            out.insert(volid, d);
        }
        Ok(out.into_values().collect())
    }

    fn verifies_existing(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn dir(id: &str, dataset: &str) -> DatasetStorage {
        DatasetStorage {
            id: id.into(),
            index: 0,
            storage_type: "dir".into(),
            dataset: dataset.into(),
            content: Some(BTreeSet::new()),
        }
    }

    #[test]
    fn volume_ids_pass_through() {
        let v = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst";
        assert_eq!(map_template(&[], v), Ok(v.to_string()));
        assert_eq!(
            split_volume_id(v),
            Some(("local", "debian-12-standard_12.7-1_amd64.tar.zst"))
        );
        assert!(map_template(&[], "local:iso/x.iso").is_err());
        assert!(map_template(&[], "local:vztmpl/").is_err());
    }

    #[test]
    fn host_paths_map_to_the_directory_storage_holding_them() {
        let defined = [dir("fastData-shared-iso", "fastData/shared-iso")];
        assert_eq!(
            map_template(
                &defined,
                "/fastData/shared-iso/template/cache/ubuntu-24.04-standard_24.04-2_amd64.tar.zst"
            ),
            Ok("fastData-shared-iso:vztmpl/ubuntu-24.04-standard_24.04-2_amd64.tar.zst".into())
        );
        assert_eq!(
            map_template(&[], "/var/lib/vz/template/cache/a.tar.xz"),
            Ok("local:vztmpl/a.tar.xz".into())
        );
        // A zfspool dataset holds no files.
        let mut pool = dir("tank-x", "tank/x");
        pool.storage_type = "zfspool".into();
        let err = map_template(&[pool], "/tank/x/template/cache/a.tar.xz").unwrap_err();
        assert!(err.contains("is not inside any directory storage"), "{err}");
        assert!(err.contains("/var/lib/vz (local)"), "{err}");
        // The seed's /mnt/pve prefix is not where the datasets are mounted.
        assert!(
            map_template(
                &defined,
                "/mnt/pve/fastData/shared-iso/template/cache/a.tar.xz"
            )
            .is_err()
        );
        assert!(map_template(&defined, "/fastData/shared-iso/template/cache/").is_err());
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
        let all = TemplateKind.desired(&seed()).unwrap();
        assert_eq!(all.len(), 1, "only 900 is made from a template");
        let t = &all[0];
        assert_eq!(
            t.address.to_string(),
            "template.fastData-shared-iso:vztmpl/ubuntu-24.04-standard_24.04-2_amd64.tar.zst"
        );
        assert_eq!(t.attrs["storage"], json!("fastData-shared-iso"));
        assert_eq!(
            t.depends_on,
            [Address::new("storage", "fastData-shared-iso")]
        );
    }
}
