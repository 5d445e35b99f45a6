//! `dns.records`: the dnsmasq records of the site, one drop-in file on the
//! Proxmox host, managed when `dns_server.enabled` is true in the hypervisor
//! config. The records come from [`crate::render::names`].
//!
//! | attribute | from | notes |
//! |-----------|------|-------|
//! | `path`    | fixed: `/etc/dnsmasq.d/00-phoenix-internal.conf` (the seed's) | identity; forces replacement |
//! | `records` | every record, `<name> <address>` one per line, sorted | a text, so the plan shows each record added, removed or changed |
//! | `content` | the whole file | a text: the plan shows a unified diff |
//! | `mode`    | `644` | |
//!
//! Apply (`providers/host/dns.rs`) checks the new file with `dnsmasq --test`
//! before it replaces the old one, then restarts dnsmasq (it reads `host-record`
//! lines only at start: a SIGHUP re-reads hosts files, not its configuration).

use serde_json::{Map, json};

use super::{Address, DesiredResource, Kind, KindSchema};
use crate::manifest::{Diagnostic, Site};
use crate::render::{dnsmasq, names};

pub const KIND: &str = "dns";
/// The one address of this kind.
pub const NAME: &str = "records";
/// The file's mode, as `stat -c %a` prints it.
pub const MODE: &str = "644";

pub static SCHEMA: KindSchema = KindSchema {
    kind: KIND,
    provider: "host",
    force_new: &["path"],
    grow_only: &[],
    sensitive: &[],
    destroy_protected: false,
    keep_on_delete: false,
    update_notes: super::no_notes,
};

pub fn address() -> Address {
    Address::new(KIND, NAME)
}

/// Whether the site asks phoenix to manage dnsmasq.
pub fn enabled(site: &Site) -> bool {
    site.hypervisor
        .dns_server
        .as_ref()
        .and_then(|d| d.enabled)
        .unwrap_or(false)
}

/// The attributes of a records file with this content.
pub fn attrs_of(content: &str, mode: &str) -> super::Attrs {
    let mut a = Map::new();
    a.insert("path".into(), json!(dnsmasq::PATH));
    a.insert(
        "records".into(),
        json!(dnsmasq::records_text(&dnsmasq::parse_records(content))),
    );
    a.insert("content".into(), json!(content));
    a.insert("mode".into(), json!(mode));
    a
}

pub struct DnsKind;

impl Kind for DnsKind {
    fn schema(&self) -> &'static KindSchema {
        &SCHEMA
    }

    fn desired(&self, site: &Site) -> Result<Vec<DesiredResource>, Vec<Diagnostic>> {
        if !enabled(site) {
            return Ok(Vec::new());
        }
        let n = names::derive(site);
        if !n.record_errors.is_empty() {
            return Err(n.record_errors);
        }
        let content = dnsmasq::render(&n).map_err(|e| vec![crate::render::nginx::internal(e)])?;
        Ok(vec![DesiredResource {
            address: address(),
            attrs: attrs_of(&content, MODE),
            create: Map::new(),
            depends_on: Vec::new(),
        }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_enables_it() {
        let site = crate::render::names::tests::seed();
        let d = DnsKind.desired(&site).unwrap();
        assert_eq!(d.len(), 1);
        let a = &d[0].attrs;
        assert_eq!(a["path"], json!("/etc/dnsmasq.d/00-phoenix-internal.conf"));
        let records = a["records"].as_str().unwrap();
        assert_eq!(records.lines().count(), 21);
        assert!(
            records.contains("ollama.internal.thinkheads.ai 10.0.0.153\n"),
            "{records}"
        );
        assert!(
            records.contains("ca.internal.thinkheads.ai 10.0.0.10\n"),
            "{records}"
        );
    }

    #[test]
    fn records_are_read_back_from_the_file() {
        let a = attrs_of(
            "# x\nlocal=/lab/\nhost-record=b.lab,192.0.2.2\nhost-record=a.lab,192.0.2.1\n",
            "600",
        );
        assert_eq!(a["records"], json!("a.lab 192.0.2.1\nb.lab 192.0.2.2\n"));
        assert_eq!(a["mode"], json!("600"));
    }
}
