//! `feature.<ctid>.<name>` and `app.<ctid>`: a container's provisioning, the
//! site's own scripts run inside it once (`providers/host/feature.rs`;
//! decision 0018).
//!
//! | address | script (in the site) | run as |
//! |---------|----------------------|--------|
//! | `feature.<ctid>.<name>` | `features/<name>.sh`, for each name of the container's `features` | `<script> <ctid>` inside the container, as root |
//! | `app.<ctid>` | `application_script`: `features/<name>`, else `bin/<name>` (the seed's place) | the same, after the container's features |
//!
//! The inputs a script sees are in its environment: `PHOENIX_GUEST_ID`,
//! `PHOENIX_GUEST_NAME`, `PHOENIX_DOMAIN`, `PHOENIX_BOOTSTRAP_CA_URL` (when
//! set). After a run that exits 0, phoenix writes a marker in the container,
//! `/var/lib/phoenix/provisioned/<feature|app>.json`, with the sha256 of the
//! script and of its inputs. Those are the attributes:
//!
//! | attribute | desired | live (the marker) |
//! |-----------|---------|-------------------|
//! | `script_sha256` | of the script's bytes | as recorded |
//! | `inputs_sha256` | of the environment above | as recorded |
//!
//! so the plan says why a script runs: never ran or marker missing (create),
//! the script changed, the inputs changed (update). A clone inherits what its
//! source (and its source's source) was provisioned with: those features are
//! not run again in it. A name with no script in the site is a warning (lint),
//! never dropped silently.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use super::{Address, Attrs, DesiredResource, Kind, KindSchema, LiveObject};
use crate::manifest::files::LxcConfig;
use crate::manifest::{Diagnostic, Site};

pub const FEATURE: &str = "feature";
pub const APP: &str = "app";
/// Where the site keeps its provisioning scripts.
pub const DIR: &str = "features";
/// The seed's place for application scripts.
pub const SEED_BIN: &str = "bin";
/// Inside the container.
pub const MARKERS: &str = "/var/lib/phoenix/provisioned";

/// A script that ran cannot be un-run: one dropped from the manifests leaves the state only.
pub static FEATURE_SCHEMA: KindSchema = KindSchema {
    kind: FEATURE,
    provider: "host",
    force_new: &[],
    grow_only: &[],
    sensitive: &[],
    destroy_protected: false,
    keep_on_delete: true,
    update_notes,
};

pub static APP_SCHEMA: KindSchema = KindSchema {
    kind: APP,
    ..FEATURE_SCHEMA
};

fn update_notes(changed: &[String], _live: &Attrs) -> Vec<String> {
    let mut why = Vec::new();
    if changed.iter().any(|c| c == "script_sha256") {
        why.push("the script changed");
    }
    if changed.iter().any(|c| c == "inputs_sha256") {
        why.push("its inputs changed");
    }
    vec![format!("runs it again: {}", why.join(" and "))]
}

/// The script of a feature, where the site keeps it.
pub fn feature_script(root: &Path, name: &str) -> PathBuf {
    root.join(DIR).join(format!("{name}.sh"))
}

/// The application script: `features/<name>`, else the seed's `bin/<name>`.
pub fn app_script(root: &Path, name: &str) -> Option<PathBuf> {
    [root.join(DIR).join(name), root.join(SEED_BIN).join(name)]
        .into_iter()
        .find(|p| p.is_file())
}

/// A name phoenix can put in a path and an address.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !name.starts_with('.')
}

/// The features a container gets from the guests it was cloned from.
pub fn inherited(site: &Site, cfg: &LxcConfig) -> Vec<String> {
    let mut out = Vec::new();
    let mut seen = Vec::new();
    let mut next = cfg.clone_from_ctid.map(|c| c.0);
    while let Some(id) = next {
        if seen.contains(&id) {
            break; // a cycle is the lint's to report
        }
        seen.push(id);
        let Some(parent) = site.lxc(id) else { break };
        out.extend(parent.features.iter().cloned());
        next = parent.clone_from_ctid.map(|c| c.0);
    }
    out
}

