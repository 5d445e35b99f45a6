//! A temp site per test, a `phoenix` command pointed at it and at the world,
//! and a PVE client for making changes "outside phoenix".

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::support::fakepve::{World, world};

pub struct Site {
    pub dir: tempfile::TempDir,
}

pub const TEMPLATE: &str = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst";

/// An LXC entry in the seed format.
pub fn lxc(name: &str, last_octet: u32) -> Value {
    json!({
        "name": name,
        "memory_mb": 512,
        "cores": 1,
        "template": TEMPLATE,
        "storage_pool": "local-lvm",
        "storage_size_gb": 4,
        "network_config": {"name": "eth0", "bridge": "vmbr0", "ip": format!("192.0.2.{last_octet}/24"), "gw": "192.0.2.1"},
        "unprivileged": true,
        "start_at_boot": true,
        "boot_order": 2,
        "boot_delay": 5
    })
}

impl Site {
    /// A site with these LXC entries, keyed by ctid.
    pub fn new(lxcs: &[(u32, Value)]) -> Site {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        let site = Site { dir };
        site.write("etc/phoenix_hypervisor_config.json", &json!({
            "domain_name": "lab.example.internal",
            "network": {"interfaces": {"name": "vmbr0", "address": "192.0.2.13/24", "gateway": "192.0.2.1", "dns_nameservers": ["192.0.2.13"]}}
        }));
        site.write("etc/phoenix_vm_configs.json", &json!({"vms": []}));
        site.set_lxcs(lxcs);
        site
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn state_path(&self) -> PathBuf {
        self.root().join("state/phoenix.state.json")
    }

    pub fn write(&self, rel: &str, v: &Value) {
        std::fs::write(
            self.root().join(rel),
            serde_json::to_string_pretty(v).unwrap(),
        )
        .unwrap();
    }

    pub fn set_lxcs(&self, lxcs: &[(u32, Value)]) {
        let map: serde_json::Map<String, Value> = lxcs
            .iter()
            .map(|(id, v)| (id.to_string(), v.clone()))
            .collect();
        self.write("etc/phoenix_lxc_configs.json", &json!({"lxc_configs": map}));
    }

    /// `phoenix --root <site> --no-color ARGS`, with the world's environment.
    pub fn cmd(&self, args: &[&str]) -> assert_cmd::Command {
        let mut c = assert_cmd::Command::cargo_bin("phoenix").unwrap();
        c.arg("--root")
            .arg(self.root())
            .arg("--no-color")
            .args(args);
        for (k, v) in transport_env() {
            c.env(k, v);
        }
        c.env_remove("RUST_BACKTRACE")
            .env_remove("PHOENIX_ROOT")
            .env_remove("PHOENIX_STATE");
        c
    }

    /// Like [`Site::cmd`], but always over HTTPS, for tests of the HTTPS transport itself.
    pub fn https_cmd(&self, args: &[&str]) -> assert_cmd::Command {
        let mut c = self.cmd(args);
        for k in [
            "PHOENIX_PVE_TRANSPORT",
            "PHOENIX_PVESH",
            "PHOENIX_SSH",
            "PHOENIX_PVESH_WORLD",
            "PHOENIX_PVESH_URL",
            "PHOENIX_PVESH_TOKEN",
            "PHOENIX_PVESH_CA",
        ] {
            c.env_remove(k);
        }
        for (k, v) in world().env() {
            c.env(k, v);
        }
        c
    }

    /// The same as a std Command, for spawning and killing.
    pub fn std_cmd(&self, args: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("phoenix"));
        c.arg("--root")
            .arg(self.root())
            .arg("--no-color")
            .args(args);
        for (k, v) in transport_env() {
            c.env(k, v);
        }
        c.env_remove("RUST_BACKTRACE");
        c
    }

    pub fn state(&self) -> Value {
        serde_json::from_str(&std::fs::read_to_string(self.state_path()).unwrap()).unwrap()
    }
}

/// The environment that points phoenix at the world, through the transport
/// named by `PHOENIX_TEST_TRANSPORT`: `https` (default), `pvesh` (a local pvesh
/// that forwards to the fake) or `ssh` (the same pvesh behind a fake ssh).
/// `scripts/test` runs the integration tests once per transport.
pub fn transport_env() -> Vec<(String, String)> {
    let w = world();
    let mut env = w.env();
    let lab = Path::new(env!("CARGO_MANIFEST_DIR")).join("lab/fakepve");
    let transport = std::env::var("PHOENIX_TEST_TRANSPORT").unwrap_or_default();
    let via = match transport.as_str() {
        "" | "https" => return with_host(env, w),
        "pvesh" => "pvesh".to_string(),
        "ssh" => "ssh://root@127.0.0.1".to_string(),
        other => panic!("PHOENIX_TEST_TRANSPORT={other}: use https, pvesh or ssh"),
    };
    env.retain(|(k, _)| k == "PHOENIX_PVE_NODE");
    env.push(("PHOENIX_PVE_TRANSPORT".into(), via));
    env.push((
        "PHOENIX_PVESH".into(),
        lab.join("pvesh").display().to_string(),
    ));
    env.push(("PHOENIX_SSH".into(), lab.join("ssh").display().to_string()));
    env.push((
        "PHOENIX_PVESH_WORLD".into(),
        w.dir.join("world.json").display().to_string(),
    ));
    env.push(("PHOENIX_PVESH_URL".into(), w.url.clone()));
    env.push(("PHOENIX_PVESH_TOKEN".into(), w.token.clone()));
    env.push(("PHOENIX_PVESH_CA".into(), w.ca_file.display().to_string()));
    with_host(env, w)
}

