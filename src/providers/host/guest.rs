//! Guests as [`Machine`]s, reached through the host.
//!
//! An LXC container: `pct exec <ctid> -- <argv>` runs a command in it (the exit
//! status is the command's), and `pct push <ctid> <file> <dest> --perms 0600`
//! copies a file in from a host temp file (made with umask 077 under the host's
//! `/tmp`, removed afterwards). `PHOENIX_PCT` names the program; the test world's
//! is `lab/host/pct`.
//!
//! A VM would implement the same trait with the QEMU guest agent
//! (`POST .../agent/exec` + `exec-status`, exit codes checked;
//! `.../agent/file-write`); nothing above this module would change.

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
