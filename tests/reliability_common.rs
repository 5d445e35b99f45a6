//! Shared by the `reliability_*` modules (issue 6): a private fake PVE per
//! test (faults, lost quorum or a dead node would hit every other test of the
//! binary in the shared world), the 30+ resource site the crash and race
//! harnesses apply, the invariants checked after every kill, and the knobs
//! (`PHOENIX_REL_*`) that turn the quick CI variants into the full runs of
//! `scripts/reliability`.
//!
//! Guest ids: 800-899 and 9800-9899 (801 and 802 are never used: the seed-copy
//! test owns them in the shared world).

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{Site, TEMPLATE, lxc};
use crate::support::fakepve::World;

// ---------------------------------------------------------------- knobs

/// A count from the environment (the full runs set them), else the CI default.
pub fn knob(name: &str, ci_default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(ci_default)
}

/// A reproducible seed: `PHOENIX_REL_SEED`, else one from the clock (printed, so a failure can be replayed).
pub fn seed() -> u64 {
    knob(
        "PHOENIX_REL_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(42),
    )
}

/// A small, dependency-free PRNG (xorshift64*), so trials replay from their seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1) ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `lo..hi` (hi exclusive; `lo` when empty).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            lo
        } else {
            lo + self.next() % (hi - lo)
        }
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.range(0, 100) < percent
    }
}

/// One line of figures for `docs/reliability.md`: printed, and appended as
/// JSON to `$PHOENIX_REL_REPORT` when the full run sets it.
pub fn report(category: &str, figures: Value) {
    let line = json!({"category": category, "figures": figures});
    eprintln!("RELIABILITY {line}");
    if let Ok(path) = std::env::var("PHOENIX_REL_REPORT") {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open PHOENIX_REL_REPORT");
        writeln!(f, "{line}").expect("write PHOENIX_REL_REPORT");
    }
}

// ------------------------------------------------------ a private world

static NEXT_WORLD: AtomicU32 = AtomicU32::new(0);

/// A fake PVE of the calling test's own, on `127.0.1.N` (the shared world
/// lives on `127.0.0.N`). It stops when dropped: its stdin reaches EOF.
pub struct PrivateWorld {
    pub world: World,
    dir: PathBuf,
    child: Child,
    stdin: Option<ChildStdin>,
    log: Arc<Mutex<String>>,
}

