//! `file.<name>`: a configuration file phoenix generates and keeps inside a
//! guest. Two so far, both in the ingress containers
//! ([`crate::render::names`] says which):
//!
//! | address | guest | path | after writing |
//! |---------|-------|------|---------------|
//! | `file.traefik_dynamic` | Traefik (102) | `/etc/traefik/dynamic/dynamic_conf.yml` | nothing: Traefik's file provider watches the directory |
//! | `file.nginx_gateway` | the gateway (101) | `/etc/nginx/sites-available/gateway`, enabled by the link `/etc/nginx/sites-enabled/gateway` | `nginx -t`, then `systemctl reload nginx`; the previous file is put back when either fails |
//!
//! | attribute | notes |
//! |-----------|-------|
//! | `guest`   | the container's id; forces replacement (the file moves) |
//! | `path`    | forces replacement |
//! | `content` | the whole file: the plan shows a unified diff |
//! | `mode`    | `644` |
//! | `link`    | the enabling symlink (nginx only): present and pointing at `path` |
//!
//! Both exist while the site has an ingress and routes something. The gateway
//! depends on its container, on Traefik's file, and on `cert.<common name>` of
//! each certificate it serves (a kind of a later version: until it exists the
//! edge orders nothing).

use serde_json::{Map, json};

use super::{Address, Attrs, DesiredResource, Kind, KindSchema};
use crate::manifest::{Diagnostic, Site};
use crate::render::{names, nginx, traefik};

pub const KIND: &str = "file";
/// The file's mode, as `stat -c %a` prints it.
pub const MODE: &str = "644";

pub static SCHEMA: KindSchema = KindSchema {
    kind: KIND,
    provider: "host",
    force_new: &["guest", "path"],
    grow_only: &[],
    sensitive: &[],
    destroy_protected: false,
    keep_on_delete: false,
    update_notes: super::no_notes,
};

/// How one generated file is put in place: the same for every site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileSpec {
    /// The address name, `file.<name>`.
    pub name: &'static str,
    pub path: &'static str,
    /// A symlink that enables the file (Debian's `sites-enabled`).
    pub link: Option<&'static str>,
    /// Run in the guest once the file is in place; a failure puts the previous one back.
    pub check: Option<&'static str>,
    /// Run in the guest after the check; a failure puts the previous one back.
    pub reload: Option<&'static str>,
}

pub const TRAEFIK_DYNAMIC: FileSpec = FileSpec {
    name: "traefik_dynamic",
    path: traefik::PATH,
    link: None,
    check: None,
    reload: None,
};

pub const NGINX_GATEWAY: FileSpec = FileSpec {
    name: "nginx_gateway",
    path: nginx::PATH,
    link: Some(nginx::LINK),
    check: Some("nginx -t"),
    reload: Some("systemctl reload nginx"),
};

pub const SPECS: [FileSpec; 2] = [TRAEFIK_DYNAMIC, NGINX_GATEWAY];

/// The spec of `file.<name>`.
pub fn spec(name: &str) -> Option<&'static FileSpec> {
    SPECS.iter().find(|s| s.name == name)
}

/// Which container each file of the site lives in, by address name: the
/// ingress containers, also while the ingress is disabled (so that the files
/// of a disabled ingress are found and removed).
pub fn locations(site: &Site) -> Vec<(&'static str, u32)> {
    match names::ingress_ids(site) {
        Some((gateway, traefik)) => vec![
            (TRAEFIK_DYNAMIC.name, traefik),
            (NGINX_GATEWAY.name, gateway),
        ],
        None => Vec::new(),
    }
}

/// The attributes of a file in a guest.
pub fn attrs_of(spec: &FileSpec, guest: u32, content: &str, mode: &str, link: bool) -> Attrs {
    let mut a = Map::new();
    a.insert("guest".into(), json!(guest));
    a.insert("path".into(), json!(spec.path));
    a.insert("content".into(), json!(content));
    a.insert("mode".into(), json!(mode));
    if let Some(l) = spec.link {
        a.insert("link".into(), if link { json!(l) } else { json!(null) });
    }
    a
}

pub struct FileKind;

impl Kind for FileKind {
    fn schema(&self) -> &'static KindSchema {
        &SCHEMA
    }

    fn destroyed_with_guest(&self) -> bool {
        true
    }

    fn desired(&self, site: &Site) -> Result<Vec<DesiredResource>, Vec<Diagnostic>> {
        let n = names::derive(site);
        if !n.route_errors.is_empty() {
            return Err(n.route_errors);
        }
        let Some(ing) = &n.ingress else {
            return Ok(Vec::new());
        };
        if n.routes.is_empty() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let traefik_content =
            traefik::render(&n).map_err(|e| vec![crate::render::nginx::internal(e)])?;
        let traefik_addr = Address::new(KIND, TRAEFIK_DYNAMIC.name);
        out.push(DesiredResource {
            address: traefik_addr.clone(),
            attrs: attrs_of(
                &TRAEFIK_DYNAMIC,
                ing.traefik.id,
                &traefik_content,
                MODE,
                true,
            ),
            create: Map::new(),
            depends_on: vec![ing.traefik.address()],
        });
        if let Some(g) = nginx::render(site, &n)? {
            let mut deps = vec![ing.gateway.address(), traefik_addr];
            deps.extend(
                g.certificates
                    .iter()
                    .map(|cn| Address::new("cert", cn.clone())),
            );
            out.push(DesiredResource {
                address: Address::new(KIND, NGINX_GATEWAY.name),
                attrs: attrs_of(&NGINX_GATEWAY, ing.gateway.id, &g.content, MODE, true),
                create: Map::new(),
                depends_on: deps,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_has_both_files() {
        let site = crate::render::names::tests::seed();
        let d = FileKind.desired(&site).unwrap();
        let addrs: Vec<String> = d.iter().map(|r| r.address.to_string()).collect();
        assert_eq!(addrs, ["file.traefik_dynamic", "file.nginx_gateway"]);
        assert_eq!(d[0].attrs["guest"], json!(102));
        assert!(!d[0].attrs.contains_key("link"));
        assert_eq!(d[1].attrs["guest"], json!(101));
        assert_eq!(
            d[1].attrs["link"],
            json!("/etc/nginx/sites-enabled/gateway")
        );
        let deps: Vec<String> = d[1].depends_on.iter().map(ToString::to_string).collect();
        assert_eq!(
            deps,
            [
                "lxc.101",
                "file.traefik_dynamic",
                "cert.nginx.internal.thinkheads.ai"
            ]
        );
        assert_eq!(
            locations(&site),
            [("traefik_dynamic", 102), ("nginx_gateway", 101)]
        );
    }
}
