//! The swarm provider against phoenix-lab and against a real dockerd (Debian
//! `docker.io`, started once for this binary as root, data under a temp dir).
//! The same scenario runs on both and the transcripts must agree: the lab is
//! kept honest by the real engine. Then a whole site through the CLI whose
//! stack the lab's Portainer deploys onto the real dockerd.

#[allow(dead_code)]
mod common;
// support/mod.rs allows dead code for itself.
mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use phoenix::model::swarm::{Object, secret_version};
use phoenix::model::{Address, DesiredResource, Kind, LiveObject};
use phoenix::plan::{Action, Change, Precondition};
use phoenix::providers::docker::swarm::SwarmProvider;
use phoenix::providers::docker::{DockerSettings, Engines};
use phoenix::providers::{OpContext, ResourceProvider};
use serde_json::{Map, Value, json};

struct Quiet;
impl OpContext for Quiet {
    fn task_started(&self, _: &Address, _: &str) {}
    fn progress(&self, _: &str, _: &str) {}
}

fn attrs(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

fn desired(o: Object, a: Value) -> DesiredResource {
    DesiredResource {
        address: o.address(),
        attrs: attrs(a),
        create: Map::new(),
        depends_on: vec![],
    }
}

/// The lab, running on a thread of its own for the whole binary.
fn lab() -> &'static (String, Vec<(String, String)>) {
    static LAB: OnceLock<(String, Vec<(String, String)>)> = OnceLock::new();
    LAB.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().expect("runtime");
            rt.block_on(async move {
                let cfg: phoenix_lab::WorldConfig = serde_json::from_str("{}").expect("world");
                let lab = phoenix_lab::Lab::start(cfg, "127.0.0.1:0".parse().expect("addr"))
                    .await
                    .expect("lab starts");
                tx.send((lab.portainer_url(), lab.docker_urls()))
                    .expect("send");
                std::future::pending::<()>().await;
            });
        });
        rx.recv().expect("the lab started")
    })
}

/// The tests that use the real dockerd take it one at a time: each makes its
/// swarm and leaves it, and the swarm scenario must find none.
static REAL_ENGINE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A real dockerd for the whole binary, or why there is none.
fn dockerd() -> &'static Result<String, String> {
    static D: OnceLock<Result<String, String>> = OnceLock::new();
    D.get_or_init(start_dockerd)
}

