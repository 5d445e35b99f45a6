//! The HTTPS transport to `/api2/json`: authentication (an API token, or a
//! ticket and CSRF token renewed before they expire), TLS verified against
//! the given CA, a timeout on every request, and the retry policy.
//!
//! Retry policy: reads (GET) are retried on transport errors, timeouts and
//! 5xx answers other than "does not exist", up to 4 attempts with exponential
//! backoff and jitter. Writes are never repeated once sent: a write whose
//! connection failed before sending is retried; any other failed write is
//! reported, and the executor re-reads before deciding anything.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::sync::Mutex;

use super::{PveApi, PveAuth, PveSettings};
use crate::providers::{BoxFuture, ProviderError};

/// Attempts of a read, the first included (the Docker and Portainer providers follow it too).
pub(crate) const READ_ATTEMPTS: u32 = 4;
/// PVE tickets live two hours; renew well before.
const TICKET_RENEW_AFTER: Duration = Duration::from_secs(90 * 60);

struct Ticket {
    cookie: String,
    csrf: String,
    issued: Instant,
}

pub struct HttpsApi {
    http: reqwest::Client,
    base: String,
    auth: PveAuth,
    ticket: Mutex<Option<Ticket>>,
    requests: std::sync::atomic::AtomicU64,
}

impl HttpsApi {
    pub fn new(settings: &PveSettings) -> Result<Self, ProviderError> {
        let url = settings.url.clone().ok_or_else(|| {
            ProviderError::Config(
                "no Proxmox API address\nhelp: set PHOENIX_PVE_URL (e.g. https://10.0.0.13:8006) \
                 or `proxmox.url` in etc/phoenix_hypervisor_config.json"
                    .into(),
            )
        })?;
        if !url.starts_with("https://") {
            return Err(ProviderError::Config(format!(
                "PHOENIX_PVE_URL must be an https:// address, got `{url}`\nhelp: phoenix always verifies TLS; \
                 give the server's CA with PHOENIX_PVE_CA_FILE"
            )));
        }
        let auth = settings.auth.clone().ok_or_else(|| {
            ProviderError::Config(
                "no Proxmox credentials\nhelp: set PHOENIX_PVE_TOKEN (user@realm!tokenid=secret) \
                 or PHOENIX_PVE_USER and PHOENIX_PVE_PASSWORD"
                    .into(),
            )
        })?;
        let mut builder = reqwest::Client::builder()
            .timeout(settings.request_timeout)
            .connect_timeout(Duration::from_secs(10))
            .use_rustls_tls();
        if let Some(ca) = &settings.ca_file {
            let pem = std::fs::read(ca).map_err(|e| {
                ProviderError::Config(format!(
                    "failed to read the CA file {} (PHOENIX_PVE_CA_FILE): {e}",
                    ca.display()
                ))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                ProviderError::Config(format!(
                    "the CA file {} holds no usable PEM certificate: {e}",
                    ca.display()
                ))
            })?;
            if certs.is_empty() {
                return Err(ProviderError::Config(format!(
                    "the CA file {} holds no certificate",
                    ca.display()
                )));
            }
            builder = builder.tls_certs_only(certs);
        }
        let http = builder.build().map_err(|e| {
            ProviderError::Config(format!("failed to set up the HTTPS client: {e}"))
        })?;
        Ok(HttpsApi {
            http,
            base: format!("{}/api2/json", url.trim_end_matches('/')),
            auth,
            ticket: Mutex::new(None),
            requests: Default::default(),
        })
    }

