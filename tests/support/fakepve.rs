//! The fake Proxmox VE API (fakepve, through `lab/fakepve/world.py`), started once per test binary.
//!
//! [`world()`] starts the launcher the first time it is called, on a loopback address of its own
//! (`127.0.0.N:8006`, N from the process id), and returns the same [`World`] after that. Tests in one
//! process share it, so each test uses its own vmids. The launcher exits when its stdin reaches end of
//! file; this process holds the write end of that pipe until it exits, so a test binary that ends in
//! any way (even a crash) never leaves a fake behind. The launcher also removes its state dir then.
//! Under cargo-nextest every test is a process, so every test gets a fresh world (about 0.7 s).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::Duration;

use serde::Deserialize;

const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// world.py's exit status when its address is taken: the next address is tried.
const EXIT_ADDRESS_IN_USE: i32 = 75;
const ADDRESSES: u32 = 200;
const ATTEMPTS: u32 = 20;

/// A running fake PVE, as its `world.json` describes it.
#[derive(Debug, Deserialize)]
pub struct World {
    /// `https://127.0.0.N:8006`.
    pub url: String,
    pub node: String,
    /// The CA that signed the server's certificate: verify TLS against it.
    pub ca_file: PathBuf,
    /// `root@pam!phoenix=SECRET`, for `Authorization: PVEAPIToken=...`.
    pub token: String,
    /// The password login, `root@pam`.
    pub user: String,
    pub password: String,
    /// The plain-HTTP control channel (lab/fakepve/README.md).
    #[serde(default)]
    pub control_url: Option<String>,
    /// The state dir: ca.pem, server.crt, server.key, world.json.
    #[serde(rename = "state_dir")]
    pub dir: PathBuf,
}

/// The world of this test binary, started on first use.
pub fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(start)
}

impl World {
    /// The environment phoenix reads to reach this world.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("PHOENIX_PVE_URL", self.url.clone()),
            ("PHOENIX_PVE_NODE", self.node.clone()),
            ("PHOENIX_PVE_TOKEN", self.token.clone()),
            ("PHOENIX_PVE_CA_FILE", self.ca_file.display().to_string()),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_string(), value))
        .collect()
    }

    /// POST a JSON body to the control channel (`/fault`, `/call`, ...); returns the answer's `data`.
    pub fn control(&self, path: &str, body: &serde_json::Value) -> serde_json::Value {
        self.http("POST", path, &body.to_string())
    }

    /// The requests the fake has seen, oldest first, as (method, path, body).
    pub fn requests(&self) -> Vec<(String, String, String)> {
        serde_json::from_value(self.http("GET", "/requests", ""))
            .expect("control /requests: bad answer")
    }

    fn http(&self, method: &str, path: &str, body: &str) -> serde_json::Value {
        let base = self
            .control_url
            .as_deref()
            .expect("the fake has no control channel");
        let addr = base
            .strip_prefix("http://")
            .expect("control_url is http://host:port");
        let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("control {addr}: {e}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("set_read_timeout");
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let mut response = String::new();
        stream
            .write_all(request.as_bytes())
            .and_then(|()| stream.read_to_string(&mut response))
            .unwrap_or_else(|e| panic!("control {method} {path}: {e}"));
        let (head, content) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        if head.split(' ').nth(1) != Some("200") {
            panic!(
                "control {method} {path}: {}\n{content}",
                head.lines().next().unwrap_or("")
            );
        }
        let mut answer: serde_json::Value = serde_json::from_str(content)
            .unwrap_or_else(|e| panic!("control {method} {path}: {e}: {content}"));
        answer["data"].take()
    }
}

enum Launch {
    Ready(World),
    AddressInUse,
}

fn start() -> World {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = std::env::var_os("PHOENIX_FAKEPVE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join(".venv/bin/python"));
    let pid = std::process::id();
    for attempt in 0..ATTEMPTS {
        let host = format!("127.0.0.{}", 10 + (pid + attempt) % ADDRESSES);
        // A quick look first, so a taken address costs no Python start-up; exit 75 covers a race.
        if [8006, 8007]
            .iter()
            .any(|port| TcpListener::bind((host.as_str(), *port)).is_err())
        {
            continue;
        }
        let dir = std::env::temp_dir().join(format!("phoenix-fakepve-{pid}-{attempt}"));
        if let Launch::Ready(world) = launch(&python, repo, &host, &dir) {
            return world;
        }
    }
    panic!("fakepve: no free loopback address after {ATTEMPTS} tries (127.0.0.x:8006 and :8007)");
}

fn launch(python: &Path, repo: &Path, host: &str, dir: &Path) -> Launch {
    let _ = std::fs::remove_dir_all(dir); // left by an earlier process with our pid
    let mut child = Command::new(python)
        .arg(repo.join("lab/fakepve/world.py"))
        .args(["--host", host, "--remove-state-dir", "--state-dir"])
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "fakepve: cannot run {}: {e}; run ./scripts/setup first",
                python.display()
            )
        });
    // Drain both pipes in threads: stdout for the READY line, stderr for the panic message.
    let stderr = Arc::new(Mutex::new(String::new()));
    let mut err_pipe = child.stderr.take().expect("piped stderr");
    let sink = Arc::clone(&stderr);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = err_pipe.read(&mut buf) {
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let (ready, wait) = mpsc::channel();
    let stdout = child.stdout.take().expect("piped stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(path) = line.strip_prefix("READY ") {
                let _ = ready.send(Some(PathBuf::from(path)));
            }
        }
        let _ = ready.send(None);
    });
    let log = || stderr.lock().unwrap().clone();
    match wait.recv_timeout(READY_TIMEOUT) {
        Ok(Some(path)) => {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("fakepve: cannot read {}: {e}", path.display()));
            let world = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("fakepve: bad {}: {e}\n{text}", path.display()));
            // The write end of the launcher's stdin lives as long as this process: its EOF stops it.
            std::mem::forget(child.stdin.take());
            Launch::Ready(world)
        }
        Ok(None) => {
            let status = child.wait().expect("wait for the fakepve launcher");
            if status.code() == Some(EXIT_ADDRESS_IN_USE) {
                return Launch::AddressInUse;
            }
            panic!(
                "fakepve: the launcher exited ({status}) before it was ready; \
                 run ./scripts/setup first. Its stderr:\n{}",
                log()
            );
        }
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "fakepve: not ready within {}s on {host}; run ./scripts/setup first. Its stderr:\n{}",
                READY_TIMEOUT.as_secs(),
                log()
            );
        }
    }
}
