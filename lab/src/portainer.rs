//! The Portainer CE API subset (`../shared/specs/portainer`): status, admin
//! init and check, `/api/auth`, API keys, agent environments, the Docker proxy
//! and Swarm stacks.
//!
//! Authentication as Portainer's bouncer does it: the public routes need
//! nothing; every other needs `Authorization: Bearer <jwt>` or `X-API-Key`,
//! not both (a request carrying both is refused with 401, so a client never
//! learns to rely on which one wins); creating an API key takes a JWT only.
//! Errors are `{"message", "details"}` with the status the reference lists.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::compose;
use crate::docker::{self, Reply};
use crate::gojson::{get, str_of};
use crate::world::{ApiKey, Stack, User, World, now_unix};

pub const VERSION: &str = "2.23.0";
/// Portainer refuses shorter admin passwords (its default policy).
pub const MIN_PASSWORD: usize = 12;

/// A Portainer error body.
pub fn error(status: u16, message: &str, details: &str) -> Reply {
    Reply::json(status, json!({"message": message, "details": details}))
}

/// A request as the handler needs it (the form already parsed when there was one).
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: BTreeMap<String, String>,
    pub authorization: Option<String>,
    pub api_key: Option<String>,
    pub body: &'a [u8],
    /// Form fields (multipart or url-encoded), for `POST /api/endpoints`.
    pub form: Option<BTreeMap<String, String>>,
}

type Res = Result<Reply, Reply>;

/// Work on a real engine's node ([`crate::real`]): done by the caller
/// outside the world's lock, then recorded with [`commit_deploy`] or
/// [`commit_remove`].
#[derive(Debug, Clone)]
pub enum RealOp {
    /// `/api/endpoints/{id}/docker/*`, forwarded to the engine.
    Proxy {
        engine: String,
        method: String,
        path: String,
        query: BTreeMap<String, String>,
    },
    /// A stack created (`stack` is `None`; the swarm id is checked on the
    /// engine first) or updated.
    Deploy {
        engine: String,
        stack: Option<u64>,
        endpoint: u64,
        name: String,
        swarm_id: String,
        file: String,
        env_json: Value,
        env: BTreeMap<String, String>,
        prune: bool,
        user: u64,
    },
    Remove {
        engine: String,
        stack: u64,
        name: String,
    },
}

/// What a request comes to: an answer, or work on a real engine first.
pub enum Outcome {
    Done(Reply),
    Real(RealOp),
}

pub fn handle(w: &mut World, req: &Request) -> Outcome {
    match real_op(w, req) {
        Some(Ok(op)) => Outcome::Real(op),
        Some(Err(r)) => Outcome::Done(r),
        None => Outcome::Done(route(w, req).unwrap_or_else(|e| e)),
    }
}

/// The real engine behind an environment, if it is one.
fn real_engine(w: &World, endpoint: u64) -> Option<(usize, String)> {
    let url = w.portainer.endpoints.get(&endpoint)?["URL"].as_str()?;
    let idx = engine_for_url(w, url)?;
    Some((idx, w.engines[idx].real.clone()?))
}

/// A request for a real engine's environment: the proxy and the stack
/// writes. `None`: not one, the simulation answers it.
fn real_op(w: &World, req: &Request) -> Option<Result<RealOp, Reply>> {
    let segs: Vec<&str> = req
        .path
        .trim_end_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let rest = segs.strip_prefix(&["api"])?;
    let endpoint: u64 = match (req.method, rest) {
        (_, ["endpoints", id, "docker", ..]) => id.parse().ok()?,
        ("POST", ["stacks", "create", "swarm", "string"])
        | ("PUT", ["stacks", _])
        | ("DELETE", ["stacks", _]) => req.query.get("endpointId")?.parse().ok()?,
        _ => return None,
    };
    let (idx, engine) = real_engine(w, endpoint)?;
    Some(real_op_on(w, req, rest, endpoint, idx, engine))
}

