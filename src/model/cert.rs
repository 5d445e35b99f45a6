//! `cert.<common_name>`: every entry of `etc/certificate-manifest.json`, a
//! certificate and its key on the Proxmox host, issued through ACME
//! (`providers/host/cert.rs`; decision 0017).
//!
//! | attribute     | from the manifest | live (the files on the host) |
//! |---------------|-------------------|------------------------------|
//! | `cert_path`, `key_path` | as given | where they were read; forces replacement |
//! | `sans`        | `sans` and `common_name`, sorted, without repeats | the certificate's DNS names |
//! | `issuer`      | `step_ca.intermediate_ca_name` of the hypervisor config, when given | the issuer's common name |
//! | `renewal_due` | `false` | `true` once the certificate is inside its renewal window (the last third of its lifetime, or `PHOENIX_CERT_RENEW_BEFORE`) |
//! | `owner`       | `owner` (`user:group`), when given | of the key (and the certificate) |
//! | `mode`        | `permissions`, when given | of the key (and the certificate) |
//!
//! A change of `sans`, `issuer` or `renewal_due` re-issues; `owner` and `mode`
//! alone are set on the files as they are. The key is written by phoenix and
//! never read back, shown or recorded.

use serde_json::{Map, Value, json};

use super::{Address, Attrs, DesiredResource, Kind, KindSchema, LiveObject};
use crate::manifest::files::CERTIFICATES_FILE;
use crate::manifest::{Diagnostic, Severity, Site};

pub const KIND: &str = "cert";

pub static SCHEMA: KindSchema = KindSchema {
    kind: KIND,
    provider: "host",
    force_new: &["cert_path", "key_path"],
    grow_only: &[],
    sensitive: &[],
    destroy_protected: false,
    keep_on_delete: false,
    update_notes,
};

/// Attributes whose change means a new certificate, not new file modes.
pub const REISSUE: [&str; 3] = ["sans", "issuer", "renewal_due"];

/// Whether the certificate must be issued anew: none yet, or one of
/// [`REISSUE`] differs (owner and mode alone are fixed in place).
pub fn needs_new(desired: &DesiredResource, live: Option<&LiveObject>) -> bool {
    live.is_none_or(|l| {
        REISSUE.iter().any(|a| {
            desired
                .attrs
                .get(*a)
                .is_some_and(|d| l.attrs.get(*a) != Some(d))
        })
    })
}

/// Why the plan re-issues (or only fixes the files).
fn update_notes(changed: &[String], live: &Attrs) -> Vec<String> {
    let mut why = Vec::new();
    for c in changed {
        match c.as_str() {
            "sans" => why.push("its names differ from the manifest's".to_string()),
            "issuer" => why.push(format!(
                "it was issued by `{}`, not the site CA",
                live.get("issuer").and_then(Value::as_str).unwrap_or("?")
            )),
            "renewal_due" => why.push(format!(
                "it expires {}, inside its renewal window",
                live.get("expires")
                    .and_then(Value::as_str)
                    .unwrap_or("soon")
            )),
            _ => {}
        }
    }
    if why.is_empty() {
        vec!["sets owner and mode on the files; no new certificate".into()]
    } else {
        vec![format!("re-issues: {}", why.join("; "))]
    }
}

pub struct CertKind;

