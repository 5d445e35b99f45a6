//! Saved plans (`plan --out FILE`): the plan plus the state lineage and serial
//! it was computed against. Written atomically, mode 0600; secrets are never
//! in it (changes carry masked values and keyed fingerprints only).

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::plan::{FORMAT_VERSION, Plan};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedPlan {
    pub format_version: String,
    /// Always `phoenix-plan`, so a state file or a random JSON is not mistaken for one.
    pub kind: String,
    pub phoenix_version: String,
    pub created: String,
    pub lineage: String,
    pub serial: u64,
    pub plan: Plan,
}

const KIND: &str = "phoenix-plan";

pub fn write(path: &Path, plan: &Plan, lineage: &str, serial: u64) -> Result<()> {
    let saved = SavedPlan {
        format_version: FORMAT_VERSION.into(),
        kind: KIND.into(),
        phoenix_version: env!("CARGO_PKG_VERSION").into(),
        created: crate::state::now_rfc3339(),
        lineage: lineage.into(),
        serial,
        plan: plan.clone(),
    };
    let io = |source| Error::Io {
        action: "write the plan file",
        path: path.to_path_buf(),
        source,
    };
    let text = serde_json::to_string_pretty(&saved).map_err(|e| io(std::io::Error::other(e)))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".phoenix-plan-")
        .tempfile_in(&dir)
        .map_err(io)?;
    tmp.write_all(text.as_bytes()).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

pub fn read(path: &Path) -> Result<SavedPlan> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        action: "read the plan file",
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &text)
}

/// Parse the text of the plan file `path` (named in every error).
pub fn parse(path: &Path, text: &str) -> Result<SavedPlan> {
    let bad = |why: String| {
        Error::msg(
            format!("{} is not a phoenix plan file: {why}", path.display()),
            "create one with `phoenix plan --out FILE`",
        )
    };
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| bad(format!("{e} (line {}, column {})", e.line(), e.column())))?;
    if value.get("kind").and_then(|k| k.as_str()) != Some(KIND) {
        return Err(bad("no `\"kind\": \"phoenix-plan\"`".into()));
    }
    match value.get("format_version").and_then(|k| k.as_str()) {
        Some(FORMAT_VERSION) => {}
        other => {
            return Err(Error::msg(
                format!(
                    "{} has plan format {}, this phoenix reads format {FORMAT_VERSION}",
                    path.display(),
                    other.unwrap_or("(none)")
                ),
                "plan and apply with the same phoenix version",
            ));
        }
    }
    serde_path_to_error::deserialize(value)
        .map_err(|e| bad(format!("at `{}`: {}", e.path(), e.inner())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn roundtrip_mode_0600_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("plan.json");
        let plan = Plan {
            changes: vec![],
            drift: vec![],
            refresh_only: false,
            targets: vec![],
            notes: vec![],
        };
        write(&p, &plan, "lin", 3).unwrap();
        let back = read(&p).unwrap();
        assert_eq!(back.serial, 3);
        assert_eq!(back.lineage, "lin");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::write(&p, "{\"format\": \"1\"}").unwrap();
        assert!(
            read(&p)
                .unwrap_err()
                .to_string()
                .contains("not a phoenix plan file")
        );
    }
}
