//! Proxmox VE: one [`PveApi`] interface (paths as under `/api2/json`), the
//! HTTPS transport in [`client`], task polling in [`task`], and one file per
//! resource kind ([`lxc`]).

pub mod client;
pub mod firewall;
pub mod guest;
pub mod lxc;
pub mod pvesh;
pub mod snapshot;
pub mod storage;
pub mod task;
pub mod template;
pub mod vm;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::OnceCell;

use super::{BoxFuture, ProviderError, ResourceProvider};
use crate::manifest::Site;

/// The kinds this provider serves.
pub const KINDS: &[&str] = &[
    crate::model::lxc::KIND,
    crate::model::vm::KIND,
    crate::model::firewall::KIND,
    crate::model::storage::KIND,
    crate::model::template::KIND,
    crate::model::snapshot::KIND,
];

/// The Proxmox API, whatever the transport. Parameters go as PVE takes them
/// (booleans `0`/`1`, comma-joined `delete`). Answers are the `data` member.
pub trait PveApi: Send + Sync {
    fn get<'a>(
        &'a self,
        path: &'a str,
        params: &'a [(String, String)],
    ) -> BoxFuture<'a, Result<Value, ProviderError>>;
    fn post<'a>(
        &'a self,
        path: &'a str,
        params: &'a [(String, String)],
    ) -> BoxFuture<'a, Result<Value, ProviderError>>;
    fn put<'a>(
        &'a self,
        path: &'a str,
        params: &'a [(String, String)],
    ) -> BoxFuture<'a, Result<Value, ProviderError>>;
    fn delete<'a>(
        &'a self,
        path: &'a str,
        params: &'a [(String, String)],
    ) -> BoxFuture<'a, Result<Value, ProviderError>>;
    /// How many requests went out, for the benchmark and the tests.
    fn requests_sent(&self) -> u64;
}

#[derive(Clone)]
pub enum PveAuth {
    /// `user@realm!tokenid=secret`
    Token(String),
    Password {
        user: String,
        password: String,
    },
}

impl std::fmt::Debug for PveAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PveAuth::Token(t) => write!(
                f,
                "Token({}=(sensitive))",
                t.split('=').next().unwrap_or("")
            ),
            PveAuth::Password { user, .. } => write!(f, "Password({user}, (sensitive))"),
        }
    }
}

/// How to reach Proxmox. The environment wins over the manifests' `proxmox` section.
#[derive(Debug, Clone)]
pub struct PveSettings {
    /// `https` (default), `pvesh` (on the host) or `ssh://user@host`.
    pub transport: String,
    /// The pvesh program for the pvesh transports (default `pvesh`).
    pub pvesh: Option<String>,
    pub url: Option<String>,
    pub node: Option<String>,
    pub auth: Option<PveAuth>,
    pub ca_file: Option<PathBuf>,
    pub request_timeout: Duration,
    /// How long a task (create, clone, start...) may run before phoenix gives up waiting.
    pub task_timeout: Duration,
    /// Concurrent reads during refresh.
    pub read_concurrency: usize,
}

impl Default for PveSettings {
    fn default() -> Self {
        PveSettings {
            transport: "https".into(),
            pvesh: None,
            url: None,
            node: None,
            auth: None,
            ca_file: None,
            request_timeout: Duration::from_secs(30),
            task_timeout: Duration::from_secs(600),
            read_concurrency: 16,
        }
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|s| !s.trim().is_empty())
}

/// A secret from `NAME`, or from the file named by `NAME_FILE`.
fn env_secret(name: &str) -> Result<Option<String>, ProviderError> {
    if let Some(v) = env(name) {
        return Ok(Some(v));
    }
    match env(&format!("{name}_FILE")) {
        Some(path) if crate::state::local::exposed(std::path::Path::new(&path)).is_some() => {
            Err(ProviderError::Config(format!(
                "{name}_FILE {path} is readable by others; phoenix does not use a secret others can read\nhelp: run `chmod 600 {path}`"
            )))
        }
        Some(path) => std::fs::read_to_string(&path)
            .map(|s| Some(s.trim().to_string()))
            .map_err(|e| ProviderError::Config(format!("failed to read {name}_FILE {path}: {e}"))),
        None => Ok(None),
    }
}

