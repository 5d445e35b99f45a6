//! Traefik's dynamic configuration (file provider, YAML): a router and a
//! service per route, on the `web` entry point the gateway proxies to; an
//! HTTPS backend gets a servers transport that verifies its certificate, for
//! its own name, against the site's root CA (the seed sent plain HTTP to TLS
//! ports; reference 1.9 item 7).

use serde_json::json;

use super::names::{Names, TRAEFIK_ENTRYPOINT};

/// Where the file lives in the Traefik container (the seed's path; its static
/// configuration watches `/etc/traefik/dynamic`).
pub const PATH: &str = "/etc/traefik/dynamic/dynamic_conf.yml";
/// The site's root CA inside the Traefik container (the seed bind-mounts
/// step-ca's `ssl` directory there).
pub const ROOT_CA: &str = "/etc/step-ca/ssl/phoenix_root_ca.crt";

pub fn render(names: &Names) -> Result<String, String> {
    let tls: Vec<_> = names
        .routes
        .iter()
        .filter(|r| r.tls_server_name.is_some())
        .collect();
    let ctx = tera::Context::from_value(json!({
        "routes": names.routes,
        "tls_routes": tls,
        "notes": names.notes,
        "entrypoint": TRAEFIK_ENTRYPOINT.0,
        "root_ca": ROOT_CA,
    }))
    .map_err(|e| e.to_string())?;
    super::render("traefik_dynamic.yml", &ctx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::names::derive;

    #[test]
    fn seed() {
        let names = derive(&crate::render::names::tests::seed());
        let text = render(&names).unwrap();
        insta::assert_snapshot!(text);
    }
}
