//! Generated files: what the manifests say about names and routes
//! ([`names`]), and the files made from it: the host's dnsmasq records
//! ([`dnsmasq`]), Traefik's dynamic configuration ([`traefik`]) and the Nginx
//! gateway ([`nginx`]), rendered from `templates/*.tera` (built into the
//! binary). Pure: the same manifests give the same bytes, which is what keeps
//! `apply` followed by `plan` empty. `phoenix render` prints them.

pub mod dnsmasq;
pub mod names;
pub mod nginx;
pub mod traefik;

use std::sync::OnceLock;

/// The built-in templates, by name.
const TEMPLATES: &[(&str, &str)] = &[
    (
        "dnsmasq.conf",
        include_str!("../../templates/dnsmasq.conf.tera"),
    ),
    (
        "traefik_dynamic.yml",
        include_str!("../../templates/traefik_dynamic.yml.tera"),
    ),
    (
        "nginx_gateway.conf",
        include_str!("../../templates/nginx_gateway.conf.tera"),
    ),
];

fn engine() -> Result<&'static tera::Tera, String> {
    static ENGINE: OnceLock<Result<tera::Tera, String>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let mut t = tera::Tera::default();
            t.autoescape_on(vec![]);
            t.add_raw_templates(TEMPLATES.iter().copied())
                .map_err(|e| format!("a built-in template does not parse: {e:?}"))?;
            Ok(t)
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Render a built-in template. The values come from the manifests, already
/// checked (names, addresses, paths), so an error here is a phoenix bug.
fn render(name: &str, ctx: &tera::Context) -> Result<String, String> {
    engine()?
        .render(name, ctx)
        .map_err(|e| format!("failed to render the {name} template: {e:?}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_template_parses() {
        super::engine().unwrap();
    }
}
