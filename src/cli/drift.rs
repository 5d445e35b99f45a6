//! `phoenix drift`: read-only, for CI.

use clap::Args;

use super::{Exit, Format, LockArgs};
use crate::error::Result;
use crate::ops::{self, Context, DriftStatus};

#[derive(Debug, Args)]
pub struct DriftArgs {
    /// Print the findings as JSON (same as `--format json`).
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    /// Output format.
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    #[command(flatten)]
    pub lock: LockArgs,
}

pub fn run(ctx: &Context, a: DriftArgs) -> Result<Exit> {
    let (plan, status) = super::runtime()?.block_on(ops::drift(ctx, a.lock.lock_timeout))?;
    let mut out = std::io::stdout();
    ops::render(
        &plan,
        super::plan::output_format(a.json, a.format),
        &mut out,
        ctx.shell.color(),
    )?;
    Ok(match status {
        DriftStatus::InSync => Exit::Success,
        DriftStatus::PendingManifestChanges => Exit::Changes,
        DriftStatus::Drifted => Exit::Drift,
    })
}
