//! The plan: plain data, no I/O. [`diff`] computes it from Desired, Prior and
//! Live; [`render`] formats it (text, JSON, markdown); the executor in
//! `apply/` carries it out. [`Plan::has_changes`] is the one place that
//! decides whether there is anything to do.

pub mod diff;
pub mod render;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{Address, Attrs};

pub use diff::{DiffInput, DiffOptions, PlanProblem, diff};

/// The JSON format version of `--json` output and saved plans.
pub const FORMAT_VERSION: &str = "1";

/// What the executor does with one address. The variants are the diff symbols.
///
/// | action  | before                         | after                  |
/// |---------|--------------------------------|------------------------|
/// | create  | none (or prior, when deleted outside) | desired         |
/// | update  | live                           | desired                |
/// | replace | live                           | desired                |
/// | delete  | live                           | none                   |
/// | adopt   | live                           | desired                |
/// | forget  | prior (the object is gone)     | none                   |
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Update,
    Replace,
    Delete,
    Adopt,
    Forget,
}

impl Action {
    pub fn symbol(self) -> &'static str {
        match self {
            Action::Create => "+",
            Action::Update => "~",
            Action::Replace => "-/+",
            Action::Delete => "-",
            Action::Adopt => "<=",
            Action::Forget => "x",
        }
    }

    pub fn is_destroy(self) -> bool {
        matches!(self, Action::Delete | Action::Replace)
    }
}

/// Why a change is planned. For display only: the executor never branches on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// In the state and the manifests, gone from the real system.
    DeletedOutside,
    /// In the state, no longer in the manifests.
    RemovedFromManifests,
    /// An attribute that cannot change in place differs.
    ForcesReplacement,
    /// Created by an apply that was interrupted; found and taken into the state.
    RecoveredFromJournal,
    /// Exists but was never managed; `--adopt` or `import` takes it in.
    Adopt,
    /// The object is gone and no longer wanted: only the state entry goes.
    AlreadyGone,
    /// No longer in the manifests, and of a kind phoenix leaves in place: only the state entry goes.
    KeptOnRemoval,
    /// It goes with its guest, which the plan replaces: created again after it.
    GuestReplaced,
}

/// What the change was computed from: apply refuses to act if the object no
/// longer matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Precondition {
    /// [`crate::model::LiveObject::fingerprint`] of the object read at plan time, or `None` if it did not exist.
    pub fingerprint: Option<String>,
}

/// One planned change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub address: Address,
    pub action: Action,
    /// See [`Action`] for what before and after hold. Sensitive values are masked.
    pub before: Option<Attrs>,
    pub after: Option<Attrs>,
    /// Dotted paths of the attributes that change (`net0.ip`).
    pub changed_paths: Vec<String>,
    /// The subset of `changed_paths` that forces a replacement.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replace_paths: Vec<String>,
    pub reason: Option<Reason>,
    /// True when the change undoes changes made outside phoenix.
    pub drift: bool,
    #[serde(default)]
    pub depends_on: Vec<Address>,
    pub precondition: Precondition,
    /// What the user should know about this change (e.g. "takes effect at the next reboot").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Keyed fingerprint of the desired resource, so apply of a saved plan can
    /// tell that the manifests changed since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_fingerprint: Option<String>,
}

/// An object that changed outside phoenix since the last apply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftEntry {
    pub address: Address,
    /// `changed` or `deleted`.
    pub kind: DriftKind,
    pub changed_paths: Vec<String>,
    /// As last applied (state).
    pub before: Option<Attrs>,
    /// As found now (live).
    pub after: Option<Attrs>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriftKind {
    Changed,
    Deleted,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub add: usize,
    pub change: usize,
    pub destroy: usize,
    pub adopt: usize,
    pub forget: usize,
}

/// The whole plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub changes: Vec<Change>,
    pub drift: Vec<DriftEntry>,
    /// Only drift was computed; there are no changes to apply.
    #[serde(default)]
    pub refresh_only: bool,
    #[serde(default)]
    pub targets: Vec<Address>,
    /// What the kinds observed about existing objects, changed or not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<PlanNote>,
}

/// An observation about one object (not a change).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanNote {
    pub address: Address,
    pub note: String,
}

impl Plan {
    /// The only place that decides whether there is anything to apply.
    pub fn has_changes(&self) -> bool {
        !self.changes.is_empty()
    }

    pub fn has_drift(&self) -> bool {
        !self.drift.is_empty()
    }

    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for c in &self.changes {
            match c.action {
                Action::Create => s.add += 1,
                Action::Update => s.change += 1,
                Action::Replace => {
                    s.add += 1;
                    s.destroy += 1;
                }
                Action::Delete => s.destroy += 1,
                Action::Adopt => s.adopt += 1,
                Action::Forget => s.forget += 1,
            }
        }
        s
    }

    pub fn change(&self, addr: &Address) -> Option<&Change> {
        self.changes.iter().find(|c| &c.address == addr)
    }
}

/// The marker shown instead of a secret value.
pub const SENSITIVE: &str = "(sensitive)";

/// Mask the sensitive attributes of a kind in an attribute map.
pub fn mask(attrs: &Attrs, sensitive: &[&str]) -> Attrs {
    attrs
        .iter()
        .map(|(k, v)| {
            if sensitive.contains(&k.as_str()) && !v.is_null() {
                (k.clone(), Value::String(SENSITIVE.into()))
            } else {
                (k.clone(), v.clone())
            }
        })
        .collect()
}
