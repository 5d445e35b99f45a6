//! `vm.<vmid>`: a template built from a cloud image and its full clones, in-place
//! changes that wait for a reboot, the boot disk's grow-only size, drift made
//! through the API, and destroy. vmids 600-699, templates 9600-9699.

use serde_json::{Value, json};

use crate::common::{Pve, Site, stderr, stdout, vm_clone, vm_from_image};

fn plan_code(site: &Site) -> (Option<i32>, String, String) {
    let out = site.cmd(&["plan", "--detailed-exitcode"]).output().unwrap();
    (out.status.code(), stdout(&out), stderr(&out))
}

fn assert_no_changes(site: &Site) {
    let (code, out, err) = plan_code(site);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("No changes. The site matches the manifests."),
        "{out}"
    );
}

fn apply_ok(site: &Site, extra: &[&str]) -> String {
    let mut args = vec!["apply", "--auto-approve"];
    args.extend_from_slice(extra);
    let out = site.cmd(&args).output().unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    stderr(&out)
}

#[test]
fn template_and_two_clones_plan_apply_then_no_changes() {
    let mut tpl = vm_from_image(9600, "tpl-9600", 160);
    tpl["is_template"] = json!(true);
    tpl["network_config"] = json!({"ip": "dhcp", "nameserver": "192.0.2.13"});
    // Falls back to vm_defaults.cores, as the seed's template does.
    tpl.as_object_mut().unwrap().remove("cores");
    let mut web = vm_clone(600, "clone-600", 9600, 60);
    web["disk_size_gb"] = json!(4);
    web["firewall"] = json!({"enabled": true, "rules": []});
    web["user_config"]["ssh_public_key"] =
        json!("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI+x/y= ops@lab");
    web["tags"] = json!(["Web", "phoenix"]);
    web["start_at_boot"] = json!(true);
    web["boot_order"] = json!(4);
    web["boot_delay"] = json!(2);
    let mut idle = vm_clone(601, "clone-601", 9600, 61);
    idle["status"] = json!("stopped");
    let site = Site::new(&[]);
    site.set_vms(&[tpl, web, idle.clone()]);

    let (code, out, err) = plan_code(&site);
    assert_eq!(code, Some(2), "{out}{err}");
    for a in [
        "vm.9600 will be created",
        "vm.600 will be created",
        "vm.601 will be created",
    ] {
        assert!(out.contains(a), "{out}");
    }

    let err = apply_ok(&site, &[]);
    assert!(err.contains("Converting vm.9600 to a template"), "{err}");
    assert!(err.contains("Cloning vm.9600 to vm.600"), "{err}");
    assert!(err.contains("Committed vm.601"), "{err}");
    assert_no_changes(&site);

    let pve = Pve::new();
    let tpl = pve.vm_config(9600);
    assert_eq!(tpl["template"], json!(1), "{tpl}");
    assert_eq!(tpl["cores"].to_string().trim_matches('"'), "2", "{tpl}");
    assert!(
        tpl["scsi0"].as_str().unwrap().starts_with("local-lvm:"),
        "{tpl}"
    );
    assert!(tpl["scsi0"].as_str().unwrap().contains("size="), "{tpl}");
    assert!(
        !tpl["scsi0"].as_str().unwrap().contains("import-from"),
        "{tpl}"
    );
    assert_eq!(pve.vm_status(9600), "stopped", "a template never runs");

    let web = pve.vm_config(600);
    let net0 = web["net0"].as_str().unwrap();
    assert!(net0.starts_with("virtio="), "{net0}");
    assert!(
        net0.contains("bridge=vmbr0") && net0.contains("firewall=1"),
        "{net0}"
    );
    assert_eq!(web["ipconfig0"], json!("ip=192.0.2.60/24,gw=192.0.2.1"));
    // The manifest's nameserver, not the seed's forced host address.
    assert_eq!(web["nameserver"], json!("192.0.2.13"));
    assert_eq!(web["searchdomain"], json!("lab.example.internal"));
    assert_eq!(
        web["sshkeys"],
        json!("ssh-ed25519%20AAAAC3NzaC1lZDI1NTE5AAAAI%2Bx%2Fy%3D%20ops%40lab")
    );
    assert_eq!(web["ciuser"], json!("phoenix_user"));
    assert!(web["scsi0"].as_str().unwrap().contains("size=4G"), "{web}");
    assert_eq!(web["tags"], json!("phoenix;web"));
    assert_eq!(web["startup"], json!("order=4,up=2"));
    assert_eq!(pve.vm_status(600), "running");
    assert_eq!(pve.vm_status(601), "stopped");

    // A VM cannot become a template in place: a replacement, shown as such.
    idle["is_template"] = json!(true);
    let mut vms = site_vms(&site);
    vms[2] = idle;
    site.set_vms(&vms);
    let (_, out, _) = plan_code(&site);
    assert!(out.contains("vm.601 must be replaced"), "{out}");
    assert!(out.contains("# forces replacement"), "{out}");
}

