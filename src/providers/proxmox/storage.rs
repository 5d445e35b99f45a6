//! `storage.<id>` on Proxmox: read every definition in one `GET /storage`
//! (storage is cluster-wide: no node in the path), create a defined storage
//! (`POST /storage`), change its content (`PUT /storage/{id}`), delete it
//! (`DELETE /storage/{id}`, refused while volumes are on it). The attribute
//! mapping is in `model/storage.rs`.
//!
//! Writes to `storage.cfg` are serialized by a cluster-wide lock in PVE, so
//! all storage writes share one lane. The config `digest` is not used: it
//! covers every storage, so one create would make every other update stale.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

use super::Pve;
use crate::model::storage::{self as model, KIND, VERIFY_ONLY};
use crate::model::{Address, DesiredResource, LiveObject};
use crate::plan::Change;
use crate::plan::diff::attr_differences;
use crate::providers::{BoxFuture, Lane, OpContext, ProviderError, ResourceProvider};

pub struct StorageProvider {
    pve: Arc<Pve>,
}

fn remote(id: &str) -> Value {
    json!({ "storage": id })
}

impl StorageProvider {
    pub fn new(pve: Arc<Pve>) -> Self {
        StorageProvider { pve }
    }

    async fn read_all(&self) -> Result<BTreeMap<String, LiveObject>, ProviderError> {
        let list = self.pve.api.get("/storage", &[]).await?;
        let mut out = BTreeMap::new();
        for entry in list.as_array().into_iter().flatten() {
            let (Some(id), Some(cfg)) = (entry["storage"].as_str(), entry.as_object()) else {
                continue;
            };
            out.insert(
                id.to_string(),
                LiveObject {
                    attrs: model::from_pve(cfg),
                    remote: remote(id),
                    token: None,
                },
            );
        }
        Ok(out)
    }

    async fn read_back(&self, addr: &Address) -> Result<LiveObject, ProviderError> {
        self.read_all().await?.remove(addr.name()).ok_or_else(|| {
            ProviderError::Other(format!("{addr} vanished right after it was changed"))
        })
    }

    async fn create_impl(
        &self,
        d: &DesiredResource,
        ctx: &dyn OpContext,
    ) -> Result<LiveObject, ProviderError> {
        let addr = &d.address;
        if d.create.get(VERIFY_ONLY) == Some(&json!(true)) {
            // The plan refuses this; a saved plan made before the storage vanished may not.
            let (message, help) = model::verify_problem(d, None).unwrap_or_default();
            return Err(ProviderError::Other(format!("{message}\nhelp: {help}")));
        }
        let p = model::create_params(addr.name(), &d.attrs).map_err(ProviderError::Other)?;
        ctx.progress("Defining", &format!("{addr} in storage.cfg"));
        match self.pve.api.post("/storage", &p).await {
            Ok(_) => self.read_back(addr).await,
            // Defined meanwhile by someone else: fine if it is what we wanted.
            Err(ProviderError::Api { message, .. }) if message.contains("already defined") => {
                let found = self.read_back(addr).await?;
                let differs = attr_differences(KIND, &d.attrs, &found.attrs);
                if differs.is_empty() {
                    Ok(found)
                } else {
                    Err(ProviderError::Conflict(format!(
                        "{addr} was defined in Proxmox meanwhile, with other {} ({message})\n\
                         help: run `phoenix plan` again to see how it differs from the manifests",
                        differs.join(", ")
                    )))
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn update_impl(
        &self,
        d: &DesiredResource,
        live: &LiveObject,
        change: &Change,
        ctx: &dyn OpContext,
    ) -> Result<LiveObject, ProviderError> {
        let addr = &d.address;
        let tops: Vec<&str> = change
            .changed_paths
            .iter()
            .map(|p| p.split('.').next().unwrap_or(p))
            .collect();
        if let Some(other) = tops.iter().find(|t| **t != "content") {
            return Err(ProviderError::Other(format!(
                "{addr}: `{other}` cannot change in place\nhelp: this is a phoenix bug (it forces a \
                 replacement); please report it with the plan"
            )));
        }
        if d.create.get(VERIFY_ONLY) == Some(&json!(true)) {
            let (message, help) = model::verify_problem(d, Some(live)).unwrap_or_default();
            return Err(ProviderError::Other(format!("{message}\nhelp: {help}")));
        }
        if let Some(want) = d.attrs.get("content") {
            let content = model::content_param(want, live.attrs.get("content"));
            let p = if content.is_empty() {
                vec![("delete".to_string(), "content".to_string())]
            } else {
                vec![("content".to_string(), content.clone())]
            };
            ctx.progress("Configuring", &format!("{addr}: content {content}"));
            self.pve
                .api
                .put(&format!("/storage/{}", addr.name()), &p)
                .await?;
        }
        self.read_back(addr).await
    }

    async fn delete_impl(&self, addr: &Address, ctx: &dyn OpContext) -> Result<(), ProviderError> {
        let id = addr.name();
        let node = self.pve.node().await?;
        // Removing the definition of a storage that still holds disks strands them.
        match self
            .pve
            .api
            .get(&format!("/nodes/{node}/storage/{id}/content"), &[])
            .await
        {
            Ok(Value::Array(items)) => {
                let disks: Vec<&str> = items
                    .iter()
                    .filter(|v| matches!(v["content"].as_str(), Some("images" | "rootdir")))
                    .filter_map(|v| v["volid"].as_str())
                    .collect();
                if !disks.is_empty() {
                    return Err(ProviderError::Other(format!(
                        "{addr} still holds {} guest disk(s): {}\nhelp: move or destroy them first, \
                         or put the storage back in the manifests",
                        disks.len(),
                        disks.join(", ")
                    )));
                }
            }
            Ok(_) | Err(ProviderError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        ctx.progress(
            "Removing",
            &format!("{addr} from storage.cfg (its data stays)"),
        );
        match self.pve.api.delete(&format!("/storage/{id}"), &[]).await {
            Ok(_) | Err(ProviderError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl ResourceProvider for StorageProvider {
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
            let mut all = self.read_all().await?;
            Ok(addresses
                .iter()
                .filter_map(|a| all.remove(a.name()).map(|o| (a.clone(), o)))
                .collect())
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
        _remote: &'a Value,
        ctx: &'a dyn OpContext,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(self.delete_impl(address, ctx))
    }

    fn lanes(&self, _change: &Change, _desired: Option<&DesiredResource>) -> Vec<Lane> {
        vec![Lane {
            key: "pve:storage.cfg".into(),
            capacity: 1,
        }]
    }
}
