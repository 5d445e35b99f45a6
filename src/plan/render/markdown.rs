//! The pull-request rendering (`plan --format markdown`): a summary line, a
//! table of changes, and the text plan folded in a `<details>` block.

use std::io::{self, Write};

use super::{summary_line, text};
use crate::plan::Plan;

pub fn render(plan: &Plan, out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, "### phoenix plan")?;
    writeln!(out)?;
    writeln!(out, "**{}**", summary_line(plan))?;
    writeln!(out)?;
    if !plan.drift.is_empty() {
        writeln!(
            out,
            "> :warning: {} object(s) changed outside phoenix: {}",
            plan.drift.len(),
            plan.drift
                .iter()
                .map(|d| format!("`{}`", d.address))
                .collect::<Vec<_>>()
                .join(", ")
        )?;
        writeln!(out)?;
    }
    if plan.has_changes() && !plan.refresh_only {
        writeln!(out, "| | address | action | attributes |")?;
        writeln!(out, "|---|---|---|---|")?;
        for c in &plan.changes {
            let attrs = if c.changed_paths.is_empty() || c.action == crate::plan::Action::Create {
                String::new()
            } else {
                c.changed_paths
                    .iter()
                    .map(|p| format!("`{p}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let action = serde_json::to_value(c.action)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            writeln!(
                out,
                "| `{}` | `{}` | {}{} | {} |",
                c.action.symbol(),
                c.address,
                action,
                if c.drift { " (drift)" } else { "" },
                attrs
            )?;
        }
        writeln!(out)?;
    }
    for n in &plan.notes {
        writeln!(out, "> `{}`: {}", n.address, n.note)?;
    }
    if !plan.notes.is_empty() {
        writeln!(out)?;
    }
    writeln!(out, "<details><summary>Full plan</summary>")?;
    writeln!(out)?;
    writeln!(out, "```diff")?;
    text::render(plan, out, false)?;
    writeln!(out, "```")?;
    writeln!(out)?;
    writeln!(out, "</details>")?;
    Ok(())
}
