//! The seed system's verbs: `sync`, `create`, `converge`, `delete`, `start`,
//! `stop`, `restart`, `status`, `LetsGo`, each mapped onto plan/apply.

use clap::Args;

use super::{Exit, LockArgs, ParallelArgs};
use crate::error::{Error, Result};
use crate::ops::apply::{ApplyOptions, ApplyStatus, apply};
use crate::ops::{self, Context, PlanOptions, seed};
use crate::providers::PowerAction;

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// `all`, or guest ids / addresses (each with what it depends on).
    #[arg(required = true, value_name = "all|ID|ADDR")]
    pub targets: Vec<String>,
    #[command(flatten)]
    pub common: VerbArgs,
}

#[derive(Debug, Args)]
pub struct GuestsArgs {
    /// Guest ids (`101`) or addresses (`lxc.101`).
    #[arg(required = true, value_name = "ID|ADDR")]
    pub guests: Vec<String>,
    #[command(flatten)]
    pub common: VerbArgs,
}

#[derive(Debug, Args)]
pub struct VerbArgs {
    /// Print the plan and stop.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub auto_approve: bool,
    #[command(flatten)]
    pub lock: LockArgs,
    #[command(flatten)]
    pub parallel: ParallelArgs,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub guests: GuestsArgs,
    /// With `--auto-approve`: confirm that the guests and their data go.
    #[arg(long)]
    pub allow_destroy: bool,
}

#[derive(Debug, Args)]
pub struct PowerArgs {
    /// Guest ids (`101`) or addresses (`lxc.101`); only these are acted on.
    #[arg(required = true, value_name = "ID|ADDR")]
    pub guests: Vec<String>,
    /// Print what would be done and stop.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub lock: LockArgs,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Guest ids or addresses (default: every guest).
    #[arg(value_name = "ID|ADDR")]
    pub guests: Vec<String>,
    /// Print the table as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub lock: LockArgs,
}

fn prompt(question: &str) -> Result<bool> {
    use std::io::{BufRead, Write};
    let mut err = std::io::stderr();
    let _ = write!(
        err,
        "\n{question}\n  Only 'yes' will be accepted to approve.\n\n  Enter a value: "
    );
    let _ = err.flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|source| Error::Io {
            action: "read the answer from",
            path: "stdin".into(),
            source,
        })?;
    Ok(line.trim() == "yes")
}

/// Plan (for `--dry-run`) or apply, limited to `targets` (empty: everything).
fn plan_or_apply(
    ctx: &Context,
    targets: Vec<crate::model::Address>,
    v: &VerbArgs,
    remove: Vec<crate::model::Address>,
    allow_destroy: bool,
) -> Result<ApplyStatus> {
    let rt = super::runtime()?;
    if v.dry_run {
        let opts = PlanOptions {
            targets,
            remove,
            read_only: true,
            lock_timeout: v.lock.lock_timeout,
            parallelism: v.parallel.parallelism as usize,
            ..Default::default()
        };
        let planned = rt.block_on(ops::compute_plan(ctx, &opts, None))?;
        ops::render(
            &planned.plan,
            ops::OutputFormat::Text,
            &mut std::io::stdout(),
            ctx.shell.color(),
        )?;
        ctx.shell.status("Finished", "dry run: nothing was changed");
        return Ok(ApplyStatus::Declined);
    }
    let deleting = !remove.is_empty();
    let opts = ApplyOptions {
        targets,
        remove,
        auto_approve: v.auto_approve,
        allow_destroy,
        parallelism: v.parallel.parallelism as usize,
        lock_timeout: v.lock.lock_timeout,
        ..Default::default()
    };
    let question = if deleting {
        "Do you want to DESTROY these guests and their data?"
    } else {
        "Do you want to perform these actions?"
    };
    let mut confirm = |_: &crate::plan::Plan| prompt(question);
    rt.block_on(apply(ctx, &opts, &mut confirm))
}

pub fn sync(ctx: &Context, a: SyncArgs) -> Result<Exit> {
    let targets = if a.targets.iter().any(|t| t == "all") {
        if a.targets.len() > 1 {
            return Err(Error::msg(
                "`all` cannot be combined with other targets",
                "use `phoenix sync all` alone",
            ));
        }
        Vec::new()
    } else {
        seed::resolve_now(ctx, &a.targets, a.common.lock.lock_timeout)?
    };
    plan_or_apply(ctx, targets, &a.common, Vec::new(), false)?;
    Ok(Exit::Success)
}

/// `create` and `converge`: the same thing now: create what is missing,
/// change only what differs, for the guests and what they depend on.
pub fn converge(ctx: &Context, a: GuestsArgs) -> Result<Exit> {
    let targets = seed::resolve_now(ctx, &a.guests, a.common.lock.lock_timeout)?;
    plan_or_apply(ctx, targets, &a.common, Vec::new(), false)?;
    Ok(Exit::Success)
}

pub fn delete(ctx: &Context, a: DeleteArgs) -> Result<Exit> {
    let g = &a.guests;
    if g.common.auto_approve && !a.allow_destroy && !g.common.dry_run {
        return Err(Error::msg(
            "`delete --auto-approve` destroys guests without asking",
            "add `--allow-destroy` to confirm, or leave out `--auto-approve` to be asked",
        ));
    }
    let targets = seed::resolve_now(ctx, &g.guests, g.common.lock.lock_timeout)?;
    // Typing `yes` at the prompt is the explicit confirmation that allows the destroy.
    plan_or_apply(ctx, Vec::new(), &g.common, targets, true)?;
    Ok(Exit::Success)
}

pub fn power(ctx: &Context, a: PowerArgs, action: PowerAction) -> Result<Exit> {
    super::runtime()?.block_on(seed::power(
        ctx,
        &a.guests,
        action,
        a.dry_run,
        a.lock.lock_timeout,
    ))?;
    Ok(Exit::Success)
}

pub fn status(ctx: &Context, a: StatusArgs) -> Result<Exit> {
    let rows = super::runtime()?.block_on(seed::status(ctx, &a.guests, a.lock.lock_timeout))?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
    } else {
        seed::print_status(&rows);
    }
    Ok(Exit::Success)
}

/// `LetsGo`: apply every guest in dependency order, then start the guests
/// that should run, in `boot_order`. Unlike the seed, it goes on past the first guest.
pub fn lets_go(ctx: &Context, v: VerbArgs) -> Result<Exit> {
    let status = plan_or_apply(ctx, Vec::new(), &v, Vec::new(), false)?;
    if status == ApplyStatus::Declined {
        return Ok(Exit::Success);
    }
    let site = ops::load_site(ctx)?;
    let desired = ops::desired(ctx, &site)?;
    let guests: Vec<crate::model::Address> = desired
        .resources
        .iter()
        .filter(|(a, r)| {
            a.is_guest() && r.attrs.get("status").and_then(|s| s.as_str()) == Some("running")
        })
        .map(|(a, _)| a.clone())
        .collect();
    let ordered: Vec<String> = seed::boot_order(&desired, &guests)
        .iter()
        .map(ToString::to_string)
        .collect();
    if ordered.is_empty() {
        return Ok(Exit::Success);
    }
    super::runtime()?.block_on(seed::power(
        ctx,
        &ordered,
        PowerAction::Start,
        false,
        v.lock.lock_timeout,
    ))?;
    Ok(Exit::Success)
}