fn real_op_on(
    w: &World,
    req: &Request,
    rest: &[&str],
    endpoint: u64,
    idx: usize,
    engine: String,
) -> Result<RealOp, Reply> {
    let (user, _) = authenticate(w, req)?;
    if w.is_down(&w.engines[idx].hostname) {
        return Err(error(
            502,
            "Unable to proxy the request via the Docker socket",
            &format!("{engine}: the node is down (phoenix-lab fault)"),
        ));
    }
    match (req.method, rest) {
        (_, ["endpoints", _, "docker", tail @ ..]) => Ok(RealOp::Proxy {
            engine,
            method: req.method.to_string(),
            path: format!("/{}", tail.join("/")),
            query: req.query.clone(),
        }),
        ("POST", ["stacks", "create", "swarm", "string"]) => {
            let CreatePayload {
                name,
                swarm_id,
                file,
                env_json,
                env,
            } = create_payload(w, req)?;
            Ok(RealOp::Deploy {
                engine,
                stack: None,
                endpoint,
                name,
                swarm_id,
                file,
                env_json,
                env,
                prune: false,
                user,
            })
        }
        ("PUT", ["stacks", id]) => {
            let s = stack(w, id)?;
            let body = json_body(req)?;
            let file = match str_of(&body, "StackFileContent") {
                c if c.is_empty() => s.file.clone(),
                c => c,
            };
            let (env_json, env) = env_pairs(&body)?;
            Ok(RealOp::Deploy {
                engine,
                stack: s.meta["Id"].as_u64(),
                endpoint,
                name: s.meta["Name"].as_str().unwrap_or_default().to_string(),
                swarm_id: str_of(&s.meta, "SwarmId"),
                file,
                env_json,
                env,
                prune: crate::gojson::bool_of(&body, "Prune"),
                user,
            })
        }
        ("DELETE", ["stacks", id]) => {
            let s = stack(w, id)?;
            Ok(RealOp::Remove {
                engine,
                stack: s.meta["Id"].as_u64().unwrap_or_default(),
                name: s.meta["Name"].as_str().unwrap_or_default().to_string(),
            })
        }
        _ => Err(error(404, "Not found", "404 page not found")),
    }
}

/// Record a stack deployed on a real engine (created or updated).
pub fn commit_deploy(w: &mut World, op: &RealOp) -> Reply {
    let RealOp::Deploy {
        stack: id,
        endpoint,
        name,
        swarm_id,
        file,
        env_json,
        user,
        ..
    } = op
    else {
        return error(500, "Unable to deploy stack", "not a deployment");
    };
    let r = match id {
        None => record_new_stack(w, *endpoint, name, swarm_id, file, env_json.clone(), *user),
        Some(id) => record_update(w, *id, file, env_json.clone(), *user),
    };
    r.unwrap_or_else(|e| e)
}

/// Forget a stack removed from a real engine.
pub fn commit_remove(w: &mut World, stack: u64) -> Reply {
    w.portainer.stacks.remove(&stack);
    Reply::empty(204)
}

fn json_body(req: &Request) -> Result<Value, Reply> {
    serde_json::from_slice(req.body)
        .map_err(|e| error(400, "Invalid request payload", &e.to_string()))
}

