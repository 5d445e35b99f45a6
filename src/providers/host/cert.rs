//! `cert.<common_name>` on the host: the certificate and key files of
//! `certificate-manifest.json`, read with `stat` and `cat` (the certificate
//! only: the key is checked to exist, never read), and issued through ACME
//! (instant-acme) against `PHOENIX_ACME_DIRECTORY`, trusting
//! `PHOENIX_ACME_CA_FILE` for its TLS.
//!
//! http-01: the key authorization of each name goes into the gateway
//! container's webroot (`/var/www/html/.well-known/acme-challenge/<token>`,
//! which the generated gateway site serves on port 80) and is removed after.
//! The account key is kept beside the state (`acme-account.json`, mode 0600),
//! never in it. The new key travels only on a pipe into the host's `sh`, is
//! written with umask 077 beside its final path and renamed into place; then
//! the certificate; then owner and mode; then the manifest's
//! `post_renewal_command` (a failure there is reported, the files stay).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use serde_json::{Value, json};

use super::guest::LxcGuest;
use super::install::{self, Install, sh};
use super::{Host, Machine};
use crate::model::cert::{self as model, Found, KIND};
use crate::model::{Address, DesiredResource, LiveObject};
use crate::plan::Change;
use crate::providers::{BoxFuture, Lane, OpContext, ProviderError, ResourceProvider};

/// `$1` cert, `$2` key: `cert=<mode> <owner>`, `key=<mode> <owner>` or `key=`, an empty line,
/// the certificate. Exit 44 when the certificate is missing.
const READ: &str = r#"
c=$1 k=$2
[ -f "$c" ] || exit 44
printf 'cert=%s\n' "$(stat -c '%a %U:%G' "$c")" || exit 1
if [ -f "$k" ]; then printf 'key=%s\n' "$(stat -c '%a %U:%G' "$k")"; else printf 'key=\n'; fi
printf '\n'
exec cat -- "$c"
"#;

/// `$1` cert, `$2` key, `$3` mode or empty, `$4` owner or empty. stdin: the key PEM, a line
/// `-----PHOENIX-----`, the certificate chain. Each file is written beside its path and renamed.
const WRITE: &str = r#"
set -u
c=$1 k=$2 mode=$3 owner=$4
umask 077
mkdir -p "${c%/*}" "${k%/*}" || exit 1
kt="${k%/*}/.${k##*/}.phoenix-new" ct="${c%/*}/.${c##*/}.phoenix-new"
rm -f "$kt" "$ct"
: > "$kt" && : > "$ct" || exit 1
target=$kt
while IFS= read -r line || [ -n "$line" ]; do
    if [ "$line" = "-----PHOENIX-----" ]; then target=$ct; continue; fi
    printf '%s\n' "$line" >> "$target" || exit 1
done
[ -s "$kt" ] && [ -s "$ct" ] || { rm -f "$kt" "$ct"; echo "the key or the certificate came empty" >&2; exit 1; }
if [ -n "$owner" ]; then chown "$owner" "$kt" "$ct" || { rm -f "$kt" "$ct"; exit 1; }; fi
if [ -n "$mode" ]; then chmod "$mode" "$kt" "$ct" || { rm -f "$kt" "$ct"; exit 1; }; else chmod 644 "$ct"; fi
mv -f "$kt" "$k" && mv -f "$ct" "$c"
"#;

/// `$1` cert, `$2` key, `$3` mode or empty, `$4` owner or empty: owner and mode only.
const FIX: &str = r#"
set -u
for f in "$1" "$2"; do
    if [ -n "$4" ]; then chown "$4" "$f" || exit 1; fi
    if [ -n "$3" ]; then chmod "$3" "$f" || exit 1; fi
done
"#;

/// `$1` the manifest's post-renewal command, run as the host's shell would.
const POST: &str = r#"sh -c "$1""#;

/// The dns-01 answers' dnsmasq drop-in.
pub const ACME_DNS_FILE: &str = "/etc/dnsmasq.d/00-phoenix-acme.conf";

const WEBROOT_DIR: &str = "/var/www/html/.well-known/acme-challenge";

#[derive(Debug, Clone, Default)]
pub struct AcmeSettings {
    /// `PHOENIX_ACME_DIRECTORY`.
    pub directory: Option<String>,
    /// `PHOENIX_ACME_CA_FILE`: the root that signs the ACME server's TLS certificate.
    pub ca_file: Option<PathBuf>,
    /// `PHOENIX_ACME_ACCOUNT_FILE`, else `<site>/state/acme-account.json`.
    pub account_file: PathBuf,
    /// `PHOENIX_CERT_RENEW_BEFORE`: a fixed renewal window instead of a third of the lifetime.
    pub renew_before: Option<Duration>,
    /// Where each certificate of the manifests is: `(common name, cert, key)`.
    pub certs: Vec<(String, String, String)>,
}

