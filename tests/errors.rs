//! Bad input and unreachable systems give clear errors naming what and where.
//! (The HTTPS-specific cases run over HTTPS whatever `PHOENIX_TEST_TRANSPORT` says.)

use serde_json::json;

use crate::common::{Pve, Site, lxc, stderr};

#[test]
fn malformed_manifest_names_file_line_and_path() {
    let site = Site::new(&[(400, lxc("bad-400", 200))]);
    let text = "{\n  \"lxc_configs\": {\n    \"400\": {\n      \"name\": \"x\",\n      \"memory_mb\": \"lots\"\n    }\n  }\n}\n";
    std::fs::write(site.root().join("etc/phoenix_lxc_configs.json"), text).unwrap();
    let out = site.cmd(&["validate"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let e = stderr(&out);
    assert!(e.contains("etc/phoenix_lxc_configs.json:5"), "{e}");
    assert!(e.contains("memory_mb"), "{e}");
    // The offending line, with a caret under it.
    assert!(e.contains("5 |       \"memory_mb\": \"lots\""), "{e}");
    assert!(
        e.lines()
            .any(|l| l.trim_end().ends_with('^') && l.contains(" | ")),
        "{e}"
    );

    std::fs::write(
        site.root().join("etc/phoenix_lxc_configs.json"),
        "{\"lxc_configs\": {",
    )
    .unwrap();
    let out = site.cmd(&["plan"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("etc/phoenix_lxc_configs.json:1"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn unreachable_api_and_refused_token_are_clear_errors() {
    let site = Site::new(&[(401, lxc("net-401", 201))]);
    let out = site
        .https_cmd(&["plan"])
        .env("PHOENIX_PVE_URL", "https://127.0.0.1:9")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let e = stderr(&out);
    assert!(
        e.contains("cannot reach the Proxmox API at https://127.0.0.1:9"),
        "{e}"
    );
    assert!(e.contains("help:"), "{e}");

    let out = site
        .https_cmd(&["plan"])
        .env("PHOENIX_PVE_TOKEN", "root@pam!phoenix=wrong")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("refused the credentials"),
        "{}",
        stderr(&out)
    );
    assert!(
        !stderr(&out).contains("wrong"),
        "the secret is not echoed: {}",
        stderr(&out)
    );

    let out = site
        .https_cmd(&["plan"])
        .env("PHOENIX_PVE_URL", "http://127.0.0.1:9")
        .output()
        .unwrap();
    assert!(
        stderr(&out).contains("must be an https:// address"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn password_login_works_too() {
    let site = Site::new(&[(402, lxc("pw-402", 202))]);
    let w = crate::support::fakepve::world();
    site.https_cmd(&["apply", "--auto-approve"])
        .env_remove("PHOENIX_PVE_TOKEN")
        .env("PHOENIX_PVE_USER", &w.user)
        .env("PHOENIX_PVE_PASSWORD", &w.password)
        .assert()
        .success();
    assert_eq!(Pve::new().count(402), 1);
}

#[test]
fn pvesh_transport_errors_are_clear() {
    let site = Site::new(&[(404, lxc("ssh-404", 204))]);
    let out = site
        .cmd(&["plan"])
        .env("PHOENIX_PVE_TRANSPORT", "ssh://root@192.0.2.99")
        .env(
            "PHOENIX_SSH",
            concat!(env!("CARGO_MANIFEST_DIR"), "/lab/fakepve/ssh"),
        )
        .env("PHOENIX_FAKE_SSH_DOWN", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("ssh to the Proxmox host failed"),
        "{}",
        stderr(&out)
    );
    let out = site
        .cmd(&["plan"])
        .env("PHOENIX_PVE_TRANSPORT", "pvesh")
        .env("PHOENIX_PVESH", "/nonexistent/pvesh")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("failed to run `/nonexistent/pvesh`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn existing_unmanaged_guest_needs_import_or_adopt() {
    let site = Site::new(&[(403, lxc("adopt-403", 203))]);
    let pve = Pve::new();
    pve.post(
        &format!("/nodes/{}/lxc", pve.node()),
        &[
            ("vmid", "403"),
            ("ostemplate", crate::common::TEMPLATE),
            ("rootfs", "local-lvm:4"),
            ("hostname", "adopt-403"),
            ("memory", "512"),
        ],
    );
    let out = site.cmd(&["plan"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("phoenix import lxc.403"),
        "{}",
        stderr(&out)
    );
    site.cmd(&["import", "lxc.403"]).assert().success();
    site.cmd(&["state", "list"])
        .assert()
        .success()
        .stdout("lxc.403\n");
    // After the import, the plan converges it like any managed guest.
    site.cmd(&["apply", "--auto-approve"]).assert().success();
    site.cmd(&["plan", "--detailed-exitcode"]).assert().code(0);
    assert_eq!(pve.lxc_config(403)["cores"], json!(1));
}