impl PveSettings {
    pub fn resolve(site: Option<&Site>) -> Result<Self, ProviderError> {
        let conn = site.and_then(|s| s.hypervisor.proxmox.clone());
        let root = site.map(|s| s.root.clone());
        let mut s = PveSettings {
            transport: env("PHOENIX_PVE_TRANSPORT").unwrap_or_else(|| "https".into()),
            pvesh: env("PHOENIX_PVESH"),
            url: env("PHOENIX_PVE_URL").or_else(|| conn.as_ref().and_then(|c| c.url.clone())),
            node: env("PHOENIX_PVE_NODE").or_else(|| conn.as_ref().and_then(|c| c.node.clone())),
            ca_file: env("PHOENIX_PVE_CA_FILE").map(PathBuf::from).or_else(|| {
                conn.as_ref().and_then(|c| c.ca_file.as_ref()).map(|p| {
                    let p = PathBuf::from(p);
                    match (&root, p.is_relative()) {
                        (Some(r), true) => r.join(p),
                        _ => p,
                    }
                })
            }),
            ..Default::default()
        };
        if let Some(t) = env_secret("PHOENIX_PVE_TOKEN")? {
            s.auth = Some(PveAuth::Token(t));
        } else if let Some(p) = env_secret("PHOENIX_PVE_PASSWORD")? {
            let user = env("PHOENIX_PVE_USER")
                .or_else(|| conn.as_ref().and_then(|c| c.user.clone()))
                .ok_or_else(|| {
                    ProviderError::Config("PHOENIX_PVE_PASSWORD is set but PHOENIX_PVE_USER is not\nhelp: set PHOENIX_PVE_USER=root@pam (or the API user)".into())
                })?;
            s.auth = Some(PveAuth::Password { user, password: p });
        }
        if let Some(t) = env("PHOENIX_PVE_TIMEOUT") {
            s.request_timeout = humantime::parse_duration(&t)
                .map_err(|e| ProviderError::Config(format!("PHOENIX_PVE_TIMEOUT `{t}`: {e}")))?;
        }
        if let Some(t) = env("PHOENIX_PVE_TASK_TIMEOUT") {
            s.task_timeout = humantime::parse_duration(&t).map_err(|e| {
                ProviderError::Config(format!("PHOENIX_PVE_TASK_TIMEOUT `{t}`: {e}"))
            })?;
        }
        Ok(s)
    }
}

/// What every Proxmox kind shares in one run: the API, the node, and the
/// bulk inventory read once.
pub struct Pve {
    pub api: Arc<dyn PveApi>,
    configured_node: Option<String>,
    node: OnceCell<String>,
    inventory: OnceCell<Vec<Value>>,
    /// vmid -> position in `inventory`, so a refresh looks each guest up once, not by a scan.
    inventory_index: OnceCell<std::collections::HashMap<u64, usize>>,
    pub task_timeout: Duration,
    pub read_concurrency: usize,
}

impl Pve {
    pub fn new(api: Arc<dyn PveApi>, settings: &PveSettings) -> Self {
        Pve {
            api,
            configured_node: settings.node.clone(),
            node: OnceCell::new(),
            inventory: OnceCell::new(),
            inventory_index: OnceCell::new(),
            task_timeout: settings.task_timeout,
            read_concurrency: settings.read_concurrency.max(1),
        }
    }