/// The features a VM gets from the VMs it was cloned from.
pub fn vm_inherited(site: &Site, vm: &crate::manifest::files::VmConfig) -> Vec<String> {
    let mut out = Vec::new();
    let mut seen = Vec::new();
    let mut next = vm.clone_from_vmid.map(|c| c.0);
    while let Some(id) = next {
        if seen.contains(&id) {
            break;
        }
        seen.push(id);
        let Some(parent) = site.vm(id) else { break };
        out.extend(parent.features.iter().cloned());
        next = parent.clone_from_vmid.map(|c| c.0);
    }
    out
}

/// The environment a container's scripts run with: the inputs of the marker.
pub fn inputs(site: &Site, ctid: &str, cfg: &LxcConfig) -> Vec<(String, String)> {
    let mut env = vec![
        ("PHOENIX_GUEST_ID".to_string(), ctid.to_string()),
        ("PHOENIX_GUEST_NAME".to_string(), cfg.name.clone()),
        (
            "PHOENIX_DOMAIN".to_string(),
            site.hypervisor.domain_name.clone(),
        ),
    ];
    if let Some(u) = &cfg.bootstrap_ca_url {
        env.push(("PHOENIX_BOOTSTRAP_CA_URL".into(), u.clone()));
    }
    env
}

fn inputs_sha256(env: &[(String, String)]) -> String {
    super::sha256_hex(json!(env).to_string().as_bytes())
}

/// The desired provisioning of every container: `(features, apps)`.
pub fn desired_all(site: &Site) -> (Vec<DesiredResource>, Vec<DesiredResource>) {
    let mut features = Vec::new();
    let mut apps = Vec::new();
    // Once for the site, not once per container: the raw lines a script may need.
    let confs: std::collections::BTreeSet<String> = super::lxc_conf::LxcConfKind
        .desired(site)
        .map(|all| {
            all.into_iter()
                .map(|r| r.address.name().to_string())
                .collect()
        })
        .unwrap_or_default();
    for (ctid, cfg) in &site.lxc.lxc_configs {
        let guest = Address::new(super::lxc::KIND, ctid.as_str());
        let env = inputs(site, ctid, cfg);
        let inputs = inputs_sha256(&env);
        // After the raw lines (an AppArmor profile, a device) that a script may need.
        let mut after = vec![guest.clone()];
        if confs.contains(ctid.as_str()) {
            after.push(Address::new(super::lxc_conf::KIND, ctid.as_str()));
        }
        let parent = inherited(site, cfg);
        for name in &cfg.features {
            if parent.contains(name) || !valid_name(name) {
                continue;
            }
            let Ok(bytes) = std::fs::read(feature_script(&site.root, name)) else {
                continue; // the lint warns
            };
            let address = Address::new(FEATURE, format!("{ctid}.{name}"));
            features.push(resource(
                &address,
                &bytes,
                &inputs,
                &env,
                name,
                after.clone(),
            ));
            // Features run in the manifest's order.
            after.push(address);
        }
        if let Some(script) = &cfg.application_script
            && valid_name(script)
            && let Some(path) = app_script(&site.root, script)
            && let Ok(bytes) = std::fs::read(path)
        {
            let address = Address::new(APP, ctid.as_str());
            apps.push(resource(&address, &bytes, &inputs, &env, script, after));
        }
    }
    // VMs: through the QEMU guest agent; no application script in their manifest.
    for vm in &site.vms.vms {
        if vm.is_template.unwrap_or(false) {
            continue;
        }
        let id = vm.vmid.to_string();
        let env = vec![
            ("PHOENIX_GUEST_ID".to_string(), id.clone()),
            ("PHOENIX_GUEST_NAME".to_string(), vm.name.clone()),
            (
                "PHOENIX_DOMAIN".to_string(),
                site.hypervisor.domain_name.clone(),
            ),
        ];
        let inputs = inputs_sha256(&env);
        let mut after = vec![Address::new(super::vm::KIND, id.as_str())];
        let parent = vm_inherited(site, vm);
        for name in &vm.features {
            if parent.contains(name) || !valid_name(name) {
                continue;
            }
            let Ok(bytes) = std::fs::read(feature_script(&site.root, name)) else {
                continue;
            };
            let address = Address::new(FEATURE, format!("{id}.{name}"));
            features.push(resource(
                &address,
                &bytes,
                &inputs,
                &env,
                name,
                after.clone(),
            ));
            after.push(address);
        }
    }
    (features, apps)
}

