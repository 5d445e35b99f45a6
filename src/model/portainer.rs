//! `portainer.*`: the Portainer of a swarm site. One kind, `portainer`, whose
//! names say what the object is:
//!
//! | address | from | attributes |
//! |---------|------|------------|
//! | `portainer.admin` | `portainer_api.admin_user` (default `admin`) | `username`, `password` (sensitive), `api_key` (`valid`: phoenix holds a working key) |
//! | `portainer.endpoint.<name>` | each VM with `portainer_role: agent`, named by `portainer_environment_name` (else the VM name) | `url`, `tls`, `tls_skip_verify`, `tls_skip_client_verify`, `group_id`; all updated in place |
//! | `portainer.stack.<name>` | the `docker_stacks` of the agent VMs | `endpoint` (forces replacement), `compose` (the rendered file), `env`, `secret_env` (sensitive), `services` (per service: `image`, `replicas`, `env`), `secrets` (the version each external swarm secret is deployed as) |
//!
//! Only a site with a swarm (`swarm_role: manager`) and a Portainer
//! (`portainer_role`) has them: stacks are deployed as swarm stacks, and the
//! seed's main branch (standalone engines, compose-file stacks) is planned as
//! before (docs/decisions/0019-portainer.md).
//!
//! The admin password comes from `PHOENIX_PORTAINER_PASSWORD`, the file named
//! by `PHOENIX_PORTAINER_PASSWORD_FILE`, or (with a lint warning) the seed's
//! `portainer_api.admin_password`. It is a sensitive attribute: the plan shows
//! `(sensitive)` and the state keeps a keyed fingerprint.
//!
//! A stack's variables whose names look secret (`DB_PASSWORD`, `API_TOKEN`,
//! ...) are never written into the rendered file: they stay `${NAME}` there
//! and reach Portainer as the stack's environment, which substitutes them at
//! deploy time. Their values come from `PHOENIX_SECRET_<NAME>`,
//! `<site>/secrets/<name>`, or the stack's `phoenix.json`.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::{Address, DesiredResource, Kind, KindSchema, LiveObject};
use crate::manifest::files::{Stack, VmConfig};
use crate::manifest::lint::looks_secret;
use crate::manifest::{Diagnostic, Site};

pub const KIND: &str = "portainer";
pub const ADMIN: &str = "admin";
/// In a stack's `create`: its secret variables that have no value (no
/// `PHOENIX_SECRET_<NAME>`, no `secrets/<name>`, empty in the manifest).
pub const SECRET_ENV_MISSING: &str = "secret_env_missing";
/// The label `docker stack deploy` (and Portainer) puts on a stack's services.
pub const NAMESPACE_LABEL: &str = "com.docker.stack.namespace";
/// Portainer's agent listens here unless the manifests say otherwise.
pub const AGENT_PORT: u16 = 9001;

pub static SCHEMA: KindSchema = KindSchema {
    kind: KIND,
    provider: "portainer",
    // An environment's URL, TLS flags and group change in place
    // (`PUT /api/endpoints/{id}`): replacing it would take its stacks with it.
    // A stack cannot move to another environment's swarm by an update.
    force_new: &["endpoint"],
    grow_only: &[],
    sensitive: &["password", "secret_env"],
    // Removing an environment removes its stacks; removing a stack its services.
    destroy_protected: true,
    keep_on_delete: false,
    update_notes: super::no_notes,
};

/// What a `portainer.*` address names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    Admin,
    Endpoint(String),
    Stack(String),
}

impl Object {
    pub fn of(addr: &Address) -> Option<Object> {
        let n = addr.name();
        if n == ADMIN {
            return Some(Object::Admin);
        }
        let (what, name) = n.split_once('.')?;
        match what {
            "endpoint" => Some(Object::Endpoint(name.to_string())),
            "stack" => Some(Object::Stack(name.to_string())),
            _ => None,
        }
    }

    pub fn address(&self) -> Address {
        Address::new(
            KIND,
            match self {
                Object::Admin => ADMIN.to_string(),
                Object::Endpoint(n) => format!("endpoint.{n}"),
                Object::Stack(n) => format!("stack.{n}"),
            },
        )
    }
}

/// The admin user's name: `portainer_api.admin_user`, else `admin`.
pub fn admin_user(site: &Site) -> String {
    site.hypervisor
        .portainer_api
        .as_ref()
        .map(|a| a.admin_user.clone())
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| ADMIN.to_string())
}

