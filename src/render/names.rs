//! What the manifests say about names and routes: which containers are the
//! gateway and Traefik, every routed hostname with its backend, and every DNS
//! record, each with where it came from. `dns.records` and the `file.*` kinds
//! are built from this one derivation, so a name DNS points at the gateway is a
//! name the gateway serves and Traefik routes. Pure: no I/O.
//!
//! The rules (docs/decisions/0012-host-layer.md), names under the site's
//! `domain_name` unless written as a full name:
//!
//! | record | resolves to | from |
//! |--------|-------------|------|
//! | a guest's `dns_records[]` entry | its `ip` | explicit: wins over everything |
//! | `portainer_agent_hostname` of a VM | the VM | direct: the Portainer server connects to the agent itself |
//! | `step_ca.dns_name` (the guest whose `traefik_service` names it) | that guest | direct: step-ca serves its own TLS on :9000 |
//! | the gateway's own `traefik_service` name | the gateway | direct: routing it through Traefik would loop |
//! | every other `traefik_service` name | the gateway | routed: Nginx terminates TLS, Traefik forwards |
//! | `Host(...)` of a stack's Traefik router, on the VM deploying it | the gateway | routed, to the VM's published port |
//! | `<name>` of every guest with a static address | the guest | guest name (lowest precedence) |
//!
//! Without an ingress (no gateway and Traefik container), nothing is routed:
//! a `traefik_service` name resolves to its own guest and stack hostnames
//! get no record.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde::Serialize;

use crate::manifest::files::{
    DnsRecord, HYPERVISOR_FILE, LXC_FILE, LxcConfig, STACK_MANIFEST, STACKS_DIR, TraefikService,
    VM_FILE,
};
use crate::manifest::locate::{Segment, format_path};
use crate::manifest::{Diagnostic, GuestKind, Site};

/// The seed's gateway container (`pct exec 101` in its sync).
pub const DEFAULT_GATEWAY: u32 = 101;
/// The seed's Traefik container.
pub const DEFAULT_TRAEFIK: u32 = 102;
/// Traefik's entry point the gateway proxies to (the seed's static config: `web`, `:80`).
pub const TRAEFIK_ENTRYPOINT: (&str, u16) = ("web", 80);

/// A guest playing an ingress role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoleGuest {
    pub id: u32,
    pub ip: IpAddr,
}

impl RoleGuest {
    pub fn address(&self) -> crate::model::Address {
        crate::model::Address::new("lxc", self.id.to_string())
    }
}

/// The containers that serve the routed hostnames.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ingress {
    pub gateway: RoleGuest,
    pub traefik: RoleGuest,
}

impl Ingress {
    /// `10.0.0.12:80`: where the gateway proxies to.
    pub fn traefik_endpoint(&self) -> String {
        SocketAddr::new(self.traefik.ip, TRAEFIK_ENTRYPOINT.1).to_string()
    }
}

/// One Traefik router and its service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Route {
    /// The router's and service's name in Traefik.
    pub name: String,
    /// The router's rule, e.g. ``Host(`ollama.internal.example`)``.
    pub rule: String,
    /// The hostnames the rule matches: what DNS points at the gateway and Nginx serves.
    pub hosts: Vec<String>,
    /// `http://10.0.0.155:11434`.
    pub url: String,
    /// For an HTTPS backend: the name its certificate carries, verified against the site's root CA.
    pub tls_server_name: Option<String>,
    /// Where it came from, for comments in the generated files.
    pub source: String,
}

/// Why a DNS record exists; the lower wins when two disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Precedence {
    Explicit,
    Direct,
    Routed,
    GuestName,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Record {
    pub ip: IpAddr,
    pub precedence: Precedence,
    pub source: String,
    /// The manifest file and JSON path it comes from, for diagnostics.
    #[serde(skip)]
    pub at: (String, Vec<Segment>),
}

/// Everything derived; errors split by the kind that reports them, so one
/// mistake is reported once.
#[derive(Debug, Clone, Default)]
pub struct Names {
    /// The site's `domain_name`, lower case.
    pub domain: String,
    pub ingress: Option<Ingress>,
    /// Sorted by name.
    pub routes: Vec<Route>,
    /// By full name.
    pub records: BTreeMap<String, Record>,
    /// What was left out of the routes, and why (comments in the Traefik file).
    pub notes: Vec<String>,
    /// Problems with the DNS records (reported by `dns.records`).
    pub record_errors: Vec<Diagnostic>,
    /// Problems with the ingress or the routes (reported by the `file` kind).
    pub route_errors: Vec<Diagnostic>,
}

