//! The `portainer.*` provider: the admin and phoenix's API key, agent
//! environments and swarm stacks, through Portainer's REST API; the stacks'
//! services are read back from the swarm itself through the Docker engines
//! ([`super::docker::Engines`]). See [`crate::model::portainer`].
//!
//! Connection: `PHOENIX_PORTAINER_URL` (https, verified against
//! `PHOENIX_PORTAINER_CA_FILE` or the system roots; plain http only on a
//! loopback address, for phoenix-lab). Credentials: the API key phoenix made,
//! kept in `state/portainer-api-key.json` (mode 0600; `PHOENIX_PORTAINER_KEY_FILE`
//! elsewhere); before it exists, a login with the admin password.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bollard::query_parameters::ListServicesOptionsBuilder;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::sync::{Mutex, OnceCell};

use super::docker::{Engines, read};
use super::proxmox::client::{READ_ATTEMPTS, backoff};
use super::{BoxFuture, Lane, OpContext, ProviderError, ResourceProvider};
use crate::manifest::Site;
use crate::manifest::lint::looks_secret;
use crate::model::portainer::{self as model, KIND, NAMESPACE_LABEL, Object};
use crate::model::{Address, DesiredResource, LiveObject};
use crate::plan::Change;

/// The description of the API keys phoenix creates.
const KEY_DESCRIPTION: &str = "phoenix";

#[derive(Debug, Clone, Default)]
pub struct PortainerSettings {
    /// `PHOENIX_PORTAINER_URL`.
    pub url: Option<String>,
    /// `PHOENIX_PORTAINER_CA_FILE`.
    pub ca_file: Option<PathBuf>,
    /// `PHOENIX_PORTAINER_KEY_FILE`, else `<site>/state/portainer-api-key.json`.
    pub key_file: PathBuf,
    pub username: String,
    /// The admin password (read to log in before phoenix has a key).
    pub password: Option<String>,
}

impl std::fmt::Debug for KeyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyFile")
            .field("url", &self.url)
            .field("user_id", &self.user_id)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// What `state/portainer-api-key.json` holds.
#[derive(Clone, Serialize, Deserialize)]
struct KeyFile {
    url: String,
    username: String,
    user_id: u64,
    key_id: u64,
    api_key: String,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|s| !s.trim().is_empty())
}

impl PortainerSettings {
    pub fn resolve(site: Option<&Site>) -> Result<Self, ProviderError> {
        // An unreadable password file is the manifests' diagnostic (model::portainer),
        // reported only for a site that has Portainer; other sites must not fail on it.
        let password = model::admin_password(site).ok().flatten().map(|p| p.0);
        let key_file = env("PHOENIX_PORTAINER_KEY_FILE")
            .map(PathBuf::from)
            .or_else(|| site.map(|s| s.root.join("state/portainer-api-key.json")))
            .unwrap_or_else(|| PathBuf::from("state/portainer-api-key.json"));
        Ok(PortainerSettings {
            url: env("PHOENIX_PORTAINER_URL")
                .map(|u| u.trim_end_matches('/').to_string())
                .or_else(|| site.and_then(model::default_url)),
            ca_file: env("PHOENIX_PORTAINER_CA_FILE").map(PathBuf::from),
            key_file,
            username: site
                .map(model::admin_user)
                .unwrap_or_else(|| model::ADMIN.into()),
            password,
        })
    }
}

/// How a request authenticates.
#[derive(Clone)]
enum Auth {
    Key(String),
    Jwt(String),
}

