//! `lxc.<ctid>` on Proxmox: read (bulk inventory, then one config read per
//! container, in parallel), create (from a template or by clone), update in
//! place (config with the read `digest`, rootfs grow, start/stop), delete.
//! The attribute mapping itself is in `model/lxc.rs`.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

use super::guest::{self, GuestType, desired_node, remote_parts, vmid_of};
use super::{Pve, params};
use crate::model::lxc::{self as model, KIND};
use crate::model::{Address, DesiredResource, LiveObject, normalize};
use crate::plan::{Action, Change};
use crate::providers::{BoxFuture, Lane, OpContext, PowerAction, ProviderError, ResourceProvider};

/// Creates and clones running at once per node: PVE serializes storage
/// allocation, and more only turn into lock timeouts.
const CREATES_PER_NODE: usize = 4;

pub struct LxcProvider {
    pve: Arc<Pve>,
}

fn remote(node: &str, vmid: u32) -> Value {
    json!({"node": node, "vmid": vmid})
}

impl LxcProvider {
    pub fn new(pve: Arc<Pve>) -> Self {
        LxcProvider { pve }
    }

    async fn read(
        pve: &Pve,
        node: &str,
        vmid: u32,
        status: Option<String>,
    ) -> Result<Option<LiveObject>, ProviderError> {
        let cfg = match pve
            .api
            .get(&format!("/nodes/{node}/lxc/{vmid}/config"), &[])
            .await
        {
            Ok(c) => c,
            Err(ProviderError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let status = match status {
            Some(s) => s,
            None => {
                let st = pve
                    .api
                    .get(&format!("/nodes/{node}/lxc/{vmid}/status/current"), &[])
                    .await?;
                st["status"].as_str().unwrap_or("unknown").to_string()
            }
        };
        let cfg = cfg.as_object().cloned().unwrap_or_default();
        Ok(Some(LiveObject {
            attrs: model::from_pve_config(&cfg, &status),
            remote: remote(node, vmid),
            token: cfg
                .get("digest")
                .and_then(Value::as_str)
                .map(str::to_string),
        }))
    }

    async fn run_task(
        &self,
        addr: &Address,
        result: Value,
        ctx: &dyn OpContext,
    ) -> Result<(), ProviderError> {
        guest::run_task(&self.pve, addr, result, ctx).await
    }

    /// A template given as a host path (the seed's form) becomes the volume id
    /// of the directory storage that holds it.
    async fn template_volume(&self, template: &str) -> Result<String, ProviderError> {
        if template.contains(':') {
            return Ok(template.to_string());
        }
        let file = template.rsplit('/').next().unwrap_or(template);
        let storages = self.pve.api.get("/storage", &[]).await?;
        for s in storages.as_array().into_iter().flatten() {
            let (Some(sid), Some(path)) = (s["storage"].as_str(), s["path"].as_str()) else {
                continue;
            };
            let expected = format!("{}/template/cache/{file}", path.trim_end_matches('/'));
            if expected == template {
                return Ok(format!("{sid}:vztmpl/{file}"));
            }
        }
        Err(ProviderError::Config(format!(
            "template `{template}` is not inside any directory storage's template/cache\n\
             help: write it as a volume id, e.g. `local:vztmpl/{file}`"
        )))
    }

    async fn start_or_stop(
        &self,
        addr: &Address,
        node: &str,
        vmid: u32,
        want: &str,
        ctx: &dyn OpContext,
    ) -> Result<(), ProviderError> {
        guest::set_running(
            &self.pve,
            GuestType::Lxc,
            addr,
            node,
            vmid,
            want == "running",
            ctx,
        )
        .await
    }

    async fn resize(
        &self,
        addr: &Address,
        node: &str,
        vmid: u32,
        size: &str,
        ctx: &dyn OpContext,
    ) -> Result<(), ProviderError> {
        let r = self
            .pve
            .api
            .put(
                &format!("/nodes/{node}/lxc/{vmid}/resize"),
                &params(&[("disk", "rootfs".into()), ("size", size.to_string())]),
            )
            .await?;
        self.run_task(addr, r, ctx).await
    }

    async fn read_back(
        &self,
        addr: &Address,
        node: &str,
        vmid: u32,
    ) -> Result<LiveObject, ProviderError> {
        Self::read(&self.pve, node, vmid, None)
            .await?
            .ok_or_else(|| {
                ProviderError::Other(format!("{addr} vanished right after it was changed"))
            })
    }

    async fn create_impl(
        &self,
        d: &DesiredResource,
        ctx: &dyn OpContext,
    ) -> Result<LiveObject, ProviderError> {
        let addr = &d.address;
        let vmid = vmid_of(addr)?;
        // The manifest's node, else the configured (or only) one.
        let node = match desired_node(d) {
            Some(n) => n,
            None => self.pve.node().await?,
        };
        let want_size = d
            .attrs
            .get("rootfs_size")
            .and_then(Value::as_str)
            .unwrap_or("8G")
            .to_string();
        let storage = d
            .attrs
            .get("storage")
            .and_then(Value::as_str)
            .unwrap_or("local-lvm")
            .to_string();
        if let Some(template) = d.create.get("template").and_then(Value::as_str) {
            let ostemplate = self.template_volume(template).await?;
            let gib =
                normalize::parse_size(&want_size).unwrap_or(8 << 30) as f64 / (1u64 << 30) as f64;
            let (mut p, _) = model::config_params(&d.attrs, None);
            p.push(("vmid".into(), vmid.to_string()));
            p.push(("ostemplate".into(), ostemplate));
            p.push(("rootfs".into(), format!("{storage}:{gib}")));
            let unpriv = d
                .attrs
                .get("unprivileged")
                .and_then(Value::as_bool)
                .unwrap_or(true);
            p.push(("unprivileged".into(), if unpriv { "1" } else { "0" }.into()));
            let r = self.pve.api.post(&format!("/nodes/{node}/lxc"), &p).await?;
            self.run_task(addr, r, ctx).await?;
        } else if let Some(src) = d.create.get("clone_from").and_then(Value::as_u64) {
            let inv = self
                .pve
                .api
                .get("/cluster/resources", &params(&[("type", "vm".into())]))
                .await?;
            let src_node = inv
                .as_array()
                .into_iter()
                .flatten()
                .find(|g| g["vmid"].as_u64() == Some(src) && g["type"] == "lxc")
                .and_then(|g| g["node"].as_str().map(str::to_string))
                .ok_or_else(|| {
                    ProviderError::Other(format!(
                        "clone source lxc.{src} does not exist; it must be created first"
                    ))
                })?;
            let mut p = params(&[
                ("newid", vmid.to_string()),
                ("full", "1".into()),
                ("storage", storage.clone()),
            ]);
            if let Some(h) = d.attrs.get("hostname").and_then(Value::as_str) {
                p.push(("hostname".into(), h.to_string()));
            }
            if let Some(snap) = d.create.get("clone_snapshot").and_then(Value::as_str) {
                let snaps = self
                    .pve
                    .api
                    .get(&format!("/nodes/{src_node}/lxc/{src}/snapshot"), &[])
                    .await?;
                let has = snaps
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|s| s["name"].as_str() == Some(snap));
                if has {
                    p.push(("snapname".into(), snap.to_string()));
                }
            }
            let r = self
                .pve
                .api
                .post(&format!("/nodes/{src_node}/lxc/{src}/clone"), &p)
                .await
                .map_err(|e| match e {
                    ProviderError::Api { message, .. } if message.contains("only possible from a snapshot") => {
                        ProviderError::Other(format!(
                            "cannot clone lxc.{src}: it is running and has no snapshot to clone from ({message})\n\
                             help: give lxc.{src} `\"status\": \"stopped\"` in the manifest (a clone source need not run), \
                             or create its `template_snapshot_name` snapshot first"
                        ))
                    }
                    other => other,
                })?;
            self.run_task(addr, r, ctx).await?;
            // The clone carries the source's settings: converge it to ours.
            let cloned = self.read_back(addr, &src_node, vmid).await?;
            let (cp, deletes) = model::config_params(&d.attrs, Some(&cloned.attrs));
            let mut cp = cp;
            if !deletes.is_empty() {
                cp.push(("delete".into(), deletes.join(",")));
            }
            if !cp.is_empty() {
                self.pve
                    .api
                    .put(&format!("/nodes/{src_node}/lxc/{vmid}/config"), &cp)
                    .await?;
            }
            let have = cloned
                .attrs
                .get("rootfs_size")
                .and_then(Value::as_str)
                .and_then(normalize::parse_size);
            let want = normalize::parse_size(&want_size);
            if let (Some(h), Some(w)) = (have, want)
                && w > h
            {
                self.resize(addr, &src_node, vmid, &want_size, ctx).await?;
            }
            if src_node != node {
                tracing::debug!(%addr, %src_node, "clone stays on its source's node");
            }
            return self.finish(addr, d, &src_node, vmid, ctx).await;
        } else {
            return Err(ProviderError::Other(format!(
                "{addr}: neither a template nor a clone source to create from"
            )));
        }
        self.finish(addr, d, &node, vmid, ctx).await
    }

    /// The manifest's storage volumes (`volume:<mount point>`): a missing one is
    /// allocated at the lowest free `mpN`, a smaller one grown. Shrinking or moving
    /// one is refused: it holds data.
    async fn volumes(
        &self,
        addr: &Address,
        d: &DesiredResource,
        node: &str,
        vmid: u32,
        ctx: &dyn OpContext,
    ) -> Result<(), ProviderError> {
        let wanted: Vec<(&str, &str)> = d
            .attrs
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(model::VOLUME_PREFIX)?, v.as_str()?)))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let cfg = self
            .pve
            .api
            .get(&format!("/nodes/{node}/lxc/{vmid}/config"), &[])
            .await?;
        let cfg = cfg.as_object().cloned().unwrap_or_default();
        let have = model::volumes_of(&cfg);
        let mut taken: Vec<u32> = cfg
            .keys()
            .filter_map(|k| k.strip_prefix("mp").and_then(|n| n.parse().ok()))
            .collect();
        for (mp, spec) in wanted {
            let (storage, size) = spec.split_once(':').unwrap_or((spec, "0"));
            let want = normalize::parse_size(size).unwrap_or(0);
            match have.iter().find(|h| h.1 == mp) {
                Some((key, _, hs, hsize)) => {
                    if hs != storage {
                        return Err(ProviderError::Other(format!(
                            "{addr}: the volume at {mp} is on storage `{hs}`, the manifest says `{storage}`; \
                             phoenix does not move volumes\nhelp: move it with `pct move-volume {vmid} {key} {storage}`, \
                             or change the manifest back"
                        )));
                    }
                    let current = normalize::parse_size(hsize).unwrap_or(0);
                    if want < current {
                        return Err(ProviderError::Other(format!(
                            "{addr}: the volume at {mp} is {hsize}, the manifest says {size}; volumes only grow\n\
                             help: keep the size at {hsize} or more"
                        )));
                    }
                    if want > current {
                        ctx.progress("Resizing", &format!("{addr} {key} ({mp}) to {size}"));
                        let r = self
                            .pve
                            .api
                            .put(
                                &format!("/nodes/{node}/lxc/{vmid}/resize"),
                                &params(&[("disk", key.clone()), ("size", size.to_string())]),
                            )
                            .await?;
                        self.run_task(addr, r, ctx).await?;
                    }
                }
                None => {
                    let n = (0u32..).find(|n| !taken.contains(n)).unwrap_or(0);
                    taken.push(n);
                    let gib = want.div_ceil(1 << 30).max(1);
                    ctx.progress(
                        "Allocating",
                        &format!("{addr} mp{n}: {size} on {storage} at {mp}"),
                    );
                    let r = self
                        .pve
                        .api
                        .put(
                            &format!("/nodes/{node}/lxc/{vmid}/config"),
                            &params(&[(&format!("mp{n}"), format!("{storage}:{gib},mp={mp}"))]),
                        )
                        .await?;
                    self.run_task(addr, r, ctx).await?;
                }
            }
        }
        Ok(())
    }

    async fn finish(
        &self,
        addr: &Address,
        d: &DesiredResource,
        node: &str,
        vmid: u32,
        ctx: &dyn OpContext,
    ) -> Result<LiveObject, ProviderError> {
        self.volumes(addr, d, node, vmid, ctx).await?;
        if d.attrs.get("status").and_then(Value::as_str) == Some("running") {
            self.start_or_stop(addr, node, vmid, "running", ctx).await?;
        }
        self.read_back(addr, node, vmid).await
    }

    async fn update_impl(
        &self,
        d: &DesiredResource,
        live: &LiveObject,
        change: &Change,
        ctx: &dyn OpContext,
    ) -> Result<LiveObject, ProviderError> {
        let addr = &d.address;
        let (node, vmid) = remote_parts(&live.remote, addr)?;
        let tops: std::collections::BTreeSet<&str> = change
            .changed_paths
            .iter()
            .map(|p| p.split('.').next().unwrap_or(p))
            .collect();
        let changed: crate::model::Attrs = d
            .attrs
            .iter()
            .filter(|(k, _)| tops.contains(k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let (mut p, deletes) = model::config_params(&changed, Some(&live.attrs));
        if !deletes.is_empty() {
            p.push(("delete".into(), deletes.join(",")));
        }
        if !p.is_empty() {
            if let Some(digest) = &live.token {
                // PVE refuses the write if the config changed since we read it.
                p.push(("digest".into(), digest.clone()));
            }
            ctx.progress(
                "Configuring",
                &format!(
                    "{addr}: {}",
                    tops.iter().copied().collect::<Vec<_>>().join(", ")
                ),
            );
            let r = self
                .pve
                .api
                .put(&format!("/nodes/{node}/lxc/{vmid}/config"), &p)
                .await
                .map_err(|e| match e {
                    ProviderError::Api { message, .. } if message.contains("detected modified configuration") => {
                        ProviderError::Conflict(format!(
                            "{addr} changed in Proxmox since it was read\nhelp: run `phoenix plan` again to see the new state"
                        ))
                    }
                    other => other,
                })?;
            self.run_task(addr, r, ctx).await?;
        }
        if tops.contains("rootfs_size")
            && let Some(size) = d.attrs.get("rootfs_size").and_then(Value::as_str)
        {
            self.resize(addr, &node, vmid, size, ctx).await?;
        }
        if tops.iter().any(|t| t.starts_with(model::VOLUME_PREFIX)) {
            self.volumes(addr, d, &node, vmid, ctx).await?;
        }
        if tops.contains("status")
            && let Some(want) = d.attrs.get("status").and_then(Value::as_str)
        {
            self.start_or_stop(addr, &node, vmid, want, ctx).await?;
        }
        self.read_back(addr, &node, vmid).await
    }

    async fn delete_impl(
        &self,
        addr: &Address,
        remote: &Value,
        ctx: &dyn OpContext,
    ) -> Result<(), ProviderError> {
        let (node, vmid) = remote_parts(remote, addr)?;
        let base = format!("/nodes/{node}/lxc/{vmid}");
        let st = match self
            .pve
            .api
            .get(&format!("{base}/status/current"), &[])
            .await
        {
            Ok(s) => s,
            Err(ProviderError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        if st["status"].as_str() == Some("running") {
            ctx.progress("Stopping", &addr.to_string());
            let r = self
                .pve
                .api
                .post(&format!("{base}/status/stop"), &[])
                .await?;
            self.run_task(addr, r, ctx).await?;
        }
        let r = match self
            .pve
            .api
            .delete(
                &base,
                &params(&[
                    ("purge", "1".into()),
                    ("destroy-unreferenced-disks", "1".into()),
                ]),
            )
            .await
        {
            Ok(r) => r,
            Err(ProviderError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        self.run_task(addr, r, ctx).await
    }
}

impl ResourceProvider for LxcProvider {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn refresh<'a>(
        &'a self,
        addresses: &'a [Address],
    ) -> BoxFuture<'a, Result<BTreeMap<Address, LiveObject>, ProviderError>> {
        Box::pin(async move {
            if addresses.is_empty() {
                return Ok(BTreeMap::new());
            }
            let found = guest::locate(&self.pve, GuestType::Lxc, addresses).await?;
            guest::read_all(
                &self.pve,
                found,
                |pve, (addr, node, vmid, status)| async move {
                    let r = Self::read(&pve, &node, vmid, status).await;
                    (addr, r)
                },
            )
            .await
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
        desired: &'a DesiredResource,
        live: &'a LiveObject,
        change: &'a Change,
        ctx: &'a dyn OpContext,
    ) -> BoxFuture<'a, Result<LiveObject, ProviderError>> {
        Box::pin(self.update_impl(desired, live, change, ctx))
    }

    fn delete<'a>(
        &'a self,
        address: &'a Address,
        remote: &'a Value,
        ctx: &'a dyn OpContext,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(self.delete_impl(address, remote, ctx))
    }

    fn power<'a>(
        &'a self,
        address: &'a Address,
        remote: &'a Value,
        action: PowerAction,
        ctx: &'a dyn OpContext,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            let (node, vmid) = remote_parts(remote, address)?;
            guest::power(&self.pve, GuestType::Lxc, address, &node, vmid, action, ctx).await
        })
    }

    fn lanes(&self, change: &Change, desired: Option<&DesiredResource>) -> Vec<Lane> {
        let mut lanes = vec![Lane {
            key: format!("guest:{}", change.address.name()),
            capacity: 1,
        }];
        if matches!(change.action, Action::Create | Action::Replace) {
            lanes.push(Lane {
                key: "pve:create".into(),
                capacity: CREATES_PER_NODE,
            });
            if let Some(src) = desired
                .and_then(|d| d.create.get("clone_from"))
                .and_then(Value::as_u64)
            {
                // A clone locks its source for the copy.
                lanes.push(Lane {
                    key: format!("guest:{src}"),
                    capacity: 1,
                });
            }
        }
        lanes
    }
}
