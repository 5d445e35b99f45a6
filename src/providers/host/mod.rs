//! The host system: files and commands on the Proxmox host itself
//! (`dns.records`) and inside its guests (`file.*`).
//!
//! Two small traits carry everything:
//!
//! - [`Machine`]: somewhere phoenix runs a command and writes a file. The
//!   [`Host`] is one (run locally, or over ssh); a guest is one too, reached
//!   through the host: an LXC container with `pct exec` and `pct push`
//!   ([`guest::LxcGuest`]). A VM would be one through the QEMU guest agent
//!   (`agent/exec`, `agent/file-write`); the file logic does not change.
//! - [`ResourceProvider`], as for every kind: [`dns::DnsProvider`] and
//!   [`file::FileProvider`], built on the read/install/remove steps of
//!   [`install`], which work on any machine.
//!
//! How the host is reached (see [`HostSettings::resolve`]): `PHOENIX_HOST`
//! (`local` or `ssh://root@host[:port]`), else the Proxmox transport's (`pvesh`
//! is local, `ssh://` the same host), else local when `PHOENIX_HOST_ROOT` is
//! set (a test or lab host); otherwise the host kinds stop the plan and say to
//! set `PHOENIX_HOST`: phoenix never writes the `/etc` of the machine it runs on
//! by accident.

pub mod cert;
pub mod dns;
pub mod feature;
pub mod file;
pub mod guest;
pub mod install;
pub mod lxc_conf;

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::proxmox::pvesh::shell_quote;
use super::proxmox::{Pve, PveSettings};
use super::{BoxFuture, ProviderError, ResourceProvider};
use crate::manifest::Site;

/// The kinds this provider serves.
pub const KINDS: &[&str] = &[
    crate::model::dns::KIND,
    crate::model::file::KIND,
    crate::model::lxc_conf::KIND,
    crate::model::cert::KIND,
    crate::model::feature::FEATURE,
    crate::model::feature::APP,
];

/// ssh's own failure (it could not connect): the command never ran.
const SSH_FAILED: i32 = 255;

/// How phoenix reaches the host, and what it runs there.
#[derive(Debug, Clone)]
pub struct HostSettings {
    /// `local` or `ssh://user@host[:port]`; `None`: not configured (the error says how).
    pub transport: Option<String>,
    /// `PHOENIX_HOST_ROOT`: every host path phoenix writes is under it (tests, labs).
    pub root: Option<String>,
    /// `PHOENIX_SSH`: the ssh program.
    pub ssh: String,
    /// `PHOENIX_PCT`: the pct program on the host.
    pub pct: String,
    /// `PHOENIX_DNSMASQ_RELOAD`: a shell command run on the host after the records change.
    pub dnsmasq_reload: String,
    /// `PHOENIX_HOST_TIMEOUT`: how long one command may run.
    pub timeout: Duration,
    /// Which container each `file.<name>` lives in, from the manifests.
    pub files: Vec<(&'static str, u32)>,
    pub acme: cert::AcmeSettings,
    /// How long a provisioning script may run (`PHOENIX_FEATURE_TIMEOUT`).
    pub feature_timeout: Duration,
}

/// The default reload: dnsmasq reads `host-record` lines only when it starts.
pub const DNSMASQ_RELOAD: &str = "systemctl restart dnsmasq";

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|s| !s.trim().is_empty())
}

impl Default for HostSettings {
    fn default() -> Self {
        HostSettings {
            transport: None,
            root: None,
            ssh: "ssh".into(),
            pct: "pct".into(),
            dnsmasq_reload: DNSMASQ_RELOAD.into(),
            timeout: Duration::from_secs(120),
            files: Vec::new(),
            acme: cert::AcmeSettings::default(),
            feature_timeout: Duration::from_secs(30 * 60),
        }
    }
}