impl PrivateWorld {
    /// Start one; `args` go to `lab/fakepve/world.py` (e.g. `--time-scale 0.01`).
    pub fn start(args: &[&str]) -> PrivateWorld {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let python = std::env::var_os("PHOENIX_FAKEPVE_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo.join(".venv/bin/python"));
        let pid = std::process::id();
        for _ in 0..60 {
            let n = NEXT_WORLD.fetch_add(1, Ordering::SeqCst);
            let host = format!("127.0.1.{}", 10 + (pid.wrapping_mul(7) + n) % 240);
            if [8006, 8007]
                .iter()
                .any(|p| TcpListener::bind((host.as_str(), *p)).is_err())
            {
                continue;
            }
            let dir = std::env::temp_dir().join(format!("phoenix-rel-fakepve-{pid}-{n}"));
            let _ = std::fs::remove_dir_all(&dir);
            let mut child = Command::new(&python)
                .arg(repo.join("lab/fakepve/world.py"))
                .args(["--host", &host, "--remove-state-dir", "--state-dir"])
                .arg(&dir)
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("fakepve: cannot run {}: {e}", python.display()));
            let log = Arc::new(Mutex::new(String::new()));
            let mut err = child.stderr.take().unwrap();
            let sink = log.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = err.read(&mut buf) {
                    sink.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
            let (tx, rx) = mpsc::channel();
            let out = child.stdout.take().unwrap();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if let Some(p) = line.strip_prefix("READY ") {
                        let _ = tx.send(Some(PathBuf::from(p)));
                    }
                }
                let _ = tx.send(None);
            });
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(Some(path)) => {
                    let text = std::fs::read_to_string(&path).unwrap();
                    let world: World = serde_json::from_str(&text).unwrap();
                    let stdin = child.stdin.take();
                    return PrivateWorld {
                        world,
                        dir,
                        child,
                        stdin,
                        log,
                    };
                }
                Ok(None) => {
                    let status = child.wait().unwrap();
                    if status.code() == Some(75) {
                        continue; // the address was taken meanwhile
                    }
                    panic!(
                        "fakepve exited ({status}) before it was ready:\n{}",
                        log.lock().unwrap()
                    );
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("fakepve not ready in 60 s:\n{}", log.lock().unwrap());
                }
            }
        }
        panic!("no free 127.0.1.x address for a private fakepve");
    }

    pub fn control(&self, path: &str, body: &Value) -> Value {
        self.world.control(path, body)
    }

    /// Call a public method of FakePve (`lose_quorum`, `set_node_offline`, ...).
    pub fn call(&self, name: &str, args: Value) -> Value {
        self.control("/call", &json!({"name": name, "args": args}))
    }

    pub fn requests(&self) -> Vec<(String, String, String)> {
        self.world.requests()
    }

    pub fn clear_requests(&self) {
        self.control("/requests/clear", &json!({}));
    }

    pub fn server_log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// `phoenix --root <site> --no-color ARGS` over HTTPS to this world.
    pub fn cmd(&self, site: &Site, args: &[&str]) -> assert_cmd::Command {
        let mut c = site.cmd(args);
        for k in [
            "PHOENIX_PVE_TRANSPORT",
            "PHOENIX_PVESH",
            "PHOENIX_SSH",
            "PHOENIX_PVESH_WORLD",
            "PHOENIX_LOG",
        ] {
            c.env_remove(k);
        }
        for (k, v) in self.world.env() {
            c.env(k, v);
        }
        c
    }

    /// The same as a std Command, for spawning, signalling and killing.
    pub fn std_cmd(&self, site: &Site, args: &[&str]) -> Command {
        let mut c = site.std_cmd(args);
        for k in [
            "PHOENIX_PVE_TRANSPORT",
            "PHOENIX_PVESH",
            "PHOENIX_SSH",
            "PHOENIX_PVESH_WORLD",
            "PHOENIX_LOG",
            "PHOENIX_ROOT",
            "PHOENIX_STATE",
        ] {
            c.env_remove(k);
        }
        for (k, v) in self.world.env() {
            c.env(k, v);
        }
        c
    }

    /// [`PrivateWorld::std_cmd`] through a transport: over HTTPS as it is, or
    /// with `pvesh` (lab/fakepve/pvesh, forwarding to this world) run locally
    /// or behind the fake `ssh` (lab/fakepve/ssh), as `scripts/test` runs the
    /// shared world's tests.
    pub fn std_cmd_via(&self, site: &Site, args: &[&str], t: Transport) -> Command {
        let mut c = self.std_cmd(site, args);
        let via = match t {
            Transport::Https => return c,
            Transport::Pvesh => "pvesh",
            Transport::Ssh => "ssh://root@127.0.0.1",
        };
        let lab = Path::new(env!("CARGO_MANIFEST_DIR")).join("lab/fakepve");
        for k in [
            "PHOENIX_PVE_URL",
            "PHOENIX_PVE_TOKEN",
            "PHOENIX_PVE_CA_FILE",
        ] {
            c.env_remove(k);
        }
        c.env("PHOENIX_PVE_TRANSPORT", via)
            .env("PHOENIX_PVESH", lab.join("pvesh"))
            .env("PHOENIX_SSH", lab.join("ssh"))
            .env("PHOENIX_PVESH_URL", &self.world.url)
            .env("PHOENIX_PVESH_TOKEN", &self.world.token)
            .env("PHOENIX_PVESH_CA", &self.world.ca_file);
        c
    }

    /// A blocking API client for this world, for looking behind phoenix's back.
    pub fn api(&self) -> Api {
        let ca = std::fs::read(&self.world.ca_file).unwrap();
        Api {
            http: reqwest::blocking::Client::builder()
                .tls_certs_only(reqwest::Certificate::from_pem_bundle(&ca).unwrap())
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            url: self.world.url.clone(),
            token: self.world.token.clone(),
            node: self.world.node.clone(),
        }
    }
}

