//! Providers: read the real systems into [`LiveObject`]s and carry out
//! changes. They never decide what to change; the plan does.
//!
//! One [`ResourceProvider`] per kind, in `providers/<system>/<kind>.rs`. The
//! executor calls them through this trait only, so it knows no kind's details.

pub mod docker;
pub mod host;
pub mod portainer;
pub mod proxmox;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::Value;

use crate::model::{Address, DesiredResource, LiveObject};
use crate::plan::Change;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An error from a provider, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The object does not exist (HTTP 404, or PVE's "does not exist").
    #[error("{0} does not exist")]
    NotFound(String),
    /// The API answered with an error.
    #[error("{message}")]
    Api {
        status: u16,
        message: String,
        /// Per-parameter errors (PVE's `errors` object).
        details: BTreeMap<String, String>,
    },
    /// The system could not be reached (after retries, for reads).
    #[error("{0}")]
    Unreachable(String),
    /// Credentials were refused or expired and could not be renewed.
    #[error("{0}")]
    Auth(String),
    /// A long-running task ended in failure; `log_tail` is its last lines.
    #[error("task {upid} failed: {status}")]
    TaskFailed {
        upid: String,
        status: String,
        log_tail: Vec<String>,
    },
    /// The object changed since it was read (digest mismatch), or refused the precondition.
    #[error("{0}")]
    Conflict(String),
    /// A configuration problem: missing settings, an unusable CA file.
    #[error("{0}")]
    Config(String),
    /// Anything else the provider wants to say, already worded for the user.
    #[error("{0}")]
    Other(String),
}

impl ProviderError {
    /// Lines that explain the error further (task log tail, per-field errors).
    pub fn details(&self) -> Vec<String> {
        match self {
            ProviderError::Api { details, .. } => {
                details.iter().map(|(k, v)| format!("{k}: {v}")).collect()
            }
            ProviderError::TaskFailed { log_tail, .. } => log_tail.clone(),
            _ => Vec::new(),
        }
    }
}

/// What the executor offers a provider during one operation.
pub trait OpContext: Send + Sync {
    /// A remote task was started for this operation (a PVE UPID): it is
    /// journaled before the provider waits on it.
    fn task_started(&self, address: &Address, task: &str);
    /// A progress line (`Waiting` on a task ...).
    fn progress(&self, verb: &str, message: &str);
}

/// A concurrency lane: at most `capacity` operations with the same key run at once.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Lane {
    pub key: String,
    pub capacity: usize,
}

/// An imperative power action on a guest (the seed's `start|stop|restart` verbs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAction {
    Start,
    /// A clean shutdown, forced after a timeout.
    Stop,
    Restart,
}

/// The provider of one resource kind.
pub trait ResourceProvider: Send + Sync {
    fn kind(&self) -> &'static str;

    /// Read the objects at these addresses, in bulk where the system allows.
    /// Absent from the answer means "does not exist".
    fn refresh<'a>(
        &'a self,
        addresses: &'a [Address],
    ) -> BoxFuture<'a, Result<BTreeMap<Address, LiveObject>, ProviderError>>;

    /// Create the object and return it as read back.
    fn create<'a>(
        &'a self,
        desired: &'a DesiredResource,
        ctx: &'a dyn OpContext,
    ) -> BoxFuture<'a, Result<LiveObject, ProviderError>>;

    /// Change the object in place to match `desired`; `live` is what the plan
    /// saw (with its concurrency token). Returns the object as read back.
    fn update<'a>(
        &'a self,
        desired: &'a DesiredResource,
        live: &'a LiveObject,
        change: &'a Change,
        ctx: &'a dyn OpContext,
    ) -> BoxFuture<'a, Result<LiveObject, ProviderError>>;

    /// Delete the object. Deleting something already gone is not an error.
    fn delete<'a>(
        &'a self,
        address: &'a Address,
        remote: &'a Value,
        ctx: &'a dyn OpContext,
    ) -> BoxFuture<'a, Result<(), ProviderError>>;

    /// The lanes an operation on this change occupies (one per guest, a
    /// per-node limit for creates...), so the system never sees conflicting work.
    fn lanes(&self, change: &Change, desired: Option<&DesiredResource>) -> Vec<Lane>;

    /// Start, stop or restart the object, for kinds that have a power state.
    fn power<'a>(
        &'a self,
        address: &'a Address,
        _remote: &'a Value,
        _action: PowerAction,
        _ctx: &'a dyn OpContext,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            Err(ProviderError::Other(format!(
                "{address} has no power state to start or stop"
            )))
        })
    }
}

/// The providers of a run, by kind.
#[derive(Default, Clone)]
pub struct Registry {
    by_kind: BTreeMap<&'static str, Arc<dyn ResourceProvider>>,
}

impl Registry {
    pub fn insert(&mut self, p: Arc<dyn ResourceProvider>) {
        self.by_kind.insert(p.kind(), p);
    }

    pub fn get(&self, kind: &str) -> Option<&Arc<dyn ResourceProvider>> {
        self.by_kind.get(kind)
    }

    pub fn kinds(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.by_kind.keys().copied()
    }
}

/// Build the providers for the kinds a run touches. A system is only
/// connected to when one of its kinds is needed.
pub fn registry(
    kinds: &std::collections::BTreeSet<String>,
    settings: &Settings,
) -> Result<Registry, ProviderError> {
    let mut reg = Registry::default();
    if kinds.iter().any(|k| proxmox::KINDS.contains(&k.as_str())) {
        for p in proxmox::providers(&settings.proxmox)? {
            reg.insert(p);
        }
    }
    if kinds.iter().any(|k| host::KINDS.contains(&k.as_str())) {
        for p in host::providers(&settings.host, &settings.proxmox, kinds)? {
            reg.insert(p);
        }
    }
    if kinds.iter().any(|k| docker::KINDS.contains(&k.as_str())) {
        for p in docker::providers(&settings.docker)? {
            reg.insert(p);
        }
    }
    if kinds.contains(crate::model::portainer::KIND) {
        reg.insert(Arc::new(portainer::PortainerProvider::new(
            settings.portainer.clone(),
            Arc::new(docker::Engines::new(&settings.docker)),
        )));
    }
    Ok(reg)
}

/// Connection settings for every system, resolved from the environment and the manifests.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub proxmox: proxmox::PveSettings,
    pub host: host::HostSettings,
    pub docker: docker::DockerSettings,
    pub portainer: portainer::PortainerSettings,
}
