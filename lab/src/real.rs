//! Nodes backed by a real Docker engine (`"engine"` in the world file,
//! `--engine HOSTNAME=URL`). The lab simulates nothing for them: Portainer's
//! Docker proxy forwards to the engine, and a stack on their environment is
//! deployed as Portainer itself does it, by running `docker stack deploy`
//! (and `docker stack rm`) against the engine, so its services really exist.
//!
//! The docker CLI is `PHOENIX_LAB_DOCKER`, else `docker` on the `PATH`. It
//! runs with the lab's environment plus the stack's variables (what
//! Portainer's `runCommandAndCaptureStdErr` gives it, so the CLI substitutes
//! them into the compose file), `DOCKER_HOST` set to the engine, and never
//! through a shell.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::docker::Reply;

/// How long one docker CLI run or one proxied call may take.
const TIMEOUT: Duration = Duration::from_secs(120);

/// Why a real engine URL cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("the engine URL `{0}` is not unix:///path, tcp://host:port or http://host:port")]
pub struct BadEngineUrl(pub String);

/// Why work on a real engine failed.
#[derive(Debug, thiserror::Error)]
pub enum RealError {
    #[error("cannot run {bin}: {source}")]
    Spawn { bin: String, source: std::io::Error },
    #[error("cannot write the compose file to {bin}: {source}")]
    Stdin { bin: String, source: std::io::Error },
    #[error("{bin} {args} took over {secs} s")]
    Timeout {
        bin: String,
        args: String,
        secs: u64,
    },
    /// The CLI failed: its stderr, which Portainer passes on as the error's details.
    #[error("{0}")]
    Cli(String),
    #[error(transparent)]
    Http(#[from] reqwest::Error),
    #[error("GET /swarm answered {status}: {body}")]
    Swarm { status: u16, body: String },
}

/// A real engine's URL, checked: `unix:///path`, `tcp://host:port` or `http://host:port`.
pub fn check_url(url: &str) -> Result<(), BadEngineUrl> {
    let ok = url
        .strip_prefix("unix://")
        .is_some_and(|p| p.starts_with('/'))
        || ["tcp://", "http://"]
            .iter()
            .any(|s| url.strip_prefix(s).is_some_and(|r| !r.is_empty()));
    if ok {
        Ok(())
    } else {
        Err(BadEngineUrl(url.to_string()))
    }
}

/// `DOCKER_HOST` for the CLI: it takes `unix://` and `tcp://`, not `http://`.
fn docker_host(url: &str) -> String {
    match url.strip_prefix("http://") {
        Some(rest) => format!("tcp://{rest}"),
        None => url.to_string(),
    }
}

fn client(url: &str) -> Result<(reqwest::Client, String), RealError> {
    let b = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .connect_timeout(Duration::from_secs(10));
    if let Some(path) = url.strip_prefix("unix://") {
        // The host is never resolved over a unix socket; the Engine ignores it.
        return Ok((b.unix_socket(path).build()?, "http://docker".to_string()));
    }
    let base = match url.strip_prefix("tcp://") {
        Some(rest) => format!("http://{rest}"),
        None => url.trim_end_matches('/').to_string(),
    };
    Ok((b.build()?, base))
}

/// Forward one Engine API call, as Portainer's Docker proxy does.
pub async fn proxy(
    engine: &str,
    method: &str,
    path: &str,
    query: &BTreeMap<String, String>,
    body: Vec<u8>,
) -> Reply {
    let unreachable = |e: &dyn std::fmt::Display| {
        crate::portainer::error(
            502,
            "Unable to proxy the request via the Docker socket",
            &format!("{engine}: {e}"),
        )
    };
    let (c, base) = match client(engine) {
        Ok(x) => x,
        Err(e) => return unreachable(&e),
    };
    let method = match reqwest::Method::from_bytes(method.as_bytes()) {
        Ok(m) => m,
        Err(e) => return unreachable(&e),
    };
    let mut rq = c.request(method, format!("{base}{path}")).query(query);
    if !body.is_empty() {
        rq = rq
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
    }
    let resp = match rq.send().await {
        Ok(r) => r,
        Err(e) => return unreachable(&e),
    };
    let status = resp.status().as_u16();
    match resp.bytes().await {
        Ok(b) if b.is_empty() => Reply::empty(status),
        Ok(b) => match serde_json::from_slice::<Value>(&b) {
            Ok(v) => Reply::json(status, v),
            Err(_) => Reply {
                status,
                body: None,
                text: Some(String::from_utf8_lossy(&b).into_owned()),
            },
        },
        Err(e) => unreachable(&e),
    }
}

/// The id of the swarm the engine is a manager of, if any.
pub async fn swarm_id(engine: &str) -> Result<Option<String>, RealError> {
    let r = proxy(engine, "GET", "/swarm", &BTreeMap::new(), Vec::new()).await;
    match (r.status, r.body) {
        (200, Some(v)) => Ok(v["ID"].as_str().map(str::to_string)),
        // 503: not a swarm manager (or in no swarm).
        (503, _) => Ok(None),
        (status, b) => Err(RealError::Swarm {
            status,
            body: b.map(|v| v.to_string()).or(r.text).unwrap_or_default(),
        }),
    }
}

/// Run the docker CLI against the engine; its stderr is the error, as Portainer reports it.
async fn docker(
    engine: &str,
    args: &[&str],
    env: &BTreeMap<String, String>,
    stdin: Option<&str>,
) -> Result<(), RealError> {
    let bin = std::env::var("PHOENIX_LAB_DOCKER").unwrap_or_else(|_| "docker".to_string());
    let mut cmd = tokio::process::Command::new(&bin);
    cmd.args(args)
        // Another context or TLS setting of the lab's own environment must not redirect the CLI.
        .env_remove("DOCKER_CONTEXT")
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_CERT_PATH")
        .envs(env)
        .env("DOCKER_HOST", docker_host(engine))
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|source| RealError::Spawn {
        bin: bin.clone(),
        source,
    })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .await
            .map_err(|source| RealError::Stdin {
                bin: bin.clone(),
                source,
            })?;
        // Closed here: the CLI reads the file to its end.
        drop(pipe);
    }
    let out = tokio::time::timeout(TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| RealError::Timeout {
            bin: bin.clone(),
            args: args.join(" "),
            secs: TIMEOUT.as_secs(),
        })?
        .map_err(|source| RealError::Spawn {
            bin: bin.clone(),
            source,
        })?;
    tracing::debug!(
        ?args,
        status = ?out.status,
        stdout = %String::from_utf8_lossy(&out.stdout),
        stderr = %String::from_utf8_lossy(&out.stderr),
        "docker CLI"
    );
    if out.status.success() {
        Ok(())
    } else {
        Err(RealError::Cli(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

/// `docker stack deploy --compose-file - NAME`, the file on stdin and the
/// stack's variables in the environment. `--resolve-image never`: the lab
/// never asks a registry (an image the engine lacks fails its tasks, not the
/// deployment, as with a registry that is down).
pub async fn stack_deploy(
    engine: &str,
    name: &str,
    file: &str,
    env: &BTreeMap<String, String>,
    prune: bool,
) -> Result<(), RealError> {
    let mut args = vec!["stack", "deploy", "--with-registry-auth"];
    if prune {
        args.push("--prune");
    }
    args.extend(["--resolve-image", "never", "--compose-file", "-", name]);
    docker(engine, &args, env, Some(file)).await
}

/// `docker stack rm NAME`.
pub async fn stack_rm(engine: &str, name: &str) -> Result<(), RealError> {
    docker(engine, &["stack", "rm", name], &BTreeMap::new(), None).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_urls_are_checked_and_mapped_for_the_cli() {
        assert!(check_url("unix:///run/docker.sock").is_ok());
        assert!(check_url("tcp://127.0.0.1:2375").is_ok());
        assert!(check_url("http://127.0.0.1:2375").is_ok());
        assert!(check_url("unix://relative").is_err());
        assert!(check_url("https://x:2376").is_err());
        assert!(check_url("/run/docker.sock").is_err());
        assert_eq!(docker_host("http://127.0.0.1:2375"), "tcp://127.0.0.1:2375");
        assert_eq!(docker_host("unix:///d.sock"), "unix:///d.sock");
    }
}