/// Whether `s` is a DNS name phoenix writes: lower-case labels of letters,
/// digits and inner hyphens.
pub fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

/// `name` under `domain`, unless it already ends with it. Lower case.
pub fn fqdn(name: &str, domain: &str) -> String {
    let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
    if domain.is_empty() || name == domain || name.ends_with(&format!(".{domain}")) {
        name
    } else {
        format!("{name}.{domain}")
    }
}

/// The address of a `network_config.ip` (`10.0.0.5/24`); `None` for `dhcp` and the like.
pub fn static_ip(cidr: &str) -> Option<IpAddr> {
    cidr.split('/').next()?.trim().parse().ok()
}

/// `https` for the usual TLS ports, else `http`, unless the manifest says.
fn scheme_of(ts: &TraefikService) -> Result<&'static str, String> {
    match ts.scheme.as_deref().map(str::to_ascii_lowercase).as_deref() {
        Some("http") => Ok("http"),
        Some("https") => Ok("https"),
        Some(other) => Err(format!("`scheme` is `{other}`; use `http` or `https`")),
        None if matches!(ts.port, 443 | 8443 | 9443) => Ok("https"),
        None => Ok("http"),
    }
}

fn url(scheme: &str, ip: IpAddr, port: u16) -> String {
    format!("{scheme}://{}", SocketAddr::new(ip, port))
}

/// A guest as this module needs it.
struct Guest<'a> {
    id: u32,
    kind: GuestKind,
    name: &'a str,
    ip: Option<IpAddr>,
    ts: Option<&'a TraefikService>,
    dns_records: &'a [DnsRecord],
    agent_hostname: Option<&'a str>,
    is_template: bool,
    file: &'static str,
    /// The JSON path of the guest's entry.
    path: Vec<Segment>,
}

impl Guest<'_> {
    fn address(&self) -> String {
        format!("{}.{}", self.kind, self.id)
    }
}

fn guests(site: &Site) -> Vec<Guest<'_>> {
    let mut out: Vec<Guest<'_>> = site
        .lxcs()
        .into_iter()
        .map(|(id, c)| Guest {
            id,
            kind: GuestKind::Lxc,
            name: &c.name,
            ip: static_ip(&c.network_config.ip),
            ts: c.traefik_service.as_ref(),
            dns_records: c.dns_records.as_deref().unwrap_or_default(),
            agent_hostname: None,
            is_template: false,
            file: LXC_FILE,
            path: vec![Segment::key("lxc_configs"), Segment::key(id.to_string())],
        })
        .collect();
    for (i, vm) in site.vms.vms.iter().enumerate() {
        out.push(Guest {
            id: vm.vmid,
            kind: GuestKind::Vm,
            name: &vm.name,
            ip: vm.network_config.as_ref().and_then(|n| static_ip(&n.ip)),
            ts: vm.traefik_service.as_ref(),
            dns_records: vm.dns_records.as_deref().unwrap_or_default(),
            agent_hostname: vm.portainer_agent_hostname.as_deref(),
            is_template: vm.is_template.unwrap_or(false),
            file: VM_FILE,
            path: vec![Segment::key("vms"), Segment::Index(i)],
        });
    }
    out.sort_by_key(|g| (g.id, g.kind));
    out
}

fn diag(site: &Site, file: &str, path: &[Segment], message: String, help: &str) -> Diagnostic {
    let file = PathBuf::from(file);
    Diagnostic::error(file.clone(), message)
        .with_path(format_path(path))
        .with_position(site.sources.locate(&file, path))
        .with_help(help)
}

fn with(path: &[Segment], more: &[&str]) -> Vec<Segment> {
    let mut p = path.to_vec();
    p.extend(more.iter().map(|k| Segment::key(*k)));
    p
}

/// The containers the ingress roles name, `(gateway, traefik)`, even when the
/// block says `"enabled": false`: where generated files are found to remove them.
pub fn ingress_ids(site: &Site) -> Option<(u32, u32)> {
    let block = site.hypervisor.ingress.as_ref();
    let gw = block
        .and_then(|b| b.gateway)
        .map_or(DEFAULT_GATEWAY, |g| g.0);
    let tr = block
        .and_then(|b| b.traefik)
        .map_or(DEFAULT_TRAEFIK, |g| g.0);
    (site.lxc(gw).is_some() && site.lxc(tr).is_some() && gw != tr).then_some((gw, tr))
}

