//! Secrets and trust (issue 6): known secret values seeded where a site keeps
//! them, then every byte phoenix writes (state, backup, saved plan, lock,
//! stdout, stderr, debug logs, JSON and markdown plans) searched for them;
//! TLS verified with advice when it fails; files created 0600 whatever the
//! umask, and refused or warned about when others can read them.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::{Value, json};

use crate::common::{Site, lxc, stderr};
use crate::reliability_common::*;

const PORTAINER_PASSWORD: &str = "Pw-portainer-7Qx!9zL";
const PORTAINER_API_KEY: &str = "ptr_k3y_5b0d8e1f2a3c4d5e6f708192a3b4c5d6";
const STACK_PASSWORD: &str = "Db-pass-Zr48-unique";
const ACME_ACCOUNT_KEY: &str = "MHcCAQEEIACMEaccountKEYnotREALbutUNIQUE0123456789abcdefghij";
const CERT_PRIVATE_KEY: &str = "MIIEvQIBADANcertPRIVATEkeyNOTrealBUTunique9876543210zyxwvut";
const PVE_PASSWORD_FILE_SECRET: &str = "file-held-pve-password-31337";

/// The forms a secret could leak in: as is, JSON-escaped, URL-encoded.
fn forms(secret: &str) -> Vec<String> {
    let mut v = vec![secret.to_string()];
    let json = serde_json::to_string(secret).unwrap();
    v.push(json[1..json.len() - 1].to_string());
    let url: String = secret
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    v.push(url);
    v.sort();
    v.dedup();
    v
}

/// A site holding every kind of secret the seed format has.
fn secret_site() -> Site {
    let mut ct = lxc("sec-9870", 170);
    ct["firewall"] = json!({"enabled": true, "rules": [
        {"type": "in", "action": "ACCEPT", "proto": "tcp", "port": "443", "comment": "https"}]});
    let site = Site::new(&[(9870, ct), (9871, lxc("sec-9871", 171))]);
    let mut hv: Value = serde_json::from_str(
        &std::fs::read_to_string(site.root().join("etc/phoenix_hypervisor_config.json")).unwrap(),
    )
    .unwrap();
    hv["portainer_api"] = json!({"admin_user": "admin", "admin_password": PORTAINER_PASSWORD,
                                 "api_key": PORTAINER_API_KEY,
                                 "portainer_hostname": "portainer.lab.example.internal"});
    // Managed DNS: the certificate is validated through it (dns-01), there being no gateway.
    hv["dns_server"] = json!({"enabled": true, "upstream_servers": ["192.0.2.1"]});
    site.write("etc/phoenix_hypervisor_config.json", &hv);
    site.write(
        "etc/phoenix_stacks_config.json",
        &json!({"docker_compose_stacks": {"app": {
            "description": "an app", "compose_file_path": "stacks/app/docker-compose.yml",
            "environments": {"production": {"variables": [
                {"name": "DATABASE_USER", "value": "app"},
                {"name": "DATABASE_PASS", "value": STACK_PASSWORD}]}}}}}),
    );
    let certs = site.root().join("etc/certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::write(
        certs.join("acme-account.key"),
        format!(
            "-----BEGIN EC PRIVATE KEY-----\n{ACME_ACCOUNT_KEY}\n-----END EC PRIVATE KEY-----\n"
        ),
    )
    .unwrap();
    std::fs::write(
        certs.join("web.key"),
        format!("-----BEGIN PRIVATE KEY-----\n{CERT_PRIVATE_KEY}\n-----END PRIVATE KEY-----\n"),
    )
    .unwrap();
    site.write(
        "etc/certificate-manifest.json",
        &json!([{"common_name": "web.lab.example.internal",
                 "cert_path": certs.join("web.crt").display().to_string(),
                 "key_path": certs.join("web.key").display().to_string(),
                 "owner": "root:root", "permissions": "600"}]),
    );
    site
}

fn every_file_under(dir: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                every_file_under(&p, out);
            } else {
                out.push(p);
            }
        }
    }
}

