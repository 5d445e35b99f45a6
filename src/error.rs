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
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
