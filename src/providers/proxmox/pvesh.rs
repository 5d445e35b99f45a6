//! The `pvesh` transport: `pvesh get|set|create|delete PATH --output-format
//! json`, run on the Proxmox host itself or over ssh
//! (`PHOENIX_PVE_TRANSPORT=pvesh` or `ssh://root@host`). It needs no API token:
//! pvesh runs as root on the host. Same paths and parameters as HTTPS.
//!
//! Retries: only reads, and only when ssh itself failed (exit 255: the
//! command never ran); pvesh's own errors are answers, not blips.

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncReadExt;

use super::PveApi;
use crate::providers::{BoxFuture, ProviderError};

const SSH_FAILED: i32 = 255;
const READ_ATTEMPTS: u32 = 3;

pub struct PveshApi {
    /// The program and its leading arguments: `["pvesh"]`, or `["ssh", ..., "root@host"]`.
    program: Vec<String>,
    /// Over ssh, the remote command is one shell string.
    remote: bool,
    pvesh: String,
    timeout: Duration,
    requests: AtomicU64,
}

/// Quote one word for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,%+".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

impl PveshApi {
    /// `target`: `pvesh` (local) or `ssh://user@host[:port]`.
    pub fn new(
        target: &str,
        pvesh: Option<String>,
        timeout: Duration,
    ) -> Result<Self, ProviderError> {
        let pvesh = pvesh.unwrap_or_else(|| "pvesh".into());
        if target == "pvesh" || target == "local" {
            return Ok(PveshApi {
                program: vec![pvesh.clone()],
                remote: false,
                pvesh,
                timeout,
                requests: AtomicU64::new(0),
            });
        }
        let Some(rest) = target.strip_prefix("ssh://") else {
            return Err(ProviderError::Config(format!(
                "PHOENIX_PVE_TRANSPORT `{target}` is not known\nhelp: use `https` (default), `pvesh` (on the host) or `ssh://root@host`"
            )));
        };
        let (userhost, port) = match rest.rsplit_once(':') {
            Some((uh, p)) if p.chars().all(|c| c.is_ascii_digit()) => {
                (uh.to_string(), Some(p.to_string()))
            }
            _ => (rest.trim_end_matches('/').to_string(), None),
        };
        let ssh = std::env::var("PHOENIX_SSH").unwrap_or_else(|_| "ssh".into());
        let mut program = vec![ssh, "-o".into(), "BatchMode=yes".into()];
        if let Some(p) = port {
            program.extend(["-p".into(), p]);
        }
        program.push(userhost);
        Ok(PveshApi {
            program,
            remote: true,
            pvesh,
            timeout,
            requests: AtomicU64::new(0),
        })
    }

    fn argv(&self, verb: &str, path: &str, params: &[(String, String)]) -> Vec<String> {
        let mut words = vec![
            verb.to_string(),
            path.to_string(),
            "--output-format".into(),
            "json".into(),
        ];
        for (k, v) in params {
            words.push(format!("--{k}"));
            words.push(v.clone());
        }
        let mut argv = self.program.clone();
        if self.remote {
            let mut cmd = shell_quote(&self.pvesh);
            for w in &words {
                cmd.push(' ');
                cmd.push_str(&shell_quote(w));
            }
            argv.push(cmd);
        } else {
            argv.extend(words);
        }
        argv
    }

    async fn run_once(&self, argv: &[String]) -> Result<(i32, String, String), ProviderError> {
        let (prog, args) = argv
            .split_first()
            .ok_or_else(|| ProviderError::Config("empty pvesh command".into()))?;
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut child = tokio::process::Command::new(prog)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                ProviderError::Unreachable(format!(
                    "failed to run `{prog}`: {e}\nhelp: run phoenix on the Proxmox host for the pvesh transport, \
                     or set PHOENIX_PVE_TRANSPORT=ssh://root@host"
                ))
            })?;
        let mut out = child.stdout.take();
        let mut err = child.stderr.take();
        let read = async {
            let mut o = String::new();
            let mut e = String::new();
            if let Some(s) = out.as_mut() {
                let _ = s.read_to_string(&mut o).await;
            }
            if let Some(s) = err.as_mut() {
                let _ = s.read_to_string(&mut e).await;
            }
            let status = child.wait().await;
            (status, o, e)
        };
        match tokio::time::timeout(self.timeout, read).await {
            Ok((Ok(status), o, e)) => Ok((status.code().unwrap_or(-1), o, e)),
            Ok((Err(e), _, _)) => Err(ProviderError::Unreachable(format!("`{prog}` failed: {e}"))),
            Err(_) => Err(ProviderError::Unreachable(format!(
                "`{}` did not answer within {}\nhelp: raise PHOENIX_PVE_TIMEOUT",
                argv.join(" "),
                humantime::format_duration(self.timeout)
            ))),
        }
    }

    async fn call(
        &self,
        verb: &str,
        path: &str,
        params: &[(String, String)],
    ) -> Result<Value, ProviderError> {
        let argv = self.argv(verb, path, params);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (code, out, err) = self.run_once(&argv).await?;
            if code == 0 {
                let text = out.trim();
                if text.is_empty() {
                    return Ok(Value::Null);
                }
                return serde_json::from_str(text).map_err(|e| {
                    ProviderError::Other(format!(
                        "pvesh {verb} {path}: unreadable answer ({e}): {text}"
                    ))
                });
            }
            if code == SSH_FAILED && self.remote {
                if verb == "get" && attempt < READ_ATTEMPTS {
                    tokio::time::sleep(Duration::from_millis(300 * attempt as u64)).await;
                    continue;
                }
                return Err(ProviderError::Unreachable(format!(
                    "ssh to the Proxmox host failed: {}\nhelp: check PHOENIX_PVE_TRANSPORT and that `{}` works without a password",
                    err.trim(),
                    self.program.join(" ")
                )));
            }
            return Err(error_from(verb, path, &err));
        }
    }
}

