//! `cert.<common_name>` against a real ACME CA (pebble, tests/support/pebble.rs):
//! issued through http-01 in the gateway's webroot, written with owner and
//! mode, left alone while valid, re-issued only for a reason the plan names,
//! and never a byte of the key outside its file. Ids 456-458, 466-468.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use serde_json::json;

use crate::common::{Site, stderr, stdout};
use crate::host_support::{HostLab, ingress_site};
use crate::support::pebble::{self, Pebble};

const CERT: &str = "/srv/phoenix-test/app/app.crt";
const KEY: &str = "/srv/phoenix-test/app/app.key";
static GATEWAY_CERT: std::sync::LazyLock<serde_json::Value> = std::sync::LazyLock::new(|| {
    json!({
        "common_name": "gateway.lab.example.internal",
        "sans": ["*.lab.example.internal"],
        "cert_path": "/srv/phoenix-test/certs/gateway.crt",
        "key_path": "/srv/phoenix-test/certs/gateway.key"
    })
});
const CHALLENGES: &str = "/var/www/html/.well-known/acme-challenge";

/// The gateway's own certificate (a wildcard: dns-01 through dnsmasq), and the app's (http-01).
fn manifest(site: &Site, sans: &[&str], post_log: &Path) {
    site.write(
        "etc/certificate-manifest.json",
        &json!([GATEWAY_CERT.clone(), {
            "common_name": "app.lab.example.internal",
            "sans": sans,
            "cert_path": CERT,
            "key_path": KEY,
            "owner": "root:root",
            "permissions": "640",
            "post_renewal_command": format!("echo renewed >> '{}'", post_log.display())
        }]),
    );
}

