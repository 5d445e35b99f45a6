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
                docker.negotiate_version().await.map_err(|e| {
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

/// Turn a bollard error into a provider error, with the engine's message.
pub fn api_error(engine: &str, what: &str, e: bollard::errors::Error) -> ProviderError {
    match e {
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message,
        } => {
            if status_code == 404 {
                ProviderError::NotFound(format!("{what} on `{engine}`: {message}"))
            } else {
                ProviderError::Api {
                    status: status_code,
                    message: format!("{what} on `{engine}`: {message}"),
                    details: BTreeMap::new(),
                }
            }
        }
        other => ProviderError::Unreachable(format!("{what} on `{engine}`: {other}")),
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
