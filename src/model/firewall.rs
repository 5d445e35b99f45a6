//! `firewall.cluster` and `firewall.<guest id>`: the Proxmox firewall of the
//! datacenter and of each guest. Their attributes, how the manifests produce
//! them, the two-way mapping of rules and options to the PVE API, and the
//! position-aware edit script that turns one ordered rule list into another.
//! All pure, so every normalization row and every edit case is unit-tested;
//! `providers/proxmox/firewall.rs` only carries the edits out.
//!
//! | attribute    | `firewall.cluster`                     | `firewall.<id>`                              | PVE |
//! |--------------|----------------------------------------|----------------------------------------------|-----|
//! | `enable`     | `enabled` (when given)                 | `firewall.enabled` (when given)              | options `enable`; absent = off, the cluster's time stamp = on |
//! | `policy_in`  | `default_input_policy` (when given)    | -                                            | options `policy_in` |
//! | `policy_out` | `default_output_policy` (when given)   | -                                            | options `policy_out` |
//! | `rules`      | `global_firewall_rules`                | `firewall.rules`, then the `firewall_rules` of the stacks the VM deploys | `rules`, by position |
//! | `rule_count` | the number of rules                    | the same                                     | |
//!
//! `rules` is an object keyed by position (`"0"`, `"1"`, ...) whose values are
//! the rules in the syntax of PVE's `.fw` files (`IN ACCEPT -source 10.0.0.0/24
//! -p tcp -dport 443 # comment`, `|` in front of a disabled rule), so a plan
//! names each changed position with its rule before and after. `rule_count`
//! makes a list that only got shorter or longer at its end a change too: the
//! diff compares only the positions the manifests name. See
//! `docs/decisions/0007-firewall-rules.md`.
//!
//! A guest's firewall has no existence of its own in PVE: it is a file that the
//! first write creates. So "exists" means the guest exists and its firewall
//! holds rules or options ([`is_pristine`] says when it does not), and a
//! firewall section is only turned into a resource when it asks for something
//! (an `enabled` flag, a policy or a rule): otherwise its create would write
//! nothing and it would look deleted at every plan.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{Map, Value, json};

use super::{Address, Attrs, DesiredResource, Kind, KindSchema};
use crate::manifest::files::{
    FirewallRule, HYPERVISOR_FILE, LXC_FILE, STACK_MANIFEST, STACKS_DIR, VM_FILE,
};
use crate::manifest::locate::{Segment, format_path, json_path};
use crate::manifest::{Diagnostic, GuestKind, Site};

pub const KIND: &str = "firewall";
/// The name of the datacenter firewall's address, `firewall.cluster`.
pub const CLUSTER: &str = "cluster";

pub static SCHEMA: KindSchema = KindSchema {
    kind: KIND,
    provider: "proxmox",
    force_new: &[],
    grow_only: &[],
    sensitive: &[],
    // "Deleting" a firewall resets what phoenix managed; nothing is lost that the manifests do not hold.
    destroy_protected: false,
    keep_on_delete: false,
    update_notes,
};

/// Options of the datacenter firewall phoenix manages.
pub const CLUSTER_OPTIONS: [&str; 3] = ["enable", "policy_in", "policy_out"];
/// Options of a guest firewall phoenix manages.
pub const GUEST_OPTIONS: [&str; 1] = ["enable"];

/// Turning a firewall on makes its input policy apply to everything no rule accepts.
fn update_notes(changed: &[String], live: &Attrs) -> Vec<String> {
    let enabling = changed.iter().any(|p| p == "enable")
        && live.get("enable").and_then(Value::as_bool) != Some(true);
    if enabling {
        vec![
            "turning the firewall on applies its input policy (Proxmox's default is DROP) to all traffic no rule accepts"
                .into(),
        ]
    } else {
        Vec::new()
    }
}

/// The address of the datacenter firewall.
pub fn cluster_address() -> Address {
    Address::new(KIND, CLUSTER)
}

pub struct FirewallKind;

impl Kind for FirewallKind {
    fn schema(&self) -> &'static KindSchema {
        &SCHEMA
    }

    fn destroyed_with_guest(&self) -> bool {
        true
    }

    fn desired(&self, site: &Site) -> Result<Vec<DesiredResource>, Vec<Diagnostic>> {
        let mut out = Vec::new();
        let mut errors = Vec::new();
        if let Some(r) = desired_cluster(site, &mut errors) {
            out.push(r);
        }
        for (id, kind) in site.guest_ids() {
            if let Some(r) = desired_guest(site, id, kind, &mut errors) {
                out.push(r);
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }
}

/// A rule list of the manifests and where it is written, for diagnostics.
struct RuleSource<'a> {
    rules: &'a [FirewallRule],
    file: PathBuf,
    path: Vec<Segment>,
}

