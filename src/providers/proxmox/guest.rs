//! What LXC containers and QEMU VMs share on Proxmox: power actions on
//! `/nodes/{node}/{lxc|qemu}/{vmid}/status/*`, each a task polled to the end.

use serde_json::Value;

use super::{Pve, params, task};
use crate::model::Address;
use crate::providers::{OpContext, PowerAction, ProviderError};

/// `lxc` or `qemu`: the path segment of a guest type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestType {
    Lxc,
    Qemu,
}

impl GuestType {
    pub fn path(self) -> &'static str {
        match self {
            GuestType::Lxc => "lxc",
            GuestType::Qemu => "qemu",
        }
    }
}

/// Run a task-returning call and wait for it, journaling the UPID first.
pub async fn run_task(
    pve: &Pve,
    addr: &Address,
    result: Value,
    ctx: &dyn OpContext,
) -> Result<(), ProviderError> {
    if let Some(upid) = result.as_str().filter(|s| s.starts_with("UPID:")) {
        ctx.task_started(addr, upid);
        ctx.progress("Waiting", &format!("{addr} on {upid}"));
        task::wait(pve.api.as_ref(), upid, pve.task_timeout).await?;
    }
    Ok(())
}

/// The run status of a guest, from `status/current`.
pub async fn status(
    pve: &Pve,
    ty: GuestType,
    node: &str,
    vmid: u32,
) -> Result<String, ProviderError> {
    let st = pve
        .api
        .get(
            &format!("/nodes/{node}/{}/{vmid}/status/current", ty.path()),
            &[],
        )
        .await?;
    Ok(st["status"].as_str().unwrap_or("unknown").to_string())
}

/// Start, stop (clean shutdown, forced after 60 s) or restart a guest.
/// Asking for the state it is already in is not an error.
pub async fn power(
    pve: &Pve,
    ty: GuestType,
    addr: &Address,
    node: &str,
    vmid: u32,
    action: PowerAction,
    ctx: &dyn OpContext,
) -> Result<(), ProviderError> {
    let base = format!("/nodes/{node}/{}/{vmid}/status", ty.path());
    let current = status(pve, ty, node, vmid).await?;
    let call = match (action, current.as_str()) {
        (PowerAction::Start, "running") | (PowerAction::Stop, "stopped") => return Ok(()),
        (PowerAction::Start, _) | (PowerAction::Restart, "stopped") => {
            ctx.progress("Starting", &addr.to_string());
            pve.api.post(&format!("{base}/start"), &[]).await?
        }
        (PowerAction::Stop, _) => {
            ctx.progress("Stopping", &addr.to_string());
            pve.api
                .post(
                    &format!("{base}/shutdown"),
                    &params(&[("timeout", "60".into()), ("forceStop", "1".into())]),
                )
                .await?
        }
        (PowerAction::Restart, _) => {
            ctx.progress("Restarting", &addr.to_string());
            pve.api.post(&format!("{base}/reboot"), &[]).await?
        }
    };
    run_task(pve, addr, call, ctx).await
}
