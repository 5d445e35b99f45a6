//! `firewall.cluster` and `firewall.<guest id>`: the datacenter and guest
//! firewalls applied, drift in their rules detected and restored in order, and
//! rule list changes made with few, position-aware edits (counted in the
//! fake's request log). Guest ids 500-549. Only
//! `cluster_and_guest_firewalls_apply_then_plan_is_empty` touches the
//! datacenter firewall: it is one object in the world every test shares.

use serde_json::{Value, json};

use crate::common::{Pve, Site, lxc, stderr, stdout};
use crate::support::fakepve::world;

fn rule(kind: &str, proto: &str, port: &str, comment: &str) -> Value {
    json!({"type": kind, "action": "ACCEPT", "proto": proto, "port": port, "comment": comment})
}

/// A container whose firewall is on, with these rules.
fn guarded(name: &str, last_octet: u32, rules: &[Value]) -> Value {
    let mut ct = lxc(name, last_octet);
    ct["firewall"] = json!({"enabled": true, "rules": rules});
    ct
}

fn rules_path(vmid: u32) -> String {
    format!("/nodes/{}/lxc/{vmid}/firewall/rules", Pve::new().node())
}

/// The rules PVE holds, as `(type, action, proto, dport, comment, enable)`.
fn pve_rules(path: &str) -> Vec<(String, String, String, String, String, u64)> {
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    Pve::new()
        .get(path)
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                s(&r["type"]),
                s(&r["action"]),
                s(&r["proto"]),
                s(&r["dport"]),
                s(&r["comment"]),
                r["enable"].as_u64().unwrap_or(99),
            )
        })
        .collect()
}

fn expected(rules: &[Value]) -> Vec<(String, String, String, String, String, u64)> {
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    rules
        .iter()
        .map(|r| {
            (
                s(&r["type"]),
                s(&r["action"]),
                s(&r["proto"]),
                s(&r["port"]),
                s(&r["comment"]),
                1,
            )
        })
        .collect()
}

/// Marks the fake's request log: a read phoenix never makes.
fn mark(vmid: u32) -> String {
    let marker = format!("{}/0", rules_path(vmid));
    Pve::new().get(&marker);
    marker
}

/// The writes (method, path, body) to a guest's rules since `marker` was read.
fn writes_since(marker: &str, vmid: u32) -> Vec<(String, String, String)> {
    let log = world().requests();
    let start = log
        .iter()
        .rposition(|(m, p, _)| m == "GET" && p.ends_with(marker))
        .expect("the marker request is in the fake's log");
    let path = rules_path(vmid);
    log[start + 1..]
        .iter()
        .filter(|(m, p, _)| m != "GET" && p.contains(&path))
        .cloned()
        .collect()
}

