//! dns.records and file.* through plan and apply, against the fake PVE (the
//! containers) and a host of the test's own (lab/host): written, checked with
//! the real programs, reloaded, put back when a check fails, removed with the
//! ingress; and apply followed by plan is empty.

use serde_json::{Value, json};

use crate::common::{Site, lxc, stderr, stdout};
use crate::host_support::{HostLab, gateway, ingress_site, set_hypervisor};

const GATEWAY_SITE: &str = "/etc/nginx/sites-available/gateway";
const GATEWAY_LINK: &str = "/etc/nginx/sites-enabled/gateway";
const TRAEFIK_FILE: &str = "/etc/traefik/dynamic/dynamic_conf.yml";
const DNS_FILE: &str = "/etc/dnsmasq.d/00-phoenix-internal.conf";

/// The containers of an ingress site: the gateway with nginx and its certificate, Traefik.
fn guests(lab: &HostLab, gw: u32) {
    lab.nginx_guest(gw);
    lab.plain_guest(gw + 1);
    lab.cert(
        gw,
        "/etc/nginx/ssl/gateway.crt",
        "/etc/nginx/ssl/gateway.key",
        &["gateway.lab.example.internal", "*.lab.example.internal"],
    );
}

fn run(lab: &HostLab, site: &Site, reload: &str, args: &[&str]) -> std::process::Output {
    lab.cmd(site, reload, args).output().unwrap()
}