    /// The node to create guests on: PHOENIX_PVE_NODE, else the only node.
    pub async fn node(&self) -> Result<String, ProviderError> {
        self.node
            .get_or_try_init(|| async {
                let nodes = self.api.get("/nodes", &[]).await?;
                let names: Vec<String> = nodes
                    .as_array()
                    .map(|a| a.iter().filter_map(|n| n["node"].as_str().map(str::to_string)).collect())
                    .unwrap_or_default();
                match &self.configured_node {
                    Some(n) if names.contains(n) => Ok(n.clone()),
                    Some(n) => Err(ProviderError::Config(format!(
                        "node `{n}` (PHOENIX_PVE_NODE) is not in the cluster; nodes: {}",
                        names.join(", ")
                    ))),
                    None if names.len() == 1 => Ok(names[0].clone()),
                    None => Err(ProviderError::Config(format!(
                        "the cluster has {} nodes ({}); say which one to use\nhelp: set PHOENIX_PVE_NODE",
                        names.len(),
                        names.join(", ")
                    ))),
                }
            })
            .await
            .cloned()
    }

    /// `/cluster/resources?type=vm`, read once per run.
    pub async fn inventory(&self) -> Result<&[Value], ProviderError> {
        self.inventory
            .get_or_try_init(|| async {
                let v = self
                    .api
                    .get("/cluster/resources", &[("type".into(), "vm".into())])
                    .await?;
                Ok(v.as_array().cloned().unwrap_or_default())
            })
            .await
            .map(Vec::as_slice)
    }

    /// The inventory entry of guest `vmid` (read once per run, like [`Pve::inventory`]).
    pub async fn inventory_guest(&self, vmid: u32) -> Result<Option<&Value>, ProviderError> {
        let inventory = self.inventory().await?;
        let index = self
            .inventory_index
            .get_or_init(|| async {
                let mut index = std::collections::HashMap::with_capacity(inventory.len());
                for (i, g) in inventory.iter().enumerate() {
                    if let Some(vmid) = g["vmid"].as_u64() {
                        index.entry(vmid).or_insert(i);
                    }
                }
                index
            })
            .await;
        Ok(index.get(&u64::from(vmid)).map(|&i| &inventory[i]))
    }

    /// Guest `vmid`'s entry: from the run's inventory, or (`fresh`) read now,
    /// for an apply that may have created the guest since the plan was made.
    pub async fn guest_entry(
        &self,
        vmid: u32,
        fresh: bool,
    ) -> Result<Option<Value>, ProviderError> {
        if !fresh {
            return Ok(self.inventory_guest(vmid).await?.cloned());
        }
        let list = self
            .api
            .get("/cluster/resources", &[("type".into(), "vm".into())])
            .await?;
        Ok(list.as_array().and_then(|l| {
            l.iter()
                .find(|g| g["vmid"].as_u64() == Some(u64::from(vmid)))
                .cloned()
        }))
    }
}

/// One connection to the API, for this provider and the systems that reach
/// guests through Proxmox (`host/`).
pub fn connect(settings: &PveSettings) -> Result<Arc<Pve>, ProviderError> {
    let api: Arc<dyn PveApi> = match settings.transport.as_str() {
        "https" => Arc::new(client::HttpsApi::new(settings)?),
        other => Arc::new(pvesh::PveshApi::new(
            other,
            settings.pvesh.clone(),
            settings.request_timeout,
        )?),
    };
    Ok(Arc::new(Pve::new(api, settings)))
}

/// The providers of every Proxmox kind, sharing one connection.
pub fn providers(settings: &PveSettings) -> Result<Vec<Arc<dyn ResourceProvider>>, ProviderError> {
    let pve = connect(settings)?;
    Ok(vec![
        Arc::new(lxc::LxcProvider::new(pve.clone())),
        Arc::new(vm::VmProvider::new(pve.clone())),
        Arc::new(firewall::FirewallProvider::new(pve.clone())),
        Arc::new(storage::StorageProvider::new(pve.clone())),
        Arc::new(template::TemplateProvider::new(pve.clone())),
        Arc::new(snapshot::SnapshotProvider::new(pve)),
    ])
}

/// `param=value` pairs from `&str` tuples.
pub fn params(items: &[(&str, String)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}
