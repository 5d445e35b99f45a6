//! `phoenix plan`.

use std::path::PathBuf;

use clap::Args;

use super::{Exit, Format, LockArgs, ParallelArgs, parse_address};
use crate::error::Result;
use crate::model::Address;
use crate::ops::{self, Context, OutputFormat, PlanOptions};

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Exit 2 when the plan has changes (0: none, 1: error).
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Print the plan as JSON (same as `--format json`).
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    /// Output format.
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Save the plan to FILE (mode 0600) for `phoenix apply FILE`.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Limit the plan to ADDR and what it depends on (repeatable).
    #[arg(long = "target", value_name = "ADDR", value_parser = parse_address)]
    pub targets: Vec<Address>,
    /// Only report changes made outside phoenix; plan nothing.
    #[arg(long)]
    pub refresh_only: bool,
    /// Take objects that exist but are not in the state into it.
    #[arg(long)]
    pub adopt: bool,
    #[command(flatten)]
    pub lock: LockArgs,
    #[command(flatten)]
    pub parallel: ParallelArgs,
}

pub fn output_format(json: bool, format: Option<Format>) -> OutputFormat {
    match (json, format) {
        (true, _) | (_, Some(Format::Json)) => OutputFormat::Json,
        (_, Some(Format::Markdown)) => OutputFormat::Markdown,
        _ => OutputFormat::Text,
    }
}

pub fn run(ctx: &Context, a: PlanArgs) -> Result<Exit> {
    let opts = PlanOptions {
        targets: a.targets,
        adopt: a.adopt,
        refresh_only: a.refresh_only,
        lock_timeout: a.lock.lock_timeout,
        remove: Vec::new(),
        read_only: a.out.is_none(),
        parallelism: a.parallel.parallelism as usize,
    };
    let planned = super::runtime()?.block_on(ops::compute_plan(ctx, &opts, None))?;
    let mut out = std::io::stdout();
    ops::render(
        &planned.plan,
        output_format(a.json, a.format),
        &mut out,
        ctx.shell.color(),
    )?;
    if let Some(path) = &a.out {
        ops::planfile::write(
            path,
            &planned.plan,
            &planned.state.lineage,
            planned.state.serial,
        )?;
        ctx.shell.status(
            "Saved",
            format!(
                "the plan to {}; apply it with `phoenix apply {}`",
                path.display(),
                path.display()
            ),
        );
    }
    Ok(if a.detailed_exitcode && planned.plan.has_changes() {
        Exit::Changes
    } else {
        Exit::Success
    })
}
