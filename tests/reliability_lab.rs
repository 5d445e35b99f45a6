//! Faults against phoenix-lab (issue 6): `apply` of the `swarm.*` and
//! `portainer.*` kinds while the lab answers with 5xx errors (at a rate, or a
//! few times on one path), late, or with a node down. Every run must end
//! converged or with a clear error (exit 1, an `error:` naming the engine or
//! Portainer, a `help:` line, no panic) within a bound, and the lab must
//! agree with the state: every object of the site the lab holds is in the
//! state or its journal, the state holds nothing the lab lacks, nothing exists
//! twice, and a secret whose value did not change (a swarm secret, phoenix's
//! Portainer API key) is never replaced. With the fault gone, the next apply
//! converges and the plan after it is empty.
//!
//! Each scenario run gets a fresh lab (in process, on 127.0.0.1) and starts
//! from the same state: the site's two VMs applied once in a private fakepve.
//! A fault-free apply builds the swarm (cluster, worker, network, two
//! secrets), Portainer's admin, the agent environment and a stack; a service
//! made behind phoenix's back mounts one secret. The apply under the fault
//! then relabels the worker, rotates that secret (new version, the service
//! moved to it, the old removed), redeploys the stack with a new image tag,
//! and creates a second stack and its network. Runs: `PHOENIX_REL_FAULT_RUNS`
//! (CI: 1; `scripts/reliability`: 10).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use phoenix_lab::{ErrorRule, Faults, Lab, WorldConfig};
use serde_json::{Value, json};

use crate::common::{Site, vm_from_image};
use crate::reliability_common::*;

/// How long one apply under a fault may take before it counts as a hang.
const RUN_LIMIT: Duration = Duration::from_secs(120);
const ADMIN_PASSWORD: &str = "rel-lab-admin-password-4d1e";
const MGR: &str = "relmgr";
const AGENT: &str = "relagent";
const MGR_VMID: u32 = 9870;
const AGENT_VMID: u32 = 9871;

// ------------------------------------------------------------- the lab

/// A lab of the calling test's own, served by a runtime of its own; shut down when dropped.
struct PrivateLab {
    rt: Option<tokio::runtime::Runtime>,
    lab: Option<Lab>,
    portainer: String,
    engines: BTreeMap<String, String>,
}

impl PrivateLab {
    fn start() -> PrivateLab {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime for the lab");
        let cfg: WorldConfig = serde_json::from_value(json!({"nodes": [
            {"hostname": MGR, "addr": "192.0.2.131"},
            {"hostname": AGENT, "addr": "192.0.2.132"}
        ]}))
        .expect("the lab's world");
        let lab = rt
            .block_on(Lab::start(cfg, "127.0.0.1:0".parse().expect("addr")))
            .expect("the lab starts");
        let portainer = lab.portainer_url();
        let engines = lab.docker_urls().into_iter().collect();
        PrivateLab {
            rt: Some(rt),
            lab: Some(lab),
            portainer,
            engines,
        }
    }

    fn set_faults(&self, faults: Faults) {
        if let (Some(rt), Some(lab)) = (&self.rt, &self.lab) {
            rt.block_on(lab.set_faults(faults));
        }
    }

    fn engine(&self, host: &str) -> &str {
        &self.engines[host]
    }

    fn env(&self) -> Vec<(String, String)> {
        let hosts = self
            .engines
            .iter()
            .map(|(h, u)| format!("{h}={u}"))
            .collect::<Vec<_>>()
            .join(",");
        vec![
            ("PHOENIX_PORTAINER_URL".into(), self.portainer.clone()),
            ("PHOENIX_PORTAINER_PASSWORD".into(), ADMIN_PASSWORD.into()),
            ("PHOENIX_DOCKER_HOST".into(), hosts),
        ]
    }
}

