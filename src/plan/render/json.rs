//! The machine rendering (`plan --json`), format version 1:
//!
//! ```json
//! {"format_version": "1",
//!  "summary": {"add": 1, "change": 0, "destroy": 0, "adopt": 0, "forget": 0},
//!  "changes": [{"address", "action", "before", "after", "changed_paths", "reason", "drift"}],
//!  "drift": [{"address", "kind", "changed_paths", "before", "after"}]}
//! ```

use std::io::{self, Write};

use serde_json::{Value, json};

use crate::plan::{FORMAT_VERSION, Plan};

pub fn to_value(plan: &Plan) -> Value {
    let changes: Vec<Value> = plan
        .changes
        .iter()
        .map(|c| {
            json!({
                "address": c.address,
                "action": c.action,
                "before": c.before,
                "after": c.after,
                "changed_paths": c.changed_paths,
                "replace_paths": c.replace_paths,
                "reason": c.reason,
                "drift": c.drift,
                "notes": c.notes,
            })
        })
        .collect();
    json!({
        "format_version": FORMAT_VERSION,
        "summary": plan.summary(),
        "changes": changes,
        "drift": plan.drift,
        "notes": plan.notes,
    })
}

pub fn render(plan: &Plan, out: &mut dyn Write) -> io::Result<()> {
    let text = serde_json::to_string_pretty(&to_value(plan)).map_err(io::Error::other)?;
    writeln!(out, "{text}")
}
