//! phoenix-lab: a local twin of a site's container side, on loopback.
//!
//! One Portainer API (`portainer`), and one Docker Engine API per simulated
//! node (`docker`), each on its own port, all sharing one in-memory
//! [`world::World`]. Faults are set from the start (`--world FILE`) or at run
//! time on the Portainer port:
//!
//! | call | effect |
//! |------|--------|
//! | `GET /_lab/faults` | the faults in force |
//! | `PUT /_lab/faults` | replace them: `{"latency_ms", "errors": [...], "down": ["node"], "seed"}`; a node put down stops listening (connections refused) and shows `down` in the swarm, put back up it listens again on the same port |
//! | `GET /_lab/urls` | the URLs served, as `serve` prints them |

pub mod compose;
pub mod docker;
pub mod gojson;
pub mod portainer;
pub mod real;
pub mod world;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Multipart, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub use world::{ErrorRule, Faults, NodeConfig, WorldConfig};

use docker::Reply;
use world::World;

/// An error starting or running the lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("node `{0}` is listed twice in the world")]
    DuplicateNode(String),
    #[error("node `{node}`: {source}")]
    BadEngine {
        node: String,
        source: real::BadEngineUrl,
    },
}

struct NodeServer {
    hostname: String,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
}

struct Shared {
    world: Mutex<World>,
    nodes: tokio::sync::Mutex<Vec<NodeServer>>,
    /// Stack writes on real engines, one at a time: the name checked before
    /// `docker stack deploy` is still free when the stack is recorded.
    real_stacks: tokio::sync::Mutex<()>,
}

impl Shared {
    /// The world; a handler that panicked while holding it leaves it usable.
    fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running lab.
pub struct Lab {
    shared: Arc<Shared>,
    portainer: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
}

impl Lab {
    /// Start the servers: Portainer on `listen`, the nodes on the ports the
    /// world names, else on the ports after `listen`'s (or any free port when
    /// `listen`'s is 0).
    pub async fn start(cfg: WorldConfig, listen: SocketAddr) -> Result<Lab, LabError> {
        let mut seen = std::collections::BTreeSet::new();
        for n in &cfg.nodes {
            if !seen.insert(n.hostname.clone()) {
                return Err(LabError::DuplicateNode(n.hostname.clone()));
            }
            if let Some(e) = &n.engine {
                real::check_url(e).map_err(|source| LabError::BadEngine {
                    node: n.hostname.clone(),
                    source,
                })?;
            }
        }
        let shared = Arc::new(Shared {
            world: Mutex::new(World::new(&cfg)),
            nodes: tokio::sync::Mutex::new(Vec::new()),
            real_stacks: tokio::sync::Mutex::new(()),
        });
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| LabError::Bind {
                addr: listen,
                source,
            })?;
        let portainer = listener.local_addr().map_err(|source| LabError::Bind {
            addr: listen,
            source,
        })?;
        let (tx, rx) = oneshot::channel();
        let app = Router::new()
            .fallback(portainer_handler)
            .with_state(shared.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        let lab = Lab {
            shared: shared.clone(),
            portainer,
            stop: Some(tx),
        };
        let mut servers = Vec::new();
        for (i, n) in cfg.nodes.iter().enumerate() {
            // A real engine is served by itself; its URL is in the world already.
            if n.engine.is_some() {
                continue;
            }
            let port = if n.port != 0 {
                n.port
            } else if listen.port() != 0 {
                listen.port() + 1 + i as u16
            } else {
                0
            };
            let addr = SocketAddr::new(listen.ip(), port);
            let (addr, stop) = serve_node(shared.clone(), n.hostname.clone(), addr).await?;
            shared.world().engines[i].url = format!("http://{addr}");
            servers.push(NodeServer {
                hostname: n.hostname.clone(),
                addr,
                stop: Some(stop),
            });
        }
        *shared.nodes.lock().await = servers;
        // Nodes down from the start.
        let faults = shared.world().faults.clone();
        apply_down(&shared, &faults.down).await;
        Ok(lab)
    }

    pub fn portainer_url(&self) -> String {
        format!("http://{}", self.portainer)
    }

    /// `(hostname, http://127.0.0.1:PORT)` of every simulated node.
    pub fn docker_urls(&self) -> Vec<(String, String)> {
        self.shared
            .world()
            .engines
            .iter()
            .map(|e| (e.hostname.clone(), e.url.clone()))
            .collect()
    }

    /// Replace the faults in force (as `PUT /_lab/faults`).
    pub async fn set_faults(&self, faults: Faults) {
        set_faults(&self.shared, faults).await;
    }

