//! `file.<name>` in a guest: read with `cat` (and `stat`, `readlink`) through
//! the guest's [`Machine`], written with [`install`]: the spec's check (`nginx
//! -t`) and reload run in the guest, and a failure puts the previous file back.
//!
//! A file can be read only while its container runs: a container that does not
//! exist or is stopped (as Proxmox says, `/cluster/resources`) has no file for
//! the plan, which then creates it after the container (the file depends on it).
//! Which container holds `file.<name>` comes from the manifests
//! ([`crate::model::file::locations`]); a delete uses the container recorded
//! in the state.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

use super::Host;
use super::guest::LxcGuest;
use super::install::{self, Install};
use crate::model::file::{self as model, FileSpec, KIND, MODE};
use crate::model::{Address, DesiredResource, LiveObject};
use crate::plan::Change;
use crate::providers::proxmox::Pve;
use crate::providers::{BoxFuture, Lane, OpContext, ProviderError, ResourceProvider};

pub struct FileProvider {
    host: Arc<Host>,
    pve: Arc<Pve>,
    pct: String,
    files: Vec<(&'static str, u32)>,
}

/// Whether a guest exists and runs, per Proxmox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Presence {
    Missing,
    Stopped,
    Running,
}

fn spec_of(addr: &Address) -> Result<&'static FileSpec, ProviderError> {
    model::spec(addr.name()).ok_or_else(|| {
        ProviderError::Other(format!("{addr} is not a file phoenix knows how to write"))
    })
}

fn install_of(spec: &FileSpec) -> Install<'static> {
    Install {
        path: spec.path,
        mode: MODE,
        link: spec.link,
        precheck: None,
        check: spec.check,
        reload: spec.reload,
    }
}

impl FileProvider {
    pub fn new(
        host: Arc<Host>,
        pve: Arc<Pve>,
        pct: String,
        files: Vec<(&'static str, u32)>,
    ) -> Self {
        FileProvider {
            host,
            pve,
            pct,
            files,
        }
    }

    fn guest(&self, ctid: u32) -> LxcGuest {
        LxcGuest::new(self.host.clone(), self.pct.clone(), ctid)
    }

    /// From the run's inventory, or (`fresh`) read again: a container created by
    /// this apply is not in the inventory the plan was made from.
    async fn presence(&self, ctid: u32, fresh: bool) -> Result<Presence, ProviderError> {
        let Some(g) = self.pve.guest_entry(ctid, fresh).await? else {
            return Ok(Presence::Missing);
        };
        if g["type"].as_str() != Some("lxc") {
            return Err(ProviderError::Other(format!(
                "guest {ctid} is a VM; phoenix writes files only into containers so far"
            )));
        }
        Ok(if g["status"].as_str() == Some("running") {
            Presence::Running
        } else {
            Presence::Stopped
        })
    }

    async fn read(&self, spec: &FileSpec, ctid: u32) -> Result<Option<LiveObject>, ProviderError> {
        let g = self.guest(ctid);
        Ok(install::read(&g, spec.path, spec.link)
            .await?
            .map(|f| LiveObject {
                attrs: model::attrs_of(spec, ctid, &f.content, &f.mode, f.link),
                remote: json!({"guest": ctid, "path": spec.path}),
                token: None,
            }))
    }

    async fn write(
        &self,
        desired: &DesiredResource,
        ctx: &dyn OpContext,
    ) -> Result<LiveObject, ProviderError> {
        let spec = spec_of(&desired.address)?;
        let ctid = desired
            .attrs
            .get("guest")
            .and_then(Value::as_u64)
            .and_then(|g| u32::try_from(g).ok())
            .ok_or_else(|| ProviderError::Other(format!("{} names no guest", desired.address)))?;
        let content = desired
            .attrs
            .get("content")
            .and_then(Value::as_str)
            .ok_or_else(|| ProviderError::Other(format!("{} has no content", desired.address)))?;
        if self.presence(ctid, true).await? != Presence::Running {
            return Err(ProviderError::Other(format!(
                "lxc.{ctid} is not running, so {} cannot be written into it\nhelp: start it (`phoenix start {ctid}`), \
                 or let the manifest's `status` do it",
                desired.address
            )));
        }
        ctx.progress(
            "Writing",
            &format!("{} {} in lxc.{ctid}", desired.address, spec.path),
        );
        install::install(&self.guest(ctid), &install_of(spec), content).await?;
        self.read(spec, ctid).await?.ok_or_else(|| {
            ProviderError::Other(format!(
                "{} is missing in lxc.{ctid} right after it was written",
                spec.path
            ))
        })
    }

    async fn remove(
        &self,
        addr: &Address,
        remote: &Value,
        ctx: &dyn OpContext,
    ) -> Result<(), ProviderError> {
        let spec = spec_of(addr)?;
        let ctid = remote
            .get("guest")
            .and_then(Value::as_u64)
            .and_then(|g| u32::try_from(g).ok())
            .or_else(|| self.location(addr))
            .ok_or_else(|| {
                ProviderError::Other(format!("the state does not say which guest holds {addr}"))
            })?;
        match self.presence(ctid, true).await? {
            Presence::Missing => Ok(()),
            Presence::Stopped => Err(ProviderError::Other(format!(
                "lxc.{ctid} is stopped, so {} cannot be removed from it\nhelp: start it, or `phoenix state rm {addr}` to forget the file",
                spec.path
            ))),
            Presence::Running => {
                ctx.progress("Removing", &format!("{addr} {} in lxc.{ctid}", spec.path));
                install::remove(&self.guest(ctid), &install_of(spec)).await
            }
        }
    }

    fn location(&self, addr: &Address) -> Option<u32> {
        self.files
            .iter()
            .find(|(n, _)| *n == addr.name())
            .map(|(_, id)| *id)
    }
}

impl ResourceProvider for FileProvider {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn refresh<'a>(
        &'a self,
        addresses: &'a [Address],
    ) -> BoxFuture<'a, Result<BTreeMap<Address, LiveObject>, ProviderError>> {
        Box::pin(async move {
            let mut out = BTreeMap::new();
            for a in addresses {
                let (Ok(spec), Some(ctid)) = (spec_of(a), self.location(a)) else {
                    continue;
                };
                if self.presence(ctid, false).await? != Presence::Running {
                    continue;
                }
                if let Some(l) = self.read(spec, ctid).await? {
                    out.insert(a.clone(), l);
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

    fn delete<'a>(
        &'a self,
        address: &'a Address,
        remote: &'a Value,
        ctx: &'a dyn OpContext,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(self.remove(address, remote, ctx))
    }

    fn lanes(&self, change: &Change, desired: Option<&DesiredResource>) -> Vec<Lane> {
        // The container's lane: never written while phoenix changes the container itself.
        let guest = desired
            .and_then(|d| d.attrs.get("guest"))
            .or_else(|| change.before.as_ref().and_then(|b| b.get("guest")))
            .and_then(Value::as_u64)
            .map(|g| g.to_string())
            .or_else(|| self.location(&change.address).map(|g| g.to_string()))
            .unwrap_or_else(|| change.address.to_string());
        vec![Lane {
            key: format!("guest:{guest}"),
            capacity: 1,
        }]
    }
}
