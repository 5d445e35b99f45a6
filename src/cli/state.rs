//! `phoenix state list | show ADDR | rm ADDR`.

use clap::Subcommand;

use super::{Exit, LockArgs, parse_address};
use crate::error::Result;
use crate::model::Address;
use crate::ops::{Context, state_cmds};

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
    }
    Ok(Exit::Success)
}