fn collect_rules(
    sources: &[RuleSource<'_>],
    site: &Site,
    errors: &mut Vec<Diagnostic>,
) -> Vec<Rule> {
    let mut out = Vec::new();
    for src in sources {
        for (i, r) in src.rules.iter().enumerate() {
            let rule = Rule::from_manifest(r);
            if let Err(message) = rule.check() {
                let mut path = src.path.clone();
                path.push(Segment::Index(i));
                errors.push(
                    Diagnostic::error(src.file.clone(), message)
                        .with_path(format_path(&path))
                        .with_position(site.sources.locate(&src.file, &path))
                        .with_help(
                            "Proxmox needs `proto` (e.g. `tcp`) for a rule with `port` or `sport`",
                        ),
                );
            }
            out.push(rule);
        }
    }
    out
}

fn desired_cluster(site: &Site, errors: &mut Vec<Diagnostic>) -> Option<DesiredResource> {
    let fw = site.hypervisor.cluster_firewall()?;
    let base: Vec<Segment> = if site.hypervisor.firewall.is_some() {
        json_path!["firewall"].to_vec()
    } else {
        json_path!["shared_volumes", "firewall"].to_vec()
    };
    let mut path = base;
    path.push(Segment::key("global_firewall_rules"));
    let rules = collect_rules(
        &[RuleSource {
            rules: &fw.global_firewall_rules,
            file: HYPERVISOR_FILE.into(),
            path,
        }],
        site,
        errors,
    );
    let mut attrs = Map::new();
    if let Some(e) = fw.enabled {
        attrs.insert("enable".into(), json!(e));
    }
    if let Some(p) = &fw.default_input_policy {
        attrs.insert("policy_in".into(), json!(policy(p)));
    }
    if let Some(p) = &fw.default_output_policy {
        attrs.insert("policy_out".into(), json!(policy(p)));
    }
    if attrs.is_empty() && rules.is_empty() {
        return None;
    }
    insert_rules(&mut attrs, &rules);
    Some(DesiredResource {
        address: cluster_address(),
        attrs,
        create: Map::new(),
        depends_on: Vec::new(),
    })
}

fn desired_guest(
    site: &Site,
    id: u32,
    kind: GuestKind,
    errors: &mut Vec<Diagnostic>,
) -> Option<DesiredResource> {
    let mut sources = Vec::new();
    let firewall = match kind {
        GuestKind::Lxc => {
            let fw = site.lxc(id)?.firewall.as_ref();
            if let Some(fw) = fw {
                sources.push(RuleSource {
                    rules: &fw.rules,
                    file: LXC_FILE.into(),
                    path: json_path!["lxc_configs", id.to_string(), "firewall", "rules"].to_vec(),
                });
            }
            fw
        }
        GuestKind::Vm => {
            let index = site.vms.vms.iter().position(|v| v.vmid == id)?;
            let vm = &site.vms.vms[index];
            if let Some(fw) = &vm.firewall {
                sources.push(RuleSource {
                    rules: &fw.rules,
                    file: VM_FILE.into(),
                    path: json_path!["vms", index, "firewall", "rules"].to_vec(),
                });
            }
            // The seed's vm-manager appends each deployed stack's rules to the VM's own.
            // A stack or environment that does not exist is the lint's warning, not an error here.
            for stack_ref in &vm.docker_stacks {
                let env_name = stack_ref.environment();
                let Some(stack) = site.stack(&stack_ref.name) else {
                    continue;
                };
                let Some(env) = stack.manifest.environments.get(env_name) else {
                    continue;
                };
                sources.push(RuleSource {
                    rules: &env.firewall_rules,
                    file: PathBuf::from(STACKS_DIR)
                        .join(&stack.name)
                        .join(STACK_MANIFEST),
                    path: json_path!["environments", env_name, "firewall_rules"].to_vec(),
                });
            }
            vm.firewall.as_ref()
        }
    };
    let rules = collect_rules(&sources, site, errors);
    let enabled = firewall.and_then(|f| f.enabled);
    if enabled.is_none() && rules.is_empty() {
        return None;
    }
    let mut attrs = Map::new();
    if let Some(e) = enabled {
        attrs.insert("enable".into(), json!(e));
    }
    insert_rules(&mut attrs, &rules);
    Some(DesiredResource {
        address: Address::new(KIND, id.to_string()),
        attrs,
        create: Map::new(),
        depends_on: super::lxc::guest_address(site, id).into_iter().collect(),
    })
}

fn policy(p: &str) -> String {
    p.trim().to_ascii_uppercase()
}

fn insert_rules(attrs: &mut Attrs, rules: &[Rule]) {
    attrs.insert("rules".into(), rules_value(rules));
    attrs.insert("rule_count".into(), json!(rules.len()));
}

/// `{"0": "IN ACCEPT ...", "1": ...}`: the rules keyed by position.
pub fn rules_value(rules: &[Rule]) -> Value {
    Value::Object(
        rules
            .iter()
            .enumerate()
            .map(|(i, r)| (i.to_string(), Value::String(r.to_line())))
            .collect(),
    )
}

/// The rule list an attribute map holds (`rules`, in position order).
pub fn rules_from_attrs(attrs: &Attrs) -> Result<Vec<Rule>, String> {
    let Some(map) = attrs.get("rules").and_then(Value::as_object) else {
        return Ok(Vec::new());
    };
    let mut by_pos: BTreeMap<usize, &str> = BTreeMap::new();
    for (k, v) in map {
        let pos: usize = k
            .parse()
            .map_err(|_| format!("rule position `{k}` is not a number"))?;
        let line = v
            .as_str()
            .ok_or_else(|| format!("rule {k} is not a string"))?;
        by_pos.insert(pos, line);
    }
    by_pos
        .into_iter()
        .enumerate()
        .map(|(expected, (pos, line))| {
            if expected != pos {
                return Err(format!("rule positions skip {expected}"));
            }
            Rule::parse_line(line).map_err(|e| format!("rule {pos} `{line}`: {e}"))
        })
        .collect()
}

// -- rules ------------------------------------------------------------------------------

/// PVE's macro names (`PVE::Firewall`'s `$pve_fw_macros`); PVE stores the
/// name in this spelling whatever case it was given in.
const MACROS: &[&str] = &[
    "Amanda",
    "Auth",
    "BGP",
    "BitTorrent",
    "BitTorrent32",
    "Ceph",
    "CVS",
    "Citrix",
    "DAAP",
    "DCC",
    "DHCPfwd",
    "DNS",
    "Distcc",
    "FTP",
    "Finger",
    "GNUnet",
    "GRE",
    "Git",
    "HKP",
    "HTTP",
    "HTTPS",
    "ICPV2",
    "ICQ",
    "IMAP",
    "IMAPS",
    "IPIP",
    "IPsec",
    "IPsecah",
    "IPsecnat",
    "IRC",
    "Jetdirect",
    "L2TP",
    "LDAP",
    "LDAPS",
    "MSNP",
    "MSSQL",
    "Mail",
    "MDNS",
    "Munin",
    "MySQL",
    "NNTP",
    "NNTPS",
    "NTP",
    "OSPF",
    "OpenVPN",
    "PCA",
    "PMG",
    "POP3",
    "POP3S",
    "PPtP",
    "Ping",
    "PostgreSQL",
    "Printer",
    "RDP",
    "RIP",
    "RNDC",
    "Razor",
    "Rdate",
    "Rsync",
    "SANE",
    "SMB",
    "SMBswat",
    "SMTP",
    "SMTPS",
    "SNMP",
    "SPAMD",
    "SSH",
    "SVN",
    "SixXS",
    "SPICEproxy",
    "Squid",
    "Submission",
    "Syslog",
    "TFTP",
    "Telnet",
    "Telnets",
    "Time",
    "Trcrt",
    "VNC",
    "VNCL",
    "Web",
    "Webcache",
    "Webmin",
    "Whois",
];

/// The optional rule fields that are plain values: PVE's parameter name and
/// the flag that writes it in a `.fw` line, in the order PVE writes them.
const FIELDS: [(&str, &str); 8] = [
    ("iface", "-i"),
    ("source", "-source"),
    ("dest", "-dest"),
    ("proto", "-p"),
    ("dport", "-dport"),
    ("sport", "-sport"),
    ("icmp-type", "-icmp-type"),
    ("log", "-log"),
];

/// One firewall rule, normalized: the manifest's and PVE's spellings of the
/// same rule are equal values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `in`, `out`, `forward` or `group`.
    pub r#type: String,
    /// `ACCEPT`, `DROP`, `REJECT`, or the security group of a `group` rule.
    pub action: String,
    pub r#macro: Option<String>,
    /// The values of [`FIELDS`], by PVE parameter name.
    pub fields: BTreeMap<&'static str, String>,
    /// Absent in the manifests or in an answer means enabled.
    pub enable: bool,
    pub comment: Option<String>,
}

