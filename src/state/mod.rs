//! What phoenix manages and what it last applied: the in-memory model.
//!
//! - `mod.rs` (this file): the model, [`State`], [`ResourceState`], the journal of
//!   in-flight operations ([`PendingOp`]).
//! - [`file`]: the versioned on-disk format (read the version first, refuse newer ones).
//! - [`local`]: the local backend: atomic writes with a `.backup`, mode 0600.
//! - [`lock`]: the OS file lock held for the whole command, with who holds it.
//! - [`pg`]: the PostgreSQL backend: a row per workspace, written with a
//!   compare-and-swap on the serial, and a session-held advisory lock.
//! - [`backend`]: the one interface the commands use, over both backends.
//! - [`secrets`]: the keyed fingerprint that stands in for secret values.

pub mod backend;
pub mod file;
pub mod local;
pub mod lock;
pub mod pg;
pub mod secrets;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{Address, Attrs};

pub use backend::{Backend, Saver, StateLock};
pub use file::FORMAT_VERSION;
pub use local::LocalBackend;
pub use lock::{LockGuard, LockInfo, LockMode};
pub use pg::PgBackend;

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
    /// Compare-and-swap refused a write: someone saved since this command read the state.
    #[error(
        "the state at {location} changed under this command: it read serial {expected}, \
         the store now holds {found}; nothing was written"
    )]
    Conflict {
        location: String,
        expected: String,
        found: String,
    },
    #[error(transparent)]
    Key(#[from] secrets::SecretKeyError),
    /// The pg backend is chosen but not configured, or configured wrongly.
    #[error("{0}")]
    PgConfig(String),
    #[error("cannot connect to the PostgreSQL state backend at {location}: {message}")]
    PgConnect { location: String, message: String },
    #[error("PostgreSQL at {location} refused the login: {message}")]
    PgAuth { location: String, message: String },
    #[error("failed to {action} in the PostgreSQL state backend at {location}: {message}")]
    Pg {
        action: &'static str,
        location: String,
        message: String,
    },
    #[error(
        "the PostgreSQL state schema at {location} is at version {found}, but this phoenix \
         ({ours}) knows version {supported}"
    )]
    PgNewerSchema {
        location: String,
        found: i64,
        supported: i64,
        ours: &'static str,
    },
}
