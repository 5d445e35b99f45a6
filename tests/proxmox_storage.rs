//! Storages, OS templates and snapshots (`storage.*`, `template.*`,
//! `snapshot.*`): defined storages created and changed, verified storages
//! failing the plan, templates downloaded once, template snapshots taken
//! after their guest and re-taken only when it changes, clones of a running
//! source, and the seed site's whole clone chain. Guest ids 700-799 and the
//! seed's own (101-103, 801, 802, 900-917).

use std::path::Path;

use serde_json::{Value, json};

use crate::common::{Pve, Site, lxc, stderr, stdout};
use crate::support::fakepve::world;

/// Requests the fake saw whose method is `method` and whose path ends with `suffix`.
fn requests_to(method: &str, suffix: &str) -> Vec<(String, String)> {
    world()
        .requests()
        .into_iter()
        .filter(|(m, p, _)| m == method && p.ends_with(suffix))
        .map(|(_, p, b)| (p, b))
        .collect()
}

/// Index in the fake's request log of the first request matching, after `from`.
fn position(method: &str, suffix: &str, from: usize) -> Option<usize> {
    world()
        .requests()
        .iter()
        .enumerate()
        .skip(from)
        .find(|(_, (m, p, _))| m == method && p.ends_with(suffix))
        .map(|(i, _)| i)
}

fn storage_of(pve: &Pve, id: &str) -> Option<Value> {
    pve.get("/storage")
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["storage"] == json!(id))
        .cloned()
}

fn content_of(v: &Value) -> Vec<String> {
    let mut c: Vec<String> = v["content"]
        .as_str()
        .unwrap_or_default()
        .split(',')
        .map(str::to_string)
        .collect();
    c.sort();
    c
}

fn vztmpl_on(pve: &Pve, storage: &str) -> Vec<String> {
    pve.get(&format!(
        "/nodes/{}/storage/{storage}/content?content=vztmpl",
        pve.node()
    ))
    .as_array()
    .unwrap()
    .iter()
    .filter_map(|v| v["volid"].as_str().map(str::to_string))
    .collect()
}

fn snapshots_of(pve: &Pve, vmid: u32) -> Vec<Value> {
    pve.get(&format!("/nodes/{}/lxc/{vmid}/snapshot", pve.node()))
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["name"] != json!("current"))
        .cloned()
        .collect()
}

fn plan_is_empty(site: &Site, extra: &[&str]) {
    let mut args = vec!["plan", "--detailed-exitcode"];
    args.extend_from_slice(extra);
    let out = site.cmd(&args).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
}

fn apply(site: &Site, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["apply", "--auto-approve"];
    args.extend_from_slice(extra);
    let out = site.cmd(&args).output().unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    out
}

#[test]
fn template_is_downloaded_once_and_never_deleted() {
    const FILE: &str = "alpine-3.20-default_20240908_amd64.tar.xz";
    let volid = format!("local:vztmpl/{FILE}");
    let mut c = lxc("tmpl-720", 220);
    c["template"] = json!(volid);
    // A template that is already there is only checked: no plan line, no state entry.
    let site = Site::new(&[(720, c.clone()), (721, lxc("tmpl-721", 221))]);
    let out = site.cmd(&["plan"]).output().unwrap();
    let text = stdout(&out);
    assert!(
        text.contains(&format!("template.{volid} will be created")),
        "{text}"
    );
    assert!(!text.contains("debian-12"), "{text}");
    assert!(
        text.contains("Plan: 3 to add, 0 to change, 0 to destroy."),
        "{text}"
    );

    let downloads = |_: ()| requests_to("POST", "/storage/local/download-url");
    let ours = |v: Vec<(String, String)>| v.into_iter().filter(|(_, b)| b.contains(FILE)).count();
    assert_eq!(ours(downloads(())), 0);
    let out = apply(&site, &[]);
    assert!(
        stderr(&out).contains(&format!("Creating template.{volid}")),
        "{}",
        stderr(&out)
    );
    assert_eq!(ours(downloads(())), 1, "downloaded once");
    let pve = Pve::new();
    assert!(vztmpl_on(&pve, "local").contains(&volid));
    assert_eq!(pve.count(720), 1);
    let state = site.state();
    let managed: Vec<&String> = state["resources"].as_object().unwrap().keys().collect();
    assert!(
        managed.contains(&&format!("template.{volid}")),
        "{managed:?}"
    );
    assert!(
        !managed.iter().any(|a| a.contains("debian-12")),
        "a template phoenix did not download is not phoenix's: {managed:?}"
    );

    // Later runs only look: no second download.
    plan_is_empty(&site, &[]);
    let out = apply(&site, &[]);
    assert!(stderr(&out).contains("no changes"), "{}", stderr(&out));
    assert_eq!(ours(downloads(())), 1, "not downloaded again");

    // Out of the manifests: dropped from the state, left on the storage.
    site.set_lxcs(&[(721, lxc("tmpl-721", 221))]);
    let out = apply(&site, &["--allow-destroy"]);
    assert!(
        stderr(&out).contains(&format!("Forgetting template.{volid}")),
        "{}",
        stderr(&out)
    );
    assert!(vztmpl_on(&pve, "local").contains(&volid), "never deleted");
    assert!(
        site.state()["resources"]
            .get(format!("template.{volid}"))
            .is_none()
    );
    plan_is_empty(&site, &[]);
}