impl Drop for PrivateLab {
    fn drop(&mut self) {
        if let (Some(rt), Some(lab)) = (self.rt.take(), self.lab.take()) {
            rt.block_on(lab.shutdown());
            rt.shutdown_background();
        }
    }
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

fn get(url: &str, key: Option<&str>) -> Value {
    let mut rq = http().get(url);
    if let Some(k) = key {
        rq = rq.header("X-API-Key", k);
    }
    let r = rq.send().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = r.status();
    let v: Value = r.json().unwrap_or(Value::Null);
    assert!(status.is_success(), "GET {url}: {status} {v}");
    v
}

/// What the lab holds for the site, read behind phoenix's back (faults cleared).
#[derive(Debug, Default)]
struct LabView {
    /// The site's addresses that exist in the lab.
    present: BTreeSet<String>,
    /// Secret versions by logical name: (id, version name).
    secrets: BTreeMap<String, Vec<(String, String)>>,
    /// Objects that exist more than once.
    twice: Vec<String>,
    /// The secret id each service mounts, by service name.
    service_secrets: BTreeMap<String, Vec<String>>,
    worker_labels: Value,
    /// Stack name -> its file.
    stack_files: BTreeMap<String, String>,
}

fn count_twice(kind: &str, names: impl Iterator<Item = String>, out: &mut Vec<String>) {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for n in names {
        *seen.entry(n).or_default() += 1;
    }
    out.extend(
        seen.into_iter()
            .filter(|(_, c)| *c > 1)
            .map(|(n, c)| format!("{c} {kind} named {n}")),
    );
}

fn lab_view(lab: &PrivateLab, key: Option<&KeyFile>) -> LabView {
    let mut v = LabView::default();
    let m = lab.engine(MGR);
    let info = get(&format!("{m}/info"), None);
    if info["Swarm"]["LocalNodeState"] != "active" {
        return v;
    }
    v.present.insert("swarm.cluster".into());
    let nodes = get(&format!("{m}/nodes"), None);
    for n in nodes.as_array().into_iter().flatten() {
        if n["Description"]["Hostname"] == AGENT && n["Status"]["State"] == "ready" {
            v.present.insert(format!("swarm.node.{AGENT}"));
            v.worker_labels = n["Spec"]["Labels"].clone();
        }
    }
    count_twice(
        "ready nodes",
        nodes
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| n["Status"]["State"] == "ready")
            .filter_map(|n| n["Description"]["Hostname"].as_str().map(str::to_string)),
        &mut v.twice,
    );
    let nets = get(&format!("{m}/networks"), None);
    let swarm_nets: Vec<String> = nets
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["Scope"] == "swarm")
        .filter_map(|n| n["Name"].as_str().map(str::to_string))
        .collect();
    for n in &swarm_nets {
        if ["traefik-public", "backend"].contains(&n.as_str()) {
            v.present.insert(format!("swarm.network.{n}"));
        }
    }
    count_twice("networks", swarm_nets.into_iter(), &mut v.twice);
    for s in get(&format!("{m}/secrets"), None)
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(logical) = s["Spec"]["Labels"]["io.phoenix.secret"].as_str() {
            v.present.insert(format!("swarm.secret.{logical}"));
            v.secrets.entry(logical.to_string()).or_default().push((
                s["ID"].as_str().unwrap_or_default().to_string(),
                s["Spec"]["Name"].as_str().unwrap_or_default().to_string(),
            ));
        }
    }
    for s in get(&format!("{m}/services"), None)
        .as_array()
        .into_iter()
        .flatten()
    {
        let ids = s["Spec"]["TaskTemplate"]["ContainerSpec"]["Secrets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["SecretID"].as_str().map(str::to_string))
            .collect();
        v.service_secrets.insert(
            s["Spec"]["Name"].as_str().unwrap_or_default().to_string(),
            ids,
        );
    }
    let p = &lab.portainer;
    if http()
        .get(format!("{p}/api/users/admin/check"))
        .send()
        .is_ok_and(|r| r.status().is_success())
    {
        v.present.insert("portainer.admin".into());
    }
    if let Some(k) = key {
        let eps = get(&format!("{p}/api/endpoints"), Some(&k.api_key));
        let names: Vec<String> = eps
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["Name"].as_str().map(str::to_string))
            .collect();
        if names.iter().any(|n| n == AGENT) {
            v.present.insert(format!("portainer.endpoint.{AGENT}"));
        }
        count_twice("environments", names.into_iter(), &mut v.twice);
        let stacks = get(&format!("{p}/api/stacks"), Some(&k.api_key));
        let mut names = Vec::new();
        for s in stacks.as_array().into_iter().flatten() {
            let name = s["Name"].as_str().unwrap_or_default().to_string();
            let file = get(
                &format!("{p}/api/stacks/{}/file", s["Id"]),
                Some(&k.api_key),
            );
            v.present.insert(format!("portainer.stack.{name}"));
            v.stack_files.insert(
                name.clone(),
                file["StackFileContent"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
            names.push(name);
        }
        count_twice("stacks", names.into_iter(), &mut v.twice);
    }
    v
}

/// Make a service that mounts the current version of `db_password`, as an
/// operator's `docker service create --secret` would.
fn make_reader_service(lab: &PrivateLab, secret: &(String, String)) {
    let m = lab.engine(MGR);
    let spec = json!({
        "Name": "vault_reader",
        "TaskTemplate": {"ContainerSpec": {"Image": "busybox:latest", "Secrets": [{
            "File": {"Name": "db_password", "UID": "0", "GID": "0", "Mode": 292},
            "SecretID": secret.0, "SecretName": secret.1}]}},
        "Mode": {"Replicated": {"Replicas": 1}}
    });
    let r = http()
        .post(format!("{m}/services/create"))
        .json(&spec)
        .send()
        .expect("create the reader service");
    assert!(r.status().is_success(), "{}", r.text().unwrap_or_default());
}

// ------------------------------------------------------------ the site

/// `state/portainer-api-key.json`, as the test reads it.
#[derive(Debug, Clone, PartialEq)]
struct KeyFile {
    key_id: u64,
    api_key: String,
}

fn key_file(site: &Site) -> Option<KeyFile> {
    let text = std::fs::read_to_string(site.root().join("state/portainer-api-key.json")).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    Some(KeyFile {
        key_id: v["key_id"].as_u64()?,
        api_key: v["api_key"].as_str()?.to_string(),
    })
}

/// The manifests before (`second == false`) and under the fault.
fn write_site(site: &Site, second: bool) {
    let mut mgr = vm_from_image(MGR_VMID, MGR, 131);
    mgr["swarm_role"] = json!("manager");
    mgr["portainer_role"] = json!("primary");
    // Not an agent: its stack is never deployed through Portainer; it names the swarm secrets.
    mgr["docker_stacks"] = json!(["vault"]);
    let mut agent = vm_from_image(AGENT_VMID, AGENT, 132);
    agent["swarm_role"] = json!("worker");
    agent["portainer_role"] = json!("agent");
    agent["portainer_environment_name"] = json!(AGENT);
    agent["node_labels"] = json!({"gpu": if second { "true" } else { "false" }});
    agent["docker_stacks"] = if second {
        json!(["web", "api"])
    } else {
        json!(["web"])
    };
    site.set_vms(&[mgr, agent]);
    let root = site.root();
    let stack = |name: &str, compose: &str, tag: &str| {
        let dir = root.join("stacks").join(name);
        std::fs::create_dir_all(&dir).expect("stack dir");
        std::fs::write(dir.join("docker-compose.yml"), compose).expect("compose");
        std::fs::write(
            dir.join("phoenix.json"),
            json!({"environments": {"production": {
                "variables": [{"name": "TAG", "value": tag}]}}})
            .to_string(),
        )
        .expect("phoenix.json");
    };
    stack(
        "vault",
        "services:\n  reader:\n    image: busybox:latest\n    secrets:\n      - db_password\n      - api_token\nsecrets:\n  db_password:\n    external: true\n  api_token:\n    external: true\n",
        "1",
    );
    stack(
        "web",
        "services:\n  app:\n    image: nginx:${TAG}\n    networks:\n      - public\nnetworks:\n  public:\n    external: true\n    name: traefik-public\n",
        if second { "1.27" } else { "1.25" },
    );
    stack(
        "api",
        "services:\n  api:\n    image: httpd:${TAG}\n    networks:\n      - backend\nnetworks:\n  backend:\n    external: true\n",
        "2.4",
    );
    let secrets = root.join("secrets");
    std::fs::create_dir_all(&secrets).expect("secrets dir");
    let db = if second {
        "db-password-second-7a1"
    } else {
        "db-password-first-2c9"
    };
    std::fs::write(secrets.join("db_password"), db).expect("secret");
    std::fs::write(secrets.join("api_token"), "api-token-unchanged-5e3").expect("secret");
}

/// Every address of the site under the fault.
fn site_addresses() -> BTreeSet<String> {
    [
        "swarm.cluster".to_string(),
        format!("swarm.node.{AGENT}"),
        "swarm.network.traefik-public".into(),
        "swarm.network.backend".into(),
        "swarm.secret.db_password".into(),
        "swarm.secret.api_token".into(),
        "portainer.admin".into(),
        format!("portainer.endpoint.{AGENT}"),
        "portainer.stack.web".into(),
        "portainer.stack.api".into(),
    ]
    .into_iter()
    .collect()
}

fn phoenix(pw: &PrivateWorld, lab: &PrivateLab, site: &Site, args: &[&str]) -> Command {
    let mut c = pw.std_cmd(site, args);
    for (k, v) in lab.env() {
        c.env(k, v);
    }
    c.env_remove("PHOENIX_SECRET_DB_PASSWORD")
        .env_remove("PHOENIX_SECRET_API_TOKEN")
        .env_remove("PHOENIX_PORTAINER_KEY_FILE");
    c
}

fn copy_dir(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir").flatten() {
        if e.path().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
        }
    }
}

