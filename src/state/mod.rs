//! What phoenix manages and what it last applied: the in-memory model.
//!
//! - `mod.rs` (this file): the model, [`State`], [`ResourceState`], the journal of
//!   in-flight operations ([`PendingOp`]).
//! - [`file`]: the versioned on-disk format (read the version first, refuse newer ones).
//! - [`local`]: the local backend: atomic writes with a `.backup`, mode 0600.
//! - [`lock`]: the OS file lock held for the whole command, with who holds it.
//! - [`secrets`]: the keyed fingerprint that stands in for secret values.

pub mod file;
pub mod local;
pub mod lock;
pub mod secrets;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{Address, Attrs};

pub use file::FORMAT_VERSION;
pub use local::LocalBackend;
pub use lock::{LockGuard, LockInfo, LockMode};

/// One managed object as last applied (the normalized read-back after apply).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceState {
    pub address: Address,
    pub kind: String,
    /// Normalized attributes read back after the last apply (or import).
    /// Sensitive ones hold a keyed fingerprint, never the value.
    pub attributes: Attrs,
    /// What the provider needs to find the object again (node, vmid).
    #[serde(default)]
    pub remote: Value,
    #[serde(default)]
    pub dependencies: Vec<Address>,
    /// RFC 3339.
    pub updated_at: String,
}

/// What an operation in flight was doing when it was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PendingKind {
    Create,
    Delete,
}

/// A journal entry: written before a create or delete is dispatched, updated
/// with the task id once known, removed when the result is committed. A run
/// that finds one reconciles it against the live system instead of blindly
/// repeating the operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingOp {
    pub address: Address,
    pub op: PendingKind,
    pub started_at: String,
    /// The remote task (a PVE UPID) once the system has accepted the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
}

/// The whole state document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub format: String,
    /// Identifies this state's history; a saved plan from another lineage is refused.
    pub lineage: String,
    /// Raised on every change of content, never otherwise.
    pub serial: u64,
    pub phoenix_version: String,
    #[serde(default)]
    pub resources: BTreeMap<Address, ResourceState>,
    #[serde(default)]
    pub pending: Vec<PendingOp>,
}

impl State {
    pub fn new() -> Self {
        State {
            format: FORMAT_VERSION.to_string(),
            lineage: uuid::Uuid::new_v4().to_string(),
            serial: 0,
            phoenix_version: env!("CARGO_PKG_VERSION").to_string(),
            resources: BTreeMap::new(),
            pending: Vec::new(),
        }
    }

    /// Content equality, ignoring the serial and the writer's version, so the
    /// serial only goes up when something really changed.
    pub fn same_content(&self, other: &State) -> bool {
        self.lineage == other.lineage
            && self.resources == other.resources
            && self.pending == other.pending
    }

    pub fn pending_for(&self, addr: &Address) -> Option<&PendingOp> {
        self.pending.iter().find(|p| &p.address == addr)
    }

    pub fn clear_pending(&mut self, addr: &Address) {
        self.pending.retain(|p| &p.address != addr);
    }
}

impl Default for State {
    fn default() -> Self {
        State::new()
    }
}

/// The current time in RFC 3339, seconds precision.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// Errors of the state layer.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("failed to read the state file {path}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to write the state file {path}")]
    Write {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the state file {path} is not valid: {message}")]
    Corrupt {
        path: std::path::PathBuf,
        message: String,
    },
    #[error(
        "the state file {path} has format {found}, but this phoenix ({ours}) reads format {supported}"
    )]
    NewerFormat {
        path: std::path::PathBuf,
        found: String,
        supported: &'static str,
        ours: &'static str,
    },
    #[error("{0}")]
    Locked(Box<lock::LockedError>),
    #[error("failed to take the state lock {path}")]
    LockIo {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Unlock(String),
}
