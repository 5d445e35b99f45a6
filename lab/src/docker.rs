//! The Docker Engine API subset of one simulated node: `/info`, `/version`,
//! `/swarm*`, `/nodes*`, `/networks*` (swarm scope), `/secrets*`, `/services*`
//! and `/tasks`, as `../shared/specs/docker` (API v1.55) describes them. Status
//! codes and error messages are the Engine's: a worker or a node outside a
//! swarm answers the manager-only calls with 503 and its exact message, a
//! stale `version` is "update out of sequence", a name taken is 409.
//!
//! Both the node's own port and Portainer's `/api/endpoints/{id}/docker/*`
//! proxy call [`handle`].

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::gojson::{self, bool_of, get, str_of};
use crate::world::{Cluster, Membership, Obj, World, now_rfc3339, swarm_id};

/// The API version the lab speaks (the reference's).
pub const API_VERSION: &str = "1.55";
pub const MIN_API_VERSION: &str = "1.24";
pub const ENGINE_VERSION: &str = "29.7.2-phoenix-lab";

const NOT_MANAGER: &str = "This node is not a swarm manager. Use \"docker swarm init\" or \"docker swarm join\" to connect this node to swarm and try again.";
const WORKER: &str = "This node is not a swarm manager. Worker nodes can't be used to view or modify cluster state. Please run this command on a manager node or promote the current node to a manager.";
const ALREADY: &str = "This node is already part of a swarm. Use \"docker swarm leave\" to leave this swarm and join another one.";
const NOT_IN_SWARM: &str = "This node is not part of a swarm";
const LAST_MANAGER: &str = "You are attempting to leave the swarm on a node that is participating as a manager. Removing the last manager erases all current state of the swarm. Use `--force` to ignore this message.";
const OUT_OF_SEQUENCE: &str = "rpc error: code = Unknown desc = update out of sequence";

/// An answer: a status and a JSON body, or plain text (`/_ping`).
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub body: Option<Value>,
    pub text: Option<String>,
}

impl Reply {
    pub fn json(status: u16, body: Value) -> Self {
        Reply {
            status,
            body: Some(body),
            text: None,
        }
    }
    pub fn empty(status: u16) -> Self {
        Reply {
            status,
            body: None,
            text: None,
        }
    }
    pub fn text(status: u16, t: &str) -> Self {
        Reply {
            status,
            body: None,
            text: Some(t.to_string()),
        }
    }
    /// The Engine's error body.
    pub fn error(status: u16, message: impl Into<String>) -> Self {
        Reply::json(status, json!({"message": message.into()}))
    }
}

type Res = Result<Reply, Reply>;

/// `/v1.55/info` -> `/info`: the version prefix is optional, as on the Engine.
pub fn strip_version(path: &str) -> &str {
    if let Some(rest) = path.strip_prefix("/v")
        && let Some(slash) = rest.find('/')
    {
        let ver = &rest[..slash];
        if !ver.is_empty() && ver.chars().all(|c| c.is_ascii_digit() || c == '.') {
            return &rest[slash..];
        }
    }
    path
}