/// What provisions container `ctid` (its features and app): a snapshot of it
/// waits for them, so clones start from a provisioned guest.
pub fn provisioning_of(site: &Site, ctid: u32) -> Vec<Address> {
    let (f, a) = desired_all(site);
    f.into_iter()
        .chain(a)
        .map(|r| r.address)
        .filter(|addr| parts(addr).is_some_and(|(id, _)| id == ctid))
        .collect()
}

fn resource(
    address: &Address,
    script: &[u8],
    inputs: &str,
    env: &[(String, String)],
    name: &str,
    depends_on: Vec<Address>,
) -> DesiredResource {
    let mut attrs = Map::new();
    attrs.insert("script_sha256".into(), json!(super::sha256_hex(script)));
    attrs.insert("inputs_sha256".into(), json!(inputs));
    let mut create = Map::new();
    // What the provider runs: the script itself and its environment (not compared: their hashes are).
    create.insert(
        "script".into(),
        json!(String::from_utf8_lossy(script).into_owned()),
    );
    create.insert("name".into(), json!(name));
    create.insert(
        "env".into(),
        Value::Array(env.iter().map(|(k, v)| json!([k, v])).collect()),
    );
    DesiredResource {
        address: address.clone(),
        attrs,
        create,
        depends_on,
    }
}

/// `feature.<ctid>.<name>` -> (ctid, name); `app.<ctid>` -> (ctid, "app").
pub fn parts(addr: &Address) -> Option<(u32, String)> {
    if addr.kind() == APP {
        return Some((addr.name().parse().ok()?, APP.to_string()));
    }
    let (id, name) = addr.name().split_once('.')?;
    Some((id.parse().ok()?, name.to_string()))
}

/// The marker's path in the container.
pub fn marker_path(addr: &Address) -> Option<String> {
    let (_, name) = parts(addr)?;
    let file = if addr.kind() == APP {
        "app.json".to_string()
    } else {
        format!("feature-{name}.json")
    };
    Some(format!("{MARKERS}/{file}"))
}

/// The marker's content for a desired resource.
pub fn marker(desired: &DesiredResource) -> String {
    json!({
        "script_sha256": desired.attrs.get("script_sha256"),
        "inputs_sha256": desired.attrs.get("inputs_sha256"),
    })
    .to_string()
        + "\n"
}

/// The live attributes of a marker's text; `None` when it is not one of ours.
pub fn attrs_of(marker: &str) -> Option<Attrs> {
    let v: Value = serde_json::from_str(marker).ok()?;
    let mut a = Map::new();
    for k in ["script_sha256", "inputs_sha256"] {
        a.insert(k.into(), json!(v.get(k)?.as_str()?));
    }
    Some(a)
}

fn observe_create(live: Option<&LiveObject>) -> Vec<String> {
    match live {
        None => vec![
            "runs it in the container: no marker there (it never ran, or the marker is missing)"
                .into(),
        ],
        Some(_) => Vec::new(),
    }
}

pub struct FeatureKind;
pub struct AppKind;

impl Kind for FeatureKind {
    fn schema(&self) -> &'static KindSchema {
        &FEATURE_SCHEMA
    }

    fn destroyed_with_guest(&self) -> bool {
        true
    }

    fn desired(&self, site: &Site) -> Result<Vec<DesiredResource>, Vec<Diagnostic>> {
        Ok(desired_all(site).0)
    }

    fn observe(&self, _desired: &DesiredResource, live: Option<&LiveObject>) -> Vec<String> {
        observe_create(live)
    }
}

