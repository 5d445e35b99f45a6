//! `template.<storage>:vztmpl/<file>` on Proxmox: read each storage's OS
//! templates once (`GET /nodes/{node}/storage/{storage}/content?content=vztmpl`),
//! download a missing one once (`POST .../download-url`), never delete one.
//!
//! The download URL and checksum come from the node's appliance index
//! (`GET /nodes/{node}/aplinfo`, what `pveam` uses); a file the index does not
//! list is fetched from Proxmox's image server by name, without a checksum.
//! `POST /nodes/{node}/aplinfo` (pveam's own download) is not used: it only
//! fetches files the index lists, while `download-url` fetches those (with
//! the index's checksum) and any other by URL, in one task that ends with the
//! file on the storage. It needs `Sys.Modify` (or `Sys.AccessNetwork` on the
//! node) besides `Datastore.AllocateTemplate`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::{Pve, guest, params};
use crate::model::template::{KIND, split_volume_id};
use crate::model::{Address, DesiredResource, LiveObject};
use crate::plan::Change;
use crate::providers::{BoxFuture, Lane, OpContext, ProviderError, ResourceProvider};

/// Where Proxmox publishes its system templates, for files the index lacks.
const IMAGE_SERVER: &str = "http://download.proxmox.com/images/system";

pub struct TemplateProvider {
    pve: Arc<Pve>,
}

fn parts(addr: &Address) -> Result<(&str, &str), ProviderError> {
    split_volume_id(addr.name()).ok_or_else(|| {
        ProviderError::Other(format!(
            "`{addr}`: a template address needs a volume id, `template.<storage>:vztmpl/<file>`"
        ))
    })
}

fn live(node: &str, sid: &str, file: &str) -> LiveObject {
    let mut attrs = Map::new();
    attrs.insert("storage".into(), json!(sid));
    attrs.insert("file".into(), json!(file));
    LiveObject {
        attrs,
        remote: json!({"node": node, "storage": sid, "volid": format!("{sid}:vztmpl/{file}")}),
        token: None,
    }
}

/// The download URL and sha512 of a template, from an `aplinfo` listing.
pub fn index_entry(aplinfo: &Value, file: &str) -> Option<(String, Option<String>)> {
    aplinfo.as_array()?.iter().find_map(|e| {
        if e["template"].as_str() != Some(file) {
            return None;
        }
        let url = e["location"].as_str()?.to_string();
        let sum = e["sha512sum"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        Some((url, sum))
    })
}

impl TemplateProvider {
    pub fn new(pve: Arc<Pve>) -> Self {
        TemplateProvider { pve }
    }

    /// The OS templates on a storage; none if the storage does not exist (yet).
    async fn listing(&self, node: &str, sid: &str) -> Result<BTreeSet<String>, ProviderError> {
        let r = self
            .pve
            .api
            .get(
                &format!("/nodes/{node}/storage/{sid}/content"),
                &params(&[("content", "vztmpl".into())]),
            )
            .await;
        match r {
            Ok(v) => Ok(v
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e["volid"].as_str().map(str::to_string))
                .collect()),
            Err(ProviderError::NotFound(_)) => Ok(BTreeSet::new()),
            Err(e) => Err(e),
        }
    }

    async fn create_impl(
        &self,
        d: &DesiredResource,
        ctx: &dyn OpContext,
    ) -> Result<LiveObject, ProviderError> {
        let addr = &d.address;
        let (sid, file) = parts(addr)?;
        let node = self.pve.node().await?;
        // A journaled download may have finished: never fetch twice.
        if self.listing(&node, sid).await?.contains(addr.name()) {
            return Ok(live(&node, sid, file));
        }
        let index = match self
            .pve
            .api
            .get(&format!("/nodes/{node}/aplinfo"), &[])
            .await
        {
            Ok(v) => v,
            // The index is a convenience: without it the file is fetched by name.
            Err(e) => {
                tracing::debug!(%addr, "appliance index unreadable: {e}");
                Value::Null
            }
        };
        let (url, sum) =
            index_entry(&index, file).unwrap_or_else(|| (format!("{IMAGE_SERVER}/{file}"), None));
        let mut p = params(&[
            ("url", url.clone()),
            ("content", "vztmpl".into()),
            ("filename", file.to_string()),
        ]);
        if let Some(sum) = sum {
            p.push(("checksum".into(), sum));
            p.push(("checksum-algorithm".into(), "sha512".into()));
        }
        ctx.progress("Downloading", &format!("{url} to {sid}"));
        let r = self
            .pve
            .api
            .post(&format!("/nodes/{node}/storage/{sid}/download-url"), &p)
            .await?;
        guest::run_task(&self.pve, addr, r, ctx)
            .await
            .map_err(|e| match e {
                ProviderError::TaskFailed {
                    upid,
                    status,
                    log_tail,
                } => ProviderError::TaskFailed {
                    upid,
                    status: format!(
                        "{status}\nhelp: put `{file}` on storage `{sid}` yourself (`pveam download {sid} {file}`, \
                         or an upload); phoenix then only checks that it is there"
                    ),
                    log_tail,
                },
                other => other,
            })?;
        if !self.listing(&node, sid).await?.contains(addr.name()) {
            return Err(ProviderError::Other(format!(
                "{addr}: the download finished but `{sid}` does not list the template\n\
                 help: check the storage's `vztmpl` content and the task log on node {node}"
            )));
        }
        Ok(live(&node, sid, file))
    }
}

impl ResourceProvider for TemplateProvider {
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
            let node = self.pve.node().await?;
            let mut by_storage: BTreeMap<&str, Vec<(&Address, &str)>> = BTreeMap::new();
            for a in addresses {
                let (sid, file) = parts(a)?;
                by_storage.entry(sid).or_default().push((a, file));
            }
            for (sid, items) in by_storage {
                let have = self.listing(&node, sid).await?;
                for (a, file) in items {
                    if have.contains(a.name()) {
                        out.insert(a.clone(), live(&node, sid, file));
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
        // Its attributes are its identity: there is nothing to change in place.
        Box::pin(async move { Ok(live.clone()) })
    }

    fn delete<'a>(
        &'a self,
        address: &'a Address,
        _remote: &'a Value,
        ctx: &'a dyn OpContext,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            // Templates are shared by every container made from them, and the
            // next container may need this one: it is only dropped from the state.
            ctx.progress(
                "Keeping",
                &format!("{address} on its storage (phoenix never deletes templates)"),
            );
            Ok(())
        })
    }

    fn lanes(&self, change: &Change, _desired: Option<&DesiredResource>) -> Vec<Lane> {
        vec![Lane {
            key: format!("template:{}", change.address.name()),
            capacity: 1,
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn download_source_from_the_appliance_index() {
        let index = json!([
            {"template": "other.tar.zst", "location": "http://x/other.tar.zst"},
            {"template": "debian-12-standard_12.7-1_amd64.tar.zst",
             "location": "http://download.proxmox.com/images/system/debian-12-standard_12.7-1_amd64.tar.zst",
             "sha512sum": "abc"}
        ]);
        assert_eq!(
            index_entry(&index, "debian-12-standard_12.7-1_amd64.tar.zst"),
            Some((
                "http://download.proxmox.com/images/system/debian-12-standard_12.7-1_amd64.tar.zst"
                    .to_string(),
                Some("abc".to_string())
            ))
        );
        assert_eq!(index_entry(&index, "missing.tar.zst"), None);
        assert_eq!(index_entry(&json!([{}]), "x"), None);
        assert_eq!(index_entry(&Value::Null, "x"), None);
    }
}
