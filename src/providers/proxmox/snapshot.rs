//! `snapshot.<guest>.<name>` on Proxmox: read each guest's snapshot list once
//! (`GET /nodes/{node}/{lxc|qemu}/{vmid}/snapshot`), take one with the
//! fingerprint as its description (`POST .../snapshot`), delete one (`DELETE
//! .../snapshot/{name}`). A replacement is the executor's delete + create.
//! Containers and VMs differ only in the path segment. The attribute mapping
//! is in `model/snapshot.rs`.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

use super::guest::{self, GuestType};
use super::{Pve, params};
use crate::model::snapshot::{self as model, KIND};
use crate::model::{Address, DesiredResource, LiveObject};
use crate::plan::Change;
use crate::providers::{BoxFuture, Lane, OpContext, ProviderError, ResourceProvider};

pub struct SnapshotProvider {
    pve: Arc<Pve>,
}

/// Where a guest lives: node and type.
#[derive(Debug, Clone)]
struct Location {
    node: String,
    ty: GuestType,
    vmid: u32,
}

impl Location {
    fn base(&self) -> String {
        format!(
            "/nodes/{}/{}/{}/snapshot",
            self.node,
            self.ty.path(),
            self.vmid
        )
    }
}

fn parts(addr: &Address) -> Result<(u32, &str), ProviderError> {
    model::parse_name(addr.name()).ok_or_else(|| {
        ProviderError::Other(format!(
            "`{addr}`: a snapshot address is `snapshot.<guest id>.<name>`"
        ))
    })
}

/// The guest's entry in a `/cluster/resources?type=vm` listing.
fn locate(inventory: &[Value], vmid: u32) -> Option<Location> {
    let g = inventory
        .iter()
        .find(|g| g["vmid"].as_u64() == Some(u64::from(vmid)))?;
    let ty = match g["type"].as_str()? {
        "lxc" => GuestType::Lxc,
        "qemu" => GuestType::Qemu,
        _ => return None,
    };
    Some(Location {
        node: g["node"].as_str()?.to_string(),
        ty,
        vmid,
    })
}

fn remote(loc: &Location, name: &str) -> Value {
    json!({"node": loc.node, "vmid": loc.vmid, "type": loc.ty.path(), "name": name})
}

fn remote_location(remote: &Value) -> Option<Location> {
    let ty = match remote["type"].as_str()? {
        "lxc" => GuestType::Lxc,
        "qemu" => GuestType::Qemu,
        _ => return None,
    };
    Some(Location {
        node: remote["node"].as_str()?.to_string(),
        ty,
        vmid: u32::try_from(remote["vmid"].as_u64()?).ok()?,
    })
}

impl SnapshotProvider {
    pub fn new(pve: Arc<Pve>) -> Self {
        SnapshotProvider { pve }
    }