/// Resolve the ingress roles: the `ingress` block, else the seed's 101 and 102.
fn ingress(site: &Site, errors: &mut Vec<Diagnostic>) -> Option<Ingress> {
    let block = site.hypervisor.ingress.as_ref();
    if block.and_then(|b| b.enabled) == Some(false) {
        return None;
    }
    let role = |key: &str, given: Option<u32>, default: u32, errors: &mut Vec<Diagnostic>| {
        let id = given.unwrap_or(default);
        let path = [Segment::key("ingress"), Segment::key(key)];
        let lxc: Option<&LxcConfig> = site.lxc(id);
        match lxc {
            Some(c) => match static_ip(&c.network_config.ip) {
                Some(ip) => Some(RoleGuest { id, ip }),
                None => {
                    errors.push(diag(
                        site,
                        LXC_FILE,
                        &[
                            Segment::key("lxc_configs"),
                            Segment::key(id.to_string()),
                            Segment::key("network_config"),
                            Segment::key("ip"),
                        ],
                        format!(
                            "container {id} is the ingress {key}, which needs a static address, not `{}`",
                            c.network_config.ip
                        ),
                        "give it an address like `10.0.0.12/24`",
                    ));
                    None
                }
            },
            None if given.is_some() => {
                let what = if site.vm(id).is_some() {
                    "is a VM; the ingress guests must be containers"
                } else {
                    "is not in etc/phoenix_lxc_configs.json"
                };
                errors.push(diag(
                    site,
                    HYPERVISOR_FILE,
                    &path,
                    format!("ingress {key} {id} {what}"),
                    "name a container of etc/phoenix_lxc_configs.json, or set `\"enabled\": false`",
                ));
                None
            }
            None => None,
        }
    };
    let gateway = role(
        "gateway",
        block.and_then(|b| b.gateway).map(|g| g.0),
        DEFAULT_GATEWAY,
        errors,
    );
    let traefik = role(
        "traefik",
        block.and_then(|b| b.traefik).map(|g| g.0),
        DEFAULT_TRAEFIK,
        errors,
    );
    let (gateway, traefik) = (gateway?, traefik?);
    if gateway.id == traefik.id {
        errors.push(diag(
            site,
            HYPERVISOR_FILE,
            &[Segment::key("ingress")],
            format!(
                "container {} cannot be both the gateway and Traefik",
                gateway.id
            ),
            "name two containers",
        ));
        return None;
    }
    Some(Ingress { gateway, traefik })
}

struct Builder<'s> {
    site: &'s Site,
    names: Names,
}

impl Builder<'_> {
    fn record(
        &mut self,
        at: (&str, Vec<Segment>),
        name: String,
        ip: IpAddr,
        precedence: Precedence,
        source: String,
    ) {
        match self.names.records.get(&name) {
            Some(r) if r.ip == ip || r.precedence < precedence => {}
            Some(r) if r.precedence == precedence => {
                let message = format!(
                    "`{name}` would resolve to {} ({}) and to {ip} ({source})",
                    r.ip, r.source
                );
                let d = diag(
                    self.site,
                    at.0,
                    &at.1,
                    message,
                    "rename one of them, or give the name once in a guest's `dns_records`",
                );
                self.names.record_errors.push(d);
            }
            _ => {
                self.names.records.insert(
                    name,
                    Record {
                        ip,
                        precedence,
                        source,
                        at: (at.0.to_string(), at.1),
                    },
                );
            }
        }
    }
}

