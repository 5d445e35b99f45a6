//! The `swarm.*` provider: the cluster, its worker nodes, overlay networks
//! and versioned secrets, through the Engine API of the manager (and of each
//! worker to join it). See [`crate::model::swarm`] for the attributes.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use bollard::models::{
    LocalNodeState, NetworkCreateRequest, Node, NodeSpec, NodeSpecAvailabilityEnum,
    NodeSpecRoleEnum, NodeState, SecretSpec, SwarmInitRequest, SwarmJoinRequest,
};
use bollard::query_parameters::{
    DeleteNodeOptionsBuilder, LeaveSwarmOptionsBuilder, ListSecretsOptionsBuilder,
    UpdateNodeOptionsBuilder, UpdateServiceOptionsBuilder,
};
use serde_json::{Map, Value, json};

use super::{Engine, Engines, api_error, read};
use crate::model::swarm::{self as model, KIND, Object, SECRET_LABEL};
use crate::model::{Address, DesiredResource, LiveObject};
use crate::plan::Change;
use crate::providers::{BoxFuture, Lane, OpContext, ProviderError, ResourceProvider};

pub struct SwarmProvider {
    engines: Arc<Engines>,
    root: PathBuf,
}

/// What the manager knows, read once per refresh.
struct Cluster {
    id: String,
    advertise_addr: String,
    version: u64,
}

fn attrs(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

fn str_attr<'a>(d: &'a DesiredResource, key: &str) -> Result<&'a str, ProviderError> {
    d.attrs
        .get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| ProviderError::Other(format!("{} has no `{key}` attribute", d.address)))
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn node_hostname(n: &Node) -> &str {
    n.description
        .as_ref()
        .and_then(|d| d.hostname.as_deref())
        .unwrap_or_default()
}

fn node_ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.state)
        .is_some_and(|s| s == NodeState::READY)
}

fn node_version(n: &Node) -> u64 {
    n.version.as_ref().and_then(|v| v.index).unwrap_or(0)
}

fn node_attrs(n: &Node) -> Map<String, Value> {
    let spec = n.spec.clone().unwrap_or_default();
    let labels: BTreeMap<String, String> = spec.labels.unwrap_or_default().into_iter().collect();
    attrs(json!({
        "role": spec.role.map(|r| r.to_string()).unwrap_or_default(),
        "availability": spec.availability.map(|a| a.to_string()).unwrap_or_default(),
        "labels": labels,
    }))
}

/// A secret as its versions show it (oldest first). One version is the
/// secret's `version`. Several mean a rotation was cut short (services not
/// all moved, old versions not removed): `version` names them all, newest
/// first, so the plan shows an update, and the update finishes the rotation
/// towards the version the manifests want.
fn secret_live(versions: &[(String, String, String)]) -> Option<LiveObject> {
    let (id, _, _) = versions.last()?;
    let names: Vec<&str> = versions.iter().rev().map(|v| v.1.as_str()).collect();
    Some(LiveObject {
        attrs: attrs(json!({"version": names.join(", ")})),
        remote: json!({
            "id": id,
            "ids": versions.iter().map(|v| v.0.clone()).collect::<Vec<_>>(),
        }),
        token: Some(id.clone()),
    })
}

impl SwarmProvider {
    pub fn new(engines: Arc<Engines>, root: PathBuf) -> Self {
        SwarmProvider { engines, root }
    }

    fn manager(&self) -> Result<&Arc<Engine>, ProviderError> {
        self.engines.manager()
    }

    /// The swarm this manager leads, if it is an active manager.
    async fn cluster(&self) -> Result<Option<Cluster>, ProviderError> {
        let m = self.manager()?;
        let c = m.client().await?;
        let info = read(&m.name, "reading the engine info", move || c.info()).await?;
        let Some(sw) = info.swarm else {
            return Ok(None);
        };
        if sw.local_node_state != Some(LocalNodeState::ACTIVE) || sw.control_available != Some(true)
        {
            return Ok(None);
        }
        let c = sw.cluster.unwrap_or_default();
        Ok(Some(Cluster {
            id: c.id.unwrap_or_default(),
            advertise_addr: sw.node_addr.unwrap_or_default(),
            version: c.version.and_then(|v| v.index).unwrap_or(0),
        }))
    }

    async fn nodes(&self) -> Result<Vec<Node>, ProviderError> {
        let m = self.manager()?;
        let c = m.client().await?;
        read(&m.name, "listing the swarm nodes", move || {
            c.list_nodes(None)
        })
        .await
    }

