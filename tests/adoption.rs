//! Adoption of a running site: users come from the bash scripts with their
//! guests already running. A test binary of its own, so its fake PVE holds
//! the seed's guests (ids 101..1002) without meeting the other tests' sites.
//!
//! The fake is brought to "the seed site, built by the old scripts" by
//! applying the seed once and then throwing the state away; a few attributes
//! are then changed by hand, as years of manual fixes would.

#[allow(dead_code)]
#[path = "common.rs"]
mod common;
// support/mod.rs allows dead code for itself.
#[path = "support/mod.rs"]
mod support;

use std::path::Path;

use common::{Pve, Site, stderr, stdout};
use serde_json::{Value, json};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn plan_adopt_takes_over_the_seed_guests_and_shows_what_differs() {
    let site = Site {
        dir: tempfile::tempdir().unwrap(),
    };
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/phoenix-seed"),
        site.root(),
    );
    // The host layer (dns.records, file.*) has tests of its own (host_*): off in this copy.
    let hv = site.root().join("etc/phoenix_hypervisor_config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&hv).unwrap()).unwrap();
    config["dns_server"]["enabled"] = json!(false);
    config["ingress"] = json!({"enabled": false});
    // Certificates too (host_cert issues them from a real ACME CA).
    site.write("etc/certificate-manifest.json", &json!([]));
    site.write("etc/phoenix_hypervisor_config.json", &config);
    let out = site.cmd(&["apply", "--auto-approve"]).output().unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    // The old scripts kept no state.
    std::fs::remove_dir_all(site.root().join("state")).unwrap();

    let pve = Pve::new();
    let node = pve.node().to_string();
    pve.put(
        &format!("/nodes/{node}/lxc/103/config"),
        &[("memory", "2048")],
    );
    pve.put(&format!("/nodes/{node}/lxc/101/config"), &[("onboot", "0")]);
    pve.put(
        &format!("/nodes/{node}/qemu/1001/config"),
        &[("cores", "8")],
    );

    // Without --adopt the plan refuses to take anything over silently.
    let out = site.cmd(&["plan"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("phoenix import lxc.101"),
        "{}",
        stderr(&out)
    );

    let out = site.cmd(&["plan", "--adopt", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    let adopts: Vec<&Value> = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["action"] == json!("adopt"))
        .collect();
    let guests = adopts.iter().filter(|c| {
        let a = c["address"].as_str().unwrap();
        a.starts_with("lxc.") || a.starts_with("vm.")
    });
    assert_eq!(guests.count(), 15, "every seed guest is adopted: {plan}");
    let paths = |addr: &str| -> Vec<String> {
        adopts
            .iter()
            .find(|c| c["address"] == json!(addr))
            .map(|c| {
                c["changed_paths"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p.as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(paths("lxc.103"), ["memory"]);
    assert_eq!(paths("lxc.101"), ["onboot"]);
    assert!(
        paths("vm.1001").contains(&"cores".to_string()),
        "{:?}",
        paths("vm.1001")
    );
    assert!(
        paths("lxc.102").is_empty(),
        "an untouched guest is adopted as it is"
    );
    assert!(
        !plan["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["action"] == json!("create")),
        "nothing is created twice: {plan}"
    );

    // The text plan shows `<=` and the in-place changes that follow.
    let out = site.cmd(&["plan", "--adopt"]).output().unwrap();
    let text = stdout(&out);
    assert!(text.contains(" <= lxc.103 {"), "{text}");
    assert!(text.contains("memory = 2048 -> 1024"), "{text}");

    // Import one by hand, then adopt the rest and converge.
    site.cmd(&["import", "lxc.102"]).assert().success();
    site.cmd(&["apply", "--auto-approve", "--adopt"])
        .assert()
        .success();
    site.cmd(&["plan", "--detailed-exitcode"]).assert().code(0);
    site.cmd(&["drift"]).assert().code(0);
    assert_eq!(pve.lxc_config(103)["memory"], json!(1024));

    // The seed's own failure cases, on the seed's own guests: `stop 1002`
    // stopped 900, 103, 102, 9000 and 1001 first; `status` did not exist;
    // `LetsGo` aborted after the first guest.
    let status = |kind: &str, id: u32| {
        pve.get(&format!("/nodes/{node}/{kind}/{id}/status/current"))["status"].clone()
    };
    site.cmd(&["stop", "1002"]).assert().success();
    assert_eq!(status("qemu", 1002), json!("stopped"));
    for (kind, id) in [("qemu", 1001), ("lxc", 102), ("lxc", 103), ("lxc", 900)] {
        assert_eq!(
            status(kind, id),
            json!("running"),
            "{kind} {id} must keep running"
        );
    }
    let out = site.cmd(&["status"]).output().unwrap();
    let table = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        table.lines().count(),
        1 + 15,
        "a row per seed guest: {table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("vm.1002") && l.contains("stopped") && l.contains("drift")),
        "{table}"
    );
    site.cmd(&["LetsGo", "--auto-approve"]).assert().success();
    assert_eq!(
        status("qemu", 1002),
        json!("running"),
        "LetsGo went on to the guest that was down"
    );
    site.cmd(&["drift"]).assert().code(0);
}