#[test]
fn no_secret_in_any_byte_phoenix_writes() {
    let pw = PrivateWorld::start(&[]);
    let site = secret_site();
    let token_secret = pw.world.token.split_once('=').unwrap().1.to_string();
    let password = pw.world.password.clone();
    // The password login reads its secret from a file (0600).
    let pwfile = site.root().join("pve-password");
    std::fs::write(&pwfile, PVE_PASSWORD_FILE_SECRET).unwrap();
    std::fs::set_permissions(&pwfile, std::fs::Permissions::from_mode(0o600)).unwrap();

    let mut secrets: Vec<(&str, String)> = vec![
        ("Portainer admin password", PORTAINER_PASSWORD.into()),
        ("Portainer API key", PORTAINER_API_KEY.into()),
        ("stack variable", STACK_PASSWORD.into()),
        ("ACME account key", ACME_ACCOUNT_KEY.into()),
        ("certificate private key", CERT_PRIVATE_KEY.into()),
        ("PVE token secret", token_secret.clone()),
        ("PVE password", password.clone()),
    ];
    let plan_file = site.root().join("tonight.plan");
    let plan_path = plan_file.display().to_string();
    let runs: Vec<(Vec<&str>, &str)> = vec![
        (vec!["validate", "-v"], "token"),
        (vec!["plan", "-v"], "token"),
        (vec!["plan", "--json"], "token"),
        (vec!["plan", "--format", "markdown"], "token"),
        (vec!["plan", "--out", &plan_path], "token"),
        (vec!["apply", &plan_path], "password"),
        (vec!["drift", "--json"], "password-file"),
        (vec!["plan", "--detailed-exitcode"], "password"),
        (vec!["state", "list"], "token"),
        (vec!["state", "show", "lxc.9870"], "token"),
        (vec!["graph"], "token"),
        (vec!["status", "--json"], "token"),
        (vec!["apply", "--auto-approve"], "token"),
    ];
    let mut written = Vec::new();
    let mut bytes = 0usize;
    for (args, auth) in &runs {
        let mut c = pw.std_cmd(&site, args);
        c.env("PHOENIX_LOG", "debug").stdin(Stdio::null());
        // The certificate is issued for real (a pebble), so its new key is a secret to look for too.
        c.envs(crate::support::pebble::shared().env());
        match *auth {
            "password" => {
                c.env_remove("PHOENIX_PVE_TOKEN")
                    .env("PHOENIX_PVE_USER", &pw.world.user)
                    .env("PHOENIX_PVE_PASSWORD", &password);
            }
            "password-file" => {
                // The fake knows only its own password: this run is refused, and says so without echoing it.
                c.env_remove("PHOENIX_PVE_TOKEN")
                    .env("PHOENIX_PVE_USER", &pw.world.user)
                    .env("PHOENIX_PVE_PASSWORD_FILE", &pwfile);
            }
            _ => {}
        }
        let out = c.output().unwrap();
        if *auth != "password-file" {
            assert!(
                matches!(out.status.code(), Some(0 | 2)),
                "{args:?}: {}",
                stderr(&out)
            );
        }
        written.push((format!("stdout of {args:?}"), out.stdout.clone()));
        written.push((format!("stderr of {args:?}"), out.stderr.clone()));
    }
    secrets.push(("PVE password file", PVE_PASSWORD_FILE_SECRET.into()));
    // The key phoenix generated for the certificate, where the host (PHOENIX_HOST_ROOT) has it.
    let issued = crate::support::fakepve::world().dir.join("host").join(
        site.root()
            .join("etc/certs/web.key")
            .strip_prefix("/")
            .unwrap(),
    );
    let issued = std::fs::read_to_string(&issued).unwrap();
    let body: String = issued.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(
        body.len() > 100 && !body.contains(CERT_PRIVATE_KEY),
        "{issued}"
    );
    // Past the PKCS#8 header every P-256 key shares (the ACME account key has it too).
    secrets.push(("issued certificate key", body[56..96].to_string()));
    // Every file phoenix left under the site but the ones we wrote ourselves.
    let ours = ["etc/", "stacks/", "pve-password"];
    let mut files = Vec::new();
    every_file_under(site.root(), &mut files);
    for f in files {
        let rel = f.strip_prefix(site.root()).unwrap().display().to_string();
        if ours.iter().any(|o| rel.starts_with(o)) {
            continue;
        }
        written.push((rel, std::fs::read(&f).unwrap()));
    }
    let names: Vec<&String> = written.iter().map(|(n, _)| n).collect();
    for must in [
        "state/phoenix.state.json",
        "state/phoenix.state.json.backup",
        "tonight.plan",
    ] {
        assert!(
            names.iter().any(|n| *n == must),
            "{must} was written: {names:?}"
        );
    }
    let mut hits = Vec::new();
    for (name, content) in &written {
        bytes += content.len();
        let text = String::from_utf8_lossy(content);
        for (what, secret) in &secrets {
            for form in forms(secret) {
                if text.contains(&form) {
                    hits.push(format!("{what} in {name}"));
                }
            }
        }
    }
    report(
        "security_secrets",
        json!({"secrets": secrets.len(), "outputs_and_files": written.len(), "bytes_searched": bytes,
               "hits": hits.len()}),
    );
    assert!(hits.is_empty(), "secrets leaked: {hits:?}");
}

