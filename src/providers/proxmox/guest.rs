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
    let current = status(pve, ty, node, vmid).await?;
    match (action, current.as_str()) {
        (PowerAction::Start, "running") | (PowerAction::Stop, "stopped") => Ok(()),
        (PowerAction::Start, _) | (PowerAction::Restart, "stopped") => {
            set_running(pve, ty, addr, node, vmid, true, ctx).await
        }
        (PowerAction::Stop, _) => set_running(pve, ty, addr, node, vmid, false, ctx).await,
        (PowerAction::Restart, _) => {
            ctx.progress("Restarting", &addr.to_string());
            let base = format!("/nodes/{node}/{}/{vmid}/status", ty.path());
            let call = pve.api.post(&format!("{base}/reboot"), &[]).await?;
            run_task(pve, addr, call, ctx).await
        }
    }
}

/// The vmid in a guest address (`lxc.101`, `vm.1002`).
pub fn vmid_of(addr: &Address) -> Result<u32, ProviderError> {
    addr.name()
        .parse()
        .map_err(|_| ProviderError::Other(format!("`{addr}`: a guest address needs a numeric id")))
}

/// Node and vmid from what the state keeps of a guest.
pub fn remote_parts(remote: &Value, addr: &Address) -> Result<(String, u32), ProviderError> {
    let node = remote["node"].as_str();
    let vmid = remote["vmid"]
        .as_u64()
        .and_then(|v| u32::try_from(v).ok())
        .or_else(|| addr.name().parse().ok());
    match (node, vmid) {
        (Some(n), Some(v)) => Ok((n.to_string(), v)),
        _ => Err(ProviderError::Other(format!(
            "`{addr}`: the state has no node/vmid for it\nhelp: run `phoenix plan` to read it again"
        ))),
    }
}

/// Start, or shut down cleanly (forced after 60 s), without looking first:
/// for callers that know the current state.
pub async fn set_running(
    pve: &Pve,
    ty: GuestType,
    addr: &Address,
    node: &str,
    vmid: u32,
    running: bool,
    ctx: &dyn OpContext,
) -> Result<(), ProviderError> {
    let base = format!("/nodes/{node}/{}/{vmid}/status", ty.path());
    let r = if running {
        ctx.progress("Starting", &addr.to_string());
        pve.api.post(&format!("{base}/start"), &[]).await?
    } else {
        ctx.progress("Stopping", &addr.to_string());
        pve.api
            .post(
                &format!("{base}/shutdown"),
                &params(&[("timeout", "60".into()), ("forceStop", "1".into())]),
            )
            .await?
    };
    run_task(pve, addr, r, ctx).await
}

/// Where each address is according to the bulk inventory: `(address, node,
/// vmid, status)` for the guests that exist. A vmid taken by the other guest
/// type is a conflict, not "absent".
pub async fn locate(
    pve: &Pve,
    ty: GuestType,
    addresses: &[Address],
) -> Result<Vec<(Address, String, u32, Option<String>)>, ProviderError> {
    let mut found = Vec::new();
    for addr in addresses {
        let vmid = vmid_of(addr)?;
        let Some(entry) = pve.inventory_guest(vmid).await? else {
            continue;
        };
        if entry["type"] != ty.path() {
            let what = match ty {
                GuestType::Lxc => "a container",
                GuestType::Qemu => "a VM",
            };
            return Err(ProviderError::Conflict(format!(
                "{addr}: id {vmid} is taken by a {} in Proxmox, not {what}\nhelp: pick another id in the manifest",
                entry["type"].as_str().unwrap_or("guest")
            )));
        }
        let node = entry["node"].as_str().unwrap_or_default().to_string();
        let status = entry["status"].as_str().map(str::to_string);
        found.push((addr.clone(), node, vmid, status));
    }
    Ok(found)
}

/// Run one read per item, at most `pve.read_concurrency` at a time, and
/// collect the objects that exist. Every Proxmox kind reads this way after
/// the bulk inventory.
pub async fn read_all<T, F, Fut>(
    pve: &std::sync::Arc<Pve>,
    items: Vec<T>,
    read: F,
) -> Result<std::collections::BTreeMap<Address, crate::model::LiveObject>, ProviderError>
where
    T: Send + 'static,
    F: Fn(std::sync::Arc<Pve>, T) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<
            Output = (
                Address,
                Result<Option<crate::model::LiveObject>, ProviderError>,
            ),
        > + Send
        + 'static,
{
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(pve.read_concurrency));
    let mut set = tokio::task::JoinSet::new();
    for item in items {
        let (pve, sem, read) = (pve.clone(), sem.clone(), read.clone());
        set.spawn(async move {
            let _permit = sem.acquire_owned().await;
            read(pve, item).await
        });
    }
    let mut out = std::collections::BTreeMap::new();
    while let Some(joined) = set.join_next().await {
        let (addr, r) =
            joined.map_err(|e| ProviderError::Other(format!("a read task failed: {e}")))?;
        if let Some(obj) = r? {
            out.insert(addr, obj);
        }
    }
    Ok(out)
}

/// The node a guest's manifest names, if any.
pub fn desired_node(d: &crate::model::DesiredResource) -> Option<String> {
    d.create
        .get("node")
        .and_then(Value::as_str)
        .map(str::to_string)
}
