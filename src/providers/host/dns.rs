//! `dns.records` on the host: the dnsmasq drop-in, read with the attributes of
//! `model/dns.rs`, written with [`install`]: `dnsmasq --test --conf-file` on the
//! new file before it replaces the old one, then the reload command
//! (`PHOENIX_DNSMASQ_RELOAD`, default `systemctl restart dnsmasq`); a failed
//! reload puts the old file back and reloads again.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

use super::install::{self, Install};
use super::{Host, Machine};
use crate::model::dns::{self as model, KIND, MODE};
use crate::model::{Address, DesiredResource, LiveObject};
use crate::plan::Change;
use crate::providers::{BoxFuture, Lane, OpContext, ProviderError, ResourceProvider};
use crate::render::dnsmasq::PATH;

/// Checks the new file alone, before it is put in place.
pub const PRECHECK: &str = r#"dnsmasq --test --conf-file="$PHOENIX_FILE""#;

pub struct DnsProvider {
    host: Arc<Host>,
    reload: String,
}

impl DnsProvider {
    pub fn new(host: Arc<Host>, reload: String) -> Self {
        DnsProvider { host, reload }
    }

    async fn read(&self) -> Result<Option<LiveObject>, ProviderError> {
        let path = self.host.path(PATH);
        Ok(install::read(self.host.as_ref(), &path, None)
            .await?
            .map(|f| LiveObject {
                attrs: model::attrs_of(&f.content, &f.mode),
                remote: json!({"path": PATH}),
                token: None,
            }))
    }

    async fn write(
        &self,
        desired: &DesiredResource,
        ctx: &dyn OpContext,
    ) -> Result<LiveObject, ProviderError> {
        let content = desired
            .attrs
            .get("content")
            .and_then(Value::as_str)
            .ok_or_else(|| ProviderError::Other("dns.records has no content".into()))?;
        let path = self.host.path(PATH);
        ctx.progress(
            "Writing",
            &format!("{} {PATH} on the host", desired.address),
        );
        install::install(
            self.host.as_ref(),
            &Install {
                path: &path,
                mode: MODE,
                link: None,
                precheck: Some(PRECHECK),
                check: None,
                reload: Some(&self.reload),
            },
            content,
        )
        .await?;
        self.read().await?.ok_or_else(|| {
            ProviderError::Other(format!("{PATH} is missing right after it was written"))
        })
    }
}

impl ResourceProvider for DnsProvider {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn refresh<'a>(
        &'a self,
        addresses: &'a [Address],
    ) -> BoxFuture<'a, Result<BTreeMap<Address, LiveObject>, ProviderError>> {
        Box::pin(async move {
            let mut out = BTreeMap::new();
            for a in addresses.iter().filter(|a| a.name() == model::NAME) {
                if let Some(l) = self.read().await? {
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
        _address: &'a Address,
        _remote: &'a Value,
        ctx: &'a dyn OpContext,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            let path = self.host.path(PATH);
            ctx.progress("Removing", &format!("{_address} {PATH} on the host"));
            install::remove(
                self.host.as_ref(),
                &Install {
                    path: &path,
                    reload: Some(&self.reload),
                    ..Default::default()
                },
            )
            .await
        })
    }

    fn lanes(&self, _change: &Change, _desired: Option<&DesiredResource>) -> Vec<Lane> {
        vec![Lane {
            key: "host:dnsmasq".into(),
            capacity: 1,
        }]
    }
}