    async fn login(&self, user: &str, password: &str) -> Result<Ticket, ProviderError> {
        let resp = self
            .http
            .post(format!("{}/access/ticket", self.base))
            .form(&[("username", user), ("password", password)])
            .send()
            .await
            .map_err(|e| transport_error(&self.base, &e))?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(ProviderError::Auth(format!(
                "Proxmox refused the login of {user} ({status})\nhelp: check PHOENIX_PVE_USER and PHOENIX_PVE_PASSWORD"
            )));
        }
        let data = &body["data"];
        match (
            data["ticket"].as_str(),
            data["CSRFPreventionToken"].as_str(),
        ) {
            (Some(t), Some(c)) => Ok(Ticket {
                cookie: format!("PVEAuthCookie={t}"),
                csrf: c.to_string(),
                issued: Instant::now(),
            }),
            _ => Err(ProviderError::Auth(
                "the login answer holds no ticket (is this a Proxmox VE API?)".into(),
            )),
        }
    }

    /// Headers for one request; renews the ticket when it is old or `force`.
    async fn auth_headers(
        &self,
        force: bool,
    ) -> Result<Vec<(&'static str, String)>, ProviderError> {
        match &self.auth {
            PveAuth::Token(t) => Ok(vec![("Authorization", format!("PVEAPIToken={t}"))]),
            PveAuth::Password { user, password } => {
                let mut slot = self.ticket.lock().await;
                let stale = slot
                    .as_ref()
                    .is_none_or(|t| t.issued.elapsed() > TICKET_RENEW_AFTER);
                if force || stale {
                    *slot = Some(self.login(user, password).await?);
                }
                let t = slot
                    .as_ref()
                    .ok_or_else(|| ProviderError::Auth("no ticket".into()))?;
                Ok(vec![
                    ("Cookie", t.cookie.clone()),
                    ("CSRFPreventionToken", t.csrf.clone()),
                ])
            }
        }
    }

    async fn send_once(
        &self,
        method: &Method,
        path: &str,
        params: &[(String, String)],
        force_login: bool,
    ) -> Result<Value, Attempt> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.http.request(method.clone(), &url);
        req = if *method == Method::GET || *method == Method::DELETE {
            req.query(params)
        } else {
            req.form(params)
        };
        for (k, v) in self
            .auth_headers(force_login)
            .await
            .map_err(Attempt::Final)?
        {
            req = req.header(k, v);
        }
        self.requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                let err = transport_error(&self.base, &e);
                return Err(if e.is_connect() {
                    Attempt::NotSent(err)
                } else {
                    Attempt::Transport(err)
                });
            }
        };
        let status = resp.status();
        let reason = status.canonical_reason().unwrap_or("").to_string();
        let body: Value = match resp.json().await {
            Ok(v) => v,
            Err(e) if status.is_success() => {
                return Err(Attempt::Transport(ProviderError::Unreachable(format!(
                    "{method} {path}: unreadable answer: {e}"
                ))));
            }
            Err(_) => Value::Null,
        };
        if status.is_success() {
            return Ok(body.get("data").cloned().unwrap_or(Value::Null));
        }
        let message = body
            .get("message")
            .and_then(Value::as_str)
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or(reason);
        let details: BTreeMap<String, String> = body
            .get("errors")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            v.as_str()
                                .map_or_else(|| v.to_string(), |s| s.trim().to_string()),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        if status == StatusCode::UNAUTHORIZED {
            return Err(Attempt::Unauthorized(ProviderError::Auth(format!(
                "Proxmox refused the credentials: {message}\nhelp: check PHOENIX_PVE_TOKEN \
                 (user@realm!tokenid=secret) or PHOENIX_PVE_USER/PHOENIX_PVE_PASSWORD"
            ))));
        }
        if status == StatusCode::NOT_FOUND || message.contains("does not exist") {
            return Err(Attempt::Final(ProviderError::NotFound(format!(
                "{method} {path}: {message}"
            ))));
        }
        let err = ProviderError::Api {
            status: status.as_u16(),
            message: format!("{method} {path}: {message} ({})", status.as_u16()),
            details,
        };
        if status.is_server_error() {
            Err(Attempt::Server(err))
        } else {
            Err(Attempt::Final(err))
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        params: &[(String, String)],
    ) -> Result<Value, ProviderError> {
        let is_read = method == Method::GET;
        let mut attempt = 0;
        let mut relogged = false;
        loop {
            attempt += 1;
            let result = self.send_once(&method, path, params, false).await;
            let err = match result {
                Ok(v) => return Ok(v),
                Err(Attempt::Unauthorized(e)) => {
                    // An expired ticket: log in again once and repeat. Tokens do not expire this way.
                    if matches!(self.auth, PveAuth::Password { .. }) && !relogged {
                        relogged = true;
                        self.auth_headers(true).await?;
                        attempt -= 1;
                        continue;
                    }
                    return Err(e);
                }
                Err(Attempt::Final(e)) => return Err(e),
                Err(Attempt::NotSent(e)) => e,
                Err(Attempt::Transport(e)) | Err(Attempt::Server(e)) if is_read => e,
                Err(Attempt::Transport(e)) | Err(Attempt::Server(e)) => return Err(e),
            };
            if attempt >= READ_ATTEMPTS {
                return Err(err);
            }
            tracing::debug!(%method, path, attempt, error = %err, "retrying");
            tokio::time::sleep(backoff(attempt)).await;
        }
    }
}

enum Attempt {
    /// Never reached the server: safe to retry any method.
    NotSent(ProviderError),
    /// Sent, answer lost or timed out.
    Transport(ProviderError),
    /// 5xx from the server.
    Server(ProviderError),
    Unauthorized(ProviderError),
    Final(ProviderError),
}

/// 200 ms, 400 ms, 800 ms ... plus up to 50% jitter, so retries of parallel
/// readers do not arrive together. The Docker and Portainer providers' reads use it too.
pub(crate) fn backoff(attempt: u32) -> Duration {
    // `attempt` is the attempt that just failed, from 1: wait 200 ms after the first.
    let base = 200u64 << attempt.saturating_sub(1).min(5);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    Duration::from_millis(base + nanos % (base / 2 + 1))
}

fn transport_error(base: &str, e: &reqwest::Error) -> ProviderError {
    let chain = crate::error::chain(e);
    let help = if chain.contains("certificate") || chain.contains("UnknownIssuer") {
        "help: the server's certificate is not trusted; point PHOENIX_PVE_CA_FILE at the CA that signed it"
    } else if e.is_timeout() {
        "help: the API did not answer in time; check the host, or raise PHOENIX_PVE_TIMEOUT"
    } else {
        "help: check PHOENIX_PVE_URL and that the host is reachable"
    };
    ProviderError::Unreachable(format!(
        "cannot reach the Proxmox API at {base}: {chain}\n{help}"
    ))
}

impl PveApi for HttpsApi {
    fn get<'a>(
        &'a self,
        path: &'a str,
        params: &'a [(String, String)],
    ) -> BoxFuture<'a, Result<Value, ProviderError>> {
        Box::pin(self.call(Method::GET, path, params))
    }
    fn post<'a>(
        &'a self,
        path: &'a str,
        params: &'a [(String, String)],
    ) -> BoxFuture<'a, Result<Value, ProviderError>> {
        Box::pin(self.call(Method::POST, path, params))
    }
    fn put<'a>(
        &'a self,
        path: &'a str,
        params: &'a [(String, String)],
    ) -> BoxFuture<'a, Result<Value, ProviderError>> {
        Box::pin(self.call(Method::PUT, path, params))
    }
    fn delete<'a>(
        &'a self,
        path: &'a str,
        params: &'a [(String, String)],
    ) -> BoxFuture<'a, Result<Value, ProviderError>> {
        Box::pin(self.call(Method::DELETE, path, params))
    }
    fn requests_sent(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }
}
