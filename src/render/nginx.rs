//! The Nginx gateway site: port 80 serves ACME http-01 challenges from the
//! webroot and redirects everything else to HTTPS; port 443 terminates TLS for
//! every routed hostname (the seed listed two) and proxies to Traefik.
//!
//! Certificates come from `etc/certificate-manifest.json`. Their paths there are
//! host paths; the gateway reads them through its bind mounts (`mount_points`,
//! the seed's `.../101/ssl` -> `/etc/nginx/ssl`), so a certificate counts only
//! when its certificate and key lie in a mounted directory, at the path inside
//! the container. Each hostname gets the first such certificate naming it
//! (exactly or by a `*.` wildcard), else the first one, with a comment saying so.

use serde::Serialize;
use serde_json::json;

use super::names::Names;
use crate::manifest::files::{CERTIFICATES_FILE, CertificateEntry, LXC_FILE, MountPoint};
use crate::manifest::locate::{Segment, format_path};
use crate::manifest::{Diagnostic, Site};

/// Where the site lives in the gateway container (the seed's path), and the
/// link that enables it.
pub const PATH: &str = "/etc/nginx/sites-available/gateway";
pub const LINK: &str = "/etc/nginx/sites-enabled/gateway";
/// The ACME http-01 webroot (the seed's).
pub const WEBROOT: &str = "/var/www/html";

/// A certificate of the manifest as the gateway sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayCert {
    pub common_name: String,
    /// The common name and the SANs, lower case.
    pub names: Vec<String>,
    /// Paths inside the gateway.
    pub cert: String,
    pub key: String,
}

impl GatewayCert {
    fn covers(&self, host: &str) -> bool {
        self.names.iter().any(|n| {
            n == host
                || n.strip_prefix("*.")
                    .is_some_and(|rest| host.split_once('.').is_some_and(|(_, h)| h == rest))
        })
    }
}

/// The path inside a container of a host path, through its bind mounts.
pub fn guest_path(mounts: &[MountPoint], host_path: &str) -> Option<String> {
    mounts.iter().find_map(|m| {
        let base = m.host_path.trim_end_matches('/');
        let rest = host_path.strip_prefix(base)?.strip_prefix('/')?;
        Some(format!("{}/{rest}", m.container_path.trim_end_matches('/')))
    })
}

/// The certificates the gateway container can read, in manifest order.
pub fn gateway_certs(site: &Site, gateway: u32) -> Vec<GatewayCert> {
    let mounts: &[MountPoint] = site
        .lxc(gateway)
        .and_then(|c| c.mount_points.as_deref())
        .unwrap_or_default();
    site.certificates
        .iter()
        .filter_map(|c: &CertificateEntry| {
            let mut names: Vec<String> = std::iter::once(&c.common_name)
                .chain(&c.sans)
                .map(|n| n.trim().to_ascii_lowercase())
                .collect();
            names.dedup();
            Some(GatewayCert {
                common_name: c.common_name.trim().to_ascii_lowercase(),
                names,
                cert: guest_path(mounts, &c.cert_path)?,
                key: guest_path(mounts, &c.key_path)?,
            })
        })
        .collect()
}

#[derive(Debug, Serialize)]
struct Server {
    host: String,
    cert: String,
    key: String,
    note: String,
}

/// The gateway's file and the certificates it uses (their common names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gateway {
    pub content: String,
    pub certificates: Vec<String>,
}

/// A rendering failure: a phoenix bug, reported against the file that asked for it.
pub fn internal(message: String) -> Diagnostic {
    Diagnostic::error(CERTIFICATES_FILE, message)
        .with_path("$")
        .with_help("this is a phoenix bug; please report it with the manifests")
}