#[test]
fn tls_is_verified_and_a_wrong_ca_says_how_to_fix_it() {
    let pw = PrivateWorld::start(&[]);
    let other = crate::support::fakepve::world(); // another CA altogether
    let site = Site::new(&[(9872, lxc("tls-9872", 172))]);
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        (
            "a CA that did not sign the server",
            Some(other.ca_file.display().to_string()),
            "PHOENIX_PVE_CA_FILE",
        ),
        ("the system's roots", None, "PHOENIX_PVE_CA_FILE"),
    ];
    for (what, ca, want) in cases {
        let mut c = pw.cmd(&site, &["plan"]);
        match &ca {
            Some(f) => c.env("PHOENIX_PVE_CA_FILE", f),
            None => c.env_remove("PHOENIX_PVE_CA_FILE"),
        };
        let out = c.output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{what}: {err}");
        assert!(err.contains("certificate"), "{what}: {err}");
        assert!(err.contains("help:") && err.contains(want), "{what}: {err}");
    }
    // A CA file that is no certificate, and plain http: refused, with the reason.
    let junk = site.root().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let out = pw
        .cmd(&site, &["plan"])
        .env("PHOENIX_PVE_CA_FILE", &junk)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("junk.pem"), "{}", stderr(&out));
    let out = pw
        .cmd(&site, &["plan"])
        .env(
            "PHOENIX_PVE_URL",
            pw.world.url.replace("https://", "http://"),
        )
        .output()
        .unwrap();
    assert!(
        stderr(&out).contains("must be an https:// address"),
        "{}",
        stderr(&out)
    );
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn files_are_0600_whatever_the_umask_and_exposed_ones_are_refused_or_warned_about() {
    let pw = PrivateWorld::start(&[]);
    let site = Site::new(&[(9873, lxc("mode-9873", 173))]);
    let plan = site.root().join("p.plan");
    // Under umask 000, as a careless CI runner might have it.
    let run_umask0 = |args: &[&str]| {
        let bin = assert_cmd::cargo::cargo_bin("phoenix");
        let mut c = pw.std_cmd(&site, args);
        let inner: Vec<String> = std::iter::once(bin.display().to_string())
            .chain(c.get_args().map(|a| a.to_string_lossy().into_owned()))
            .collect();
        let mut sh = std::process::Command::new("sh");
        sh.arg("-c")
            .arg("umask 000; exec \"$@\"")
            .arg("sh")
            .args(&inner);
        for (k, v) in c.get_envs() {
            match v {
                Some(v) => sh.env(k, v),
                None => sh.env_remove(k),
            };
        }
        c = sh;
        let out = c.output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    };
    run_umask0(&["plan", "--out", plan.to_str().unwrap()]);
    run_umask0(&["apply", plan.to_str().unwrap()]);
    let mut e = lxc("mode-9873", 173);
    e["cores"] = json!(2);
    site.set_lxcs(&[(9873, e)]);
    run_umask0(&["apply", "--auto-approve"]);
    let state = site.state_path();
    let files = [
        state.clone(),
        site.root().join("state/phoenix.state.json.backup"),
        site.root().join("state/phoenix.state.json.key"),
        site.root().join("state/phoenix.state.json.lock"),
        plan.clone(),
    ];
    let modes: Vec<(String, u32)> = files
        .iter()
        .map(|f| {
            (
                f.file_name().unwrap().to_string_lossy().into_owned(),
                mode(f),
            )
        })
        .collect();
    assert!(modes.iter().all(|(_, m)| *m == 0o600), "{modes:?}");

    // A state readable by others: every command warns, loudly, with the fix.
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = pw.cmd(&site, &["plan"]).output().unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning") && err.contains("readable by others") && err.contains("chmod 600"),
        "{err}"
    );
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o600)).unwrap();

    // A key readable by others is refused.
    let key = site.root().join("state/phoenix.state.json.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let out = pw.cmd(&site, &["plan"]).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("readable by others") && err.contains("chmod 600"),
        "{err}"
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

    // A saved plan readable by others is applied with a warning (it holds no secret).
    let p2 = site.root().join("p2.plan");
    pw.cmd(&site, &["plan", "--out", p2.to_str().unwrap()])
        .assert()
        .success();
    std::fs::set_permissions(&p2, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = pw
        .cmd(&site, &["apply", p2.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        stderr(&out).contains("readable by others"),
        "{}",
        stderr(&out)
    );

    // A token file readable by others is refused; 0600 is used.
    let tf = site.root().join("token");
    std::fs::write(&tf, &pw.world.token).unwrap();
    std::fs::set_permissions(&tf, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = pw
        .cmd(&site, &["plan"])
        .env_remove("PHOENIX_PVE_TOKEN")
        .env("PHOENIX_PVE_TOKEN_FILE", &tf)
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("readable by others") && err.contains("chmod 600"),
        "{err}"
    );
    std::fs::set_permissions(&tf, std::fs::Permissions::from_mode(0o600)).unwrap();
    pw.cmd(&site, &["plan"])
        .env_remove("PHOENIX_PVE_TOKEN")
        .env("PHOENIX_PVE_TOKEN_FILE", &tf)
        .assert()
        .success();
    let shown: Vec<String> = modes.iter().map(|(f, m)| format!("{f} {m:04o}")).collect();
    report(
        "security_file_modes",
        json!({"files_created": shown, "umask": "000"}),
    );
}
