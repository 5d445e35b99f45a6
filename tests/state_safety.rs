//! The state stays true: one writer at a time, stale plans refused, a killed
//! apply recovered, files private.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::{Pve, Site, lxc, stderr, stdout};

#[test]
fn two_concurrent_applies_exactly_one_proceeds_and_the_other_names_the_holder() {
    let site = Site::new(&[(370, lxc("lock-370", 170))]);
    // The first apply holds the lock while it waits at its confirmation prompt.
    let mut first = site
        .std_cmd(&["apply"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(first.stderr.take().unwrap());
    let start = Instant::now();
    let mut seen = String::new();
    let mut buf = [0u8; 256];
    while !seen.contains("Enter a value") {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no prompt: {seen}"
        );
        let n = err.read(&mut buf).unwrap();
        assert!(n > 0, "first apply ended early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let out = site.cmd(&["apply", "--auto-approve"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let e = stderr(&out);
    assert!(e.contains("the state is locked"), "{e}");
    assert!(e.contains(&format!("pid {}", first.id())), "{e}");
    assert!(e.contains("`apply`"), "{e}");
    assert_eq!(
        Pve::new().count(370),
        0,
        "the refused apply changed nothing"
    );

    first.stdin.take().unwrap().write_all(b"yes\n").unwrap();
    let status = first.wait().unwrap();
    let mut rest = String::new();
    err.read_to_string(&mut rest).unwrap();
    assert!(status.success(), "{seen}{rest}");
    assert_eq!(Pve::new().count(370), 1);

    // With --lock-timeout a second writer waits instead, and then finds nothing to do.
    let mut holder = site
        .std_cmd(&["apply"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let waiter = site
        .std_cmd(&["apply", "--auto-approve", "--lock-timeout", "60s"])
        .output();
    drop(holder.stdin.take());
    let _ = holder.wait();
    let waiter = waiter.unwrap();
    assert!(
        waiter.status.success(),
        "{}",
        String::from_utf8_lossy(&waiter.stderr)
    );
}

#[test]
fn stale_or_moved_saved_plans_are_refused() {
    let site = Site::new(&[(380, lxc("saved-380", 180))]);
    let plan_path = site.root().join("p1.plan");
    site.cmd(&["plan", "--out", plan_path.to_str().unwrap()])
        .assert()
        .success();
    let mode = std::fs::metadata(&plan_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // Another apply moves the state on: the saved plan is stale.
    site.cmd(&["apply", "--auto-approve"]).assert().success();
    let out = site
        .cmd(&["apply", plan_path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("the saved plan is stale"),
        "{}",
        stderr(&out)
    );

    // A fresh plan, then the object changes in Proxmox: refused before touching anything.
    let mut edited = lxc("saved-380", 180);
    edited["memory_mb"] = json!(640);
    site.set_lxcs(&[(380, edited)]);
    let p2 = site.root().join("p2.plan");
    site.cmd(&["plan", "--out", p2.to_str().unwrap()])
        .assert()
        .success();
    let pve = Pve::new();
    pve.put(
        &format!("/nodes/{}/lxc/380/config", pve.node()),
        &[("cores", "3")],
    );
    let serial = site.state()["serial"].clone();
    let out = site.cmd(&["apply", p2.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("lxc.380 changed in the real system since the plan"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        pve.lxc_config(380)["memory"],
        json!(512),
        "nothing was changed"
    );
    assert_eq!(site.state()["serial"], serial);

    // A current saved plan applies without a prompt.
    let p3 = site.root().join("p3.plan");
    site.cmd(&["plan", "--out", p3.to_str().unwrap()])
        .assert()
        .success();
    site.cmd(&["apply", p3.to_str().unwrap()])
        .assert()
        .success();
    assert_eq!(pve.lxc_config(380)["memory"], json!(640));
    site.cmd(&["plan", "--detailed-exitcode"]).assert().code(0);
}

#[test]
fn apply_killed_mid_way_leaves_a_loadable_state_and_the_next_apply_converges() {
    let ids: Vec<u32> = (390..398).collect();
    let lxcs: Vec<(u32, serde_json::Value)> = ids
        .iter()
        .map(|&i| (i, lxc(&format!("kill-{i}"), i - 200)))
        .collect();
    let site = Site::new(&lxcs);
    let mut child = site
        .std_cmd(&["apply", "--auto-approve", "--parallelism", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    for line in err.lines() {
        let line = line.unwrap();
        log.push_str(&line);
        log.push('\n');
        if line.contains("Committed") {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL
    let _ = child.wait();
    assert!(log.contains("Committed"), "{log}");

    // The state loads; every guest that exists is either in the state or journaled.
    let state = site.state();
    let pve = Pve::new();
    for &i in &ids {
        if pve.count(i) == 1 {
            let addr = format!("lxc.{i}");
            let in_state = state["resources"].get(&addr).is_some();
            let journaled = state["pending"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["address"] == json!(addr));
            assert!(
                in_state || journaled,
                "{addr} exists but the state does not know it: {state}"
            );
        }
    }
    site.cmd(&["state", "list"]).assert().success();

    let out = site.cmd(&["apply", "--auto-approve"]).output().unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    for &i in &ids {
        assert_eq!(pve.count(i), 1, "lxc.{i} exists exactly once");
    }
    site.cmd(&["plan", "--detailed-exitcode"]).assert().code(0);
}

#[test]
fn state_key_and_plan_files_are_private() {
    let site = Site::new(&[(399, lxc("mode-399", 199))]);
    site.cmd(&["apply", "--auto-approve"]).assert().success();
    for f in [
        "state/phoenix.state.json",
        "state/phoenix.state.json.key",
        "state/phoenix.state.json.lock",
    ] {
        let mode = std::fs::metadata(site.root().join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    // A second apply with changes leaves a private backup of the previous state.
    let mut e = lxc("mode-399", 199);
    e["cores"] = json!(2);
    site.set_lxcs(&[(399, e)]);
    site.cmd(&["apply", "--auto-approve"]).assert().success();
    let mode = std::fs::metadata(site.root().join("state/phoenix.state.json.backup"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    site.cmd(&["state", "show", "lxc.399"])
        .assert()
        .success()
        .stdout(predicates::str::contains("\"cores\": 2"));
}