/// Derive the names and routes of a site.
pub fn derive(site: &Site) -> Names {
    let domain = site.hypervisor.domain_name.trim().to_ascii_lowercase();
    let mut b = Builder {
        site,
        names: Names {
            domain: domain.clone(),
            ..Names::default()
        },
    };
    if !is_dns_name(&domain) {
        b.names.record_errors.push(diag(
            site,
            HYPERVISOR_FILE,
            &[Segment::key("domain_name")],
            format!("`domain_name` `{domain}` is not a DNS name"),
            "use lower-case labels of letters, digits and hyphens, e.g. `internal.example.org`",
        ));
    }
    let mut route_errors = Vec::new();
    let ingress = ingress(site, &mut route_errors);
    b.names.route_errors = route_errors;
    b.names.ingress = ingress.clone();
    let guests = guests(site);
    let ca_name = site
        .hypervisor
        .step_ca
        .as_ref()
        .and_then(|s| s.dns_name.as_deref())
        .map(|n| fqdn(n, &domain));
    let agent_names: BTreeMap<String, &Guest<'_>> = guests
        .iter()
        .filter_map(|g| Some((fqdn(g.agent_hostname?, &domain), g)))
        .collect();

    // Explicit records.
    for g in &guests {
        for (i, r) in g.dns_records.iter().enumerate() {
            let mut path = with(&g.path, &["dns_records"]);
            path.push(Segment::Index(i));
            let name = fqdn(&r.hostname, &domain);
            match (is_dns_name(&name), r.ip.trim().parse::<IpAddr>()) {
                (true, Ok(ip)) => b.record(
                    (g.file, path.clone()),
                    name,
                    ip,
                    Precedence::Explicit,
                    format!("{} dns_records", g.address()),
                ),
                (false, _) => b.names.record_errors.push(diag(
                    site,
                    g.file,
                    &with(&path, &["hostname"]),
                    format!("`{}` is not a DNS name", r.hostname),
                    "use lower-case labels of letters, digits and hyphens",
                )),
                (_, Err(_)) => b.names.record_errors.push(diag(
                    site,
                    g.file,
                    &with(&path, &["ip"]),
                    format!("`{}` is not an IP address", r.ip),
                    "write the address alone, e.g. `10.0.0.20`",
                )),
            }
        }
    }

    // Portainer agents: their own name, on their own address.
    for (name, g) in &agent_names {
        match g.ip {
            Some(ip) if is_dns_name(name) => b.record(
                (g.file, with(&g.path, &["portainer_agent_hostname"])),
                name.clone(),
                ip,
                Precedence::Direct,
                format!("{} portainer_agent_hostname", g.address()),
            ),
            _ => {}
        }
    }

    // traefik_service names: routed through the gateway, or direct.
    let mut routes: BTreeMap<String, Route> = BTreeMap::new();
    for g in &guests {
        let Some(ts) = g.ts else { continue };
        let ts_path = with(&g.path, &["traefik_service"]);
        let name = ts.name.trim().to_ascii_lowercase();
        let host = fqdn(&name, &domain);
        if !is_dns_name(&host) || name.contains('.') {
            b.names.route_errors.push(diag(
                site,
                g.file,
                &with(&ts_path, &["name"]),
                format!("traefik_service name `{}` is not a DNS label", ts.name),
                "use lower-case letters, digits and hyphens, e.g. `ollama`",
            ));
            continue;
        }
        let source = format!("{} traefik_service", g.address());
        let Some(ip) = g.ip else {
            b.names.route_errors.push(diag(
                site,
                g.file,
                &ts_path,
                format!(
                    "{} has a traefik_service but no static address to route `{host}` to",
                    g.address()
                ),
                "give the guest a static address in `network_config.ip`, or remove its traefik_service",
            ));
            continue;
        };
        let Some(ing) = &ingress else {
            b.record(
                (g.file, ts_path.clone()),
                host,
                ip,
                Precedence::Direct,
                source,
            );
            continue;
        };
        if g.kind == GuestKind::Lxc && g.id == ing.gateway.id {
            b.record(
                (g.file, ts_path.clone()),
                host,
                ip,
                Precedence::Direct,
                format!("{source} (the gateway itself)"),
            );
            continue;
        }
        if ca_name.as_deref() == Some(host.as_str()) {
            b.record(
                (g.file, ts_path.clone()),
                host,
                ip,
                Precedence::Direct,
                format!("{source} (step_ca.dns_name)"),
            );
            continue;
        }
        if let Some(agent) = agent_names.get(&host) {
            b.names.notes.push(format!(
                "{host} ({source}) is not routed: it is {}'s Portainer agent name, resolved to the VM itself",
                agent.address()
            ));
            continue;
        }
        let scheme = match scheme_of(ts) {
            Ok(s) => s,
            Err(message) => {
                b.names.route_errors.push(diag(
                    site,
                    g.file,
                    &with(&ts_path, &["scheme"]),
                    message,
                    "`http` or `https`",
                ));
                continue;
            }
        };
        if let Some(other) = routes.get(&name) {
            b.names.route_errors.push(diag(
                site,
                g.file,
                &with(&ts_path, &["name"]),
                format!("traefik_service `{name}` is also {}", other.source),
                "give each traefik_service its own name",
            ));
            continue;
        }
        b.record(
            (g.file, ts_path.clone()),
            host.clone(),
            ing.gateway.ip,
            Precedence::Routed,
            format!("{source} (routed)"),
        );
        routes.insert(
            name.clone(),
            Route {
                name,
                rule: format!("Host(`{host}`)"),
                hosts: vec![host.clone()],
                url: url(scheme, ip, ts.port),
                tls_server_name: (scheme == "https").then_some(host),
                source,
            },
        );
    }

    // Stacks: the Traefik routers of their labels, on the VM that deploys them.
    if let Some(ing) = &ingress {
        for g in guests.iter().filter(|g| g.kind == GuestKind::Vm) {
            let Some(vm) = site.vm(g.id) else { continue };
            for stack_ref in &vm.docker_stacks {
                stack_routes(
                    &mut b,
                    &mut routes,
                    g,
                    &stack_ref.name,
                    stack_ref.environment(),
                    ing,
                );
            }
        }
    }

    // Guest names, lowest precedence.
    for g in guests.iter().filter(|g| !g.is_template) {
        let (Some(ip), name) = (g.ip, fqdn(g.name, &domain)) else {
            continue;
        };
        if is_dns_name(&name) {
            b.record(
                (g.file, with(&g.path, &["name"])),
                name,
                ip,
                Precedence::GuestName,
                format!("{} name", g.address()),
            );
        } else {
            b.names.record_errors.push(diag(
                site,
                g.file,
                &with(&g.path, &["name"]),
                format!("guest name `{}` does not make a DNS name", g.name),
                "use letters, digits, hyphens and dots",
            ));
        }
    }

    b.names.routes = routes.into_values().collect();
    b.names
}