fn start_dockerd() -> Result<String, String> {
    if Command::new("dockerd").arg("--version").output().is_err() {
        return Err("dockerd is not installed (scripts/setup installs docker.io)".into());
    }
    if !nix_is_root() {
        return Err("dockerd needs root".into());
    }
    let dir = tempfile::Builder::new()
        .prefix("phoenix-dockerd.")
        .tempdir_in("/tmp")
        .map_err(|e| e.to_string())?
        .keep();
    let sock = dir.join("docker.sock");
    // The launcher stops dockerd when this process ends (its stdin reaches EOF), then removes the dir;
    // the overlay networks' namespaces stay mounted after dockerd exits, and would keep it.
    let script = format!(
        "dockerd --storage-driver=vfs --data-root {d}/data --exec-root {d}/exec --pidfile {d}/docker.pid \
         -H unix://{s} --iptables=false --ip6tables=false --bridge=none >{d}/log 2>&1 & pid=$!; \
         cat >/dev/null; kill $pid; wait $pid; for m in {d}/exec/netns/*; do umount $m; done 2>/dev/null; \
         rm -rf {d}",
        d = dir.display(),
        s = sock.display()
    );
    let child = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    // Kept open for the life of the process: dropping it would stop dockerd.
    std::mem::forget(child.stdin);
    let url = format!("unix://{}", sock.display());
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(60) {
        if sock.exists()
            && Command::new("docker")
                .args(["-H", &url, "info"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        {
            import_busybox(&url)?;
            return Ok(url);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
    Err(format!("dockerd did not come up in 60 s:\n{log}"))
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn provider(manager_url: &str, extra: &[(&str, &str)], root: &Path) -> SwarmProvider {
    let mut hosts = BTreeMap::from([("mgr".to_string(), manager_url.to_string())]);
    for (n, u) in extra {
        hosts.insert(n.to_string(), u.to_string());
    }
    let settings = DockerSettings {
        hosts,
        cert_path: None,
        manager: Some("mgr".into()),
        root: root.to_path_buf(),
    };
    SwarmProvider::new(Arc::new(Engines::new(&settings)), root.to_path_buf())
}

/// An in-place update as the plan would hand it (the provider reads only `desired`).
fn update_change(d: &DesiredResource, live: &LiveObject) -> Change {
    Change {
        address: d.address.clone(),
        action: Action::Update,
        before: Some(live.attrs.clone()),
        after: Some(d.attrs.clone()),
        changed_paths: vec![],
        replace_paths: vec![],
        reason: None,
        drift: false,
        depends_on: vec![],
        precondition: Precondition {
            fingerprint: Some(live.fingerprint()),
        },
        notes: vec![],
        desired_fingerprint: None,
    }
}

fn write_secret(root: &Path, name: &str, value: &str) {
    let d = root.join("secrets");
    std::fs::create_dir_all(&d).unwrap();
    let mut f = std::fs::File::create(d.join(name)).unwrap();
    f.write_all(value.as_bytes()).unwrap();
}

async fn refresh(p: &SwarmProvider, addrs: &[Address]) -> BTreeMap<Address, LiveObject> {
    p.refresh(addrs).await.unwrap()
}

/// Create the swarm, a network and a secret, rotate the secret under a
/// service, remove them: what phoenix sees at each step, ids left out.
async fn scenario(manager_url: &str) -> Vec<String> {
    let root = tempfile::tempdir().unwrap();
    let p = provider(manager_url, &[], root.path());
    let cluster = desired(Object::Cluster, json!({"advertise_addr": "127.0.0.1"}));
    let net = desired(
        Object::Network("traefik-public".into()),
        json!({"driver": "overlay", "attachable": true}),
    );
    write_secret(root.path(), "db_password", "first value");
    let v1 = secret_version("db_password", b"first value");
    let sec1 = desired(Object::Secret("db_password".into()), json!({"version": v1}));
    let addrs = vec![
        cluster.address.clone(),
        net.address.clone(),
        sec1.address.clone(),
    ];
    let mut log = Vec::new();
    let snap = |log: &mut Vec<String>, label: &str, m: &BTreeMap<Address, LiveObject>| {
        let view: BTreeMap<String, Value> = m
            .iter()
            .map(|(a, l)| (a.to_string(), Value::Object(l.attrs.clone())))
            .collect();
        log.push(format!("{label}: {}", json!(view)));
    };
    snap(&mut log, "before", &refresh(&p, &addrs).await);
    p.create(&cluster, &Quiet).await.unwrap();
    p.create(&net, &Quiet).await.unwrap();
    let live = p.create(&sec1, &Quiet).await.unwrap();
    snap(&mut log, "created", &refresh(&p, &addrs).await);
    assert_eq!(live.attrs["version"], json!(v1));

    // A service uses the secret; a new value rotates it under the service.
    let docker_host = manager_url.replace("http://", "tcp://");
    let out = Command::new("docker")
        .args([
            "-H",
            &docker_host,
            "service",
            "create",
            "--detach",
            "--name",
            "app",
            "--label",
            "tier=web",
        ])
        .args(["--secret", &format!("source={v1},target=db_password")])
        .arg("busybox:latest")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The service filters, as the Engine reads them: names and ids are
    // prefixes, `label=key=` asks for the key only, an unknown key is an error.
    for f in [
        "name=ap",
        "name=pp",
        "label=tier",
        "label=tier=",
        "label=tier=db",
        "mode=replicated",
        "mode=global",
        "bogus=1",
    ] {
        let out = Command::new("docker")
            .args(["-H", &docker_host, "service", "ls", "--format", "{{.Name}}"])
            .args(["--filter", f])
            .output()
            .unwrap();
        log.push(format!(
            "services {f}: {}{}",
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    write_secret(root.path(), "db_password", "second value");
    let v2 = secret_version("db_password", b"second value");
    let sec2 = desired(Object::Secret("db_password".into()), json!({"version": v2}));
    let before = refresh(&p, std::slice::from_ref(&sec2.address)).await;
    let change = update_change(&sec2, &before[&sec2.address]);
    p.update(&sec2, &before[&sec2.address], &change, &Quiet)
        .await
        .unwrap();
    snap(&mut log, "rotated", &refresh(&p, &addrs).await);
    let inspect = Command::new("docker")
        .args(["-H", &docker_host, "service", "inspect", "app", "--format"])
        .arg("{{range .Spec.TaskTemplate.ContainerSpec.Secrets}}{{.SecretName}}>{{.File.Name}} {{end}}")
        .output()
        .unwrap();
    log.push(format!(
        "service secrets: {}",
        String::from_utf8_lossy(&inspect.stdout).trim()
    ));
    let secrets = Command::new("docker")
        .args(["-H", &docker_host, "secret", "ls", "--format", "{{.Name}}"])
        .output()
        .unwrap();
    log.push(format!(
        "secrets: {}",
        String::from_utf8_lossy(&secrets.stdout).trim()
    ));
    // Rotating again to the same content changes nothing.
    let again = refresh(&p, std::slice::from_ref(&sec2.address)).await;
    assert_eq!(again[&sec2.address].attrs["version"], json!(v2));

    let _ = Command::new("docker")
        .args(["-H", &docker_host, "service", "rm", "app"])
        .output();
    let now = refresh(&p, &addrs).await;
    for a in [&sec2.address, &net.address, &cluster.address] {
        p.delete(a, &now[a].remote, &Quiet).await.unwrap();
    }
    snap(&mut log, "deleted", &refresh(&p, &addrs).await);
    // Scrub the content hashes, which differ by value only, to compare runs.
    log.into_iter()
        .map(|l| l.replace(&v1, "V1").replace(&v2, "V2"))
        .collect()
}

fn docker_cli_available() -> bool {
    Command::new("docker").arg("--version").output().is_ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn lab_and_dockerd_agree_on_the_swarm_scenario() {
    if !docker_cli_available() {
        eprintln!("skipped: no docker CLI");
        return;
    }
    let lab_manager = lab()
        .1
        .iter()
        .find(|(h, _)| h == "Portainer")
        .unwrap()
        .1
        .clone();
    let on_lab = scenario(&lab_manager).await;
    assert!(
        on_lab[0].contains("before: {}"),
        "nothing exists at first: {on_lab:?}"
    );
    assert!(
        on_lab
            .iter()
            .any(|l| l == "service secrets: V2>db_password"),
        "{on_lab:?}"
    );
    assert!(
        on_lab.iter().any(|l| l == "secrets: V2"),
        "the old version is gone: {on_lab:?}"
    );
    assert!(
        on_lab.iter().any(|l| l == "services name=ap: app")
            && on_lab.iter().any(|l| l == "services name=pp: "),
        "{on_lab:?}"
    );
    match dockerd() {
        Ok(url) => {
            let _one = REAL_ENGINE.lock().await;
            let on_real = scenario(url).await;
            assert_eq!(on_lab, on_real, "the lab and the real engine disagree");
        }
        Err(why) => eprintln!("the real-engine half skipped: {why}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn workers_join_with_labels_and_rejoin_after_leaving() {
    let root = tempfile::tempdir().unwrap();
    // A world of its own: the shared lab's swarm belongs to the other test.
    let lab = phoenix_lab::Lab::start(
        serde_json::from_str(
            r#"{"nodes": [{"hostname": "mgr", "addr": "127.0.0.1"}, {"hostname": "drphoenix"}]}"#,
        )
        .unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let urls: BTreeMap<String, String> = lab.docker_urls().into_iter().collect();
    let p = provider(
        &urls["mgr"],
        &[("drphoenix", &urls["drphoenix"])],
        root.path(),
    );
    let cluster = desired(Object::Cluster, json!({"advertise_addr": "127.0.0.1"}));
    let node = desired(
        Object::Node("drphoenix".into()),
        json!({"role": "worker", "availability": "active", "labels": {"gpu": "false"}}),
    );
    p.create(&cluster, &Quiet).await.unwrap();
    let live = p.create(&node, &Quiet).await.unwrap();
    assert_eq!(live.attrs, node.attrs);
    // The node leaves on its own: phoenix sees it gone, reports the stale entry, and rejoins it.
    let c = reqwest::Client::new();
    let r = c
        .post(format!("{}/swarm/leave?force=true", urls["drphoenix"]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = p
        .refresh(std::slice::from_ref(&node.address))
        .await
        .unwrap();
    assert!(seen.is_empty(), "a node that left is not live: {seen:?}");
    let live = p.create(&node, &Quiet).await.unwrap();
    assert_eq!(live.attrs, node.attrs);
    let notes = phoenix::model::swarm::SwarmKind.observe(&node, Some(&live));
    assert_eq!(notes.len(), 1, "the old entry is reported: {notes:?}");
    // Labels changed in the manifests are updated in place.
    let relabeled = desired(
        Object::Node("drphoenix".into()),
        json!({"role": "worker", "availability": "drain", "labels": {"gpu": "true"}}),
    );
    let change = update_change(&relabeled, &live);
    let live = p.update(&relabeled, &live, &change, &Quiet).await.unwrap();
    assert_eq!(live.attrs, relabeled.attrs);
    lab.shutdown().await;
}

/// Leaves the real engine's swarm (and so everything in it) when dropped,
/// however the test ends: the next test on the engine must find none.
struct LeaveSwarm(String);

impl Drop for LeaveSwarm {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["-H", &self.0, "swarm", "leave", "--force"])
            .output();
    }
}

/// `docker -H <engine> ARGS` on the real engine: its stdout, or a panic with its stderr.
/// `busybox:latest` on the engine, made with `docker import` from a rootfs
/// of Debian's static busybox: the stacks' tasks really run, with no registry.
fn import_busybox(url: &str) -> Result<(), String> {
    let busybox = Path::new("/bin/busybox");
    if !busybox.is_file() {
        return Err("/bin/busybox is missing (scripts/setup installs busybox-static)".into());
    }
    let root = tempfile::tempdir().map_err(|e| e.to_string())?;
    let bin = root.path().join("bin");
    std::fs::create_dir_all(&bin).map_err(|e| e.to_string())?;
    std::fs::copy(busybox, bin.join("busybox")).map_err(|e| e.to_string())?;
    for applet in ["sh", "sleep", "echo", "cat"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).map_err(|e| e.to_string())?;
    }
    let tar = Command::new("tar")
        .arg("-C")
        .arg(root.path())
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("tar: {e}"))?;
    let out = Command::new("docker")
        .args(["-H", url, "import", "-", "busybox:latest"])
        .stdin(tar.stdout.ok_or("tar has no stdout")?)
        .output()
        .map_err(|e| format!("docker import: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "docker import: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// Waits until a task of `service` runs on the engine; its state line.
fn running_task(engine: &str, service: &str) -> String {
    let t = Instant::now();
    let mut last = String::new();
    while t.elapsed() < Duration::from_secs(60) {
        last = real_docker(
            engine,
            &[
                "service",
                "ps",
                service,
                "--format",
                "{{.CurrentState}} {{.Error}}",
            ],
        );
        if last.lines().any(|l| l.starts_with("Running")) {
            return last;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!("no task of {service} runs after 60 s: {last}");
}

fn real_docker(engine: &str, args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(["-H", engine])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A lab of its own, whose node `realmgr` is the real engine; its Portainer URL.
fn real_engine_lab(engine: &str) -> String {
    let cfg: phoenix_lab::WorldConfig = serde_json::from_value(json!({"nodes": [
        {"hostname": "realmgr", "addr": "127.0.0.1", "aliases": ["realmgr-agent.lab"],
         "engine": engine}
    ]}))
    .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async move {
            let lab = phoenix_lab::Lab::start(cfg, "127.0.0.1:0".parse().expect("addr"))
                .await
                .expect("lab starts");
            tx.send(lab.portainer_url()).expect("send");
            std::future::pending::<()>().await;
        });
    });
    rx.recv().unwrap()
}

#[test]
fn a_lab_stack_is_deployed_on_the_real_engine_and_its_drift_shows() {
    let engine = match dockerd() {
        Ok(url) => url.clone(),
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let _one = REAL_ENGINE.blocking_lock();
    let _leave = LeaveSwarm(engine.clone());
    let portainer = real_engine_lab(&engine);

    // One VM, the swarm's manager and Portainer's agent, whose engine is the real one.
    let site = common::Site::new(&[]);
    let mut vm = common::vm_from_image(1741, "realmgr", 141);
    vm["network_config"]["ip"] = json!("127.0.0.1/8");
    vm["swarm_role"] = json!("manager");
    vm["portainer_role"] = json!("agent");
    vm["portainer_agent_hostname"] = json!("realmgr-agent.lab");
    vm["docker_stacks"] = json!(["hello"]);
    site.set_vms(&[vm]);
    let dir = site.root().join("stacks/hello");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("docker-compose.yml"),
        "version: '3.8'\nservices:\n  app:\n    image: busybox:latest\n    command: [\"sleep\", \"3600\"]\n    environment:\n      - GREETING=${GREETING}\n    networks:\n      - public\nnetworks:\n  public:\n    external: true\n    name: hello-public\n",
    )
    .unwrap();
    site.write(
        "stacks/hello/phoenix.json",
        &json!({"environments": {"production": {
            "variables": [{"name": "GREETING", "value": "hello"}]}}}),
    );
    let run = |args: &[&str]| -> (Option<i32>, String) {
        let out = site
            .cmd(args)
            .env("PHOENIX_PORTAINER_URL", &portainer)
            .env("PHOENIX_PORTAINER_PASSWORD", "real-engine-admin-pw")
            .env("PHOENIX_DOCKER_HOST", format!("realmgr={engine}"))
            .output()
            .unwrap();
        (
            out.status.code(),
            format!("{}{}", common::stdout(&out), common::stderr(&out)),
        )
    };

    let (code, out) = run(&["apply", "--auto-approve"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("portainer.stack.hello"), "{out}");
    // The services exist on the real engine, made by `docker stack deploy` with the stack's variables.
    assert_eq!(
        real_docker(
            &engine,
            &[
                "service",
                "ls",
                "--filter",
                "label=com.docker.stack.namespace=hello",
                "--format",
                "{{.Name}}"
            ]
        ),
        "hello_app"
    );
    let spec = real_docker(
        &engine,
        &[
            "service",
            "inspect",
            "hello_app",
            "--format",
            "{{json .Spec}}",
        ],
    );
    let spec: Value = serde_json::from_str(&spec).unwrap();
    assert_eq!(
        spec["TaskTemplate"]["ContainerSpec"]["Env"],
        json!(["GREETING=hello"]),
        "{spec}"
    );
    assert_eq!(spec["Mode"]["Replicated"]["Replicas"], json!(1));
    // Not only listed: its task runs (the imported busybox, on the overlay network).
    running_task(&engine, "hello_app");
    let (code, out) = run(&["plan", "--detailed-exitcode"]);
    assert_eq!(code, Some(0), "the re-plan is empty: {out}");

    // Scaled on the real engine behind phoenix's back: drift on the stack, by field.
    real_docker(&engine, &["service", "scale", "--detach", "hello_app=3"]);
    let (code, out) = run(&["plan", "--detailed-exitcode"]);
    assert_eq!(code, Some(2), "{out}");
    for want in ["portainer.stack.hello", "services.app.replicas"] {
        assert!(out.contains(want), "{want} missing:\n{out}");
    }
    assert!(out.to_lowercase().contains("outside phoenix"), "{out}");
    // Without an engine for the manager, the same scale is read through the
    // lab's Portainer, whose Docker proxy forwards to the real engine.
    let through_portainer = {
        use phoenix::providers::portainer::{PortainerProvider, PortainerSettings};
        let p = PortainerProvider::new(
            PortainerSettings {
                url: Some(portainer.clone()),
                key_file: site.root().join("state/portainer-api-key.json"),
                ..Default::default()
            },
            Arc::new(Engines::new(&DockerSettings {
                manager: Some("realmgr".into()),
                ..Default::default()
            })),
        );
        let addr = phoenix::model::portainer::Object::Stack("hello".into()).address();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let live = rt.block_on(p.refresh(std::slice::from_ref(&addr))).unwrap();
        live[&addr].attrs["services"].clone()
    };
    assert_eq!(
        through_portainer,
        json!({"app": {"image": "busybox:latest", "replicas": 3, "env": {"GREETING": "hello"}}})
    );
    let (code, out) = run(&["apply", "--auto-approve"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        real_docker(
            &engine,
            &[
                "service",
                "inspect",
                "hello_app",
                "--format",
                "{{.Spec.Mode.Replicated.Replicas}}"
            ]
        ),
        "1"
    );
    let (code, out) = run(&["plan", "--detailed-exitcode"]);
    assert_eq!(code, Some(0), "{out}");
}