fn site_vms(site: &Site) -> Vec<Value> {
    let text = std::fs::read_to_string(site.root().join("etc/phoenix_vm_configs.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["vms"].as_array().unwrap().clone()
}

#[test]
fn cores_and_memory_of_a_running_vm_wait_for_the_next_reboot() {
    let site = Site::new(&[]);
    let vm = vm_from_image(610, "reboot-610", 70);
    site.set_vms(std::slice::from_ref(&vm));
    apply_ok(&site, &[]);
    let pve = Pve::new();
    assert_eq!(pve.vm_status(610), "running");

    let mut bigger = vm.clone();
    bigger["cores"] = json!(2);
    bigger["memory_mb"] = json!(2048);
    bigger["name"] = json!("reboot-610b");
    site.set_vms(&[bigger]);
    let (code, out, err) = plan_code(&site);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(out.contains("vm.610 will be updated in-place"), "{out}");
    assert!(
        out.contains("# note: cores, memory take effect at the next reboot"),
        "{out}"
    );

    let err = apply_ok(&site, &[]);
    assert!(err.contains("until the next reboot"), "{err}");
    // PVE holds them pending; phoenix reads what the VM boots with, so nothing is left to do.
    let pending = pve.vm_pending_keys(610);
    assert!(
        pending.contains(&"cores".to_string()) && pending.contains(&"memory".to_string()),
        "{pending:?}"
    );
    assert_eq!(pve.vm_config(610)["name"], json!("reboot-610b"));
    assert_no_changes(&site);
    site.cmd(&["drift"]).assert().code(0);

    // The reboot applies them; still nothing to do.
    pve.post(
        &format!("/nodes/{}/qemu/610/status/reboot", pve.node()),
        &[],
    );
    assert!(pve.vm_pending_keys(610).is_empty());
    assert_eq!(
        pve.vm_config(610)["memory"].to_string().trim_matches('"'),
        "2048"
    );
    assert_no_changes(&site);
}

#[test]
fn boot_disk_grows_by_resize_and_refuses_to_shrink() {
    let site = Site::new(&[]);
    let mut vm = vm_from_image(620, "disk-620", 80);
    vm["disk_size_gb"] = json!(4);
    vm["status"] = json!("stopped");
    site.set_vms(&[vm.clone()]);
    apply_ok(&site, &[]);
    let pve = Pve::new();
    assert!(
        pve.vm_config(620)["scsi0"]
            .as_str()
            .unwrap()
            .contains("size=4G")
    );

    vm["disk_size_gb"] = json!(8);
    site.set_vms(&[vm.clone()]);
    let (_, out, _) = plan_code(&site);
    assert!(
        out.contains("disk_size") && out.contains("\"4G\" -> \"8G\""),
        "{out}"
    );
    let err = apply_ok(&site, &[]);
    assert!(err.contains("Resizing vm.620 scsi0 to 8G"), "{err}");
    assert!(
        pve.vm_config(620)["scsi0"]
            .as_str()
            .unwrap()
            .contains("size=8G")
    );
    assert_no_changes(&site);

    vm["disk_size_gb"] = json!(2);
    site.set_vms(&[vm]);
    let (code, _, err) = plan_code(&site);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("`disk_size` cannot shrink from 8G to 2G"),
        "{err}"
    );
    assert!(err.contains("sizes only grow"), "{err}");
}

#[test]
fn memory_changed_through_the_api_is_drift_and_apply_restores_it() {
    let site = Site::new(&[]);
    site.set_vms(&[vm_from_image(630, "drift-630", 90)]);
    apply_ok(&site, &[]);
    site.cmd(&["drift"]).assert().code(0);

    // On a running VM PVE keeps the edit pending: it is drift all the same.
    let pve = Pve::new();
    pve.put(
        &format!("/nodes/{}/qemu/630/config", pve.node()),
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
    assert!(text.contains("vm.630 changed outside phoenix"), "{text}");
    assert!(
        text.contains("memory") && text.contains("1024 -> 2048"),
        "{text}"
    );

    let out = site.cmd(&["plan"]).output().unwrap();
    assert!(
        stdout(&out).contains("memory = 2048 -> 1024"),
        "{}",
        stdout(&out)
    );
    apply_ok(&site, &[]);
    site.cmd(&["drift"]).assert().code(0);
}

#[test]
fn removed_vm_is_destroyed_only_with_allow_destroy() {
    let site = Site::new(&[]);
    let kept = vm_from_image(641, "kept-641", 101);
    site.set_vms(&[vm_from_image(640, "gone-640", 100), kept.clone()]);
    apply_ok(&site, &[]);
    site.set_vms(&[kept]);
    let (code, out, _) = plan_code(&site);
    assert_eq!(code, Some(2));
    assert!(out.contains("vm.640 will be destroyed"), "{out}");
    let out = site.cmd(&["apply", "--auto-approve"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--allow-destroy"), "{}", stderr(&out));
    let pve = Pve::new();
    assert_eq!(
        pve.count(640),
        1,
        "nothing destroyed without --allow-destroy"
    );
    // A running VM is stopped, then destroyed with its disks.
    apply_ok(&site, &["--allow-destroy"]);
    assert_eq!(pve.count(640), 0);
    assert_eq!(pve.count(641), 1);
    assert_no_changes(&site);
}

/// The seed's own VM file (template 9000, Portainer 1001, drphoenix 1002) with
/// its vmids moved into this module's range, so the real manifests are what
/// plans and applies.
#[test]
fn seed_vm_manifests_plan_and_apply() {
    let seed = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/fixtures/phoenix-seed/etc/phoenix_vm_configs.json"
    );
    let text = std::fs::read_to_string(seed).unwrap();
    let ids = [("9000", "9690"), ("1001", "690"), ("1002", "691")];
    let mut file: Value = serde_json::from_str(&text).unwrap();
    for vm in file["vms"].as_array_mut().unwrap() {
        for key in ["vmid", "clone_from_vmid"] {
            if let Some(id) = vm.get(key).map(|v| v.to_string()) {
                let new = ids
                    .iter()
                    .find(|(old, _)| *old == id)
                    .map_or(id.clone(), |(_, n)| n.to_string());
                vm[key] = json!(new.parse::<u32>().unwrap());
            }
        }
        // Its dependencies are containers this site does not have, and 1001.
        let deps: Vec<Value> = vm["dependencies"]
            .as_array()
            .map(|d| {
                d.iter()
                    .filter(|d| *d == "1001")
                    .map(|_| json!("690"))
                    .collect()
            })
            .unwrap_or_default();
        vm["dependencies"] = json!(deps);
    }
    let site = Site::new(&[]);
    site.write("etc/phoenix_vm_configs.json", &file);

    let (code, out, err) = plan_code(&site);
    assert_eq!(code, Some(2), "{out}{err}");
    for a in [
        "vm.9690 will be created",
        "vm.690 will be created",
        "vm.691 will be created",
    ] {
        assert!(out.contains(a), "{out}");
    }
    apply_ok(&site, &[]);
    assert_no_changes(&site);

    let pve = Pve::new();
    let portainer = pve.vm_config(690);
    assert_eq!(
        portainer["ipconfig0"],
        json!("ip=10.0.0.111/24,gw=10.0.0.1")
    );
    assert_eq!(portainer["memory"].to_string().trim_matches('"'), "8192");
    // The seed's disk_size_gb was never applied; here it is.
    assert!(
        portainer["scsi0"]
            .as_str()
            .unwrap()
            .starts_with("quickOS-vm-disks:")
    );
    assert!(portainer["scsi0"].as_str().unwrap().contains("size=32G"));
    assert!(
        pve.vm_config(691)["scsi0"]
            .as_str()
            .unwrap()
            .contains("size=64G")
    );
    assert_eq!(pve.vm_config(9690)["template"], json!(1));
}

#[test]
fn manifest_mistakes_are_errors_before_anything_is_touched() {
    let site = Site::new(&[]);
    let mut bad_image = vm_from_image(650, "bad-650", 110);
    bad_image["template_image"] = json!("my-own-image.img");
    let mut running_template = vm_from_image(9650, "tpl-9650", 111);
    running_template["is_template"] = json!(true);
    running_template["status"] = json!("running");
    site.set_vms(&[bad_image, running_template]);
    let out = site.cmd(&["plan"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("cannot tell where to get the image `my-own-image.img`"),
        "{err}"
    );
    assert!(err.contains("an https URL"), "{err}");
    assert!(err.contains("a template never runs"), "{err}");
    assert_eq!(Pve::new().count(650), 0);
}
