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
        for (k, v) in world().env() {
            c.env(k, v);
        }
        c.env_remove("RUST_BACKTRACE")
            .env_remove("PHOENIX_ROOT")
            .env_remove("PHOENIX_STATE");
        c
    }

    /// The same as a std Command, for spawning and killing.
    pub fn std_cmd(&self, args: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("phoenix"));
        c.arg("--root")
            .arg(self.root())
            .arg("--no-color")
            .args(args);
        for (k, v) in world().env() {
            c.env(k, v);
        }
        c.env_remove("RUST_BACKTRACE");
        c
    }

    pub fn state(&self) -> Value {
        serde_json::from_str(&std::fs::read_to_string(self.state_path()).unwrap()).unwrap()
    }
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
