//! The human rendering, in Terraform's grammar: `+` create, `~` update, `-/+`
//! replace, `-` destroy, `<=` adopt; one line per changed attribute.

use std::io::{self, Write};

use console::Style;
use serde_json::Value;

use super::{at, headline, summary_line, value};
use crate::plan::{Action, DriftKind, Plan};

struct Styles {
    add: Style,
    change: Style,
    destroy: Style,
    adopt: Style,
    dim: Style,
    bold: Style,
}

impl Styles {
    fn new(color: bool) -> Self {
        let s = |st: Style| st.force_styling(color);
        Styles {
            add: s(Style::new().green()),
            change: s(Style::new().yellow()),
            destroy: s(Style::new().red()),
            adopt: s(Style::new().cyan()),
            dim: s(Style::new().dim()),
            bold: s(Style::new().bold()),
        }
    }

    fn of(&self, a: Action) -> &Style {
        match a {
            Action::Create => &self.add,
            Action::Update => &self.change,
            Action::Replace | Action::Delete => &self.destroy,
            Action::Adopt => &self.adopt,
            Action::Forget => &self.dim,
        }
    }
}

fn width(keys: impl Iterator<Item = usize>) -> usize {
    keys.max().unwrap_or(0)
}

/// Attributes one per line, nested objects as indented blocks.
fn block(
    out: &mut dyn Write,
    attrs: &serde_json::Map<String, Value>,
    indent: usize,
    sym: &str,
) -> io::Result<()> {
    let w = width(attrs.keys().map(String::len));
    let pad = " ".repeat(indent);
    for (k, v) in attrs {
        match v {
            Value::Object(m) if !m.is_empty() => {
                writeln!(out, "{pad}{sym} {k:<w$} = {{")?;
                block(out, m, indent + 4, sym)?;
                writeln!(out, "{pad}  }}")?;
            }
            // A file's content: its lines, as Terraform shows a heredoc.
            Value::String(s) if s.contains('\n') => {
                writeln!(out, "{pad}{sym} {k:<w$} = <<-EOT")?;
                for line in s.lines() {
                    writeln!(out, "{pad}      {line}")?;
                }
                writeln!(out, "{pad}    EOT")?;
            }
            _ => writeln!(out, "{pad}{sym} {k:<w$} = {}", value(v))?,
        }
    }
    Ok(())
}

/// Both sides as text when either is a multi-line string (a generated file).
fn multiline<'a>(before: &'a Value, after: &'a Value) -> Option<(&'a str, &'a str)> {
    let text = |v: &'a Value| match v {
        Value::String(s) => Some(s.as_str()),
        Value::Null => Some(""),
        _ => None,
    };
    let (b, a) = (text(before)?, text(after)?);
    (b.contains('\n') || a.contains('\n')).then_some((b, a))
}

/// A unified diff with 3 lines of context, indented under its attribute.
fn unified(out: &mut dyn Write, before: &str, after: &str, st: &Styles) -> io::Result<()> {
    let diff = similar::TextDiff::from_lines(before, after);
    for hunk in diff.unified_diff().context_radius(3).iter_hunks() {
        writeln!(out, "          {}", st.dim.apply_to(hunk.header()))?;
        for change in hunk.iter_changes() {
            let line = change.value().trim_end_matches('\n');
            match change.tag() {
                similar::ChangeTag::Delete => {
                    writeln!(out, "          {}", st.destroy.apply_to(format!("-{line}")))?
                }
                similar::ChangeTag::Insert => {
                    writeln!(out, "          {}", st.add.apply_to(format!("+{line}")))?
                }
                similar::ChangeTag::Equal => writeln!(out, "           {line}")?,
            }
        }
    }
    Ok(())
}

pub fn render(plan: &Plan, out: &mut dyn Write, color: bool) -> io::Result<()> {
    let st = Styles::new(color);
    if !plan.drift.is_empty() {
        writeln!(
            out,
            "{}",
            st.bold
                .apply_to("Objects changed outside phoenix since the last apply:")
        )?;
        writeln!(out)?;
        for d in &plan.drift {
            match d.kind {
                DriftKind::Deleted => {
                    writeln!(
                        out,
                        "  # {} was deleted outside phoenix",
                        st.bold.apply_to(&d.address)
                    )?;
                }
                DriftKind::Changed => {
                    writeln!(
                        out,
                        "  # {} changed outside phoenix",
                        st.bold.apply_to(&d.address)
                    )?;
                    let w = width(d.changed_paths.iter().map(String::len));
                    for p in &d.changed_paths {
                        let before = at(d.before.as_ref(), p).unwrap_or(&Value::Null);
                        let after = at(d.after.as_ref(), p).unwrap_or(&Value::Null);
                        if let Some((b, a)) = multiline(before, after) {
                            writeln!(out, "    {} {p}:", st.change.apply_to("~"))?;
                            unified(out, b, a, &st)?;
                            continue;
                        }
                        writeln!(
                            out,
                            "    {} {p:<w$} = {} -> {}",
                            st.change.apply_to("~"),
                            value(before),
                            value(after)
                        )?;
                    }
                }
            }
            writeln!(out)?;
        }
    }

    if !plan.refresh_only && plan.has_changes() {
        writeln!(out, "phoenix will perform the following actions:")?;
        writeln!(out)?;
        for c in &plan.changes {
            let style = st.of(c.action);
            writeln!(
                out,
                "  {} {}",
                st.bold.apply_to("#"),
                st.bold.apply_to(headline(c))
            )?;
            let sym = style.apply_to(format!("{:>3}", c.action.symbol()));
            match c.action {
                Action::Create => {
                    writeln!(out, "{sym} {} {{", c.address)?;
                    if let Some(after) = &c.after {
                        block(out, after, 6, &style.apply_to("+").to_string())?;
                    }
                    writeln!(out, "    }}")?;
                }
                Action::Update | Action::Replace | Action::Adopt => {
                    writeln!(out, "{sym} {} {{", c.address)?;
                    let w = width(c.changed_paths.iter().map(String::len));
                    for p in &c.changed_paths {
                        let before = at(c.before.as_ref(), p).unwrap_or(&Value::Null);
                        let after = at(c.after.as_ref(), p).unwrap_or(&Value::Null);
                        let forces = if c.replace_paths.contains(p) {
                            format!(" {}", st.destroy.apply_to("# forces replacement"))
                        } else {
                            String::new()
                        };
                        if let Some((b, a)) = multiline(before, after) {
                            // File contents: a unified diff reads better than two long strings.
                            writeln!(out, "      {} {p}:{forces}", st.change.apply_to("~"))?;
                            unified(out, b, a, &st)?;
                            continue;
                        }
                        writeln!(
                            out,
                            "      {} {p:<w$} = {} -> {}{forces}",
                            st.change.apply_to("~"),
                            value(before),
                            value(after)
                        )?;
                    }
                    writeln!(out, "    }}")?;
                    for n in &c.notes {
                        writeln!(out, "    {} {n}", st.dim.apply_to("# note:"))?;
                    }
                }
                Action::Delete | Action::Forget => {
                    writeln!(out, "{sym} {}", c.address)?;
                }
            }
            writeln!(out)?;
        }
    }
    if !plan.notes.is_empty() {
        writeln!(out, "{}", st.bold.apply_to("Notes:"))?;
        for n in &plan.notes {
            writeln!(out, "  {} {}: {}", st.dim.apply_to("#"), n.address, n.note)?;
        }
        writeln!(out)?;
    }
    writeln!(out, "{}", st.bold.apply_to(summary_line(plan)))?;
    Ok(())
}