#[derive(Clone)]
enum Body {
    None,
    Json(Value),
    Form(Vec<(&'static str, String)>),
}

pub struct PortainerProvider {
    settings: PortainerSettings,
    http: OnceCell<(reqwest::Client, String)>,
    engines: Arc<Engines>,
    /// The credentials found at the first authenticated call; reset when the admin changes.
    auth: Mutex<Option<Option<Auth>>>,
    /// Why the manager's engine could not be used, once it failed: the
    /// services are read through Portainer for the rest of the run.
    via_portainer: std::sync::OnceLock<String>,
}

fn is_loopback(url: &str) -> bool {
    let host = url
        .split_once("://")
        .map_or(url, |(_, r)| r)
        .split(['/', ':'])
        .next()
        .unwrap_or_default();
    host == "localhost" || host.starts_with("127.") || host == "[::1]"
}

fn failed(what: &str, e: &reqwest::Error) -> ProviderError {
    let chain = crate::error::chain(e);
    let help = if chain.contains("certificate") || chain.contains("UnknownIssuer") {
        "\nhelp: Portainer's certificate is not trusted; point PHOENIX_PORTAINER_CA_FILE at the CA that signed it"
    } else {
        "\nhelp: check PHOENIX_PORTAINER_URL and that Portainer runs"
    };
    ProviderError::Unreachable(format!("{what}: {chain}{help}"))
}

/// A Portainer error answer as a provider error (its `message` and `details`).
fn api(status: u16, what: &str, body: &Value) -> ProviderError {
    let msg = body["message"].as_str().unwrap_or_default();
    let details = body["details"].as_str().unwrap_or_default();
    let message = format!("{what}: Portainer answered {status} {msg} ({details})");
    match status {
        404 => ProviderError::NotFound(message),
        401 | 403 | 422 => ProviderError::Auth(message),
        409 => ProviderError::Conflict(message),
        _ => ProviderError::Api {
            status,
            message: if status >= 500 {
                format!(
                    "{message}\nhelp: Portainer failed to answer (a read is tried 4 times, a write \
                     once); check it, then run phoenix again: the state and its journal stay true"
                )
            } else {
                format!(
                    "{message}\nhelp: Portainer refused the request; the message above is its reason"
                )
            },
            details: BTreeMap::new(),
        },
    }
}

/// The admin's name in a desired `portainer.admin`.
fn admin_name(d: &DesiredResource) -> &str {
    d.attrs
        .get("username")
        .and_then(Value::as_str)
        .unwrap_or(model::ADMIN)
}

fn attrs(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

/// Whether phoenix's API key works, from Portainer's answer to a read made
/// with it: refused (revoked, or another user's) is "no"; a failure to
/// answer is an error, never a reason to make a new key.
fn key_check(status: u16, body: &Value) -> Result<bool, ProviderError> {
    match status {
        200..=299 => Ok(true),
        401 | 403 | 404 => Ok(false),
        _ => Err(api(status, "checking phoenix's Portainer API key", body)),
    }
}

/// Portainer's stack names are lower case.
fn stack_name(name: &str) -> String {
    name.to_lowercase()
}

/// Base64url without padding, as JWT segments are written.
fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// The user id in a Portainer JWT's claims; the admin made by `admin/init` is user 1.
fn jwt_user(jwt: &str) -> u64 {
    jwt.split('.')
        .nth(1)
        .and_then(b64url_decode)
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|c| c["id"].as_u64())
        .unwrap_or(1)
}

/// The non-secret variables of a Portainer `Env` list.
fn plain_env(list: &Value) -> BTreeMap<String, String> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["name"].as_str()?, p["value"].as_str().unwrap_or_default())))
        .filter(|(k, _)| !looks_secret(k))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn env_list(d: &DesiredResource) -> Value {
    let mut out = Vec::new();
    for key in ["env", "secret_env"] {
        for (k, v) in d
            .attrs
            .get(key)
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            out.push(json!({"name": k, "value": v.as_str().unwrap_or_default()}));
        }
    }
    Value::Array(out)
}

