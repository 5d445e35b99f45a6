//! The library's error type for whole operations: each variant says what
//! failed and, through [`Error::help`], what to do next. The binary maps it
//! to exit code 1 and prints the chain.

use std::path::PathBuf;

use crate::manifest::{Diagnostic, ManifestError};
use crate::plan::PlanProblem;
use crate::providers::ProviderError;
use crate::state::StateError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the manifests are not valid")]
    Manifest(#[source] ManifestError),
    /// Diagnostics raised while building the desired resources.
    #[error("the manifests are not valid: {} error(s)", .0.len())]
    Desired(Vec<Diagnostic>),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error("cannot plan: {} problem(s)", .0.len())]
    Plan(Vec<PlanProblem>),
    #[error("failed to {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A refusal or failure already worded for the user.
    #[error("{message}")]
    Message {
        message: String,
        help: Option<String>,
    },
}

impl Error {
    pub fn msg(message: impl Into<String>, help: impl Into<String>) -> Self {
        Error::Message {
            message: message.into(),
            help: Some(help.into()),
        }
    }

    /// What to do next, when there is something to say.
    pub fn help(&self) -> Option<String> {
        match self {
            Error::Message { help, .. } => help.clone(),
            Error::Manifest(_) | Error::Desired(_) => {
                Some("fix the manifests, then run `phoenix validate`".into())
            }
            Error::Plan(_) => None,
            Error::Io { .. } => Some("check the path and its permissions".into()),
            Error::State(e) => match e {
                StateError::Corrupt { .. } => Some(
                    "neither the state file nor its .backup could be read: fix the JSON at the place \
                     named, or restore the file from a copy; never delete it (phoenix would try to \
                     create everything again)"
                        .into(),
                ),
                StateError::NewerFormat { .. } => {
                    Some("use the phoenix version that wrote the state, or a newer one".into())
                }
                StateError::Read { .. } | StateError::Write { .. } | StateError::LockIo { .. } => {
                    Some("check the state file's directory and its permissions".into())
                }
                // Their messages carry their own `help:` line.
                StateError::Locked(_) | StateError::Unlock(_) | StateError::PgConfig(_) => None,
                StateError::Conflict { .. } => Some(
                    "another phoenix wrote the state meanwhile (without holding the lock, or after                      this one lost it): nothing was overwritten; run `phoenix plan` again"
                        .into(),
                ),
                StateError::Key(_) => Some(
                    "the key file sits beside the state file; check its permissions".into(),
                ),
                StateError::PgConnect { .. } => Some(
                    "check that the server is up and reachable from here, and the host, port and                      database in PHOENIX_PG_URL"
                        .into(),
                ),
                StateError::PgAuth { .. } => Some(
                    "check the user and password in PHOENIX_PG_URL (or PGPASSWORD) and the                      server's pg_hba.conf"
                        .into(),
                ),
                StateError::Pg { .. } => Some(
                    "check the database user's rights on the `phoenix` schema, then run phoenix                      again"
                        .into(),
                ),
                StateError::PgNewerSchema { .. } => Some(
                    "a newer phoenix has upgraded this database: use that version (or newer) here too"
                        .into(),
                ),
            },
            // Messages that already hold a `help:` line keep it; the others get one.
            Error::Provider(p) if p.to_string().contains("help:") => None,
            Error::Provider(p) => Some(provider_help(p).into()),
        }
    }
}

/// What to do after a provider error whose message says nothing of it.
fn provider_help(p: &ProviderError) -> &'static str {
    match p {
        ProviderError::Api { message, .. } if message.contains("quorum") => {
            "the cluster has lost quorum, so Proxmox refuses every change; restore it \
             (`pvecm status`), then run phoenix again"
        }
        ProviderError::Api { status: 595, .. } => {
            "Proxmox cannot reach that node: check that it is up and in the cluster \
             (`pvecm status`), then run phoenix again"
        }
        ProviderError::Api { status, .. } if *status >= 500 => {
            "Proxmox failed to answer (reads are retried 4 times); check the API host, \
             then run phoenix again: the state and its journal stay true"
        }
        ProviderError::Api { .. } => "Proxmox refused the request; the message above is its reason",
        ProviderError::NotFound(_) | ProviderError::Conflict(_) => {
            "it changed meanwhile: run `phoenix plan` again"
        }
        ProviderError::TaskFailed { .. } => {
            "the task log above says why; fix the cause in Proxmox, then run phoenix again"
        }
        _ => "run `phoenix plan` to see where things stand",
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error and its causes, `outer: cause: cause`, each cause once (libraries
/// often repeat their source's text in their own message).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        src = c.source();
    }
    s
}