impl HostSettings {
    pub fn resolve(site: Option<&Site>) -> Result<Self, ProviderError> {
        let root = env("PHOENIX_HOST_ROOT").map(|r| r.trim_end_matches('/').to_string());
        let transport =
            env("PHOENIX_HOST").or_else(|| match env("PHOENIX_PVE_TRANSPORT").as_deref() {
                Some("pvesh") | Some("local") => Some("local".to_string()),
                Some(t) if t.starts_with("ssh://") => Some(t.to_string()),
                _ => root.as_ref().map(|_| "local".to_string()),
            });
        if let Some(t) = &transport
            && t != "local"
            && !t.starts_with("ssh://")
        {
            return Err(ProviderError::Config(format!(
                "PHOENIX_HOST `{t}` is not known\nhelp: use `local` (phoenix runs on the Proxmox host) or `ssh://root@host[:port]`"
            )));
        }
        let mut s = HostSettings {
            transport,
            root,
            ..Default::default()
        };
        if let Some(v) = env("PHOENIX_SSH") {
            s.ssh = v;
        }
        if let Some(v) = env("PHOENIX_PCT") {
            s.pct = v;
        }
        if let Some(v) = env("PHOENIX_DNSMASQ_RELOAD") {
            s.dnsmasq_reload = v;
        }
        if let Some(t) = env("PHOENIX_HOST_TIMEOUT") {
            s.timeout = humantime::parse_duration(&t)
                .map_err(|e| ProviderError::Config(format!("PHOENIX_HOST_TIMEOUT `{t}`: {e}")))?;
        }
        if let Some(t) = env("PHOENIX_FEATURE_TIMEOUT") {
            s.feature_timeout = humantime::parse_duration(&t).map_err(|e| {
                ProviderError::Config(format!("PHOENIX_FEATURE_TIMEOUT `{t}`: {e}"))
            })?;
        }
        s.acme.directory = env("PHOENIX_ACME_DIRECTORY");
        s.acme.ca_file = env("PHOENIX_ACME_CA_FILE").map(std::path::PathBuf::from);
        if let Some(t) = env("PHOENIX_CERT_RENEW_BEFORE") {
            s.acme.renew_before = Some(humantime::parse_duration(&t).map_err(|e| {
                ProviderError::Config(format!(
                    "PHOENIX_CERT_RENEW_BEFORE `{t}`: {e}\nhelp: a duration such as `30d` or `12h`"
                ))
            })?);
        }
        if let Some(f) = env("PHOENIX_ACME_ACCOUNT_FILE") {
            s.acme.account_file = f.into();
        }
        if let Some(site) = site {
            s.files = crate::model::file::locations(site);
            s.acme.certs = crate::model::cert::locations(site);
            if s.acme.account_file.as_os_str().is_empty() {
                s.acme.account_file = site.root.join("state/acme-account.json");
            }
        }
        Ok(s)
    }
}

/// A finished command.
#[derive(Debug, Clone)]
pub struct Output {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == 0
    }

    /// The last lines of stderr (or stdout), for an error message.
    pub fn tail(&self) -> Vec<String> {
        let text = if self.stderr.trim().is_empty() {
            String::from_utf8_lossy(&self.stdout).into_owned()
        } else {
            self.stderr.clone()
        };
        let lines: Vec<String> = text
            .lines()
            .map(str::trim_end)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        lines[lines.len().saturating_sub(12)..].to_vec()
    }
}

/// Somewhere phoenix runs commands and writes files: the host, or a guest through it.
pub trait Machine: Send + Sync {
    /// For messages: `the host`, `lxc.102`.
    fn label(&self) -> String;
    /// A path of this machine as phoenix must name it (the host adds `PHOENIX_HOST_ROOT`).
    fn path(&self, path: &str) -> String {
        path.to_string()
    }
    /// Run a command; its exit status is the caller's to judge.
    fn exec<'a>(
        &'a self,
        argv: &'a [String],
        stdin: Option<&'a [u8]>,
    ) -> BoxFuture<'a, Result<Output, ProviderError>>;
    /// Write `bytes` to `dest` (whose directory exists), mode `0600` until installed.
    fn push<'a>(
        &'a self,
        bytes: &'a [u8],
        dest: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>>;
}