impl Drop for PrivateWorld {
    fn drop(&mut self) {
        drop(self.stdin.take()); // EOF: world.py stops and removes its state dir
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Still serving requests held by a hang fault: stop it (our own child, by
        // its handle) and remove what it wrote, as it would have.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// How phoenix reaches a private world.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Https,
    Pvesh,
    Ssh,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Https => "https",
            Transport::Pvesh => "pvesh",
            Transport::Ssh => "ssh",
        }
    }
}

pub struct Api {
    http: reqwest::blocking::Client,
    url: String,
    token: String,
    pub node: String,
}

impl Api {
    pub fn get(&self, path: &str) -> Value {
        let r = self
            .http
            .get(format!("{}/api2/json{path}", self.url))
            .header("Authorization", format!("PVEAPIToken={}", self.token))
            .send()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = r.status();
        let v: Value = r.json().unwrap_or(Value::Null);
        assert!(status.is_success(), "GET {path}: {status} {v}");
        v["data"].clone()
    }

    /// Guest ids that exist.
    pub fn guests(&self) -> BTreeSet<u32> {
        self.get("/cluster/resources?type=vm")
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|g| g["vmid"].as_u64().map(|v| v as u32))
            .collect()
    }

    /// Whether a container's firewall holds rules or options (so it "exists" for phoenix).
    pub fn lxc_firewall_exists(&self, vmid: u32) -> bool {
        let rules = self.get(&format!("/nodes/{}/lxc/{vmid}/firewall/rules", self.node));
        let opts = self.get(&format!("/nodes/{}/lxc/{vmid}/firewall/options", self.node));
        rules.as_array().is_some_and(|r| !r.is_empty())
            || opts.get("enable").is_some_and(|e| !e.is_null())
    }

    pub fn lxc_snapshots(&self, vmid: u32) -> Vec<String> {
        self.get(&format!("/nodes/{}/lxc/{vmid}/snapshot", self.node))
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["name"].as_str().map(str::to_string))
            .filter(|n| n != "current")
            .collect()
    }
}

// ------------------------------------------------------------ the site

/// The crash/race site: 30 containers (803..=832) of which every fifth has a
/// firewall with two rules, and 803 is a clone source with a template
/// snapshot that 804 is cloned from: 30 lxc + 6 firewall + 1 snapshot = 37
/// resources, with dependencies (804 waits for 803 and its snapshot).
pub fn big_site_lxcs(memory: u64) -> Vec<(u32, Value)> {
    let mut out = Vec::new();
    for id in 803..=832u32 {
        let mut ct = lxc(&format!("rel-{id}"), id - 700);
        ct["memory_mb"] = json!(memory);
        if id % 5 == 0 {
            ct["firewall"] = json!({"enabled": true, "rules": [
                {"type": "in", "action": "ACCEPT", "proto": "tcp", "port": "22", "comment": "ssh"},
                {"type": "in", "action": "ACCEPT", "proto": "tcp", "port": "443", "comment": "https"}
            ]});
        }
        if id == 803 {
            ct["template_snapshot_name"] = json!("golden");
        }
        if id == 804 {
            let o = ct.as_object_mut().unwrap();
            o.remove("template");
            o.insert("clone_from_ctid".into(), json!(803));
        }
        out.push((id, ct));
    }
    out
}

pub const BIG_IDS: std::ops::RangeInclusive<u32> = 803..=832;

/// The addresses of the big site.
pub fn big_site_addresses() -> BTreeSet<String> {
    let mut a: BTreeSet<String> = BIG_IDS.map(|i| format!("lxc.{i}")).collect();
    a.extend(
        BIG_IDS
            .filter(|i| i % 5 == 0)
            .map(|i| format!("firewall.{i}")),
    );
    a.insert("snapshot.803.golden".into());
    a
}

