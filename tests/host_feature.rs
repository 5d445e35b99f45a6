//! `feature.<ctid>.<name>` and `app.<ctid>`: the site's scripts run inside
//! the container (lab/host's pct: chrooted into its directory) once, in
//! order, and again only for a reason the plan names. Ids 459, 495-496.

use serde_json::json;

use crate::common::{Site, lxc, stderr, stdout};
use crate::host_support::HostLab;

const LOG: &str = "/var/log/provision.log";

fn script(site: &Site, name: &str, body: &str) {
    let dir = site.root().join("features");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), format!("#!/bin/sh\nset -e\n{body}\n")).unwrap();
}

fn run(lab: &HostLab, site: &Site, args: &[&str]) -> std::process::Output {
    lab.cmd(site, "true", args).output().unwrap()
}

fn ok(out: &std::process::Output) -> String {
    assert!(out.status.success(), "{}{}", stdout(out), stderr(out));
    format!("{}{}", stdout(out), stderr(out))
}

fn log(lab: &HostLab) -> String {
    std::fs::read_to_string(lab.guest_file(459, LOG)).unwrap_or_default()
}

#[test]
fn scripts_run_once_in_order_and_again_only_for_a_reason_the_plan_names() {
    let lab = HostLab::new();
    lab.plain_guest(459);
    let mut ct = lxc("feat-459", 159);
    ct["features"] = json!(["hello", "second"]);
    ct["application_script"] = json!("app.sh");
    let site = Site::new(&[(459, ct.clone())]);
    script(
        &site,
        "hello.sh",
        &format!("echo \"hello $1 $PHOENIX_GUEST_NAME $PHOENIX_DOMAIN\" >> {LOG}"),
    );
    script(&site, "second.sh", &format!("echo second >> {LOG}"));
    script(&site, "app.sh", &format!("echo app >> {LOG}"));

    let text = ok(&run(&lab, &site, &["plan"]));
    for want in [
        "feature.459.hello will be created",
        "feature.459.second will be created",
        "app.459 will be created",
        "runs it in the container: no marker there",
    ] {
        assert!(text.contains(want), "{want}: {text}");
    }
    ok(&run(&lab, &site, &["apply", "--auto-approve"]));
    assert_eq!(
        log(&lab),
        "hello 459 feat-459 lab.example.internal\nsecond\napp\n"
    );
    let marker = lab.guest_file(459, "/var/lib/phoenix/provisioned/feature-hello.json");
    assert!(
        std::fs::read_to_string(&marker)
            .unwrap()
            .contains("script_sha256")
    );

    // Nothing changed: nothing runs.
    let out = run(&lab, &site, &["plan", "--detailed-exitcode"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    ok(&run(&lab, &site, &["apply", "--auto-approve"]));
    assert_eq!(log(&lab).lines().count(), 3);

    // The script changed: that one runs again, and says why.
    script(&site, "second.sh", &format!("echo second-v2 >> {LOG}"));
    let text = ok(&run(&lab, &site, &["plan"]));
    assert!(text.contains("runs it again: the script changed"), "{text}");
    assert!(!text.contains("feature.459.hello will be"), "{text}");
    ok(&run(&lab, &site, &["apply", "--auto-approve"]));
    assert!(log(&lab).ends_with("second-v2\n"), "{}", log(&lab));

    // Its inputs changed: every script of the container runs again.
    ct["bootstrap_ca_url"] = json!("https://ca.lab.example.internal:9000");
    site.set_lxcs(&[(459, ct.clone())]);
    let text = ok(&run(&lab, &site, &["plan"]));
    assert_eq!(
        text.matches("runs it again: its inputs changed").count(),
        3,
        "{text}"
    );
    ok(&run(&lab, &site, &["apply", "--auto-approve"]));
    assert_eq!(log(&lab).lines().count(), 7);

    // The marker removed in the container: it runs again.
    std::fs::remove_file(&marker).unwrap();
    let text = ok(&run(&lab, &site, &["plan"]));
    assert!(
        text.contains("feature.459.hello was deleted outside phoenix and will be created again"),
        "{text}"
    );
    ok(&run(&lab, &site, &["apply", "--auto-approve"]));
    assert!(marker.exists());

    // A failing script fails its resource with the tail of its output, and leaves no marker.
    ct["features"] = json!(["hello", "second", "broken"]);
    site.set_lxcs(&[(459, ct)]);
    script(
        &site,
        "broken.sh",
        "echo 'E: Unable to locate package nonexistent' >&2\nexit 3",
    );
    let out = run(&lab, &site, &["apply", "--auto-approve"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let err = stderr(&out);
    assert!(err.contains("the script exited 3"), "{err}");
    assert!(
        err.contains("E: Unable to locate package nonexistent"),
        "{err}"
    );
    assert!(
        !lab.guest_file(459, "/var/lib/phoenix/provisioned/feature-broken.json")
            .exists()
    );
    assert!(!lab.guest_file(459, "/tmp/phoenix-run/broken").exists());
    let text = ok(&run(&lab, &site, &["plan"]));
    assert!(
        text.contains("feature.459.broken will be created"),
        "{text}"
    );
}

#[test]
fn a_clone_is_not_provisioned_again_for_what_its_source_had() {
    let lab = HostLab::new();
    let mut parent = lxc("feat-495", 195);
    parent["features"] = json!(["hello"]);
    parent["template_snapshot_name"] = json!("provisioned");
    let mut clone = lxc("feat-496", 196);
    clone["clone_from_ctid"] = json!(495);
    clone.as_object_mut().unwrap().remove("template");
    clone["features"] = json!(["hello", "extra", "missing"]);
    let site = Site::new(&[(495, parent), (496, clone)]);
    script(&site, "hello.sh", "true");
    script(&site, "extra.sh", "true");
    let out = run(&lab, &site, &["plan", "--json"]);
    let plan: serde_json::Value = serde_json::from_slice(&ok_bytes(&out)).unwrap();
    let addrs: Vec<&str> = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["address"].as_str())
        .collect();
    assert!(addrs.contains(&"feature.495.hello"), "{addrs:?}");
    assert!(addrs.contains(&"feature.496.extra"), "{addrs:?}");
    assert!(!addrs.contains(&"feature.496.hello"), "{addrs:?}");
    // A feature without a script is a warning, not a silent drop.
    let err = stderr(&run(&lab, &site, &["validate"]));
    assert!(
        err.contains(
            "no script features/missing.sh in the site: phoenix does not run feature `missing`"
        ),
        "{err}"
    );
    // The snapshot clones start from is taken after the source's provisioning.
    let out = run(&lab, &site, &["graph"]);
    let dot = String::from_utf8_lossy(&ok_bytes(&out)).into_owned();
    assert!(
        dot.contains("\"snapshot.495.provisioned\" -> \"feature.495.hello\"")
            || dot.contains("\"feature.495.hello\" -> \"snapshot.495.provisioned\""),
        "{dot}"
    );
}

fn ok_bytes(out: &std::process::Output) -> Vec<u8> {
    assert!(out.status.success(), "{}", stderr(out));
    out.stdout.clone()
}

#[test]
fn a_vms_features_run_through_its_guest_agent() {
    // The VM's file system is a directory of the world's host: the world's agent runs
    // commands there (lab/fakepve/vm_agent.py), as fakeguest made it.
    let w = crate::support::fakepve::world();
    let root = w.dir.join("host");
    let out = std::process::Command::new(crate::host_support::lab().join("fakeguest"))
        .args(["init", "697"])
        .env("PHOENIX_HOST_ROOT", &root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let site = Site::new(&[]);
    let mut vm = crate::common::vm_from_image(697, "feat-vm-697", 97);
    vm["features"] = json!(["hello"]);
    site.set_vms(&[vm]);
    script(
        &site,
        "hello.sh",
        &format!("echo \"vm $1 $PHOENIX_GUEST_NAME\" >> {LOG}"),
    );
    let text = stdout(&site.cmd(&["plan"]).output().unwrap());
    assert!(text.contains("feature.697.hello will be created"), "{text}");
    let out = site.cmd(&["apply", "--auto-approve"]).output().unwrap();
    let all = ok(&out);
    assert!(all.contains("Running feature.697.hello in vm.697"), "{all}");
    let guest = root.join("guests/697");
    assert_eq!(
        std::fs::read_to_string(guest.join(LOG.trim_start_matches('/'))).unwrap(),
        "vm 697 feat-vm-697\n"
    );
    assert!(
        guest
            .join("var/lib/phoenix/provisioned/feature-hello.json")
            .exists()
    );
    let out = site.cmd(&["plan", "--detailed-exitcode"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
}