fn run_ok(site: &Site, args: &[&str]) -> String {
    let out = site.cmd(args).output().unwrap();
    assert!(
        out.status.success(),
        "phoenix {args:?}: {}{}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

fn assert_no_changes(site: &Site) {
    let out = site.cmd(&["plan", "--detailed-exitcode"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
}

#[test]
fn cluster_and_guest_firewalls_apply_then_plan_is_empty() {
    let guest_rules = [
        rule("in", "tcp", "80,443", "web"),
        json!({"type": "in", "action": "ACCEPT", "proto": "icmp", "source": "192.0.2.0/24", "comment": "ping"}),
        rule("in", "tcp", "8000:8010", "range"),
        // The seed has exact duplicates: legal, and kept.
        rule("out", "tcp", "80", "dup"),
        rule("out", "tcp", "80", "dup"),
    ];
    let global = [
        rule("in", "tcp", "22", "ssh to the host"),
        json!({"type": "in", "action": "ACCEPT", "source": "192.0.2.0/24", "dest": "192.0.2.13",
               "proto": "udp", "port": "53", "comment": "dns"}),
        rule("out", "tcp", "443", "host to the gateway"),
    ];
    let site = Site::new(&[
        (500, guarded("fw-500", 200, &guest_rules)),
        (
            501,
            guarded("fw-501", 201, &[rule("in", "tcp", "5432", "db")]),
        ),
    ]);
    site.write(
        "etc/phoenix_hypervisor_config.json",
        &json!({
            "domain_name": "lab.example.internal",
            "network": {"interfaces": {"name": "vmbr0", "address": "192.0.2.13/24", "gateway": "192.0.2.1"}},
            "firewall": {"enabled": true, "default_input_policy": "DROP", "default_output_policy": "ACCEPT",
                         "global_firewall_rules": global}
        }),
    );

    let out = site.cmd(&["plan", "--detailed-exitcode"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let text = stdout(&out);
    for want in [
        "firewall.cluster will be created",
        "firewall.500 will be created",
        "firewall.501 will be created",
        "\"IN ACCEPT -p tcp -dport 80,443 # web\"",
        "\"IN ACCEPT -source 192.0.2.0/24 -p icmp # ping\"",
        "rule_count = 5",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }

    run_ok(&site, &["apply", "--auto-approve"]);
    assert_no_changes(&site);

    let pve = Pve::new();
    let node = pve.node().to_string();
    assert_eq!(pve_rules(&rules_path(500)), expected(&guest_rules));
    assert_eq!(
        pve.get(&format!("/nodes/{node}/lxc/500/firewall/options"))["enable"],
        json!(1),
        "the guest firewall is on (the seed never set it for containers)"
    );
    // The datacenter list holds the global rules and nothing else.
    assert_eq!(pve_rules("/cluster/firewall/rules"), expected(&global));
    let options = pve.get("/cluster/firewall/options");
    assert!(options["enable"].as_u64().unwrap_or(0) >= 1, "{options}");
    assert_eq!(options["policy_in"], json!("DROP"));
    assert_eq!(options["policy_out"], json!("ACCEPT"));
    let state = site.state();
    assert!(
        state["resources"]["firewall.cluster"].is_object(),
        "{state}"
    );

    // The cluster firewall leaves the manifests: its managed fields are reset, nothing else.
    site.write(
        "etc/phoenix_hypervisor_config.json",
        &json!({
            "domain_name": "lab.example.internal",
            "network": {"interfaces": {"name": "vmbr0", "address": "192.0.2.13/24", "gateway": "192.0.2.1"}}
        }),
    );
    let text = run_ok(&site, &["plan"]);
    assert!(
        text.contains("firewall.cluster will be destroyed"),
        "{text}"
    );
    run_ok(&site, &["apply", "--auto-approve"]);
    assert!(pve_rules("/cluster/firewall/rules").is_empty());
    let options = pve.get("/cluster/firewall/options");
    assert!(options.get("enable").is_none(), "{options}");
    assert_no_changes(&site);
    assert_eq!(
        pve_rules(&rules_path(500)).len(),
        5,
        "guest rules untouched"
    );
}

#[test]
fn drift_in_rules_is_named_and_restored_in_order_with_minimal_edits() {
    let rules = [
        rule("in", "tcp", "22", "ssh"),
        rule("in", "tcp", "80", "http"),
        rule("in", "tcp", "443", "https"),
        rule("in", "udp", "53", "dns"),
        rule("out", "tcp", "25", "mail"),
    ];
    let site = Site::new(&[(510, guarded("fw-510", 210, &rules))]);
    run_ok(&site, &["apply", "--auto-approve"]);
    site.cmd(&["drift"]).assert().code(0);

    // Behind phoenix's back: rule 2 edited, the last rule deleted.
    let pve = Pve::new();
    let path = rules_path(510);
    pve.put(&format!("{path}/2"), &[("dport", "8443")]);
    pve.http_delete(&format!("{path}/4"));

    let out = site.cmd(&["drift"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let text = stdout(&out);
    for want in [
        "firewall.510 changed outside phoenix",
        "rules.2",
        "\"IN ACCEPT -p tcp -dport 443 # https\" -> \"IN ACCEPT -p tcp -dport 8443 # https\"",
        "rules.4",
        "\"OUT ACCEPT -p tcp -dport 25 # mail\" -> null",
        "rule_count",
        "5 -> 4",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }

    let marker = mark(510);
    run_ok(&site, &["apply", "--auto-approve"]);
    let writes = writes_since(&marker, 510);
    let methods: Vec<&str> = writes.iter().map(|(m, _, _)| m.as_str()).collect();
    // Rule 2 updated in place; the lost rule inserted (at the top, as PVE does) and moved to the end.
    assert_eq!(methods, ["PUT", "POST", "PUT"], "{writes:#?}");
    assert!(writes[0].1.ends_with("/rules/2"), "{writes:#?}");
    assert!(writes[0].2.contains("dport=443"), "{writes:#?}");
    assert!(
        writes.iter().all(|(_, _, body)| body.contains("digest=")),
        "every edit carries the digest: {writes:#?}"
    );
    assert!(writes[2].2.contains("moveto=5"), "{writes:#?}");
    assert_eq!(pve_rules(&path), expected(&rules));
    site.cmd(&["drift"]).assert().code(0);
    assert_no_changes(&site);
}

#[test]
fn a_rule_inserted_in_the_middle_is_one_insert_at_its_place() {
    let mut rules = vec![
        rule("in", "tcp", "22", "ssh"),
        rule("in", "tcp", "80", "http"),
        rule("in", "tcp", "443", "https"),
        rule("out", "tcp", "25", "mail"),
    ];
    let site = Site::new(&[(520, guarded("fw-520", 220, &rules))]);
    run_ok(&site, &["apply", "--auto-approve"]);

    rules.insert(2, rule("in", "tcp", "8080", "alt http"));
    site.set_lxcs(&[(520, guarded("fw-520", 220, &rules))]);
    let text = run_ok(&site, &["plan"]);
    assert!(
        text.contains("firewall.520 will be updated in-place"),
        "{text}"
    );
    assert!(text.contains("rule_count = 4 -> 5"), "{text}");

    let marker = mark(520);
    run_ok(&site, &["apply", "--auto-approve"]);
    let writes = writes_since(&marker, 520);
    let methods: Vec<&str> = writes.iter().map(|(m, _, _)| m.as_str()).collect();
    assert_eq!(methods, ["POST", "PUT"], "not a rewrite: {writes:#?}");
    assert!(writes[0].2.contains("dport=8080"), "{writes:#?}");
    assert!(writes[1].2.contains("moveto=3"), "{writes:#?}");
    assert_eq!(pve_rules(&rules_path(520)), expected(&rules));
    assert_no_changes(&site);

    // And the way back: one delete.
    rules.remove(2);
    site.set_lxcs(&[(520, guarded("fw-520", 220, &rules))]);
    let marker = mark(520);
    run_ok(&site, &["apply", "--auto-approve"]);
    let writes = writes_since(&marker, 520);
    assert_eq!(writes.len(), 1, "{writes:#?}");
    assert_eq!(writes[0].0, "DELETE");
    assert!(writes[0].1.ends_with("/rules/2"), "{writes:#?}");
    assert_eq!(pve_rules(&rules_path(520)), expected(&rules));
    assert_no_changes(&site);
}

#[test]
fn a_firewall_removed_from_the_manifests_is_reset() {
    let rules = [
        rule("in", "tcp", "80", "http"),
        rule("in", "tcp", "443", "https"),
    ];
    let site = Site::new(&[(530, guarded("fw-530", 230, &rules))]);
    run_ok(&site, &["apply", "--auto-approve"]);
    let pve = Pve::new();
    let options = format!("/nodes/{}/lxc/530/firewall/options", pve.node());
    assert_eq!(pve.get(&options)["enable"], json!(1));

    site.set_lxcs(&[(530, lxc("fw-530", 230))]);
    let text = run_ok(&site, &["plan"]);
    assert!(text.contains("firewall.530 will be destroyed"), "{text}");
    run_ok(&site, &["apply", "--auto-approve"]);
    assert!(pve_rules(&rules_path(530)).is_empty());
    assert!(pve.get(&options).get("enable").is_none());
    assert!(site.state()["resources"].get("firewall.530").is_none());
    assert_no_changes(&site);
}

#[test]
fn a_concurrent_edit_is_refused_not_overwritten() {
    let mut rules = vec![
        rule("in", "tcp", "22", "ssh"),
        rule("in", "tcp", "80", "http"),
        rule("in", "tcp", "443", "https"),
    ];
    let site = Site::new(&[(540, guarded("fw-540", 240, &rules))]);
    run_ok(&site, &["apply", "--auto-approve"]);
    let before = site.state()["resources"]["firewall.540"]["attributes"].clone();

    rules[1] = rule("in", "tcp", "8080", "http");
    site.set_lxcs(&[(540, guarded("fw-540", 240, &rules))]);
    // What PVE answers when the digest sent no longer matches the rules.
    world().control(
        "/fault",
        &json!({"method": "PUT", "suffix": "/lxc/540/firewall/rules/1", "status": 500,
                "message": "detected modified configuration - file changed by other user? Try again.",
                "times": 1}),
    );
    let out = site.cmd(&["apply", "--auto-approve"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let err = stderr(&out);
    assert!(
        err.contains("changed in Proxmox while phoenix was changing it"),
        "{err}"
    );
    assert!(err.contains("phoenix plan"), "{err}");
    assert_eq!(
        site.state()["resources"]["firewall.540"]["attributes"],
        before
    );

    run_ok(&site, &["apply", "--auto-approve"]);
    assert_eq!(pve_rules(&rules_path(540)), expected(&rules));
    assert_no_changes(&site);
}