/// The names and issuer of a PEM certificate, as openssl reads them.
fn openssl_text(pem: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-issuer", "-in"])
        .arg(pem)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn lines(p: &Path) -> usize {
    std::fs::read_to_string(p).map_or(0, |s| s.lines().count())
}

fn run(
    lab: &HostLab,
    site: &Site,
    args: &[&str],
    env: &[(String, String)],
) -> std::process::Output {
    let mut c = lab.cmd(site, "true", args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn plan_is_empty(lab: &HostLab, site: &Site) {
    let out = run(lab, site, &["plan", "--detailed-exitcode"], &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
}

fn ok(out: &std::process::Output) -> String {
    assert!(out.status.success(), "{}{}", stdout(out), stderr(out));
    format!("{}{}", stdout(out), stderr(out))
}

#[test]
fn a_certificate_is_issued_kept_while_valid_and_reissued_only_for_a_named_reason() {
    let lab = HostLab::new();
    let site = ingress_site(456, 156, &[(458, "app-458", "app", 8080)]);
    lab.nginx_guest(456);
    lab.plain_guest(457);
    lab.cert(
        456,
        "/etc/nginx/ssl/gateway.crt",
        "/etc/nginx/ssl/gateway.key",
        &["gateway.lab.example.internal", "*.lab.example.internal"],
    );
    let post_log = lab.root().join("post-renewal.log");
    manifest(&site, &["app.lab.example.internal"], &post_log);
    let pebble = pebble::shared();
    let issuer = pebble.intermediate_cn();

    let text = ok(&run(&lab, &site, &["plan"], &[]));
    assert!(
        text.contains("cert.app.lab.example.internal will be created"),
        "{text}"
    );
    assert!(
        text.contains("issues it: no certificate at cert_path"),
        "{text}"
    );
    assert!(
        text.contains("then runs on the host: echo renewed"),
        "{text}"
    );

    let all = ok(&run(&lab, &site, &["apply", "--auto-approve"], &[]));
    assert!(
        all.contains("http-01 for app.lab.example.internal in lxc.456"),
        "{all}"
    );
    let cert = lab.host_file(CERT);
    let key = lab.host_file(KEY);
    let info = openssl_text(&cert);
    assert!(info.contains("DNS:app.lab.example.internal"), "{info}");
    assert!(info.contains(&issuer), "{issuer}: {info}");
    for f in [&cert, &key] {
        let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640, "{}", f.display());
    }
    // The token left the webroot once answered; the post-renewal command ran once.
    let webroot = lab.guest_file(456, CHALLENGES);
    assert_eq!(std::fs::read_dir(&webroot).map_or(0, |d| d.count()), 0);
    assert_eq!(lines(&post_log), 1);
    // The ACME account key stays beside the state, readable by its owner only.
    let account = site.root().join("state/acme-account.json");
    assert_eq!(
        std::fs::metadata(&account).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Valid and as asked: left alone.
    let first = std::fs::read(&cert).unwrap();
    plan_is_empty(&lab, &site);
    ok(&run(&lab, &site, &["apply", "--auto-approve"], &[]));
    assert_eq!(std::fs::read(&cert).unwrap(), first);
    assert_eq!(lines(&post_log), 1);

    // The key's mode changed by hand: fixed without a new certificate.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = stdout(&run(&lab, &site, &["plan"], &[]));
    assert!(
        text.contains("sets owner and mode on the files; no new certificate"),
        "{text}"
    );
    ok(&run(&lab, &site, &["apply", "--auto-approve"], &[]));
    assert_eq!(std::fs::read(&cert).unwrap(), first);
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o640
    );

    // Inside the renewal window: the plan says so, apply re-issues.
    let window = [(
        "PHOENIX_CERT_RENEW_BEFORE".to_string(),
        "100000d".to_string(),
    )];
    let text = stdout(&run(&lab, &site, &["plan"], &window));
    assert!(text.contains("re-issues: it expires"), "{text}");
    assert!(text.contains("inside its renewal window"), "{text}");

    // A name added: re-issued with it.
    manifest(
        &site,
        &["app.lab.example.internal", "api.lab.example.internal"],
        &post_log,
    );
    let text = stdout(&run(&lab, &site, &["plan"], &[]));
    assert!(
        text.contains("re-issues: its names differ from the manifest's"),
        "{text}"
    );
    ok(&run(&lab, &site, &["apply", "--auto-approve"], &[]));
    let info = openssl_text(&cert);
    assert!(info.contains("DNS:api.lab.example.internal"), "{info}");
    assert_eq!(lines(&post_log), 2);
    plan_is_empty(&lab, &site);

    // Another issuer than the site CA's: named.
    let hv = site.root().join("etc/phoenix_hypervisor_config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&hv).unwrap()).unwrap();
    config["step_ca"] = json!({"intermediate_ca_name": "Site Intermediate CA"});
    site.write("etc/phoenix_hypervisor_config.json", &config);
    let text = stdout(&run(&lab, &site, &["plan"], &[]));
    assert!(
        text.contains(&format!("it was issued by `{issuer}`, not the site CA")),
        "{text}"
    );

    // Not a byte of the key anywhere phoenix writes.
    let key_pem = std::fs::read_to_string(&key).unwrap();
    let body: String = key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert!(body.len() > 100);
    let state = std::fs::read_to_string(site.state_path()).unwrap();
    let out = run(&lab, &site, &["plan", "--json"], &[]);
    for text in [state, stdout(&out), stderr(&out), all] {
        assert!(!text.contains(&body[56..96]), "the key leaked");
    }
}

#[test]
fn http_01_is_validated_for_real_through_the_gateways_webroot() {
    let lab = HostLab::new();
    // No routed app: the gateway needs no certificate of its own, and pebble's DNS is the
    // challenge server's, not the site's.
    let site = ingress_site(466, 166, &[]);
    lab.nginx_guest(466);
    lab.plain_guest(467);
    site.write(
        "etc/certificate-manifest.json",
        &json!([{
            "common_name": "real.lab.example.internal",
            "cert_path": "/srv/phoenix-test/real/real.crt",
            "key_path": "/srv/phoenix-test/real/real.key"
        }]),
    );
    // The gateway's port 80 as the CA sees it: its webroot served on loopback (the gateway's
    // own nginx runs in a network namespace of its own, out of pebble's reach).
    let webroot = lab.guest_file(466, "/var/www/html");
    std::fs::create_dir_all(&webroot).unwrap();
    let port = pebble::free_port();
    let server = Command::new("python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
            "--directory",
        ])
        .arg(&webroot)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Stopped however the test ends.
    struct Stop(std::process::Child);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let server = Stop(server);
    let ca = Pebble::validating(port, None);
    let out = run(&lab, &site, &["apply", "--auto-approve"], &ca.env());
    drop(server);
    ok(&out);
    let info = openssl_text(&lab.host_file("/srv/phoenix-test/real/real.crt"));
    assert!(info.contains("DNS:real.lab.example.internal"), "{info}");
}

#[test]
fn dns_01_is_validated_for_real_through_the_sites_dnsmasq() {
    let mut lab = HostLab::new();
    let reload = lab.with_dnsmasq();
    // No gateway: every name is answered through the site's DNS.
    let site = Site::new(&[(486, crate::common::lxc("dns-486", 186))]);
    site.write(
        "etc/phoenix_hypervisor_config.json",
        &json!({
            "domain_name": "lab.example.internal",
            "network": {"interfaces": {"name": "vmbr0", "address": "192.0.2.13/24", "gateway": "192.0.2.1", "dns_nameservers": ["192.0.2.13"]}},
            "dns_server": {"enabled": true, "upstream_servers": ["192.0.2.1"]}
        }),
    );
    site.write(
        "etc/certificate-manifest.json",
        &json!([GATEWAY_CERT.clone()]),
    );
    let port = lab.dns_port();
    let ca = Pebble::validating(pebble::free_port(), Some(port));
    let mut c = lab.cmd(&site, &reload, &["apply", "--auto-approve"]);
    for (k, v) in ca.env() {
        c.env(k, v);
    }
    let all = ok(&c.output().unwrap());
    assert!(
        all.contains("dns-01 for *.lab.example.internal through dnsmasq"),
        "{all}"
    );
    assert!(
        all.contains("dns-01 for gateway.lab.example.internal through dnsmasq"),
        "{all}"
    );
    let info = openssl_text(&lab.host_file("/srv/phoenix-test/certs/gateway.crt"));
    assert!(info.contains("DNS:*.lab.example.internal"), "{info}");
    // The answers left dnsmasq with the validation.
    assert!(
        !lab.host_file("/etc/dnsmasq.d/00-phoenix-acme.conf")
            .exists()
    );
}

#[test]
fn without_an_acme_directory_apply_says_what_to_set() {
    let lab = HostLab::new();
    let site = ingress_site(476, 176, &[(478, "app-478", "app", 8080)]);
    lab.nginx_guest(476);
    lab.plain_guest(477);
    lab.cert(
        476,
        "/etc/nginx/ssl/gateway.crt",
        "/etc/nginx/ssl/gateway.key",
        &["gateway.lab.example.internal", "*.lab.example.internal"],
    );
    let mut c = lab.cmd(&site, "true", &["apply", "--auto-approve"]);
    c.env_remove("PHOENIX_ACME_DIRECTORY");
    let out = c.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let err = stderr(&out);
    assert!(err.contains("PHOENIX_ACME_DIRECTORY is not set"), "{err}");
    assert!(
        err.contains("help: set it to the site CA's ACME directory URL"),
        "{err}"
    );
}
