//! `lxc_conf.<ctid>`: raw LXC lines and bind mounts written into the
//! container's config file on the host (the world mirrors fakepve's configs as
//! pmxcfs files under its host root: lab/fakepve/pmxcfs.py). Ids 440-449.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::common::{Pve, Site, lxc, stderr, stdout};
use crate::support::fakepve::world;

fn conf_path(vmid: u32) -> PathBuf {
    let w = world();
    w.dir
        .join("host/etc/pve/nodes")
        .join(&w.node)
        .join(format!("lxc/{vmid}.conf"))
}

fn conf(vmid: u32) -> String {
    std::fs::read_to_string(conf_path(vmid)).unwrap()
}

fn with_raw(name: &str, octet: u32, host_dir: &str) -> Value {
    let mut c = lxc(name, octet);
    c["lxc_options"] = json!(["lxc.apparmor.profile=unconfined", "lxc.mount.auto:sys:rw"]);
    c["apparmor_profile"] = json!("unconfined");
    c["id_maps"] = json!([{"type": "gid", "host_id": 33, "container_id": 33, "size": 1}]);
    c["mount_points"] = json!([
        {"host_path": format!("{host_dir}/logs"), "container_path": "/var/log/nginx", "owner_uid": 33, "owner_gid": 33},
        {"host_path": format!("{host_dir}/ssl"), "container_path": "/etc/nginx/ssl"}
    ]);
    c
}

/// Restarts of a container in the fake's request log.
fn reboots(vmid: u32) -> usize {
    world()
        .requests()
        .iter()
        .filter(|(m, p, _)| m == "POST" && p.ends_with(&format!("/lxc/{vmid}/status/reboot")))
        .count()
}

#[test]
fn lines_and_bind_mounts_are_written_once_and_the_next_plan_is_empty() {
    let host_dir = "/srv/phoenix-test/440";
    let site = Site::new(&[(440, with_raw("conf-440", 140, host_dir))]);
    let out = site.cmd(&["plan"]).output().unwrap();
    let text = stdout(&out);
    assert!(text.contains("+ lxc_conf.440"), "{text}");
    assert!(text.contains("lxc.idmap: g 33 33 1"), "{text}");
    assert!(text.contains("/etc/subgid needs `root:33:1`"), "{text}");

    let out = site.cmd(&["apply", "--auto-approve"]).output().unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let file = conf(440);
    for line in [
        "lxc.apparmor.profile: unconfined\n",
        "lxc.mount.auto: sys:rw\n",
        "lxc.idmap: u 0 100000 65536\n",
        "lxc.idmap: g 0 100000 33\n",
        "lxc.idmap: g 33 33 1\n",
        "lxc.idmap: g 34 100034 65502\n",
        "mp0: /srv/phoenix-test/440/ssl,mp=/etc/nginx/ssl\n",
        "mp1: /srv/phoenix-test/440/logs,mp=/var/log/nginx\n",
    ] {
        assert!(file.contains(line), "{line:?} missing from\n{file}");
    }
    assert!(file.contains("hostname: conf-440\n"), "{file}");
    // The API shows what the file holds, as on PVE.
    let cfg = Pve::new().lxc_config(440);
    assert_eq!(
        cfg["mp1"],
        json!("/srv/phoenix-test/440/logs,mp=/var/log/nginx")
    );
    assert!(
        cfg["lxc"]
            .as_array()
            .unwrap()
            .contains(&json!(["lxc.mount.auto", "sys:rw"])),
        "{cfg}"
    );
    // The host directories, with the owner shifted into the unprivileged range.
    let host = world().dir.join("host");
    let logs = host.join("srv/phoenix-test/440/logs");
    assert!(host.join("srv/phoenix-test/440/ssl").is_dir());
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&logs).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (100_033, 100_033));
    // Created running, then restarted once so the lines act.
    assert_eq!(reboots(440), 1);

    site.cmd(&["plan", "--detailed-exitcode"]).assert().code(0);
    site.cmd(&["apply", "--auto-approve"]).assert().success();
    assert_eq!(conf(440), file, "a second apply rewrote the file");
    assert_eq!(reboots(440), 1, "a second apply restarted the container");
}

