//! plan -> apply -> empty plan, and every in-place change of the LXC slice.

use serde_json::json;

use crate::common::{Pve, Site, lxc, stderr, stdout};

#[test]
fn empty_cluster_plan_apply_then_no_changes() {
    let mut base = lxc("base-310", 110);
    base["status"] = json!("stopped");
    base["start_at_boot"] = json!(false);
    let mut clone = lxc("clone-311", 111);
    clone.as_object_mut().unwrap().remove("template");
    clone["clone_from_ctid"] = json!("310");
    clone["mac_address"] = json!("52:54:00:aa:bb:11");
    clone["pct_options"] = json!(["nesting=1"]);
    clone["tags"] = json!(["Web", "phoenix"]);
    clone["network_config"]["nameservers"] = json!("192.0.2.13");
    clone["firewall"] = json!({"enabled": true, "rules": []});
    clone["storage_size_gb"] = json!(6);
    let site = Site::new(&[(310, base), (311, clone), (312, lxc("plain-312", 112))]);

    let out = site.cmd(&["plan", "--detailed-exitcode"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let text = stdout(&out);
    for a in [
        "lxc.310 will be created",
        "lxc.311 will be created",
        "lxc.312 will be created",
    ] {
        assert!(text.contains(a), "{text}");
    }
    // The three guests, and what they bring along (their firewall, storage, template).
    let creates = text.matches(" will be created").count();
    assert!(creates >= 3, "{text}");
    assert!(
        text.contains(&format!(
            "Plan: {creates} to add, 0 to change, 0 to destroy."
        )),
        "{text}"
    );

    let out = site.cmd(&["apply", "--auto-approve"]).output().unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("Creating lxc.311"), "{err}");
    assert!(err.contains("Committed lxc.311"), "{err}");

    let out = site.cmd(&["plan", "--detailed-exitcode"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(stdout(&out).contains("No changes. The site matches the manifests."));

    // What PVE holds is what the manifests said.
    let pve = Pve::new();
    let cfg = pve.lxc_config(311);
    let net0 = cfg["net0"].as_str().unwrap();
    assert!(net0.contains("hwaddr=52:54:00:AA:BB:11"), "{net0}");
    assert!(net0.contains("firewall=1"), "{net0}");
    assert_eq!(cfg["features"], json!("nesting=1"));
    assert_eq!(cfg["tags"], json!("phoenix;web"));
    assert!(cfg["rootfs"].as_str().unwrap().contains("size=6G"), "{cfg}");
    let st = pve.get(&format!("/nodes/{}/lxc/311/status/current", pve.node()));
    assert_eq!(st["status"], json!("running"));
    let st = pve.get(&format!("/nodes/{}/lxc/310/status/current", pve.node()));
    assert_eq!(st["status"], json!("stopped"));

    // The state records everything created, lineage and serial set.
    let state = site.state();
    assert_eq!(state["resources"].as_object().unwrap().len(), creates);
    assert!(state["serial"].as_u64().unwrap() >= 3);
    assert!(state["pending"].as_array().unwrap().is_empty());
}

#[test]
fn in_place_updates_grow_and_forced_replacement() {
    let site = Site::new(&[(320, lxc("upd-320", 120))]);
    site.cmd(&["apply", "--auto-approve"]).assert().success();

    let mut changed = lxc("upd-320-renamed", 121);
    changed["memory_mb"] = json!(1024);
    changed["cores"] = json!(2);
    changed["storage_size_gb"] = json!(8);
    changed["boot_order"] = json!(7);
    site.set_lxcs(&[(320, changed.clone())]);
    let out = site.cmd(&["plan"]).output().unwrap();
    let text = stdout(&out);
    assert!(text.contains("lxc.320 will be updated in-place"), "{text}");
    assert!(text.contains("memory"), "{text}");
    assert!(text.contains("net0.ip"), "{text}");
    assert!(
        text.contains("rootfs_size") && text.contains("\"4G\" -> \"8G\""),
        "{text}"
    );
    site.cmd(&["apply", "--auto-approve"]).assert().success();
    site.cmd(&["plan", "--detailed-exitcode"]).assert().code(0);
    let cfg = Pve::new().lxc_config(320);
    assert_eq!(cfg["memory"], json!(1024));
    assert_eq!(cfg["hostname"], json!("upd-320-renamed"));
    assert!(cfg["rootfs"].as_str().unwrap().contains("size=8G"));

    // Shrinking is an error that says what to do, not a replacement.
    let mut shrink = changed.clone();
    shrink["storage_size_gb"] = json!(4);
    site.set_lxcs(&[(320, shrink)]);
    let out = site.cmd(&["plan"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("`rootfs_size` cannot shrink from 8G to 4G"),
        "{err}"
    );

    // unprivileged cannot change in place: replacement, refused without --allow-destroy.
    // Its firewall goes with it (PVE removes a destroyed guest's firewall), so
    // the plan creates that again after it.
    let mut walled = changed.clone();
    walled["firewall"] = json!({"enabled": true, "rules": [
        {"type": "in", "action": "ACCEPT", "proto": "tcp", "port": "22", "comment": "ssh"}]});
    site.set_lxcs(&[(320, walled.clone())]);
    site.cmd(&["apply", "--auto-approve"]).assert().success();
    let mut privileged = walled.clone();
    privileged["unprivileged"] = json!(false);
    site.set_lxcs(&[(320, privileged)]);
    let out = site.cmd(&["plan"]).output().unwrap();
    let text = stdout(&out);
    assert!(text.contains("lxc.320 must be replaced"), "{text}");
    assert!(text.contains("# forces replacement"), "{text}");
    assert!(
        text.contains("firewall.320 will be created again: its guest is replaced"),
        "{text}"
    );
    let out = site.cmd(&["apply", "--auto-approve"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--allow-destroy"), "{}", stderr(&out));
    site.cmd(&["apply", "--auto-approve", "--allow-destroy"])
        .assert()
        .success();
    site.cmd(&["plan", "--detailed-exitcode"]).assert().code(0);
    let cfg = Pve::new().lxc_config(320);
    assert!(
        cfg["unprivileged"].is_null() || cfg["unprivileged"] == json!(0),
        "{cfg}"
    );
    let pve = Pve::new();
    let rules = pve.get(&format!("/nodes/{}/lxc/320/firewall/rules", pve.node()));
    assert_eq!(
        rules.as_array().map(Vec::len),
        Some(1),
        "one rule, not two: {rules}"
    );
}

#[test]
fn removed_from_manifests_is_destroyed_only_with_allow_destroy() {
    let site = Site::new(&[(330, lxc("gone-330", 130)), (331, lxc("kept-331", 131))]);
    site.cmd(&["apply", "--auto-approve"]).assert().success();
    site.set_lxcs(&[(331, lxc("kept-331", 131))]);
    let out = site.cmd(&["plan", "--detailed-exitcode"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stdout(&out).contains("lxc.330 will be destroyed"),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("0 to add, 0 to change, 1 to destroy"));
    let out = site.cmd(&["apply", "--auto-approve"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("destroys 1 object(s) and their data: lxc.330"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        Pve::new().count(330),
        1,
        "nothing destroyed without --allow-destroy"
    );
    site.cmd(&["apply", "--auto-approve", "--allow-destroy"])
        .assert()
        .success();
    assert_eq!(Pve::new().count(330), 0);
    assert_eq!(Pve::new().count(331), 1);
    site.cmd(&["plan", "--detailed-exitcode"]).assert().code(0);
}

#[test]
fn json_and_markdown_plans() {
    let site = Site::new(&[(340, lxc("fmt-340", 140))]);
    let out = site.cmd(&["plan", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["format_version"], json!("1"));
    assert_eq!(v["summary"]["add"], json!(1));
    assert_eq!(v["changes"][0]["address"], json!("lxc.340"));
    assert_eq!(v["changes"][0]["action"], json!("create"));
    let out = site
        .cmd(&["plan", "--format", "markdown"])
        .output()
        .unwrap();
    assert!(
        stdout(&out).starts_with("### phoenix plan"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn template_given_as_a_host_path_maps_to_its_storage() {
    // The seed's form: a path inside a directory storage's template cache.
    let mut c = lxc("path-345", 145);
    c["template"] = json!("/var/lib/vz/template/cache/debian-12-standard_12.7-1_amd64.tar.zst");
    let site = Site::new(&[(345, c)]);
    site.cmd(&["apply", "--auto-approve"]).assert().success();
    assert_eq!(Pve::new().count(345), 1);
    site.cmd(&["plan", "--detailed-exitcode"]).assert().code(0);

    let mut bad = lxc("path-346", 146);
    bad["template"] = json!("/nowhere/template/cache/x.tar.zst");
    site.set_lxcs(&[(346, bad)]);
    let out = site
        .cmd(&["apply", "--auto-approve", "--target", "lxc.346"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("is not inside any directory storage"),
        "{}",
        stderr(&out)
    );
}
