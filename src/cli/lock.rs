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
    let u = state_cmds::force_unlock(ctx, &a.lock_id)?;
    if u.ended_session {
        ctx.shell.warn(format!(
            "the holder's database session was alive and has been ended; if that phoenix is \
             still running, its next state write fails and nothing it did is lost (was: {})",
            u.holder
        ));
    }
    ctx.shell
        .status("Unlocked", format!("the state (was: {})", u.holder));
    Ok(Exit::Success)
}