// ------------------------------------------------------- the scenarios

struct Scenario {
    name: &'static str,
    faults: fn(u64) -> Faults,
    /// Words one of which a clean failure's message must hold (the system that failed).
    expect: &'static [&'static str],
}

fn rule(server: Option<&str>, method: Option<&str>, path: &str, status: u16) -> ErrorRule {
    ErrorRule {
        server: server.map(str::to_string),
        method: method.map(str::to_string),
        path: path.into(),
        status,
        message: "injected by the reliability suite".into(),
        times: None,
        rate: None,
    }
}

fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "engine 5xx on reads (30% of the manager's GETs answer 500)",
            faults: |seed| Faults {
                errors: vec![ErrorRule {
                    rate: Some(0.3),
                    ..rule(Some(MGR), Some("GET"), "", 500)
                }],
                seed: Some(seed),
                ..Default::default()
            },
            expect: &[MGR],
        },
        Scenario {
            name: "engine 5xx on writes (25% of the manager's POSTs and DELETEs answer 500)",
            faults: |seed| Faults {
                errors: vec![
                    ErrorRule {
                        rate: Some(0.25),
                        ..rule(Some(MGR), Some("POST"), "", 500)
                    },
                    ErrorRule {
                        rate: Some(0.25),
                        ..rule(Some(MGR), Some("DELETE"), "", 500)
                    },
                ],
                seed: Some(seed),
                ..Default::default()
            },
            expect: &[MGR],
        },
        Scenario {
            name: "a rotation cut short (the service update answers 500 once)",
            faults: |_| Faults {
                errors: vec![ErrorRule {
                    times: Some(1),
                    ..rule(Some(MGR), Some("POST"), "/services/", 500)
                }],
                ..Default::default()
            },
            expect: &[MGR],
        },
        Scenario {
            name: "Portainer 5xx on reads (30% of GETs answer 500)",
            faults: |seed| Faults {
                errors: vec![ErrorRule {
                    rate: Some(0.3),
                    ..rule(Some("portainer"), Some("GET"), "", 500)
                }],
                seed: Some(seed),
                ..Default::default()
            },
            expect: &["Portainer"],
        },
        Scenario {
            name: "Portainer 5xx on writes (a stack create and a stack update answer 500 once)",
            faults: |_| Faults {
                errors: vec![
                    ErrorRule {
                        times: Some(1),
                        ..rule(Some("portainer"), Some("POST"), "/stacks/create", 500)
                    },
                    ErrorRule {
                        times: Some(1),
                        ..rule(Some("portainer"), Some("PUT"), "/stacks/", 500)
                    },
                ],
                ..Default::default()
            },
            expect: &["Portainer"],
        },
        Scenario {
            name: "Portainer 5xx on the API key check (GET .../tokens answers 503 3 times)",
            faults: |_| Faults {
                errors: vec![ErrorRule {
                    times: Some(3),
                    ..rule(Some("portainer"), Some("GET"), "/tokens", 503)
                }],
                ..Default::default()
            },
            expect: &["Portainer"],
        },
        Scenario {
            name: "errors everywhere (10% of requests to any server answer 502 or 503)",
            faults: |seed| Faults {
                errors: vec![
                    ErrorRule {
                        rate: Some(0.05),
                        ..rule(None, None, "", 502)
                    },
                    ErrorRule {
                        rate: Some(0.05),
                        ..rule(None, None, "", 503)
                    },
                ],
                seed: Some(seed),
                ..Default::default()
            },
            expect: &[MGR, AGENT, "Portainer"],
        },
        Scenario {
            name: "latency (every answer 150 ms late)",
            faults: |_| Faults {
                latency_ms: 150,
                ..Default::default()
            },
            expect: &[],
        },
        Scenario {
            name: "worker node down (its engine refuses connections; the swarm sees it down)",
            faults: |_| Faults {
                down: vec![AGENT.into()],
                ..Default::default()
            },
            expect: &[AGENT],
        },
        Scenario {
            name: "manager node down (its engine refuses connections)",
            faults: |_| Faults {
                down: vec![MGR.into()],
                ..Default::default()
            },
            expect: &[MGR],
        },
    ]
}

