//! Docker engines: the Swarm kinds (`swarm.*`, [`swarm::SwarmProvider`]).
//!
//! How each VM's engine is reached ([`DockerSettings::resolve`]):
//! `PHOENIX_DOCKER_HOST` is either one URL (the manager's; enough for a
//! single-node swarm) or `name=URL,name=URL` by VM name. A VM not named there
//! is reached at `tcp://<its manifest ip>:2376` with TLS client certificates
//! from `PHOENIX_DOCKER_CERT_PATH` (`ca.pem`, `cert.pem`, `key.pem`, as the
//! docker CLI's `DOCKER_CERT_PATH`). URLs: `unix:///path`, `tcp://host:port`
//! (TLS when a cert path is set, plain HTTP otherwise), `http://host:port`.
//!
//! Engines are connected lazily, at their first call: bollard fails at
//! construction when a unix socket is missing, and a plan that touches no
//! swarm object must not need any engine. The API version is negotiated once
//! per engine (Docker 29 refuses clients older than 1.44, Debian 12's 20.10
//! anything newer than 1.41).

pub mod swarm;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use bollard::Docker;
use tokio::sync::OnceCell;

use super::ProviderError;
use super::proxmox::client::{READ_ATTEMPTS, backoff};
use crate::manifest::Site;

/// The kinds this provider serves.
pub const KINDS: &[&str] = &[crate::model::swarm::KIND];

/// Seconds bollard waits for one call.
const TIMEOUT: u64 = 60;

/// How phoenix reaches the engines, by VM name.
#[derive(Debug, Clone, Default)]
pub struct DockerSettings {
    /// VM name -> engine URL, from `PHOENIX_DOCKER_HOST` and the manifests.
    pub hosts: BTreeMap<String, String>,
    /// `PHOENIX_DOCKER_CERT_PATH`.
    pub cert_path: Option<PathBuf>,
    /// The swarm manager's VM name, from the manifests.
    pub manager: Option<String>,
    /// The site root: secret values are read under it (`secrets/<name>`).
    pub root: PathBuf,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|s| !s.trim().is_empty())
}

impl DockerSettings {
    pub fn resolve(site: Option<&Site>) -> Result<Self, ProviderError> {
        let mut s = DockerSettings {
            cert_path: env("PHOENIX_DOCKER_CERT_PATH").map(PathBuf::from),
            ..Default::default()
        };
        let topo = site.map(crate::model::swarm::topology).unwrap_or_default();
        if let Some(site) = site {
            s.root = site.root.clone();
        }
        s.manager = topo.manager.as_ref().map(|m| m.1.clone());
        // Derived from the manifests: the engine's TLS port on the VM's address.
        for (name, ip) in topo
            .manager
            .iter()
            .map(|m| (&m.1, &m.2))
            .chain(topo.workers.iter().map(|w| (&w.1, &w.2)))
        {
            if !ip.is_empty() && ip != "dhcp" {
                s.hosts.insert(name.clone(), format!("tcp://{ip}:2376"));
            }
        }
        if let Some(v) = env("PHOENIX_DOCKER_HOST") {
            if v.contains('=') {
                for pair in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    let (name, url) = pair.split_once('=').ok_or_else(|| {
                        ProviderError::Config(format!(
                            "PHOENIX_DOCKER_HOST entry `{pair}` is not `name=URL`"
                        ))
                    })?;
                    s.hosts
                        .insert(name.trim().to_string(), url.trim().to_string());
                }
            } else if let Some(m) = &s.manager {
                s.hosts.insert(m.clone(), v);
            }
        }
        Ok(s)
    }
}

/// One engine, connected at first use.
pub struct Engine {
    pub name: String,
    url: String,
    cert_path: Option<PathBuf>,
    client: OnceCell<Docker>,
}