    /// The live node of this hostname: the ready entry, with the ids of stale (down) ones.
    fn node_live(nodes: &[Node], hostname: &str) -> Option<LiveObject> {
        let same: Vec<&Node> = nodes
            .iter()
            .filter(|n| node_hostname(n) == hostname)
            .collect();
        let stale: Vec<String> = same
            .iter()
            .filter(|n| !node_ready(n))
            .filter_map(|n| n.id.clone())
            .collect();
        let live = same.iter().find(|n| node_ready(n))?;
        Some(LiveObject {
            attrs: node_attrs(live),
            remote: json!({"id": live.id, "version": node_version(live), "stale": stale}),
            token: Some(node_version(live).to_string()),
        })
    }

    /// Secret versions phoenix made, by logical name: `(id, version name, created)`.
    async fn secret_versions(
        &self,
    ) -> Result<BTreeMap<String, Vec<(String, String, String)>>, ProviderError> {
        let m = self.manager()?;
        let filters: HashMap<String, Vec<String>> =
            HashMap::from([("label".to_string(), vec![SECRET_LABEL.to_string()])]);
        let c = m.client().await?;
        let options = ListSecretsOptionsBuilder::default()
            .filters(&filters)
            .build();
        let list = read(&m.name, "listing the swarm secrets", move || {
            c.list_secrets(Some(options.clone()))
        })
        .await?;
        let mut out: BTreeMap<String, Vec<(String, String, String)>> = BTreeMap::new();
        for s in list {
            let spec = s.spec.unwrap_or_default();
            let Some(logical) = spec
                .labels
                .as_ref()
                .and_then(|l| l.get(SECRET_LABEL))
                .cloned()
            else {
                continue;
            };
            out.entry(logical).or_default().push((
                s.id.unwrap_or_default(),
                spec.name.unwrap_or_default(),
                s.created_at.unwrap_or_default(),
            ));
        }
        for v in out.values_mut() {
            v.sort_by(|a, b| a.2.cmp(&b.2));
        }
        Ok(out)
    }

    async fn refresh_all(
        &self,
        addresses: &[Address],
    ) -> Result<BTreeMap<Address, LiveObject>, ProviderError> {
        let mut out = BTreeMap::new();
        let objs: Vec<(Address, Object)> = addresses
            .iter()
            .filter_map(|a| Object::of(a).map(|o| (a.clone(), o)))
            .collect();
        if objs.is_empty() {
            return Ok(out);
        }
        let Some(cluster) = self.cluster().await? else {
            return Ok(out);
        };
        let wants = |f: fn(&Object) -> bool| objs.iter().any(|(_, o)| f(o));
        let nodes = if wants(|o| matches!(o, Object::Node(_))) {
            self.nodes().await?
        } else {
            Vec::new()
        };
        let networks = if wants(|o| matches!(o, Object::Network(_))) {
            let m = self.manager()?;
            let c = m.client().await?;
            read(&m.name, "listing the networks", move || {
                c.list_networks(None)
            })
            .await?
        } else {
            Vec::new()
        };
        let secrets = if wants(|o| matches!(o, Object::Secret(_))) {
            self.secret_versions().await?
        } else {
            BTreeMap::new()
        };
        for (addr, o) in objs {
            let live = match &o {
                Object::Cluster => Some(LiveObject {
                    attrs: attrs(json!({"advertise_addr": cluster.advertise_addr})),
                    remote: json!({"id": cluster.id}),
                    token: Some(cluster.version.to_string()),
                }),
                Object::Node(h) => Self::node_live(&nodes, h),
                Object::Network(n) => networks
                    .iter()
                    .find(|x| x.name.as_deref() == Some(n) && x.scope.as_deref() == Some("swarm"))
                    .map(|x| LiveObject {
                        attrs: attrs(json!({
                            "driver": x.driver.clone().unwrap_or_default(),
                            "attachable": x.attachable.unwrap_or(false),
                        })),
                        remote: json!({"id": x.id}),
                        token: None,
                    }),
                Object::Secret(n) => secrets.get(n).and_then(|v| secret_live(v)),
            };
            if let Some(l) = live {
                out.insert(addr, l);
            }
        }
        Ok(out)
    }

    async fn read_one(&self, addr: &Address) -> Result<LiveObject, ProviderError> {
        self.refresh_all(std::slice::from_ref(addr))
            .await?
            .remove(addr)
            .ok_or_else(|| {
                ProviderError::Other(format!("{addr} is missing right after it was made"))
            })
    }