pub fn template() -> &'static str {
    TEMPLATE
}

// ---------------------------------------------------- state invariants

/// What the files of the state say, read by the test itself.
pub struct StateView {
    pub resources: BTreeSet<String>,
    pub pending: BTreeSet<String>,
    pub serial: u64,
}

pub fn read_state(path: &Path) -> Option<StateView> {
    let text = std::fs::read_to_string(path).ok()?;
    let v: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}\n{text}", path.display()));
    Some(StateView {
        resources: v["resources"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default(),
        pending: v["pending"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| p["address"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        serial: v["serial"].as_u64().unwrap_or(0),
    })
}

/// The objects of the big site that exist in the world now.
pub fn live_objects(api: &Api) -> BTreeSet<String> {
    let guests = api.guests();
    let mut out = BTreeSet::new();
    for id in BIG_IDS {
        if !guests.contains(&id) {
            continue;
        }
        out.insert(format!("lxc.{id}"));
        if id % 5 == 0 && api.lxc_firewall_exists(id) {
            out.insert(format!("firewall.{id}"));
        }
        if id == 803 && api.lxc_snapshots(803).iter().any(|s| s == "golden") {
            out.insert("snapshot.803.golden".into());
        }
    }
    out
}

/// Count create requests per container id in the world's request log: the
/// POSTs that create (`/lxc` with `vmid=`) or clone (`/lxc/<src>/clone` with `newid=`).
pub fn creates_per_guest(requests: &[(String, String, String)]) -> BTreeMap<u32, usize> {
    let mut out = BTreeMap::new();
    for (m, p, body) in requests {
        if m != "POST" {
            continue;
        }
        let field = if p.ends_with("/lxc") || p.ends_with("/qemu") {
            "vmid"
        } else if p.ends_with("/clone") {
            "newid"
        } else {
            continue;
        };
        if let Some(id) = form_field(body, field).and_then(|v| v.parse::<u32>().ok()) {
            *out.entry(id).or_default() += 1;
        }
    }
    out
}

/// Snapshots taken (`POST .../snapshot`) per guest.
pub fn snapshots_taken(requests: &[(String, String, String)]) -> usize {
    requests
        .iter()
        .filter(|(m, p, _)| m == "POST" && p.ends_with("/lxc/803/snapshot"))
        .count()
}

/// A field of a recorded request body (form-encoded or JSON).
pub fn form_field(body: &str, field: &str) -> Option<String> {
    if let Ok(v) = serde_json::from_str::<Value>(body)
        && let Some(x) = v.get(field)
    {
        return Some(match x {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        });
    }
    body.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == field).then(|| v.to_string())
    })
}

/// Run a command to its end within `limit`, killing it (by its own handle) past that.
pub fn run_bounded(mut cmd: Command, limit: Duration) -> (Option<i32>, String, String, Duration) {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = drain(child.stdout.take().unwrap());
    let err = drain(child.stderr.take().unwrap());
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let elapsed = start.elapsed();
            return (status.code(), out.join(), err.join(), elapsed);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return (None, out.join(), err.join(), start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A pipe read to its end in a thread.
pub struct Drain(std::thread::JoinHandle<String>);

impl Drain {
    pub fn join(self) -> String {
        self.0.join().unwrap_or_default()
    }
}

pub fn drain(mut r: impl Read + Send + 'static) -> Drain {
    Drain(std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = r.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    }))
}

/// Send a signal to a child we started (by its pid, never by name).
pub fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "kill -{sig} {}", child.id());
}

/// No panic, no backtrace, and an error that says what to do next.
pub fn is_clean_failure(code: Option<i32>, stderr: &str) -> bool {
    code == Some(1)
        && !stderr.contains("panicked")
        && !stderr.contains("RUST_BACKTRACE")
        && stderr.contains("error")
        && stderr.contains("help:")
}