impl Engine {
    pub fn new(name: &str, url: &str, cert_path: Option<PathBuf>) -> Self {
        Engine {
            name: name.to_string(),
            url: url.to_string(),
            cert_path,
            client: OnceCell::new(),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The client, connected and version-negotiated on the first call.
    pub async fn client(&self) -> Result<&Docker, ProviderError> {
        self.client
            .get_or_try_init(|| async {
                let version = bollard::API_DEFAULT_VERSION;
                let url = self.url.as_str();
                let connected = if let Some(path) = url.strip_prefix("unix://") {
                    Docker::connect_with_unix(path, TIMEOUT, version)
                } else if let (Some(rest), Some(certs)) =
                    (url.strip_prefix("tcp://"), self.cert_path.as_ref())
                {
                    Docker::connect_with_ssl(
                        &format!("https://{rest}"),
                        &certs.join("key.pem"),
                        &certs.join("cert.pem"),
                        &certs.join("ca.pem"),
                        TIMEOUT,
                        version,
                    )
                } else if url.starts_with("tcp://") || url.starts_with("http://") {
                    Docker::connect_with_http(url, TIMEOUT, version)
                } else {
                    return Err(ProviderError::Config(format!(
                        "the Docker engine of `{}` has an unknown URL `{url}`\nhelp: use unix:///path, tcp://host:port or http://host:port in PHOENIX_DOCKER_HOST",
                        self.name
                    )));
                };
                let docker = connected.map_err(|e| {
                    ProviderError::Unreachable(format!(
                        "cannot connect to the Docker engine of `{}` at {url}: {e}",
                        self.name
                    ))
                })?;
                read(&self.name, "reading the API version", || {
                    docker.clone().negotiate_version()
                })
                .await
                .map_err(|e| {
                    ProviderError::Unreachable(format!(
                        "the Docker engine of `{}` at {url} does not answer: {e}",
                        self.name
                    ))
                })
            })
            .await
    }
}

/// The engines of the site, by VM name.
pub struct Engines {
    by_name: BTreeMap<String, Arc<Engine>>,
    pub manager: Option<String>,
}

impl Engines {
    pub fn new(settings: &DockerSettings) -> Self {
        Engines {
            by_name: settings
                .hosts
                .iter()
                .map(|(n, u)| {
                    (
                        n.clone(),
                        Arc::new(Engine::new(n, u, settings.cert_path.clone())),
                    )
                })
                .collect(),
            manager: settings.manager.clone(),
        }
    }

    pub fn get(&self, name: &str) -> Result<&Arc<Engine>, ProviderError> {
        self.by_name.get(name).ok_or_else(|| {
            ProviderError::Config(format!(
                "phoenix does not know how to reach the Docker engine of `{name}`\nhelp: set PHOENIX_DOCKER_HOST={name}=tcp://<host>:2376 (with PHOENIX_DOCKER_CERT_PATH) or give the VM a static network_config.ip"
            ))
        })
    }

    pub fn manager(&self) -> Result<&Arc<Engine>, ProviderError> {
        let m = self.manager.as_deref().ok_or_else(|| {
            ProviderError::Config(
                "the manifests name no swarm manager (`swarm_role: manager` or `portainer_role: primary`)".into(),
            )
        })?;
        self.get(m)
    }
}

/// Turn a bollard error into a provider error, with the engine's message and what to do.
pub fn api_error(engine: &str, what: &str, e: bollard::errors::Error) -> ProviderError {
    match e {
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message,
        } => {
            if status_code == 404 {
                ProviderError::NotFound(format!("{what} on `{engine}`: {message}"))
            } else {
                let help = if status_code >= 500 {
                    "the Docker engine failed to answer (a read is tried 4 times, a write once); \
                     check it, then run phoenix again: the state and its journal stay true"
                } else {
                    "the Docker engine refused the request; the message above is its reason"
                };
                ProviderError::Api {
                    status: status_code,
                    message: format!(
                        "{what} on `{engine}`: {message} ({status_code})\nhelp: {help}"
                    ),
                    details: BTreeMap::new(),
                }
            }
        }
        other => {
            // The causes say what happened to the connection ("Connection refused").
            let chain = crate::error::chain(&other);
            ProviderError::Unreachable(format!(
                "{what} on `{engine}`: {chain}\nhelp: check that the Docker engine of `{engine}` \
                 runs and that PHOENIX_DOCKER_HOST names it, then run phoenix again"
            ))
        }
    }
}

/// Whether a failed read may be sent again: the engine answered 5xx, or no
/// answer came (a refused or reset connection, a timeout).
fn retryable(e: &bollard::errors::Error) -> bool {
    use bollard::errors::Error as E;
    match e {
        E::DockerResponseServerError { status_code, .. } => *status_code >= 500,
        E::RequestTimeoutError
        | E::IOError { .. }
        | E::HyperResponseError { .. }
        | E::HyperLegacyError { .. } => true,
        _ => false,
    }
}

/// A read from an engine, under the Proxmox client's retry policy: up to
/// [`READ_ATTEMPTS`] attempts on a 5xx answer or a lost connection, with its
/// [`backoff`] and jitter between them. Writes never come here: one whose
/// answer was lost may have been done, and the next refresh decides.
pub async fn read<T, F, Fut>(engine: &str, what: &str, mut call: F) -> Result<T, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, bollard::errors::Error>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match call().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt < READ_ATTEMPTS && retryable(&e) => {
                tracing::debug!(engine, what, attempt, error = %e, "retrying");
                tokio::time::sleep(backoff(attempt)).await;
            }
            Err(e) => return Err(api_error(engine, what, e)),
        }
    }
}

/// The providers of the Docker kinds.
pub fn providers(
    settings: &DockerSettings,
) -> Result<Vec<Arc<dyn super::ResourceProvider>>, ProviderError> {
    Ok(vec![Arc::new(swarm::SwarmProvider::new(
        Arc::new(Engines::new(settings)),
        settings.root.clone(),
    ))])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn server_error(status_code: u16) -> bollard::errors::Error {
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message: "boom".into(),
        }
    }

    #[tokio::test]
    async fn a_read_is_retried_on_5xx_with_backoff_then_reported() {
        let calls = AtomicU32::new(0);
        let t = std::time::Instant::now();
        let r: Result<(), _> = read("mgr", "listing the nodes", || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(server_error(503)) }
        })
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), READ_ATTEMPTS);
        // 200 + 400 + 800 ms, plus up to 50% jitter.
        assert!(t.elapsed() >= std::time::Duration::from_millis(1400));
        let msg = r.unwrap_err().to_string();
        assert!(
            msg.contains("listing the nodes on `mgr`: boom (503)"),
            "{msg}"
        );
        assert!(msg.contains("help: the Docker engine failed"), "{msg}");
    }

    #[tokio::test]
    async fn a_read_that_recovers_succeeds_and_a_4xx_is_not_retried() {
        let calls = AtomicU32::new(0);
        let r = read("mgr", "reading", || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move { if n < 2 { Err(server_error(500)) } else { Ok(n) } }
        })
        .await;
        assert_eq!(r.unwrap(), 2);
        let calls = AtomicU32::new(0);
        let r: Result<(), _> = read("mgr", "reading", || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(server_error(409)) }
        })
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(matches!(r, Err(ProviderError::Api { status: 409, .. })));
        let r: Result<(), _> = read("mgr", "reading", || async { Err(server_error(404)) }).await;
        assert!(matches!(r, Err(ProviderError::NotFound(_))));
    }
}