fn route(w: &mut World, req: &Request) -> Res {
    let segs: Vec<&str> = req
        .path
        .trim_end_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let Some(rest) = segs.strip_prefix(&["api"]) else {
        return Err(error(404, "Not found", "404 page not found"));
    };
    // Public routes.
    match (req.method, rest) {
        ("GET", ["system", "status"] | ["status"]) => {
            // The Go field is untagged: it goes out as `InstanceID` (swag documents it camel-cased).
            return Ok(Reply::json(
                200,
                json!({"Version": VERSION, "InstanceID": w.portainer.instance_id}),
            ));
        }
        ("GET", ["users", "admin", "check"]) => {
            return if w.portainer.users.iter().any(|u| u.role == 1) {
                Ok(Reply::empty(204))
            } else {
                Err(error(
                    404,
                    "User not found",
                    "Object not found inside the database",
                ))
            };
        }
        ("POST", ["users", "admin", "init"]) => return admin_init(w, req),
        ("POST", ["auth"]) => return auth(w, req),
        _ => {}
    }
    let (user, by_key) = authenticate(w, req)?;
    match (req.method, rest) {
        ("POST", ["users", id, "tokens"]) => create_token(w, req, user, by_key, id),
        ("GET", ["users", id, "tokens"]) => {
            let id = user_id(id)?;
            if id != user {
                return Err(error(
                    403,
                    "Permission denied",
                    "Permission denied to get user access tokens",
                ));
            }
            let list: Vec<Value> = w
                .portainer
                .api_keys
                .iter()
                .filter(|k| k.user_id == id)
                .map(key_json)
                .collect();
            Ok(Reply::json(200, Value::Array(list)))
        }
        ("DELETE", ["users", id, "tokens", key]) => {
            let id = user_id(id)?;
            let key: u64 = key
                .parse()
                .map_err(|_| error(400, "Invalid API Key identifier route variable", "bad id"))?;
            let before = w.portainer.api_keys.len();
            w.portainer
                .api_keys
                .retain(|k| !(k.user_id == id && k.id == key));
            if w.portainer.api_keys.len() == before {
                return Err(error(
                    404,
                    "API Key not found",
                    "Object not found inside the database",
                ));
            }
            Ok(Reply::empty(204))
        }
        ("GET", ["endpoints"]) => {
            let name = req.query.get("name");
            let list: Vec<Value> = w
                .portainer
                .endpoints
                .values()
                .filter(|e| name.is_none_or(|n| e["Name"] == n.as_str()))
                .cloned()
                .collect();
            Ok(Reply::json(200, Value::Array(list)))
        }
        ("POST", ["endpoints"]) => endpoint_create(w, req),
        ("GET", ["endpoints", id]) => {
            let id = endpoint_id(id)?;
            w.portainer
                .endpoints
                .get(&id)
                .cloned()
                .map(|e| Reply::json(200, e))
                .ok_or_else(endpoint_not_found)
        }
        ("PUT", ["endpoints", id]) => endpoint_update(w, req, id),
        ("DELETE", ["endpoints", id]) => {
            let id = endpoint_id(id)?;
            w.portainer
                .endpoints
                .remove(&id)
                .ok_or_else(endpoint_not_found)?;
            w.portainer.stacks.retain(|_, s| s.meta["EndpointId"] != id);
            Ok(Reply::empty(204))
        }
        (_, ["endpoints", id, "docker", tail @ ..]) => {
            let id = endpoint_id(id)?;
            let idx = engine_of(w, id)?;
            let path = format!("/{}", tail.join("/"));
            Ok(docker::handle(
                w, idx, req.method, &path, &req.query, req.body,
            ))
        }
        ("GET", ["stacks"]) => {
            let f: BTreeMap<String, Value> = match req.query.get("filters") {
                Some(raw) => serde_json::from_str(raw)
                    .map_err(|e| error(400, "Invalid query parameter: filters", &e.to_string()))?,
                None => BTreeMap::new(),
            };
            let list: Vec<Value> = w
                .portainer
                .stacks
                .values()
                .map(|s| s.meta.clone())
                .filter(|s| {
                    f.iter()
                        .all(|(k, v)| match k.to_ascii_lowercase().as_str() {
                            "endpointid" => {
                                s["EndpointId"] == *v
                                    || v.as_str().and_then(|x| x.parse::<u64>().ok())
                                        == s["EndpointId"].as_u64()
                            }
                            "swarmid" => s["SwarmId"] == *v,
                            _ => true,
                        })
                })
                .collect();
            Ok(Reply::json(200, Value::Array(list)))
        }
        ("POST", ["stacks", "create", "swarm", "string"]) => stack_create(w, req, user),
        ("GET", ["stacks", id]) => {
            let s = stack(w, id)?;
            Ok(Reply::json(200, s.meta.clone()))
        }
        ("GET", ["stacks", id, "file"]) => {
            let s = stack(w, id)?;
            Ok(Reply::json(200, json!({"StackFileContent": s.file})))
        }
        ("PUT", ["stacks", id]) => stack_update(w, req, user, id),
        ("DELETE", ["stacks", id]) => stack_delete(w, req, id),
        _ => Err(error(404, "Not found", "404 page not found")),
    }
}