impl Kind for CertKind {
    fn schema(&self) -> &'static KindSchema {
        &SCHEMA
    }

    /// A valid certificate already on disk (the seed's, from step) is kept
    /// until it needs renewing: nothing to adopt.
    fn verifies_existing(&self) -> bool {
        true
    }

    fn observe(&self, desired: &DesiredResource, live: Option<&LiveObject>) -> Vec<String> {
        let mut out = Vec::new();
        if live.is_none() {
            out.push("issues it: no certificate at cert_path".to_string());
        }
        if let Some(cmd) = desired
            .create
            .get("post_renewal_command")
            .and_then(Value::as_str)
            && live.is_none_or(|l| {
                REISSUE.iter().any(|a| {
                    desired
                        .attrs
                        .get(*a)
                        .is_some_and(|d| l.attrs.get(*a) != Some(d))
                })
            })
        {
            out.push(format!("then runs on the host: {cmd}"));
        }
        out
    }

    fn desired(&self, site: &Site) -> Result<Vec<DesiredResource>, Vec<Diagnostic>> {
        let issuer = site
            .hypervisor
            .step_ca
            .as_ref()
            .and_then(|s| s.intermediate_ca_name.clone());
        let gateway = crate::render::names::ingress_ids(site).map(|(gw, _)| gw);
        let mut out: Vec<DesiredResource> = Vec::new();
        let mut errors = Vec::new();
        for (i, c) in site.certificates.iter().enumerate() {
            let err = |field: &str, message: String, help: &str| Diagnostic {
                severity: Severity::Error,
                file: CERTIFICATES_FILE.into(),
                json_path: format!("[{i}].{field}"),
                line: None,
                column: None,
                message,
                help: Some(help.to_string()),
            };
            let cn = c.common_name.trim().to_ascii_lowercase();
            if let Err(why) = check_name(&cn) {
                errors.push(err(
                    "common_name",
                    why,
                    "a DNS name such as `nginx.internal.example.org`",
                ));
                continue;
            }
            let mut sans: Vec<String> = c
                .sans
                .iter()
                .map(|s| s.trim().to_ascii_lowercase())
                .chain(std::iter::once(cn.clone()))
                .collect();
            sans.sort();
            sans.dedup();
            for (j, s) in sans.iter().enumerate() {
                if let Err(why) = check_name(s) {
                    errors.push(err(&format!("sans[{j}]"), why, "DNS names only"));
                }
            }
            for (field, p) in [("cert_path", &c.cert_path), ("key_path", &c.key_path)] {
                if !p.starts_with('/') || p.split('/').any(|s| s == "..") || p.ends_with('/') {
                    errors.push(err(
                        field,
                        format!("`{p}` is not an absolute file path"),
                        "write the host path of the file, e.g. `/etc/ssl/phoenix/x.crt`",
                    ));
                }
            }
            if c.cert_path == c.key_path {
                errors.push(err(
                    "key_path",
                    "the key and the certificate would be the same file".into(),
                    "give the key a path of its own",
                ));
            }
            if let Some(m) = &c.permissions
                && !(m.len() == 3 && m.chars().all(|ch| ('0'..='7').contains(&ch)))
            {
                errors.push(err(
                    "permissions",
                    format!("`{m}` is not an octal mode"),
                    "three octal digits, e.g. `640`",
                ));
            }
            if let Some(o) = &c.owner
                && !valid_owner(o)
            {
                errors.push(err(
                    "owner",
                    format!("`{o}` is not `user:group`"),
                    "e.g. `root:www-data`",
                ));
            }
            let address = Address::new(KIND, &cn);
            if out.iter().any(|r| r.address == address) {
                errors.push(err(
                    "common_name",
                    format!("a second entry for `{cn}`"),
                    "keep one entry per certificate",
                ));
                continue;
            }
            let mut attrs = Map::new();
            attrs.insert("cert_path".into(), json!(c.cert_path));
            attrs.insert("key_path".into(), json!(c.key_path));
            attrs.insert("sans".into(), json!(sans));
            if let Some(i) = &issuer {
                attrs.insert("issuer".into(), json!(i));
            }
            attrs.insert("renewal_due".into(), json!(false));
            if let Some(o) = &c.owner {
                attrs.insert("owner".into(), json!(o));
            }
            if let Some(m) = &c.permissions {
                attrs.insert("mode".into(), json!(m));
            }
            let mut create = Map::new();
            if let Some(cmd) = &c.post_renewal_command {
                create.insert("post_renewal_command".into(), json!(cmd));
            }
            if let Some(gw) = gateway {
                create.insert("gateway".into(), json!(gw));
            }
            create.insert("dns01".into(), json!(super::dns::enabled(site)));
            // The challenge token goes into the gateway's webroot, so the gateway runs first;
            // and the CA finds the names through the site's DNS.
            let mut depends_on: Vec<Address> = gateway
                .map(|gw| vec![Address::new(super::lxc::KIND, gw.to_string())])
                .unwrap_or_default();
            if super::dns::enabled(site) {
                depends_on.push(super::dns::address());
            }
            out.push(DesiredResource {
                address,
                attrs,
                create,
                depends_on,
            });
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }
}

/// `user:group` of names or numbers a shell and `chown` take as they are.
fn valid_owner(o: &str) -> bool {
    let ok = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    matches!(o.split_once(':'), Some((u, g)) if ok(u) && ok(g))
}

/// A DNS name, or a wildcard `*.` in front of one.
fn check_name(name: &str) -> Result<(), String> {
    let name_ok = |name: &str| {
        !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            })
    };
    if name_ok(name.strip_prefix("*.").unwrap_or(name)) {
        Ok(())
    } else {
        Err(format!("`{name}` is not a DNS name"))
    }
}

/// Where each certificate of the site is, for reading it: `(common name, cert, key)`.
pub fn locations(site: &Site) -> Vec<(String, String, String)> {
    site.certificates
        .iter()
        .map(|c| {
            (
                c.common_name.trim().to_ascii_lowercase(),
                c.cert_path.clone(),
                c.key_path.clone(),
            )
        })
        .collect()
}

/// The files of one certificate as read on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub cert_pem: String,
    pub cert_mode: String,
    pub cert_owner: String,
    /// `None`: the key file is missing.
    pub key: Option<(String, String)>,
}

/// A certificate's facts, parsed from its PEM.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub sans: Vec<String>,
    pub issuer: String,
    pub not_before: i64,
    pub not_after: i64,
}