impl Kind for AppKind {
    fn schema(&self) -> &'static KindSchema {
        &APP_SCHEMA
    }

    fn destroyed_with_guest(&self) -> bool {
        true
    }

    fn desired(&self, site: &Site) -> Result<Vec<DesiredResource>, Vec<Diagnostic>> {
        Ok(desired_all(site).1)
    }

    fn observe(&self, _desired: &DesiredResource, live: Option<&LiveObject>) -> Vec<String> {
        observe_create(live)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed_with_scripts(names: &[&str]) -> (Site, tempfile::TempDir) {
        let mut site = crate::render::names::tests::seed();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(DIR)).unwrap();
        std::fs::create_dir_all(dir.path().join(SEED_BIN)).unwrap();
        for n in names {
            let p = if n.ends_with(".sh") && n.starts_with("phoenix_") {
                dir.path().join(SEED_BIN).join(n)
            } else {
                feature_script(dir.path(), n)
            };
            std::fs::write(p, format!("#!/bin/sh\necho {n}\n")).unwrap();
        }
        site.root = dir.path().to_path_buf();
        (site, dir)
    }

    #[test]
    fn clones_are_not_provisioned_again_for_what_they_inherit() {
        let (site, _d) = seed_with_scripts(&[
            "base_setup",
            "nvidia",
            "vllm",
            "trusted_ca",
            "step_cli",
            "phoenix_hypervisor_lxc_vllm.sh",
        ]);
        let (features, apps) = desired_all(&site);
        let names: Vec<String> = features.iter().map(|r| r.address.to_string()).collect();
        // 900 has base_setup; 901 (clone of 900) adds nvidia; 910 (clone of 901) adds vllm;
        // 801 (clone of 911, itself a clone of 901) gets nothing new: vllm came with 911.
        assert!(
            names.contains(&"feature.900.base_setup".to_string()),
            "{names:?}"
        );
        assert!(
            names.contains(&"feature.901.nvidia".to_string()),
            "{names:?}"
        );
        assert!(
            !names.contains(&"feature.901.base_setup".to_string()),
            "{names:?}"
        );
        assert!(names.contains(&"feature.910.vllm".to_string()), "{names:?}");
        assert!(
            !names.iter().any(|n| n.starts_with("feature.801.")),
            "{names:?}"
        );
        assert!(
            names.contains(&"feature.101.trusted_ca".to_string()),
            "{names:?}"
        );
        assert!(
            !names.contains(&"feature.101.base_setup".to_string()),
            "{names:?}"
        );
        // No script in the site: no resource (the lint warns).
        assert!(!names.iter().any(|n| n.ends_with(".step_ca")), "{names:?}");
        let mut app: Vec<String> = apps.iter().map(|r| r.address.to_string()).collect();
        app.sort();
        assert_eq!(app, ["app.801", "app.802", "app.910", "app.911", "app.912"]);
        // Features run in order, the app after them.
        let f = features
            .iter()
            .find(|r| r.address.to_string() == "feature.101.step_cli")
            .unwrap();
        assert!(
            f.depends_on
                .contains(&Address::new(FEATURE, "101.trusted_ca"))
        );
        assert!(f.depends_on.contains(&Address::new("lxc_conf", "101")));
    }

    #[test]
    fn hashes_follow_the_script_and_the_inputs() {
        let (mut site, d) = seed_with_scripts(&["base_setup"]);
        let get = |site: &Site| {
            desired_all(site)
                .0
                .into_iter()
                .find(|r| r.address.to_string() == "feature.900.base_setup")
                .unwrap()
        };
        let a = get(&site);
        std::fs::write(
            feature_script(d.path(), "base_setup"),
            "#!/bin/sh\necho 2\n",
        )
        .unwrap();
        let b = get(&site);
        assert_ne!(a.attrs["script_sha256"], b.attrs["script_sha256"]);
        assert_eq!(a.attrs["inputs_sha256"], b.attrs["inputs_sha256"]);
        site.lxc
            .lxc_configs
            .get_mut("900")
            .unwrap()
            .bootstrap_ca_url = Some("https://ca:9000".into());
        let c = get(&site);
        assert_ne!(b.attrs["inputs_sha256"], c.attrs["inputs_sha256"]);
        assert_eq!(attrs_of(&marker(&c)), Some(c.attrs.clone()));
        assert_eq!(
            update_notes(&["inputs_sha256".into()], &Map::new()),
            ["runs it again: its inputs changed"]
        );
        assert_eq!(
            marker_path(&c.address).unwrap(),
            "/var/lib/phoenix/provisioned/feature-base_setup.json"
        );
    }
}
