//! `swarm.*`: the Docker Swarm on the site's VMs. One kind, `swarm`, whose
//! names say what the object is:
//!
//! | address | from | attributes |
//! |---------|------|------------|
//! | `swarm.cluster` | the VM with `swarm_role: manager` (else `portainer_role: primary`) | `advertise_addr` (forces replacement: a swarm cannot move) |
//! | `swarm.node.<hostname>` | each VM with `swarm_role: worker` (else `portainer_role: agent`), named by the VM's `name` | `role`, `availability`, `labels` (`node_labels`) |
//! | `swarm.network.<name>` | the external networks of the stacks the VMs deploy | `driver` (`overlay`), `attachable`; both force replacement (the Engine cannot change them) |
//! | `swarm.secret.<name>` | the external secrets of those stacks | `version`: `<name>-<10 hex of SHA-256 of the content>` |
//!
//! Secrets are immutable in Docker, so each content is its own object,
//! named by its hash (as kustomize's secret generator does); a new content
//! creates the new version, points the services at it and removes the old
//! one. The value is read from `PHOENIX_SECRET_<NAME>` or
//! `<site>/secrets/<name>` by the provider when it creates a version: it never
//! enters the desired attributes, the state, the plan or the output.
//!
//! Deleting any of them needs `--allow-destroy`: a swarm's objects are shared
//! by running services.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::{Address, DesiredResource, Kind, KindSchema};
use crate::manifest::{Diagnostic, Site};

pub const KIND: &str = "swarm";
pub const CLUSTER: &str = "cluster";
/// The label phoenix puts on the secret versions it creates: the logical name.
pub const SECRET_LABEL: &str = "io.phoenix.secret";

pub static SCHEMA: KindSchema = KindSchema {
    kind: KIND,
    provider: "docker",
    force_new: &["advertise_addr", "driver", "attachable"],
    grow_only: &[],
    sensitive: &[],
    destroy_protected: true,
    keep_on_delete: false,
    update_notes: super::no_notes,
};

/// What a `swarm.*` address names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    Cluster,
    Node(String),
    Network(String),
    Secret(String),
}

impl Object {
    pub fn of(addr: &Address) -> Option<Object> {
        let n = addr.name();
        if n == CLUSTER {
            return Some(Object::Cluster);
        }
        let (what, name) = n.split_once('.')?;
        match what {
            "node" => Some(Object::Node(name.to_string())),
            "network" => Some(Object::Network(name.to_string())),
            "secret" => Some(Object::Secret(name.to_string())),
            _ => None,
        }
    }

    pub fn address(&self) -> Address {
        Address::new(
            KIND,
            match self {
                Object::Cluster => CLUSTER.to_string(),
                Object::Node(n) => format!("node.{n}"),
                Object::Network(n) => format!("network.{n}"),
                Object::Secret(n) => format!("secret.{n}"),
            },
        )
    }
}

/// The swarm's VMs: `(vmid, name, ip)` of the manager and of each worker with its labels.
#[derive(Debug, Clone, Default)]
pub struct Topology {
    pub manager: Option<(u32, String, String)>,
    pub workers: Vec<(u32, String, String, BTreeMap<String, String>)>,
}

fn vm_ip(vm: &crate::manifest::files::VmConfig) -> String {
    vm.network_config
        .as_ref()
        .map(|n| n.ip.split('/').next().unwrap_or_default().to_string())
        .unwrap_or_default()
}

/// Who is the manager and who the workers: the VMs' `swarm_role` (the
/// seed's rootesting branch). A site without it has no swarm for phoenix to
/// manage yet: the Portainer roles alone (the seed's main branch) run
/// standalone engines, and turning them into a swarm is the admin's choice
/// (docs/decisions/0015-swarm-and-portainer.md).
pub fn topology(site: &Site) -> Topology {
    let vms = &site.vms.vms;
    let role = |v: &crate::manifest::files::VmConfig| -> Option<&'static str> {
        match v.swarm_role.as_deref() {
            Some("manager") => Some("manager"),
            Some("worker") => Some("worker"),
            _ => None,
        }
    };
    let mut t = Topology::default();
    for v in vms.iter().filter(|v| !v.is_template.unwrap_or(false)) {
        match role(v) {
            Some("manager") if t.manager.is_none() => {
                t.manager = Some((v.vmid, v.name.clone(), vm_ip(v)));
            }
            Some("worker") => t.workers.push((
                v.vmid,
                v.name.clone(),
                vm_ip(v),
                v.node_labels
                    .as_ref()
                    .map(|l| l.0.clone())
                    .unwrap_or_default(),
            )),
            _ => {}
        }
    }
    t
}

