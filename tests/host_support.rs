//! The host world of the host-layer tests (lab/host/README.md): a host root of
//! its own per test (`PHOENIX_HOST_ROOT`), containers as directories under it
//! reached through the fake `pct`, and the real dnsmasq, nginx, dig and curl.
//! Servers are started per test, on loopback (dnsmasq) or in a network
//! namespace of their own (nginx, `lab/host/gateway-check`), and stopped by the
//! pid they were started with.

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::common::Site;

pub fn lab() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("lab/host")
}

/// One test's host: a temp dir holding the host's files and the containers.
pub struct HostLab {
    /// The dnsmasq started by the reload command, if any. Declared first: it is
    /// stopped (by the pid in its file) before the directory holding that file goes.
    pub dns: Option<Dnsmasq>,
    pub dir: tempfile::TempDir,
}

/// A dnsmasq serving the host root's records file on `127.0.0.1:<port>`,
/// restarted by the reload command phoenix runs.
pub struct Dnsmasq {
    pub port: u16,
    pub pid_file: PathBuf,
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.pid_file) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}

/// A UDP port free on 127.0.0.1 just now (dnsmasq binds TCP too; a clash is unlikely).
fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl HostLab {
    /// The host's /etc/pve is the world's (its container config files: lab/fakepve/pmxcfs.py):
    /// one Proxmox, many hosts' other files.
    pub fn new() -> HostLab {
        let dir = tempfile::tempdir().unwrap();
        let pve = crate::support::fakepve::world().dir.join("host/etc/pve");
        std::fs::create_dir_all(&pve).unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::os::unix::fs::symlink(&pve, dir.path().join("etc/pve")).unwrap();
        HostLab { dns: None, dir }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// `<root>/guests/<id><path>`
    pub fn guest_file(&self, id: u32, path: &str) -> PathBuf {
        self.root().join(format!("guests/{id}{path}"))
    }

    pub fn host_file(&self, path: &str) -> PathBuf {
        self.root().join(path.trim_start_matches('/'))
    }

    fn script(&self, name: &str, args: &[&str]) -> std::process::Output {
        let out = Command::new(lab().join(name))
            .args(args)
            .env("PHOENIX_HOST_ROOT", self.root())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// A container with nginx installed (the gateway).
    pub fn nginx_guest(&self, id: u32) {
        self.script("fakeguest", &["init", &id.to_string(), "--nginx"]);
    }

    pub fn plain_guest(&self, id: u32) {
        self.script("fakeguest", &["init", &id.to_string()]);
    }

    /// A certificate for `names` at `crt`/`key` inside container `id`, signed by this lab's CA.
    pub fn cert(&self, id: u32, crt: &str, key: &str, names: &[&str]) {
        let ca = self.root().join("ca");
        let mut args = vec![
            "cert".to_string(),
            id.to_string(),
            crt.into(),
            key.into(),
            ca.display().to_string(),
        ];
        args.extend(names.iter().map(|n| n.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.script("fakeguest", &args);
    }

    pub fn ca_file(&self) -> PathBuf {
        self.root().join("ca/ca.pem")
    }

    /// `pct exec <id> -- <argv>` through the fake pct.
    pub fn pct_exec(&self, id: u32, argv: &[&str]) -> std::process::Output {
        Command::new(lab().join("pct"))
            .args(["exec", &id.to_string(), "--"])
            .args(argv)
            .env("PHOENIX_HOST_ROOT", self.root())
            .output()
            .unwrap()
    }

    /// Serve the gateway container and ask it for each host (see `lab/host/gateway-check`):
    /// one line per check, keyed `<check> <host>`.
    pub fn gateway_check(
        &self,
        id: u32,
        gw: &str,
        tr: &str,
        hosts: &[&str],
    ) -> BTreeMap<String, String> {
        let mut args = vec![
            id.to_string(),
            gw.into(),
            tr.into(),
            self.ca_file().display().to_string(),
        ];
        args.extend(hosts.iter().map(|h| h.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.script("gateway-check", &args);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let mut p = l.splitn(3, ' ');
                let (check, host, rest) = (p.next()?, p.next()?, p.next().unwrap_or(""));
                Some((format!("{check} {host}"), rest.to_string()))
            })
            .collect()
    }

    /// A reload command that (re)starts a real dnsmasq on the records file, on 127.0.0.1.
    pub fn with_dnsmasq(&mut self) -> String {
        let port = free_port();
        let pid_file = self.root().join("dnsmasq.pid");
        let file = self.host_file("/etc/dnsmasq.d/00-phoenix-internal.conf");
        let script = self.root().join("reload-dnsmasq");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\n\
                 # Restart the test's own dnsmasq (the pid file is ours).\n\
                 if [ -s {pid} ]; then pid=$(cat {pid}); kill \"$pid\" 2>/dev/null; \
                 while kill -0 \"$pid\" 2>/dev/null; do sleep 0.05; done; fi\n\
                 exec dnsmasq --conf-file={file} --no-resolv --no-hosts --bind-interfaces \
                 --listen-address=127.0.0.1 --port={port} --pid-file={pid} --user={user}\n",
                pid = pid_file.display(),
                file = file.display(),
                user = whoami(),
            ),
        )
        .unwrap();
        make_executable(&script);
        self.dns = Some(Dnsmasq { port, pid_file });
        script.display().to_string()
    }

    /// `dig +short` at the test's dnsmasq.
    pub fn dig(&self, name: &str) -> String {
        let port = self.dns.as_ref().expect("with_dnsmasq first").port;
        dig(port, name)
    }

    /// The environment phoenix needs to reach this host.
    pub fn env(&self, reload: &str) -> Vec<(String, String)> {
        vec![
            (
                "PHOENIX_HOST_ROOT".into(),
                self.root().display().to_string(),
            ),
            (
                "PHOENIX_PCT".into(),
                lab().join("pct").display().to_string(),
            ),
            ("PHOENIX_DNSMASQ_RELOAD".into(), reload.to_string()),
        ]
    }

    /// `phoenix ARGS` for `site` on this host.
    pub fn cmd(&self, site: &Site, reload: &str, args: &[&str]) -> assert_cmd::Command {
        let mut c = site.cmd(args);
        for (k, v) in self.env(reload) {
            c.env(k, v);
        }
        c.env_remove("PHOENIX_HOST");
        c
    }
}

pub fn dig(port: u16, name: &str) -> String {
    let out = Command::new("dig")
        .args([
            "+short",
            "+time=2",
            "+tries=2",
            "@127.0.0.1",
            "-p",
            &port.to_string(),
            name,
        ])
        .output()
        .expect("dig (scripts/setup installs dnsutils)");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn whoami() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn make_executable(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A site with an ingress (gateway `gw`, Traefik `gw + 1`), DNS managed, and
/// `apps`: (ctid, name, traefik_service name, port). The gateway reads its
/// certificate through a bind mount of `/srv/phoenix-test/certs`.
pub fn ingress_site(gw: u32, octet: u32, apps: &[(u32, &str, &str, u16)]) -> Site {
    let mut lxcs = vec![
        (gw, gateway(gw, octet)),
        (
            gw + 1,
            crate::common::lxc(&format!("traefik-{}", gw + 1), octet + 1),
        ),
    ];
    for (i, (id, name, ts, port)) in apps.iter().enumerate() {
        let mut c = crate::common::lxc(name, octet + 2 + i as u32);
        c["traefik_service"] = json!({"name": ts, "port": port});
        lxcs.push((*id, c));
    }
    let site = Site::new(&lxcs);
    set_hypervisor(&site, gw);
    site
}

pub fn gateway(gw: u32, octet: u32) -> Value {
    let mut c = crate::common::lxc(&format!("gateway-{gw}"), octet);
    c["mount_points"] =
        json!([{"host_path": "/srv/phoenix-test/certs", "container_path": "/etc/nginx/ssl"}]);
    c
}

pub fn set_hypervisor(site: &Site, gw: u32) {
    site.write(
        "etc/phoenix_hypervisor_config.json",
        &json!({
            "domain_name": "lab.example.internal",
            "network": {"interfaces": {"name": "vmbr0", "address": "192.0.2.13/24", "gateway": "192.0.2.1", "dns_nameservers": ["192.0.2.13"]}},
            "dns_server": {"enabled": true, "upstream_servers": ["192.0.2.1"]},
            "ingress": {"gateway": gw, "traefik": gw + 1}
        }),
    );
    site.write(
        "etc/certificate-manifest.json",
        &json!([{
            "common_name": "gateway.lab.example.internal",
            "sans": ["*.lab.example.internal"],
            "cert_path": "/srv/phoenix-test/certs/gateway.crt",
            "key_path": "/srv/phoenix-test/certs/gateway.key",
            "owner": "root:root",
            "permissions": "600"
        }]),
    );
}
