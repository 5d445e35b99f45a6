//! The seed's verbs on top of plan/apply, including the seed's known failure
//! cases: `stop X` must stop X only, `status` works, `LetsGo` goes past the first guest.

use serde_json::{Value, json};

use crate::common::{Pve, Site, lxc, stderr, stdout};

/// 410 <- 411 <- 412 (412 depends on 411, which depends on 410), and 413 alone.
fn chain_site(base: u32) -> Site {
    let mut a = lxc(&format!("chain-{base}"), base - 250);
    a["boot_order"] = json!(1);
    let mut b = lxc(&format!("chain-{}", base + 1), base - 249);
    b["dependencies"] = json!([base.to_string()]);
    b["boot_order"] = json!(2);
    let mut c = lxc(&format!("chain-{}", base + 2), base - 248);
    c["dependencies"] = json!([(base + 1).to_string()]);
    c["boot_order"] = json!(3);
    let d = lxc(&format!("alone-{}", base + 3), base - 247);
    Site::new(&[(base, a), (base + 1, b), (base + 2, c), (base + 3, d)])
}

fn status_of(pve: &Pve, vmid: u32) -> Value {
    pve.get(&format!("/nodes/{}/lxc/{vmid}/status/current", pve.node()))["status"].clone()
}

#[test]
fn create_takes_dependencies_only_and_dry_run_changes_nothing() {
    let site = chain_site(410);
    let out = site.cmd(&["create", "412", "--dry-run"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("Plan: 3 to add"), "{}", stdout(&out));
    let pve = Pve::new();
    assert_eq!(pve.count(412), 0, "dry run created nothing");

    site.cmd(&["create", "412", "--auto-approve"])
        .assert()
        .success();
    for id in [410, 411, 412] {
        assert_eq!(pve.count(id), 1, "{id}");
    }
    assert_eq!(pve.count(413), 0, "an unrelated guest is left alone");
    // converge of an existing guest changes only what differs: nothing here.
    let out = site
        .cmd(&["converge", "lxc.412", "--auto-approve"])
        .output()
        .unwrap();
    assert!(stderr(&out).contains("no changes"), "{}", stderr(&out));
}

#[test]
fn stop_acts_on_the_named_guest_only_and_shows_as_drift_until_started() {
    let site = chain_site(415);
    site.cmd(&["sync", "all", "--auto-approve"])
        .assert()
        .success();
    let pve = Pve::new();
    site.cmd(&["stop", "416"]).assert().success();
    assert_eq!(status_of(&pve, 416), json!("stopped"));
    for id in [415, 417, 418] {
        assert_eq!(
            status_of(&pve, id),
            json!("running"),
            "{id} must not be stopped"
        );
    }
    let out = site.cmd(&["drift"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stdout(&out).contains("lxc.416 changed outside phoenix"),
        "{}",
        stdout(&out)
    );

    let out = site.cmd(&["status", "--json"]).output().unwrap();
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["address"] == json!("lxc.416"))
        .unwrap()
        .clone();
    assert_eq!(row["status"], json!("stopped"));
    assert_eq!(row["ip"], json!("192.0.2.166/24"));
    assert!(
        row["matches"].as_str().unwrap().starts_with("drift"),
        "{row}"
    );
    let out = site.cmd(&["status"]).output().unwrap();
    assert!(stdout(&out).starts_with("ADDRESS"), "{}", stdout(&out));

    site.cmd(&["start", "416"]).assert().success();
    site.cmd(&["drift"]).assert().code(0);
    site.cmd(&["restart", "lxc.416", "--dry-run"])
        .assert()
        .success()
        .stderr(predicates::str::contains("restart lxc.416"));
}

#[test]
fn delete_names_dependents_and_needs_an_explicit_yes() {
    let site = chain_site(420);
    site.cmd(&["sync", "all", "--auto-approve"])
        .assert()
        .success();
    let out = site.cmd(&["delete", "420"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("lxc.421 depends on lxc.420"),
        "{}",
        stderr(&out)
    );

    let out = site
        .cmd(&["delete", "422", "--auto-approve"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--allow-destroy"), "{}", stderr(&out));

    let out = site
        .cmd(&["delete", "422"])
        .write_stdin("no\n")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(Pve::new().count(422), 1, "answering no destroys nothing");
    site.cmd(&["delete", "422"])
        .write_stdin("yes\n")
        .assert()
        .success();
    assert_eq!(Pve::new().count(422), 0);
    // 422 is still in the manifests and depends on 421: it must be named too.
    site.cmd(&[
        "delete",
        "422",
        "421",
        "420",
        "--auto-approve",
        "--allow-destroy",
    ])
    .assert()
    .success();
    assert_eq!(Pve::new().count(420), 0);
    assert_eq!(Pve::new().count(423), 1);
    // The manifests still list them: a later sync would create them again, and says so.
    assert!(stdout(&site.cmd(&["plan"]).output().unwrap()).contains("Plan: 3 to add"));
}

#[test]
fn lets_go_brings_up_every_guest() {
    let site = chain_site(425);
    let out = site.cmd(&["LetsGo", "--auto-approve"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let pve = Pve::new();
    for id in 425..429 {
        assert_eq!(status_of(&pve, id), json!("running"), "{id}");
    }
    site.cmd(&["plan", "--detailed-exitcode"]).assert().code(0);
}
