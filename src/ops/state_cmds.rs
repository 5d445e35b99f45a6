//! `phoenix state list | show | rm` and `phoenix force-unlock`.

use std::time::Duration;

use super::Context;
use crate::error::{Error, Result};
use crate::model::Address;
use crate::state::{LockMode, ResourceState, lock};

pub fn list(ctx: &Context, lock_timeout: Duration) -> Result<Vec<Address>> {
    let _g = ctx.lock(LockMode::Shared, "state list", lock_timeout)?;
    Ok(ctx.load_state()?.state.resources.keys().cloned().collect())
}

pub fn show(ctx: &Context, addr: &Address, lock_timeout: Duration) -> Result<ResourceState> {
    let _g = ctx.lock(LockMode::Shared, "state show", lock_timeout)?;
    let st = ctx.load_state()?.state;
    st.resources.get(addr).cloned().ok_or_else(|| {
        Error::msg(
            format!("`{addr}` is not in the state"),
            "`phoenix state list` shows what phoenix manages",
        )
    })
}

/// Drop an address from the state; the object itself is left alone.
pub fn rm(ctx: &Context, addr: &Address, lock_timeout: Duration) -> Result<u64> {
    let _g = ctx.lock(LockMode::Exclusive, "state rm", lock_timeout)?;
    let loaded = ctx.load_state()?;
    let mut st = loaded.state.clone();
    if st.resources.remove(addr).is_none() {
        return Err(Error::msg(
            format!("`{addr}` is not in the state"),
            "`phoenix state list` shows what phoenix manages",
        ));
    }
    st.clear_pending(addr);
    ctx.backend().save(&mut st, &loaded.state)?;
    Ok(st.serial)
}

pub fn force_unlock(ctx: &Context, id: &str) -> Result<lock::LockInfo> {
    Ok(lock::force_unlock(&ctx.backend().lock_path(), id)?)
}
