//! `phoenix state list | show ADDR | rm ADDR | pull | push FILE | migrate --to pg|local`.

use std::io::Read;
use std::path::PathBuf;

use clap::{Subcommand, ValueEnum};

use super::{Exit, LockArgs, parse_address};
use crate::error::{Error, Result};
use crate::model::Address;
use crate::ops::Context;
use crate::ops::state_cmds::{self, MigrateTo, Pushed};

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// List the addresses phoenix manages.
    List {
        #[command(flatten)]
        lock: LockArgs,
    },
    /// Print what the state holds for ADDR, as JSON.
    Show {
        #[arg(value_parser = parse_address)]
        address: Address,
        #[command(flatten)]
        lock: LockArgs,
    },
    /// Stop managing ADDR: drop it from the state, leave the object alone.
    Rm {
        #[arg(value_parser = parse_address)]
        address: Address,
        #[command(flatten)]
        lock: LockArgs,
    },
    /// Print the whole state document of the backend (no secret key), for a copy or a look.
    Pull {
        #[command(flatten)]
        lock: LockArgs,
    },
    /// Make a state document (from `state pull`, or a state file) the backend's state, serial and
    /// lineage kept; refused if it is older than the state there or of another lineage.
    Push {
        /// The document, or `-` for stdin.
        file: PathBuf,
        /// Replace the state even if it is newer or of another lineage.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        lock: LockArgs,
    },
    /// Copy the state and its secret key between the local file (`--state`) and the pg workspace
    /// (PHOENIX_PG_URL, `--workspace`), serial and lineage kept; the source is left as it was.
    Migrate {
        /// The backend to move to: `pg` (from the local file) or `local` (from pg).
        #[arg(long, value_enum)]
        to: MigrateTarget,
        #[command(flatten)]
        lock: LockArgs,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MigrateTarget {
    Local,
    Pg,
}

pub fn run(ctx: &Context, c: StateCommand) -> Result<Exit> {
    match c {
        StateCommand::List { lock } => {
            for a in state_cmds::list(ctx, lock.lock_timeout)? {
                println!("{a}");
            }
        }
        StateCommand::Show { address, lock } => {
            let r = state_cmds::show(ctx, &address, lock.lock_timeout)?;
            println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
        }
        StateCommand::Rm { address, lock } => {
            let serial = state_cmds::rm(ctx, &address, lock.lock_timeout)?;
            ctx.shell.status(
                "Removed",
                format!(
                    "{address} from the state (serial {serial}); the object itself is untouched"
                ),
            );
        }
        StateCommand::Pull { lock } => {
            print!("{}", state_cmds::pull(ctx, lock.lock_timeout)?);
        }
        StateCommand::Push { file, force, lock } => {
            let text = if file.as_os_str() == "-" {
                let mut s = String::new();
                std::io::stdin()
                    .read_to_string(&mut s)
                    .map_err(|source| Error::Io {
                        action: "read the state document from",
                        path: PathBuf::from("stdin"),
                        source,
                    })?;
                s
            } else {
                std::fs::read_to_string(&file).map_err(|source| Error::Io {
                    action: "read",
                    path: file.clone(),
                    source,
                })?
            };
            match state_cmds::push(ctx, &file, &text, force, lock.lock_timeout)? {
                Pushed::Written { serial } => ctx.shell.status(
                    "Pushed",
                    format!(
                        "the state to {} (serial {serial})",
                        ctx.backend().location()
                    ),
                ),
                Pushed::AlreadyThere { serial } => ctx.shell.status(
                    "Fresh",
                    format!(
                        "{} already holds this state (serial {serial})",
                        ctx.backend().location()
                    ),
                ),
            }
        }
        StateCommand::Migrate { to, lock } => {
            let to = match to {
                MigrateTarget::Local => MigrateTo::Local,
                MigrateTarget::Pg => MigrateTo::Pg,
            };
            let m = state_cmds::migrate(ctx, to, lock.lock_timeout)?;
            ctx.shell.status(
                "Migrated",
                format!(
                    "the state (serial {}, lineage {}) from {} to {}{}",
                    m.serial,
                    m.lineage,
                    m.from,
                    m.to,
                    if m.key { ", with its secret key" } else { "" }
                ),
            );
            let flag = match to {
                MigrateTo::Pg => "`--backend pg` (or PHOENIX_BACKEND=pg)",
                MigrateTo::Local => "`--backend local` (the default)",
            };
            ctx.shell.note(format!(
                "the source is left as it was; use {flag} from now on, and remove the old copy once \
                 everyone has switched"
            ));
        }
    }
    Ok(Exit::Success)
}