/// The Proxmox host: commands run locally or over ssh.
pub struct Host {
    /// The program and its leading arguments: empty (local), or `ssh ... user@host`.
    prefix: Vec<String>,
    root: Option<String>,
    timeout: Duration,
}

impl Host {
    pub fn new(settings: &HostSettings) -> Result<Self, ProviderError> {
        let prefix = match settings.transport.as_deref() {
            Some("local") => Vec::new(),
            Some(t) => {
                let rest = t.strip_prefix("ssh://").unwrap_or(t);
                let (userhost, port) = match rest.trim_end_matches('/').rsplit_once(':') {
                    Some((uh, p)) if p.chars().all(|c| c.is_ascii_digit()) => {
                        (uh.to_string(), Some(p.to_string()))
                    }
                    _ => (rest.trim_end_matches('/').to_string(), None),
                };
                let mut p = vec![settings.ssh.clone(), "-o".into(), "BatchMode=yes".into()];
                if let Some(port) = port {
                    p.extend(["-p".into(), port]);
                }
                p.push(userhost);
                p
            }
            None => {
                return Err(ProviderError::Config(
                    "phoenix does not know how to reach the Proxmox host, where dns.records and file.* live\n\
                     help: set PHOENIX_HOST=ssh://root@<host> (or PHOENIX_HOST=local when phoenix runs on it)"
                        .into(),
                ));
            }
        };
        Ok(Host {
            prefix,
            root: settings.root.clone(),
            timeout: settings.timeout,
        })
    }

    fn argv(&self, argv: &[String]) -> Vec<String> {
        if self.prefix.is_empty() {
            return argv.to_vec();
        }
        let mut out = self.prefix.clone();
        out.push(
            argv.iter()
                .map(|w| shell_quote(w))
                .collect::<Vec<_>>()
                .join(" "),
        );
        out
    }

    async fn run(&self, argv: &[String], stdin: Option<&[u8]>) -> Result<Output, ProviderError> {
        let full = self.argv(argv);
        let (prog, args) = full
            .split_first()
            .ok_or_else(|| ProviderError::Config("empty host command".into()))?;
        let mut child = tokio::process::Command::new(prog)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                ProviderError::Unreachable(format!(
                    "failed to run `{prog}` on the host: {e}\nhelp: install it, or point PHOENIX_PCT / PHOENIX_SSH at it"
                ))
            })?;
        let mut input = child.stdin.take();
        let mut out = child.stdout.take();
        let mut err = child.stderr.take();
        let run = async {
            let write = async {
                if let (Some(w), Some(bytes)) = (input.as_mut(), stdin) {
                    let _ = w.write_all(bytes).await;
                }
                drop(input.take());
            };
            let read_out = async {
                let mut o = Vec::new();
                if let Some(s) = out.as_mut() {
                    let _ = s.read_to_end(&mut o).await;
                }
                o
            };
            let read_err = async {
                let mut e = Vec::new();
                if let Some(s) = err.as_mut() {
                    let _ = s.read_to_end(&mut e).await;
                }
                e
            };
            let ((), o, e) = tokio::join!(write, read_out, read_err);
            (child.wait().await, o, e)
        };
        match tokio::time::timeout(self.timeout, run).await {
            Ok((Ok(status), o, e)) => {
                let out = Output {
                    code: status.code().unwrap_or(-1),
                    stdout: o,
                    stderr: String::from_utf8_lossy(&e).into_owned(),
                };
                if out.code == SSH_FAILED && !self.prefix.is_empty() {
                    return Err(ProviderError::Unreachable(format!(
                        "ssh to the Proxmox host failed: {}\nhelp: check PHOENIX_HOST and that `{}` works without a password",
                        out.stderr.trim(),
                        self.prefix.join(" ")
                    )));
                }
                Ok(out)
            }
            Ok((Err(e), _, _)) => Err(ProviderError::Unreachable(format!("`{prog}` failed: {e}"))),
            Err(_) => Err(ProviderError::Unreachable(format!(
                "`{}` did not finish within {}\nhelp: raise PHOENIX_HOST_TIMEOUT",
                argv.join(" "),
                humantime::format_duration(self.timeout)
            ))),
        }
    }
}