/// The routers of one stack's Traefik labels, as routes to the VM deploying it.
fn stack_routes(
    b: &mut Builder<'_>,
    routes: &mut BTreeMap<String, Route>,
    vm: &Guest<'_>,
    stack: &str,
    env: &str,
    ing: &Ingress,
) {
    let domain = b.names.domain.clone();
    let Some(s) = b.site.stack(stack) else {
        return;
    };
    let Some(e) = s.manifest.environments.get(env) else {
        return;
    };
    let file = format!("{STACKS_DIR}/{stack}/{STACK_MANIFEST}");
    for (service, svc) in &e.services {
        let labels = parse_labels(&svc.traefik_labels);
        if labels.enable == Some(false) {
            continue;
        }
        for (router, r) in &labels.routers {
            let what = format!(
                "stack {stack} ({env}) router `{router}` on {}",
                vm.address()
            );
            let Some(rule) = &r.rule else { continue };
            let hosts: Vec<String> = rule_hosts(rule)
                .into_iter()
                .map(|h| fqdn(&h, &domain))
                .collect();
            if hosts.is_empty() {
                b.names
                    .notes
                    .push(format!("{what}: no Host(...) in its rule; not routed"));
                continue;
            }
            if let Some(h) = hosts.iter().find(|h| !is_dns_name(h)) {
                b.names
                    .notes
                    .push(format!("{what}: `{h}` is not a DNS name; not routed"));
                continue;
            }
            let svc_name = r.service.clone().or_else(|| {
                (labels.services.len() == 1).then(|| labels.services.keys().next().cloned())?
            });
            let Some(port) = svc_name
                .as_ref()
                .and_then(|n| labels.services.get(n))
                .and_then(|s| s.port)
            else {
                b.names.notes.push(format!(
                    "{what}: no `traefik.http.services.<name>.loadbalancer.server.port` label; not routed"
                ));
                continue;
            };
            let scheme = svc_name
                .as_ref()
                .and_then(|n| labels.services.get(n))
                .and_then(|s| s.scheme.clone())
                .unwrap_or_else(|| "http".into());
            if scheme != "http" && scheme != "https" {
                b.names
                    .notes
                    .push(format!("{what}: scheme `{scheme}`; not routed"));
                continue;
            }
            let Some(ip) = vm.ip else {
                b.names
                    .notes
                    .push(format!("{what}: the VM has no static address; not routed"));
                continue;
            };
            let taken: Vec<&String> = hosts
                .iter()
                .filter(|h| {
                    b.names
                        .records
                        .get(*h)
                        .is_some_and(|r| r.precedence <= Precedence::Routed)
                })
                .collect();
            if !taken.is_empty() {
                let by: Vec<String> = taken
                    .iter()
                    .map(|h| format!("{h} ({})", b.names.records[*h].source))
                    .collect();
                b.names.notes.push(format!(
                    "{what}: not routed, its hosts are already taken: {}",
                    by.join(", ")
                ));
                continue;
            }
            if !is_traefik_name(router) {
                b.names.notes.push(format!(
                    "{what}: the router name is not usable in Traefik; not routed"
                ));
                continue;
            }
            let name = format!("{stack}-{router}");
            if routes.contains_key(&name) {
                continue;
            }
            for h in &hosts {
                b.record(
                    (
                        &file,
                        vec![
                            Segment::key("environments"),
                            Segment::key(env),
                            Segment::key("services"),
                            Segment::key(service.as_str()),
                            Segment::key("traefik_labels"),
                        ],
                    ),
                    h.clone(),
                    ing.gateway.ip,
                    Precedence::Routed,
                    format!("{file} router `{router}` (routed)"),
                );
            }
            routes.insert(
                name.clone(),
                Route {
                    name,
                    rule: rule.clone(),
                    tls_server_name: (scheme == "https").then(|| hosts[0].clone()),
                    hosts,
                    url: url(&scheme, ip, port),
                    source: format!("{file} service `{service}`, {}", vm.address()),
                },
            );
        }
    }
}

