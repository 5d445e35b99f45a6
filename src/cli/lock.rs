//! `phoenix force-unlock LOCK_ID`.

use clap::Args;

use super::Exit;
use crate::error::Result;
use crate::ops::{Context, state_cmds};

#[derive(Debug, Args)]
pub struct ForceUnlockArgs {
    /// The lock ID, as shown in the "state is locked" message.
    pub lock_id: String,
}

pub fn run(ctx: &Context, a: ForceUnlockArgs) -> Result<Exit> {
    let info = state_cmds::force_unlock(ctx, &a.lock_id)?;
    ctx.shell
        .status("Unlocked", format!("the state (was: {info})"));
    Ok(Exit::Success)
}
