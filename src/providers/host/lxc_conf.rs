//! `lxc_conf.<ctid>` on the host: the container's config file
//! `/etc/pve/nodes/<node>/lxc/<ctid>.conf` (pmxcfs), read with `cat` and
//! rewritten whole (temp file and rename, as PVE itself writes it) when its
//! content is still what phoenix read, so an edit made meanwhile by PVE or a
//! person is never overwritten. Which node holds the container, and whether it
//! runs, come from Proxmox; a running container is restarted through the API
//! after a change, for the lines act only at start (the plan says so first).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

use super::install::{self, sh};
use super::{Host, Machine};
use crate::model::lxc_conf::{self as model, KIND};
use crate::model::{Address, DesiredResource, LiveObject};
use crate::plan::Change;
use crate::providers::proxmox::Pve;
use crate::providers::proxmox::guest::{self, GuestType};
use crate::providers::{BoxFuture, Lane, OpContext, PowerAction, ProviderError, ResourceProvider};

/// `$1` the file, `$2` the sha256 of the content phoenix changed; the new content on stdin.
const REPLACE: &str = r#"
set -u
f=$1 want=$2
[ -f "$f" ] || { echo "$f does not exist" >&2; exit 44; }
have=$(sha256sum < "$f") || exit 1
[ "${have%% *}" = "$want" ] || { echo "$f changed while phoenix was editing it: run phoenix again" >&2; exit 45; }
tmp=$f.tmp.$$
if ! cat > "$tmp"; then rm -f "$tmp"; exit 1; fi
mv -f "$tmp" "$f" || { rm -f "$tmp"; exit 1; }
"#;

/// `$1` a directory, `$2` `uid:gid` or empty: make it, and give it its owner.
const MAKE_DIR: &str = r#"mkdir -p -- "$1" && { [ -z "$2" ] || chown -- "$2" "$1"; }"#;

pub struct LxcConfProvider {
    host: Arc<Host>,
    pve: Arc<Pve>,
}

/// Where a container is: its node and whether it runs.
struct Located {
    node: String,
    vmid: u32,
    running: bool,
}

fn conf_path(node: &str, vmid: u32) -> String {
    format!("/etc/pve/nodes/{node}/lxc/{vmid}.conf")
}

impl LxcConfProvider {
    pub fn new(host: Arc<Host>, pve: Arc<Pve>) -> Self {
        LxcConfProvider { host, pve }
    }

    /// From the run's inventory, or (`fresh`) from Proxmox now: a container
    /// this apply created is not in the inventory the plan was made from.
    async fn locate(&self, addr: &Address, fresh: bool) -> Result<Option<Located>, ProviderError> {
        let vmid = guest::vmid_of(addr)?;
        let Some(g) = self.pve.guest_entry(vmid, fresh).await? else {
            return Ok(None);
        };
        if g["type"].as_str() != Some("lxc") {
            return Err(ProviderError::Conflict(format!(
                "{addr}: guest {vmid} is a VM in Proxmox, not a container"
            )));
        }
        Ok(Some(Located {
            node: g["node"].as_str().unwrap_or_default().to_string(),
            vmid,
            running: g["status"].as_str() == Some("running"),
        }))
    }

    /// The config file's content; a container without one means phoenix is
    /// not looking at the Proxmox host.
    async fn content(&self, addr: &Address, at: &Located) -> Result<String, ProviderError> {
        let path = conf_path(&at.node, at.vmid);
        match install::read(self.host.as_ref(), &self.host.path(&path), None).await? {
            Some(f) => Ok(f.content),
            None => Err(ProviderError::Config(format!(
                "{addr}: Proxmox has the container on node `{}`, but {path} is not on the host phoenix reaches\n\
                 help: point PHOENIX_HOST at that Proxmox node (`ssh://root@<node>`), or run phoenix on it",
                at.node
            ))),
        }
    }

    fn live(at: &Located, content: &str) -> LiveObject {
        let status = if at.running { "running" } else { "stopped" };
        LiveObject {
            attrs: model::attrs_of(&model::parse_conf(content), status),
            remote: json!({"node": at.node, "vmid": at.vmid}),
            token: None,
        }
    }