/// Traefik names phoenix writes unquoted: letters, digits, `-` and `_`.
pub fn is_traefik_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[derive(Debug, Default)]
struct LabelRouter {
    rule: Option<String>,
    service: Option<String>,
}

#[derive(Debug, Default)]
struct LabelService {
    port: Option<u16>,
    scheme: Option<String>,
}

#[derive(Debug, Default)]
struct Labels {
    enable: Option<bool>,
    routers: BTreeMap<String, LabelRouter>,
    services: BTreeMap<String, LabelService>,
}

/// The parts of Traefik's Docker labels phoenix routes by.
fn parse_labels(labels: &[String]) -> Labels {
    let mut out = Labels::default();
    for l in labels {
        let Some((key, value)) = l.split_once('=') else {
            continue;
        };
        let value = value.trim().to_string();
        let parts: Vec<&str> = key.trim().split('.').collect();
        match parts.as_slice() {
            ["traefik", "enable"] => out.enable = Some(value.eq_ignore_ascii_case("true")),
            ["traefik", "http", "routers", r, "rule"] => {
                out.routers.entry((*r).to_string()).or_default().rule = Some(value);
            }
            ["traefik", "http", "routers", r, "service"] => {
                out.routers.entry((*r).to_string()).or_default().service = Some(value);
            }
            ["traefik", "http", "routers", r, ..] => {
                out.routers.entry((*r).to_string()).or_default();
            }
            [
                "traefik",
                "http",
                "services",
                s,
                "loadbalancer",
                "server",
                "port",
            ] => {
                out.services.entry((*s).to_string()).or_default().port = value.parse().ok();
            }
            [
                "traefik",
                "http",
                "services",
                s,
                "loadbalancer",
                "server",
                "scheme",
            ] => {
                out.services.entry((*s).to_string()).or_default().scheme =
                    Some(value.to_ascii_lowercase());
            }
            _ => {}
        }
    }
    out
}