/// The gateway site, or `None` when nothing is routed. Errors: no certificate
/// the gateway can read.
pub fn render(site: &Site, names: &Names) -> Result<Option<Gateway>, Vec<Diagnostic>> {
    let Some(ing) = &names.ingress else {
        return Ok(None);
    };
    let mut hosts: Vec<&String> = names.routes.iter().flat_map(|r| &r.hosts).collect();
    hosts.sort();
    hosts.dedup();
    if hosts.is_empty() {
        return Ok(None);
    }
    let certs = gateway_certs(site, ing.gateway.id);
    let Some(default) = certs.first() else {
        let path = [
            Segment::key("lxc_configs"),
            Segment::key(ing.gateway.id.to_string()),
        ];
        return Err(vec![
            Diagnostic::error(
                LXC_FILE,
                format!(
                    "the gateway (lxc.{}) has no certificate to serve {} routed hostname(s) with: no entry of \
                     {CERTIFICATES_FILE} has its cert_path and key_path in a directory bind-mounted into it",
                    ing.gateway.id,
                    hosts.len()
                ),
            )
            .with_path(format_path(&path))
            .with_position(site.sources.locate(std::path::Path::new(LXC_FILE), &path))
            .with_help(format!(
                "add a certificate whose cert_path and key_path lie under a `host_path` of the `mount_points` \
                 of container {} ({LXC_FILE}); the seed mounts .../lxc-persistent-data/101/ssl at /etc/nginx/ssl",
                ing.gateway.id
            )),
        ]);
    };
    let mut used: Vec<String> = Vec::new();
    let servers: Vec<Server> = hosts
        .iter()
        .map(|h| {
            let route = names
                .routes
                .iter()
                .find(|r| r.hosts.contains(h))
                .map(|r| r.source.clone())
                .unwrap_or_default();
            let (cert, note) = match certs.iter().find(|c| c.covers(h)) {
                Some(c) => (c, format!("{route}; certificate {}", c.common_name)),
                None => (
                    default,
                    format!(
                        "{route}; no certificate names it, so {}'s is served (clients will warn)",
                        default.common_name
                    ),
                ),
            };
            if !used.contains(&cert.common_name) {
                used.push(cert.common_name.clone());
            }
            Server {
                host: (*h).clone(),
                cert: cert.cert.clone(),
                key: cert.key.clone(),
                note,
            }
        })
        .collect();
    let ctx = tera::Context::from_value(json!({
        "servers": servers,
        "traefik": ing.traefik_endpoint(),
        "webroot": WEBROOT,
    }))
    .map_err(|e| vec![internal(e.to_string())])?;
    let content = super::render("nginx_gateway.conf", &ctx).map_err(|e| vec![internal(e)])?;
    used.sort();
    Ok(Some(Gateway {
        content,
        certificates: used,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::names::derive;

    #[test]
    fn paths_through_bind_mounts() {
        let m = |h: &str, c: &str| MountPoint {
            host_path: h.into(),
            container_path: c.into(),
            owner_uid: None,
            owner_gid: None,
        };
        let mounts = [
            m("/mnt/pve/x/101/ssl/", "/etc/nginx/ssl"),
            m("/srv", "/data"),
        ];
        assert_eq!(
            guest_path(&mounts, "/mnt/pve/x/101/ssl/a.crt").as_deref(),
            Some("/etc/nginx/ssl/a.crt")
        );
        assert_eq!(
            guest_path(&mounts, "/srv/a/b").as_deref(),
            Some("/data/a/b")
        );
        assert_eq!(guest_path(&mounts, "/srvx/a"), None);
        assert_eq!(guest_path(&mounts, "/mnt/pve/x/102/ssl/a.crt"), None);
    }

    #[test]
    fn wildcards_cover_one_label() {
        let c = GatewayCert {
            common_name: "x".into(),
            names: vec!["*.lab.example".into()],
            cert: String::new(),
            key: String::new(),
        };
        assert!(c.covers("a.lab.example"));
        assert!(!c.covers("a.b.lab.example"));
        assert!(!c.covers("lab.example"));
    }

    #[test]
    fn seed() {
        let site = crate::render::names::tests::seed();
        let names = derive(&site);
        let g = render(&site, &names).unwrap().unwrap();
        assert_eq!(g.certificates, ["nginx.internal.thinkheads.ai"]);
        insta::assert_snapshot!(g.content);
    }
}