#[test]
fn a_line_edited_by_hand_is_drift_and_apply_puts_the_file_right_keeping_the_rest() {
    let site = Site::new(&[(441, with_raw("conf-441", 141, "/srv/phoenix-test/441"))]);
    site.cmd(&["apply", "--auto-approve"]).assert().success();
    let before = conf(441);

    // By hand: a raw line changed, one added, a bind mount removed, a key of PVE's own changed.
    let edited = before
        .replace(
            "lxc.mount.auto: sys:rw\n",
            "lxc.mount.auto: sys:ro\nlxc.cap.drop: sys_admin\n",
        )
        .replace("mp0: /srv/phoenix-test/441/ssl,mp=/etc/nginx/ssl\n", "");
    assert_ne!(edited, before);
    std::fs::write(conf_path(441), &edited).unwrap();

    let out = site.cmd(&["drift"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let text = stdout(&out);
    assert!(
        text.contains("lxc_conf.441 changed outside phoenix"),
        "{text}"
    );
    assert!(text.contains("lxc.cap.drop: sys_admin"), "{text}");
    assert!(text.contains("restarts the container"), "{text}");

    // A key the API owns changes at the same time: the lxc kind fixes it, lxc_conf keeps it.
    Pve::new().put(
        &format!("/nodes/{}/lxc/441/config", Pve::new().node()),
        &[("memory", "1024")],
    );
    let out = site.cmd(&["apply", "--auto-approve"]).output().unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let after = conf(441);
    assert!(after.contains("lxc.mount.auto: sys:rw\n"), "{after}");
    assert!(!after.contains("lxc.cap.drop"), "{after}");
    assert!(
        after.contains("mp0: /srv/phoenix-test/441/ssl,mp=/etc/nginx/ssl\n"),
        "{after}"
    );
    assert!(after.contains("memory: 512\n"), "{after}");
    site.cmd(&["drift"]).assert().code(0);
}

#[test]
fn dropping_the_keys_takes_the_lines_out_and_leaves_the_container() {
    let site = Site::new(&[(442, with_raw("conf-442", 142, "/srv/phoenix-test/442"))]);
    site.cmd(&["apply", "--auto-approve"]).assert().success();
    assert!(conf(442).contains("lxc.idmap"));

    site.set_lxcs(&[(442, lxc("conf-442", 142))]);
    let out = site.cmd(&["plan"]).output().unwrap();
    let text = stdout(&out);
    assert!(text.contains("- lxc_conf.442"), "{text}");
    assert!(!text.contains("- lxc.442"), "{text}");
    site.cmd(&["apply", "--auto-approve"]).assert().success();
    let file = conf(442);
    assert!(!file.contains("lxc."), "{file}");
    assert!(!file.contains("mp0"), "{file}");
    assert!(file.contains("hostname: conf-442\n"), "{file}");
    site.cmd(&["plan", "--detailed-exitcode"]).assert().code(0);
}

#[test]
fn a_concurrent_edit_of_the_file_is_never_overwritten() {
    // The guard compares the file with what phoenix read; a file that changed between the
    // read and the write fails the resource. Simulated by a host whose `sha256sum` reports
    // something else, so nothing else has to race.
    let site = Site::new(&[(443, lxc("conf-443", 143))]);
    site.cmd(&["apply", "--auto-approve"]).assert().success();
    let before = conf(443);
    let mut c = lxc("conf-443", 143);
    c["lxc_options"] = json!(["lxc.apparmor.profile=unconfined"]);
    site.set_lxcs(&[(443, c)]);

    let bin = tempfile::tempdir().unwrap();
    let fake = bin.path().join("sha256sum");
    std::fs::write(&fake, "#!/bin/sh\necho 0000  -\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = site
        .cmd(&["apply", "--auto-approve"])
        .env("PATH", path)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let err = stderr(&out);
    assert!(
        err.contains("changed while phoenix was editing it"),
        "{err}"
    );
    assert_eq!(conf(443), before);
    site.cmd(&["apply", "--auto-approve"]).assert().success();
    assert!(conf(443).contains("lxc.apparmor.profile: unconfined\n"));
}

/// `zfs_volumes`: storage volumes of the container, allocated once, grown, never shrunk,
/// moved or detached by phoenix (the seed added a new one on every run).
#[test]
fn storage_volumes_are_allocated_once_grown_and_left_when_dropped() {
    let with = |gb: u64| {
        let mut c = lxc("vol-444", 144);
        c["zfs_volumes"] =
            json!([{"name": "data", "pool": "local-lvm", "size_gb": gb, "mount_point": "/data"}]);
        c
    };
    let site = Site::new(&[(444, with(2))]);
    let out = site.cmd(&["apply", "--auto-approve"]).output().unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let pve = Pve::new();
    let volumes = |cfg: &Value| -> Vec<String> {
        cfg.as_object()
            .unwrap()
            .iter()
            .filter(|(k, v)| {
                k.starts_with("mp") && v.as_str().is_some_and(|s| s.contains("mp=/data"))
            })
            .map(|(_, v)| v.as_str().unwrap().to_string())
            .collect()
    };
    let v = volumes(&pve.lxc_config(444));
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(
        v[0].starts_with("local-lvm:") && v[0].contains("size=2G"),
        "{v:?}"
    );
    site.cmd(&["plan", "--detailed-exitcode"]).assert().code(0);
    site.cmd(&["apply", "--auto-approve"]).assert().success();
    assert_eq!(
        volumes(&pve.lxc_config(444)).len(),
        1,
        "a second apply added a volume"
    );

    site.set_lxcs(&[(444, with(3))]);
    let text = stdout(&site.cmd(&["plan"]).output().unwrap());
    assert!(
        text.contains("\"local-lvm:2G\" -> \"local-lvm:3G\""),
        "{text}"
    );
    site.cmd(&["apply", "--auto-approve"]).assert().success();
    assert!(volumes(&pve.lxc_config(444))[0].contains("size=3G"));
    site.cmd(&["plan", "--detailed-exitcode"]).assert().code(0);

    site.set_lxcs(&[(444, with(1))]);
    let out = site.cmd(&["apply", "--auto-approve"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("volumes only grow"),
        "{}",
        stderr(&out)
    );

    // No longer named: unmanaged, and its data stays.
    site.set_lxcs(&[(444, lxc("vol-444", 144))]);
    site.cmd(&["plan", "--detailed-exitcode"]).assert().code(0);
    assert_eq!(volumes(&pve.lxc_config(444)).len(), 1);
}