#[derive(Default, Clone, Debug)]
struct Figures {
    runs: u64,
    converged: u64,
    clean_failures: u64,
    other: u64,
    max_seconds: f64,
    notes: Vec<String>,
}

/// The state of the site with its VMs applied, from which every run starts.
struct Baseline {
    site: Site,
    state_dir: PathBuf,
    _keep: tempfile::TempDir,
}

fn baseline(pw: &PrivateWorld) -> Baseline {
    let site = Site::new(&[]);
    write_site(&site, false);
    let lab = PrivateLab::start();
    let mut c = phoenix(
        pw,
        &lab,
        &site,
        &[
            "apply",
            "--auto-approve",
            "--target",
            &format!("vm.{MGR_VMID}"),
            "--target",
            &format!("vm.{AGENT_VMID}"),
        ],
    );
    c.env("PHOENIX_PVE_TASK_TIMEOUT", "120s");
    let (code, _, err, _) = run_bounded(c, Duration::from_secs(300));
    assert_eq!(code, Some(0), "the VMs could not be made:\n{err}");
    let keep = tempfile::tempdir().expect("tempdir");
    let state_dir = keep.path().join("state");
    copy_dir(&site.root().join("state"), &state_dir);
    Baseline {
        site,
        state_dir,
        _keep: keep,
    }
}