fn hypervisor_with_datasets(site: &Site, datasets: Value) {
    site.write(
        "etc/phoenix_hypervisor_config.json",
        &json!({
            "domain_name": "lab.example.internal",
            "network": {"interfaces": {"name": "vmbr0", "address": "192.0.2.13/24", "gateway": "192.0.2.1"}},
            "zfs": {"pools": [], "datasets": datasets}
        }),
    );
}

#[test]
fn defined_storages_are_created_changed_in_place_and_replaced_only_when_allowed() {
    const FILE: &str = "alpine-3.19-default_20240207_amd64.tar.xz";
    let datasets = |dir_content: &str, spare_type: &str, spare_content: &str| {
        json!([
            {"name": "ct", "pool": "tank730", "proxmox_storage_type": "zfspool",
             "proxmox_content_type": "rootdir,images"},
            {"name": "tmpl", "pool": "tank730", "proxmox_storage_type": "dir",
             "proxmox_content_type": dir_content},
            {"name": "spare", "pool": "tank730", "proxmox_storage_type": spare_type,
             "proxmox_content_type": spare_content}
        ])
    };
    let mut c = lxc("store-730", 230);
    c["storage_pool"] = json!("tank730-ct");
    // The seed's form: a host path in the template cache of a dataset's dir storage.
    c["template"] = json!(format!("/tank730/tmpl/template/cache/{FILE}"));
    let site = Site::new(&[(730, c)]);
    hypervisor_with_datasets(&site, datasets("vztmpl,iso", "dir", "backup"));

    let out = site.cmd(&["plan"]).output().unwrap();
    let text = stdout(&out);
    for line in [
        "storage.tank730-ct will be created",
        "storage.tank730-tmpl will be created",
        "storage.tank730-spare will be created",
        &format!("template.tank730-tmpl:vztmpl/{FILE} will be created"),
        "lxc.730 will be created",
    ] {
        assert!(text.contains(line), "{line}\n{text}");
    }
    apply(&site, &[]);
    let pve = Pve::new();
    let ct = storage_of(&pve, "tank730-ct").unwrap();
    assert_eq!(ct["type"], json!("zfspool"));
    assert_eq!(ct["pool"], json!("tank730/ct"));
    assert_eq!(content_of(&ct), ["images", "rootdir"]);
    let tmpl = storage_of(&pve, "tank730-tmpl").unwrap();
    assert_eq!(tmpl["path"], json!("/tank730/tmpl"));
    assert!(vztmpl_on(&pve, "tank730-tmpl").contains(&format!("tank730-tmpl:vztmpl/{FILE}")));
    let rootfs = pve.lxc_config(730)["rootfs"].as_str().unwrap().to_string();
    assert!(rootfs.starts_with("tank730-ct:"), "{rootfs}");
    plan_is_empty(&site, &[]);

    // Content is a set, changed in place.
    hypervisor_with_datasets(&site, datasets("iso,vztmpl,backup", "dir", "backup"));
    let out = site.cmd(&["plan"]).output().unwrap();
    let text = stdout(&out);
    assert!(
        text.contains("storage.tank730-tmpl will be updated in-place"),
        "{text}"
    );
    assert!(text.contains("content.backup = false -> true"), "{text}");
    assert!(
        text.contains("Plan: 0 to add, 1 to change, 0 to destroy."),
        "{text}"
    );
    apply(&site, &[]);
    let tmpl = storage_of(&pve, "tank730-tmpl").unwrap();
    assert_eq!(content_of(&tmpl), ["backup", "iso", "vztmpl"]);
    plan_is_empty(&site, &[]);

    // A changed type replaces the storage, which needs --allow-destroy.
    hypervisor_with_datasets(&site, datasets("iso,vztmpl,backup", "zfspool", "images"));
    let out = site.cmd(&["plan"]).output().unwrap();
    let text = stdout(&out);
    assert!(
        text.contains("storage.tank730-spare must be replaced"),
        "{text}"
    );
    assert!(text.contains("# forces replacement"), "{text}");
    let out = site.cmd(&["apply", "--auto-approve"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--allow-destroy"), "{}", stderr(&out));
    assert_eq!(
        storage_of(&pve, "tank730-spare").unwrap()["type"],
        json!("dir")
    );
    apply(&site, &["--allow-destroy"]);
    let spare = storage_of(&pve, "tank730-spare").unwrap();
    assert_eq!(spare["type"], json!("zfspool"));
    assert_eq!(spare["pool"], json!("tank730/spare"));
    plan_is_empty(&site, &[]);
}

#[test]
fn a_storage_phoenix_only_verifies_fails_the_plan_when_missing_or_unfit() {
    let mut c = lxc("nas-740", 240);
    c["storage_pool"] = json!("nas-740");
    let site = Site::new(&[(740, c.clone())]);
    let out = site.cmd(&["plan"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains("storage.nas-740: storage `nas-740` does not exist in Proxmox"),
        "{err}"
    );
    assert!(err.contains("rootdir for lxc.740"), "{err}");
    assert!(err.contains("pvesm add"), "{err}");
    let out = site.cmd(&["apply", "--auto-approve"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(Pve::new().count(740), 0, "nothing was created");

    // `local` exists but holds no container disks.
    c["storage_pool"] = json!("local");
    site.set_lxcs(&[(740, c)]);
    let out = site.cmd(&["plan"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains("storage `local` does not allow content rootdir"),
        "{err}"
    );
    assert!(err.contains("pvesm set local --content"), "{err}");
    // phoenix never changes a storage it only verifies.
    let local = storage_of(&Pve::new(), "local").unwrap();
    assert!(!content_of(&local).contains(&"rootdir".to_string()));
}

#[test]
fn template_snapshot_follows_its_running_source_and_clones_come_from_it() {
    // 750 runs (the default) and is cloned: only possible from a snapshot.
    let mut src = lxc("golden-750", 250);
    src["template_snapshot_name"] = json!("golden");
    let mut clone = lxc("clone-751", 251);
    clone.as_object_mut().unwrap().remove("template");
    clone["clone_from_ctid"] = json!("750");
    let site = Site::new(&[(750, src.clone()), (751, clone.clone())]);

    let out = site.cmd(&["plan"]).output().unwrap();
    assert!(
        stdout(&out).contains("snapshot.750.golden will be created"),
        "{}",
        stdout(&out)
    );
    let start = world().requests().len();
    apply(&site, &[]);
    let pve = Pve::new();
    let snaps = snapshots_of(&pve, 750);
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert_eq!(snaps[0]["name"], json!("golden"));
    let first = snaps[0]["description"].as_str().unwrap().to_string();
    assert!(first.starts_with("phoenix:"), "{first}");
    // Taken once the source runs; the clone is taken from it.
    let started = position("POST", "/lxc/750/status/start", start).unwrap();
    let taken = position("POST", "/lxc/750/snapshot", start).unwrap();
    let cloned = position("POST", "/lxc/750/clone", start).unwrap();
    assert!(
        started < taken && taken < cloned,
        "{started} {taken} {cloned}"
    );
    let (_, body) = requests_to("POST", "/lxc/750/clone").pop().unwrap();
    assert!(body.contains("snapname=golden"), "{body}");
    let st = pve.get(&format!("/nodes/{}/lxc/750/status/current", pve.node()));
    assert_eq!(st["status"], json!("running"));
    assert_eq!(pve.count(751), 1);
    plan_is_empty(&site, &[]);

    // A change to the clone does not touch the source's snapshot.
    let mut clone2 = clone.clone();
    clone2["memory_mb"] = json!(768);
    site.set_lxcs(&[(750, src.clone()), (751, clone2.clone())]);
    let out = site.cmd(&["plan"]).output().unwrap();
    assert!(!stdout(&out).contains("snapshot.750"), "{}", stdout(&out));
    apply(&site, &[]);
    assert_eq!(snapshots_of(&pve, 750)[0]["description"], json!(first));

    // A change to the source re-takes it, after the source is changed.
    let mut src2 = src.clone();
    src2["memory_mb"] = json!(1024);
    site.set_lxcs(&[(750, src2), (751, clone2)]);
    let out = site.cmd(&["plan"]).output().unwrap();
    let text = stdout(&out);
    assert!(text.contains("lxc.750 will be updated in-place"), "{text}");
    assert!(
        text.contains("snapshot.750.golden must be replaced"),
        "{text}"
    );
    assert!(text.contains("# forces replacement"), "{text}");
    let start = world().requests().len();
    apply(&site, &[]);
    let configured = position("PUT", "/lxc/750/config", start).unwrap();
    let deleted = position("DELETE", "/lxc/750/snapshot/golden", start).unwrap();
    let retaken = position("POST", "/lxc/750/snapshot", start).unwrap();
    assert!(
        configured < deleted && deleted < retaken,
        "{configured} {deleted} {retaken}"
    );
    let snaps = snapshots_of(&pve, 750);
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert_ne!(snaps[0]["description"], json!(first));
    plan_is_empty(&site, &[]);

    // Edited behind phoenix's back: drift, re-taken.
    pve.put(
        &format!("/nodes/{}/lxc/750/snapshot/golden/config", pve.node()),
        &[("description", "by hand")],
    );
    let out = site.cmd(&["plan"]).output().unwrap();
    assert!(
        stdout(&out).contains("snapshot.750.golden must be replaced"),
        "{}",
        stdout(&out)
    );
    apply(&site, &[]);
    plan_is_empty(&site, &[]);
}

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

/// `../shared/fixtures/phoenix-seed`, from the crate root.
fn seed_fixture() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/phoenix-seed")
}

#[test]
fn the_whole_seed_site_applies_then_plans_empty_and_restores_a_firewall_edit() {
    // A copy: nothing is ever written under the shared fixture. Everything
    // the seed defines is applied (12 LXCs through the snapshot chain, the VM
    // template and its two clones, every guest firewall, the storages), except
    // the datacenter firewall: a singleton in the one fake all tests share,
    // which `firewall::cluster_and_guest_firewalls_apply_then_plan_is_empty` owns.
    let site = Site {
        dir: tempfile::tempdir().unwrap(),
    };
    copy_dir(&seed_fixture(), site.root());
    let hv = site.root().join("etc/phoenix_hypervisor_config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&hv).unwrap()).unwrap();
    config["shared_volumes"]
        .as_object_mut()
        .unwrap()
        .remove("firewall");
    // The host layer (dns.records, file.*) has tests of its own (host_*): off in this copy.
    config["dns_server"]["enabled"] = json!(false);
    config["ingress"] = json!({"enabled": false});
    site.write("etc/phoenix_hypervisor_config.json", &config);

    let out = site.cmd(&["plan", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut targets: Vec<String> = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["address"].as_str())
        .filter(|a| *a != "firewall.cluster")
        .map(str::to_string)
        .collect();
    targets.sort();
    let lxcs = targets.iter().filter(|a| a.starts_with("lxc.")).count();
    assert_eq!(lxcs, 12, "{targets:?}");
    let confs = targets
        .iter()
        .filter(|a| a.starts_with("lxc_conf."))
        .count();
    assert_eq!(confs, 12, "{targets:?}");
    for a in [
        "snapshot.900.final-form",
        "snapshot.901.final-form",
        "snapshot.911.final-form",
        "storage.quickOS-shared-prod-data",
    ] {
        assert!(targets.contains(&a.to_string()), "{a}: {targets:?}");
    }
    // 910 and 912 name a snapshot, but nothing is cloned from them.
    assert!(!targets.iter().any(|a| a.starts_with("snapshot.910")));
    // The template exists on its storage: checked, not planned.
    assert!(!targets.iter().any(|a| a.starts_with("template.")));
    let mut args: Vec<&str> = Vec::new();
    for t in &targets {
        args.push("--target");
        args.push(t);
    }

    apply(&site, &args);
    let pve = Pve::new();
    for id in [101, 102, 103, 801, 802, 900, 901, 910, 911, 912, 914, 917] {
        assert_eq!(pve.count(id), 1, "lxc.{id}");
    }
    // What the API cannot set went into the config files on the host (lxc_conf.*).
    let conf = |id: u32| {
        let w = crate::support::fakepve::world();
        std::fs::read_to_string(
            w.dir
                .join(format!("host/etc/pve/nodes/{}/lxc/{id}.conf", w.node)),
        )
        .unwrap()
    };
    let gw = conf(101);
    for line in [
        "lxc.mount.auto: sys:rw\n",
        "lxc.idmap: g 33 33 1\n",
        ",mp=/var/log/nginx\n",
    ] {
        assert!(gw.contains(line), "{line:?} not in 101.conf:\n{gw}");
    }
    assert!(
        conf(901)
            .contains("lxc.mount.entry: /dev/nvidia1 dev/nvidia1 none bind,optional,create=file\n")
    );
    // 900 runs and is cloned all the same: from its snapshot.
    let st = pve.get(&format!("/nodes/{}/lxc/900/status/current", pve.node()));
    assert_eq!(st["status"], json!("running"));
    for (src, clone) in [(900, 901), (901, 911), (911, 801), (911, 802)] {
        let bodies = requests_to("POST", &format!("/lxc/{src}/clone"));
        assert!(
            bodies
                .iter()
                .any(|(_, b)| b.contains(&format!("newid={clone}&"))
                    && b.contains("snapname=final-form")),
            "{src} -> {clone}: {bodies:?}"
        );
    }
    let iso = storage_of(&pve, "fastData-shared-iso").unwrap();
    assert_eq!(content_of(&iso), ["iso", "vztmpl"]);
    for id in [9000, 1001, 1002] {
        assert_eq!(pve.count(id), 1, "vm.{id}");
    }
    assert!(!targets.contains(&"firewall.cluster".to_string()));
    for a in [
        "vm.9000",
        "vm.1001",
        "vm.1002",
        "firewall.101",
        "firewall.1002",
    ] {
        assert!(targets.contains(&a.to_string()), "{a}: {targets:?}");
    }
    plan_is_empty(&site, &args);

    // A guest rule edited and another deleted in Proxmox: drift names them,
    // apply puts them back in order.
    let node = pve.node().to_string();
    let rules = pve.get(&format!("/nodes/{node}/lxc/102/firewall/rules"));
    let n = rules.as_array().unwrap().len();
    pve.put(
        &format!("/nodes/{node}/lxc/102/firewall/rules/0"),
        &[("dport", "8080")],
    );
    pve.http_delete(&format!("/nodes/{node}/lxc/102/firewall/rules/3"));
    site.cmd(&["drift"]).assert().code(3);
    let out = site.cmd(&["drift"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("firewall.102 changed outside phoenix"),
        "{}",
        stdout(&out)
    );
    apply(&site, &args);
    let after = pve.get(&format!("/nodes/{node}/lxc/102/firewall/rules"));
    assert_eq!(after.as_array().unwrap().len(), n);
    assert_eq!(after, rules, "the rules are back, in order");
    plan_is_empty(&site, &[]);
    site.cmd(&["drift"]).assert().code(0);
}