pub struct CertProvider {
    host: Arc<Host>,
    pct: String,
    dnsmasq_reload: String,
    acme: AcmeSettings,
}

fn failed(what: &str, e: impl std::fmt::Display) -> ProviderError {
    ProviderError::Other(format!("{what}: {e}"))
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Parse [`READ`]'s output.
fn parse_read(stdout: &[u8]) -> Option<Found> {
    let text = String::from_utf8_lossy(stdout);
    let (head, pem) = text.split_once("\n\n")?;
    let mut cert = None;
    let mut key = None;
    for l in head.lines() {
        if let Some(v) = l.strip_prefix("cert=") {
            cert = v
                .split_once(' ')
                .map(|(m, o)| (m.to_string(), o.to_string()));
        } else if let Some(v) = l.strip_prefix("key=") {
            key = Some(
                v.split_once(' ')
                    .map(|(m, o)| (m.to_string(), o.to_string())),
            );
        }
    }
    let (cert_mode, cert_owner) = cert?;
    Some(Found {
        cert_pem: pem.to_string(),
        cert_mode,
        cert_owner,
        key: key?,
    })
}

impl CertProvider {
    pub fn new(host: Arc<Host>, pct: String, dnsmasq_reload: String, acme: AcmeSettings) -> Self {
        CertProvider {
            host,
            pct,
            dnsmasq_reload,
            acme,
        }
    }

    fn paths_of<'a>(
        &'a self,
        addr: &Address,
        remote: Option<&'a Value>,
    ) -> Option<(String, String)> {
        if let Some(r) = remote
            && let (Some(c), Some(k)) = (r["cert_path"].as_str(), r["key_path"].as_str())
        {
            return Some((c.to_string(), k.to_string()));
        }
        self.acme
            .certs
            .iter()
            .find(|(cn, _, _)| cn == addr.name())
            .map(|(_, c, k)| (c.clone(), k.clone()))
    }

    async fn read(&self, cert: &str, key: &str) -> Result<Option<LiveObject>, ProviderError> {
        let argv = sh(READ, &[self.host.path(cert), self.host.path(key)]);
        let out = self.host.exec(&argv, None).await?;
        if out.code == 44 {
            return Ok(None);
        }
        let found = (out.success())
            .then(|| parse_read(&out.stdout))
            .flatten()
            .ok_or_else(|| {
                failed(
                    &format!("reading {cert} on the host"),
                    out.tail().join("; "),
                )
            })?;
        let before = self.acme.renew_before.map(|d| d.as_secs() as i64);
        let attrs = model::attrs_of(cert, key, &found, now(), before)
            .map_err(|e| failed(&format!("{cert} on the host"), e))?;
        Ok(Some(LiveObject {
            attrs,
            remote: json!({"cert_path": cert, "key_path": key}),
            token: None,
        }))
    }

    async fn account(&self) -> Result<Account, ProviderError> {
        let directory = self.acme.directory.clone().ok_or_else(|| {
            ProviderError::Config(
                "certificates are issued through ACME, and PHOENIX_ACME_DIRECTORY is not set\n\
                 help: set it to the site CA's ACME directory URL (step-ca: https://<ca>/acme/<provisioner>/directory), \
                 and PHOENIX_ACME_CA_FILE to the root that signs its TLS certificate"
                    .into(),
            )
        })?;
        let builder = || {
            match &self.acme.ca_file {
            Some(f) => Account::builder_with_root(f).map_err(|e| {
                ProviderError::Config(format!(
                    "PHOENIX_ACME_CA_FILE {}: {e}\nhelp: give the PEM file of the root that signs the ACME server's certificate",
                    f.display()
                ))
            }),
            None => Account::builder().map_err(|e| failed("the ACME client", e)),
        }
        };
        let file = &self.acme.account_file;
        if let Ok(text) = std::fs::read_to_string(file) {
            let saved: Value = serde_json::from_str(&text)
                .map_err(|e| failed(&format!("{}", file.display()), e))?;
            if saved["directory"].as_str() == Some(directory.as_str()) {
                let creds: AccountCredentials =
                    serde_json::from_value(saved["credentials"].clone())
                        .map_err(|e| failed(&format!("{}", file.display()), e))?;
                return builder()?
                    .from_credentials(creds)
                    .await
                    .map_err(|e| acme_error(&directory, e));
            }
        }
        let (account, creds) = builder()?
            .create(
                &NewAccount {
                    contact: &[],
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                directory.clone(),
                None,
            )
            .await
            .map_err(|e| acme_error(&directory, e))?;
        let doc = json!({"directory": directory, "credentials": creds});
        let text = serde_json::to_string_pretty(&doc).map_err(|e| failed("the ACME account", e))?;
        write_private(file, text.as_bytes())
            .map_err(|e| failed(&format!("writing {}", file.display()), e))?;
        Ok(account)
    }

    /// Issue a certificate for the names; returns `(key PEM, chain PEM)`.
    async fn issue(
        &self,
        addr: &Address,
        names: &[String],
        gateway: Option<u32>,
        dns01: bool,
        ctx: &dyn OpContext,
    ) -> Result<(String, String), ProviderError> {
        let account = self.account().await?;
        let dir = self.acme.directory.clone().unwrap_or_default();
        let ids: Vec<Identifier> = names.iter().map(|n| Identifier::Dns(n.clone())).collect();
        ctx.progress("Ordering", &format!("{addr} for {}", names.join(", ")));
        let mut order = account
            .new_order(&NewOrder::new(&ids))
            .await
            .map_err(|e| acme_error(&dir, e))?;
        let mut tokens: Vec<String> = Vec::new();
        let mut txt: Vec<String> = Vec::new();
        let guest = gateway.map(|g| LxcGuest::new(self.host.clone(), self.pct.clone(), g));
        let answered = async {
            let mut authzs = order.authorizations();
            while let Some(a) = authzs.next().await {
                let mut a = a.map_err(|e| acme_error(&dir, e))?;
                if a.status == AuthorizationStatus::Valid {
                    continue;
                }
                // http-01 through the gateway when it can; wildcards only validate by DNS.
                let wildcard = a.identifier().wildcard;
                let http = guest.as_ref().filter(|_| !wildcard);
                let kind = if http.is_some() {
                    ChallengeType::Http01
                } else {
                    ChallengeType::Dns01
                };
                let mut ch = a.challenge(kind.clone()).ok_or_else(|| {
                    failed(
                        &addr.to_string(),
                        format!("the ACME server offers no {kind:?} challenge"),
                    )
                })?;
                if let Some(g) = http {
                    let token = ch.token.clone();
                    ctx.progress(
                        "Answering",
                        &format!("{addr} http-01 for {} in lxc.{}", ch.identifier(), g.id()),
                    );
                    put_token(g, &token, ch.key_authorization().as_str()).await?;
                    tokens.push(token);
                } else {
                    if !dns01 {
                        return Err(ProviderError::Config(format!(
                            "{addr}: {} can only be validated by DNS (dns-01), and phoenix manages no DNS here\n\
                             help: set `dns_server.enabled` in the hypervisor config (phoenix then answers through dnsmasq), \
                             or add the ingress gateway for http-01 and drop wildcard names",
                            ch.identifier()
                        )));
                    }
                    let Identifier::Dns(base) = ch.identifier().identifier.clone() else {
                        return Err(failed(&addr.to_string(), "a non-DNS identifier"));
                    };
                    ctx.progress(
                        "Answering",
                        &format!("{addr} dns-01 for {} through dnsmasq", ch.identifier()),
                    );
                    txt.push(format!(
                        "txt-record=_acme-challenge.{base},\"{}\"",
                        ch.key_authorization().dns_value()
                    ));
                    self.set_txt(&txt).await?;
                }
                ch.set_ready().await.map_err(|e| acme_error(&dir, e))?;
            }
            let status = order
                .poll_ready(&RetryPolicy::default())
                .await
                .map_err(|e| acme_error(&dir, e))?;
            if status != OrderStatus::Ready {
                return Err(failed(
                    &addr.to_string(),
                    format!("the ACME order ended {status:?}: the CA could not validate the names"),
                ));
            }
            let key = order.finalize().await.map_err(|e| acme_error(&dir, e))?;
            let chain = order
                .poll_certificate(&RetryPolicy::default())
                .await
                .map_err(|e| acme_error(&dir, e))?;
            Ok((key, chain))
        }
        .await;
        // Best effort: a stale token or record is harmless, and the answer is already in.
        if let Some(g) = &guest {
            for t in &tokens {
                let _ = remove_token(g, t).await;
            }
        }
        if !txt.is_empty() {
            let _ = install::remove(
                self.host.as_ref(),
                &Install {
                    path: &self.host.path(ACME_DNS_FILE),
                    reload: Some(&self.dnsmasq_reload),
                    ..Default::default()
                },
            )
            .await;
        }
        answered
    }

    /// The dns-01 answers, as a dnsmasq drop-in of their own beside the site's records:
    /// checked with `dnsmasq --test`, then dnsmasq reloaded.
    async fn set_txt(&self, lines: &[String]) -> Result<(), ProviderError> {
        let mut content = String::from(
            "# ACME dns-01 answers, written by phoenix while it validates; removed after.\n",
        );
        for l in lines {
            content.push_str(l);
            content.push('\n');
        }
        install::install(
            self.host.as_ref(),
            &Install {
                path: &self.host.path(ACME_DNS_FILE),
                mode: "644",
                link: None,
                precheck: Some(super::dns::PRECHECK),
                check: None,
                reload: Some(&self.dnsmasq_reload),
            },
            &content,
        )
        .await
    }

    async fn write_files(
        &self,
        desired: &DesiredResource,
        key_pem: &str,
        chain_pem: &str,
    ) -> Result<(), ProviderError> {
        let s = |k: &str| desired.attr_str(k).to_string();
        let (cert, key) = (s("cert_path"), s("key_path"));
        let mut input = String::with_capacity(key_pem.len() + chain_pem.len() + 20);
        input.push_str(key_pem.trim_end());
        input.push_str("\n-----PHOENIX-----\n");
        input.push_str(chain_pem.trim_end());
        input.push('\n');
        let argv = sh(
            WRITE,
            &[
                self.host.path(&cert),
                self.host.path(&key),
                s("mode"),
                s("owner"),
            ],
        );
        let out = self.host.exec(&argv, Some(input.as_bytes())).await?;
        if out.success() {
            Ok(())
        } else {
            Err(failed(
                &format!("writing {cert} and its key on the host"),
                out.tail().join("; "),
            ))
        }
    }

    async fn write(
        &self,
        desired: &DesiredResource,
        live: Option<&LiveObject>,
        ctx: &dyn OpContext,
    ) -> Result<LiveObject, ProviderError> {
        let addr = &desired.address;
        let s = |k: &str| desired.attr_str(k).to_string();
        if model::needs_new(desired, live) {
            let names: Vec<String> = desired
                .attrs
                .get("sans")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            let gateway = desired
                .create
                .get("gateway")
                .and_then(Value::as_u64)
                .and_then(|g| u32::try_from(g).ok());
            let dns01 = desired.create.get("dns01").and_then(Value::as_bool) == Some(true);
            let (key, chain) = self.issue(addr, &names, gateway, dns01, ctx).await?;
            ctx.progress("Writing", &format!("{addr} {} on the host", s("cert_path")));
            self.write_files(desired, &key, &chain).await?;
            drop(key);
            if let Some(cmd) = desired
                .create
                .get("post_renewal_command")
                .and_then(Value::as_str)
            {
                ctx.progress("Running", &format!("{addr} post_renewal_command"));
                let out = self.host.exec(&sh(POST, &[cmd.to_string()]), None).await?;
                if !out.success() {
                    ctx.progress(
                        "Warning",
                        &format!(
                            "{addr}: post_renewal_command failed (exit {}); the new files are in place: {}",
                            out.code,
                            out.tail().join("; ")
                        ),
                    );
                }
            }
        } else {
            ctx.progress("Fixing", &format!("{addr} owner and mode"));
            let argv = sh(
                FIX,
                &[
                    self.host.path(&s("cert_path")),
                    self.host.path(&s("key_path")),
                    s("mode"),
                    s("owner"),
                ],
            );
            let out = self.host.exec(&argv, None).await?;
            if !out.success() {
                return Err(failed(
                    &format!("{addr}: setting owner and mode"),
                    out.tail().join("; "),
                ));
            }
        }
        self.read(&s("cert_path"), &s("key_path"))
            .await?
            .ok_or_else(|| {
                ProviderError::Other(format!(
                    "{addr}: the certificate is missing right after it was written"
                ))
            })
    }
}

async fn put_token(g: &LxcGuest, token: &str, content: &str) -> Result<(), ProviderError> {
    if token.is_empty()
        || !token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(ProviderError::Other(format!(
            "the ACME server sent a token that is not base64url: {token:?}"
        )));
    }
    let mk = g
        .exec(&sh(r#"mkdir -p "$1""#, &[WEBROOT_DIR.to_string()]), None)
        .await?;
    if !mk.success() {
        return Err(failed(
            &format!("making {WEBROOT_DIR} in {}", g.label()),
            mk.tail().join("; "),
        ));
    }
    let path = format!("{WEBROOT_DIR}/{token}");
    g.push(content.as_bytes(), &path).await?;
    let chmod = g
        .exec(&sh(r#"chmod 644 "$1""#, std::slice::from_ref(&path)), None)
        .await?;
    if chmod.success() {
        Ok(())
    } else {
        Err(failed(&format!("chmod {path}"), chmod.tail().join("; ")))
    }
}

async fn remove_token(g: &LxcGuest, token: &str) -> Result<(), ProviderError> {
    g.exec(
        &sh(r#"rm -f "$1""#, &[format!("{WEBROOT_DIR}/{token}")]),
        None,
    )
    .await
    .map(|_| ())
}

fn acme_error(directory: &str, e: instant_acme::Error) -> ProviderError {
    let text = e.to_string();
    let help = if text.contains("certificate") || text.contains("UnknownIssuer") {
        "\nhelp: the ACME server's TLS certificate is not trusted: set PHOENIX_ACME_CA_FILE to the root that signs it"
    } else if text.contains("onnect") {
        "\nhelp: check that the CA runs and that PHOENIX_ACME_DIRECTORY is right"
    } else {
        ""
    };
    ProviderError::Unreachable(format!("ACME at {directory}: {text}{help}"))
}

/// Write a file only its owner can read: created 0600, renamed into place.
pub(crate) fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.phoenix-new");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

impl ResourceProvider for CertProvider {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn refresh<'a>(
        &'a self,
        addresses: &'a [Address],
    ) -> BoxFuture<'a, Result<BTreeMap<Address, LiveObject>, ProviderError>> {
        Box::pin(async move {
            let mut out = BTreeMap::new();
            for a in addresses {
                let Some((cert, key)) = self.paths_of(a, None) else {
                    continue;
                };
                if let Some(l) = self.read(&cert, &key).await? {
                    out.insert(a.clone(), l);
                }
            }
            Ok(out)
        })
    }

    fn create<'a>(
        &'a self,
        desired: &'a DesiredResource,
        ctx: &'a dyn OpContext,
    ) -> BoxFuture<'a, Result<LiveObject, ProviderError>> {
        Box::pin(self.write(desired, None, ctx))
    }

    fn update<'a>(
        &'a self,
        desired: &'a DesiredResource,
        live: &'a LiveObject,
        _change: &'a Change,
        ctx: &'a dyn OpContext,
    ) -> BoxFuture<'a, Result<LiveObject, ProviderError>> {
        Box::pin(self.write(desired, Some(live), ctx))
    }

    fn delete<'a>(
        &'a self,
        address: &'a Address,
        remote: &'a Value,
        ctx: &'a dyn OpContext,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            let Some((cert, key)) = self.paths_of(address, Some(remote)) else {
                return Ok(());
            };
            ctx.progress(
                "Removing",
                &format!("{address} {cert} and its key on the host"),
            );
            let argv = sh(
                r#"rm -f -- "$1" "$2""#,
                &[self.host.path(&cert), self.host.path(&key)],
            );
            let out = self.host.exec(&argv, None).await?;
            if out.success() {
                Ok(())
            } else {
                Err(failed(&format!("removing {cert}"), out.tail().join("; ")))
            }
        })
    }

    fn lanes(&self, _change: &Change, _desired: Option<&DesiredResource>) -> Vec<Lane> {
        // One order at a time: ACME servers rate-limit, and the gateway's webroot is shared.
        vec![
            Lane {
                key: "host:acme".into(),
                capacity: 1,
            },
            Lane {
                key: "host:dnsmasq".into(),
                capacity: 1,
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_output_parses_and_a_missing_key_shows() {
        let f = parse_read(b"cert=644 root:root\nkey=600 root:www-data\n\n-----BEGIN").unwrap();
        assert_eq!(f.cert_mode, "644");
        assert_eq!(f.key, Some(("600".into(), "root:www-data".into())));
        assert_eq!(f.cert_pem, "-----BEGIN");
        let f = parse_read(b"cert=644 root:root\nkey=\n\nX").unwrap();
        assert_eq!(f.key, None);
        assert!(parse_read(b"garbage").is_none());
    }
}