    /// Stop every server.
    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        for n in self.shared.nodes.lock().await.iter_mut() {
            if let Some(s) = n.stop.take() {
                let _ = s.send(());
            }
        }
    }
}

async fn serve_node(
    shared: Arc<Shared>,
    hostname: String,
    addr: SocketAddr,
) -> Result<(SocketAddr, oneshot::Sender<()>), LabError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| LabError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| LabError::Bind { addr, source })?;
    let app = Router::new()
        .fallback(docker_handler)
        .with_state((shared, hostname));
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
    });
    Ok((bound, tx))
}

/// Stop the servers of nodes now down, start those back up.
async fn apply_down(shared: &Arc<Shared>, down: &[String]) {
    let mut nodes = shared.nodes.lock().await;
    for n in nodes.iter_mut() {
        let want_down = down.contains(&n.hostname);
        match (&n.stop, want_down) {
            (Some(_), true) => {
                if let Some(s) = n.stop.take() {
                    let _ = s.send(());
                }
                tracing::info!(node = %n.hostname, "node down");
            }
            (None, false) => {
                // The old listener may take a moment to close.
                for _ in 0..50 {
                    match serve_node(shared.clone(), n.hostname.clone(), n.addr).await {
                        Ok((_, stop)) => {
                            n.stop = Some(stop);
                            tracing::info!(node = %n.hostname, "node up");
                            break;
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            }
            _ => {}
        }
    }
}

async fn set_faults(shared: &Arc<Shared>, faults: Faults) {
    let down = faults.down.clone();
    {
        let mut w = shared.world();
        w.draws = world::Draws::new(faults.seed);
        w.faults = faults;
    }
    apply_down(shared, &down).await;
}

fn reply_response(r: Reply) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match (r.body, r.text) {
        (Some(b), _) => (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            format!("{b}\n"),
        )
            .into_response(),
        (None, Some(t)) => (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            t,
        )
            .into_response(),
        (None, None) => status.into_response(),
    }
}

fn query_map(uri: &Uri) -> BTreeMap<String, String> {
    Query::<BTreeMap<String, String>>::try_from_uri(uri)
        .map(|q| q.0)
        .unwrap_or_default()
}

/// Latency and injected errors for one request; `Some` answers it.
async fn faults_for(shared: &Shared, server: &str, method: &Method, path: &str) -> Option<Reply> {
    let latency = shared.world().faults.latency_ms;
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let (status, message) = {
        let mut w = shared.world();
        let World { faults, draws, .. } = &mut *w;
        faults.take_error(server, method.as_str(), docker::strip_version(path), draws)?
    };
    Some(if server == "portainer" {
        portainer::error(status, &message, "injected by phoenix-lab")
    } else {
        Reply::error(status, message)
    })
}

async fn docker_handler(
    State((shared, hostname)): State<(Arc<Shared>, String)>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    if let Some(r) = faults_for(&shared, &hostname, &method, uri.path()).await {
        return reply_response(r);
    }
    let q = query_map(&uri);
    let mut w = shared.world();
    let Some(idx) = w.engine_index(&hostname) else {
        return reply_response(Reply::error(500, "unknown node"));
    };
    let r = docker::handle(&mut w, idx, method.as_str(), uri.path(), &q, &body);
    drop(w);
    tracing::debug!(node = %hostname, %method, path = %uri.path(), status = r.status);
    // Clients negotiate the API version from these headers (the docker CLI from `HEAD /_ping`).
    let mut resp = reply_response(r);
    let h = resp.headers_mut();
    h.insert(
        "api-version",
        header::HeaderValue::from_static(docker::API_VERSION),
    );
    h.insert("ostype", header::HeaderValue::from_static("linux"));
    h.insert(
        "docker-experimental",
        header::HeaderValue::from_static("false"),
    );
    h.insert(
        header::SERVER,
        header::HeaderValue::from_static("Docker/29.7.2-phoenix-lab (linux)"),
    );
    resp
}

fn header_str(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn portainer_handler(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let method = req.method().clone();
    let uri = req.uri().clone();
    let headers = req.headers().clone();
    if uri.path().starts_with("/_lab/") {
        return control(&shared, &method, uri.path(), req).await;
    }
    if let Some(r) = faults_for(&shared, "portainer", &method, uri.path()).await {
        return reply_response(r);
    }
    let ctype = header_str(&headers, "content-type").unwrap_or_default();
    let (form, body) = if ctype.starts_with("multipart/form-data") {
        match Multipart::from_request(req, &()).await {
            Ok(mut mp) => {
                let mut fields = BTreeMap::new();
                loop {
                    match mp.next_field().await {
                        Ok(Some(f)) => {
                            let name = f.name().unwrap_or_default().to_string();
                            let value = f.text().await.unwrap_or_default();
                            fields.insert(name, value);
                        }
                        Ok(None) => break,
                        Err(e) => {
                            return reply_response(portainer::error(
                                400,
                                "Invalid request payload",
                                &e.to_string(),
                            ));
                        }
                    }
                }
                (Some(fields), Bytes::new())
            }
            Err(e) => {
                return reply_response(portainer::error(
                    400,
                    "Invalid request payload",
                    &e.to_string(),
                ));
            }
        }
    } else {
        let bytes = match axum::body::to_bytes(req.into_body(), 16 << 20).await {
            Ok(b) => b,
            Err(e) => {
                return reply_response(portainer::error(400, "Invalid request", &e.to_string()));
            }
        };
        let form = if ctype.starts_with("application/x-www-form-urlencoded") {
            let rebuilt = Request::builder()
                .method(Method::POST)
                .header(header::CONTENT_TYPE, ctype.as_str())
                .body(Body::from(bytes.clone()));
            match rebuilt {
                Ok(r) => Some(
                    axum::extract::Form::<BTreeMap<String, String>>::from_request(r, &())
                        .await
                        .map(|f| f.0)
                        .unwrap_or_default(),
                ),
                Err(_) => None,
            }
        } else {
            None
        };
        (form, bytes)
    };
    let outcome = {
        let mut w = shared.world();
        portainer::handle(
            &mut w,
            &portainer::Request {
                method: method.as_str(),
                path: uri.path(),
                query: query_map(&uri),
                authorization: header_str(&headers, "authorization"),
                api_key: header_str(&headers, "x-api-key"),
                body: &body,
                form,
            },
        )
    };
    let r = match outcome {
        portainer::Outcome::Done(r) => r,
        portainer::Outcome::Real(op) => run_real(&shared, op, body.to_vec()).await,
    };
    tracing::debug!(%method, path = %uri.path(), status = r.status, "portainer");
    reply_response(r)
}

/// Do a request's work on a real engine (the world unlocked meanwhile), then record it.
async fn run_real(shared: &Shared, op: portainer::RealOp, body: Vec<u8>) -> Reply {
    use portainer::RealOp;
    match &op {
        RealOp::Proxy {
            engine,
            method,
            path,
            query,
        } => real::proxy(engine, method, path, query, body).await,
        RealOp::Deploy {
            engine,
            stack,
            name,
            swarm_id,
            file,
            env,
            prune,
            ..
        } => {
            let _one = shared.real_stacks.lock().await;
            if stack.is_none() {
                match real::swarm_id(engine).await {
                    Ok(Some(id)) if id == *swarm_id => {}
                    Ok(_) => {
                        return portainer::error(
                            400,
                            "Invalid request payload",
                            &format!("the environment is not part of swarm {swarm_id}"),
                        );
                    }
                    Err(e) => {
                        return portainer::error(
                            500,
                            "Unable to deploy stack",
                            &format!("{engine}: {e}"),
                        );
                    }
                }
            }
            match real::stack_deploy(engine, name, file, env, *prune).await {
                Ok(()) => portainer::commit_deploy(&mut shared.world(), &op),
                Err(e) => portainer::error(500, "Unable to deploy stack", &e.to_string()),
            }
        }
        RealOp::Remove {
            engine,
            stack,
            name,
        } => {
            let _one = shared.real_stacks.lock().await;
            match real::stack_rm(engine, name).await {
                Ok(()) => portainer::commit_remove(&mut shared.world(), *stack),
                Err(e) => portainer::error(500, "Unable to remove stack", &e.to_string()),
            }
        }
    }
}

async fn control(shared: &Arc<Shared>, method: &Method, path: &str, req: Request) -> Response {
    match (method.as_str(), path) {
        ("GET", "/_lab/faults") => {
            let f = shared.world().faults.clone();
            reply_response(Reply::json(200, json!(f)))
        }
        ("PUT", "/_lab/faults") => {
            let bytes = axum::body::to_bytes(req.into_body(), 1 << 20)
                .await
                .unwrap_or_default();
            match serde_json::from_slice::<Faults>(&bytes) {
                Ok(f) => {
                    set_faults(shared, f.clone()).await;
                    reply_response(Reply::json(200, json!(f)))
                }
                Err(e) => reply_response(Reply::error(400, format!("invalid faults: {e}"))),
            }
        }
        ("GET", "/_lab/urls") => {
            let w = shared.world();
            let nodes: serde_json::Map<String, Value> = w
                .engines
                .iter()
                .map(|e| (e.hostname.clone(), json!(e.url)))
                .collect();
            reply_response(Reply::json(200, json!({"docker": nodes})))
        }
        _ => reply_response(Reply::error(404, "unknown lab control call")),
    }
}
