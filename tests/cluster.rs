//! A cluster with more than one node: guests are found on any node, created
//! on the node their manifest names, and one found on another node than its
//! manifest says is reported, not recreated or moved.

use serde_json::{Value, json};

use crate::common::{Pve, Site, lxc, stderr, stdout};
use crate::support::fakepve::world;

fn node_of(pve: &Pve, vmid: u32) -> Value {
    pve.get("/cluster/resources?type=vm")
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["vmid"].as_u64() == Some(u64::from(vmid)))
        .map(|g| g["node"].clone())
        .unwrap_or(Value::Null)
}

#[test]
fn guests_on_other_nodes_are_found_created_where_asked_and_reported_not_moved() {
    // The shared fake gets a second node; every test names its node (PHOENIX_PVE_NODE).
    world().control("/call", &json!({"name": "add_node", "args": ["pve2"]}));
    let pve = Pve::new();
    // 438 exists already, on pve2, although its manifest will say pve1.
    pve.post(
        "/nodes/pve2/lxc",
        &[
            ("vmid", "438"),
            ("ostemplate", crate::common::TEMPLATE),
            ("rootfs", "local-lvm:4"),
            ("hostname", "moved-438"),
            ("memory", "512"),
            ("cores", "1"),
            (
                "net0",
                "name=eth0,bridge=vmbr0,ip=192.0.2.238/24,gw=192.0.2.1",
            ),
        ],
    );
    let mut moved = lxc("moved-438", 238);
    moved["node"] = json!("pve1");
    let mut placed = lxc("placed-439", 239);
    placed["node"] = json!("pve2");
    let site = Site::new(&[(438, moved), (439, placed)]);

    site.cmd(&["import", "lxc.438"]).assert().success();
    let out = site.cmd(&["plan"]).output().unwrap();
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(text.contains("lxc.439 will be created"), "{text}");
    assert!(
        !text.contains("lxc.438 will be created") && !text.contains("lxc.438 must be replaced"),
        "{text}"
    );
    assert!(
        text.contains("lxc.438: runs on node `pve2`, the manifest says `pve1`"),
        "{text}"
    );

    site.cmd(&["apply", "--auto-approve"]).assert().success();
    assert_eq!(
        node_of(&pve, 439),
        json!("pve2"),
        "created on the node its manifest names"
    );
    assert_eq!(node_of(&pve, 438), json!("pve2"), "left where it runs");
    assert_eq!(pve.count(438), 1);
    let out = site.cmd(&["plan", "--detailed-exitcode"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("runs on node `pve2`"),
        "the note stays until it is resolved"
    );
}
