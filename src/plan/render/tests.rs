//! Snapshots of the three renderings of one plan holding every action kind,
//! drift, and a secret (which must show as `(sensitive)` everywhere).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::model::{Address, Attrs, Desired, DesiredResource, LiveObject};
use crate::plan::{DiffInput, DiffOptions, Plan, diff};
use crate::state::ResourceState;

fn attrs(v: Value) -> Attrs {
    v.as_object().unwrap().clone()
}

fn addr(s: &str) -> Address {
    s.parse().unwrap()
}

fn every_action_plan() -> Plan {
    let lxc = |mem: u64, unpriv: bool, ip: &str| {
        json!({"hostname": "web", "memory": mem, "unprivileged": unpriv,
               "net0": {"name": "eth0", "bridge": "vmbr0", "ip": ip}, "status": "running"})
    };
    let mut desired = Desired::default();
    let mut put = |a: &str, v: Value| {
        desired.resources.insert(
            addr(a),
            DesiredResource {
                address: addr(a),
                attrs: attrs(v),
                create: Default::default(),
                depends_on: vec![],
            },
        );
    };
    put("lxc.101", lxc(1024, true, "192.0.2.11/24")); // create
    put("lxc.102", lxc(2048, true, "192.0.2.12/24")); // update, reverting drift
    put("lxc.103", lxc(1024, true, "192.0.2.13/24")); // replace
    put("lxc.105", lxc(1024, true, "192.0.2.15/24")); // adopt
    put(
        "test_secret.db",
        json!({"user": "app", "password": "hunter2"}),
    ); // secret changed
    let prior: BTreeMap<Address, ResourceState> = [
        ("lxc.102", lxc(2048, true, "192.0.2.12/24")),
        ("lxc.103", lxc(1024, false, "192.0.2.13/24")),
        ("lxc.104", lxc(512, true, "192.0.2.14/24")),
        ("lxc.106", lxc(512, true, "192.0.2.16/24")),
        (
            "test_secret.db",
            json!({"user": "app", "password": "hmac-sha256:old"}),
        ),
    ]
    .into_iter()
    .map(|(a, v)| {
        (
            addr(a),
            ResourceState {
                address: addr(a),
                kind: addr(a).kind().into(),
                attributes: attrs(v),
                remote: Value::Null,
                dependencies: vec![],
                updated_at: "2026-11-22T00:00:00Z".into(),
            },
        )
    })
    .collect();
    let live: BTreeMap<Address, LiveObject> = [
        ("lxc.102", lxc(4096, true, "192.0.2.12/24")),
        ("lxc.103", lxc(1024, false, "192.0.2.13/24")),
        ("lxc.104", lxc(512, true, "192.0.2.14/24")),
        ("lxc.105", lxc(1024, true, "192.0.2.99/24")),
        ("test_secret.db", json!({"user": "app"})),
    ]
    .into_iter()
    .map(|(a, v)| {
        (
            addr(a),
            LiveObject {
                attrs: attrs(v),
                remote: Value::Null,
                token: None,
            },
        )
    })
    .collect();
    let fp = |v: &Value| format!("hmac-sha256:{}", v.as_str().map_or(0, str::len));
    diff(&DiffInput {
        desired: &desired,
        prior: &prior,
        live: &live,
        recovered: &BTreeSet::new(),
        options: &DiffOptions {
            adopt: true,
            ..Default::default()
        },
        secret_fingerprint: &fp,
    })
    .unwrap()
}

#[test]
fn text() {
    let mut out = Vec::new();
    super::text::render(&every_action_plan(), &mut out, false).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(!text.contains("hunter2"));
    insta::assert_snapshot!(text);
}

#[test]
fn json() {
    let mut out = Vec::new();
    super::json::render(&every_action_plan(), &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(!text.contains("hunter2"));
    insta::assert_snapshot!(text);
}

#[test]
fn markdown() {
    let mut out = Vec::new();
    super::markdown::render(&every_action_plan(), &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(!text.contains("hunter2"));
    insta::assert_snapshot!(text);
}

#[test]
fn file_contents_show_as_a_unified_diff() {
    let mut plan = every_action_plan();
    let c = plan
        .changes
        .iter_mut()
        .find(|c| c.address == addr("lxc.102"))
        .unwrap();
    c.before
        .as_mut()
        .unwrap()
        .insert("content".into(), json!("a\nb\nc\n"));
    c.after
        .as_mut()
        .unwrap()
        .insert("content".into(), json!("a\nB\nc\nd\n"));
    c.changed_paths = vec!["content".into()];
    let mut out = Vec::new();
    super::text::render(&plan, &mut out, false).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("~ content:\n          @@ -1,3 +1,4 @@\n           a\n          -b\n          +B\n           c\n          +d\n"), "{text}");
}

#[test]
fn colors_only_when_asked() {
    let mut out = Vec::new();
    super::text::render(&every_action_plan(), &mut out, true).unwrap();
    assert!(String::from_utf8(out).unwrap().contains("\u{1b}["));
}