/// One scenario against a fresh lab. Returns "converged", "clean" or an explanation.
fn run_scenario(
    pw: &PrivateWorld,
    base: &Baseline,
    sc: &Scenario,
    seed: u64,
) -> (Result<&'static str, String>, f64) {
    let site = &base.site;
    let lab = PrivateLab::start();
    copy_dir(&base.state_dir, &site.root().join("state"));
    write_site(site, false);
    let (code, _, err, _) = run_bounded(
        phoenix(pw, &lab, site, &["apply", "--auto-approve"]),
        RUN_LIMIT,
    );
    assert_eq!(code, Some(0), "{}: setup failed:\n{err}", sc.name);
    let key_before = key_file(site).expect("the setup made the API key");
    let before = lab_view(&lab, Some(&key_before));
    let db_first = before.secrets["db_password"][0].clone();
    let token_first = before.secrets["api_token"].clone();
    make_reader_service(&lab, &db_first);

    write_site(site, true);
    lab.set_faults((sc.faults)(seed));
    let (code, _, err, took) = run_bounded(
        phoenix(pw, &lab, site, &["apply", "--auto-approve"]),
        RUN_LIMIT,
    );
    let secs = took.as_secs_f64();
    lab.set_faults(Faults::default());

    let verdict = (|| {
        if code.is_none() {
            return Err(format!("no end within {RUN_LIMIT:?} (a hang)"));
        }
        let outcome = match code {
            Some(0) => "converged",
            c if is_clean_failure(c, &err) => {
                if !sc.expect.is_empty() && !sc.expect.iter().any(|w| err.contains(w)) {
                    return Err(format!(
                        "a failure that does not name the engine or Portainer ({:?}):\n{err}",
                        sc.expect
                    ));
                }
                "clean"
            }
            c => return Err(format!("exit {c:?}, not a clean failure:\n{err}")),
        };
        // The state stays true, and nothing unchanged was replaced.
        let invariants = |when: &str| -> Result<LabView, String> {
            let key = key_file(site).ok_or(format!("{when}: the API key file is gone"))?;
            if key != key_before {
                return Err(format!(
                    "{when}: phoenix's Portainer API key was replaced although nothing changed it"
                ));
            }
            let view = lab_view(&lab, Some(&key));
            let state = read_state(&site.state_path()).ok_or(format!("{when}: no state"))?;
            for a in &view.present {
                if !state.resources.contains(a) && !state.pending.contains(a) {
                    return Err(format!(
                        "{when}: {a} exists in the lab but neither the state nor the journal knows it"
                    ));
                }
            }
            for a in state
                .resources
                .iter()
                .filter(|a| site_addresses().contains(*a))
            {
                if !view.present.contains(a) {
                    return Err(format!(
                        "{when}: the state holds {a}, which the lab does not have"
                    ));
                }
            }
            if !view.twice.is_empty() {
                return Err(format!("{when}: made twice: {:?}", view.twice));
            }
            if view.secrets.get("api_token") != Some(&token_first) {
                return Err(format!(
                    "{when}: the unchanged secret api_token was replaced: {:?} -> {:?}",
                    token_first,
                    view.secrets.get("api_token")
                ));
            }
            if view.secrets.get("db_password").is_some_and(|v| v.len() > 2) {
                return Err(format!(
                    "{when}: more than two versions of db_password: {:?}",
                    view.secrets["db_password"]
                ));
            }
            Ok(view)
        };
        invariants("after the run")?;
        if outcome == "converged" {
            let out = phoenix(pw, &lab, site, &["plan", "--detailed-exitcode"])
                .output()
                .map_err(|e| e.to_string())?;
            if out.status.code() != Some(0) {
                return Err(format!(
                    "converged, but the plan is not empty:\n{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
        // With the fault gone: the next apply converges, and the plan after it is empty.
        let (code2, _, err2, _) = run_bounded(
            phoenix(pw, &lab, site, &["apply", "--auto-approve"]),
            RUN_LIMIT,
        );
        if code2 != Some(0) {
            return Err(format!(
                "the apply after the fault failed ({code2:?}):\n{err2}"
            ));
        }
        let out = phoenix(pw, &lab, site, &["plan", "--detailed-exitcode"])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.code() != Some(0) {
            return Err(format!(
                "plan not empty after recovery:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let view = invariants("after recovery")?;
        let absent: Vec<String> = site_addresses()
            .into_iter()
            .filter(|a| !view.present.contains(a))
            .collect();
        if !absent.is_empty() {
            return Err(format!("missing after recovery: {absent:?}"));
        }
        let db = &view.secrets["db_password"];
        if db.len() != 1 || db[0].0 == db_first.0 {
            return Err(format!(
                "db_password not rotated to one new version after recovery: {db:?} (first {db_first:?})"
            ));
        }
        if view.service_secrets.get("vault_reader") != Some(&vec![db[0].0.clone()]) {
            return Err(format!(
                "the reader service mounts {:?}, not the current db_password {}",
                view.service_secrets.get("vault_reader"),
                db[0].0
            ));
        }
        if view.worker_labels["gpu"] != "true" {
            return Err(format!("worker labels {}", view.worker_labels));
        }
        if !view
            .stack_files
            .get("web")
            .is_some_and(|f| f.contains("nginx:1.27"))
        {
            return Err(format!("stack web not redeployed: {:?}", view.stack_files));
        }
        Ok(outcome)
    })();
    (verdict, secs)
}

#[test]
fn every_lab_fault_ends_converged_or_with_a_clear_error_and_the_state_stays_true() {
    let runs = knob("PHOENIX_REL_FAULT_RUNS", 1);
    let seed = seed();
    eprintln!("lab fault runs: {runs}, PHOENIX_REL_SEED={seed}");
    let start = Instant::now();
    let pw = PrivateWorld::start(&[]);
    pw.control("/set", &json!({"time_scale": 0.0}));
    let base = baseline(&pw);
    let list = scenarios();
    let mut figures: Vec<Figures> = vec![Figures::default(); list.len()];
    for run in 0..runs {
        for (i, sc) in list.iter().enumerate() {
            let (verdict, secs) =
                run_scenario(&pw, &base, sc, seed.wrapping_add(run * 100 + i as u64));
            let f = &mut figures[i];
            f.runs += 1;
            f.max_seconds = f.max_seconds.max((secs * 10.0).round() / 10.0);
            match verdict {
                Ok("converged") => f.converged += 1,
                Ok(_) => f.clean_failures += 1,
                Err(why) => {
                    f.other += 1;
                    eprintln!("FAULT {} run {run}: {why}", sc.name);
                    if f.notes.len() < 3 {
                        f.notes.push(why);
                    }
                }
            }
        }
    }
    let table: Vec<Value> = list
        .iter()
        .zip(&figures)
        .map(|(sc, f)| {
            json!({"fault": sc.name, "runs": f.runs, "converged": f.converged,
                   "clean_failures": f.clean_failures, "other": f.other,
                   "slowest_run_seconds": f.max_seconds})
        })
        .collect();
    report(
        "faults_lab",
        json!({"runs": runs, "seed": seed, "seconds": start.elapsed().as_secs(), "per_fault": table}),
    );
    let other: u64 = figures.iter().map(|f| f.other).sum();
    let notes: Vec<&String> = figures.iter().flat_map(|f| &f.notes).collect();
    assert_eq!(other, 0, "{notes:#?}");
}