/// Whitespace-trimmed, `None` when empty: PVE drops empty values.
fn text(v: Option<&str>) -> Option<String> {
    v.map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// How PVE keeps a field: ports without the spaces PVE refuses, protocols in
/// lower case (`/etc/protocols` names), everything else trimmed.
fn normalize_field(name: &str, value: &str) -> Option<String> {
    match name {
        "dport" | "sport" => {
            let v: String = value.chars().filter(|c| !c.is_whitespace()).collect();
            (!v.is_empty()).then_some(v)
        }
        "proto" | "log" => text(Some(value)).map(|s| s.to_ascii_lowercase()),
        _ => text(Some(value)),
    }
}

fn normalize_macro(m: &str) -> Option<String> {
    let m = text(Some(m))?;
    Some(
        MACROS
            .iter()
            .find(|known| known.eq_ignore_ascii_case(&m))
            .map_or(m, |known| (*known).to_string()),
    )
}

fn normalize_action(rtype: &str, action: &str) -> String {
    let a = action.trim();
    if rtype == "group" {
        a.to_string()
    } else {
        a.to_ascii_uppercase()
    }
}

/// A scalar of a PVE answer as text (numbers come back as numbers or strings).
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(if *b { "1" } else { "0" }.into()),
        _ => None,
    }
}

impl Rule {
    /// A rule of the manifests (`port` is PVE's `dport`).
    pub fn from_manifest(r: &FirewallRule) -> Rule {
        let rtype = r.r#type.trim().to_ascii_lowercase();
        let mut fields = BTreeMap::new();
        let given = [
            ("iface", &r.iface),
            ("source", &r.source),
            ("dest", &r.dest),
            ("proto", &r.proto),
            ("dport", &r.port),
            ("sport", &r.sport),
            ("log", &r.log),
        ];
        for (name, value) in given {
            if let Some(v) = value.as_deref().and_then(|v| normalize_field(name, v)) {
                fields.insert(name, v);
            }
        }
        Rule {
            action: normalize_action(&rtype, &r.action),
            r#type: rtype,
            r#macro: r.r#macro.as_deref().and_then(normalize_macro),
            fields,
            enable: r.enable.unwrap_or(true),
            comment: text(r.comment.as_deref()),
        }
    }

    /// One entry of `GET .../firewall/rules`; `pos`, `digest`, `ipversion`
    /// and anything else phoenix does not manage are dropped.
    pub fn from_pve(v: &Value) -> Rule {
        let get = |k: &str| v.get(k).and_then(scalar);
        let rtype = get("type").unwrap_or_default().trim().to_ascii_lowercase();
        let mut fields = BTreeMap::new();
        for (name, _) in FIELDS {
            if let Some(val) = get(name).and_then(|s| normalize_field(name, &s)) {
                fields.insert(name, val);
            }
        }
        Rule {
            action: normalize_action(&rtype, &get("action").unwrap_or_default()),
            r#type: rtype,
            r#macro: get("macro").as_deref().and_then(normalize_macro),
            fields,
            enable: get("enable")
                .and_then(|s| crate::model::normalize::parse_bool(&s))
                .unwrap_or(true),
            comment: text(get("comment").as_deref()),
        }
    }

    /// What PVE would refuse that phoenix can tell from the manifest alone.
    pub fn check(&self) -> Result<(), String> {
        for port in ["dport", "sport"] {
            if self.fields.contains_key(port) && !self.fields.contains_key("proto") {
                let shown = if port == "dport" { "port" } else { port };
                return Err(format!("firewall rule has `{shown}` but no `proto`"));
            }
        }
        Ok(())
    }

    /// The rule in the syntax of PVE's `.fw` files:
    /// `|IN HTTP(ACCEPT) -source 10.0.0.0/24 -p tcp -dport 80 # comment`.
    pub fn to_line(&self) -> String {
        let mut s = String::new();
        if !self.enable {
            s.push('|');
        }
        s.push_str(&self.r#type.to_ascii_uppercase());
        s.push(' ');
        match &self.r#macro {
            Some(m) => s.push_str(&format!("{m}({})", self.action)),
            None => s.push_str(&self.action),
        }
        for (name, flag) in FIELDS {
            if let Some(v) = self.fields.get(name) {
                s.push_str(&format!(" {flag} {v}"));
            }
        }
        if let Some(c) = &self.comment {
            s.push_str(" # ");
            s.push_str(c);
        }
        s
    }

    /// The inverse of [`Rule::to_line`]. Values never hold spaces (PVE
    /// refuses them), so the first ` # ` starts the comment.
    pub fn parse_line(line: &str) -> Result<Rule, String> {
        let (head, comment) = match line.find(" # ") {
            Some(i) => (&line[..i], Some(&line[i + 3..])),
            None => (line, None),
        };
        let head = head.trim();
        let (enable, head) = match head.strip_prefix('|') {
            Some(rest) => (false, rest),
            None => (true, head),
        };
        let mut tokens = head.split_whitespace();
        let rtype = tokens.next().ok_or("an empty rule")?.to_ascii_lowercase();
        let what = tokens.next().ok_or("a rule without an action")?;
        let (r#macro, action) = match what.split_once('(') {
            Some((m, rest)) => {
                let a = rest
                    .strip_suffix(')')
                    .ok_or_else(|| format!("`{what}`: expected MACRO(ACTION)"))?;
                (Some(m.to_string()), a.to_string())
            }
            None => (None, what.to_string()),
        };
        let mut fields = BTreeMap::new();
        while let Some(flag) = tokens.next() {
            let (name, _) = FIELDS
                .iter()
                .find(|(_, f)| *f == flag)
                .ok_or_else(|| format!("unknown flag `{flag}`"))?;
            let value = tokens
                .next()
                .ok_or_else(|| format!("`{flag}` without a value"))?;
            fields.insert(*name, value.to_string());
        }
        Ok(Rule {
            action,
            r#type: rtype,
            r#macro,
            fields,
            enable,
            comment: text(comment),
        })
    }

    /// `POST .../firewall/rules` parameters. `enable` is always sent: PVE
    /// creates a rule without it disabled.
    pub fn create_params(&self) -> Vec<(String, String)> {
        let mut p = vec![
            ("type".to_string(), self.r#type.clone()),
            ("action".to_string(), self.action.clone()),
        ];
        if let Some(m) = &self.r#macro {
            p.push(("macro".into(), m.clone()));
        }
        for (name, _) in FIELDS {
            if let Some(v) = self.fields.get(name) {
                p.push((name.to_string(), v.clone()));
            }
        }
        p.push(("enable".into(), if self.enable { "1" } else { "0" }.into()));
        if let Some(c) = &self.comment {
            p.push(("comment".into(), c.clone()));
        }
        p
    }