/// The hostnames of every `Host(...)` in a Traefik rule (backquoted or quoted arguments).
pub fn rule_hosts(rule: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = rule;
    while let Some(i) = rest.find("Host(") {
        // `HostRegexp(` and `HostSNI(` are other matchers.
        let before = &rest[..i];
        rest = &rest[i + 5..];
        if before.ends_with(|c: char| c.is_ascii_alphanumeric()) {
            continue;
        }
        let Some(end) = rest.find(')') else { break };
        for arg in rest[..end].split(',') {
            let a = arg
                .trim()
                .trim_matches(|c| c == '`' || c == '"' || c == '\'');
            if !a.is_empty() {
                out.push(a.to_string());
            }
        }
        rest = &rest[end..];
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn seed() -> Site {
        let root = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/fixtures/phoenix-seed"
        );
        crate::manifest::load(std::path::Path::new(root))
            .unwrap()
            .site
    }

    #[test]
    fn dns_names() {
        assert!(is_dns_name("granite-3.3-8b-fp8.internal.thinkheads.ai"));
        assert!(is_dns_name("a"));
        for bad in [
            "",
            "Upper.case",
            "a..b",
            "-a",
            "a-",
            "a_b",
            "a b",
            &"x".repeat(64),
        ] {
            assert!(!is_dns_name(bad), "{bad}");
        }
        assert_eq!(
            fqdn("Copy-Base", "internal.example"),
            "copy-base.internal.example"
        );
        assert_eq!(
            fqdn("x.internal.example", "internal.example"),
            "x.internal.example"
        );
        assert_eq!(
            fqdn("x.internal.example.", "internal.example"),
            "x.internal.example"
        );
        assert_eq!(static_ip("10.0.0.5/24"), Some("10.0.0.5".parse().unwrap()));
        assert_eq!(static_ip("dhcp"), None);
    }

    #[test]
    fn hosts_of_traefik_rules() {
        assert_eq!(rule_hosts("Host(`a.example`)"), ["a.example"]);
        assert_eq!(
            rule_hosts("Host(`a.example`) || Host(\"b.example\") && PathPrefix(`/x`)"),
            ["a.example", "b.example"]
        );
        assert_eq!(rule_hosts("Host(`a`, `b`)"), ["a", "b"]);
        assert!(rule_hosts("HostRegexp(`{x:.+}`)").is_empty());
        assert!(rule_hosts("PathPrefix(`/`)").is_empty());
    }

    #[test]
    fn schemes() {
        let ts = |port, scheme: Option<&str>| TraefikService {
            name: "x".into(),
            port,
            scheme: scheme.map(str::to_string),
        };
        assert_eq!(scheme_of(&ts(9443, None)), Ok("https"));
        assert_eq!(scheme_of(&ts(443, None)), Ok("https"));
        assert_eq!(scheme_of(&ts(8000, None)), Ok("http"));
        assert_eq!(scheme_of(&ts(9000, Some("HTTPS"))), Ok("https"));
        assert!(scheme_of(&ts(9000, Some("tcp"))).is_err());
    }

    /// The seed's records, with the seed's inconsistencies fixed (reference 1.9
    /// items 4, 7, 8): routed names point at the gateway, direct ones at their guest.
    #[test]
    fn seed_records_and_routes() {
        let n = derive(&seed());
        assert!(n.record_errors.is_empty(), "{:?}", n.record_errors);
        assert!(n.route_errors.is_empty(), "{:?}", n.route_errors);
        let ing = n.ingress.clone().unwrap();
        assert_eq!((ing.gateway.id, ing.traefik.id), (101, 102));
        assert_eq!(ing.traefik_endpoint(), "10.0.0.12:80");
        let records: Vec<(String, String)> = n
            .records
            .iter()
            .map(|(k, r)| {
                (
                    k.trim_end_matches(".internal.thinkheads.ai").to_string(),
                    r.ip.to_string(),
                )
            })
            .collect();
        let want: Vec<(String, String)> = [
            ("ca", "10.0.0.10"),
            ("copy-base", "10.0.0.200"),
            ("copy-cuda12.8", "10.0.0.201"),
            ("copy-vllm-gpu0", "10.0.0.221"),
            ("copy-vllm-gpu1", "10.0.0.222"),
            ("copy-vllm-gpux2", "10.0.0.220"),
            ("drphoenix", "10.0.0.102"),
            ("granite-3.3-8b-fp8", "10.0.0.142"),
            ("granite-3b", "10.0.0.153"),
            ("granite-embedding", "10.0.0.153"),
            ("llamacpp-gpu0", "10.0.0.157"),
            ("llamacpp", "10.0.0.153"),
            ("nginx-phoenix", "10.0.0.153"),
            ("nginx", "10.0.0.153"),
            ("ollama-gpu0", "10.0.0.155"),
            ("ollama", "10.0.0.153"),
            ("portainer-agent", "10.0.0.102"),
            ("portainer", "10.0.0.153"),
            ("qdrant", "10.0.0.153"),
            ("step-ca", "10.0.0.10"),
            ("traefik-internal", "10.0.0.12"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(records, want);
        let routes: Vec<(&str, &str, Option<&str>)> = n
            .routes
            .iter()
            .map(|r| {
                (
                    r.name.as_str(),
                    r.url.as_str(),
                    r.tls_server_name.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            routes,
            [
                ("granite-3b", "http://10.0.0.142:8000", None),
                ("granite-embedding", "http://10.0.0.141:8000", None),
                ("llamacpp", "http://10.0.0.157:8081", None),
                ("ollama", "http://10.0.0.155:11434", None),
                (
                    "portainer",
                    "https://10.0.0.111:9443",
                    Some("portainer.internal.thinkheads.ai")
                ),
                ("qdrant_service-qdrant", "http://10.0.0.102:6333", None),
            ]
        );
        let notes = n.notes.join("\n");
        assert!(
            notes.contains(
                "portainer-agent.internal.thinkheads.ai (vm.1002 traefik_service) is not routed"
            ),
            "{notes}"
        );
        assert!(notes.contains("stack portainer_service (production) router `portainer` on vm.1001: not routed, its hosts are already taken"), "{notes}");
    }

    fn site_with(hyper: serde_json::Value, lxcs: serde_json::Value) -> Site {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        let mut h = serde_json::json!({
            "domain_name": "lab.example",
            "network": {"interfaces": {"name": "vmbr0", "address": "192.0.2.13/24"}}
        });
        for (k, v) in hyper.as_object().unwrap() {
            h[k] = v.clone();
        }
        let w = |f: &str, v: &serde_json::Value| {
            std::fs::write(dir.path().join(f), serde_json::to_string(v).unwrap()).unwrap()
        };
        w("etc/phoenix_hypervisor_config.json", &h);
        w(
            "etc/phoenix_lxc_configs.json",
            &serde_json::json!({"lxc_configs": lxcs}),
        );
        w(
            "etc/phoenix_vm_configs.json",
            &serde_json::json!({"vms": []}),
        );
        crate::manifest::load(dir.path()).unwrap().site
    }

    fn ct(name: &str, ip: &str, ts: Option<serde_json::Value>) -> serde_json::Value {
        let mut v = serde_json::json!({
            "name": name, "memory_mb": 512, "storage_pool": "local-lvm", "storage_size_gb": 4,
            "template": "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
            "network_config": {"name": "eth0", "bridge": "vmbr0", "ip": ip}
        });
        if let Some(ts) = ts {
            v["traefik_service"] = ts;
        }
        v
    }

    #[test]
    fn without_ingress_service_names_resolve_to_their_guest() {
        let s = site_with(
            serde_json::json!({}),
            serde_json::json!({"300": ct("app", "192.0.2.30/24", Some(serde_json::json!({"name": "web", "port": 80})))}),
        );
        let n = derive(&s);
        assert!(n.ingress.is_none());
        assert!(n.routes.is_empty());
        assert_eq!(n.records["web.lab.example"].ip.to_string(), "192.0.2.30");
        assert_eq!(
            n.records["app.lab.example"].precedence,
            Precedence::GuestName
        );
    }

    #[test]
    fn explicit_ingress_and_its_errors() {
        let lxcs = serde_json::json!({
            "601": ct("gw", "192.0.2.61/24", None),
            "602": ct("tr", "192.0.2.62/24", None),
            "603": ct("app", "192.0.2.63/24", Some(serde_json::json!({"name": "web", "port": 8443}))),
            "604": ct("dup", "192.0.2.64/24", Some(serde_json::json!({"name": "web", "port": 80}))),
        });
        let s = site_with(
            serde_json::json!({"ingress": {"gateway": 601, "traefik": 602}}),
            lxcs.clone(),
        );
        let n = derive(&s);
        assert_eq!(n.ingress.as_ref().unwrap().gateway.id, 601);
        assert_eq!(n.routes.len(), 1);
        assert_eq!(n.routes[0].url, "https://192.0.2.63:8443");
        assert_eq!(n.route_errors.len(), 1, "{:?}", n.route_errors);
        assert!(
            n.route_errors[0]
                .message
                .contains("also lxc.603 traefik_service")
        );
        assert_eq!(n.records["web.lab.example"].ip.to_string(), "192.0.2.61");

        let s = site_with(
            serde_json::json!({"ingress": {"gateway": 699}}),
            lxcs.clone(),
        );
        let n = derive(&s);
        assert!(n.ingress.is_none());
        assert!(
            n.route_errors[0]
                .message
                .contains("ingress gateway 699 is not in"),
            "{:?}",
            n.route_errors
        );

        let s = site_with(
            serde_json::json!({"ingress": {"enabled": false, "gateway": 601, "traefik": 602}}),
            lxcs,
        );
        assert!(derive(&s).ingress.is_none());
    }

    #[test]
    fn conflicting_records_of_one_precedence_are_errors() {
        let s = site_with(
            serde_json::json!({}),
            serde_json::json!({"300": ct("same", "192.0.2.30/24", None), "301": ct("Same", "192.0.2.31/24", None)}),
        );
        let n = derive(&s);
        assert_eq!(n.record_errors.len(), 1);
        assert!(n.record_errors[0].message.contains("`same.lab.example` would resolve to 192.0.2.30 (lxc.300 name) and to 192.0.2.31 (lxc.301 name)"), "{:?}", n.record_errors);
    }
}