    async fn create_cluster(&self, d: &DesiredResource) -> Result<(), ProviderError> {
        let m = self.manager()?;
        let addr = str_attr(d, "advertise_addr")?;
        m.client()
            .await?
            .init_swarm(SwarmInitRequest {
                // Raft listens on the advertised interface only, not on every one.
                listen_addr: Some(format!("{addr}:2377")),
                advertise_addr: Some(addr.to_string()),
                ..Default::default()
            })
            .await
            .map_err(|e| api_error(&m.name, "initialising the swarm", e))?;
        Ok(())
    }

    async fn join_node(&self, hostname: &str, ctx: &dyn OpContext) -> Result<(), ProviderError> {
        let m = self.manager()?;
        let mc = m.client().await?;
        let swarm = read(&m.name, "reading the swarm", move || mc.inspect_swarm()).await?;
        let token = swarm
            .join_tokens
            .and_then(|t| t.worker)
            .ok_or_else(|| ProviderError::Other("the swarm has no worker join token".into()))?;
        let cluster = self
            .cluster()
            .await?
            .ok_or_else(|| ProviderError::Other("the manager leads no swarm".into()))?;
        let w = self.engines.get(hostname)?;
        let wc = w.client().await?;
        let info = read(&w.name, "reading the engine info", move || wc.info()).await?;
        // A node still in a swarm (an old one, or this one from before it was removed) leaves first.
        if info
            .swarm
            .and_then(|s| s.local_node_state)
            .is_some_and(|s| s != LocalNodeState::INACTIVE)
        {
            ctx.progress("Leaving", &format!("{hostname}: its old swarm"));
            wc.leave_swarm(Some(
                LeaveSwarmOptionsBuilder::default().force(true).build(),
            ))
            .await
            .map_err(|e| api_error(&w.name, "leaving the old swarm", e))?;
        }
        ctx.progress(
            "Joining",
            &format!("{hostname} to the swarm at {}", cluster.advertise_addr),
        );
        wc.join_swarm(SwarmJoinRequest {
            listen_addr: Some("0.0.0.0:2377".into()),
            remote_addrs: Some(vec![format!("{}:2377", cluster.advertise_addr)]),
            join_token: Some(token),
            ..Default::default()
        })
        .await
        .map_err(|e| api_error(&w.name, "joining the swarm", e))?;
        Ok(())
    }

    async fn update_node(&self, d: &DesiredResource, hostname: &str) -> Result<(), ProviderError> {
        let m = self.manager()?;
        let nodes = self.nodes().await?;
        let live = Self::node_live(&nodes, hostname).ok_or_else(|| {
            ProviderError::Other(format!("{hostname} is not a ready node of the swarm"))
        })?;
        let id = live.remote["id"].as_str().unwrap_or_default().to_string();
        let version = live.remote["version"].as_u64().unwrap_or(0);
        let labels: HashMap<String, String> = d
            .attrs
            .get("labels")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let role = match d.attrs.get("role").and_then(Value::as_str) {
            Some("manager") => NodeSpecRoleEnum::MANAGER,
            _ => NodeSpecRoleEnum::WORKER,
        };
        let availability = match d.attrs.get("availability").and_then(Value::as_str) {
            Some("pause") => NodeSpecAvailabilityEnum::PAUSE,
            Some("drain") => NodeSpecAvailabilityEnum::DRAIN,
            _ => NodeSpecAvailabilityEnum::ACTIVE,
        };
        m.client()
            .await?
            .update_node(
                &id,
                NodeSpec {
                    name: None,
                    labels: Some(labels),
                    role: Some(role),
                    availability: Some(availability),
                },
                UpdateNodeOptionsBuilder::default()
                    .version(version as i64)
                    .build(),
            )
            .await
            .map_err(|e| api_error(&m.name, &format!("updating node {hostname}"), e))
    }

    async fn create_network(&self, d: &DesiredResource, name: &str) -> Result<(), ProviderError> {
        let m = self.manager()?;
        m.client()
            .await?
            .create_network(NetworkCreateRequest {
                name: name.to_string(),
                driver: Some(str_attr(d, "driver")?.to_string()),
                attachable: Some(
                    d.attrs
                        .get("attachable")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                ),
                ..Default::default()
            })
            .await
            .map_err(|e| api_error(&m.name, &format!("creating network {name}"), e))?;
        Ok(())
    }