/// The external networks and secrets the deployed stacks' compose files name.
pub fn stack_externals(site: &Site) -> (Vec<String>, Vec<String>, Vec<Diagnostic>) {
    let mut nets = Vec::new();
    let mut secrets = Vec::new();
    let mut diags = Vec::new();
    let deployed: std::collections::BTreeSet<&str> = site
        .vms
        .vms
        .iter()
        .flat_map(|v| v.docker_stacks.iter().map(|s| s.name.as_str()))
        .collect();
    for name in deployed {
        let Some(stack) = site.stacks.get(name) else {
            continue;
        };
        let doc: Value = match serde_yaml_ng::from_str(&stack.compose) {
            Ok(d) => d,
            Err(e) => {
                diags.push(Diagnostic::error(
                    stack.dir.join("docker-compose.yml"),
                    format!("not valid YAML: {e}"),
                ));
                continue;
            }
        };
        for (section, out) in [("networks", &mut nets), ("secrets", &mut secrets)] {
            if let Some(m) = doc[section].as_object() {
                for (key, d) in m {
                    if d["external"] == true || d["external"].is_object() {
                        let real = d["name"].as_str().unwrap_or(key).to_string();
                        if !out.contains(&real) {
                            out.push(real);
                        }
                    }
                }
            }
        }
    }
    nets.sort();
    secrets.sort();
    (nets, secrets, diags)
}

/// `PHOENIX_SECRET_<NAME>`: the name upper-cased, every other character `_`.
pub fn secret_env_name(name: &str) -> String {
    let up: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("PHOENIX_SECRET_{up}")
}

/// The value of a secret: `PHOENIX_SECRET_<NAME>`, else `<root>/secrets/<name>`.
pub fn secret_value(root: &Path, name: &str) -> Option<Vec<u8>> {
    if let Ok(v) = std::env::var(secret_env_name(name))
        && !v.is_empty()
    {
        return Some(v.into_bytes());
    }
    std::fs::read(root.join("secrets").join(name)).ok()
}

/// The version name of a secret content: `<name>-<10 hex>`, at most 64 characters.
pub fn secret_version(name: &str, content: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([0]);
    h.update(content);
    let hex = hex::encode(h.finalize());
    let base: String = name.chars().take(53).collect();
    format!("{base}-{}", &hex[..10])
}

pub struct SwarmKind;

fn res(obj: Object, attrs: Map<String, Value>, deps: Vec<Address>) -> DesiredResource {
    DesiredResource {
        address: obj.address(),
        attrs,
        create: Map::new(),
        depends_on: deps,
    }
}

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

