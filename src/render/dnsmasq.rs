//! The host's dnsmasq drop-in: one `host-record=<name>,<address>` per record
//! (an A or AAAA record and its PTR, for that exact name), grouped by why the
//! record exists, and `local=/<domain>/` so that unknown names of the site's
//! domain are not asked upstream.

use serde::Serialize;
use serde_json::json;

use super::names::{Names, Precedence};

/// Where the drop-in lives on the host: the seed's file, so a seed host's file
/// is taken over (`phoenix import dns.records`) instead of left beside it.
pub const PATH: &str = "/etc/dnsmasq.d/00-phoenix-internal.conf";

#[derive(Serialize)]
struct Group {
    title: &'static str,
    records: Vec<Rec>,
}

#[derive(Serialize)]
struct Rec {
    name: String,
    ip: String,
}

fn title(p: Precedence) -> &'static str {
    match p {
        Precedence::Explicit => "Written in the guests' dns_records:",
        Precedence::Direct => {
            "Served by the guest itself (the Portainer agents, step-ca, the gateway):"
        }
        Precedence::Routed => "Routed: Nginx on the gateway terminates TLS, Traefik forwards:",
        Precedence::GuestName => "The guests' names:",
    }
}

/// The records as the `records` attribute shows them: `<name> <address>`, one
/// per line, sorted by name.
pub fn records_text(records: &[(String, String)]) -> String {
    let mut lines: Vec<String> = records
        .iter()
        .map(|(n, ip)| format!("{n} {ip}\n"))
        .collect();
    lines.sort();
    lines.concat()
}

/// The records of a drop-in file, as `(name, address)`: its `host-record` lines.
pub fn parse_records(content: &str) -> Vec<(String, String)> {
    content
        .lines()
        .filter_map(|l| l.trim().strip_prefix("host-record="))
        .filter_map(|rest| {
            let mut parts = rest.split(',');
            let name = parts.next()?.trim();
            // `host-record=<name>[,<name>...],<address>[,<address>][,<ttl>]`: phoenix writes one of each.
            let ip = parts.next()?.trim();
            Some((name.to_string(), ip.to_string()))
        })
        .collect()
}

pub fn render(names: &Names) -> Result<String, String> {
    let mut groups: Vec<Group> = Vec::new();
    for p in [
        Precedence::Explicit,
        Precedence::Direct,
        Precedence::Routed,
        Precedence::GuestName,
    ] {
        let records: Vec<Rec> = names
            .records
            .iter()
            .filter(|(_, r)| r.precedence == p)
            .map(|(n, r)| Rec {
                name: n.clone(),
                ip: r.ip.to_string(),
            })
            .collect();
        if !records.is_empty() {
            groups.push(Group {
                title: title(p),
                records,
            });
        }
    }
    let ctx = tera::Context::from_value(json!({
        "domain": names.domain,
        "groups": groups,
    }))
    .map_err(|e| e.to_string())?;
    super::render("dnsmasq.conf", &ctx)
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
        let parsed = parse_records(&text);
        assert_eq!(parsed.len(), names.records.len());
        let want: Vec<(String, String)> = names
            .records
            .iter()
            .map(|(n, r)| (n.clone(), r.ip.to_string()))
            .collect();
        assert_eq!(records_text(&parsed), records_text(&want));
    }
}