/// `services` of a stack (per compose service: `image`, `replicas` or
/// `global`, non-secret `env`) from the Engine's service objects.
fn summarize_services(stack: &str, list: &[Value]) -> Map<String, Value> {
    let mut out = Map::new();
    for s in list {
        let spec = &s["Spec"];
        let full = spec["Name"].as_str().unwrap_or_default();
        let name = full.strip_prefix(&format!("{stack}_")).unwrap_or(full);
        let container = &spec["TaskTemplate"]["ContainerSpec"];
        // The Engine pins the image by digest; the compose file names the tag.
        let image = container["Image"]
            .as_str()
            .unwrap_or_default()
            .split('@')
            .next()
            .unwrap_or_default();
        let mode = &spec["Mode"];
        let replicas = if mode.get("Global").is_some_and(|g| !g.is_null()) {
            json!("global")
        } else {
            json!(mode["Replicated"]["Replicas"].as_u64().unwrap_or(1))
        };
        let env: BTreeMap<String, String> = container["Env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter_map(|e| e.split_once('='))
            .filter(|(k, _)| !looks_secret(k))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        out.insert(
            name.to_string(),
            json!({"image": image, "replicas": replicas, "env": env}),
        );
    }
    out
}

impl PortainerProvider {
    pub fn new(settings: PortainerSettings, engines: Arc<Engines>) -> Self {
        PortainerProvider {
            settings,
            http: OnceCell::new(),
            engines,
            auth: Mutex::new(None),
            via_portainer: std::sync::OnceLock::new(),
        }
    }

    async fn http(&self) -> Result<&(reqwest::Client, String), ProviderError> {
        self.http
            .get_or_try_init(|| async {
                let url = self.settings.url.clone().ok_or_else(|| {
                    ProviderError::Config(
                        "phoenix does not know where Portainer is\nhelp: set PHOENIX_PORTAINER_URL (https://host:9443, with PHOENIX_PORTAINER_CA_FILE)".into(),
                    )
                })?;
                let plain_loopback = url.starts_with("http://") && is_loopback(&url);
                if !url.starts_with("https://") && !plain_loopback {
                    return Err(ProviderError::Config(format!(
                        "PHOENIX_PORTAINER_URL must be an https:// address, got `{url}`\nhelp: phoenix verifies Portainer's certificate; plain http is accepted on loopback only (phoenix-lab)"
                    )));
                }
                let mut b = reqwest::Client::builder()
                    .timeout(Duration::from_secs(120))
                    .connect_timeout(Duration::from_secs(10));
                if let Some(ca) = &self.settings.ca_file {
                    let pem = std::fs::read(ca).map_err(|e| {
                        ProviderError::Config(format!(
                            "failed to read the CA file {} (PHOENIX_PORTAINER_CA_FILE): {e}",
                            ca.display()
                        ))
                    })?;
                    let certs = reqwest::Certificate::from_pem_bundle(&pem)
                        .ok()
                        .filter(|c| !c.is_empty())
                        .ok_or_else(|| {
                            ProviderError::Config(format!(
                                "the CA file {} holds no usable PEM certificate",
                                ca.display()
                            ))
                        })?;
                    b = b.tls_certs_only(certs);
                }
                let client = b.build().map_err(|e| {
                    ProviderError::Config(format!("failed to set up the HTTPS client: {e}"))
                })?;
                Ok((client, url))
            })
            .await
    }

    /// One request; a read (GET) that fails with a 5xx or a lost connection is
    /// sent again under the Proxmox client's policy ([`READ_ATTEMPTS`], [`backoff`]
    /// with jitter). A write is sent once: one whose answer was lost may have been done.
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Body,
        auth: Option<&Auth>,
    ) -> Result<(u16, Value), ProviderError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let r = self
                .call_once(method.clone(), path, query, body.clone(), auth)
                .await;
            let retry = match &r {
                Ok((status, _)) => *status >= 500,
                Err(e) => matches!(e, ProviderError::Unreachable(_)),
            };
            if method != Method::GET || !retry || attempt >= READ_ATTEMPTS {
                return r;
            }
            tracing::debug!(path, attempt, "retrying a Portainer read");
            tokio::time::sleep(backoff(attempt)).await;
        }
    }

    async fn call_once(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Body,
        auth: Option<&Auth>,
    ) -> Result<(u16, Value), ProviderError> {
        let (client, base) = self.http().await?;
        tracing::debug!(%method, path, "portainer request");
        let mut rq = client.request(method.clone(), format!("{base}/api{path}"));
        if !query.is_empty() {
            rq = rq.query(query);
        }
        rq = match auth {
            Some(Auth::Key(k)) => rq.header("X-API-Key", k),
            Some(Auth::Jwt(j)) => rq.bearer_auth(j),
            None => rq,
        };
        rq = match body {
            Body::None => rq,
            Body::Json(v) => rq.json(&v),
            Body::Form(fields) => {
                let mut form = reqwest::multipart::Form::new();
                for (k, v) in fields {
                    form = form.text(k, v);
                }
                rq.multipart(form)
            }
        };
        let resp = rq
            .send()
            .await
            .map_err(|e| failed(&format!("{method} {path}"), &e))?;
        let status = resp.status().as_u16();
        let text = resp
            .text()
            .await
            .map_err(|e| failed(&format!("{method} {path}"), &e))?;
        let v = serde_json::from_str(&text).unwrap_or(Value::Null);
        tracing::debug!(%method, path, status, "portainer answer");
        Ok((status, v))
    }

    /// A call that must succeed (2xx).
    async fn ok(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Body,
        what: &str,
    ) -> Result<Value, ProviderError> {
        let auth = self.auth().await?;
        let (status, v) = self.call(method, path, query, body, auth.as_ref()).await?;
        if (200..300).contains(&status) {
            Ok(v)
        } else {
            Err(api(status, what, &v))
        }
    }

    fn read_key_file(&self) -> Option<KeyFile> {
        let text = std::fs::read_to_string(&self.settings.key_file).ok()?;
        let k: KeyFile = serde_json::from_str(&text).ok()?;
        (Some(&k.url) == self.settings.url.as_ref()).then_some(k)
    }

    async fn admin_exists(&self) -> Result<bool, ProviderError> {
        let (status, v) = self
            .call(Method::GET, "/users/admin/check", &[], Body::None, None)
            .await?;
        match status {
            204 | 200 => Ok(true),
            404 => Ok(false),
            _ => Err(api(status, "checking for the Portainer admin", &v)),
        }
    }

    async fn key_works(&self, k: &KeyFile) -> Result<bool, ProviderError> {
        let (status, v) = self
            .call(
                Method::GET,
                &format!("/users/{}/tokens", k.user_id),
                &[],
                Body::None,
                Some(&Auth::Key(k.api_key.clone())),
            )
            .await?;
        key_check(status, &v)
    }

    async fn login(&self, username: &str, password: &str) -> Result<String, ProviderError> {
        let (status, v) = self
            .call(
                Method::POST,
                "/auth",
                &[],
                Body::Json(json!({"Username": username, "Password": password})),
                None,
            )
            .await?;
        match (status, v["jwt"].as_str()) {
            (200, Some(j)) => Ok(j.to_string()),
            (422, _) => Err(ProviderError::Auth(format!(
                "Portainer refuses the password of `{username}` (422 Invalid credentials)\nhelp: PHOENIX_PORTAINER_PASSWORD must be the admin's current password; phoenix does not change it"
            ))),
            _ => Err(api(status, "logging in to Portainer", &v)),
        }
    }

    /// The credentials of this run: phoenix's key if it works, else a login.
    async fn auth(&self) -> Result<Option<Auth>, ProviderError> {
        let mut g = self.auth.lock().await;
        if let Some(a) = g.as_ref() {
            return Ok(a.clone());
        }
        let found = if let Some(k) = self.read_key_file()
            && self.key_works(&k).await?
        {
            Some(Auth::Key(k.api_key))
        } else if let Some(pw) = &self.settings.password
            && self.admin_exists().await?
        {
            Some(Auth::Jwt(self.login(&self.settings.username, pw).await?))
        } else {
            None
        };
        *g = Some(found.clone());
        Ok(found)
    }

    async fn admin_live(&self) -> Result<Option<LiveObject>, ProviderError> {
        if !self.admin_exists().await? {
            return Ok(None);
        }
        let key = match self.read_key_file() {
            Some(k) if self.key_works(&k).await? => Some(k),
            _ => None,
        };
        let username = key
            .as_ref()
            .map(|k| k.username.clone())
            .unwrap_or_else(|| self.settings.username.clone());
        Ok(Some(LiveObject {
            attrs: attrs(json!({
                "username": username,
                "api_key": if key.is_some() { "valid" } else { "missing" },
            })),
            remote: json!({"user_id": key.as_ref().map(|k| k.user_id), "key_id": key.as_ref().map(|k| k.key_id)}),
            token: None,
        }))
    }

    async fn endpoints(&self) -> Result<Vec<Value>, ProviderError> {
        let v = self
            .ok(
                Method::GET,
                "/endpoints",
                &[],
                Body::None,
                "listing the environments",
            )
            .await?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }

    fn endpoint_live(e: &Value) -> LiveObject {
        let tls = &e["TLSConfig"];
        LiveObject {
            attrs: attrs(json!({
                "url": e["URL"],
                "tls": tls["TLS"].as_bool().unwrap_or(false),
                "tls_skip_verify": tls["TLSSkipVerify"].as_bool().unwrap_or(false),
                "tls_skip_client_verify": tls["TLSSkipClientVerify"].as_bool().unwrap_or(false),
                "group_id": e["GroupId"],
            })),
            remote: json!({"id": e["Id"]}),
            token: None,
        }
    }

    /// The services of a stack as the swarm runs them: from the manager's
    /// engine, else (phoenix has no engine for the manager, or it does not
    /// answer) through Portainer's Docker proxy on the stack's environment,
    /// which reaches the same swarm through the agent. Either way the same
    /// Engine objects, read the same way.
    async fn services(
        &self,
        stack: &str,
        endpoint_id: Option<u64>,
    ) -> Result<Map<String, Value>, ProviderError> {
        let label = format!("{NAMESPACE_LABEL}={stack}");
        let engine_err = if self.via_portainer.get().is_some() {
            None
        } else {
            match self.services_from_engine(stack, &label).await {
                Ok(list) => return Ok(summarize_services(stack, &list)),
                Err(e @ (ProviderError::Config(_) | ProviderError::Unreachable(_))) => Some(e),
                Err(e) => return Err(e),
            }
        };
        let Some(eid) = endpoint_id else {
            return Err(engine_err.unwrap_or_else(|| {
                ProviderError::Other(format!("stack {stack} has no Portainer environment"))
            }));
        };
        if let Some(e) = &engine_err {
            // Said once per run: every other stack goes the same way without retrying the engine.
            if self.via_portainer.set(e.to_string()).is_ok() {
                tracing::info!(
                    reason = %e,
                    "reading the stacks' services through Portainer's Docker proxy"
                );
            }
        }
        let filters = json!({"label": [label]}).to_string();
        let proxied = self
            .ok(
                Method::GET,
                &format!("/endpoints/{eid}/docker/services"),
                &[("filters", filters)],
                Body::None,
                &format!("listing the services of stack {stack} through Portainer"),
            )
            .await;
        // Both ways failed: the engine's reason first (an agent on a worker
        // cannot list the swarm's services, so the proxy's is often secondary).
        let list = match (proxied, &engine_err) {
            (Ok(list), _) => list,
            (Err(proxy), Some(engine)) => {
                return Err(ProviderError::Unreachable(format!(
                    "{engine}\nand through Portainer's Docker proxy: {proxy}"
                )));
            }
            (Err(proxy), None) => return Err(proxy),
        };
        match list {
            Value::Array(list) => Ok(summarize_services(stack, &list)),
            other => Err(ProviderError::Other(format!(
                "Portainer's Docker proxy answered the services of stack {stack} with {other}, not a list"
            ))),
        }
    }

    /// The stack's services on the manager's engine, as the Engine API writes them.
    async fn services_from_engine(
        &self,
        stack: &str,
        label: &str,
    ) -> Result<Vec<Value>, ProviderError> {
        let m = self.engines.manager()?;
        let filters: HashMap<String, Vec<String>> =
            HashMap::from([("label".to_string(), vec![label.to_string()])]);
        let c = m.client().await?;
        let options = ListServicesOptionsBuilder::default()
            .filters(&filters)
            .build();
        let list = read(
            &m.name,
            &format!("listing the services of stack {stack}"),
            move || c.list_services(Some(options.clone())),
        )
        .await?;
        list.iter()
            .map(serde_json::to_value)
            .collect::<Result<_, _>>()
            .map_err(|e| ProviderError::Other(format!("cannot read the services back: {e}")))
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
        if objs.is_empty() || !self.admin_exists().await? {
            // A Portainer without an admin has nothing else either.
            return Ok(out);
        }
        let admin = if objs.iter().any(|(_, o)| *o == Object::Admin) {
            self.admin_live().await?
        } else {
            None
        };
        if self.auth().await?.is_none() {
            if let Some(a) = admin {
                out.insert(Object::Admin.address(), a);
            }
            return Ok(out);
        }
        let endpoints = self.endpoints().await?;
        let wants_stacks = objs.iter().any(|(_, o)| matches!(o, Object::Stack(_)));
        let stacks = if wants_stacks {
            self.ok(
                Method::GET,
                "/stacks",
                &[],
                Body::None,
                "listing the stacks",
            )
            .await?
            .as_array()
            .cloned()
            .unwrap_or_default()
        } else {
            Vec::new()
        };
        for (addr, o) in objs {
            let live = match &o {
                Object::Admin => admin.clone(),
                Object::Endpoint(n) => endpoints
                    .iter()
                    .find(|e| e["Name"] == n.as_str())
                    .map(Self::endpoint_live),
                Object::Stack(n) => {
                    let name = stack_name(n);
                    match stacks.iter().find(|s| s["Name"] == name.as_str()) {
                        None => None,
                        Some(s) => Some(self.stack_live(s, &endpoints, &name).await?),
                    }
                }
            };
            if let Some(l) = live {
                out.insert(addr, l);
            }
        }
        Ok(out)
    }

    async fn stack_live(
        &self,
        s: &Value,
        endpoints: &[Value],
        name: &str,
    ) -> Result<LiveObject, ProviderError> {
        let id = s["Id"].as_u64().unwrap_or_default();
        let file = self
            .ok(
                Method::GET,
                &format!("/stacks/{id}/file"),
                &[],
                Body::None,
                &format!("reading the file of stack {name}"),
            )
            .await?;
        let endpoint = endpoints
            .iter()
            .find(|e| e["Id"] == s["EndpointId"])
            .and_then(|e| e["Name"].as_str())
            .unwrap_or_default();
        let services = self.services(name, s["EndpointId"].as_u64()).await?;
        let (compose, secrets) =
            model::unpin_secret_versions(file["StackFileContent"].as_str().unwrap_or_default());
        Ok(LiveObject {
            attrs: attrs(json!({
                "endpoint": endpoint,
                "compose": compose,
                "secrets": secrets,
                "env": plain_env(&s["Env"]),
                "services": services,
            })),
            remote: json!({"id": id, "endpoint_id": s["EndpointId"], "swarm_id": s["SwarmId"]}),
            token: s["UpdateDate"].as_i64().map(|t| t.to_string()),
        })
    }

    async fn read_one(&self, addr: &Address) -> Result<LiveObject, ProviderError> {
        self.refresh_all(std::slice::from_ref(addr))
            .await?
            .remove(addr)
            .ok_or_else(|| {
                ProviderError::Other(format!("{addr} is missing right after it was made"))
            })
    }

    /// The admin password, needed only to initialise the admin or make a key.
    fn password<'d>(&'d self, d: &'d DesiredResource) -> Result<&'d str, ProviderError> {
        d.attrs
            .get("password")
            .and_then(Value::as_str)
            .or(self.settings.password.as_deref())
            .filter(|p| !p.is_empty())
            .ok_or_else(|| {
                ProviderError::Config(format!(
                    "{} needs the Portainer admin password (to {} and make phoenix's API key), and none is set\nhelp: set PHOENIX_PORTAINER_PASSWORD or PHOENIX_PORTAINER_PASSWORD_FILE (a file kept out of git, mode 0600); plans and `validate` do not need it",
                    d.address,
                    if self.settings.key_file.exists() { "log in" } else { "initialise the admin" }
                ))
            })
    }

    /// Log in with the password the manifests give, make a new API key, keep
    /// it in the key file and remove the key it replaces.
    async fn new_key(&self, d: &DesiredResource, ctx: &dyn OpContext) -> Result<(), ProviderError> {
        let username = admin_name(d);
        let password = self.password(d)?;
        let jwt = self.login(username, password).await?;
        let user_id = jwt_user(&jwt);
        ctx.progress("Creating", &format!("a Portainer API key for {username}"));
        let (status, v) = self
            .call(
                Method::POST,
                &format!("/users/{user_id}/tokens"),
                &[],
                Body::Json(json!({"description": KEY_DESCRIPTION, "password": password})),
                Some(&Auth::Jwt(jwt.clone())),
            )
            .await?;
        let raw = match (status, v["rawAPIKey"].as_str()) {
            (200 | 201, Some(r)) => r.to_string(),
            _ => return Err(api(status, "creating the Portainer API key", &v)),
        };
        let old = self.read_key_file();
        let kf = KeyFile {
            url: self.settings.url.clone().unwrap_or_default(),
            username: username.to_string(),
            user_id,
            key_id: v["apiKey"]["id"].as_u64().unwrap_or_default(),
            api_key: raw,
        };
        let bytes = serde_json::to_vec_pretty(&kf)
            .map_err(|e| ProviderError::Other(format!("cannot encode the key file: {e}")))?;
        crate::providers::host::cert::write_private(&self.settings.key_file, &bytes).map_err(
            |e| {
                ProviderError::Other(format!(
                    "cannot write {}: {e}",
                    self.settings.key_file.display()
                ))
            },
        )?;
        tracing::info!(path = %self.settings.key_file.display(), "kept the Portainer API key");
        if let Some(old) = old.filter(|o| o.key_id != kf.key_id && o.user_id == user_id) {
            let (status, _) = self
                .call(
                    Method::DELETE,
                    &format!("/users/{user_id}/tokens/{}", old.key_id),
                    &[],
                    Body::None,
                    Some(&Auth::Jwt(jwt)),
                )
                .await?;
            if !(200..300).contains(&status) && status != 404 {
                tracing::warn!(
                    status,
                    "the replaced Portainer API key could not be removed"
                );
            }
        }
        *self.auth.lock().await = None;
        Ok(())
    }

    async fn create_admin(
        &self,
        d: &DesiredResource,
        ctx: &dyn OpContext,
    ) -> Result<(), ProviderError> {
        let username = admin_name(d);
        let password = self.password(d)?;
        ctx.progress("Initialising", &format!("the Portainer admin {username}"));
        let (status, v) = self
            .call(
                Method::POST,
                "/users/admin/init",
                &[],
                Body::Json(json!({"Username": username, "Password": password})),
                None,
            )
            .await?;
        match status {
            200 => {}
            // Someone initialised it since the plan: the login below tells whether it is ours.
            409 => ctx.progress("Found", "an admin already initialised: logging in"),
            _ => return Err(api(status, "initialising the Portainer admin", &v)),
        }
        self.new_key(d, ctx).await
    }

    async fn endpoint_id(&self, name: &str) -> Result<u64, ProviderError> {
        self.endpoints()
            .await?
            .iter()
            .find(|e| e["Name"] == name)
            .and_then(|e| e["Id"].as_u64())
            .ok_or_else(|| ProviderError::NotFound(format!("the Portainer environment `{name}`")))
    }

    async fn create_endpoint(&self, d: &DesiredResource, name: &str) -> Result<(), ProviderError> {
        let b = |k: &str| {
            d.attrs
                .get(k)
                .and_then(Value::as_bool)
                .unwrap_or(false)
                .to_string()
        };
        let fields = vec![
            ("Name", name.to_string()),
            ("EndpointCreationType", "2".to_string()),
            ("URL", d.attr_str("url").to_string()),
            (
                "GroupID",
                d.attrs
                    .get("group_id")
                    .and_then(Value::as_u64)
                    .unwrap_or(1)
                    .to_string(),
            ),
            ("TLS", b("tls")),
            ("TLSSkipVerify", b("tls_skip_verify")),
            ("TLSSkipClientVerify", b("tls_skip_client_verify")),
        ];
        self.ok(
            Method::POST,
            "/endpoints",
            &[],
            Body::Form(fields),
            &format!("creating the environment {name}"),
        )
        .await?;
        Ok(())
    }

    /// Change an environment in place (`PUT /api/endpoints/{id}`): only what
    /// differs is sent. The three TLS flags go together: Portainer reads the
    /// skip flags only beside `TLS`, and `TLS: false` clears them.
    async fn update_endpoint(
        &self,
        d: &DesiredResource,
        live: &LiveObject,
        name: &str,
    ) -> Result<(), ProviderError> {
        let id = live.remote["id"].as_u64().ok_or_else(|| {
            ProviderError::Other(format!("the environment {name} has no id in Portainer"))
        })?;
        let differs = |k: &str| d.attrs.get(k) != live.attrs.get(k);
        let mut body = Map::new();
        if differs("url") {
            body.insert("URL".into(), json!(d.attr_str("url")));
        }
        if differs("group_id") {
            body.insert(
                "GroupID".into(),
                json!(d.attrs["group_id"].as_u64().unwrap_or(1)),
            );
        }
        if ["tls", "tls_skip_verify", "tls_skip_client_verify"]
            .iter()
            .any(|k| differs(k))
        {
            for (field, k) in [
                ("TLS", "tls"),
                ("TLSSkipVerify", "tls_skip_verify"),
                ("TLSSkipClientVerify", "tls_skip_client_verify"),
            ] {
                body.insert(
                    field.into(),
                    json!(d.attrs.get(k).and_then(Value::as_bool).unwrap_or(false)),
                );
            }
        }
        if body.is_empty() {
            return Ok(());
        }
        self.ok(
            Method::PUT,
            &format!("/endpoints/{id}"),
            &[],
            Body::Json(Value::Object(body)),
            &format!("updating the environment {name}"),
        )
        .await?;
        Ok(())
    }

    async fn deploy_stack(
        &self,
        d: &DesiredResource,
        name: &str,
        existing: Option<u64>,
    ) -> Result<(), ProviderError> {
        let endpoint = d.attr_str("endpoint");
        let eid = self.endpoint_id(endpoint).await?;
        let q = [("endpointId", eid.to_string())];
        let versions: BTreeMap<String, String> = d
            .attrs
            .get("secrets")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect();
        if let Some(missing) = d
            .create
            .get(model::SECRET_ENV_MISSING)
            .and_then(Value::as_array)
            .filter(|m| !m.is_empty())
        {
            let names: Vec<&str> = missing.iter().filter_map(Value::as_str).collect();
            return Err(ProviderError::Config(format!(
                "stack {name} needs the value of {} to deploy, and none is set\nhelp: set {} (or write secrets/<name> under the site, mode 0600) and plan again",
                names.join(", "),
                names
                    .iter()
                    .map(|n| crate::model::swarm::secret_env_name(n))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let content = model::pin_secret_versions(d.attr_str("compose"), &versions)
            .map_err(|e| ProviderError::Config(format!("stack {name}: {e}")))?;
        match existing {
            Some(id) => {
                self.ok(
                    Method::PUT,
                    &format!("/stacks/{id}"),
                    &q,
                    Body::Json(
                        json!({"StackFileContent": content, "Env": env_list(d), "Prune": true}),
                    ),
                    &format!("updating stack {name}"),
                )
                .await?;
            }
            None => {
                let swarm = self
                    .ok(
                        Method::GET,
                        &format!("/endpoints/{eid}/docker/swarm"),
                        &[],
                        Body::None,
                        &format!("reading the swarm of environment {endpoint}"),
                    )
                    .await?;
                let swarm_id = swarm["ID"].as_str().ok_or_else(|| {
                    ProviderError::Other(format!(
                        "the environment `{endpoint}` is not part of a swarm"
                    ))
                })?;
                self.ok(
                    Method::POST,
                    "/stacks/create/swarm/string",
                    &q,
                    Body::Json(json!({"Name": stack_name(name), "SwarmID": swarm_id,
                                      "StackFileContent": content, "Env": env_list(d)})),
                    &format!("deploying stack {name}"),
                )
                .await?;
            }
        }
        Ok(())
    }
}

impl ResourceProvider for PortainerProvider {
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
                Some(Object::Admin) => self.create_admin(desired, ctx).await?,
                Some(Object::Endpoint(n)) => {
                    ctx.progress("Adding", &format!("the agent environment {n}"));
                    self.create_endpoint(desired, &n).await?;
                }
                Some(Object::Stack(n)) => {
                    ctx.progress("Deploying", &format!("stack {n}"));
                    self.deploy_stack(desired, &n, None).await?;
                }
                None => {
                    return Err(ProviderError::Other(format!(
                        "{addr} is not a Portainer object phoenix knows"
                    )));
                }
            }
            self.read_one(addr).await
        })
    }

    fn update<'a>(
        &'a self,
        desired: &'a DesiredResource,
        live: &'a LiveObject,
        _change: &'a Change,
        ctx: &'a dyn OpContext,
    ) -> BoxFuture<'a, Result<LiveObject, ProviderError>> {
        Box::pin(async move {
            let addr = &desired.address;
            match Object::of(addr) {
                Some(Object::Admin) => self.new_key(desired, ctx).await?,
                Some(Object::Endpoint(n)) => {
                    ctx.progress("Updating", &format!("the agent environment {n}"));
                    self.update_endpoint(desired, live, &n).await?;
                }
                Some(Object::Stack(n)) => {
                    ctx.progress("Redeploying", &format!("stack {n}"));
                    self.deploy_stack(desired, &n, live.remote["id"].as_u64())
                        .await?;
                }
                None => {
                    return Err(ProviderError::Other(format!(
                        "{addr} is not a Portainer object phoenix knows"
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
            let gone = |r: Result<Value, ProviderError>| match r {
                Ok(_) | Err(ProviderError::NotFound(_)) => Ok(()),
                Err(e) => Err(e),
            };
            match Object::of(address) {
                // Portainer cannot lose its admin: phoenix drops its key only.
                Some(Object::Admin) => {
                    if let Some(k) = self.read_key_file() {
                        ctx.progress("Removing", "phoenix's Portainer API key");
                        gone(
                            self.ok(
                                Method::DELETE,
                                &format!("/users/{}/tokens/{}", k.user_id, k.key_id),
                                &[],
                                Body::None,
                                "removing the API key",
                            )
                            .await,
                        )?;
                    }
                    match std::fs::remove_file(&self.settings.key_file) {
                        Ok(()) => Ok(()),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                        Err(e) => Err(ProviderError::Other(format!(
                            "cannot remove {}: {e}",
                            self.settings.key_file.display()
                        ))),
                    }
                }
                Some(Object::Endpoint(n)) => match remote["id"].as_u64() {
                    Some(id) => gone(
                        self.ok(
                            Method::DELETE,
                            &format!("/endpoints/{id}"),
                            &[],
                            Body::None,
                            &format!("removing the environment {n}"),
                        )
                        .await,
                    ),
                    None => Ok(()),
                },
                Some(Object::Stack(n)) => {
                    match (remote["id"].as_u64(), remote["endpoint_id"].as_u64()) {
                        (Some(id), Some(eid)) => gone(
                            self.ok(
                                Method::DELETE,
                                &format!("/stacks/{id}"),
                                &[("endpointId", eid.to_string())],
                                Body::None,
                                &format!("removing stack {n}"),
                            )
                            .await,
                        ),
                        _ => Ok(()),
                    }
                }
                None => Ok(()),
            }
        })
    }

    fn lanes(&self, change: &Change, _desired: Option<&DesiredResource>) -> Vec<Lane> {
        // A stack deployment writes to the swarm, whose raft takes one write at a time.
        let key = match Object::of(&change.address) {
            Some(Object::Stack(_)) => "swarm",
            _ => "portainer",
        };
        vec![Lane {
            key: key.into(),
            capacity: 1,
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_only_for_plain_http() {
        assert!(is_loopback("http://127.0.0.1:9000"));
        assert!(is_loopback("http://localhost:9000/"));
        assert!(!is_loopback("http://10.0.0.111:9000"));
    }

    #[test]
    fn jwt_user_reads_the_claims_or_defaults_to_the_first_user() {
        // {"id":7,"username":"admin"}
        assert_eq!(jwt_user("x.eyJpZCI6NywidXNlcm5hbWUiOiJhZG1pbiJ9.y"), 7);
        assert_eq!(jwt_user("opaque"), 1);
    }

    #[test]
    fn a_key_is_missing_only_when_portainer_refuses_it_not_when_it_fails() {
        let body = json!({"message": "boom", "details": "injected"});
        assert!(key_check(200, &json!([])).unwrap());
        assert!(!key_check(401, &body).unwrap());
        assert!(!key_check(403, &body).unwrap());
        let e = key_check(503, &body).unwrap_err().to_string();
        assert!(e.contains("Portainer answered 503"), "{e}");
        assert!(e.contains("help: Portainer failed to answer"), "{e}");
    }

    #[test]
    fn key_file_debug_hides_the_key() {
        let k = KeyFile {
            url: "u".into(),
            username: "admin".into(),
            user_id: 1,
            key_id: 2,
            api_key: "ptr_secret".into(),
        };
        assert!(!format!("{k:?}").contains("ptr_secret"));
    }
}
