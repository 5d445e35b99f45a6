//! `phoenix validate`: load every manifest; errors exit 1, warnings 0.

use super::Exit;
use crate::error::{Error, Result};
use crate::manifest::{self, ManifestError, Severity};
use crate::ops::Context;

pub fn run(ctx: &Context) -> Result<Exit> {
    let diagnostics = match manifest::load(&ctx.root) {
        Ok(l) => {
            let built = crate::model::desired(&l.site);
            let mut d = l.diagnostics;
            if let Err(mut errs) = built {
                d.append(&mut errs);
            }
            d
        }
        Err(ManifestError::Invalid { diagnostics }) => diagnostics,
        Err(e) => return Err(Error::Manifest(e)),
    };
    for d in &diagnostics {
        ctx.shell.raw(d);
        // Only a finding with a line has a snippet (and a file refused for its size is not read).
        let source = match d.line {
            Some(_) => std::fs::read_to_string(ctx.root.join(&d.file)).unwrap_or_default(),
            None => String::new(),
        };
        if let Some(s) = crate::manifest::diagnostic::snippet(&source, d) {
            ctx.shell.raw(s.trim_end());
        }
        ctx.shell.raw("");
    }
    let errors = diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    let warnings = diagnostics.len() - errors;
    if errors > 0 {
        return Err(Error::msg(
            format!(
                "{} is not valid: {errors} error(s), {warnings} warning(s)",
                ctx.root.display()
            ),
            "fix the errors above; each names its file, line and JSON path",
        ));
    }
    ctx.shell.status(
        "Validated",
        format!("{}: 0 errors, {warnings} warning(s)", ctx.root.display()),
    );
    Ok(Exit::Success)
}