fn apply(lab: &HostLab, site: &Site, reload: &str) -> std::process::Output {
    let out = run(lab, site, reload, &["apply", "--auto-approve"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    out
}

fn plan_is_empty(lab: &HostLab, site: &Site, reload: &str) {
    let out = run(lab, site, reload, &["plan", "--detailed-exitcode"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(stdout(&out).contains("No changes."), "{}", stdout(&out));
}

fn read(p: std::path::PathBuf) -> String {
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The app containers of a site: (ctid, name, traefik_service name, port).
fn relayout(site: &Site, gw: u32, octet: u32, apps: &[(u32, &str, &str, u16)]) {
    let mut lxcs = vec![
        (gw, gateway(gw, octet)),
        (gw + 1, lxc(&format!("traefik-{}", gw + 1), octet + 1)),
    ];
    for (i, (id, name, ts, port)) in apps.iter().enumerate() {
        let mut c = lxc(name, octet + 2 + i as u32);
        c["traefik_service"] = json!({"name": ts, "port": port});
        lxcs.push((*id, c));
    }
    site.set_lxcs(&lxcs);
}

#[test]
fn apply_writes_checks_reloads_and_the_next_plan_is_empty() {
    let mut lab = HostLab::new();
    let reload = lab.with_dnsmasq();
    let site = ingress_site(451, 151, &[(453, "app-453", "web", 8080)]);
    guests(&lab, 451);

    let out = run(&lab, &site, &reload, &["plan", "--detailed-exitcode"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let text = stdout(&out);
    for want in [
        "dns.records will be created",
        "file.traefik_dynamic will be created",
        "file.nginx_gateway will be created",
        "+ content = <<-EOT",
        "host-record=web.lab.example.internal,192.0.2.151",
        "server_name web.lab.example.internal;",
    ] {
        assert!(text.contains(want), "{want}: {text}");
    }

    let out = apply(&lab, &site, &reload);
    let err = stderr(&out);
    assert!(
        err.contains("Writing file.nginx_gateway /etc/nginx/sites-available/gateway in lxc.451"),
        "{err}"
    );
    assert!(err.contains("Committed dns.records"), "{err}");

    // In place, enabled, and accepted by the real nginx of the container.
    assert!(read(lab.guest_file(451, GATEWAY_SITE)).contains("proxy_pass http://192.0.2.152:80;"));
    assert_eq!(
        std::fs::read_link(lab.guest_file(451, GATEWAY_LINK)).unwrap(),
        std::path::Path::new(GATEWAY_SITE)
    );
    assert!(read(lab.guest_file(452, TRAEFIK_FILE)).contains("url: \"http://192.0.2.153:8080\""));
    let out = lab.pct_exec(451, &["nginx", "-t"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let log = read(lab.guest_file(451, "/var/log/fake-systemctl.log"));
    assert!(log.contains("reload nginx"), "{log}");
    // The reload restarted the real dnsmasq, which answers the new records.
    assert_eq!(lab.dig("web.lab.example.internal"), "192.0.2.151");
    assert_eq!(lab.dig("app-453.lab.example.internal"), "192.0.2.153");
    plan_is_empty(&lab, &site, &reload);

    // A second routed service: each record and each file changes as a diff.
    relayout(
        &site,
        451,
        151,
        &[
            (453, "app-453", "web", 8080),
            (454, "app-454", "grafana", 3000),
        ],
    );
    let out = run(&lab, &site, &reload, &["plan", "--detailed-exitcode"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let text = stdout(&out);
    for want in [
        "~ dns.records {",
        "~ records:",
        "+grafana.lab.example.internal 192.0.2.151",
        "+app-454.lab.example.internal 192.0.2.154",
        "~ file.nginx_gateway {",
        "+    server_name grafana.lab.example.internal;",
        "+          - url: \"http://192.0.2.154:3000\"",
    ] {
        assert!(text.contains(want), "{want}: {text}");
    }
    let out = run(&lab, &site, &reload, &["plan", "--json"]);
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    let dns = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["address"] == "dns.records")
        .unwrap();
    assert_eq!(dns["changed_paths"], json!(["records", "content"]));
    apply(&lab, &site, &reload);
    assert_eq!(lab.dig("grafana.lab.example.internal"), "192.0.2.151");
    plan_is_empty(&lab, &site, &reload);

    // What the gateway now serves, through a stand-in for Traefik at 192.0.2.152:80.
    let got = lab.gateway_check(
        451,
        "192.0.2.151",
        "192.0.2.152",
        &["web.lab.example.internal", "grafana.lab.example.internal"],
    );
    for h in ["web.lab.example.internal", "grafana.lab.example.internal"] {
        assert_eq!(
            got[&format!("https {h}")],
            format!("200 traefik host={h} proto=https"),
            "{got:?}"
        );
    }
}

#[test]
fn a_gateway_that_fails_nginx_t_is_put_back() {
    let lab = HostLab::new();
    let site = ingress_site(461, 161, &[(463, "app-463", "web", 8080)]);
    guests(&lab, 461);
    apply(&lab, &site, "true");
    let before = read(lab.guest_file(461, GATEWAY_SITE));

    // The key goes missing in the container: nginx -t fails with the new file.
    std::fs::remove_file(lab.guest_file(461, "/etc/nginx/ssl/gateway.key")).unwrap();
    relayout(&site, 461, 161, &[(463, "app-463", "web2", 8080)]);
    let out = run(&lab, &site, "true", &["apply", "--auto-approve"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let err = stderr(&out);
    assert!(err.contains("`nginx -t` failed with the new /etc/nginx/sites-available/gateway; the previous file is back in place"), "{err}");
    assert!(err.contains("gateway.key"), "{err}");
    assert_eq!(read(lab.guest_file(461, GATEWAY_SITE)), before);
    assert!(std::fs::symlink_metadata(lab.guest_file(461, GATEWAY_LINK)).is_ok());
    let hidden: Vec<String> = std::fs::read_dir(lab.guest_file(461, "/etc/nginx/sites-available"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "{hidden:?}");

    // Still planned; with the key back, it goes through.
    let out = run(&lab, &site, "true", &["plan", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stdout(&out).contains("~ file.nginx_gateway {"),
        "{}",
        stdout(&out)
    );
    guests(&lab, 461);
    apply(&lab, &site, "true");
    assert!(
        read(lab.guest_file(461, GATEWAY_SITE)).contains("server_name web2.lab.example.internal;")
    );
    plan_is_empty(&lab, &site, "true");
}

#[test]
fn a_failed_dnsmasq_reload_puts_the_old_records_back() {
    let lab = HostLab::new();
    let site = ingress_site(471, 171, &[(473, "app-473", "web", 8080)]);
    guests(&lab, 471);
    apply(&lab, &site, "true");
    let before = read(lab.host_file(DNS_FILE));

    relayout(&site, 471, 171, &[(473, "app-473", "web2", 8080)]);
    let out = run(
        &lab,
        &site,
        "echo dnsmasq refused >&2; exit 7",
        &["apply", "--auto-approve"],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let err = stderr(&out);
    assert!(err.contains("failed after writing"), "{err}");
    assert!(err.contains("dnsmasq refused"), "{err}");
    assert_eq!(read(lab.host_file(DNS_FILE)), before);

    apply(&lab, &site, "true");
    assert!(
        read(lab.host_file(DNS_FILE)).contains("host-record=web2.lab.example.internal,192.0.2.171")
    );
    plan_is_empty(&lab, &site, "true");
}

#[test]
fn a_file_edited_in_its_container_is_drift_and_apply_undoes_it() {
    let lab = HostLab::new();
    let site = ingress_site(481, 181, &[(483, "app-483", "web", 8080)]);
    guests(&lab, 481);
    apply(&lab, &site, "true");
    let file = lab.guest_file(482, TRAEFIK_FILE);
    let good = read(file.clone());
    std::fs::write(&file, format!("{good}# edited by hand\n")).unwrap();

    let out = run(&lab, &site, "true", &["drift"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let text = stdout(&out);
    assert!(
        text.contains("file.traefik_dynamic changed outside phoenix"),
        "{text}"
    );
    assert!(text.contains("+# edited by hand"), "{text}");

    apply(&lab, &site, "true");
    assert_eq!(read(file), good);
    plan_is_empty(&lab, &site, "true");
}

#[test]
fn files_and_records_leave_with_the_ingress() {
    let lab = HostLab::new();
    let site = ingress_site(491, 191, &[(493, "app-493", "web", 8080)]);
    guests(&lab, 491);
    apply(&lab, &site, "true");
    assert!(std::fs::symlink_metadata(lab.guest_file(491, GATEWAY_LINK)).is_ok());

    let mut h: Value = serde_json::from_str(&read(
        site.root().join("etc/phoenix_hypervisor_config.json"),
    ))
    .unwrap();
    h["ingress"]["enabled"] = json!(false);
    h["dns_server"]["enabled"] = json!(false);
    site.write("etc/phoenix_hypervisor_config.json", &h);
    let out = run(&lab, &site, "true", &["plan"]);
    let text = stdout(&out);
    for want in [
        "- dns.records",
        "- file.nginx_gateway",
        "- file.traefik_dynamic",
        "0 to add, 0 to change, 3 to destroy",
    ] {
        assert!(text.contains(want), "{want}: {text}");
    }
    apply(&lab, &site, "true");
    assert!(!lab.guest_file(491, GATEWAY_SITE).exists());
    assert!(std::fs::symlink_metadata(lab.guest_file(491, GATEWAY_LINK)).is_err());
    assert!(!lab.guest_file(492, TRAEFIK_FILE).exists());
    assert!(!lab.host_file(DNS_FILE).exists());
    let log = read(lab.guest_file(491, "/var/log/fake-systemctl.log"));
    assert_eq!(log.matches("reload nginx").count(), 2, "{log}");
    plan_is_empty(&lab, &site, "true");
}

#[test]
fn without_a_way_to_the_host_the_plan_says_how_to_give_one() {
    let site = Site::new(&[(499, lxc("lonely-499", 199))]);
    set_hypervisor(&site, 497);
    site.write("etc/phoenix_hypervisor_config.json", &{
        let mut h: Value = serde_json::from_str(&read(
            site.root().join("etc/phoenix_hypervisor_config.json"),
        ))
        .unwrap();
        h.as_object_mut().unwrap().remove("ingress");
        h
    });
    let out = site
        .https_cmd(&["plan"])
        .env_remove("PHOENIX_HOST_ROOT")
        .env_remove("PHOENIX_HOST")
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
        err.contains("phoenix does not know how to reach the Proxmox host"),
        "{err}"
    );
    assert!(err.contains("set PHOENIX_HOST=ssh://root@<host>"), "{err}");
}
