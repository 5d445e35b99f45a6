//! `feature.<ctid>.<name>` and `app.<ctid>` in a container: the marker read
//! with `cat` through `pct exec`; a run pushes the script to
//! `/tmp/phoenix-run/<name>`, runs it as `<script> <ctid>` with its inputs in
//! the environment (argv elements, never a command line built from them), and
//! only when it exits 0 writes the marker. A failure fails the resource with
//! the tail of the script's output and leaves the marker as it was, so the
//! next plan runs it again. Runs get their own timeout
//! (`PHOENIX_FEATURE_TIMEOUT`, default 30 minutes): installs are slow.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use super::guest::{LxcGuest, VmGuest};
use super::install::{self, sh};
use super::{Host, Machine};
use crate::model::feature as model;
use crate::model::{Address, DesiredResource, LiveObject};
use crate::plan::Change;
use crate::providers::proxmox::Pve;
use crate::providers::{BoxFuture, Lane, OpContext, ProviderError, ResourceProvider};

const RUN_DIR: &str = "/tmp/phoenix-run";
/// `$1` the script, then its arguments: run it, and remove it whatever it did.
const RUN: &str = r#"chmod 700 "$1" || exit 1; "$@"; rc=$?; rm -f "$1"; exit $rc"#;

pub struct FeatureProvider {
    kind: &'static str,
    host: Arc<Host>,
    pve: Arc<Pve>,
    pct: String,
    timeout: std::time::Duration,
}

impl FeatureProvider {
    pub fn new(
        kind: &'static str,
        host: Arc<Host>,
        pve: Arc<Pve>,
        pct: String,
        timeout: std::time::Duration,
    ) -> Self {
        FeatureProvider {
            kind,
            host,
            pve,
            pct,
            timeout,
        }
    }

    /// The guest as a machine, when it runs: a container through `pct`, a VM
    /// through its guest agent.
    async fn machine(
        &self,
        id: u32,
        fresh: bool,
    ) -> Result<Option<Box<dyn Machine>>, ProviderError> {
        let Some(g) = self.pve.guest_entry(id, fresh).await? else {
            return Ok(None);
        };
        if g["status"] != "running" {
            return Ok(None);
        }
        Ok(match g["type"].as_str() {
            Some("lxc") => Some(Box::new(LxcGuest::new(
                self.host.clone(),
                self.pct.clone(),
                id,
            ))),
            Some("qemu") => Some(Box::new(VmGuest::new(
                self.pve.clone(),
                g["node"].as_str().unwrap_or_default().to_string(),
                id,
                self.timeout,
            ))),
            _ => None,
        })
    }

    async fn read(
        &self,
        addr: &Address,
        g: &dyn Machine,
    ) -> Result<Option<LiveObject>, ProviderError> {
        let (Some((ctid, _)), Some(path)) = (model::parts(addr), model::marker_path(addr)) else {
            return Ok(None);
        };
        Ok(install::read(g, &path, None).await?.and_then(|f| {
            model::attrs_of(&f.content).map(|attrs| LiveObject {
                attrs,
                remote: serde_json::json!({"guest": ctid, "marker": path}),
                token: None,
            })
        }))
    }

    async fn run(
        &self,
        desired: &DesiredResource,
        ctx: &dyn OpContext,
    ) -> Result<LiveObject, ProviderError> {
        let addr = &desired.address;
        let (ctid, _) = model::parts(addr)
            .ok_or_else(|| ProviderError::Other(format!("`{addr}` names no container")))?;
        let Some(g) = self.machine(ctid, true).await? else {
            return Err(ProviderError::Other(format!(
                "guest {ctid} is not running, so {addr} cannot run in it\n\
                 help: start it (`phoenix start {ctid}`), or let the manifest's `status` do it"
            )));
        };
        let g = g.as_ref();
        let (script, name) = (desired.create_str("script"), desired.create_str("name"));
        let made = g
            .exec(
                &sh(
                    r#"mkdir -p "$1" "$2""#,
                    &[RUN_DIR.into(), model::MARKERS.into()],
                ),
                None,
            )
            .await?;
        if !made.success() {
            return Err(ProviderError::Other(format!(
                "{addr}: preparing {RUN_DIR} in {} failed: {}",
                g.label(),
                made.tail().join("; ")
            )));
        }
        let path = format!("{RUN_DIR}/{name}");
        g.push(script.as_bytes(), &path).await?;
        let mut argv = vec!["env".to_string()];
        for pair in desired
            .create
            .get("env")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let (Some(k), Some(v)) = (pair[0].as_str(), pair[1].as_str()) {
                argv.push(format!("{k}={v}"));
            }
        }
        argv.extend(sh(RUN, &[path, ctid.to_string()]));
        ctx.progress("Running", &format!("{addr} in {}", g.label()));
        let out = g.exec(&argv, None).await?;
        if !out.success() {
            return Err(ProviderError::TaskFailed {
                upid: format!("{addr} in {}", g.label()),
                status: format!("the script exited {}", out.code),
                log_tail: out.tail(),
            });
        }
        let marker = model::marker_path(addr)
            .ok_or_else(|| ProviderError::Other(format!("`{addr}` has no marker path")))?;
        g.push(model::marker(desired).as_bytes(), &marker).await?;
        self.read(addr, g).await?.ok_or_else(|| {
            ProviderError::Other(format!(
                "{addr}: the marker {marker} is missing right after it was written"
            ))
        })
    }
}

impl ResourceProvider for FeatureProvider {
    fn kind(&self) -> &'static str {
        self.kind
    }

    /// A container that does not run has no marker to read: its scripts show as to run.
    fn refresh<'a>(
        &'a self,
        addresses: &'a [Address],
    ) -> BoxFuture<'a, Result<BTreeMap<Address, LiveObject>, ProviderError>> {
        Box::pin(async move {
            let mut out = BTreeMap::new();
            for a in addresses {
                let Some((ctid, _)) = model::parts(a) else {
                    continue;
                };
                let Some(g) = self.machine(ctid, false).await? else {
                    continue;
                };
                if let Some(l) = self.read(a, g.as_ref()).await? {
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
        Box::pin(self.run(desired, ctx))
    }

    fn update<'a>(
        &'a self,
        desired: &'a DesiredResource,
        _live: &'a LiveObject,
        _change: &'a Change,
        ctx: &'a dyn OpContext,
    ) -> BoxFuture<'a, Result<LiveObject, ProviderError>> {
        Box::pin(self.run(desired, ctx))
    }

    /// What a script did stays; phoenix only stops tracking it (`keep_on_delete`).
    fn delete<'a>(
        &'a self,
        _address: &'a Address,
        _remote: &'a Value,
        _ctx: &'a dyn OpContext,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async { Ok(()) })
    }

    fn lanes(&self, change: &Change, _desired: Option<&DesiredResource>) -> Vec<Lane> {
        let guest = model::parts(&change.address).map_or(0, |(id, _)| id);
        vec![Lane {
            key: format!("guest:{guest}"),
            capacity: 1,
        }]
    }
}