/// The version a client asked for, if it is newer than the lab speaks: the
/// Engine refuses it with 400.
fn check_version(path: &str) -> Result<(), Reply> {
    if let Some(rest) = path.strip_prefix("/v")
        && let Some(slash) = rest.find('/')
    {
        let ver = &rest[..slash];
        let parse = |v: &str| -> Option<(u32, u32)> {
            let (a, b) = v.split_once('.')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        };
        if let (Some(asked), Some(max), Some(min)) =
            (parse(ver), parse(API_VERSION), parse(MIN_API_VERSION))
        {
            if asked > max {
                return Err(Reply::error(
                    400,
                    format!(
                        "client version {ver} is too new. Maximum supported API version is {API_VERSION}"
                    ),
                ));
            }
            if asked < min {
                return Err(Reply::error(
                    400,
                    format!(
                        "client version {ver} is too old. Minimum supported API version is {MIN_API_VERSION}, please upgrade your client to a newer version"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Handle one request to engine `idx` (its index in `world.engines`).
pub fn handle(
    world: &mut World,
    idx: usize,
    method: &str,
    full_path: &str,
    query: &BTreeMap<String, String>,
    body: &[u8],
) -> Reply {
    if let Err(r) = check_version(full_path) {
        return r;
    }
    let path = strip_version(full_path).trim_end_matches('/');
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => return Reply::error(400, format!("invalid JSON: {e}")),
        }
    };
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let r = route(world, idx, method, &segs, query, &body);
    r.unwrap_or_else(|e| e)
}

fn route(
    w: &mut World,
    idx: usize,
    method: &str,
    segs: &[&str],
    q: &BTreeMap<String, String>,
    body: &Value,
) -> Res {
    match (method, segs) {
        ("GET" | "HEAD", ["_ping"]) => Ok(Reply::text(200, "OK")),
        ("GET", ["version"]) => Ok(Reply::json(200, version())),
        ("GET", ["info"]) => Ok(Reply::json(200, info(w, idx))),
        ("GET", ["swarm"]) => {
            let c = manager(w, idx)?;
            Ok(Reply::json(200, swarm_json(c)))
        }
        ("POST", ["swarm", "init"]) => swarm_init(w, idx, body),
        ("POST", ["swarm", "join"]) => swarm_join(w, idx, body),
        ("POST", ["swarm", "leave"]) => swarm_leave(w, idx, q),
        ("POST", ["swarm", "update"]) => swarm_update(w, idx, q, body),
        ("GET", ["nodes"]) => {
            let f = filters(q)?;
            let down = down_nodes(w, idx);
            let c = manager(w, idx)?;
            let list: Vec<Value> = c
                .nodes
                .values()
                .map(|n| node_json(n, &down))
                .filter(|n| node_matches(n, &f))
                .collect();
            Ok(Reply::json(200, Value::Array(list)))
        }
        ("GET", ["nodes", id]) => {
            let down = down_nodes(w, idx);
            let c = manager(w, idx)?;
            let n = find(&c.nodes, id, |n| {
                n.extra["Description"]["Hostname"].as_str() == Some(id)
            })
            .ok_or_else(|| Reply::error(404, format!("node {id} not found")))?;
            Ok(Reply::json(200, node_json(n, &down)))
        }
        ("POST", ["nodes", id, "update"]) => node_update(w, idx, id, q, body),
        ("DELETE", ["nodes", id]) => node_delete(w, idx, id, q),
        ("GET", ["networks"]) => {
            let f = filters(q)?;
            let list: Vec<Value> = networks(w, idx)
                .into_iter()
                .filter(|n| {
                    f.get("name").is_none_or(|names| {
                        names
                            .iter()
                            .any(|x| n["Name"].as_str().unwrap_or_default().contains(x.as_str()))
                    }) && f.get("id").is_none_or(|ids| {
                        ids.iter()
                            .any(|x| n["Id"].as_str().unwrap_or_default().starts_with(x.as_str()))
                    })
                })
                .collect();
            Ok(Reply::json(200, Value::Array(list)))
        }
        ("GET", ["networks", id]) => networks(w, idx)
            .into_iter()
            .find(|n| {
                n["Id"].as_str() == Some(id)
                    || n["Name"].as_str() == Some(id)
                    || (id.len() >= 3 && n["Id"].as_str().is_some_and(|x| x.starts_with(id)))
            })
            .map(|n| Reply::json(200, n))
            .ok_or_else(|| Reply::error(404, format!("network {id} not found"))),
        ("POST", ["networks", "create"]) => network_create(w, idx, body),
        ("DELETE", ["networks", id]) => network_delete(w, idx, id),
        ("GET", ["secrets"]) => {
            let f = filters(q)?;
            let c = manager(w, idx)?;
            accept(&f, &["names", "name", "id", "label"])?;
            let list: Vec<Value> = c
                .secrets
                .values()
                .filter(|s| named_matches(s, &f))
                .map(secret_json)
                .collect();
            Ok(Reply::json(200, Value::Array(list)))
        }
        ("GET", ["secrets", id]) => {
            let c = manager(w, idx)?;
            let s = find(&c.secrets, id, |s| s.name() == *id)
                .ok_or_else(|| Reply::error(404, format!("secret {id} not found")))?;
            Ok(Reply::json(200, secret_json(s)))
        }
        ("POST", ["secrets", "create"]) => secret_create(w, idx, body),
        ("POST", ["secrets", id, "update"]) => secret_update(w, idx, id, q, body),
        ("DELETE", ["secrets", id]) => secret_delete(w, idx, id),
        ("GET", ["services"]) => {
            let f = filters(q)?;
            let with_status = q.get("status").is_some_and(|s| s == "true" || s == "1");
            let c = manager(w, idx)?;
            // The keys the Engine accepts, checked after it knows it is a manager (as it does).
            accept(&f, &["name", "id", "label", "mode", "runtime"])?;
            let list: Vec<Value> = c
                .services
                .values()
                .filter(|s| named_matches(s, &f) && mode_matches(s, &f))
                .map(|s| service_json(s, with_status))
                .collect();
            Ok(Reply::json(200, Value::Array(list)))
        }
        ("GET", ["services", id]) => {
            let c = manager(w, idx)?;
            let s = find(&c.services, id, |s| s.name() == *id)
                .ok_or_else(|| Reply::error(404, format!("service {id} not found")))?;
            Ok(Reply::json(200, service_json(s, false)))
        }
        ("POST", ["services", "create"]) => {
            let c = manager_mut(w, idx)?;
            service_create(c, body)
        }
        ("POST", ["services", id, "update"]) => {
            let c = manager_mut(w, idx)?;
            service_update(c, id, q, body)
        }
        ("DELETE", ["services", id]) => {
            let c = manager_mut(w, idx)?;
            let sid = find(&c.services, id, |s| s.name() == *id)
                .map(|s| s.id.clone())
                .ok_or_else(|| Reply::error(404, format!("service {id} not found")))?;
            c.services.remove(&sid);
            c.bump();
            Ok(Reply::empty(200))
        }
        ("GET", ["tasks"]) => {
            let c = manager(w, idx)?;
            Ok(Reply::json(200, Value::Array(tasks(c))))
        }
        _ => Err(Reply::error(
            404,
            format!("page not found: {method} /{}", segs.join("/")),
        )),
    }
}

fn version() -> Value {
    json!({
        "Platform": {"Name": "phoenix-lab"},
        "Version": ENGINE_VERSION,
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "Os": "linux",
        "Arch": "amd64",
        "KernelVersion": "6.1.0",
        "Components": [{"Name": "Engine", "Version": ENGINE_VERSION}],
    })
}

/// Hostnames of the engines that are down, as the swarm sees them.
fn down_nodes(w: &World, _idx: usize) -> Vec<String> {
    w.engines
        .iter()
        .filter(|e| w.is_down(&e.hostname))
        .filter_map(|e| e.swarm.as_ref().map(|m| m.node_id.clone()))
        .collect()
}

fn membership(w: &World, idx: usize) -> Option<&Membership> {
    w.engines.get(idx).and_then(|e| e.swarm.as_ref())
}

fn is_manager(c: &Cluster, node_id: &str) -> bool {
    c.nodes
        .get(node_id)
        .is_some_and(|n| n.spec["Role"] == "manager")
}

/// The cluster, if this engine is one of its managers; the Engine's 503 otherwise.
fn manager(w: &World, idx: usize) -> Result<&Cluster, Reply> {
    let m = membership(w, idx).ok_or_else(|| Reply::error(503, NOT_MANAGER))?;
    let c = w
        .clusters
        .get(&m.cluster)
        .ok_or_else(|| Reply::error(503, NOT_MANAGER))?;
    if is_manager(c, &m.node_id) {
        Ok(c)
    } else {
        Err(Reply::error(503, WORKER))
    }
}

fn manager_mut(w: &mut World, idx: usize) -> Result<&mut Cluster, Reply> {
    manager(w, idx)?;
    let m = membership(w, idx)
        .cloned()
        .ok_or_else(|| Reply::error(503, NOT_MANAGER))?;
    w.clusters
        .get_mut(&m.cluster)
        .ok_or_else(|| Reply::error(503, NOT_MANAGER))
}

/// By full id, by `alt` (a name), or by an unambiguous id prefix.
fn find<'a>(
    map: &'a BTreeMap<String, Obj>,
    id: &str,
    alt: impl Fn(&Obj) -> bool,
) -> Option<&'a Obj> {
    if let Some(o) = map.get(id) {
        return Some(o);
    }
    if let Some(o) = map.values().find(|o| alt(o)) {
        return Some(o);
    }
    let mut pre = map.values().filter(|o| o.id.starts_with(id));
    match (pre.next(), pre.next()) {
        (Some(o), None) => Some(o),
        _ => None,
    }
}

/// The `filters` query parameter: `{"name": ["x"]}` or `{"name": {"x": true}}`.
fn filters(q: &BTreeMap<String, String>) -> Result<BTreeMap<String, Vec<String>>, Reply> {
    let Some(raw) = q.get("filters") else {
        return Ok(BTreeMap::new());
    };
    let v: Value =
        serde_json::from_str(raw).map_err(|e| Reply::error(400, format!("invalid filter: {e}")))?;
    let mut out = BTreeMap::new();
    if let Some(m) = v.as_object() {
        for (k, x) in m {
            let vals: Vec<String> = match x {
                Value::Array(a) => a
                    .iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect(),
                Value::Object(o) => o
                    .iter()
                    .filter(|(_, b)| b.as_bool() == Some(true))
                    .map(|(s, _)| s.clone())
                    .collect(),
                _ => return Err(Reply::error(400, format!("invalid filter '{k}'"))),
            };
            out.insert(k.clone(), vals);
        }
    }
    Ok(out)
}

/// A filter key the Engine does not know is its 400, not an ignored key: a
/// client with a typo gets an error there, never every object.
fn accept(f: &BTreeMap<String, Vec<String>>, accepted: &[&str]) -> Result<(), Reply> {
    match f.keys().find(|k| !accepted.contains(&k.as_str())) {
        Some(k) => Err(Reply::error(400, format!("Invalid filter '{k}'"))),
        None => Ok(()),
    }
}

/// `label=key` or `label=key=value` against a swarm object's labels, as
/// SwarmKit matches them: every one must hold, and an empty value (`key=`)
/// asks only that the key be there.
fn labels_match(labels: &Value, wanted: &[String]) -> bool {
    wanted.iter().all(|l| match l.split_once('=') {
        Some((k, "")) => labels.get(k).is_some(),
        Some((k, v)) => labels.get(k).and_then(Value::as_str) == Some(v),
        None => labels.get(l.as_str()).is_some(),
    })
}

/// SwarmKit's `name` and `id` filters are prefixes (`name=web` finds
/// `web_app`, `name=app` does not); `names` (secrets) are exact.
fn named_matches(o: &Obj, f: &BTreeMap<String, Vec<String>>) -> bool {
    f.get("name")
        .is_none_or(|names| names.iter().any(|n| o.name().starts_with(n.as_str())))
        && f.get("names")
            .is_none_or(|names| names.iter().any(|n| o.name() == n.as_str()))
        && f.get("id")
            .is_none_or(|ids| ids.iter().any(|i| o.id.starts_with(i.as_str())))
        && f.get("label")
            .is_none_or(|l| labels_match(&o.spec["Labels"], l))
}

/// A service's `mode` filter: `replicated` or `global` (any other value matches nothing).
fn mode_matches(o: &Obj, f: &BTreeMap<String, Vec<String>>) -> bool {
    f.get("mode").is_none_or(|modes| {
        modes.iter().any(|m| match m.as_str() {
            "global" => o.spec["Mode"].get("Global").is_some(),
            "replicated" => o.spec["Mode"].get("Replicated").is_some(),
            _ => false,
        })
    })
}

fn node_matches(n: &Value, f: &BTreeMap<String, Vec<String>>) -> bool {
    f.get("name").is_none_or(|names| {
        names.iter().any(|x| {
            n["Description"]["Hostname"].as_str() == Some(x.as_str())
                || n["Spec"]["Name"].as_str() == Some(x.as_str())
        })
    }) && f
        .get("id")
        .is_none_or(|ids| ids.iter().any(|i| n["ID"].as_str() == Some(i.as_str())))
        && f.get("role")
            .is_none_or(|r| r.iter().any(|x| n["Spec"]["Role"] == x.as_str()))
        && f.get("node.label")
            .is_none_or(|l| labels_match(&n["Spec"]["Labels"], l))
}

fn info(w: &World, idx: usize) -> Value {
    let e = &w.engines[idx];
    let swarm = match e
        .swarm
        .as_ref()
        .and_then(|m| w.clusters.get(&m.cluster).map(|c| (m, c)))
    {
        Some((m, c)) => {
            let control = is_manager(c, &m.node_id);
            let managers: Vec<Value> = c
                .nodes
                .values()
                .filter(|n| n.spec["Role"] == "manager")
                .map(|n| json!({"NodeID": n.id, "Addr": n.extra["ManagerStatus"]["Addr"]}))
                .collect();
            let mut s = json!({
                "NodeID": m.node_id,
                "NodeAddr": c.nodes.get(&m.node_id).map_or(json!(""), |n| n.extra["Status"]["Addr"].clone()),
                "LocalNodeState": "active",
                "ControlAvailable": control,
                "Error": "",
                "RemoteManagers": managers,
            });
            if control {
                s["Nodes"] = json!(c.nodes.len());
                s["Managers"] = json!(
                    c.nodes
                        .values()
                        .filter(|n| n.spec["Role"] == "manager")
                        .count()
                );
                s["Cluster"] = swarm_json(c);
                if let Some(m) = s["Cluster"].as_object_mut() {
                    m.remove("JoinTokens");
                }
            }
            s
        }
        None => json!({
            "NodeID": "",
            "NodeAddr": "",
            "LocalNodeState": "inactive",
            "ControlAvailable": false,
            "Error": "",
            "RemoteManagers": null,
        }),
    };
    json!({
        "ID": e.id,
        "Name": e.hostname,
        "ServerVersion": ENGINE_VERSION,
        "OperatingSystem": "phoenix-lab",
        "OSType": "linux",
        "Architecture": "x86_64",
        "NCPU": 2,
        "MemTotal": 4_294_967_296u64,
        "Driver": "vfs",
        "Containers": 0,
        "Images": 0,
        "Labels": [],
        "Swarm": swarm,
    })
}

fn swarm_json(c: &Cluster) -> Value {
    json!({
        "ID": c.id,
        "Version": {"Index": c.version},
        "CreatedAt": c.created,
        "UpdatedAt": c.updated,
        "Spec": c.spec,
        "TLSInfo": {"TrustRoot": "", "CertIssuerSubject": "", "CertIssuerPublicKey": ""},
        "RootRotationInProgress": false,
        "DataPathPort": 4789,
        "DefaultAddrPool": ["10.0.0.0/8"],
        "SubnetSize": 24,
        "JoinTokens": {"Worker": c.worker_token, "Manager": c.manager_token},
    })
}

fn default_swarm_spec(name: &str) -> Value {
    json!({
        "Name": name,
        "Labels": {},
        "Orchestration": {"TaskHistoryRetentionLimit": 5},
        "Raft": {"SnapshotInterval": 10000, "KeepOldSnapshots": 0, "LogEntriesForSlowFollowers": 500, "ElectionTick": 10, "HeartbeatTick": 1},
        "Dispatcher": {"HeartbeatPeriod": 5_000_000_000u64},
        "CAConfig": {"NodeCertExpiry": 7_776_000_000_000_000u64},
        "TaskDefaults": {},
        "EncryptionConfig": {"AutoLockManagers": false},
    })
}

/// `host:port` -> `host`.
fn host_of(addr: &str) -> &str {
    match addr.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => addr,
    }
}

fn node_obj(c: &mut Cluster, hostname: &str, addr: &str, role: &str) -> Obj {
    let manager_status = if role == "manager" {
        json!({"Leader": c.nodes.is_empty(), "Reachability": "reachable", "Addr": format!("{addr}:2377")})
    } else {
        Value::Null
    };
    let mut extra = json!({
        "Description": {
            "Hostname": hostname,
            "Platform": {"Architecture": "x86_64", "OS": "linux"},
            "Resources": {"NanoCPUs": 2_000_000_000u64, "MemoryBytes": 4_294_967_296u64},
            "Engine": {"EngineVersion": ENGINE_VERSION},
        },
        "Status": {"State": "ready", "Addr": addr},
    });
    if !manager_status.is_null() {
        extra["ManagerStatus"] = manager_status;
    }
    c.new_obj(
        json!({"Labels": {}, "Role": role, "Availability": "active"}),
        extra,
    )
}

fn node_json(n: &Obj, down: &[String]) -> Value {
    let mut v = n.to_json();
    if down.contains(&n.id) {
        v["Status"]["State"] = json!("down");
        v["Status"]["Message"] = json!("heartbeat failure");
        if v.get("ManagerStatus").is_some() {
            v["ManagerStatus"]["Reachability"] = json!("unreachable");
        }
    }
    v
}

fn swarm_init(w: &mut World, idx: usize, body: &Value) -> Res {
    if w.engines[idx].swarm.is_some() {
        return Err(Reply::error(503, ALREADY));
    }
    let advertise = str_of(body, "AdvertiseAddr");
    let addr = if advertise.is_empty() {
        w.engines[idx].addr.clone()
    } else {
        host_of(&advertise).to_string()
    };
    let spec = match get(body, "Spec") {
        Some(s) if s.is_object() => {
            let mut d = default_swarm_spec("default");
            if let (Some(dm), Some(sm)) = (d.as_object_mut(), gojson::canonical(s).as_object()) {
                for (k, v) in sm {
                    dm.insert(k.clone(), v.clone());
                }
            }
            d
        }
        _ => default_swarm_spec("default"),
    };
    let mut c = Cluster::new(spec);
    let hostname = w.engines[idx].hostname.clone();
    let node = node_obj(&mut c, &hostname, &addr, "manager");
    let node_id = node.id.clone();
    c.nodes.insert(node_id.clone(), node);
    let ingress = network_obj(&mut c, "ingress", "10.0.0.0/24", true, false, json!({}));
    c.networks.insert(ingress.id.clone(), ingress);
    let cid = c.id.clone();
    w.clusters.insert(cid.clone(), c);
    w.engines[idx].swarm = Some(Membership {
        cluster: cid,
        node_id: node_id.clone(),
    });
    Ok(Reply::json(200, json!(node_id)))
}

fn swarm_join(w: &mut World, idx: usize, body: &Value) -> Res {
    if w.engines[idx].swarm.is_some() {
        return Err(Reply::error(503, ALREADY));
    }
    let token = str_of(body, "JoinToken");
    let remotes: Vec<String> = get(body, "RemoteAddrs")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if remotes.is_empty() {
        return Err(Reply::error(
            400,
            "at least 1 RemoteAddr is required to join",
        ));
    }
    let down = down_nodes(w, idx);
    // The manager the join goes through must be one of this cluster's, reachable.
    let found = w.clusters.values().find(|c| {
        c.nodes.values().any(|n| {
            n.spec["Role"] == "manager"
                && !down.contains(&n.id)
                && remotes
                    .iter()
                    .any(|r| host_of(r) == n.extra["Status"]["Addr"].as_str().unwrap_or_default())
        })
    });
    let Some(cid) = found.map(|c| c.id.clone()) else {
        return Err(Reply::error(
            500,
            "Timeout was reached before node joined. The attempt to join the swarm will continue in the background. Use the \"docker info\" command to see the current swarm status of your node.",
        ));
    };
    let c = w
        .clusters
        .get_mut(&cid)
        .ok_or_else(|| Reply::error(500, "cluster vanished"))?;
    let role = if token == c.worker_token {
        "worker"
    } else if token == c.manager_token {
        "manager"
    } else {
        return Err(Reply::error(
            400,
            "rpc error: code = InvalidArgument desc = A valid join token is necessary to join this cluster",
        ));
    };
    let advertise = str_of(body, "AdvertiseAddr");
    let addr = if advertise.is_empty() {
        w.engines[idx].addr.clone()
    } else {
        host_of(&advertise).to_string()
    };
    let hostname = w.engines[idx].hostname.clone();
    let node = node_obj(c, &hostname, &addr, role);
    let node_id = node.id.clone();
    c.nodes.insert(node_id.clone(), node);
    w.engines[idx].swarm = Some(Membership {
        cluster: cid,
        node_id,
    });
    Ok(Reply::empty(200))
}

fn swarm_leave(w: &mut World, idx: usize, q: &BTreeMap<String, String>) -> Res {
    let force = q.get("force").is_some_and(|f| f == "true" || f == "1");
    let m = membership(w, idx)
        .cloned()
        .ok_or_else(|| Reply::error(503, NOT_IN_SWARM))?;
    let Some(c) = w.clusters.get_mut(&m.cluster) else {
        w.engines[idx].swarm = None;
        return Ok(Reply::empty(200));
    };
    let managers = c
        .nodes
        .values()
        .filter(|n| n.spec["Role"] == "manager")
        .count();
    let this_is_manager = is_manager(c, &m.node_id);
    if this_is_manager && !force {
        return Err(Reply::error(503, LAST_MANAGER));
    }
    if this_is_manager && managers <= 1 {
        w.clusters.remove(&m.cluster);
    } else if let Some(n) = c.nodes.get_mut(&m.node_id) {
        // A node that left stays listed, down, until it is removed.
        n.extra["Status"]["State"] = json!("down");
        n.extra["Status"]["Message"] = json!("node left the swarm");
        c.index += 1;
    }
    w.engines[idx].swarm = None;
    Ok(Reply::empty(200))
}

fn version_param(q: &BTreeMap<String, String>) -> Result<u64, Reply> {
    q.get("version")
        .ok_or_else(|| Reply::error(400, "invalid swarm version: missing"))?
        .parse()
        .map_err(|e| Reply::error(400, format!("invalid version: {e}")))
}

fn swarm_update(w: &mut World, idx: usize, q: &BTreeMap<String, String>, body: &Value) -> Res {
    let v = version_param(q)?;
    let c = manager_mut(w, idx)?;
    if v != c.version {
        return Err(Reply::error(500, OUT_OF_SEQUENCE));
    }
    c.spec = gojson::canonical(body);
    if q.get("rotateWorkerToken").is_some_and(|x| x == "true") {
        c.worker_token = format!("SWMTKN-1-{}-{}", swarm_id(), swarm_id());
    }
    if q.get("rotateManagerToken").is_some_and(|x| x == "true") {
        c.manager_token = format!("SWMTKN-1-{}-{}", swarm_id(), swarm_id());
    }
    c.version = c.bump();
    c.updated = now_rfc3339();
    Ok(Reply::empty(200))
}

fn node_update(
    w: &mut World,
    idx: usize,
    id: &str,
    q: &BTreeMap<String, String>,
    body: &Value,
) -> Res {
    let v = version_param(q)?;
    let c = manager_mut(w, idx)?;
    let nid = find(&c.nodes, id, |n| {
        n.extra["Description"]["Hostname"].as_str() == Some(id)
    })
    .map(|n| n.id.clone())
    .ok_or_else(|| Reply::error(404, format!("node {id} not found")))?;
    let index = c.index + 1;
    let n = c
        .nodes
        .get_mut(&nid)
        .ok_or_else(|| Reply::error(404, format!("node {id} not found")))?;
    if n.version != v {
        return Err(Reply::error(500, OUT_OF_SEQUENCE));
    }
    let spec = gojson::canonical(body);
    let role = spec["Role"].as_str().unwrap_or_default().to_string();
    let avail = spec["Availability"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if !matches!(role.as_str(), "manager" | "worker") {
        return Err(Reply::error(
            400,
            format!("rpc error: code = InvalidArgument desc = invalid role: {role:?}"),
        ));
    }
    if !matches!(avail.as_str(), "active" | "pause" | "drain") {
        return Err(Reply::error(
            400,
            format!("rpc error: code = InvalidArgument desc = invalid availability: {avail:?}"),
        ));
    }
    let mut new_spec = json!({
        "Labels": spec.get("Labels").cloned().filter(Value::is_object).unwrap_or_else(|| json!({})),
        "Role": role,
        "Availability": avail,
    });
    if let Some(name) = spec
        .get("Name")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        new_spec["Name"] = json!(name);
    }
    n.spec = new_spec;
    n.version = index;
    n.updated = now_rfc3339();
    c.index = index;
    Ok(Reply::empty(200))
}

fn node_delete(w: &mut World, idx: usize, id: &str, q: &BTreeMap<String, String>) -> Res {
    let force = q.get("force").is_some_and(|f| f == "true" || f == "1");
    let down = down_nodes(w, idx);
    let c = manager_mut(w, idx)?;
    let n = find(&c.nodes, id, |n| {
        n.extra["Description"]["Hostname"].as_str() == Some(id)
    })
    .ok_or_else(|| Reply::error(404, format!("node {id} not found")))?;
    let nid = n.id.clone();
    let state = node_json(n, &down)["Status"]["State"].clone();
    if state != "down" && !force {
        return Err(Reply::error(
            400,
            format!(
                "rpc error: code = FailedPrecondition desc = node {nid} is not down and can't be removed"
            ),
        ));
    }
    c.nodes.remove(&nid);
    c.bump();
    // The engine behind it is no longer in the swarm, as after `docker node rm --force`.
    for e in &mut w.engines {
        if e.swarm.as_ref().is_some_and(|m| m.node_id == nid) {
            e.swarm = None;
        }
    }
    Ok(Reply::empty(200))
}

fn network_obj(
    c: &mut Cluster,
    name: &str,
    subnet: &str,
    ingress: bool,
    attachable: bool,
    labels: Value,
) -> Obj {
    let vxlan = 4096 + c.networks.len() + 1;
    c.new_obj(
        json!({
            "Name": name,
            "Scope": "swarm",
            "Driver": "overlay",
            "EnableIPv4": true,
            "EnableIPv6": false,
            "IPAM": {"Driver": "default", "Options": null, "Config": [{"Subnet": subnet, "Gateway": subnet.replace(".0/24", ".1")}]},
            "Internal": false,
            "Attachable": attachable,
            "Ingress": ingress,
            "ConfigFrom": {"Network": ""},
            "ConfigOnly": false,
            "Containers": {},
            "Options": {"com.docker.network.driver.overlay.vxlanid_list": vxlan.to_string()},
            "Labels": labels,
        }),
        Value::Null,
    )
}

fn network_json(n: &Obj) -> Value {
    let mut v = n.spec.clone();
    v["Id"] = json!(n.id);
    v["Created"] = json!(n.created);
    v
}

/// The engine's networks: its local ones, and the swarm's when it manages one.
fn networks(w: &World, idx: usize) -> Vec<Value> {
    let local_id = |name: &str| {
        let e = &w.engines[idx];
        // Stable per engine, 64 hex like the Engine's.
        let mut s = String::new();
        for b in format!("{name}{}", e.id).bytes().cycle().take(32) {
            s.push_str(&format!("{b:02x}"));
        }
        s
    };
    let mut out: Vec<Value> = ["host", "none"]
        .iter()
        .map(|n| {
            json!({
                "Name": n, "Id": local_id(n), "Created": "2025-01-01T00:00:00Z", "Scope": "local",
                "Driver": if *n == "none" { "null" } else { "host" }, "EnableIPv4": true, "EnableIPv6": false,
                "IPAM": {"Driver": "default", "Options": null, "Config": []}, "Internal": false,
                "Attachable": false, "Ingress": false, "ConfigFrom": {"Network": ""}, "ConfigOnly": false,
                "Containers": {}, "Options": {}, "Labels": {},
            })
        })
        .collect();
    if let Ok(c) = manager(w, idx) {
        out.extend(c.networks.values().map(network_json));
    } else if let Some(c) = membership(w, idx).and_then(|m| w.clusters.get(&m.cluster)) {
        // A worker sees the ingress network only (and those its tasks use).
        out.extend(
            c.networks
                .values()
                .filter(|n| n.spec["Ingress"] == true)
                .map(network_json),
        );
    }
    out
}

fn network_create(w: &mut World, idx: usize, body: &Value) -> Res {
    let name = str_of(body, "Name");
    if name.is_empty() {
        return Err(Reply::error(400, "network name is required"));
    }
    let driver = str_of(body, "Driver");
    let driver = if driver.is_empty() {
        "bridge".to_string()
    } else {
        driver
    };
    if driver != "overlay" {
        return Err(Reply::error(
            400,
            format!("phoenix-lab simulates overlay networks only, not driver {driver:?}"),
        ));
    }
    if membership(w, idx).is_none() {
        return Err(Reply::error(503, NOT_MANAGER));
    }
    if manager(w, idx).is_err() {
        return Err(Reply::error(
            403,
            "Cannot create a multi-host network from a worker node. Please create the network from a manager node.",
        ));
    }
    if networks(w, idx).iter().any(|n| n["Name"] == name.as_str()) {
        return Err(Reply::error(
            409,
            format!("network with name {name} already exists"),
        ));
    }
    let c = manager_mut(w, idx)?;
    let subnet = format!("10.0.{}.0/24", c.networks.len() + 1);
    let labels = get(body, "Labels")
        .cloned()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    let mut n = network_obj(
        c,
        &name,
        &subnet,
        bool_of(body, "Ingress"),
        bool_of(body, "Attachable"),
        labels,
    );
    n.spec["Internal"] = json!(bool_of(body, "Internal"));
    if let Some(o) = get(body, "Options").filter(|o| o.is_object()) {
        n.spec["Options"] = o.clone();
    }
    let id = n.id.clone();
    c.networks.insert(id.clone(), n);
    Ok(Reply::json(201, json!({"Id": id, "Warning": ""})))
}

fn network_delete(w: &mut World, idx: usize, id: &str) -> Res {
    if ["host", "none"].contains(&id) {
        return Err(Reply::error(
            403,
            format!("{id} is a pre-defined network and cannot be removed"),
        ));
    }
    let c = manager_mut(w, idx)?;
    let n = find(&c.networks, id, |n| n.name() == id)
        .ok_or_else(|| Reply::error(404, format!("network {id} not found")))?;
    let nid = n.id.clone();
    let nname = n.name().to_string();
    if let Some(s) = c.services.values().find(|s| {
        s.spec["TaskTemplate"]["Networks"]
            .as_array()
            .is_some_and(|a| a.iter().any(|t| t["Target"] == nid.as_str()))
    }) {
        return Err(Reply::error(
            409,
            format!(
                "rpc error: code = FailedPrecondition desc = network {nname} is in use by service {}",
                s.id
            ),
        ));
    }
    c.networks.remove(&nid);
    c.bump();
    Ok(Reply::empty(204))
}

/// Swarm's rule for object names (secrets, configs).
fn valid_object_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn secret_json(s: &Obj) -> Value {
    // The data is never read back, as on the Engine.
    let mut v = s.to_json();
    if let Some(spec) = v["Spec"].as_object_mut() {
        spec.remove("Data");
    }
    v
}

fn decode_base64(s: &str) -> Option<Vec<u8>> {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = T.iter().position(|&t| t == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

fn secret_create(w: &mut World, idx: usize, body: &Value) -> Res {
    let c = manager_mut(w, idx)?;
    let name = str_of(body, "Name");
    if !valid_object_name(&name) {
        return Err(Reply::error(
            400,
            format!(
                "rpc error: code = InvalidArgument desc = invalid name, only 64 [a-zA-Z0-9-_.] characters allowed, and the start and end character must be [a-zA-Z0-9]: {name:?}"
            ),
        ));
    }
    let data = decode_base64(&str_of(body, "Data"))
        .ok_or_else(|| Reply::error(400, "invalid Data: illegal base64 data"))?;
    if data.is_empty() || data.len() > 500 * 1024 {
        return Err(Reply::error(
            400,
            "rpc error: code = InvalidArgument desc = secret data must be larger than 0 and less than 500KB",
        ));
    }
    if c.secrets.values().any(|s| s.name() == name) {
        return Err(Reply::error(
            409,
            format!("rpc error: code = AlreadyExists desc = secret {name} already exists"),
        ));
    }
    let labels = get(body, "Labels")
        .cloned()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    // The data is kept (a real Engine hands it to tasks) but never written back.
    let s = c.new_obj(
        json!({"Name": name, "Labels": labels, "Data": str_of(body, "Data")}),
        Value::Null,
    );
    let id = s.id.clone();
    c.secrets.insert(id.clone(), s);
    Ok(Reply::json(201, json!({"ID": id})))
}

fn secret_update(
    w: &mut World,
    idx: usize,
    id: &str,
    q: &BTreeMap<String, String>,
    body: &Value,
) -> Res {
    let v = version_param(q)?;
    let c = manager_mut(w, idx)?;
    let sid = find(&c.secrets, id, |s| s.name() == id)
        .map(|s| s.id.clone())
        .ok_or_else(|| Reply::error(404, format!("secret {id} not found")))?;
    let index = c.index + 1;
    let s = c
        .secrets
        .get_mut(&sid)
        .ok_or_else(|| Reply::error(404, format!("secret {id} not found")))?;
    if s.version != v {
        return Err(Reply::error(500, OUT_OF_SEQUENCE));
    }
    let spec = gojson::canonical(body);
    let data = spec["Data"].as_str().unwrap_or_default();
    if spec["Name"].as_str().unwrap_or_default() != s.name()
        || (!data.is_empty() && data != s.spec["Data"].as_str().unwrap_or_default())
    {
        return Err(Reply::error(
            400,
            "rpc error: code = InvalidArgument desc = only updates to Labels are allowed",
        ));
    }
    s.spec["Labels"] = spec
        .get("Labels")
        .cloned()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    s.version = index;
    s.updated = now_rfc3339();
    c.index = index;
    Ok(Reply::empty(200))
}

fn secret_delete(w: &mut World, idx: usize, id: &str) -> Res {
    let c = manager_mut(w, idx)?;
    let s = find(&c.secrets, id, |s| s.name() == id)
        .ok_or_else(|| Reply::error(404, format!("secret {id} not found")))?;
    let sid = s.id.clone();
    let sname = s.name().to_string();
    let users: Vec<String> = c
        .services
        .values()
        .filter(|svc| {
            svc.spec["TaskTemplate"]["ContainerSpec"]["Secrets"]
                .as_array()
                .is_some_and(|a| a.iter().any(|r| r["SecretID"] == sid.as_str()))
        })
        .map(|svc| svc.name().to_string())
        .collect();
    if !users.is_empty() {
        return Err(Reply::error(
            400,
            format!(
                "rpc error: code = InvalidArgument desc = secret '{sname}' is in use by the following service: {}",
                users.join(", ")
            ),
        ));
    }
    c.secrets.remove(&sid);
    c.bump();
    Ok(Reply::empty(204))
}

/// Check and complete a service spec the way the Engine does.
fn service_spec(c: &Cluster, body: &Value) -> Result<Value, Reply> {
    let mut spec = gojson::canonical(body);
    let name = spec["Name"].as_str().unwrap_or_default().to_string();
    if name.is_empty() {
        return Err(Reply::error(
            400,
            "rpc error: code = InvalidArgument desc = name must be valid as a DNS name component",
        ));
    }
    if spec["TaskTemplate"]["ContainerSpec"]["Image"]
        .as_str()
        .unwrap_or_default()
        .is_empty()
    {
        return Err(Reply::error(
            400,
            "rpc error: code = InvalidArgument desc = ContainerSpec: image reference must be provided",
        ));
    }
    // Networks by name or id are stored by id, as the Engine resolves them.
    if let Some(nets) = spec["TaskTemplate"]["Networks"].as_array_mut() {
        for n in nets {
            let t = n["Target"].as_str().unwrap_or_default().to_string();
            let found = find(&c.networks, &t, |x| x.name() == t)
                .ok_or_else(|| Reply::error(404, format!("network {t} not found")))?;
            n["Target"] = json!(found.id);
        }
    }
    if let Some(secrets) = spec["TaskTemplate"]["ContainerSpec"]["Secrets"].as_array() {
        for s in secrets {
            let sid = s["SecretID"].as_str().unwrap_or_default();
            if !c.secrets.contains_key(sid) {
                return Err(Reply::error(
                    400,
                    format!(
                        "rpc error: code = InvalidArgument desc = secret reference {sid:?} ({}) not found",
                        s["SecretName"].as_str().unwrap_or_default()
                    ),
                ));
            }
        }
    }
    if spec.get("Mode").is_none_or(Value::is_null) {
        spec["Mode"] = json!({"Replicated": {"Replicas": 1}});
    }
    if spec.get("Labels").is_none_or(Value::is_null) {
        spec["Labels"] = json!({});
    }
    Ok(spec)
}

fn service_create(c: &mut Cluster, body: &Value) -> Res {
    let spec = service_spec(c, body)?;
    let name = spec["Name"].as_str().unwrap_or_default().to_string();
    if c.services.values().any(|s| s.name() == name) {
        return Err(Reply::error(
            409,
            format!(
                "rpc error: code = AlreadyExists desc = name conflicts with an existing object: service {name} already exists"
            ),
        ));
    }
    let s = c.new_obj(spec, Value::Null);
    let id = s.id.clone();
    c.services.insert(id.clone(), s);
    Ok(Reply::json(201, json!({"ID": id})))
}

fn service_update(c: &mut Cluster, id: &str, q: &BTreeMap<String, String>, body: &Value) -> Res {
    let v = version_param(q)?;
    let spec = service_spec(c, body)?;
    let sid = find(&c.services, id, |s| s.name() == id)
        .map(|s| s.id.clone())
        .ok_or_else(|| Reply::error(404, format!("service {id} not found")))?;
    let index = c.index + 1;
    let s = c
        .services
        .get_mut(&sid)
        .ok_or_else(|| Reply::error(404, format!("service {id} not found")))?;
    if s.version != v {
        return Err(Reply::error(500, OUT_OF_SEQUENCE));
    }
    if spec["Name"] != s.spec["Name"] {
        return Err(Reply::error(
            400,
            "rpc error: code = Unimplemented desc = renaming services is not supported",
        ));
    }
    s.extra = json!({"PreviousSpec": s.spec});
    s.spec = spec;
    s.version = index;
    s.updated = now_rfc3339();
    c.index = index;
    Ok(Reply::json(200, json!({"Warnings": null})))
}

fn replicas(s: &Obj) -> u64 {
    s.spec["Mode"]["Replicated"]["Replicas"].as_u64().unwrap_or(
        if s.spec["Mode"].get("Global").is_some() {
            1
        } else {
            0
        },
    )
}

fn service_json(s: &Obj, with_status: bool) -> Value {
    let mut v = s.to_json();
    v["Endpoint"] = json!({"Spec": {"Mode": "vip"}});
    if with_status {
        let n = replicas(s);
        v["ServiceStatus"] = json!({"RunningTasks": n, "DesiredTasks": n, "CompletedTasks": 0});
    }
    v
}

fn tasks(c: &Cluster) -> Vec<Value> {
    let nodes: Vec<&Obj> = c.nodes.values().collect();
    let mut out = Vec::new();
    for s in c.services.values() {
        for slot in 1..=replicas(s) {
            let node = nodes
                .get((slot as usize - 1) % nodes.len().max(1))
                .map_or(String::new(), |n| n.id.clone());
            out.push(json!({
                "ID": format!("{}{slot}", &s.id[..20]),
                "Version": {"Index": s.version},
                "CreatedAt": s.updated,
                "UpdatedAt": s.updated,
                "Spec": s.spec["TaskTemplate"],
                "ServiceID": s.id,
                "Slot": slot,
                "NodeID": node,
                "Status": {"Timestamp": s.updated, "State": "running", "Message": "started"},
                "DesiredState": "running",
            }));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_prefix_is_optional() {
        assert_eq!(strip_version("/v1.47/info"), "/info");
        assert_eq!(strip_version("/info"), "/info");
        assert_eq!(strip_version("/volumes"), "/volumes");
        assert!(check_version("/v1.99/info").is_err());
        assert!(check_version("/v1.41/info").is_ok());
    }

    #[test]
    fn base64_decodes() {
        assert_eq!(decode_base64("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(decode_base64("").unwrap(), b"");
        assert!(decode_base64("!!").is_none());
    }

    #[test]
    fn names() {
        assert!(valid_object_name("db_password.v1-abc"));
        assert!(!valid_object_name("-x"));
        assert!(!valid_object_name(&"a".repeat(65)));
    }
}
