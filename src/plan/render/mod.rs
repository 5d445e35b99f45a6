//! Renderers: they only format a [`Plan`]; none computes anything. Each writes
//! to any `io::Write`, with colors decided by the caller.

pub mod json;
pub mod markdown;
pub mod text;

#[cfg(test)]
mod tests;

use serde_json::Value;

use super::{Action, Change, Plan, Reason};

/// How a value prints in text and markdown: JSON, with strings quoted.
pub fn value(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

/// A value at a dotted path of an attribute map.
pub fn at<'a>(attrs: Option<&'a serde_json::Map<String, Value>>, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let mut cur = attrs?.get(parts.next()?)?;
    for p in parts {
        cur = cur.get(p)?;
    }
    Some(cur)
}

/// The header line of a change, Terraform's wording.
pub fn headline(c: &Change) -> String {
    let a = &c.address;
    match (c.action, c.reason) {
        (Action::Create, Some(Reason::DeletedOutside)) => {
            format!("{a} was deleted outside phoenix and will be created again")
        }
        (Action::Create, Some(Reason::GuestReplaced)) => {
            format!("{a} will be created again: its guest is replaced, and it goes with it")
        }
        (Action::Create, _) => format!("{a} will be created"),
        (Action::Update, _) => format!("{a} will be updated in-place"),
        (Action::Replace, _) => format!("{a} must be replaced"),
        (Action::Delete, _) => format!("{a} will be destroyed (no longer in the manifests)"),
        (Action::Adopt, Some(Reason::RecoveredFromJournal)) => {
            format!("{a} was created by an interrupted apply and will be taken into the state")
        }
        (Action::Adopt, _) => format!("{a} exists and will be adopted into the state"),
        (Action::Forget, Some(Reason::KeptOnRemoval)) => {
            format!("{a} is no longer in the manifests: phoenix forgets it and leaves it in place")
        }
        (Action::Forget, _) => format!("{a} no longer exists and will be removed from the state"),
    }
}

/// The last line: `Plan: ...` or `No changes...`.
pub fn summary_line(plan: &Plan) -> String {
    if plan.refresh_only {
        return if plan.has_drift() {
            format!(
                "Drift: {} object(s) changed outside phoenix.",
                plan.drift.len()
            )
        } else {
            "No drift. The real systems match the state.".into()
        };
    }
    if !plan.has_changes() {
        return "No changes. The site matches the manifests.".into();
    }
    let s = plan.summary();
    let mut line = format!(
        "Plan: {} to add, {} to change, {} to destroy",
        s.add, s.change, s.destroy
    );
    if s.adopt > 0 {
        line.push_str(&format!(", {} to adopt", s.adopt));
    }
    if s.forget > 0 {
        line.push_str(&format!(", {} to forget", s.forget));
    }
    line.push('.');
    line
}