/// The host layer of every test: a host root under the world's dir (never the
/// machine's /etc), the fake pct (lab/host) and a reload that does nothing.
/// Tests of the host layer (`host_*`) give each test a host of its own.
fn with_host(mut env: Vec<(String, String)>, w: &World) -> Vec<(String, String)> {
    let lab = Path::new(env!("CARGO_MANIFEST_DIR")).join("lab/host");
    env.push((
        "PHOENIX_HOST_ROOT".into(),
        w.dir.join("host").display().to_string(),
    ));
    env.push(("PHOENIX_PCT".into(), lab.join("pct").display().to_string()));
    env.push(("PHOENIX_DNSMASQ_RELOAD".into(), "true".into()));
    env
}

pub fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A PVE API client of our own, for changing things behind phoenix's back.
pub struct Pve {
    http: reqwest::blocking::Client,
    world: &'static World,
}

impl Pve {
    pub fn new() -> Pve {
        let w = world();
        let ca = std::fs::read(&w.ca_file).unwrap();
        let http = reqwest::blocking::Client::builder()
            .tls_certs_only(reqwest::Certificate::from_pem_bundle(&ca).unwrap())
            .build()
            .unwrap();
        Pve { http, world: w }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api2/json{}", self.world.url, path)
    }

    fn auth(&self) -> String {
        format!("PVEAPIToken={}", self.world.token)
    }

    pub fn get(&self, path: &str) -> Value {
        let r = self
            .http
            .get(self.url(path))
            .header("Authorization", self.auth())
            .send()
            .unwrap();
        let status = r.status();
        let v: Value = r.json().unwrap();
        assert!(status.is_success(), "GET {path}: {status} {v}");
        v["data"].clone()
    }

    pub fn put(&self, path: &str, form: &[(&str, &str)]) -> Value {
        let r = self
            .http
            .put(self.url(path))
            .header("Authorization", self.auth())
            .form(form)
            .send()
            .unwrap();
        let status = r.status();
        let v: Value = r.json().unwrap();
        assert!(status.is_success(), "PUT {path}: {status} {v}");
        v["data"].clone()
    }

    pub fn post(&self, path: &str, form: &[(&str, &str)]) -> Value {
        let r = self
            .http
            .post(self.url(path))
            .header("Authorization", self.auth())
            .form(form)
            .send()
            .unwrap();
        let status = r.status();
        let v: Value = r.json().unwrap();
        assert!(status.is_success(), "POST {path}: {status} {v}");
        v["data"].clone()
    }

    pub fn http_delete(&self, path: &str) -> Value {
        let r = self
            .http
            .delete(self.url(path))
            .header("Authorization", self.auth())
            .send()
            .unwrap();
        let status = r.status();
        let v: Value = r.json().unwrap();
        assert!(status.is_success(), "DELETE {path}: {status} {v}");
        v["data"].clone()
    }

    pub fn node(&self) -> &str {
        &self.world.node
    }

    /// The LXC config as PVE has it.
    pub fn lxc_config(&self, vmid: u32) -> Value {
        self.get(&format!("/nodes/{}/lxc/{vmid}/config", self.node()))
    }

    /// How many guests with this vmid exist.
    pub fn count(&self, vmid: u32) -> usize {
        self.get("/cluster/resources?type=vm")
            .as_array()
            .unwrap()
            .iter()
            .filter(|g| g["vmid"].as_u64() == Some(vmid as u64))
            .count()
    }
}

/// A VM entry in the seed format, built from the world's cloud image (the
/// seed's `template_image`). `"is_template": true` makes it a template.
pub fn vm_from_image(vmid: u32, name: &str, last_octet: u32) -> Value {
    json!({
        "vmid": vmid,
        "name": name,
        "template_image": "noble-server-cloudimg-amd64.img",
        "cores": 1,
        "memory_mb": 1024,
        "storage_pool": "local-lvm",
        "network_config": {"ip": format!("192.0.2.{last_octet}/24"), "gw": "192.0.2.1", "nameserver": "192.0.2.13"},
        "user_config": {"username": "phoenix_user"}
    })
}

/// A VM entry in the seed format: a full clone of `source`.
pub fn vm_clone(vmid: u32, name: &str, source: u32, last_octet: u32) -> Value {
    let mut v = vm_from_image(vmid, name, last_octet);
    let o = v.as_object_mut().unwrap();
    o.remove("template_image");
    o.insert("clone_from_vmid".into(), json!(source));
    v
}

impl Site {
    /// Write `etc/phoenix_vm_configs.json` with these `vms` and the seed's kind of `vm_defaults`.
    pub fn set_vms(&self, vms: &[Value]) {
        self.write(
            "etc/phoenix_vm_configs.json",
            &json!({
                "vm_defaults": {"cores": 2, "memory_mb": 2048, "storage_pool": "local-lvm", "network_bridge": "vmbr0"},
                "vms": vms
            }),
        );
    }
}

impl Pve {
    /// The VM config as PVE has it (the current one, pending changes not applied).
    pub fn vm_config(&self, vmid: u32) -> Value {
        self.get(&format!("/nodes/{}/qemu/{vmid}/config", self.node()))
    }

    /// The config keys of a VM waiting for its next boot.
    pub fn vm_pending_keys(&self, vmid: u32) -> Vec<String> {
        self.get(&format!("/nodes/{}/qemu/{vmid}/pending", self.node()))
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i.get("pending").is_some() || i.get("delete").is_some())
            .map(|i| i["key"].as_str().unwrap().to_string())
            .collect()
    }

    /// `running` or `stopped`.
    pub fn vm_status(&self, vmid: u32) -> String {
        self.get(&format!(
            "/nodes/{}/qemu/{vmid}/status/current",
            self.node()
        ))["status"]
            .as_str()
            .unwrap()
            .to_string()
    }
}
