//! Guests as [`Machine`]s, reached through the host.
//!
//! An LXC container: `pct exec <ctid> -- <argv>` runs a command in it (the exit
//! status is the command's), and `pct push <ctid> <file> <dest> --perms 0600`
//! copies a file in from a host temp file (made with umask 077 under the host's
//! `/tmp`, removed afterwards). `PHOENIX_PCT` names the program; the test world's
//! is `lab/host/pct`.
//!
//! A VM ([`VmGuest`]) goes through the QEMU guest agent of the Proxmox API:
//! `POST .../agent/exec` (the argv as repeated `command`, stdin as
//! `input-data`), then `GET .../agent/exec-status` until it exited, with its
//! exit code and output; `POST .../agent/file-write` for a file (then `chmod
//! 600`, as `pct push --perms` does). Nothing above this module changes.

use std::sync::Arc;

use super::install::sh;
use super::{Host, Machine, Output};
use crate::providers::{BoxFuture, ProviderError};

pub struct LxcGuest {
    host: Arc<Host>,
    pct: String,
    ctid: u32,
}

impl LxcGuest {
    pub fn new(host: Arc<Host>, pct: String, ctid: u32) -> Self {
        LxcGuest { host, pct, ctid }
    }

    pub fn id(&self) -> u32 {
        self.ctid
    }

    async fn push_impl(&self, bytes: &[u8], dest: &str) -> Result<(), ProviderError> {
        let tmp_dir = self.host.path("/tmp");
        let made = self
            .host
            .exec(
                &sh(
                    r#"umask 077; mkdir -p "$1" && t=$(mktemp "$1/phoenix-push.XXXXXX") && cat > "$t" && printf '%s' "$t""#,
                    &[tmp_dir],
                ),
                Some(bytes),
            )
            .await?;
        if !made.success() {
            return Err(ProviderError::Other(format!(
                "failed to stage a file on the host for lxc.{}: {}",
                self.ctid,
                made.tail().join("; ")
            )));
        }
        let tmp = String::from_utf8_lossy(&made.stdout).trim().to_string();
        let argv = vec![
            self.pct.clone(),
            "push".into(),
            self.ctid.to_string(),
            tmp.clone(),
            dest.to_string(),
            "--perms".into(),
            "0600".into(),
        ];
        let pushed = self.host.exec(&argv, None).await;
        let _ = self.host.exec(&["rm".into(), "-f".into(), tmp], None).await;
        let pushed = pushed?;
        if pushed.success() {
            Ok(())
        } else {
            Err(ProviderError::Other(format!(
                "`pct push {} ... {dest}` failed: {}",
                self.ctid,
                pushed.tail().join("; ")
            )))
        }
    }
}

impl Machine for LxcGuest {
    fn label(&self) -> String {
        format!("lxc.{}", self.ctid)
    }

    fn exec<'a>(
        &'a self,
        argv: &'a [String],
        stdin: Option<&'a [u8]>,
    ) -> BoxFuture<'a, Result<Output, ProviderError>> {
        Box::pin(async move {
            let mut full = vec![
                self.pct.clone(),
                "exec".into(),
                self.ctid.to_string(),
                "--".into(),
            ];
            full.extend(argv.iter().cloned());
            self.host.exec(&full, stdin).await
        })
    }

    fn push<'a>(
        &'a self,
        bytes: &'a [u8],
        dest: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(self.push_impl(bytes, dest))
    }
}

/// A QEMU VM, reached through its guest agent on the Proxmox API.
pub struct VmGuest {
    pve: Arc<crate::providers::proxmox::Pve>,
    node: String,
    vmid: u32,
    timeout: std::time::Duration,
}

impl VmGuest {
    pub fn new(
        pve: Arc<crate::providers::proxmox::Pve>,
        node: String,
        vmid: u32,
        timeout: std::time::Duration,
    ) -> Self {
        VmGuest {
            pve,
            node,
            vmid,
            timeout,
        }
    }

    fn base(&self) -> String {
        format!("/nodes/{}/qemu/{}/agent", self.node, self.vmid)
    }

    async fn exec_impl(
        &self,
        argv: &[String],
        stdin: Option<&[u8]>,
    ) -> Result<Output, ProviderError> {
        let mut params: Vec<(String, String)> = argv
            .iter()
            .map(|a| ("command".to_string(), a.clone()))
            .collect();
        if let Some(input) = stdin {
            let text = String::from_utf8(input.to_vec()).map_err(|_| {
                ProviderError::Other(format!(
                    "vm.{}: the guest agent takes text on stdin only",
                    self.vmid
                ))
            })?;
            params.push(("input-data".into(), text));
        }
        let started = self
            .pve
            .api
            .post(&format!("{}/exec", self.base()), &params)
            .await?;
        let pid = started["pid"].as_u64().ok_or_else(|| {
            ProviderError::Other(format!("vm.{}: the guest agent returned no pid", self.vmid))
        })?;
        let deadline = std::time::Instant::now() + self.timeout;
        let mut wait = std::time::Duration::from_millis(100);
        loop {
            let st = self
                .pve
                .api
                .get(
                    &format!("{}/exec-status", self.base()),
                    &[("pid".into(), pid.to_string())],
                )
                .await?;
            if st["exited"].as_bool() == Some(true) || st["exited"].as_u64() == Some(1) {
                let text = |k: &str| st[k].as_str().unwrap_or_default().to_string();
                return Ok(Output {
                    code: st["exitcode"].as_i64().map_or(-1, |c| c as i32),
                    stdout: text("out-data").into_bytes(),
                    stderr: text("err-data"),
                });
            }
            if std::time::Instant::now() >= deadline {
                return Err(ProviderError::Unreachable(format!(
                    "`{}` in vm.{} did not finish within {}\nhelp: raise PHOENIX_FEATURE_TIMEOUT",
                    argv.join(" "),
                    self.vmid,
                    humantime::format_duration(self.timeout)
                )));
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(std::time::Duration::from_secs(2));
        }
    }

    async fn push_impl(&self, bytes: &[u8], dest: &str) -> Result<(), ProviderError> {
        let text = String::from_utf8(bytes.to_vec()).map_err(|_| {
            ProviderError::Other(format!(
                "vm.{}: the guest agent writes text files only",
                self.vmid
            ))
        })?;
        self.pve
            .api
            .post(
                &format!("{}/file-write", self.base()),
                &[("file".into(), dest.to_string()), ("content".into(), text)],
            )
            .await?;
        let out = self
            .exec_impl(&sh(r#"chmod 600 "$1""#, &[dest.to_string()]), None)
            .await?;
        if out.success() {
            Ok(())
        } else {
            Err(ProviderError::Other(format!(
                "chmod 600 {dest} in vm.{} failed: {}",
                self.vmid,
                out.tail().join("; ")
            )))
        }
    }
}

impl Machine for VmGuest {
    fn label(&self) -> String {
        format!("vm.{}", self.vmid)
    }

    fn exec<'a>(
        &'a self,
        argv: &'a [String],
        stdin: Option<&'a [u8]>,
    ) -> BoxFuture<'a, Result<Output, ProviderError>> {
        Box::pin(self.exec_impl(argv, stdin))
    }

    fn push<'a>(
        &'a self,
        bytes: &'a [u8],
        dest: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(self.push_impl(bytes, dest))
    }
}
