//! `vm.<vmid>` on Proxmox: read (bulk inventory, then the config and its
//! pending section per VM, in parallel), create (a template or VM built from
//! a cloud image, or a full clone), update in place (config with the read
//! `digest`, boot disk grow, start/stop), delete. The attribute mapping itself
//! is in `model/vm.rs`; the template build is explained in
//! `docs/decisions/0008-vm-kind.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::{Value, json};

use super::guest::{self, GuestType, desired_node, remote_parts, vmid_of};
use super::{Pve, params};
use crate::model::vm::{self as model, KIND};
use crate::model::{Address, Attrs, DesiredResource, LiveObject, normalize};
use crate::plan::{Action, Change};
use crate::providers::{BoxFuture, Lane, OpContext, PowerAction, ProviderError, ResourceProvider};

/// Creates and clones running at once per node; the same lane key as the
/// containers', since both allocate on the same storages.
const CREATES_PER_NODE: usize = 4;

/// The disk controller and bus phoenix gives the disks of a VM it builds.
const SCSI_HW: &str = "virtio-scsi-pci";
const BOOT_DISK: &str = "scsi0";

pub struct VmProvider {
    pve: Arc<Pve>,
}

/// Where the VM is, as the state keeps it. `disk` is the boot disk's key
/// (needed to resize it), `pending` the config keys waiting for a reboot.
fn remote(node: &str, vmid: u32, disk: Option<&str>, template: bool, pending: &[String]) -> Value {
    json!({"node": node, "vmid": vmid, "disk": disk, "template": template, "pending": pending})
}

fn size_of(attrs: &Attrs) -> Option<u64> {
    attrs
        .get("disk_size")
        .and_then(Value::as_str)
        .and_then(normalize::parse_size)
}

impl VmProvider {
    pub fn new(pve: Arc<Pve>) -> Self {
        VmProvider { pve }
    }