/// Where the admin password came from (the lint warns about the manifest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordSource {
    Env,
    File,
    Manifest,
}

/// The admin password: `PHOENIX_PORTAINER_PASSWORD`, the file named by
/// `PHOENIX_PORTAINER_PASSWORD_FILE` (trailing newline dropped), else the
/// seed's clear-text `portainer_api.admin_password`.
pub fn admin_password(site: Option<&Site>) -> Result<Option<(String, PasswordSource)>, String> {
    if let Ok(v) = std::env::var("PHOENIX_PORTAINER_PASSWORD")
        && !v.is_empty()
    {
        return Ok(Some((v, PasswordSource::Env)));
    }
    if let Ok(f) = std::env::var("PHOENIX_PORTAINER_PASSWORD_FILE")
        && !f.trim().is_empty()
    {
        let v = std::fs::read_to_string(&f)
            .map_err(|e| format!("cannot read PHOENIX_PORTAINER_PASSWORD_FILE {f}: {e}"))?;
        let v = v.trim_end_matches(['\n', '\r']).to_string();
        if v.is_empty() {
            return Err(format!("PHOENIX_PORTAINER_PASSWORD_FILE {f} is empty"));
        }
        return Ok(Some((v, PasswordSource::File)));
    }
    Ok(site
        .and_then(|s| s.hypervisor.portainer_api.as_ref())
        .and_then(|a| a.admin_password.clone())
        .filter(|p| !p.is_empty())
        .map(|p| (p, PasswordSource::Manifest)))
}

/// Whether phoenix manages this site's Portainer: a swarm and a Portainer role.
pub fn managed(site: &Site) -> bool {
    super::swarm::topology(site).manager.is_some()
        && site
            .vms
            .vms
            .iter()
            .any(|v| matches!(v.portainer_role.as_deref(), Some("primary") | Some("agent")))
}

fn vm_ip(vm: &VmConfig) -> String {
    vm.network_config
        .as_ref()
        .map(|n| n.ip.split('/').next().unwrap_or_default().to_string())
        .unwrap_or_default()
}

/// Where Portainer answers when `PHOENIX_PORTAINER_URL` does not say: its
/// HTTPS port on the primary VM's static address.
pub fn default_url(site: &Site) -> Option<String> {
    let ip = site
        .vms
        .vms
        .iter()
        .find(|v| v.portainer_role.as_deref() == Some("primary"))
        .map(vm_ip)
        .filter(|ip| !ip.is_empty() && ip != "dhcp")?;
    Some(format!("https://{ip}:9443"))
}

/// The agent environment of a VM: `(name, url)`.
pub fn endpoint_of(site: &Site, vm: &VmConfig) -> (String, String) {
    let name = vm
        .portainer_environment_name
        .clone()
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| vm.name.clone());
    let host = vm
        .portainer_agent_hostname
        .clone()
        .filter(|h| !h.trim().is_empty())
        .unwrap_or_else(|| vm_ip(vm));
    let port = site
        .hypervisor
        .network
        .portainer_agent_port
        .unwrap_or(AGENT_PORT);
    (name, format!("tcp://{host}:{port}"))
}

/// A stack rendered for one environment.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// The compose file as deployed: plain variables substituted, Traefik labels in `deploy.labels`.
    pub compose: String,
    /// Plain variables (also sent as the stack's environment).
    pub env: BTreeMap<String, String>,
    /// Variables whose names look secret: left as `${NAME}` in the file.
    pub secret_env: BTreeMap<String, String>,
    /// Per service: `image`, `replicas` (a number, or `global`), `env` (resolved, non-secret entries).
    pub services: Map<String, Value>,
    /// The external networks and secrets it names (swarm objects it needs).
    pub networks: Vec<String>,
    pub secrets: Vec<String>,
    /// The version each external secret is deployed as, for the secrets whose value is set.
    pub secret_versions: BTreeMap<String, String>,
}