    /// Create the version the manifests want, unless it exists; returns its id.
    async fn ensure_secret_version(
        &self,
        d: &DesiredResource,
        name: &str,
    ) -> Result<String, ProviderError> {
        let no_value = || {
            ProviderError::Config(format!(
                "the swarm secret `{name}` has no value, and creating it needs one\nhelp: set {} or write it to secrets/{name} under the site (mode 0600, kept out of git)",
                model::secret_env_name(name)
            ))
        };
        // No version: the plan found no value (plans do not need secrets).
        let Some(want) = d.attrs.get("version").and_then(Value::as_str) else {
            return Err(match model::secret_value(&self.root, name) {
                None => no_value(),
                Some(_) => ProviderError::Conflict(format!(
                    "the swarm secret `{name}` got a value since the plan: plan again"
                )),
            });
        };
        let want = want.to_string();
        let versions = self.secret_versions().await?;
        if let Some((id, _, _)) = versions
            .get(name)
            .and_then(|v| v.iter().find(|(_, n, _)| *n == want))
        {
            return Ok(id.clone());
        }
        let value = model::secret_value(&self.root, name).ok_or_else(no_value)?;
        // The value read now must be the one the plan saw.
        if model::secret_version(name, &value) != want {
            return Err(ProviderError::Conflict(format!(
                "the value of the swarm secret `{name}` changed since the plan: plan again"
            )));
        }
        let m = self.manager()?;
        let r = m
            .client()
            .await?
            .create_secret(SecretSpec {
                name: Some(want.clone()),
                labels: Some(HashMap::from([(
                    SECRET_LABEL.to_string(),
                    name.to_string(),
                )])),
                data: Some(base64(&value)),
                ..Default::default()
            })
            .await
            .map_err(|e| api_error(&m.name, &format!("creating secret {want}"), e))?;
        Ok(r.id)
    }

    /// Point every service using an old version of `name` at `new_id`, then remove the old versions.
    async fn rotate_secret(
        &self,
        name: &str,
        new_id: &str,
        ctx: &dyn OpContext,
    ) -> Result<(), ProviderError> {
        let m = self.manager()?;
        let c = m.client().await?;
        let versions = self.secret_versions().await?;
        let all = versions.get(name).cloned().unwrap_or_default();
        let new_name = all
            .iter()
            .find(|v| v.0 == new_id)
            .map(|v| v.1.clone())
            .unwrap_or_default();
        let old: Vec<(String, String, String)> =
            all.into_iter().filter(|v| v.0 != new_id).collect();
        if old.is_empty() {
            return Ok(());
        }
        let services = read(&m.name, "listing the services", move || {
            c.list_services(None)
        })
        .await?;
        for s in services {
            let (Some(id), Some(mut spec)) = (s.id.clone(), s.spec.clone()) else {
                continue;
            };
            let version = s.version.and_then(|v| v.index).unwrap_or(0);
            let mut touched = false;
            if let Some(secrets) = spec
                .task_template
                .as_mut()
                .and_then(|t| t.container_spec.as_mut())
                .and_then(|c| c.secrets.as_mut())
            {
                for r in secrets.iter_mut() {
                    if old.iter().any(|o| Some(&o.0) == r.secret_id.as_ref()) {
                        r.secret_id = Some(new_id.to_string());
                        r.secret_name = Some(new_name.clone());
                        touched = true;
                    }
                }
            }
            if touched {
                let sname = spec.name.clone().unwrap_or_default();
                ctx.progress(
                    "Updating",
                    &format!("service {sname}: secret {name} -> {new_name}"),
                );
                c.update_service(
                    &id,
                    spec,
                    UpdateServiceOptionsBuilder::default()
                        .version(version as i32)
                        .build(),
                    None,
                )
                .await
                .map_err(|e| api_error(&m.name, &format!("updating service {sname}"), e))?;
            }
        }
        for (id, vname, _) in old {
            ctx.progress("Removing", &format!("secret version {vname}"));
            match c.delete_secret(&id).await {
                Ok(()) => {}
                Err(e) => {
                    let e = api_error(&m.name, &format!("removing secret version {vname}"), e);
                    if !matches!(e, ProviderError::NotFound(_)) {
                        return Err(e);
                    }
                }
            }
        }
        Ok(())
    }
}

