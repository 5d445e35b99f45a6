//! `phoenix import ADDR`.

use clap::Args;

use super::{Exit, LockArgs, parse_address};
use crate::error::Result;
use crate::model::Address;
use crate::ops::Context;

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The address to take over, e.g. `lxc.101`; it must be in the manifests and exist.
    #[arg(value_parser = parse_address)]
    pub address: Address,
    #[command(flatten)]
    pub lock: LockArgs,
}

pub fn run(ctx: &Context, a: ImportArgs) -> Result<Exit> {
    super::runtime()?.block_on(crate::ops::apply::import(
        ctx,
        &a.address,
        a.lock.lock_timeout,
    ))?;
    Ok(Exit::Success)
}