/// `${NAME}`, `${NAME:-default}`, `${NAME-default}` and `$NAME` replaced from
/// `vars`; anything else (unknown names, `$$`) is left for the deployer.
pub fn substitute(text: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    while i < b.len() {
        if b[i] != b'$' {
            let next = text[i..].find('$').map_or(text.len(), |n| i + n);
            out.push_str(&text[i..next]);
            i = next;
            continue;
        }
        if b.get(i + 1) == Some(&b'$') {
            out.push_str("$$");
            i += 2;
            continue;
        }
        if b.get(i + 1) == Some(&b'{')
            && let Some(close) = text[i + 2..].find('}')
        {
            let inner = &text[i + 2..i + 2 + close];
            let (name, default) = match inner.find([':', '-']) {
                Some(p) => {
                    let rest = &inner[p..];
                    let d = rest.strip_prefix(":-").or_else(|| rest.strip_prefix('-'));
                    (&inner[..p], d)
                }
                None => (inner, None),
            };
            match (vars.get(name), default) {
                (Some(v), _) if !v.is_empty() || default.is_none() => out.push_str(v),
                (Some(_), Some(d)) if inner[name.len()..].starts_with(":-") => out.push_str(d),
                (Some(v), _) => out.push_str(v),
                _ => out.push_str(&text[i..i + 3 + close]),
            }
            i += 3 + close;
            continue;
        }
        let end = (i + 1..b.len()).find(|&j| !ident(b[j])).unwrap_or(b.len());
        match vars.get(&text[i + 1..end]) {
            Some(v) if end > i + 1 => out.push_str(v),
            _ => out.push_str(&text[i..end]),
        }
        i = end.max(i + 1);
    }
    out
}

fn yaml_str(v: &serde_yaml_ng::Value) -> Option<String> {
    match v {
        serde_yaml_ng::Value::String(s) => Some(s.clone()),
        serde_yaml_ng::Value::Number(n) => Some(n.to_string()),
        serde_yaml_ng::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A compose `environment` (list of `K=V` or a map) as pairs.
fn environment(v: &serde_yaml_ng::Value) -> Vec<(String, Option<String>)> {
    match v {
        serde_yaml_ng::Value::Sequence(s) => s
            .iter()
            .filter_map(yaml_str)
            .map(|e| match e.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(v.to_string())),
                None => (e, None),
            })
            .collect(),
        serde_yaml_ng::Value::Mapping(m) => m
            .iter()
            .filter_map(|(k, v)| Some((yaml_str(k)?, yaml_str(v))))
            .collect(),
        _ => Vec::new(),
    }
}

/// The value of a stack variable: `PHOENIX_SECRET_<NAME>`, `<site>/secrets/<name>`
/// for secret-looking names, else the manifest's.
fn variable_value(site_root: &std::path::Path, name: &str, manifest: &str) -> String {
    if looks_secret(name)
        && let Some(v) = super::swarm::secret_value(site_root, name)
    {
        return String::from_utf8_lossy(&v)
            .trim_end_matches(['\n', '\r'])
            .to_string();
    }
    manifest.to_string()
}