/// The user a request acts as, and whether it came with an API key.
fn authenticate(w: &World, req: &Request) -> Result<(u64, bool), Reply> {
    let bearer = req
        .authorization
        .as_deref()
        .and_then(|a| a.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let key = req.api_key.as_deref().filter(|s| !s.is_empty());
    match (bearer, key) {
        (Some(_), Some(_)) => Err(error(
            401,
            "Unauthorized",
            "Both a JWT and an API key were provided: use one",
        )),
        (Some(jwt), None) => w
            .portainer
            .jwts
            .get(jwt)
            .map(|u| (*u, false))
            .ok_or_else(|| error(401, "Invalid JWT token", "Unauthorized")),
        (None, Some(k)) => w
            .portainer
            .api_keys
            .iter()
            .find(|x| x.raw == k)
            .map(|x| (x.user_id, true))
            .ok_or_else(|| error(401, "Invalid API key", "Unauthorized")),
        (None, None) => Err(error(
            401,
            "A valid authorisation token is missing",
            "Unauthorized",
        )),
    }
}

fn user_json(u: &User) -> Value {
    json!({"Id": u.id, "Username": u.username, "Role": u.role, "TokenIssueAt": 0,
           "ThemeSettings": {"color": ""}, "UseCache": true})
}

fn admin_init(w: &mut World, req: &Request) -> Res {
    let body = json_body(req)?;
    let username = str_of(&body, "Username");
    let password = str_of(&body, "Password");
    if username.trim().is_empty() {
        return Err(error(400, "Invalid request payload", "Invalid username"));
    }
    if password.is_empty() {
        return Err(error(400, "Invalid request payload", "Invalid password"));
    }
    if w.portainer.users.iter().any(|u| u.role == 1) {
        return Err(error(
            409,
            "Unable to create administrator user",
            "An administrator user already exists",
        ));
    }
    if password.chars().count() < MIN_PASSWORD {
        return Err(error(
            400,
            "Password does not meet the requirements",
            &format!("the password must be at least {MIN_PASSWORD} characters long"),
        ));
    }
    let id = w.portainer.next_id();
    let u = User {
        id,
        username,
        password,
        role: 1,
    };
    let out = user_json(&u);
    w.portainer.users.push(u);
    Ok(Reply::json(200, out))
}

fn auth(w: &mut World, req: &Request) -> Res {
    let body = json_body(req)?;
    let username = str_of(&body, "Username");
    let password = str_of(&body, "Password");
    if username.is_empty() || password.is_empty() {
        return Err(error(
            400,
            "Invalid request payload",
            "Invalid username or password",
        ));
    }
    let user = w
        .portainer
        .users
        .iter()
        .find(|u| u.username == username && u.password == password)
        .ok_or_else(|| error(422, "Invalid credentials", "Unauthorized"))?;
    let jwt = format!(
        "eyJhbGciOiJIUzI1NiJ9.{}.{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let id = user.id;
    w.portainer.jwts.insert(jwt.clone(), id);
    Ok(Reply::json(200, json!({"jwt": jwt})))
}

fn user_id(s: &str) -> Result<u64, Reply> {
    s.parse()
        .map_err(|_| error(400, "Invalid user identifier route variable", "bad id"))
}

fn key_json(k: &ApiKey) -> Value {
    json!({"id": k.id, "userId": k.user_id, "description": k.description,
           "prefix": &k.raw[..7.min(k.raw.len())], "dateCreated": k.created, "lastUsed": 0,
           "digest": ""})
}

fn create_token(w: &mut World, req: &Request, user: u64, by_key: bool, id: &str) -> Res {
    if by_key {
        return Err(error(
            401,
            "Auth not supported",
            "an API key cannot create an API key: log in",
        ));
    }
    let id = user_id(id)?;
    if id != user {
        return Err(error(
            403,
            "Permission denied",
            "Permission denied to create user access token",
        ));
    }
    let body = json_body(req)?;
    let description = str_of(&body, "description");
    if description.trim().is_empty() {
        return Err(error(
            400,
            "Invalid request payload",
            "invalid description: cannot be empty",
        ));
    }
    let password = str_of(&body, "password");
    let u = w
        .portainer
        .users
        .iter()
        .find(|u| u.id == id)
        .ok_or_else(|| {
            error(
                404,
                "User not found",
                "Object not found inside the database",
            )
        })?;
    if u.password != password {
        return Err(error(
            403,
            "Invalid password",
            "Current password doesn't match",
        ));
    }
    let raw = format!(
        "ptr_{}",
        uuid::Uuid::new_v4().simple().to_string() + &uuid::Uuid::new_v4().simple().to_string()
    );
    let key = ApiKey {
        id: w.portainer.next_id(),
        user_id: id,
        description,
        raw: raw.clone(),
        created: now_unix(),
    };
    let out = json!({"rawAPIKey": raw, "apiKey": key_json(&key)});
    w.portainer.api_keys.push(key);
    Ok(Reply::json(200, out))
}

fn endpoint_not_found() -> Reply {
    error(
        404,
        "Unable to find an environment with the specified identifier inside the database",
        "Object not found inside the database",
    )
}

fn endpoint_id(s: &str) -> Result<u64, Reply> {
    s.parse().map_err(|_| {
        error(
            400,
            "Invalid environment identifier route variable",
            "bad id",
        )
    })
}

fn truthy(s: Option<&String>) -> bool {
    s.is_some_and(|v| v == "true" || v == "1")
}

/// The simulated engine an agent URL (`tcp://host:9001`) reaches.
fn engine_for_url(w: &World, url: &str) -> Option<usize> {
    let hostport = url
        .split_once("://")
        .map_or(url, |(_, r)| r)
        .trim_end_matches('/');
    let host = hostport.rsplit_once(':').map_or(hostport, |(h, _)| h);
    w.engines.iter().position(|e| {
        e.hostname.eq_ignore_ascii_case(host)
            || e.addr == host
            || e.aliases.iter().any(|a| a.eq_ignore_ascii_case(host))
            || e.url.ends_with(hostport)
    })
}

/// The engine an endpoint's requests go to: the agent's node, or, as the
/// agent forwards cluster calls, a manager of its swarm.
fn engine_of(w: &World, endpoint: u64) -> Result<usize, Reply> {
    let e = w
        .portainer
        .endpoints
        .get(&endpoint)
        .ok_or_else(endpoint_not_found)?;
    let url = e["URL"].as_str().unwrap_or_default();
    let idx = engine_for_url(w, url).ok_or_else(|| {
        error(
            502,
            "Unable to proxy the request via the Docker socket",
            &format!("no agent at {url}"),
        )
    })?;
    if w.is_down(&w.engines[idx].hostname) {
        return Err(error(
            502,
            "Unable to proxy the request via the Docker socket",
            &format!("dial tcp {url}: connect: connection refused"),
        ));
    }
    let Some(m) = &w.engines[idx].swarm else {
        return Ok(idx);
    };
    let managers: Vec<String> = w
        .clusters
        .get(&m.cluster)
        .map(|c| {
            c.nodes
                .values()
                .filter(|n| n.spec["Role"] == "manager")
                .map(|n| n.id.clone())
                .collect()
        })
        .unwrap_or_default();
    if managers.contains(&m.node_id) {
        return Ok(idx);
    }
    Ok(w.engines
        .iter()
        .position(|e| {
            e.swarm
                .as_ref()
                .is_some_and(|x| managers.contains(&x.node_id))
                && !w.is_down(&e.hostname)
        })
        .unwrap_or(idx))
}

fn endpoint_create(w: &mut World, req: &Request) -> Res {
    let Some(form) = &req.form else {
        // Go's FormValue finds nothing in a JSON body: the seed's "Invalid environment name".
        return Err(error(
            400,
            "Invalid request payload",
            "Invalid environment name",
        ));
    };
    let name = form.get("Name").cloned().unwrap_or_default();
    if name.trim().is_empty() {
        return Err(error(
            400,
            "Invalid request payload",
            "Invalid environment name",
        ));
    }
    let ty: u8 = form
        .get("EndpointCreationType")
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| error(400, "Invalid request payload", "Invalid environment type value. Value must be one of: 1 (Docker environment), 2 (Agent environment), 3 (Azure environment), 4 (Edge Agent environment) or 5 (Local Kubernetes environment)"))?;
    if ty != 2 {
        return Err(error(
            400,
            "Invalid request payload",
            "phoenix-lab simulates agent environments (EndpointCreationType=2) only",
        ));
    }
    let url = form.get("URL").cloned().unwrap_or_default();
    if url.is_empty() {
        return Err(error(
            400,
            "Invalid request payload",
            "Invalid environment URL",
        ));
    }
    let tls = truthy(form.get("TLS"));
    let skip = truthy(form.get("TLSSkipVerify"));
    let skip_client = truthy(form.get("TLSSkipClientVerify"));
    if w.portainer
        .endpoints
        .values()
        .any(|e| e["Name"] == name.as_str())
    {
        return Err(error(409, "Name is not unique", "Name is not unique"));
    }
    // The agent speaks TLS with its own certificate: without TLS Portainer cannot reach it.
    let reachable = engine_for_url(w, &url).filter(|i| !w.is_down(&w.engines[*i].hostname));
    if !tls || reachable.is_none() {
        return Err(error(
            500,
            "Unable to create environment",
            &format!(
                "unable to initiate communications with environment: Get \"https://{}/ping\": {}",
                url.trim_start_matches("tcp://"),
                if tls {
                    "dial tcp: connect: connection refused"
                } else {
                    "the agent requires TLS (set TLS=true)"
                }
            ),
        ));
    }
    let id = w.portainer.next_id();
    let group: u64 = form
        .get("GroupID")
        .and_then(|g| g.parse().ok())
        .unwrap_or(1);
    let public = form.get("PublicURL").cloned().unwrap_or_default();
    let e = json!({
        "Id": id, "Name": name, "Type": 2, "URL": url, "GroupId": group, "PublicURL": public,
        "TLSConfig": {"TLS": tls, "TLSSkipVerify": skip, "TLSSkipClientVerify": skip_client},
        "Status": 1, "Snapshots": [], "TagIds": [], "UserAccessPolicies": {}, "TeamAccessPolicies": {},
        "EdgeID": "", "EdgeKey": "", "EdgeCheckinInterval": 0, "Heartbeat": false,
    });
    w.portainer.endpoints.insert(id, e.clone());
    Ok(Reply::json(200, e))
}

/// A field of an update payload: absent (or JSON null, as Go leaves a nil
/// pointer) is `None`; present with the wrong type is Go's decode error.
fn field<'a, T>(
    body: &'a Value,
    key: &str,
    as_t: impl Fn(&'a Value) -> Option<T>,
) -> Result<Option<T>, Reply> {
    match get(body, key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => as_t(v).map(Some).ok_or_else(|| {
            error(
                400,
                "Invalid request payload",
                &format!(
                    "json: cannot unmarshal {v} into Go struct field endpointUpdatePayload.{key}"
                ),
            )
        }),
    }
}

/// `PUT /api/endpoints/{id}` as Portainer's `endpointUpdate`: every field is
/// optional; the skip flags count only beside `TLS: true`, and `TLS: false`
/// clears them. Portainer re-creates its proxy to the agent and does not
/// call it, so a new URL is stored whether the agent answers there or not.
fn endpoint_update(w: &mut World, req: &Request, id: &str) -> Res {
    let id = endpoint_id(id)?;
    let body = json_body(req)?;
    if !body.is_object() {
        return Err(error(
            400,
            "Invalid request payload",
            "json: cannot unmarshal into Go value of type endpointUpdatePayload",
        ));
    }
    let name = field(&body, "Name", Value::as_str)?;
    let url = field(&body, "URL", Value::as_str)?;
    let public = field(&body, "PublicURL", Value::as_str)?;
    let group = field(&body, "GroupID", Value::as_u64)?;
    let tls = field(&body, "TLS", Value::as_bool)?;
    let skip = field(&body, "TLSSkipVerify", Value::as_bool)?;
    let skip_client = field(&body, "TLSSkipClientVerify", Value::as_bool)?;
    if !w.portainer.endpoints.contains_key(&id) {
        return Err(endpoint_not_found());
    }
    if let Some(n) = name
        && w.portainer
            .endpoints
            .iter()
            .any(|(other, e)| *other != id && e["Name"] == n)
    {
        return Err(error(409, "Name is not unique", "Name is not unique"));
    }
    let e = w
        .portainer
        .endpoints
        .get_mut(&id)
        .ok_or_else(endpoint_not_found)?;
    if let Some(n) = name {
        e["Name"] = json!(n);
    }
    if let Some(u) = url {
        e["URL"] = json!(u);
    }
    if let Some(p) = public {
        e["PublicURL"] = json!(p);
    }
    if let Some(g) = group {
        e["GroupId"] = json!(g);
    }
    match tls {
        Some(true) => {
            e["TLSConfig"]["TLS"] = json!(true);
            if let Some(s) = skip {
                e["TLSConfig"]["TLSSkipVerify"] = json!(s);
            }
            if let Some(s) = skip_client {
                e["TLSConfig"]["TLSSkipClientVerify"] = json!(s);
            }
        }
        Some(false) => {
            e["TLSConfig"] =
                json!({"TLS": false, "TLSSkipVerify": false, "TLSSkipClientVerify": false});
        }
        None => {}
    }
    Ok(Reply::json(200, e.clone()))
}

fn stack(w: &World, id: &str) -> Result<Stack, Reply> {
    let id: u64 = id
        .parse()
        .map_err(|_| error(400, "Invalid stack identifier route variable", "bad id"))?;
    w.portainer.stacks.get(&id).cloned().ok_or_else(|| {
        error(
            404,
            "Unable to find a stack with the specified identifier inside the database",
            "Object not found inside the database",
        )
    })
}

fn env_pairs(body: &Value) -> Result<(Value, BTreeMap<String, String>), Reply> {
    let list = get(body, "Env").cloned().unwrap_or(Value::Null);
    let mut map = BTreeMap::new();
    let mut pairs = Vec::new();
    for p in list.as_array().into_iter().flatten() {
        let name = str_of(p, "name");
        if name.is_empty() {
            return Err(error(
                400,
                "Invalid request payload",
                "Invalid environment variable name",
            ));
        }
        let value = str_of(p, "value");
        map.insert(name.clone(), value.clone());
        pairs.push(json!({"name": name, "value": value}));
    }
    Ok((Value::Array(pairs), map))
}

fn query_endpoint(req: &Request) -> Result<u64, Reply> {
    req.query
        .get("endpointId")
        .and_then(|e| e.parse().ok())
        .ok_or_else(|| {
            error(
                400,
                "Invalid query parameter: endpointId",
                "endpointId is required",
            )
        })
}

/// A `POST /api/stacks/create/swarm/string` body, checked.
struct CreatePayload {
    name: String,
    swarm_id: String,
    file: String,
    /// `Env` as stored, and as a map for the deployment.
    env_json: Value,
    env: BTreeMap<String, String>,
}

/// Read and check a stack creation: name, swarm id, file, env; a name taken is 409.
fn create_payload(w: &World, req: &Request) -> Result<CreatePayload, Reply> {
    let body = json_body(req)?;
    let name = str_of(&body, "Name").to_lowercase();
    let swarm_id = str_of(&body, "SwarmID");
    let content = str_of(&body, "StackFileContent");
    if name.is_empty() {
        return Err(error(400, "Invalid request payload", "Invalid stack name"));
    }
    if swarm_id.is_empty() {
        return Err(error(400, "Invalid request payload", "Invalid Swarm ID"));
    }
    if content.is_empty() {
        return Err(error(
            400,
            "Invalid request payload",
            "Invalid stack file content",
        ));
    }
    let (env_json, env) = env_pairs(&body)?;
    name_is_free(w, &name)?;
    Ok(CreatePayload {
        name,
        swarm_id,
        file: content,
        env_json,
        env,
    })
}

fn name_is_free(w: &World, name: &str) -> Result<(), Reply> {
    if w.portainer.stacks.values().any(|s| s.meta["Name"] == name) {
        return Err(error(
            409,
            &format!("A stack with the normalized name '{name}' already exists"),
            "Stack name must be unique",
        ));
    }
    Ok(())
}

fn username(w: &World, user: u64) -> String {
    w.portainer
        .users
        .iter()
        .find(|u| u.id == user)
        .map_or(String::new(), |u| u.username.clone())
}

/// Store a new stack (deployed already) and answer with it.
fn record_new_stack(
    w: &mut World,
    endpoint: u64,
    name: &str,
    swarm_id: &str,
    content: &str,
    env_json: Value,
    user: u64,
) -> Res {
    // Checked again: a real deployment ran outside the world's lock.
    name_is_free(w, name)?;
    let id = w.portainer.next_id();
    let meta = json!({
        "Id": id, "Name": name, "Type": 1, "EndpointId": endpoint, "SwarmId": swarm_id,
        "EntryPoint": "docker-compose.yml", "Env": env_json,
        "ResourceControl": {"Id": id, "ResourceId": format!("{swarm_id}_{name}"), "Type": 6, "AdministratorsOnly": true, "Public": false},
        "Status": 1, "ProjectPath": format!("/data/compose/{id}"), "CreationDate": now_unix(),
        "CreatedBy": username(w, user), "UpdateDate": 0, "UpdatedBy": "", "AdditionalFiles": null,
        "AutoUpdate": null, "Option": null, "GitConfig": null, "FromAppTemplate": false,
        "Namespace": "", "IsComposeFormat": false,
    });
    w.portainer.stacks.insert(
        id,
        Stack {
            meta: meta.clone(),
            file: content.to_string(),
        },
    );
    Ok(Reply::json(200, meta))
}

/// Store a stack's new file and env (deployed already) and answer with it.
fn record_update(w: &mut World, sid: u64, content: &str, env_json: Value, user: u64) -> Res {
    let by = username(w, user);
    let entry = w
        .portainer
        .stacks
        .get_mut(&sid)
        .ok_or_else(|| error(404, "Unable to find a stack", "gone"))?;
    entry.file = content.to_string();
    entry.meta["Env"] = env_json;
    entry.meta["UpdateDate"] = json!(now_unix());
    entry.meta["UpdatedBy"] = json!(by);
    Ok(Reply::json(200, entry.meta.clone()))
}

fn stack_create(w: &mut World, req: &Request, user: u64) -> Res {
    let endpoint = query_endpoint(req)?;
    let CreatePayload {
        name,
        swarm_id,
        file: content,
        env_json,
        env,
    } = create_payload(w, req)?;
    let idx = engine_of(w, endpoint)?;
    let cid = w.engines[idx]
        .swarm
        .as_ref()
        .map(|m| m.cluster.clone())
        .filter(|c| *c == swarm_id)
        .ok_or_else(|| {
            error(
                400,
                "Invalid request payload",
                &format!("the environment is not part of swarm {swarm_id}"),
            )
        })?;
    let c = w
        .clusters
        .get_mut(&cid)
        .ok_or_else(|| error(500, "Unable to deploy stack", "swarm gone"))?;
    compose::deploy(c, &name, &content, &env, false)
        .map_err(|e| error(500, "Unable to deploy stack", &e))?;
    record_new_stack(w, endpoint, &name, &swarm_id, &content, env_json, user)
}

fn stack_update(w: &mut World, req: &Request, user: u64, id: &str) -> Res {
    let endpoint = query_endpoint(req)?;
    let s = stack(w, id)?;
    let body = json_body(req)?;
    let content = match str_of(&body, "StackFileContent") {
        c if c.is_empty() => s.file.clone(),
        c => c,
    };
    let prune = crate::gojson::bool_of(&body, "Prune");
    let (env_json, env) = env_pairs(&body)?;
    let idx = engine_of(w, endpoint)?;
    let name = s.meta["Name"].as_str().unwrap_or_default().to_string();
    let cid = w.engines[idx]
        .swarm
        .as_ref()
        .map(|m| m.cluster.clone())
        .ok_or_else(|| {
            error(
                500,
                "Unable to deploy stack",
                "the environment is not in a swarm",
            )
        })?;
    let c = w
        .clusters
        .get_mut(&cid)
        .ok_or_else(|| error(500, "Unable to deploy stack", "swarm gone"))?;
    compose::deploy(c, &name, &content, &env, prune)
        .map_err(|e| error(500, "Unable to deploy stack", &e))?;
    let sid = s.meta["Id"].as_u64().unwrap_or_default();
    record_update(w, sid, &content, env_json, user)
}

fn stack_delete(w: &mut World, req: &Request, id: &str) -> Res {
    let endpoint = query_endpoint(req)?;
    let s = stack(w, id)?;
    let idx = engine_of(w, endpoint)?;
    let name = s.meta["Name"].as_str().unwrap_or_default().to_string();
    if let Some(c) = w.engines[idx]
        .swarm
        .as_ref()
        .map(|m| m.cluster.clone())
        .and_then(|cid| w.clusters.get_mut(&cid))
    {
        compose::remove(c, &name);
    }
    let sid = s.meta["Id"].as_u64().unwrap_or_default();
    w.portainer.stacks.remove(&sid);
    Ok(Reply::empty(204))
}