    /// name -> entry of the guest's snapshot list (without PVE's `current`);
    /// `None` if the guest does not exist.
    async fn list(
        &self,
        loc: &Location,
    ) -> Result<Option<BTreeMap<String, serde_json::Map<String, Value>>>, ProviderError> {
        match self.pve.api.get(&loc.base(), &[]).await {
            Ok(v) => Ok(Some(
                v.as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| {
                        let name = e["name"].as_str()?;
                        let entry = e.as_object()?;
                        (name != "current").then(|| (name.to_string(), entry.clone()))
                    })
                    .collect(),
            )),
            Err(ProviderError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Where the guest is now: the run's inventory was read before this
    /// apply created the guest, so ask again.
    async fn locate_fresh(&self, addr: &Address, vmid: u32) -> Result<Location, ProviderError> {
        let inv = self
            .pve
            .api
            .get("/cluster/resources", &params(&[("type", "vm".into())]))
            .await?;
        locate(inv.as_array().map(Vec::as_slice).unwrap_or_default(), vmid).ok_or_else(|| {
            ProviderError::Other(format!(
                "{addr}: guest {vmid} does not exist, so it has nothing to snapshot\n\
                 help: the guest is created first when it is in the manifests; run `phoenix plan`"
            ))
        })
    }

    async fn read_back(
        &self,
        addr: &Address,
        loc: &Location,
        name: &str,
    ) -> Result<LiveObject, ProviderError> {
        let entry = self
            .list(loc)
            .await?
            .and_then(|mut l| l.remove(name))
            .ok_or_else(|| {
                ProviderError::Other(format!("{addr} vanished right after it was taken"))
            })?;
        Ok(LiveObject {
            attrs: model::from_pve(&entry),
            remote: remote(loc, name),
            token: None,
        })
    }

    async fn create_impl(
        &self,
        d: &DesiredResource,
        ctx: &dyn OpContext,
    ) -> Result<LiveObject, ProviderError> {
        let addr = &d.address;
        let (vmid, name) = parts(addr)?;
        let loc = self.locate_fresh(addr, vmid).await?;
        let description = d
            .attrs
            .get("fingerprint")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        ctx.progress(
            "Snapshotting",
            &format!("{} {vmid} as `{name}`", loc.ty.path()),
        );
        let r = self
            .pve
            .api
            .post(
                &loc.base(),
                &params(&[("snapname", name.to_string()), ("description", description)]),
            )
            .await?;
        guest::run_task(&self.pve, addr, r, ctx).await?;
        self.read_back(addr, &loc, name).await
    }

    async fn delete_impl(
        &self,
        addr: &Address,
        remote: &Value,
        ctx: &dyn OpContext,
    ) -> Result<(), ProviderError> {
        let (vmid, name) = parts(addr)?;
        let loc = match remote_location(remote) {
            Some(l) => l,
            None => match self.locate_fresh(addr, vmid).await {
                Ok(l) => l,
                // No guest, no snapshot: already gone.
                Err(_) => return Ok(()),
            },
        };
        // Gone with its guest (a replaced source) or by hand: nothing to do.
        if !self.list(&loc).await?.is_some_and(|l| l.contains_key(name)) {
            return Ok(());
        }
        let r = match self
            .pve
            .api
            .delete(&format!("{}/{name}", loc.base()), &[])
            .await
        {
            Ok(r) => r,
            Err(ProviderError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        guest::run_task(&self.pve, addr, r, ctx).await
    }
}

impl ResourceProvider for SnapshotProvider {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn refresh<'a>(
        &'a self,
        addresses: &'a [Address],
    ) -> BoxFuture<'a, Result<BTreeMap<Address, LiveObject>, ProviderError>> {
        Box::pin(async move {
            let mut out = BTreeMap::new();
            if addresses.is_empty() {
                return Ok(out);
            }
            let inventory = self.pve.inventory().await?;
            let mut by_guest: BTreeMap<u32, Vec<(&Address, &str)>> = BTreeMap::new();
            for a in addresses {
                let (vmid, name) = parts(a)?;
                by_guest.entry(vmid).or_default().push((a, name));
            }
            for (vmid, items) in by_guest {
                let Some(loc) = locate(inventory, vmid) else {
                    continue;
                };
                let Some(mut list) = self.list(&loc).await? else {
                    continue;
                };
                for (a, name) in items {
                    if let Some(entry) = list.remove(name) {
                        out.insert(
                            a.clone(),
                            LiveObject {
                                attrs: model::from_pve(&entry),
                                remote: remote(&loc, name),
                                token: None,
                            },
                        );
                    }
                }
            }
            Ok(out)
        })
    }

    fn create<'a>(
        &'a self,
        desired: &'a DesiredResource,
        ctx: &'a dyn OpContext,
    ) -> BoxFuture<'a, Result<LiveObject, ProviderError>> {
        Box::pin(self.create_impl(desired, ctx))
    }

    fn update<'a>(
        &'a self,
        _desired: &'a DesiredResource,
        live: &'a LiveObject,
        _change: &'a Change,
        _ctx: &'a dyn OpContext,
    ) -> BoxFuture<'a, Result<LiveObject, ProviderError>> {
        // Its only managed attribute forces a replacement: nothing changes in place.
        Box::pin(async move { Ok(live.clone()) })
    }

    fn delete<'a>(
        &'a self,
        address: &'a Address,
        remote: &'a Value,
        ctx: &'a dyn OpContext,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(self.delete_impl(address, remote, ctx))
    }

    fn lanes(&self, change: &Change, _desired: Option<&DesiredResource>) -> Vec<Lane> {
        // The guest's lane: a snapshot locks the guest like any change to it.
        let guest = model::parse_name(change.address.name()).map_or_else(
            || change.address.name().to_string(),
            |(id, _)| id.to_string(),
        );
        vec![Lane {
            key: format!("guest:{guest}"),
            capacity: 1,
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guests_are_found_in_the_inventory_by_type() {
        let inv = vec![
            json!({"vmid": 700, "type": "lxc", "node": "pve1"}),
            json!({"vmid": 9000, "type": "qemu", "node": "pve2"}),
        ];
        let l = locate(&inv, 700).unwrap();
        assert_eq!(l.base(), "/nodes/pve1/lxc/700/snapshot");
        let q = locate(&inv, 9000).unwrap();
        assert_eq!(q.base(), "/nodes/pve2/qemu/9000/snapshot");
        assert!(locate(&inv, 1).is_none());
        let r = remote(&q, "base");
        assert_eq!(remote_location(&r).unwrap().base(), q.base());
    }
}