/// Render a stack for an environment of its `phoenix.json`.
pub fn render(
    site_root: &std::path::Path,
    stack: &Stack,
    env_name: &str,
) -> Result<Rendered, String> {
    let environment_def = stack
        .manifest
        .environments
        .get(env_name)
        .cloned()
        .unwrap_or_default();
    let mut env = BTreeMap::new();
    let mut secret_env = BTreeMap::new();
    // The environment's env file first (the seed keeps API_PORT there), then
    // phoenix.json's variables, which win.
    let from_file = stack
        .env_file(env_name)
        .map(|(_, f)| f.entries.iter().map(|(n, v, _)| (n, v)).collect::<Vec<_>>())
        .unwrap_or_default();
    let from_manifest = environment_def
        .variables
        .iter()
        .map(|v| (&v.name, &v.value));
    for (name, manifest_value) in from_file.into_iter().chain(from_manifest) {
        let value = variable_value(site_root, name, manifest_value);
        if looks_secret(name) {
            env.remove(name);
            secret_env.insert(name.clone(), value);
        } else {
            secret_env.remove(name);
            env.insert(name.clone(), value);
        }
    }
    let text = substitute(&stack.compose, &env);
    let mut doc: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&text).map_err(|e| format!("not valid YAML: {e}"))?;
    let services = doc
        .get_mut("services")
        .and_then(serde_yaml_ng::Value::as_mapping_mut)
        .ok_or("it has no `services`")?;
    for (svc, def) in &environment_def.services {
        if def.traefik_labels.is_empty() {
            continue;
        }
        let s = services
            .get_mut(svc.as_str())
            .and_then(serde_yaml_ng::Value::as_mapping_mut)
            .ok_or_else(|| {
                format!("phoenix.json gives Traefik labels to service `{svc}`, which the compose file does not define")
            })?;
        let deploy = s
            .entry("deploy".into())
            .or_insert_with(|| serde_yaml_ng::Value::Mapping(Default::default()));
        let deploy = deploy
            .as_mapping_mut()
            .ok_or_else(|| format!("service `{svc}`: `deploy` is not a mapping"))?;
        let labels = deploy
            .entry("labels".into())
            .or_insert_with(|| serde_yaml_ng::Value::Sequence(Vec::new()));
        match labels {
            serde_yaml_ng::Value::Sequence(seq) => {
                for l in &def.traefik_labels {
                    let l = serde_yaml_ng::Value::String(l.clone());
                    if !seq.contains(&l) {
                        seq.push(l);
                    }
                }
            }
            serde_yaml_ng::Value::Mapping(m) => {
                for l in &def.traefik_labels {
                    let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
                    m.insert(k.into(), v.into());
                }
            }
            _ => {
                return Err(format!(
                    "service `{svc}`: `deploy.labels` is neither a list nor a mapping"
                ));
            }
        }
    }
    let mut summary = Map::new();
    for (name, def) in services.iter() {
        let Some(name) = yaml_str(name) else { continue };
        let image = def.get("image").and_then(yaml_str).unwrap_or_default();
        let deploy = def.get("deploy");
        let global = deploy
            .and_then(|d| d.get("mode"))
            .and_then(yaml_str)
            .is_some_and(|m| m == "global");
        let replicas = if global {
            json!("global")
        } else {
            json!(
                deploy
                    .and_then(|d| d.get("replicas"))
                    .and_then(serde_yaml_ng::Value::as_u64)
                    .unwrap_or(1)
            )
        };
        let env: BTreeMap<String, String> = def
            .get("environment")
            .map(environment)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(k, v)| Some((k, v?)))
            .filter(|(k, v)| !looks_secret(k) && !v.contains('$'))
            .collect();
        summary.insert(
            name,
            json!({"image": image, "replicas": replicas, "env": env}),
        );
    }
    canonical_secrets(&mut doc);
    let compose = serde_yaml_ng::to_string(&doc).map_err(|e| format!("cannot write it: {e}"))?;
    let externals = |section: &str| -> Vec<String> {
        let mut out: Vec<String> = doc
            .get(section)
            .and_then(serde_yaml_ng::Value::as_mapping)
            .into_iter()
            .flatten()
            .filter(|(_, d)| is_external(d))
            .filter_map(|(k, d)| d.get("name").and_then(yaml_str).or_else(|| yaml_str(k)))
            .collect();
        out.sort();
        out.dedup();
        out
    };
    let secrets = externals("secrets");
    let secret_versions: BTreeMap<String, String> = secrets
        .iter()
        .filter_map(|logical| {
            let v = super::swarm::secret_value(site_root, logical)?;
            Some((logical.clone(), super::swarm::secret_version(logical, &v)))
        })
        .collect();
    Ok(Rendered {
        compose,
        env,
        secret_env,
        services: summary,
        networks: externals("networks"),
        secrets,
        secret_versions,
    })
}

fn is_external(d: &serde_yaml_ng::Value) -> bool {
    d.get("external")
        .is_some_and(|e| e.as_bool() == Some(true) || e.is_mapping())
}

/// Every external secret written `external: true` with its `name` (the
/// logical name phoenix versions): the one form [`pin_secret_versions`] and
/// [`unpin_secret_versions`] turn into each other exactly.
fn canonical_secrets(doc: &mut serde_yaml_ng::Value) {
    let Some(decl) = doc
        .get_mut("secrets")
        .and_then(serde_yaml_ng::Value::as_mapping_mut)
    else {
        return;
    };
    for (key, d) in decl.iter_mut() {
        if !is_external(d) {
            continue;
        }
        let logical = d
            .get("name")
            .and_then(yaml_str)
            .or_else(|| d.get("external")?.get("name").and_then(yaml_str))
            .or_else(|| yaml_str(key))
            .unwrap_or_default();
        if let Some(m) = d.as_mapping_mut() {
            m.insert("external".into(), true.into());
            m.insert("name".into(), logical.into());
        }
    }
}