    /// The VM as it will run after its next boot: the current config with the
    /// pending section applied. `None` if it does not exist.
    async fn read(
        pve: &Pve,
        node: &str,
        vmid: u32,
        status: Option<String>,
    ) -> Result<Option<LiveObject>, ProviderError> {
        let base = format!("/nodes/{node}/qemu/{vmid}");
        let current = match pve
            .api
            .get(
                &format!("{base}/config"),
                &params(&[("current", "1".into())]),
            )
            .await
        {
            Ok(c) => c,
            Err(ProviderError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let pending = match pve.api.get(&format!("{base}/pending"), &[]).await {
            Ok(p) => p,
            Err(ProviderError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let status = match status {
            Some(s) => s,
            None => {
                let st = pve.api.get(&format!("{base}/status/current"), &[]).await?;
                st["status"].as_str().unwrap_or("unknown").to_string()
            }
        };
        let current = current.as_object().cloned().unwrap_or_default();
        let (cfg, pending_keys) = model::apply_pending(&current, &pending);
        let attrs = model::from_pve_config(&cfg, &status);
        let template = attrs.get("template").and_then(Value::as_bool) == Some(true);
        let disk = model::boot_disk(&cfg);
        Ok(Some(LiveObject {
            attrs,
            remote: remote(node, vmid, disk.as_deref(), template, &pending_keys),
            token: current
                .get("digest")
                .and_then(Value::as_str)
                .map(str::to_string),
        }))
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

    async fn run_task(
        &self,
        addr: &Address,
        result: Value,
        ctx: &dyn OpContext,
    ) -> Result<(), ProviderError> {
        guest::run_task(&self.pve, addr, result, ctx).await
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
            GuestType::Qemu,
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
        disk: &str,
        size: &str,
        ctx: &dyn OpContext,
    ) -> Result<(), ProviderError> {
        ctx.progress("Resizing", &format!("{addr} {disk} to {size}"));
        let r = self
            .pve
            .api
            .put(
                &format!("/nodes/{node}/qemu/{vmid}/resize"),
                &params(&[("disk", disk.to_string()), ("size", size.to_string())]),
            )
            .await?;
        self.run_task(addr, r, ctx).await
    }

    /// Grow the boot disk to the desired size; refuse to shrink it.
    async fn grow_to(
        &self,
        addr: &Address,
        d: &DesiredResource,
        have: &LiveObject,
        node: &str,
        vmid: u32,
        ctx: &dyn OpContext,
    ) -> Result<(), ProviderError> {
        let (Some(want_text), Some(want)) = (
            d.attrs.get("disk_size").and_then(Value::as_str),
            size_of(&d.attrs),
        ) else {
            return Ok(());
        };
        let disk = have.remote["disk"].as_str().ok_or_else(|| {
            ProviderError::Other(format!(
                "{addr} has no boot disk to resize\nhelp: give it a disk (scsi0) in Proxmox, or leave `disk_size_gb` out"
            ))
        })?;
        match size_of(&have.attrs) {
            Some(h) if want < h => Err(ProviderError::Other(format!(
                "{addr}: disk_size {want_text} is smaller than its disk ({})\nhelp: set `disk_size_gb` to at least that; disks only grow",
                normalize::format_size(h)
            ))),
            Some(h) if want == h => Ok(()),
            _ => self.resize(addr, node, vmid, disk, want_text, ctx).await,
        }
    }

    /// The volume id of the image a VM is built from: given, found on a
    /// storage with `import` content, or downloaded onto the first such storage.
    async fn image_volume(
        &self,
        addr: &Address,
        node: &str,
        d: &DesiredResource,
        ctx: &dyn OpContext,
    ) -> Result<String, ProviderError> {
        if let Some(v) = d.create.get("image_volume").and_then(Value::as_str) {
            return Ok(v.to_string());
        }
        let (Some(url), Some(file)) = (
            d.create.get("image_url").and_then(Value::as_str),
            d.create.get("image_file").and_then(Value::as_str),
        ) else {
            return Err(ProviderError::Other(format!(
                "{addr}: neither an image nor a clone source to create from"
            )));
        };
        let storages = self
            .pve
            .api
            .get(
                &format!("/nodes/{node}/storage"),
                &params(&[("content", "import".into()), ("enabled", "1".into())]),
            )
            .await?;
        let mut ids: Vec<String> = storages
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["storage"].as_str().map(str::to_string))
            .collect();
        ids.sort();
        if ids.is_empty() {
            return Err(ProviderError::Config(format!(
                "{addr}: no storage on node {node} holds `import` content, so the cloud image `{file}` has nowhere to go\n\
                 help: add `import` to a directory storage's content (e.g. `pvesm set local --content iso,vztmpl,backup,import`), \
                 or give `template_image` as the volume id of an image already on a storage"
            )));
        }
        for sid in &ids {
            let content = self
                .pve
                .api
                .get(
                    &format!("/nodes/{node}/storage/{sid}/content"),
                    &params(&[("content", "import".into())]),
                )
                .await?;
            let volid = format!("{sid}:import/{file}");
            if content
                .as_array()
                .into_iter()
                .flatten()
                .any(|v| v["volid"].as_str() == Some(volid.as_str()))
            {
                return Ok(volid);
            }
        }
        let sid = &ids[0];
        ctx.progress("Downloading", &format!("{url} to {sid}:import/{file}"));
        let r = self
            .pve
            .api
            .post(
                &format!("/nodes/{node}/storage/{sid}/download-url"),
                &params(&[
                    ("url", url.to_string()),
                    ("content", "import".into()),
                    ("filename", file.to_string()),
                ]),
            )
            .await?;
        self.run_task(addr, r, ctx).await?;
        Ok(format!("{sid}:import/{file}"))
    }

    async fn create_impl(
        &self,
        d: &DesiredResource,
        ctx: &dyn OpContext,
    ) -> Result<LiveObject, ProviderError> {
        let addr = &d.address;
        let vmid = vmid_of(addr)?;
        let (node, built) = match d.create.get("clone_from").and_then(Value::as_u64) {
            Some(src) => self.clone_from(d, vmid, src, ctx).await?,
            None => self.build_from_image(d, vmid, ctx).await?,
        };
        self.grow_to(addr, d, &built, &node, vmid, ctx).await?;
        if d.attrs.get("template").and_then(Value::as_bool) == Some(true) {
            // Last, because a template's disks cannot change any more.
            ctx.progress("Converting", &format!("{addr} to a template"));
            let r = self
                .pve
                .api
                .post(&format!("/nodes/{node}/qemu/{vmid}/template"), &[])
                .await?;
            self.run_task(addr, r, ctx).await?;
        } else if d.attrs.get("status").and_then(Value::as_str) == Some("running") {
            self.start_or_stop(addr, &node, vmid, "running", ctx)
                .await?;
        }
        self.read_back(addr, &node, vmid).await
    }

    /// A new VM whose boot disk is imported from a cloud image, with a
    /// cloud-init drive and a serial console (cloud images expect one).
    async fn build_from_image(
        &self,
        d: &DesiredResource,
        vmid: u32,
        ctx: &dyn OpContext,
    ) -> Result<(String, LiveObject), ProviderError> {
        let addr = &d.address;
        // The manifest's node, else the configured (or only) one.
        let node = match desired_node(d) {
            Some(n) => n,
            None => self.pve.node().await?,
        };
        let storage = d
            .attrs
            .get("storage")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                ProviderError::Config(format!(
                    "{addr}: no storage for its disk\nhelp: set `storage_pool` on the VM or in `vm_defaults`"
                ))
            })?
            .to_string();
        let image = self.image_volume(addr, &node, d, ctx).await?;
        let (mut p, _) = model::config_params(&d.attrs, None);
        p.extend(params(&[
            ("vmid", vmid.to_string()),
            ("scsihw", SCSI_HW.into()),
            (BOOT_DISK, format!("{storage}:0,import-from={image}")),
            ("ide2", format!("{storage}:cloudinit")),
            ("boot", format!("order={BOOT_DISK}")),
            ("serial0", "socket".into()),
        ]));
        ctx.progress("Importing", &format!("{image} as {addr} {BOOT_DISK}"));
        let r = self
            .pve
            .api
            .post(&format!("/nodes/{node}/qemu"), &p)
            .await?;
        self.run_task(addr, r, ctx).await?;
        let built = self.read_back(addr, &node, vmid).await?;
        Ok((node, built))
    }

    /// A full clone of `src`, then converged to the desired config.
    async fn clone_from(
        &self,
        d: &DesiredResource,
        vmid: u32,
        src: u64,
        ctx: &dyn OpContext,
    ) -> Result<(String, LiveObject), ProviderError> {
        let addr = &d.address;
        let src = u32::try_from(src).map_err(|_| {
            ProviderError::Other(format!("{addr}: clone source {src} is not a vmid"))
        })?;
        let inv = self
            .pve
            .api
            .get("/cluster/resources", &params(&[("type", "vm".into())]))
            .await?;
        let src_node = inv
            .as_array()
            .into_iter()
            .flatten()
            .find(|g| g["vmid"].as_u64() == Some(u64::from(src)) && g["type"] == "qemu")
            .and_then(|g| g["node"].as_str().map(str::to_string))
            .ok_or_else(|| {
                ProviderError::Other(format!(
                    "clone source vm.{src} does not exist; it must be created first\n\
                     help: add vm.{src} to the manifests, or apply it first (`phoenix apply --target vm.{src}`)"
                ))
            })?;
        let source = Self::read(&self.pve, &src_node, src, None)
            .await?
            .ok_or_else(|| ProviderError::Other(format!("clone source vm.{src} vanished")))?;
        // Checked before cloning: a clone that cannot take its size would be left half-made.
        if let (Some(want), Some(have)) = (size_of(&d.attrs), size_of(&source.attrs))
            && want < have
        {
            return Err(ProviderError::Other(format!(
                "{addr}: disk_size {} is smaller than the {} disk of vm.{src} it is cloned from\n\
                 help: set `disk_size_gb` to at least {}; disks only grow",
                normalize::format_size(want),
                normalize::format_size(have),
                have >> 30
            )));
        }
        let mut p = params(&[("newid", vmid.to_string()), ("full", "1".into())]);
        if let Some(name) = d.attrs.get("name").and_then(Value::as_str) {
            p.push(("name".into(), name.to_string()));
        }
        if let Some(storage) = d.attrs.get("storage").and_then(Value::as_str) {
            p.push(("storage".into(), storage.to_string()));
        }
        if let Some(snap) = d.create.get("clone_snapshot").and_then(Value::as_str)
            && source.remote["template"].as_bool() != Some(true)
        {
            // A template has no snapshots; another VM is cloned from its
            // clean-state snapshot when it has one.
            let snaps = self
                .pve
                .api
                .get(&format!("/nodes/{src_node}/qemu/{src}/snapshot"), &[])
                .await?;
            if snaps
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| s["name"].as_str() == Some(snap))
            {
                p.push(("snapname".into(), snap.to_string()));
            }
        }
        ctx.progress("Cloning", &format!("vm.{src} to {addr}"));
        let r = self
            .pve
            .api
            .post(&format!("/nodes/{src_node}/qemu/{src}/clone"), &p)
            .await?;
        self.run_task(addr, r, ctx).await?;
        // The clone carries the source's settings: converge it to ours.
        let cloned = self.read_back(addr, &src_node, vmid).await?;
        let (mut cp, deletes) = model::config_params(&d.attrs, Some(&cloned.attrs));
        if !deletes.is_empty() {
            cp.push(("delete".into(), deletes.join(",")));
        }
        if !cp.is_empty() {
            self.pve
                .api
                .put(&format!("/nodes/{src_node}/qemu/{vmid}/config"), &cp)
                .await?;
        }
        let cloned = self.read_back(addr, &src_node, vmid).await?;
        Ok((src_node, cloned))
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
        let tops: BTreeSet<&str> = change
            .changed_paths
            .iter()
            .map(|p| p.split('.').next().unwrap_or(p))
            .collect();
        let changed: Attrs = d
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
                .put(&format!("/nodes/{node}/qemu/{vmid}/config"), &p)
                .await
                .map_err(|e| match e {
                    ProviderError::Api { message, .. }
                        if message.contains("checksum mismatch")
                            || message.contains("detected modified configuration") =>
                    {
                        ProviderError::Conflict(format!(
                            "{addr} changed in Proxmox since it was read\nhelp: run `phoenix plan` again to see the new state"
                        ))
                    }
                    other => other,
                })?;
            self.run_task(addr, r, ctx).await?;
        }
        if tops.contains("disk_size") {
            self.grow_to(addr, d, live, &node, vmid, ctx).await?;
        }
        if tops.contains("status")
            && let Some(want) = d.attrs.get("status").and_then(Value::as_str)
        {
            self.start_or_stop(addr, &node, vmid, want, ctx).await?;
        }
        let after = self.read_back(addr, &node, vmid).await?;
        let waiting: Vec<&str> = after.remote["pending"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if !waiting.is_empty() {
            ctx.progress(
                "Pending",
                &format!("{addr}: {} until the next reboot", waiting.join(", ")),
            );
        }
        Ok(after)
    }

    async fn delete_impl(
        &self,
        addr: &Address,
        remote: &Value,
        ctx: &dyn OpContext,
    ) -> Result<(), ProviderError> {
        let (node, vmid) = remote_parts(remote, addr)?;
        let base = format!("/nodes/{node}/qemu/{vmid}");
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
            // The data goes anyway: a hard stop, not a shutdown that may hang.
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

impl ResourceProvider for VmProvider {
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
            let found = guest::locate(&self.pve, GuestType::Qemu, addresses).await?;
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
            if remote["template"].as_bool() == Some(true) {
                // The seed tried to start its template and failed; a template
                // is stopped by definition, so there is nothing to do.
                ctx.progress("Skipping", &format!("{address}: a template never runs"));
                return Ok(());
            }
            guest::power(
                &self.pve,
                GuestType::Qemu,
                address,
                &node,
                vmid,
                action,
                ctx,
            )
            .await
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
            if let Some(file) = desired
                .and_then(|d| d.create.get("image_file"))
                .and_then(Value::as_str)
            {
                // Two templates from one image download it once.
                lanes.push(Lane {
                    key: format!("pve:image:{file}"),
                    capacity: 1,
                });
            }
        }
        lanes
    }
}