impl Kind for SwarmKind {
    fn schema(&self) -> &'static KindSchema {
        &SCHEMA
    }

    fn lives_in_guest(&self) -> bool {
        true
    }

    fn desired(&self, site: &Site) -> Result<Vec<DesiredResource>, Vec<Diagnostic>> {
        let t = topology(site);
        let Some((mvmid, _mname, mip)) = &t.manager else {
            return Ok(Vec::new());
        };
        let vm_file = site.root.join("etc/phoenix_vm_configs.json");
        if mip.is_empty() || mip == "dhcp" {
            return Err(vec![Diagnostic::error(
                vm_file,
                format!(
                    "the swarm manager (VM {mvmid}) needs a static `network_config.ip`: it is the swarm's advertise address"
                ),
            )]);
        }
        let cluster = Object::Cluster.address();
        let mut out = vec![res(
            Object::Cluster,
            obj(json!({"advertise_addr": mip})),
            vec![Address::new("vm", mvmid.to_string())],
        )];
        for (vmid, name, _ip, labels) in &t.workers {
            out.push(res(
                Object::Node(name.clone()),
                obj(json!({"role": "worker", "availability": "active", "labels": labels})),
                vec![cluster.clone(), Address::new("vm", vmid.to_string())],
            ));
        }
        let (nets, secrets, diags) = stack_externals(site);
        for n in nets {
            out.push(res(
                Object::Network(n),
                obj(json!({"driver": "overlay", "attachable": true})),
                vec![cluster.clone()],
            ));
        }
        // Without its value (a CI plan, `validate`), a secret is planned
        // without a version: created only by an apply that has the value,
        // never rotated by one that has not (observe() says so).
        for s in secrets {
            let attrs = match secret_value(&site.root, &s) {
                Some(v) => obj(json!({"version": secret_version(&s, &v)})),
                None => Map::new(),
            };
            out.push(res(Object::Secret(s.clone()), attrs, vec![cluster.clone()]));
        }
        if diags.iter().any(Diagnostic::is_error) {
            return Err(diags);
        }
        Ok(out)
    }

    fn observe(&self, desired: &DesiredResource, live: Option<&super::LiveObject>) -> Vec<String> {
        if let Some(Object::Secret(name)) = Object::of(&desired.address)
            && !desired.attrs.contains_key("version")
        {
            return vec![match live {
                None => format!(
                    "no value is set ({} or secrets/{name}): the apply that creates it needs one",
                    secret_env_name(&name)
                ),
                Some(_) => format!(
                    "no value is set ({}): whether it changed is not known, and it is left as it is",
                    secret_env_name(&name)
                ),
            }];
        }
        let Some(live) = live else {
            return Vec::new();
        };
        // Nodes that left or died stay listed by the manager until removed.
        live.remote["stale"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|id| {
                format!("a stale node entry `{id}` (down) has the same hostname: remove it with `docker node rm {id}`")
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip() {
        for o in [
            Object::Cluster,
            Object::Node("drphoenix".into()),
            Object::Network("traefik-public".into()),
            Object::Secret("db_password".into()),
        ] {
            assert_eq!(Object::of(&o.address()), Some(o.clone()));
        }
        assert_eq!(Object::of(&Address::new(KIND, "volume.x")), None);
    }

    #[test]
    fn secret_versions_follow_the_content() {
        let a = secret_version("db_password", b"one");
        assert!(a.starts_with("db_password-") && a.len() == "db_password-".len() + 10);
        assert_eq!(a, secret_version("db_password", b"one"));
        assert_ne!(a, secret_version("db_password", b"two"));
        assert!(secret_version(&"x".repeat(80), b"v").len() <= 64);
        assert_eq!(
            secret_env_name("db-pass.word"),
            "PHOENIX_SECRET_DB_PASS_WORD"
        );
    }

    #[test]
    fn swarm_roles_make_the_swarm() {
        let mut site = crate::render::names::tests::seed();
        // The seed's main branch has no swarm roles: no swarm.
        assert!(SwarmKind.desired(&site).unwrap().is_empty());
        // rootesting's roles: 1001 manager, 1002 worker with labels.
        for vm in &mut site.vms.vms {
            match vm.vmid {
                1001 => vm.swarm_role = Some("manager".into()),
                1002 => {
                    vm.swarm_role = Some("worker".into());
                    vm.node_labels = Some(crate::manifest::files::NodeLabels(
                        [("gpu".to_string(), "false".to_string())].into(),
                    ));
                }
                _ => {}
            }
        }
        let t = topology(&site);
        assert_eq!(t.manager.as_ref().map(|m| m.0), Some(1001));
        let d = SwarmKind.desired(&site).unwrap();
        let addrs: Vec<String> = d.iter().map(|r| r.address.to_string()).collect();
        assert_eq!(addrs, ["swarm.cluster", "swarm.node.drphoenix"]);
        assert_eq!(d[0].attrs["advertise_addr"], "10.0.0.111");
        assert_eq!(d[1].attrs["labels"], json!({"gpu": "false"}));
        let deps: Vec<String> = d[1].depends_on.iter().map(ToString::to_string).collect();
        assert_eq!(deps, ["swarm.cluster", "vm.1002"]);
    }
}