    /// `PUT .../firewall/rules/{pos}` parameters that turn `self` into `to`:
    /// the fields that differ, and `delete` for those `to` no longer has.
    pub fn update_params(&self, to: &Rule) -> Vec<(String, String)> {
        let mut p = Vec::new();
        let mut deletes = Vec::new();
        if self.r#type != to.r#type {
            p.push(("type".to_string(), to.r#type.clone()));
        }
        if self.action != to.action {
            p.push(("action".to_string(), to.action.clone()));
        }
        let mut optional = vec![("macro", self.r#macro.as_ref(), to.r#macro.as_ref())];
        optional.extend(
            FIELDS
                .iter()
                .map(|(name, _)| (*name, self.fields.get(name), to.fields.get(name))),
        );
        optional.push(("comment", self.comment.as_ref(), to.comment.as_ref()));
        for (name, from, want) in optional {
            match (from, want) {
                (from, Some(want)) if from != Some(want) => {
                    p.push((name.to_string(), want.clone()))
                }
                (Some(_), None) => deletes.push(name),
                _ => {}
            }
        }
        if self.enable != to.enable {
            p.push(("enable".into(), if to.enable { "1" } else { "0" }.into()));
        }
        if !deletes.is_empty() {
            p.push(("delete".into(), deletes.join(",")));
        }
        p
    }

    /// How many managed values differ: pairs the most alike rules for an in-place update.
    fn distance(&self, other: &Rule) -> usize {
        let mut d = usize::from(self.r#type != other.r#type)
            + usize::from(self.action != other.action)
            + usize::from(self.r#macro != other.r#macro)
            + usize::from(self.enable != other.enable)
            + usize::from(self.comment != other.comment);
        for (name, _) in FIELDS {
            d += usize::from(self.fields.get(name) != other.fields.get(name));
        }
        d
    }
}

/// The rules of a `GET .../firewall/rules` answer, in position order.
pub fn rules_from_pve(answer: &Value) -> Vec<Rule> {
    let mut entries: Vec<&Value> = answer.as_array().into_iter().flatten().collect();
    entries.sort_by_key(|e| e.get("pos").and_then(Value::as_u64).unwrap_or(u64::MAX));
    entries.into_iter().map(Rule::from_pve).collect()
}

/// The rules digest of a `GET .../firewall/rules` answer: each entry carries
/// the digest of the whole list, so an empty list has none.
pub fn rules_digest(answer: &Value) -> Option<String> {
    answer
        .as_array()?
        .first()?
        .get("digest")?
        .as_str()
        .map(str::to_string)
}

// -- options ----------------------------------------------------------------------------

/// No rules and no options (beyond the digest): PVE has no firewall file for it.
pub fn is_pristine(options: &Map<String, Value>, rules: &[Rule]) -> bool {
    rules.is_empty() && options.keys().all(|k| k == "digest")
}

/// `enable` as the API returns it: `0`/`1`, and on the cluster the time it
/// was switched on; absent is off.
fn enable_of(options: &Map<String, Value>) -> bool {
    match options.get("enable") {
        Some(Value::Number(n)) => n.as_u64().is_some_and(|n| n >= 1),
        Some(Value::String(s)) => {
            s.parse::<u64>().is_ok_and(|n| n >= 1)
                || crate::model::normalize::parse_bool(s).unwrap_or(false)
        }
        Some(Value::Bool(b)) => *b,
        _ => false,
    }
}

/// The attributes of the datacenter firewall from `GET /cluster/firewall/options` and its rules.
pub fn cluster_attrs_from_pve(options: &Map<String, Value>, rules: &[Rule]) -> Attrs {
    let mut a = Map::new();
    a.insert("enable".into(), json!(enable_of(options)));
    for key in ["policy_in", "policy_out"] {
        a.insert(
            key.into(),
            json!(options.get(key).and_then(scalar).map(|p| policy(&p))),
        );
    }
    insert_rules(&mut a, rules);
    a
}

/// The attributes of a guest firewall from `GET .../firewall/options` and its rules.
pub fn guest_attrs_from_pve(options: &Map<String, Value>, rules: &[Rule]) -> Attrs {
    let mut a = Map::new();
    a.insert("enable".into(), json!(enable_of(options)));
    insert_rules(&mut a, rules);
    a
}

/// `PUT .../firewall/options` parameters setting the option attributes
/// among `attrs` (`rules` are not options); `null` deletes the option.
pub fn options_params(attrs: &Attrs) -> Vec<(String, String)> {
    let mut p = Vec::new();
    let mut deletes = Vec::new();
    for key in CLUSTER_OPTIONS {
        match attrs.get(key) {
            None => {}
            Some(Value::Null) => deletes.push(key),
            Some(Value::Bool(b)) => p.push((key.to_string(), if *b { "1" } else { "0" }.into())),
            Some(v) => p.push((key.to_string(), scalar(v).unwrap_or_default())),
        }
    }
    if !deletes.is_empty() {
        p.push(("delete".into(), deletes.join(",")));
    }
    p
}

// -- the edit script --------------------------------------------------------------------

/// One change to a rule list, as PVE's API makes it. Positions are those of
/// the list as it is when the edit is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleEdit {
    /// `DELETE rules/{pos}`.
    Delete { pos: usize },
    /// `PUT rules/{pos}` with the fields that change.
    Update { pos: usize, rule: Rule },
    /// `PUT rules/{pos}` with `moveto`: the rule goes in front of the one now
    /// at `moveto`, or to the end when `moveto` is past the last rule.
    Move { pos: usize, moveto: usize },
    /// `POST rules`: PVE puts a new rule at the top, whatever `pos` says.
    Insert { rule: Rule },
}

/// Carry out one edit the way PVE does (`PVE::API2::Firewall::Rules`).
pub fn apply_edit(list: &mut Vec<Rule>, edit: &RuleEdit) -> Result<(), String> {
    match edit {
        RuleEdit::Delete { pos } => {
            if *pos >= list.len() {
                return Err(format!("no rule at position {pos}"));
            }
            list.remove(*pos);
        }
        RuleEdit::Update { pos, rule } => {
            let slot = list
                .get_mut(*pos)
                .ok_or_else(|| format!("no rule at position {pos}"))?;
            *slot = rule.clone();
        }
        RuleEdit::Move { pos, moveto } => {
            if *pos >= list.len() {
                return Err(format!("no rule at position {pos}"));
            }
            let moved = list[*pos].clone();
            let mut out = Vec::with_capacity(list.len());
            for (i, r) in list.iter().enumerate() {
                if i == *pos {
                    continue;
                }
                if i == *moveto {
                    out.push(moved.clone());
                }
                out.push(r.clone());
            }
            if *moveto >= list.len() {
                out.push(moved);
            }
            *list = out;
        }
        RuleEdit::Insert { rule } => list.insert(0, rule.clone()),
    }
    Ok(())
}

/// What becomes of the live rule that ends up at a desired position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Equal and already in order (on the longest common subsequence).
    Keep,
    /// Equal, but out of order: one move.
    Move,
    /// Changed in place, in order: one update.
    Update,
    /// Changed and out of order: an update and a move.
    UpdateMove,
}

/// The pairs `(live index, desired index)` of a longest common subsequence.
/// Among equal choices (duplicates) it pairs the desired rules as late as
/// possible, which leaves new rules near the top, where inserting is cheapest.
fn lcs(live: &[Rule], want: &[Rule]) -> Vec<(usize, usize)> {
    let (n, m) = (live.len(), want.len());
    // dp[i][j]: the LCS length of live[..i] and want[..j].
    let mut dp = vec![vec![0usize; m + 1]; n + 1];
    for i in 1..=n {
        for j in 1..=m {
            dp[i][j] = if live[i - 1] == want[j - 1] {
                dp[i - 1][j - 1] + 1
            } else {
                dp[i - 1][j].max(dp[i][j - 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (n, m, Vec::new());
    while i > 0 && j > 0 {
        if live[i - 1] == want[j - 1] && dp[i][j] == dp[i - 1][j - 1] + 1 {
            out.push((i - 1, j - 1));
            i -= 1;
            j -= 1;
        } else if dp[i - 1][j] >= dp[i][j - 1] {
            i -= 1;
        } else {
            j -= 1;
        }
    }
    out.reverse();
    out
}

/// Pairs for in-place updates between the unmatched live and desired rules of
/// one gap: as many as possible, then the most alike.
fn align(live: &[Rule], want: &[Rule], ls: &[usize], ws: &[usize]) -> Vec<(usize, usize)> {
    // Costs: a pair is one update; an unpaired live rule a delete, an unpaired
    // desired one an insert (slightly dearer, so pairs win ties).
    const OP: usize = 1000;
    let (n, m) = (ls.len(), ws.len());
    let mut dp = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..=n).rev() {
        for j in (0..=m).rev() {
            if i == n && j == m {
                continue;
            }
            let mut best = usize::MAX;
            if i < n && j < m {
                best = best.min(OP + live[ls[i]].distance(&want[ws[j]]) + dp[i + 1][j + 1]);
            }
            if i < n {
                best = best.min(OP + dp[i + 1][j]);
            }
            if j < m {
                best = best.min(OP + 1 + dp[i][j + 1]);
            }
            dp[i][j] = best;
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < n || j < m {
        if i < n && j < m && dp[i][j] == OP + live[ls[i]].distance(&want[ws[j]]) + dp[i + 1][j + 1]
        {
            out.push((ls[i], ws[j]));
            i += 1;
            j += 1;
        } else if i < n && dp[i][j] == OP + dp[i + 1][j] {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// The edits that turn `live` into `want`, few and position-aware: rules on a
/// longest common subsequence stay; equal rules out of order are moved;
/// changed rules between the same neighbours are updated in place; the rest
/// of the live rules are deleted (bottom up) and the rest of the desired ones
/// inserted (PVE inserts at the top, so each is moved into place after, except
/// a run of new rules at the very top, which are inserted last-first).
/// Duplicates are rules like any other: each copy is kept or made.
pub fn edit_script(live: &[Rule], want: &[Rule]) -> Vec<RuleEdit> {
    let (n, m) = (live.len(), want.len());
    // source[j]: the live rule that becomes desired rule j, and how.
    let mut source: Vec<Option<(usize, Fate)>> = vec![None; m];
    let mut used = vec![false; n];
    let anchors = lcs(live, want);
    for &(i, j) in &anchors {
        source[j] = Some((i, Fate::Keep));
        used[i] = true;
    }
    // Equal rules out of order: a move is one write, a delete and an insert two or three.
    for j in 0..m {
        if source[j].is_some() {
            continue;
        }
        if let Some(i) = (0..n).find(|&i| !used[i] && live[i] == want[j]) {
            source[j] = Some((i, Fate::Move));
            used[i] = true;
        }
    }
    // Changed rules in the same gap between anchors: updated where they stand.
    let mut bounds: Vec<(usize, usize)> = vec![(0, 0)];
    bounds.extend(anchors.iter().map(|&(i, j)| (i + 1, j + 1)));
    let mut ends: Vec<(usize, usize)> = anchors.clone();
    ends.push((n, m));
    for (&(li, wj), &(le, we)) in bounds.iter().zip(&ends) {
        let ls: Vec<usize> = (li..le).filter(|&i| !used[i]).collect();
        let ws: Vec<usize> = (wj..we).filter(|&j| source[j].is_none()).collect();
        for (i, j) in align(live, want, &ls, &ws) {
            source[j] = Some((i, Fate::Update));
            used[i] = true;
        }
    }
    // Left over on both sides: an update and a move (two writes) beat a delete
    // and an insert-and-move (three), except for new rules at the very top.
    let top_run = source.iter().take_while(|s| s.is_none()).count();
    let spare_rules: Vec<usize> = (0..n).filter(|&i| !used[i]).collect();
    let mut spare = spare_rules.into_iter();
    for slot in source.iter_mut().skip(top_run) {
        if slot.is_none() {
            match spare.next() {
                Some(i) => {
                    *slot = Some((i, Fate::UpdateMove));
                    used[i] = true;
                }
                None => break,
            }
        }
    }

    let mut script = Vec::new();
    // `work` follows the list as the edits change it: live index i is id i,
    // desired rule j inserted new is id n + j.
    let mut work: Vec<usize> = (0..n).collect();
    let pos_of = |work: &[usize], id: usize| work.iter().position(|&x| x == id);
    for i in (0..n).rev() {
        if !used[i]
            && let Some(pos) = pos_of(&work, i)
        {
            script.push(RuleEdit::Delete { pos });
            work.remove(pos);
        }
    }
    for (j, s) in source.iter().enumerate() {
        if let Some((i, Fate::Update | Fate::UpdateMove)) = s
            && let Some(pos) = pos_of(&work, *i)
        {
            script.push(RuleEdit::Update {
                pos,
                rule: want[j].clone(),
            });
        }
    }
    // Moves, last first: each goes right in front of its successor in the
    // desired order, which is already where it belongs.
    let order: Vec<(usize, Fate)> = source.iter().flatten().copied().collect();
    for t in (0..order.len()).rev() {
        let (id, fate) = order[t];
        if !matches!(fate, Fate::Move | Fate::UpdateMove) {
            continue;
        }
        let Some(pos) = pos_of(&work, id) else {
            continue;
        };
        let moveto = match order.get(t + 1) {
            Some(&(next, _)) => match pos_of(&work, next) {
                Some(q) => q,
                None => continue,
            },
            None => work.len(),
        };
        if moveto == pos + 1 || (moveto == work.len() && pos + 1 == work.len()) {
            continue;
        }
        script.push(RuleEdit::Move { pos, moveto });
        let moved = work.remove(pos);
        let at = if moveto > pos { moveto - 1 } else { moveto };
        work.insert(at.min(work.len()), moved);
    }
    // Inserts: below the top run, each goes in at the top and moves to the
    // place after the rules that precede it; then the top run, last first.
    let target: BTreeMap<usize, usize> = source
        .iter()
        .enumerate()
        .filter_map(|(j, s)| s.map(|(i, _)| (i, j)))
        .collect();
    let target_of = |id: usize| {
        if id >= n {
            id - n
        } else {
            target.get(&id).copied().unwrap_or(usize::MAX)
        }
    };
    for j in top_run..m {
        if source[j].is_some() {
            continue;
        }
        let before = work.iter().filter(|&&id| target_of(id) < j).count();
        script.push(RuleEdit::Insert {
            rule: want[j].clone(),
        });
        work.insert(0, n + j);
        if before > 0 {
            script.push(RuleEdit::Move {
                pos: 0,
                moveto: before + 1,
            });
            let id = work.remove(0);
            work.insert(before, id);
        }
    }
    for j in (0..top_run).rev() {
        script.push(RuleEdit::Insert {
            rule: want[j].clone(),
        });
        work.insert(0, n + j);
    }
    script
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest_rule(v: Value) -> FirewallRule {
        serde_json::from_value(v).unwrap()
    }

    fn r(line: &str) -> Rule {
        Rule::parse_line(line).unwrap()
    }

    // -- normalization rows

    #[test]
    fn manifest_rule_is_normalized_as_pve_keeps_it() {
        let rule = Rule::from_manifest(&manifest_rule(json!({
            "type": "in", "action": "accept", "proto": "TCP", "port": "80, 443",
            "source": " 10.0.0.0/24 ", "comment": "  web  ", "macro": "http", "log": "INFO"
        })));
        assert_eq!(rule.action, "ACCEPT");
        assert_eq!(rule.fields["proto"], "tcp");
        assert_eq!(rule.fields["dport"], "80,443");
        assert_eq!(rule.fields["source"], "10.0.0.0/24");
        assert_eq!(rule.fields["log"], "info");
        assert_eq!(rule.r#macro.as_deref(), Some("HTTP"));
        assert_eq!(rule.comment.as_deref(), Some("web"));
        assert!(rule.enable, "absent enable means enabled");
    }

    #[test]
    fn manifest_port_ranges_and_numbers_stay_strings() {
        let rule = Rule::from_manifest(&manifest_rule(
            json!({"type": "out", "action": "DROP", "proto": "udp", "port": "8000:8010", "sport": 53}),
        ));
        assert_eq!(rule.fields["dport"], "8000:8010");
        assert_eq!(rule.fields["sport"], "53");
    }

    #[test]
    fn group_rule_keeps_the_group_name_case() {
        let rule = Rule::from_manifest(&manifest_rule(
            json!({"type": "group", "action": "webServers"}),
        ));
        assert_eq!(rule.action, "webServers");
        assert_eq!(rule.to_line(), "GROUP webServers");
    }

    #[test]
    fn empty_values_and_comments_are_absent() {
        let rule = Rule::from_manifest(&manifest_rule(
            json!({"type": "in", "action": "ACCEPT", "source": "", "comment": "  "}),
        ));
        assert!(rule.fields.is_empty());
        assert_eq!(rule.comment, None);
    }

    #[test]
    fn pve_rule_drops_what_is_not_managed() {
        let got = Rule::from_pve(&json!({
            "pos": 3, "digest": "abc", "ipversion": 4, "type": "in", "action": "ACCEPT",
            "proto": "tcp", "dport": "443", "source": "10.0.0.10", "enable": 1, "comment": "x"
        }));
        assert_eq!(got, r("IN ACCEPT -source 10.0.0.10 -p tcp -dport 443 # x"));
    }

    #[test]
    fn pve_enable_zero_one_and_absent() {
        let base = json!({"type": "in", "action": "DROP"});
        let mut off = base.clone();
        off["enable"] = json!(0);
        let mut on_text = base.clone();
        on_text["enable"] = json!("1");
        assert!(!Rule::from_pve(&off).enable);
        assert!(Rule::from_pve(&on_text).enable);
        assert!(Rule::from_pve(&base).enable, "absent enable means enabled");
        assert_eq!(Rule::from_pve(&off).to_line(), "|IN DROP");
    }

    #[test]
    fn pve_numbers_as_strings_or_numbers_compare_equal() {
        let a =
            Rule::from_pve(&json!({"type": "in", "action": "ACCEPT", "proto": "tcp", "dport": 80}));
        let b = Rule::from_pve(
            &json!({"type": "in", "action": "ACCEPT", "proto": "tcp", "dport": "80"}),
        );
        assert_eq!(a, b);
    }

    #[test]
    fn manifest_and_pve_spellings_of_one_rule_are_equal() {
        let m = Rule::from_manifest(&manifest_rule(json!({
            "type": "in", "action": "ACCEPT", "proto": "icmp", "source": "10.0.0.0/24",
            "comment": "Allow ICMP from internal network"
        })));
        let p = Rule::from_pve(&json!({
            "type": "in", "action": "ACCEPT", "proto": "icmp", "source": "10.0.0.0/24",
            "comment": "Allow ICMP from internal network", "enable": 1, "ipversion": 4, "pos": 0,
            "digest": "d"
        }));
        assert_eq!(m, p);
    }

    #[test]
    fn line_syntax_round_trips() {
        for line in [
            "IN ACCEPT",
            "|OUT DROP -dest 10.0.0.153 -p tcp -dport 443",
            "IN HTTP(ACCEPT) -i net0 -source +trusted -log info # web # with hashes",
            "GROUP webservers -i net1",
            "IN ACCEPT -p icmp -icmp-type echo-request",
            "IN ACCEPT -p tcp -sport 1024:65535 # c",
            "FORWARD DROP",
        ] {
            assert_eq!(r(line).to_line(), line);
        }
        assert!(Rule::parse_line("IN ACCEPT -bogus 1").is_err());
        assert!(Rule::parse_line("IN ACCEPT -p").is_err());
        assert!(Rule::parse_line("").is_err());
        assert!(Rule::parse_line("IN HTTP(ACCEPT").is_err());
    }

    #[test]
    fn create_params_read_back_equal() {
        // What we send, read back through the normalizer, equals what we wanted.
        for line in [
            "IN ACCEPT -source 10.0.0.0/24 -dest 10.0.0.13 -p udp -dport 53 # DNS",
            "|OUT REJECT -p tcp -dport 80,443",
            "IN SSH(ACCEPT) -i net0 -log nolog",
        ] {
            let rule = r(line);
            let mut answer: Map<String, Value> = rule
                .create_params()
                .into_iter()
                .map(|(k, v)| (k, json!(v)))
                .collect();
            answer.insert("pos".into(), json!(0));
            answer.insert("digest".into(), json!("d"));
            answer.insert("ipversion".into(), json!(4));
            assert_eq!(Rule::from_pve(&Value::Object(answer)), rule, "{line}");
        }
    }

    #[test]
    fn create_always_sends_enable() {
        let p = r("IN ACCEPT").create_params();
        assert!(p.contains(&("enable".into(), "1".into())), "{p:?}");
        let p = r("|IN ACCEPT").create_params();
        assert!(p.contains(&("enable".into(), "0".into())), "{p:?}");
    }

    #[test]
    fn update_params_set_changed_and_delete_dropped_fields() {
        let from = r("IN ACCEPT -source 10.0.0.1 -p tcp -dport 80 # old");
        let to = r("|IN ACCEPT -p tcp -dport 8080");
        assert_eq!(
            from.update_params(&to),
            vec![
                ("dport".to_string(), "8080".to_string()),
                ("enable".to_string(), "0".to_string()),
                ("delete".to_string(), "source,comment".to_string()),
            ]
        );
        assert!(from.update_params(&from).is_empty());
    }

    #[test]
    fn attrs_round_trip_and_count() {
        let rules = vec![
            r("IN ACCEPT -p tcp -dport 80"),
            r("IN ACCEPT -p tcp -dport 80"),
            r("OUT DROP"),
        ];
        let mut attrs = Map::new();
        insert_rules(&mut attrs, &rules);
        assert_eq!(attrs["rule_count"], json!(3));
        assert_eq!(attrs["rules"]["1"], json!("IN ACCEPT -p tcp -dport 80"));
        assert_eq!(rules_from_attrs(&attrs).unwrap(), rules);
        let mut gap = attrs.clone();
        gap["rules"].as_object_mut().unwrap().remove("1");
        assert!(rules_from_attrs(&gap).is_err());
    }

    #[test]
    fn options_from_pve() {
        let opts = |v: Value| v.as_object().unwrap().clone();
        let a = cluster_attrs_from_pve(
            &opts(json!({"enable": 1700000000, "policy_in": "drop", "digest": "x"})),
            &[],
        );
        assert_eq!(a["enable"], json!(true));
        assert_eq!(a["policy_in"], json!("DROP"));
        assert_eq!(a["policy_out"], Value::Null);
        assert_eq!(a["rule_count"], json!(0));
        let g = guest_attrs_from_pve(&opts(json!({"digest": "x"})), &[]);
        assert_eq!(g["enable"], json!(false), "absent enable is off");
        let g = guest_attrs_from_pve(&opts(json!({"enable": 1})), &[]);
        assert_eq!(g["enable"], json!(true));
        assert!(is_pristine(&opts(json!({"digest": "x"})), &[]));
        assert!(!is_pristine(
            &opts(json!({"enable": 0, "digest": "x"})),
            &[]
        ));
        assert!(!is_pristine(&opts(json!({})), &[r("IN ACCEPT")]));
    }

    #[test]
    fn options_params_set_and_delete() {
        let want = json!({"enable": true, "policy_in": "DROP", "policy_out": null, "rules": {}, "rule_count": 0});
        assert_eq!(
            options_params(want.as_object().unwrap()),
            vec![
                ("enable".to_string(), "1".to_string()),
                ("policy_in".to_string(), "DROP".to_string()),
                ("delete".to_string(), "policy_out".to_string()),
            ]
        );
    }

    #[test]
    fn notes_when_turning_a_firewall_on() {
        let live = json!({"enable": false}).as_object().unwrap().clone();
        assert_eq!(update_notes(&["enable".into()], &live).len(), 1);
        assert!(update_notes(&["rules.0".into()], &live).is_empty());
    }

    // -- the edit script

    fn rules(names: &str) -> Vec<Rule> {
        // One letter per rule; `a` and `A` are the same rule but for its comment.
        names
            .chars()
            .map(|c| {
                let port = 1000 + c.to_ascii_lowercase() as u32;
                let comment = if c.is_ascii_uppercase() {
                    " # changed"
                } else {
                    ""
                };
                r(&format!("IN ACCEPT -p tcp -dport {port}{comment}"))
            })
            .collect()
    }

    fn run(live: &str, want: &str) -> Vec<RuleEdit> {
        let (l, w) = (rules(live), rules(want));
        let script = edit_script(&l, &w);
        let mut list = l.clone();
        for e in &script {
            apply_edit(&mut list, e).unwrap();
        }
        assert_eq!(list, w, "{live} -> {want}: {script:?}");
        script
    }

    fn kinds(script: &[RuleEdit]) -> Vec<String> {
        script
            .iter()
            .map(|e| match e {
                RuleEdit::Delete { pos } => format!("delete {pos}"),
                RuleEdit::Update { pos, .. } => format!("update {pos}"),
                RuleEdit::Move { pos, moveto } => format!("move {pos}->{moveto}"),
                RuleEdit::Insert { .. } => "insert".to_string(),
            })
            .collect()
    }

    #[test]
    fn pve_move_semantics() {
        let mut l = rules("abc");
        apply_edit(&mut l, &RuleEdit::Move { pos: 0, moveto: 2 }).unwrap();
        assert_eq!(l, rules("bac"), "in front of the rule now at moveto");
        let mut l = rules("abc");
        apply_edit(&mut l, &RuleEdit::Move { pos: 0, moveto: 3 }).unwrap();
        assert_eq!(l, rules("bca"), "past the end: to the end");
        let mut l = rules("abc");
        apply_edit(&mut l, &RuleEdit::Move { pos: 2, moveto: 0 }).unwrap();
        assert_eq!(l, rules("cab"));
        let mut l = rules("abc");
        apply_edit(
            &mut l,
            &RuleEdit::Insert {
                rule: rules("d")[0].clone(),
            },
        )
        .unwrap();
        assert_eq!(l, rules("dabc"), "PVE inserts at the top");
        assert!(apply_edit(&mut l, &RuleEdit::Delete { pos: 9 }).is_err());
    }

    #[test]
    fn equal_lists_need_nothing() {
        assert!(run("", "").is_empty());
        assert!(run("abc", "abc").is_empty());
        assert!(
            run("aab", "aab").is_empty(),
            "duplicates are kept as they are"
        );
    }

    #[test]
    fn insert_in_the_middle_is_one_insert_moved_into_place() {
        assert_eq!(kinds(&run("abc", "abxc")), ["insert", "move 0->3"]);
        assert_eq!(kinds(&run("abc", "axbc")), ["insert", "move 0->2"]);
    }

    #[test]
    fn insert_at_the_top_and_at_the_end() {
        assert_eq!(kinds(&run("abc", "xabc")), ["insert"]);
        assert_eq!(kinds(&run("abc", "xyabc")), ["insert", "insert"]);
        assert_eq!(kinds(&run("abc", "abcx")), ["insert", "move 0->4"]);
    }

    #[test]
    fn a_new_list_is_inserted_last_first() {
        assert_eq!(kinds(&run("", "abcd")), ["insert"; 4]);
    }

    #[test]
    fn deletes_go_bottom_up() {
        assert_eq!(kinds(&run("abc", "bc")), ["delete 0"]);
        assert_eq!(kinds(&run("abcd", "ad")), ["delete 2", "delete 1"]);
        assert_eq!(kinds(&run("abc", "")), ["delete 2", "delete 1", "delete 0"]);
    }

    #[test]
    fn swap_is_one_move() {
        assert_eq!(kinds(&run("ab", "ba")).len(), 1);
        assert_eq!(kinds(&run("abcd", "abdc")).len(), 1);
    }

    #[test]
    fn rotation_is_one_move() {
        assert_eq!(kinds(&run("abcde", "eabcd")), ["move 4->0"]);
        assert_eq!(kinds(&run("abcde", "bcdea")), ["move 0->5"]);
    }

    #[test]
    fn a_changed_rule_is_updated_in_place() {
        assert_eq!(kinds(&run("abc", "aBc")), ["update 1"]);
        assert_eq!(
            kinds(&run("abc", "ABC")),
            ["update 0", "update 1", "update 2"]
        );
    }

    #[test]
    fn the_most_alike_rule_is_the_one_updated() {
        // live x,b; want B: update b (one field) and delete x, not the other way round.
        let l = vec![
            r("OUT DROP -dest 10.9.9.9 -p udp -dport 9"),
            rules("b")[0].clone(),
        ];
        let w = rules("B");
        let script = edit_script(&l, &w);
        assert_eq!(
            script,
            vec![
                RuleEdit::Delete { pos: 0 },
                RuleEdit::Update {
                    pos: 0,
                    rule: w[0].clone()
                }
            ]
        );
    }

    #[test]
    fn duplicates_are_kept_and_made() {
        assert_eq!(kinds(&run("ab", "aab")), ["insert"]);
        assert_eq!(kinds(&run("aab", "ab")).len(), 1);
        assert_eq!(kinds(&run("aba", "aab")).len(), 1);
        assert_eq!(kinds(&run("abab", "abab")).len(), 0);
    }

    #[test]
    fn edited_and_deleted_through_the_api_are_restored_minimally() {
        // want abcde; someone changed c and deleted e.
        assert_eq!(
            kinds(&run("abCd", "abcde")),
            ["update 2", "insert", "move 0->5"]
        );
    }

    #[test]
    fn changed_and_moved_is_an_update_and_a_move() {
        assert_eq!(kinds(&run("abc", "acB")), ["update 1", "move 1->3"]);
    }

    /// Every list of up to `max` rules over `alphabet`.
    fn all_lists(alphabet: &[char], max: usize) -> Vec<String> {
        let mut lists = vec![String::new()];
        let mut last = vec![String::new()];
        for _ in 0..max {
            last = last
                .iter()
                .flat_map(|l| alphabet.iter().map(move |c| format!("{l}{c}")))
                .collect();
            lists.extend(last.iter().cloned());
        }
        lists
    }

    #[test]
    fn every_small_case_reaches_the_desired_list_within_bounds() {
        // All lists of up to 4 rules over a, b and A (a changed), and of up to 3
        // over a, b, c and A: the script always produces the desired list, costs
        // at most a delete per live rule and an insert-and-move per desired rule
        // off the common subsequence, and is empty for equal lists.
        for lists in [
            all_lists(&['a', 'b', 'A'], 4),
            all_lists(&['a', 'b', 'c', 'A'], 3),
        ] {
            let parsed: Vec<Vec<Rule>> = lists.iter().map(|l| rules(l)).collect();
            for (live, l) in lists.iter().zip(&parsed) {
                for (want, w) in lists.iter().zip(&parsed) {
                    let script = edit_script(l, w);
                    let mut list = l.clone();
                    for e in &script {
                        apply_edit(&mut list, e).unwrap();
                    }
                    assert_eq!(&list, w, "{live} -> {want}: {script:?}");
                    let common = lcs(l, w).len();
                    assert!(
                        script.len() <= (l.len() - common) + 2 * (w.len() - common),
                        "{live} -> {want}: {script:?}"
                    );
                    if live == want {
                        assert!(script.is_empty());
                    }
                }
            }
        }
    }

    // -- desired from the manifests

    const SEED: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/fixtures/phoenix-seed"
    );

    fn seed() -> Site {
        crate::manifest::load(std::path::Path::new(SEED))
            .unwrap()
            .site
    }

    fn desired_of(site: &Site) -> BTreeMap<String, DesiredResource> {
        FirewallKind
            .desired(site)
            .unwrap()
            .into_iter()
            .map(|d| (d.address.to_string(), d))
            .collect()
    }

    #[test]
    fn seed_cluster_firewall_holds_only_the_global_rules() {
        let d = desired_of(&seed());
        let c = &d["firewall.cluster"];
        assert_eq!(c.attrs["enable"], json!(true));
        assert_eq!(c.attrs["policy_in"], json!("DROP"));
        assert_eq!(c.attrs["policy_out"], json!("ACCEPT"));
        assert_eq!(
            c.attrs["rule_count"],
            json!(6),
            "guest rules never leak into the datacenter"
        );
        assert_eq!(
            c.attrs["rules"]["2"],
            json!(
                "IN ACCEPT -source 10.0.0.0/24 -dest 10.0.0.13 -p udp -dport 53 # Allow internal guests to query DNS on Host"
            )
        );
        assert!(c.depends_on.is_empty());
    }

    #[test]
    fn seed_guest_firewalls_keep_duplicates_and_add_stack_rules() {
        let site = seed();
        let d = desired_of(&site);
        let ct = &d["firewall.101"];
        assert_eq!(ct.attrs["enable"], json!(true));
        assert_eq!(
            ct.attrs["rule_count"],
            json!(7),
            "the seed's duplicate rules are kept"
        );
        assert_eq!(ct.depends_on, [Address::new("lxc", "101")]);
        let vm = &d["firewall.1002"];
        // 6 of its own, then qdrant (2) and thinkheads (1), in docker_stacks order.
        assert_eq!(vm.attrs["rule_count"], json!(9));
        assert_eq!(
            vm.attrs["rules"]["6"],
            json!("IN ACCEPT -p tcp -dport 6333 # Allow access to Qdrant HTTP API")
        );
        assert_eq!(vm.depends_on, [Address::new("vm", "1002")]);
        assert!(
            !d.contains_key("firewall.9000"),
            "a guest without a firewall section"
        );
        let icmp = &d["firewall.900"];
        assert!(
            icmp.attrs["rules"]
                .as_object()
                .unwrap()
                .values()
                .any(|v| v.as_str().unwrap().contains("-p icmp")),
            "{icmp:?}"
        );
    }

    #[test]
    fn a_port_without_a_protocol_is_an_error_naming_the_rule() {
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path().join("etc");
        std::fs::create_dir_all(&etc).unwrap();
        let write = |f: &str, v: Value| std::fs::write(etc.join(f), v.to_string()).unwrap();
        write(
            "phoenix_hypervisor_config.json",
            json!({"domain_name": "x.internal",
                   "network": {"interfaces": {"name": "vmbr0", "address": "192.0.2.13/24", "gateway": "192.0.2.1"}}}),
        );
        write(
            "phoenix_lxc_configs.json",
            json!({"lxc_configs": {"501": {
                "name": "a", "memory_mb": 256, "template": "local:vztmpl/x.tar.zst",
                "storage_pool": "local-lvm", "storage_size_gb": 4,
                "network_config": {"name": "eth0", "bridge": "vmbr0", "ip": "192.0.2.51/24"},
                "firewall": {"rules": [{"type": "in", "action": "ACCEPT", "port": "80"}]}}}}),
        );
        write("phoenix_vm_configs.json", json!({"vms": []}));
        let site = crate::manifest::load(dir.path()).unwrap().site;
        let errors = FirewallKind.desired(&site).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].json_path, "lxc_configs.\"501\".firewall.rules[0]");
        assert!(
            errors[0].message.contains("`port` but no `proto`"),
            "{}",
            errors[0].message
        );
    }
}