/// Point a rendered file's external secrets at their versions (`db_password`
/// -> `db_password-1a2b3c4d5e`): `docker stack deploy` needs names that exist,
/// and phoenix's secrets exist only as versions (`swarm.secret`). Errors name
/// the secrets without a version (their value was not set at plan time).
pub fn pin_secret_versions(
    compose: &str,
    versions: &BTreeMap<String, String>,
) -> Result<String, String> {
    let mut doc: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(compose).map_err(|e| format!("not valid YAML: {e}"))?;
    let mut missing = Vec::new();
    if let Some(decl) = doc
        .get_mut("secrets")
        .and_then(serde_yaml_ng::Value::as_mapping_mut)
    {
        for (_, d) in decl.iter_mut() {
            let Some(logical) = d.get("name").and_then(yaml_str).filter(|_| is_external(d)) else {
                continue;
            };
            match (versions.get(&logical), d.as_mapping_mut()) {
                (Some(v), Some(m)) => {
                    m.insert("name".into(), v.clone().into());
                }
                _ => missing.push(logical),
            }
        }
    }
    if !missing.is_empty() {
        return Err(format!(
            "it uses the swarm secret(s) {} whose value was not set when the plan was made\nhelp: set {} and plan again",
            missing.join(", "),
            missing
                .iter()
                .map(|m| super::swarm::secret_env_name(m))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    serde_yaml_ng::to_string(&doc).map_err(|e| format!("cannot write it: {e}"))
}

/// A file read back from Portainer: the file as phoenix rendered it (secret
/// versions back to their logical names) and the versions it names. A file
/// that is not YAML or names no versions is returned as it is.
pub fn unpin_secret_versions(compose: &str) -> (String, BTreeMap<String, String>) {
    let mut versions = BTreeMap::new();
    let Ok(mut doc) = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(compose) else {
        return (compose.to_string(), versions);
    };
    let Some(decl) = doc
        .get_mut("secrets")
        .and_then(serde_yaml_ng::Value::as_mapping_mut)
    else {
        return (compose.to_string(), versions);
    };
    for (key, d) in decl.iter_mut() {
        let Some(name) = d.get("name").and_then(yaml_str).filter(|_| is_external(d)) else {
            continue;
        };
        let Some((base, hash)) = name.rsplit_once('-') else {
            continue;
        };
        if hash.len() != 10 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        // Versions keep 53 characters of a longer name: the key is the rest.
        let logical = match yaml_str(key) {
            Some(k) if base.chars().count() == 53 && k.starts_with(base) => k,
            _ => base.to_string(),
        };
        if let Some(m) = d.as_mapping_mut() {
            m.insert("name".into(), logical.clone().into());
        }
        versions.insert(logical, name);
    }
    if versions.is_empty() {
        return (compose.to_string(), versions);
    }
    match serde_yaml_ng::to_string(&doc) {
        Ok(text) => (text, versions),
        Err(_) => (compose.to_string(), BTreeMap::new()),
    }
}

pub struct PortainerKind;

fn res(obj: Object, attrs: Value, deps: Vec<Address>) -> DesiredResource {
    DesiredResource {
        address: obj.address(),
        attrs: attrs.as_object().cloned().unwrap_or_default(),
        create: Map::new(),
        depends_on: deps,
    }
}

impl Kind for PortainerKind {
    fn schema(&self) -> &'static KindSchema {
        &SCHEMA
    }

    /// An object that exists already (an admin initialised when Portainer was
    /// installed, an environment added in the UI) is verified, not adopted by hand.
    fn verifies_existing(&self) -> bool {
        true
    }

    fn lives_in_guest(&self) -> bool {
        true
    }

    /// Plans need no password or secret values; say early when the apply will.
    fn observe(&self, desired: &DesiredResource, live: Option<&LiveObject>) -> Vec<String> {
        if let Some(missing) = desired
            .create
            .get(SECRET_ENV_MISSING)
            .and_then(Value::as_array)
        {
            let names: Vec<String> = missing
                .iter()
                .filter_map(Value::as_str)
                .map(|n| format!("{n} ({})", super::swarm::secret_env_name(n)))
                .collect();
            return vec![format!(
                "no value is set for {}: whether the secret variables changed is not known, and an apply that deploys this stack needs them",
                names.join(", ")
            )];
        }
        let needs_login = Object::of(&desired.address) == Some(Object::Admin)
            && !desired.attrs.contains_key("password")
            && live.is_none_or(|l| l.attrs.get("api_key") != Some(&json!("valid")));
        if needs_login {
            vec!["the apply needs the admin password (PHOENIX_PORTAINER_PASSWORD or PHOENIX_PORTAINER_PASSWORD_FILE): none is set".into()]
        } else {
            Vec::new()
        }
    }

    fn desired(&self, site: &Site) -> Result<Vec<DesiredResource>, Vec<Diagnostic>> {
        if !managed(site) {
            return Ok(Vec::new());
        }
        let vm_file = site.root.join("etc/phoenix_vm_configs.json");
        let hv_file = site.root.join("etc/phoenix_hypervisor_config.json");
        let mut diags = Vec::new();
        let mut out = Vec::new();
        let topo = super::swarm::topology(site);
        let admin = Object::Admin.address();
        let vms: Vec<&VmConfig> = site
            .vms
            .vms
            .iter()
            .filter(|v| !v.is_template.unwrap_or(false))
            .collect();
        let primary = vms
            .iter()
            .find(|v| v.portainer_role.as_deref() == Some("primary"));
        // The password is needed to initialise the admin or make a key, not to
        // plan: without it the admin is planned without `password` and the
        // apply that needs it says so (validate and CI plans need no secret).
        let mut admin_attrs = json!({"username": admin_user(site), "api_key": "valid"});
        match admin_password(Some(site)) {
            Ok(Some((pw, _))) => admin_attrs["password"] = Value::String(pw),
            Ok(None) => {}
            Err(e) => diags.push(Diagnostic::error(hv_file.clone(), e)),
        }
        out.push(res(
            Object::Admin,
            admin_attrs,
            primary
                .map(|v| vec![Address::new("vm", v.vmid.to_string())])
                .unwrap_or_default(),
        ));
        let mut stacks_seen: BTreeMap<String, u32> = BTreeMap::new();
        for vm in vms
            .iter()
            .filter(|v| v.portainer_role.as_deref() == Some("agent"))
        {
            let (name, url) = endpoint_of(site, vm);
            let node_dep = match &topo.manager {
                Some(m) if m.0 == vm.vmid => Object::cluster_address(),
                _ if topo.workers.iter().any(|w| w.0 == vm.vmid) => {
                    Address::new(super::swarm::KIND, format!("node.{}", vm.name))
                }
                _ => Address::new("vm", vm.vmid.to_string()),
            };
            out.push(res(
                Object::Endpoint(name.clone()),
                json!({"url": url, "tls": true, "tls_skip_verify": true,
                       "tls_skip_client_verify": true, "group_id": 1}),
                vec![admin.clone(), node_dep],
            ));
            for r in &vm.docker_stacks {
                if let Some(other) = stacks_seen.insert(r.name.clone(), vm.vmid) {
                    diags.push(Diagnostic::error(
                        vm_file.clone(),
                        format!(
                            "stack `{}` is deployed by VM {other} and VM {}: a swarm stack exists once",
                            r.name, vm.vmid
                        ),
                    ));
                    continue;
                }
                let Some(stack) = site.stacks.get(&r.name) else {
                    // The lint names stacks missing from stacks/.
                    continue;
                };
                match render(&site.root, stack, r.environment()) {
                    Ok(rd) => {
                        let mut deps = vec![Object::Endpoint(name.clone()).address()];
                        deps.extend(
                            rd.networks
                                .iter()
                                .map(|n| super::swarm::Object::Network(n.clone()).address()),
                        );
                        deps.extend(
                            rd.secrets
                                .iter()
                                .map(|s| super::swarm::Object::Secret(s.clone()).address()),
                        );
                        // A secret variable with no value anywhere (a CI plan) makes
                        // the whole `secret_env` unknown: not compared, and the
                        // apply that deploys the stack asks for it.
                        let missing: Vec<&String> = rd
                            .secret_env
                            .iter()
                            .filter(|(_, v)| v.is_empty())
                            .map(|(k, _)| k)
                            .collect();
                        let mut stack = res(
                            Object::Stack(r.name.clone()),
                            json!({"endpoint": name, "compose": rd.compose, "env": rd.env,
                                   "secret_env": rd.secret_env, "services": rd.services,
                                   "secrets": rd.secret_versions}),
                            deps,
                        );
                        if !missing.is_empty() {
                            stack.attrs.remove("secret_env");
                            stack
                                .create
                                .insert(SECRET_ENV_MISSING.into(), json!(missing));
                        }
                        out.push(stack);
                    }
                    Err(e) => diags.push(Diagnostic::error(
                        stack.dir.join("docker-compose.yml"),
                        format!("stack `{}`: {e}", r.name),
                    )),
                }
            }
        }
        if diags.iter().any(Diagnostic::is_error) {
            return Err(diags);
        }
        Ok(out)
    }
}

impl Object {
    fn cluster_address() -> Address {
        super::swarm::Object::Cluster.address()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip() {
        for o in [
            Object::Admin,
            Object::Endpoint("drphoenix".into()),
            Object::Stack("qdrant_service".into()),
        ] {
            assert_eq!(Object::of(&o.address()), Some(o.clone()));
        }
        assert_eq!(Object::of(&Address::new(KIND, "user.x")), None);
    }

    #[test]
    fn substitution_follows_compose() {
        let vars: BTreeMap<String, String> = [
            ("PORT".to_string(), "8000".to_string()),
            ("EMPTY".to_string(), String::new()),
        ]
        .into();
        assert_eq!(substitute("a ${PORT}:$PORT b", &vars), "a 8000:8000 b");
        assert_eq!(substitute("${EMPTY:-d} ${EMPTY-d}", &vars), "d ");
        assert_eq!(
            substitute("${NOPE} $NOPE $$PORT", &vars),
            "${NOPE} $NOPE $$PORT"
        );
        assert_eq!(substitute("${MISSING:-x}", &vars), "${MISSING:-x}");
        assert_eq!(substitute("trailing $", &vars), "trailing $");
    }

    fn stack(compose: &str, manifest: Value) -> Stack {
        Stack {
            name: "web".into(),
            dir: "/nonexistent/stacks/web".into(),
            manifest: serde_json::from_value(manifest).unwrap(),
            compose: compose.into(),
            env_files: Default::default(),
        }
    }

    #[test]
    fn secrets_are_pinned_to_versions_and_read_back_as_rendered() {
        let long = "k".repeat(60);
        let s = stack(
            &format!(
                "services:\n  app:\n    image: x\n    secrets: [tok, old, {long}]\nsecrets:\n  tok:\n    external: true\n  old:\n    external:\n      name: legacy_tok\n  {long}:\n    external: true\n  local:\n    file: ./x\n"
            ),
            json!({"environments": {}}),
        );
        let r = render(std::path::Path::new("/nonexistent"), &s, "production").unwrap();
        assert!(r.compose.contains("name: legacy_tok"), "{}", r.compose);
        assert!(r.secret_versions.is_empty(), "no values are set here");
        let versions: BTreeMap<String, String> = ["tok", "legacy_tok", long.as_str()]
            .into_iter()
            .map(|n| (n.to_string(), super::super::swarm::secret_version(n, b"v")))
            .collect();
        let pinned = pin_secret_versions(&r.compose, &versions).unwrap();
        assert!(
            pinned.contains(&format!("name: {}", versions["tok"])),
            "{pinned}"
        );
        assert!(pinned.contains("file: ./x"), "{pinned}");
        let (back, found) = unpin_secret_versions(&pinned);
        assert_eq!(back, r.compose);
        assert_eq!(found, versions);
        let missing = pin_secret_versions(&r.compose, &BTreeMap::new()).unwrap_err();
        assert!(missing.contains("PHOENIX_SECRET_TOK"), "{missing}");
        // A file deployed by hand (no versions) reads back as it is.
        assert_eq!(unpin_secret_versions(&r.compose).0, r.compose);
    }

    #[test]
    fn env_files_give_variables_below_the_manifests_and_secrets_stay_out() {
        let mut s = stack(
            "services:\n  app:\n    image: app:1\n    ports:\n      - \"${API_PORT}:${API_PORT}\"\n",
            json!({"environments": {"production": {
                "variables": [{"name": "MODE", "value": "from-manifest"}]}}}),
        );
        s.env_files.insert(
            "prod".into(),
            crate::manifest::files::EnvFile::parse(
                "# comment\n\nAPI_PORT=8000\nexport MODE=from-file\nDATABASE_PASS='clear-text'\n",
            )
            .unwrap(),
        );
        s.env_files.insert(
            "test".into(),
            crate::manifest::files::EnvFile::parse("API_PORT=8001\n").unwrap(),
        );
        let r = render(std::path::Path::new("/nonexistent"), &s, "production").unwrap();
        assert!(r.compose.contains("8000:8000"), "{}", r.compose);
        assert_eq!(r.env["API_PORT"], "8000");
        assert_eq!(r.env["MODE"], "from-manifest");
        assert_eq!(r.secret_env["DATABASE_PASS"], "clear-text");
        assert!(!r.env.contains_key("DATABASE_PASS"));
        // `testing` finds the seed's short name; an environment without a file has none.
        assert_eq!(s.env_file("testing").map(|f| f.0), Some("test"));
        assert_eq!(s.env_file("staging"), None);
        for (bad, line) in [("API_PORT\n", 1), ("# ok\n1X=2\n", 2), ("A-B=1\n", 1)] {
            assert_eq!(
                crate::manifest::files::EnvFile::parse(bad).map_err(|e| e.0),
                Err(line),
                "{bad}"
            );
        }
    }

    #[test]
    fn rendering_injects_labels_and_keeps_secrets_out_of_the_file() {
        let s = stack(
            "services:\n  app:\n    image: app:${TAG}\n    environment:\n      - MODE=${MODE}\n      - DB_PASSWORD=${DB_PASSWORD}\n    deploy:\n      replicas: 2\nnetworks:\n  pub:\n    external: true\n    name: traefik-public\n",
            json!({"environments": {"production": {
                "variables": [{"name": "TAG", "value": "1.2"}, {"name": "MODE", "value": "prod"},
                              {"name": "DB_PASSWORD", "value": "hunter2-long-enough"}],
                "services": {"app": {"traefik_labels": ["traefik.enable=true"]}}}}}),
        );
        let r = render(std::path::Path::new("/nonexistent"), &s, "production").unwrap();
        assert!(r.compose.contains("image: app:1.2"), "{}", r.compose);
        assert!(r.compose.contains("${DB_PASSWORD}"), "{}", r.compose);
        assert!(!r.compose.contains("hunter2"));
        assert!(r.compose.contains("- traefik.enable=true"), "{}", r.compose);
        assert_eq!(r.secret_env["DB_PASSWORD"], "hunter2-long-enough");
        assert!(!r.env.contains_key("DB_PASSWORD"));
        assert_eq!(
            Value::Object(r.services.clone()),
            json!({"app": {"image": "app:1.2", "replicas": 2, "env": {"MODE": "prod"}}})
        );
        assert_eq!(r.networks, ["traefik-public"]);
        // Labels for a service the file lacks are an error, not a silent no-op.
        let bad = stack(
            "services:\n  app:\n    image: x\n",
            json!({"environments": {"production": {"services": {"db": {"traefik_labels": ["a=b"]}}}}}),
        );
        assert!(render(std::path::Path::new("/x"), &bad, "production").is_err());
    }

    #[test]
    fn only_swarm_sites_with_portainer_get_portainer() {
        let mut site = crate::render::names::tests::seed();
        assert!(PortainerKind.desired(&site).unwrap().is_empty());
        for vm in &mut site.vms.vms {
            if vm.vmid == 1001 {
                vm.swarm_role = Some("manager".into());
            }
            if vm.vmid == 1002 {
                vm.swarm_role = Some("worker".into());
            }
        }
        let d = PortainerKind.desired(&site).unwrap();
        let addrs: Vec<String> = d.iter().map(|r| r.address.to_string()).collect();
        assert!(addrs.contains(&"portainer.admin".to_string()), "{addrs:?}");
        assert!(addrs.contains(&"portainer.endpoint.drphoenix".to_string()));
        let ep = d
            .iter()
            .find(|r| r.address.to_string() == "portainer.endpoint.drphoenix")
            .unwrap();
        assert_eq!(
            ep.attrs["url"],
            "tcp://portainer-agent.internal.thinkheads.ai:9001"
        );
        assert_eq!(ep.attrs["tls"], true);
    }
}
