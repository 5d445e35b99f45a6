//! `phoenix render`, and the seed site's generated files through the real
//! validators: `dnsmasq --test` and a dnsmasq answering every record; `nginx -t`
//! in a container and an nginx routing every hostname; Traefik's YAML parsed.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::common::{stderr, stdout};
use crate::host_support::{HostLab, dig, whoami};

const SEED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/fixtures/phoenix-seed"
);

fn phoenix(args: &[&str]) -> std::process::Output {
    let mut c = assert_cmd::Command::cargo_bin("phoenix").unwrap();
    c.args(args)
        .env_remove("RUST_BACKTRACE")
        .env_remove("PHOENIX_ROOT")
        .env("NO_COLOR", "1");
    c.output().unwrap()
}

/// Render the seed under a host root laid out as phoenix would write it.
fn render_seed(lab: &HostLab) {
    let out = phoenix(&[
        "--root",
        SEED,
        "render",
        "--out",
        &lab.root().display().to_string(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    for f in [
        "etc/dnsmasq.d/00-phoenix-internal.conf (dns.records)",
        "guests/101/etc/nginx/sites-available/gateway (file.nginx_gateway)",
        "guests/102/etc/traefik/dynamic/dynamic_conf.yml (file.traefik_dynamic)",
    ] {
        assert!(err.contains(f), "{err}");
    }
}

/// The seed's records, as dnsmasq itself answers them.
#[test]
fn seed_dns_records_pass_dnsmasq_test_and_are_served() {
    let lab = HostLab::new();
    render_seed(&lab);
    let file = lab.host_file("/etc/dnsmasq.d/00-phoenix-internal.conf");
    let out = Command::new("dnsmasq")
        .arg("--test")
        .arg(format!("--conf-file={}", file.display()))
        .output()
        .expect("dnsmasq (scripts/setup installs it)");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("syntax check OK"), "{}", stderr(&out));

    let port = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let mut child = Command::new("dnsmasq")
        .args([
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
        ])
        .arg(format!("--conf-file={}", file.display()))
        .arg("--listen-address=127.0.0.1")
        .arg(format!("--port={port}"))
        .arg(format!("--user={}", whoami()))
        .arg(format!(
            "--pid-file={}",
            lab.root().join("seed-dnsmasq.pid").display()
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut ready = false;
    for _ in 0..50 {
        if !dig(port, "step-ca.internal.thinkheads.ai").is_empty() {
            ready = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let text = std::fs::read_to_string(&file).unwrap();
    let answers: Vec<(String, String, String)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("host-record="))
        .map(|r| {
            let (name, ip) = r.split_once(',').unwrap();
            (name.to_string(), ip.to_string(), dig(port, name))
        })
        .collect();
    let unknown = dig(port, "nothing-here.internal.thinkheads.ai");
    let _ = child.kill();
    let _ = child.wait();
    assert!(ready, "dnsmasq did not answer on 127.0.0.1:{port}");
    assert_eq!(answers.len(), 21);
    for (name, ip, got) in &answers {
        assert_eq!(got, ip, "{name}");
    }
    assert!(unknown.is_empty(), "{unknown}");
    // The seed's inconsistencies fixed: routed names at the gateway, step-ca and the agent direct.
    let map: BTreeMap<&str, &str> = answers
        .iter()
        .map(|(n, ip, _)| (n.trim_end_matches(".internal.thinkheads.ai"), ip.as_str()))
        .collect();
    assert_eq!(map["ollama"], "10.0.0.153");
    assert_eq!(map["granite-embedding"], "10.0.0.153");
    assert_eq!(map["ca"], "10.0.0.10");
    assert_eq!(map["portainer-agent"], "10.0.0.102");
    assert_eq!(map["qdrant"], "10.0.0.153");
}

/// The seed's gateway in a container with nginx: `nginx -t`, then every routed
/// hostname through TLS to a stand-in for Traefik at the seed's 10.0.0.12:80.
#[test]
fn seed_gateway_passes_nginx_t_and_routes_every_hostname() {
    let lab = HostLab::new();
    lab.nginx_guest(101);
    render_seed(&lab);
    let site = lab.guest_file(101, "/etc/nginx/sites-available/gateway");
    let text = std::fs::read_to_string(&site).unwrap();
    std::os::unix::fs::symlink(
        "/etc/nginx/sites-available/gateway",
        lab.guest_file(101, "/etc/nginx/sites-enabled/gateway"),
    )
    .unwrap();
    let hosts: Vec<String> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("server_name "))
        .map(|h| h.trim_end_matches(';').to_string())
        .collect();
    assert_eq!(hosts.len(), 6, "{text}");
    // The seed's certificate names two hosts; the others are served with it too
    // (and say so). The certificate the cert kind will issue names them all.
    assert!(text.contains("no certificate names it"), "{text}");
    let names: Vec<&str> = hosts.iter().map(String::as_str).collect();
    lab.cert(
        101,
        "/etc/nginx/ssl/nginx.internal.thinkheads.ai.crt",
        "/etc/nginx/ssl/nginx.internal.thinkheads.ai.key",
        &names,
    );
    let out = lab.pct_exec(101, &["nginx", "-t"]);
    assert!(out.status.success(), "{}", stderr(&out));

    let got = lab.gateway_check(101, "10.0.0.153", "10.0.0.12", &names);
    for h in &names {
        assert_eq!(
            got[&format!("https {h}")],
            format!("200 traefik host={h} proto=https"),
            "{got:?}"
        );
        assert_eq!(
            got[&format!("http {h}")],
            format!("301 https://{h}/x"),
            "{got:?}"
        );
        assert_eq!(got[&format!("acme {h}")], "200 phoenix-acme-ok", "{got:?}");
    }
}

/// Traefik's file, as YAML: every router has its service, HTTPS backends a
/// transport verifying against the root CA, and nothing loops back to the gateway.
#[test]
fn seed_traefik_config_is_consistent_yaml() {
    let lab = HostLab::new();
    render_seed(&lab);
    let file = lab.guest_file(102, "/etc/traefik/dynamic/dynamic_conf.yml");
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        ])
        .arg(&file)
        .output()
        .expect("python3 with yaml (scripts/setup installs python3-yaml)");
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let http = &v["http"];
    let routers = http["routers"].as_object().unwrap();
    let services = http["services"].as_object().unwrap();
    let transports = http["serversTransports"].as_object().unwrap();
    let mut urls = BTreeMap::new();
    for (name, r) in routers {
        let svc = r["service"].as_str().unwrap();
        let s = &services[svc]["loadBalancer"];
        let url = s["servers"][0]["url"].as_str().unwrap();
        urls.insert(name.clone(), url.to_string());
        assert_eq!(r["entryPoints"], serde_json::json!(["web"]));
        if url.starts_with("https://") {
            let t = &transports[s["serversTransport"].as_str().unwrap()];
            assert_eq!(t["rootCAs"][0], "/etc/step-ca/ssl/phoenix_root_ca.crt");
            assert!(
                t["serverName"]
                    .as_str()
                    .unwrap()
                    .ends_with(".internal.thinkheads.ai")
            );
        } else {
            assert!(s.get("serversTransport").is_none(), "{name}");
        }
    }
    assert_eq!(urls["portainer"], "https://10.0.0.111:9443");
    assert_eq!(urls["ollama"], "http://10.0.0.155:11434");
    assert_eq!(urls["qdrant_service-qdrant"], "http://10.0.0.102:6333");
    // The seed routed these wrongly (reference 1.9 item 7): the gateway to itself over
    // plain HTTP, step-ca over plain HTTP, the agent through the gateway.
    for name in ["nginx", "ca", "portainer-agent"] {
        assert!(!routers.contains_key(name), "{name}: {urls:?}");
    }
}

#[test]
fn render_prints_one_file_or_all_and_refuses_others() {
    let one = phoenix(&["--root", SEED, "render", "dns.records"]);
    assert!(one.status.success(), "{}", stderr(&one));
    let text = stdout(&one);
    assert!(text.starts_with("# Generated by phoenix"), "{text}");
    assert!(
        text.contains("host-record=ollama.internal.thinkheads.ai,10.0.0.153\n"),
        "{text}"
    );

    let all = phoenix(&["--root", SEED, "render"]);
    let text = stdout(&all);
    for h in [
        "# ==> dns.records (the host:/etc/dnsmasq.d/00-phoenix-internal.conf) <==",
        "# ==> file.nginx_gateway (lxc.101:/etc/nginx/sites-available/gateway) <==",
        "# ==> file.traefik_dynamic (lxc.102:/etc/traefik/dynamic/dynamic_conf.yml) <==",
    ] {
        assert!(text.contains(h), "{text}");
    }

    let bad = phoenix(&["--root", SEED, "render", "lxc.101"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains("`lxc.101` is not a file this site generates"),
        "{}",
        stderr(&bad)
    );
    assert!(
        stderr(&bad).contains("these are: dns.records, file.nginx_gateway, file.traefik_dynamic")
    );

    let minimal = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/minimal");
    let none = phoenix(&["--root", &minimal.display().to_string(), "render"]);
    assert!(none.status.success());
    assert!(stdout(&none).is_empty());
    assert!(
        stderr(&none).contains("this site generates no files"),
        "{}",
        stderr(&none)
    );
}