impl Machine for Host {
    fn label(&self) -> String {
        "the host".into()
    }

    fn path(&self, path: &str) -> String {
        match &self.root {
            Some(r) => format!("{r}{path}"),
            None => path.to_string(),
        }
    }

    fn exec<'a>(
        &'a self,
        argv: &'a [String],
        stdin: Option<&'a [u8]>,
    ) -> BoxFuture<'a, Result<Output, ProviderError>> {
        Box::pin(self.run(argv, stdin))
    }

    fn push<'a>(
        &'a self,
        bytes: &'a [u8],
        dest: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            let argv = install::sh(r#"umask 077; cat > "$1""#, &[dest.to_string()]);
            let out = self.run(&argv, Some(bytes)).await?;
            if out.success() {
                Ok(())
            } else {
                Err(ProviderError::Other(format!(
                    "failed to write {dest} on the host: {}",
                    out.tail().join("; ")
                )))
            }
        })
    }
}

/// The providers of the host kinds. The file kind reads guest status from Proxmox.
pub fn providers(
    settings: &HostSettings,
    pve: &PveSettings,
    kinds: &std::collections::BTreeSet<String>,
) -> Result<Vec<Arc<dyn ResourceProvider>>, ProviderError> {
    let host = Arc::new(Host::new(settings)?);
    let mut out: Vec<Arc<dyn ResourceProvider>> = vec![Arc::new(dns::DnsProvider::new(
        host.clone(),
        settings.dnsmasq_reload.clone(),
    ))];
    let needs_pve = [
        crate::model::file::KIND,
        crate::model::lxc_conf::KIND,
        crate::model::feature::FEATURE,
        crate::model::feature::APP,
    ]
    .iter()
    .any(|k| kinds.contains(*k));
    if needs_pve {
        let pve: Arc<Pve> = super::proxmox::connect(pve)?;
        out.push(Arc::new(file::FileProvider::new(
            host.clone(),
            pve.clone(),
            settings.pct.clone(),
            settings.files.clone(),
        )));
        out.push(Arc::new(lxc_conf::LxcConfProvider::new(
            host.clone(),
            pve.clone(),
        )));
        // Scripts run longer than file edits: a host of their own, with their timeout.
        let slow = Arc::new(Host::new(&HostSettings {
            timeout: settings.feature_timeout,
            ..settings.clone()
        })?);
        for kind in [crate::model::feature::FEATURE, crate::model::feature::APP] {
            out.push(Arc::new(feature::FeatureProvider::new(
                kind,
                slow.clone(),
                pve.clone(),
                settings.pct.clone(),
                settings.feature_timeout,
            )));
        }
    }
    if kinds.contains(crate::model::cert::KIND) {
        out.push(Arc::new(cert::CertProvider::new(
            host,
            settings.pct.clone(),
            settings.dnsmasq_reload.clone(),
            settings.acme.clone(),
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_argv_quotes_the_remote_command() {
        let s = HostSettings {
            transport: Some("ssh://root@10.0.0.13:2222".into()),
            ..Default::default()
        };
        let h = Host::new(&s).unwrap();
        let argv = h.argv(&install::sh("echo $1", &["a b".into()]));
        assert_eq!(
            argv,
            [
                "ssh",
                "-o",
                "BatchMode=yes",
                "-p",
                "2222",
                "root@10.0.0.13",
                "sh -c 'echo $1' phoenix 'a b'"
            ]
        );
        let local = Host::new(&HostSettings {
            transport: Some("local".into()),
            root: Some("/tmp/r".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(local.path("/etc/x"), "/tmp/r/etc/x");
        let err = Host::new(&HostSettings::default())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("set PHOENIX_HOST=ssh://root@<host>"), "{err}");
    }
}