/// Parse the first certificate of a PEM chain.
pub fn parse_pem(pem: &str) -> Result<Parsed, String> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| format!("not a PEM certificate: {e}"))?;
    let cert = block
        .parse_x509()
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let mut sans: Vec<String> = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for n in &ext.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                sans.push(d.to_ascii_lowercase());
            }
        }
    }
    sans.sort();
    sans.dedup();
    let issuer = cert
        .issuer()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_string();
    Ok(Parsed {
        sans,
        issuer,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

/// Whether a certificate valid from `nb` to `na` is due at `now`: inside
/// `before` seconds of its end, or the last third of its lifetime.
pub fn renewal_due(nb: i64, na: i64, now: i64, before: Option<i64>) -> bool {
    let window = before.unwrap_or((na - nb).max(0) / 3);
    now >= na - window
}

/// The live attributes of a certificate's files.
pub fn attrs_of(
    cert_path: &str,
    key_path: &str,
    found: &Found,
    now: i64,
    before: Option<i64>,
) -> Result<Attrs, String> {
    let p = parse_pem(&found.cert_pem)?;
    let mut a = Map::new();
    a.insert("cert_path".into(), json!(cert_path));
    a.insert("key_path".into(), json!(key_path));
    a.insert("sans".into(), json!(p.sans));
    a.insert("issuer".into(), json!(p.issuer));
    a.insert(
        "renewal_due".into(),
        json!(found.key.is_none() || renewal_due(p.not_before, p.not_after, now, before)),
    );
    let both = |c: &str, k: Option<&str>| match k {
        Some(k) if k != c => format!("cert {c}, key {k}"),
        _ => c.to_string(),
    };
    let key = found.key.as_ref();
    a.insert(
        "owner".into(),
        json!(both(&found.cert_owner, key.map(|k| k.1.as_str()))),
    );
    a.insert(
        "mode".into(),
        json!(both(&found.cert_mode, key.map(|k| k.0.as_str()))),
    );
    a.insert("expires".into(), json!(rfc3339(p.not_after)));
    Ok(a)
}

fn rfc3339(secs: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed() -> Site {
        crate::render::names::tests::seed()
    }

    #[test]
    fn every_seed_certificate_is_one_resource_with_its_names() {
        let all = CertKind.desired(&seed()).unwrap();
        let names: Vec<String> = all.iter().map(|r| r.address.to_string()).collect();
        assert_eq!(
            names,
            [
                "cert.nginx.internal.thinkheads.ai",
                "cert.portainer.internal.thinkheads.ai",
                "cert.traefik.internal.thinkheads.ai"
            ]
        );
        let nginx = &all[0];
        assert_eq!(
            nginx.attrs["sans"],
            json!([
                "nginx.internal.thinkheads.ai",
                "portainer.internal.thinkheads.ai"
            ])
        );
        assert_eq!(
            nginx.attrs["issuer"],
            json!("ThinkHeads Internal CA Intermediate CA")
        );
        assert_eq!(nginx.attrs["mode"], json!("640"));
        assert_eq!(nginx.attrs["owner"], json!("root:www-data"));
        assert_eq!(nginx.attrs["renewal_due"], json!(false));
        assert_eq!(
            nginx.depends_on,
            [Address::new("lxc", "101"), Address::new("dns", "records")]
        );
        // A CN without sans is its own only name.
        assert_eq!(
            all[1].attrs["sans"],
            json!(["portainer.internal.thinkheads.ai"])
        );
        let notes = CertKind.observe(nginx, None);
        assert!(notes[0].contains("issues it"), "{notes:?}");
        assert!(
            notes[1].contains("pct exec 101 -- systemctl reload nginx"),
            "{notes:?}"
        );
    }

    #[test]
    fn bad_entries_are_errors_naming_the_entry_and_field() {
        let mut site = seed();
        site.certificates[0].sans.push("bad name".into());
        site.certificates[1].key_path = "relative.key".into();
        site.certificates[2].permissions = Some("999".into());
        site.certificates[2].owner = Some("root;rm -rf /".into());
        let errs = CertKind.desired(&site).unwrap_err();
        let at: Vec<&str> = errs.iter().map(|d| d.json_path.as_str()).collect();
        assert_eq!(
            at,
            [
                "[0].sans[0]",
                "[1].key_path",
                "[2].permissions",
                "[2].owner"
            ]
        );
    }

    #[test]
    fn the_renewal_window_is_the_last_third_or_what_is_asked() {
        let day = 86_400;
        assert!(!renewal_due(0, 90 * day, 59 * day, None));
        assert!(renewal_due(0, 90 * day, 60 * day, None));
        assert!(!renewal_due(0, 90 * day, 80 * day, Some(5 * day)));
        assert!(renewal_due(0, 90 * day, 85 * day, Some(5 * day)));
        assert!(renewal_due(0, 90 * day, 91 * day, Some(0)));
    }

    #[test]
    fn notes_say_why_it_renews() {
        let mut live = Map::new();
        live.insert("issuer".into(), json!("Other CA"));
        live.insert("expires".into(), json!("2026-11-23T00:00:00Z"));
        let n = update_notes(&["issuer".into(), "renewal_due".into()], &live);
        assert_eq!(
            n,
            [
                "re-issues: it was issued by `Other CA`, not the site CA; it expires 2026-11-23T00:00:00Z, inside its renewal window"
            ]
        );
        assert!(update_notes(&["mode".into()], &live)[0].contains("no new certificate"));
    }
}
