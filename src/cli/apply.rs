//! `phoenix apply [PLANFILE]`.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use clap::Args;

use super::{Exit, LockArgs, ParallelArgs, parse_address};
use crate::error::{Error, Result};
use crate::model::Address;
use crate::ops::Context;
use crate::ops::apply::{ApplyOptions, apply};

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// A plan saved with `phoenix plan --out FILE`; applied without a prompt if still current.
    pub planfile: Option<PathBuf>,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub auto_approve: bool,
    /// Limit the apply to ADDR and what it depends on (repeatable).
    #[arg(long = "target", value_name = "ADDR", value_parser = parse_address, conflicts_with = "planfile")]
    pub targets: Vec<Address>,
    /// Allow destroying or replacing guests (their data goes with them).
    #[arg(long)]
    pub allow_destroy: bool,
    /// Take objects that exist but are not in the state into it.
    #[arg(long)]
    pub adopt: bool,
    #[command(flatten)]
    pub lock: LockArgs,
    #[command(flatten)]
    pub parallel: ParallelArgs,
}

fn prompt() -> Result<bool> {
    let mut err = std::io::stderr();
    let _ = write!(
        err,
        "\nDo you want to perform these actions?\n  Only 'yes' will be accepted to approve.\n\n  Enter a value: "
    );
    let _ = err.flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|source| Error::Io {
            action: "read the answer from",
            path: PathBuf::from("stdin"),
            source,
        })?;
    Ok(line.trim() == "yes")
}

pub fn run(ctx: &Context, a: ApplyArgs) -> Result<Exit> {
    let opts = ApplyOptions {
        plan_file: a.planfile,
        auto_approve: a.auto_approve,
        targets: a.targets,
        allow_destroy: a.allow_destroy,
        remove: Vec::new(),
        adopt: a.adopt,
        parallelism: a.parallel.parallelism as usize,
        lock_timeout: a.lock.lock_timeout,
    };
    let mut confirm = |_: &crate::plan::Plan| prompt();
    super::runtime()?.block_on(apply(ctx, &opts, &mut confirm))?;
    Ok(Exit::Success)
}