impl ResourceProvider for SwarmProvider {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn refresh<'a>(
        &'a self,
        addresses: &'a [Address],
    ) -> BoxFuture<'a, Result<BTreeMap<Address, LiveObject>, ProviderError>> {
        Box::pin(self.refresh_all(addresses))
    }

    fn create<'a>(
        &'a self,
        desired: &'a DesiredResource,
        ctx: &'a dyn OpContext,
    ) -> BoxFuture<'a, Result<LiveObject, ProviderError>> {
        Box::pin(async move {
            let addr = &desired.address;
            match Object::of(addr) {
                Some(Object::Cluster) => self.create_cluster(desired).await?,
                Some(Object::Node(h)) => {
                    self.join_node(&h, ctx).await?;
                    self.update_node(desired, &h).await?;
                }
                Some(Object::Network(n)) => self.create_network(desired, &n).await?,
                Some(Object::Secret(n)) => {
                    let id = self.ensure_secret_version(desired, &n).await?;
                    self.rotate_secret(&n, &id, ctx).await?;
                }
                None => {
                    return Err(ProviderError::Other(format!(
                        "{addr} is not a swarm object phoenix knows"
                    )));
                }
            }
            self.read_one(addr).await
        })
    }

    fn update<'a>(
        &'a self,
        desired: &'a DesiredResource,
        _live: &'a LiveObject,
        _change: &'a Change,
        ctx: &'a dyn OpContext,
    ) -> BoxFuture<'a, Result<LiveObject, ProviderError>> {
        Box::pin(async move {
            let addr = &desired.address;
            match Object::of(addr) {
                Some(Object::Node(h)) => self.update_node(desired, &h).await?,
                Some(Object::Secret(n)) => {
                    let id = self.ensure_secret_version(desired, &n).await?;
                    self.rotate_secret(&n, &id, ctx).await?;
                }
                _ => {
                    return Err(ProviderError::Other(format!(
                        "{addr} cannot be changed in place"
                    )));
                }
            }
            self.read_one(addr).await
        })
    }

    fn delete<'a>(
        &'a self,
        address: &'a Address,
        remote: &'a Value,
        ctx: &'a dyn OpContext,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            let m = self.manager()?;
            let c = m.client().await?;
            let gone = |r: Result<(), bollard::errors::Error>, what: &str| match r {
                Ok(()) => Ok(()),
                Err(e) => match api_error(&m.name, what, e) {
                    ProviderError::NotFound(_) => Ok(()),
                    other => Err(other),
                },
            };
            match Object::of(address) {
                Some(Object::Cluster) => {
                    ctx.progress("Leaving", "the swarm on the manager (it ends the swarm)");
                    gone(
                        c.leave_swarm(Some(
                            LeaveSwarmOptionsBuilder::default().force(true).build(),
                        ))
                        .await,
                        "leaving the swarm",
                    )
                }
                Some(Object::Node(h)) => {
                    // The worker leaves if it can be reached; the manager forgets it either way.
                    if let Ok(w) = self.engines.get(&h)
                        && let Ok(wc) = w.client().await
                    {
                        let _ = wc
                            .leave_swarm(Some(
                                LeaveSwarmOptionsBuilder::default().force(true).build(),
                            ))
                            .await;
                    }
                    match remote["id"].as_str() {
                        Some(id) => gone(
                            c.delete_node(
                                id,
                                Some(DeleteNodeOptionsBuilder::default().force(true).build()),
                            )
                            .await,
                            &format!("removing node {h}"),
                        ),
                        None => Ok(()),
                    }
                }
                Some(Object::Network(n)) => gone(
                    c.remove_network(remote["id"].as_str().unwrap_or(&n)).await,
                    &format!("removing network {n}"),
                ),
                Some(Object::Secret(n)) => {
                    for id in remote["ids"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                    {
                        gone(c.delete_secret(id).await, &format!("removing secret {n}"))?;
                    }
                    Ok(())
                }
                None => Ok(()),
            }
        })
    }

    fn lanes(&self, _change: &Change, _desired: Option<&DesiredResource>) -> Vec<Lane> {
        // The swarm's raft store takes one write at a time; so does phoenix.
        vec![Lane {
            key: "swarm".into(),
            capacity: 1,
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotation_cut_short_reads_as_every_version_so_the_plan_finishes_it() {
        let v = |id: &str, name: &str, at: &str| (id.to_string(), name.to_string(), at.to_string());
        let one = secret_live(&[v("a", "db-111", "1")]).unwrap();
        assert_eq!(one.attrs["version"], json!("db-111"));
        let two = secret_live(&[v("a", "db-111", "1"), v("b", "db-222", "2")]).unwrap();
        assert_eq!(two.attrs["version"], json!("db-222, db-111"));
        assert_eq!(two.remote["ids"], json!(["a", "b"]));
        assert_eq!(two.token.as_deref(), Some("b"));
        assert!(secret_live(&[]).is_none());
    }

    #[test]
    fn base64_encodes() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"hello"), "aGVsbG8=");
    }
}
