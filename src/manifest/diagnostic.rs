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
    let text = source.lines().nth(line_no.checked_sub(1)?)?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