    async fn replace(&self, path: &str, old: &str, new: &str) -> Result<(), ProviderError> {
        let argv = sh(
            REPLACE,
            &[
                self.host.path(path),
                crate::model::sha256_hex(old.as_bytes()),
            ],
        );
        let out = self.host.exec(&argv, Some(new.as_bytes())).await?;
        if out.success() {
            Ok(())
        } else {
            Err(ProviderError::Conflict(format!(
                "writing {path} on the host failed: {}",
                out.tail().join("; ")
            )))
        }
    }

    async fn make_dirs(
        &self,
        desired: &DesiredResource,
        ctx: &dyn OpContext,
    ) -> Result<(), ProviderError> {
        for d in desired
            .create
            .get("dirs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(path) = d["path"].as_str() else {
                continue;
            };
            let owner = d["owner"].as_str().unwrap_or_default();
            ctx.progress(
                "Preparing",
                &format!("{} host directory {path}", desired.address),
            );
            let argv = sh(MAKE_DIR, &[self.host.path(path), owner.to_string()]);
            let out = self.host.exec(&argv, None).await?;
            if !out.success() {
                return Err(ProviderError::Other(format!(
                    "{}: making the host directory {path} failed: {}",
                    desired.address,
                    out.tail().join("; ")
                )));
            }
        }
        Ok(())
    }

    async fn write(
        &self,
        desired: &DesiredResource,
        ctx: &dyn OpContext,
    ) -> Result<LiveObject, ProviderError> {
        let addr = &desired.address;
        let at = self.locate(addr, true).await?.ok_or_else(|| {
            ProviderError::NotFound(format!("the container of {addr} (lxc.{})", addr.name()))
        })?;
        // The host directories first: a bind mount of a missing one stops the container's start.
        self.make_dirs(desired, ctx).await?;
        let old = self.content(addr, &at).await?;
        let new = model::rewrite(
            &old,
            desired.attr_str("lines"),
            desired.attr_str("bind_mounts"),
        );
        if new != old {
            let path = conf_path(&at.node, at.vmid);
            ctx.progress("Writing", &format!("{addr} {path} on the host"));
            self.replace(&path, &old, &new).await?;
            if at.running {
                let lxc = Address::new(crate::model::lxc::KIND, addr.name());
                guest::power(
                    &self.pve,
                    GuestType::Lxc,
                    &lxc,
                    &at.node,
                    at.vmid,
                    PowerAction::Restart,
                    ctx,
                )
                .await?;
            }
        }
        Ok(Self::live(&at, &self.content(addr, &at).await?))
    }
}

impl ResourceProvider for LxcConfProvider {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn refresh<'a>(
        &'a self,
        addresses: &'a [Address],
    ) -> BoxFuture<'a, Result<BTreeMap<Address, LiveObject>, ProviderError>> {
        Box::pin(async move {
            let mut out = BTreeMap::new();
            for addr in addresses {
                if let Some(at) = self.locate(addr, false).await? {
                    let content = self.content(addr, &at).await?;
                    out.insert(addr.clone(), Self::live(&at, &content));
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
        Box::pin(self.write(desired, ctx))
    }

    fn update<'a>(
        &'a self,
        desired: &'a DesiredResource,
        _live: &'a LiveObject,
        _change: &'a Change,
        ctx: &'a dyn OpContext,
    ) -> BoxFuture<'a, Result<LiveObject, ProviderError>> {
        Box::pin(self.write(desired, ctx))
    }

    /// Takes phoenix's lines and bind mounts out of the file, without a
    /// restart: they stop acting at the container's next start. A container
    /// that is gone took its file with it.
    fn delete<'a>(
        &'a self,
        address: &'a Address,
        _remote: &'a Value,
        ctx: &'a dyn OpContext,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            let Some(at) = self.locate(address, true).await? else {
                return Ok(());
            };
            let old = self.content(address, &at).await?;
            let new = model::rewrite(&old, "", "");
            if new != old {
                let path = conf_path(&at.node, at.vmid);
                ctx.progress("Removing", &format!("{address} lines from {path}"));
                self.replace(&path, &old, &new).await?;
            }
            Ok(())
        })
    }

    fn lanes(&self, change: &Change, _desired: Option<&DesiredResource>) -> Vec<Lane> {
        vec![Lane {
            key: format!("guest:{}", change.address.name()),
            capacity: 1,
        }]
    }
}
