//! One finding about the site manifests (an error or a warning), with the file, the JSON
//! path and, where known, the line and column it points at; printed cargo-style.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use super::locate::Position;

/// How bad a [`Diagnostic`] is. Errors stop `plan`/`apply`; warnings are only shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// A finding about one place in one manifest file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// Relative to the site root, e.g. `etc/phoenix_lxc_configs.json`.
    pub file: PathBuf,
    /// e.g. `lxc_configs."101".memory_mb` or `vms[1].network_config.ip`; empty for the
    /// whole file.
    pub json_path: String,
    /// 1-based.
    pub line: Option<usize>,
    /// 1-based, in characters.
    pub column: Option<usize>,
    pub message: String,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn new(severity: Severity, file: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity,
            file: file.into(),
            json_path: String::new(),
            line: None,
            column: None,
            message: message.into(),
            help: None,
        }
    }

    pub fn error(file: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::new(Severity::Error, file, message)
    }

    pub fn warning(file: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::new(Severity::Warning, file, message)
    }

    pub fn with_path(mut self, json_path: impl Into<String>) -> Self {
        self.json_path = json_path.into();
        self
    }

    /// Sets line and column; `None` leaves them unknown.
    pub fn with_position(mut self, position: Option<Position>) -> Self {
        if let Some(p) = position {
            self.line = Some(p.line);
            self.column = Some(p.column);
        }
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    /// ```text
    /// warning: duplicate firewall rule (same as rule 2): out ACCEPT tcp 80 -> 10.0.0.12
    ///   --> etc/phoenix_lxc_configs.json:57:17 at lxc_configs."101".firewall.rules[3]
    ///   = help: remove one of them; Proxmox evaluates the first match
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}: {}", self.severity, self.message)?;
        write!(f, "  --> {}", self.file.display())?;
        match (self.line, self.column) {
            (Some(line), Some(column)) => write!(f, ":{line}:{column}")?,
            (Some(line), None) => write!(f, ":{line}")?,
            _ => {}
        }
        if !self.json_path.is_empty() {
            write!(f, " at {}", self.json_path)?;
        }
        if let Some(help) = &self.help {
            write!(f, "\n  = help: {help}")?;
        }
        Ok(())
    }
}

/// The source line a diagnostic points at, with a caret under the column,
/// rustc style:
///
/// ```text
///    |
/// 57 |                 {
///    |                 ^
/// ```
pub fn snippet(source: &str, d: &Diagnostic) -> Option<String> {
    let line_no = d.line?;
    let text = shown_line(source.lines().nth(line_no.checked_sub(1)?)?, d);
    let text = text.as_str();
    let width = line_no.to_string().len();
    let pad = " ".repeat(width);
    let mut out = format!("{pad} |\n{line_no} | {text}\n");
    if let Some(col) = d.column {
        // Columns count characters; tabs keep their width so the caret lines up.
        let lead: String = text
            .chars()
            .take(col.saturating_sub(1))
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        out.push_str(&format!("{pad} | {lead}^\n"));
    }
    Some(out)
}

/// Longest source line shown under a diagnostic, in characters.
const SHOWN_LINE_MAX: usize = 200;

/// A source line as shown under a diagnostic: the string values of keys that
/// look secret are masked (all of the line's values when the finding is about a
/// secret kept in clear), and a long line is cut.
fn shown_line(text: &str, d: &Diagnostic) -> String {
    let last_key = d
        .json_path
        .rsplit('.')
        .next()
        .unwrap_or("")
        .trim_matches('"');
    let about_secret = d.message.contains("in clear")
        || d.message.contains("secret")
        || super::lint::looks_secret(last_key);
    let mut out = String::with_capacity(text.len());
    let mut key: Option<String> = None;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '"' {
            out.push(c);
            continue;
        }
        let mut body = String::new();
        let mut escaped = false;
        let mut closed = false;
        for c in chars.by_ref() {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                closed = true;
                break;
            }
            body.push(c);
        }
        let rest: String = chars.clone().collect();
        let is_key = closed && rest.trim_start().starts_with(':');
        let secret =
            !is_key && (about_secret || key.as_deref().is_some_and(super::lint::looks_secret));
        out.push('"');
        out.push_str(if secret { "(sensitive)" } else { &body });
        if closed {
            out.push('"');
        }
        if is_key {
            key = Some(body);
        }
    }
    if out.chars().count() > SHOWN_LINE_MAX {
        out = out.chars().take(SHOWN_LINE_MAX).collect::<String>() + " ...";
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippets_mask_secret_values_and_cut_long_lines() {
        let d = Diagnostic::warning(
            "etc/x.json",
            "the Portainer admin password is stored in clear",
        )
        .with_path("portainer_api.admin_password")
        .with_position(Some(Position {
            line: 1,
            column: 27,
        }));
        let s = snippet(r#"    "admin_password": "hunter2","#, &d).unwrap();
        assert!(!s.contains("hunter2") && s.contains("(sensitive)"), "{s}");
        let other = Diagnostic::warning("etc/x.json", "something else")
            .with_position(Some(Position { line: 1, column: 1 }));
        let s = snippet(
            r#"{"name": "web", "api_key": "k3y", "token": "t0k"}"#,
            &other,
        )
        .unwrap();
        assert!(
            s.contains("web") && !s.contains("k3y") && !s.contains("t0k"),
            "{s}"
        );
        let long = "x".repeat(10_000);
        assert!(snippet(&long, &other).unwrap().len() < 300);
    }

    #[test]
    fn displays_cargo_style() {
        let d = Diagnostic::warning(
            "etc/phoenix_lxc_configs.json",
            "duplicate firewall rule (same as rule 2): out ACCEPT tcp 80 -> 10.0.0.12",
        )
        .with_path(r#"lxc_configs."101".firewall.rules[3]"#)
        .with_position(Some(Position {
            line: 57,
            column: 17,
        }))
        .with_help("remove one of them; Proxmox evaluates the first match");
        assert_eq!(
            d.to_string(),
            "warning: duplicate firewall rule (same as rule 2): out ACCEPT tcp 80 -> 10.0.0.12\n  \
             --> etc/phoenix_lxc_configs.json:57:17 at lxc_configs.\"101\".firewall.rules[3]\n  \
             = help: remove one of them; Proxmox evaluates the first match"
        );
    }

    #[test]
    fn displays_without_position_or_path() {
        let d = Diagnostic::error("etc/phoenix_vm_configs.json", "file not found");
        assert_eq!(
            d.to_string(),
            "error: file not found\n  --> etc/phoenix_vm_configs.json"
        );
    }
}