/// pvesh prints an API error as `<status> <message>` (or just the message)
/// followed by `param: problem` lines.
pub fn error_from(verb: &str, path: &str, stderr: &str) -> ProviderError {
    let mut lines = stderr.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines
        .next()
        .unwrap_or("pvesh failed without a message")
        .to_string();
    let (status, message) = match first.split_once(' ') {
        Some((code, rest)) if code.len() == 3 && code.chars().all(|c| c.is_ascii_digit()) => {
            (code.parse().unwrap_or(500), rest.to_string())
        }
        _ => (500, first.clone()),
    };
    let details = lines
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    if message.contains("does not exist") || status == 404 {
        return ProviderError::NotFound(format!("pvesh {verb} {path}: {message}"));
    }
    if status == 401 {
        return ProviderError::Auth(format!("pvesh {verb} {path}: {message}"));
    }
    ProviderError::Api {
        status,
        message: format!("pvesh {verb} {path}: {message} ({status})"),
        details,
    }
}

impl PveApi for PveshApi {
    fn get<'a>(
        &'a self,
        path: &'a str,
        params: &'a [(String, String)],
    ) -> BoxFuture<'a, Result<Value, ProviderError>> {
        Box::pin(self.call("get", path, params))
    }
    fn post<'a>(
        &'a self,
        path: &'a str,
        params: &'a [(String, String)],
    ) -> BoxFuture<'a, Result<Value, ProviderError>> {
        Box::pin(self.call("create", path, params))
    }
    fn put<'a>(
        &'a self,
        path: &'a str,
        params: &'a [(String, String)],
    ) -> BoxFuture<'a, Result<Value, ProviderError>> {
        Box::pin(self.call("set", path, params))
    }
    fn delete<'a>(
        &'a self,
        path: &'a str,
        params: &'a [(String, String)],
    ) -> BoxFuture<'a, Result<Value, ProviderError>> {
        Box::pin(self.call("delete", path, params))
    }
    fn requests_sent(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(
            shell_quote("name=eth0,bridge=vmbr0"),
            "name=eth0,bridge=vmbr0"
        );
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
    }

    #[test]
    fn argv_local_and_ssh() {
        let p = [("memory".to_string(), "512".to_string())];
        let local = PveshApi::new("pvesh", None, Duration::from_secs(1)).unwrap();
        assert_eq!(
            local.argv("set", "/nodes/pve1/lxc/101/config", &p),
            [
                "pvesh",
                "set",
                "/nodes/pve1/lxc/101/config",
                "--output-format",
                "json",
                "--memory",
                "512"
            ]
        );
        let ssh = PveshApi::new("ssh://root@10.0.0.13:2222", None, Duration::from_secs(1)).unwrap();
        let argv = ssh.argv("get", "/nodes", &[("x".into(), "a b".into())]);
        assert_eq!(
            argv[1..6],
            ["-o", "BatchMode=yes", "-p", "2222", "root@10.0.0.13"]
        );
        assert_eq!(argv[6], "pvesh get /nodes --output-format json --x 'a b'");
        assert!(PveshApi::new("ftp://x", None, Duration::from_secs(1)).is_err());
    }

    #[test]
    fn errors() {
        let e = error_from(
            "get",
            "/nodes/pve1/lxc/9/config",
            "500 Configuration file 'nodes/pve1/lxc/9.conf' does not exist\n",
        );
        assert!(matches!(e, ProviderError::NotFound(_)));
        let e = error_from(
            "create",
            "/nodes/pve1/lxc",
            "400 Parameter verification failed.\nmemory: value must be at least 16\n",
        );
        match e {
            ProviderError::Api {
                status, details, ..
            } => {
                assert_eq!(status, 400);
                assert_eq!(details["memory"], "value must be at least 16");
            }
            other => panic!("{other:?}"),
        }
    }
}
