//! Changes made outside phoenix, and `phoenix drift`'s exit codes (0/2/3).

use serde_json::json;

use crate::common::{Pve, Site, lxc, stderr, stdout};

#[test]
fn memory_changed_through_the_api_is_drift_and_apply_fixes_it() {
    let site = Site::new(&[(350, lxc("drift-350", 150))]);
    site.cmd(&["apply", "--auto-approve"]).assert().success();
    site.cmd(&["drift"]).assert().code(0);

    let pve = Pve::new();
    pve.put(
        &format!("/nodes/{}/lxc/350/config", pve.node()),
        &[("memory", "2048")],
    );
    let out = site.cmd(&["drift"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let text = stdout(&out);
    assert!(text.contains("lxc.350 changed outside phoenix"), "{text}");
    assert!(
        text.contains("memory") && text.contains("512 -> 2048"),
        "{text}"
    );
    // drift never writes: the state file is unchanged.
    let before = site.state();
    site.cmd(&["drift"]).assert().code(3);
    assert_eq!(before, site.state());

    let out = site.cmd(&["plan"]).output().unwrap();
    assert!(
        stdout(&out).contains("memory = 2048 -> 512"),
        "{}",
        stdout(&out)
    );
    site.cmd(&["apply", "--auto-approve"]).assert().success();
    assert_eq!(pve.lxc_config(350)["memory"], json!(512));
    site.cmd(&["drift"]).assert().code(0);

    // A manifest edit alone: pending changes, not drift.
    let mut edited = lxc("drift-350", 150);
    edited["memory_mb"] = json!(768);
    site.set_lxcs(&[(350, edited)]);
    site.cmd(&["drift"]).assert().code(2);
}

#[test]
fn deleted_outside_is_recreated_and_stopped_by_hand_is_started() {
    let site = Site::new(&[(360, lxc("del-360", 160)), (361, lxc("stop-361", 161))]);
    site.cmd(&["apply", "--auto-approve"]).assert().success();
    let pve = Pve::new();
    let node = pve.node().to_string();
    pve.post(&format!("/nodes/{node}/lxc/361/status/stop"), &[]);
    pve.post(&format!("/nodes/{node}/lxc/360/status/stop"), &[]);
    pve.http_delete(&format!("/nodes/{node}/lxc/360"));
    let out = site.cmd(&["plan"]).output().unwrap();
    let text = stdout(&out);
    assert!(
        text.contains("lxc.360 was deleted outside phoenix"),
        "{text}"
    );
    assert!(
        text.contains("status") && text.contains("\"stopped\" -> \"running\""),
        "{text}"
    );
    site.cmd(&["apply", "--auto-approve"]).assert().success();
    site.cmd(&["plan", "--detailed-exitcode"]).assert().code(0);
    assert_eq!(pve.count(360), 1);
}

#[test]
fn drift_and_plan_on_a_fresh_site_write_nothing() {
    let site = Site::new(&[(365, lxc("fresh-365", 165))]);
    site.cmd(&["drift"]).assert().code(2);
    site.cmd(&["plan", "--detailed-exitcode"]).assert().code(2);
    assert!(
        !site.root().join("state").exists(),
        "read-only commands created state/"
    );
}
