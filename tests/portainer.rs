//! `portainer.*` through the CLI: a swarm site with Portainer and a stack is
//! planned, applied and re-planned empty against phoenix-lab (started once for
//! this binary, in process, on loopback) and the fake PVE; a service scaled or
//! re-imaged directly in the lab's engine shows as drift naming the stack and
//! the field; no secret reaches any output, the state or the logs.

#[allow(dead_code)]
mod common;
// support/mod.rs allows dead code for itself.
mod support;

use std::os::unix::fs::PermissionsExt;
use std::sync::OnceLock;

use common::{Site, stderr, stdout, vm_from_image};
use serde_json::{Value, json};

const ADMIN_PASSWORD: &str = "lab-admin-password-7f3c";
const STACK_SECRET: &str = "stack-db-secret-91ab";

/// The lab: Portainer's URL and the engines by hostname.
fn lab() -> &'static (String, Vec<(String, String)>) {
    static LAB: OnceLock<(String, Vec<(String, String)>)> = OnceLock::new();
    LAB.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().expect("runtime");
            rt.block_on(async move {
                let cfg: phoenix_lab::WorldConfig = serde_json::from_value(json!({"nodes": [
                    {"hostname": "Portainer", "addr": "192.0.2.111"},
                    {"hostname": "drphoenix", "addr": "192.0.2.112",
                     "aliases": ["portainer-agent.internal.thinkheads.ai"]},
                    {"hostname": "seedmgr", "addr": "192.0.2.121"},
                    {"hostname": "seedagent", "addr": "192.0.2.122"},
                    {"hostname": "upmgr", "addr": "192.0.2.131"},
                    {"hostname": "upagent", "addr": "192.0.2.132",
                     "aliases": ["upagent-a.lab", "upagent-b.lab"]}
                ]}))
                .expect("world");
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

fn engine(host: &str) -> String {
    lab()
        .1
        .iter()
        .find(|(h, _)| h == host)
        .map(|(_, u)| u.clone())
        .unwrap()
}

fn site() -> Site {
    let site = Site::new(&[]);
    let mut mgr = vm_from_image(1701, "Portainer", 111);
    mgr["swarm_role"] = json!("manager");
    mgr["portainer_role"] = json!("primary");
    let mut agent = vm_from_image(1702, "drphoenix", 112);
    agent["swarm_role"] = json!("worker");
    agent["portainer_role"] = json!("agent");
    agent["portainer_environment_name"] = json!("drphoenix");
    agent["portainer_agent_hostname"] = json!("portainer-agent.internal.thinkheads.ai");
    agent["docker_stacks"] = json!(["web"]);
    site.set_vms(&[mgr, agent]);
    let dir = site.root().join("stacks/web");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("docker-compose.yml"),
        "version: '3.8'\nservices:\n  app:\n    image: nginx:${TAG}\n    environment:\n      - MODE=${MODE}\n      - DB_PASSWORD=${DB_PASSWORD}\n    networks:\n      - public\nnetworks:\n  public:\n    external: true\n    name: traefik-public\n",
    )
    .unwrap();
    site.write(
        "stacks/web/phoenix.json",
        &json!({"environments": {"production": {
            "variables": [{"name": "TAG", "value": "1.25"}, {"name": "MODE", "value": "prod"},
                          {"name": "DB_PASSWORD", "value": "set-by-environment"}],
            "services": {"app": {"traefik_labels": [
                "traefik.enable=true",
                "traefik.http.routers.web.rule=Host(`web.lab.example.internal`)"]}}}}}),
    );
    site
}

fn run(site: &Site, args: &[&str]) -> (Option<i32>, String) {
    run_with(site, args, &[])
}

fn run_with(site: &Site, args: &[&str], extra: &[(&str, &str)]) -> (Option<i32>, String) {
    let (portainer, _) = lab();
    let hosts = lab()
        .1
        .iter()
        .map(|(h, u)| format!("{h}={u}"))
        .collect::<Vec<_>>()
        .join(",");
    let out = site
        .cmd(args)
        .env("PHOENIX_PORTAINER_URL", portainer)
        .env("PHOENIX_PORTAINER_PASSWORD", ADMIN_PASSWORD)
        .env("PHOENIX_DOCKER_HOST", hosts)
        .env("PHOENIX_SECRET_DB_PASSWORD", STACK_SECRET)
        .env("RUST_LOG", "phoenix=debug")
        .envs(extra.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code(),
        format!("{}{}", stdout(&out), stderr(&out)),
    )
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::new()
}

/// Change a service directly in the lab's engine, as `docker service update` would.
fn edit_service(name: &str, f: impl FnOnce(&mut Value)) {
    edit_service_on("Portainer", name, f)
}

fn edit_service_on(host: &str, name: &str, f: impl FnOnce(&mut Value)) {
    let base = engine(host);
    let s: Value = http()
        .get(format!("{base}/services/{name}"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let version = s["Version"]["Index"].as_u64().unwrap();
    let mut spec = s["Spec"].clone();
    f(&mut spec);
    let r = http()
        .post(format!("{base}/services/{name}/update?version={version}"))
        .json(&spec)
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().unwrap());
}

fn stack_update_date() -> Value {
    let (portainer, _) = lab();
    let key: Value =
        serde_json::from_str(&std::fs::read_to_string(KEY_FILE.get().unwrap()).unwrap()).unwrap();
    let stacks: Value = http()
        .get(format!("{portainer}/api/stacks"))
        .header("X-API-Key", key["api_key"].as_str().unwrap())
        .send()
        .unwrap()
        .json()
        .unwrap();
    stacks
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Name"] == "web")
        .unwrap()["UpdateDate"]
        .clone()
}

static KEY_FILE: OnceLock<std::path::PathBuf> = OnceLock::new();

#[test]
fn swarm_site_with_portainer_plans_applies_replans_empty_and_shows_service_drift() {
    let site = site();
    let mut outputs = Vec::new();

    let (code, out) = run(&site, &["plan", "--detailed-exitcode"]);
    assert_eq!(code, Some(2), "{out}");
    for want in [
        "portainer.admin",
        "portainer.endpoint.drphoenix",
        "portainer.stack.web",
        "(sensitive)",
        "traefik.enable=true",
    ] {
        assert!(out.contains(want), "{want} missing:\n{out}");
    }
    outputs.push(out);

    let (code, out) = run(&site, &["apply", "--auto-approve"]);
    assert_eq!(code, Some(0), "{out}");
    outputs.push(out);

    let key_file = site.root().join("state/portainer-api-key.json");
    KEY_FILE.set(key_file.clone()).ok();
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let key: Value = serde_json::from_str(&std::fs::read_to_string(&key_file).unwrap()).unwrap();
    let api_key = key["api_key"].as_str().unwrap().to_string();
    assert!(api_key.starts_with("ptr_"));

    let (code, out) = run(&site, &["plan", "--detailed-exitcode"]);
    assert_eq!(code, Some(0), "{out}");
    outputs.push(out);
    // A second apply deploys nothing: Portainer never saw an update.
    let (code, out) = run(&site, &["apply", "--auto-approve"]);
    assert_eq!(code, Some(0), "{out}");
    outputs.push(out);
    assert_eq!(stack_update_date(), json!(0));

    // The swarm runs the stack's secret from the environment, substituted by Portainer.
    let svc: Value = http()
        .get(format!("{}/services/web_app", engine("Portainer")))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let env = svc["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"].to_string();
    assert!(env.contains(STACK_SECRET), "{env}");
    assert_eq!(
        svc["Spec"]["Labels"]["traefik.enable"],
        json!("true"),
        "{svc}"
    );

    // Scaled and re-imaged behind phoenix's back.
    edit_service("web_app", |s| {
        s["Mode"]["Replicated"]["Replicas"] = json!(3);
        s["TaskTemplate"]["ContainerSpec"]["Image"] = json!("nginx:1.27");
    });
    let (code, out) = run(&site, &["plan", "--detailed-exitcode"]);
    assert_eq!(code, Some(2), "{out}");
    for want in [
        "portainer.stack.web",
        "services.app.replicas",
        "services.app.image",
    ] {
        assert!(out.contains(want), "{want} missing:\n{out}");
    }
    assert!(out.to_lowercase().contains("outside phoenix"), "{out}");
    outputs.push(out);
    let (code, out) = run(&site, &["apply", "--auto-approve"]);
    assert_eq!(code, Some(0), "{out}");
    outputs.push(out);
    let (code, out) = run(&site, &["plan", "--detailed-exitcode"]);
    assert_eq!(code, Some(0), "{out}");
    outputs.push(out);

    // A new variable value: a unified diff of the file and the env change; the stack is redeployed.
    let manifest = site.root().join("stacks/web/phoenix.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replace("1.25", "1.26")).unwrap();
    let (code, out) = run(&site, &["plan", "--detailed-exitcode"]);
    assert_eq!(code, Some(2), "{out}");
    for want in [
        "~ portainer.stack.web",
        "-    image: nginx:1.25",
        "+    image: nginx:1.26",
        "TAG",
    ] {
        assert!(out.contains(want), "{want} missing:\n{out}");
    }
    assert!(!out.contains("portainer.endpoint.drphoenix will"), "{out}");
    outputs.push(out);
    let (code, out) = run(&site, &["apply", "--auto-approve"]);
    assert_eq!(code, Some(0), "{out}");
    outputs.push(out);
    assert_ne!(stack_update_date(), json!(0));

    // A new secret value: shown as sensitive only, and the swarm gets it.
    const NEW_SECRET: &str = "stack-db-secret-rotated-55";
    let (code, out) = run_with(
        &site,
        &["plan", "--detailed-exitcode"],
        &[("PHOENIX_SECRET_DB_PASSWORD", NEW_SECRET)],
    );
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("secret_env"), "{out}");
    assert!(!out.contains(NEW_SECRET), "{out}");
    outputs.push(out);
    let (code, out) = run_with(
        &site,
        &["apply", "--auto-approve"],
        &[("PHOENIX_SECRET_DB_PASSWORD", NEW_SECRET)],
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains(NEW_SECRET), "{out}");
    let svc: Value = http()
        .get(format!("{}/services/web_app", engine("Portainer")))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(
        svc["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"]
            .to_string()
            .contains(NEW_SECRET)
    );
    let (code, out) = run_with(
        &site,
        &["plan", "--detailed-exitcode"],
        &[("PHOENIX_SECRET_DB_PASSWORD", NEW_SECRET)],
    );
    assert_eq!(code, Some(0), "{out}");
    let env = [("PHOENIX_SECRET_DB_PASSWORD", NEW_SECRET)];

    // The key lost: Portainer's admin exists already, so phoenix logs in (a wrong
    // password is refused by name, never taken for "initialised"), then makes a new key.
    std::fs::remove_file(&key_file).unwrap();
    let wrong = "not-the-admin-password-x";
    let (code, out) = run_with(
        &site,
        &["plan"],
        &[env[0], ("PHOENIX_PORTAINER_PASSWORD", wrong)],
    );
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("refuses the password"), "{out}");
    assert!(!out.contains(wrong), "{out}");
    let (code, out) = run_with(&site, &["plan", "--detailed-exitcode"], &env);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains(r#"api_key = "missing" -> "valid""#), "{out}");
    assert!(!out.contains("portainer.stack.web will"), "{out}");
    outputs.push(out);
    let (code, out) = run_with(&site, &["apply", "--auto-approve"], &env);
    assert_eq!(code, Some(0), "{out}");
    outputs.push(out);
    let new_key: Value =
        serde_json::from_str(&std::fs::read_to_string(&key_file).unwrap()).unwrap();
    assert_ne!(new_key["api_key"], json!(api_key));
    let (code, out) = run_with(&site, &["plan", "--detailed-exitcode"], &env);
    assert_eq!(code, Some(0), "{out}");
    outputs.push(out);
    let new_api_key = new_key["api_key"].as_str().unwrap().to_string();

    // No secret anywhere: outputs (with debug logs), the state, the manifests phoenix wrote.
    let state = std::fs::read_to_string(site.state_path()).unwrap();
    for secret in [
        ADMIN_PASSWORD,
        STACK_SECRET,
        NEW_SECRET,
        api_key.as_str(),
        new_api_key.as_str(),
    ] {
        assert!(!state.contains(secret), "a secret in the state");
        for o in &outputs {
            assert!(!o.contains(secret), "a secret in the output:\n{o}");
        }
    }
    assert!(state.contains("portainer.stack.web"));
}

/// The seed's own `qdrant_service` stack (its compose file and Traefik labels,
/// unchanged) on a second swarm of the same Portainer. It runs beside the test
/// above: whichever initialises the admin first, the other finds it
/// initialised (409) or existing and logs in.
#[test]
fn the_seeds_qdrant_stack_deploys_with_its_traefik_labels_and_replans_empty() {
    let site = Site::new(&[]);
    let mut mgr = vm_from_image(1711, "seedmgr", 121);
    mgr["swarm_role"] = json!("manager");
    mgr["portainer_role"] = json!("primary");
    let mut agent = vm_from_image(1712, "seedagent", 122);
    agent["swarm_role"] = json!("worker");
    agent["portainer_role"] = json!("agent");
    agent["docker_stacks"] = json!(["qdrant_service"]);
    site.set_vms(&[mgr, agent]);
    let seed = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/phoenix-seed/stacks/qdrant_service");
    let dir = site.root().join("stacks/qdrant_service");
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["docker-compose.yml", "phoenix.json"] {
        std::fs::copy(seed.join(f), dir.join(f)).unwrap();
    }

    let (code, out) = run(&site, &["plan", "--detailed-exitcode"]);
    assert_eq!(code, Some(2), "{out}");
    for want in [
        "+ portainer.endpoint.seedagent",
        "tcp://192.0.2.122:9001",
        "+ portainer.stack.qdrant_service",
        "traefik.http.routers.qdrant.rule=Host(`qdrant.internal.thinkheads.ai`)",
    ] {
        assert!(out.contains(want), "{want} missing:\n{out}");
    }
    let (code, out) = run(&site, &["apply", "--auto-approve"]);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = run(&site, &["plan", "--detailed-exitcode"]);
    assert_eq!(code, Some(0), "{out}");

    let svc: Value = http()
        .get(format!(
            "{}/services/qdrant_service_qdrant",
            engine("seedmgr")
        ))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let labels = &svc["Spec"]["Labels"];
    assert_eq!(
        labels["com.docker.stack.namespace"],
        json!("qdrant_service")
    );
    assert_eq!(
        labels["traefik.http.services.qdrant.loadbalancer.server.port"],
        json!("6333"),
        "{svc}"
    );
    assert_eq!(
        svc["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"],
        json!("qdrant/qdrant:latest")
    );
}

/// A Portainer API GET with the site's key.
fn portainer_get(site: &Site, path: &str) -> Value {
    let key: Value = serde_json::from_str(
        &std::fs::read_to_string(site.root().join("state/portainer-api-key.json")).unwrap(),
    )
    .unwrap();
    http()
        .get(format!("{}/api{path}", lab().0))
        .header("X-API-Key", key["api_key"].as_str().unwrap())
        .send()
        .unwrap()
        .json()
        .unwrap()
}

/// The stack's services as the Portainer provider reads them, with these
/// engines (by VM name) for a swarm whose manager is `upmgr`.
fn stack_services_with_engines(site: &Site, hosts: &[(&str, &str)]) -> Value {
    use phoenix::providers::ResourceProvider;
    use phoenix::providers::docker::{DockerSettings, Engines};
    use phoenix::providers::portainer::{PortainerProvider, PortainerSettings};
    let docker = DockerSettings {
        hosts: hosts
            .iter()
            .map(|(n, u)| (n.to_string(), u.to_string()))
            .collect(),
        manager: Some("upmgr".into()),
        ..Default::default()
    };
    let p = PortainerProvider::new(
        // The key the CLI's apply kept: no login needed.
        PortainerSettings {
            url: Some(lab().0.clone()),
            key_file: site.root().join("state/portainer-api-key.json"),
            ..Default::default()
        },
        std::sync::Arc::new(Engines::new(&docker)),
    );
    let addr = phoenix::model::portainer::Object::Stack("upweb".into()).address();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let live = rt
        .block_on(p.refresh(std::slice::from_ref(&addr)))
        .unwrap_or_else(|e| panic!("refresh without the manager's engine: {e}"));
    Value::Object(live[&addr].attrs.clone())
}

/// An agent environment's URL changes in place (`PUT /api/endpoints/{id}`):
/// same environment, its stack neither removed nor redeployed. Then the
/// stack's services are read through Portainer's Docker proxy when phoenix
/// has no engine for the swarm's manager, or cannot reach it, and a service
/// scaled behind phoenix's back still differs by field.
#[test]
fn an_environment_changes_in_place_and_stacks_are_read_through_portainer_without_the_engine() {
    let site = Site::new(&[]);
    let mut mgr = vm_from_image(1721, "upmgr", 131);
    mgr["swarm_role"] = json!("manager");
    mgr["portainer_role"] = json!("primary");
    let mut agent = vm_from_image(1722, "upagent", 132);
    agent["swarm_role"] = json!("worker");
    agent["portainer_role"] = json!("agent");
    agent["portainer_agent_hostname"] = json!("upagent-a.lab");
    agent["docker_stacks"] = json!(["upweb"]);
    site.set_vms(&[mgr.clone(), agent.clone()]);
    let dir = site.root().join("stacks/upweb");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("docker-compose.yml"),
        "version: '3.8'\nservices:\n  app:\n    image: nginx:1.25\n    environment:\n      - MODE=prod\n    deploy:\n      replicas: 2\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("phoenix.json"),
        r#"{"environments": {"production": {}}}"#,
    )
    .unwrap();

    let (code, out) = run(&site, &["apply", "--auto-approve"]);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = run(&site, &["plan", "--detailed-exitcode"]);
    assert_eq!(code, Some(0), "{out}");
    let find = |list: Value, name: &str| -> Value {
        list.as_array()
            .unwrap()
            .iter()
            .find(|e| e["Name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} missing from {list}"))
    };
    let ep = find(portainer_get(&site, "/endpoints"), "upagent");
    assert_eq!(ep["URL"], json!("tcp://upagent-a.lab:9001"));
    let stack = find(portainer_get(&site, "/stacks"), "upweb");

    // The agent moves to another name: an update of the environment, nothing else.
    agent["portainer_agent_hostname"] = json!("upagent-b.lab");
    site.set_vms(&[mgr, agent]);
    let (code, out) = run(&site, &["plan", "--detailed-exitcode"]);
    assert_eq!(code, Some(2), "{out}");
    for want in [
        "portainer.endpoint.upagent will be updated in-place",
        "tcp://upagent-b.lab:9001",
    ] {
        assert!(out.contains(want), "{want} missing:\n{out}");
    }
    assert!(!out.contains("must be replaced"), "{out}");
    assert!(!out.contains("portainer.stack.upweb will"), "{out}");
    // No --allow-destroy: nothing is destroyed.
    let (code, out) = run(&site, &["apply", "--auto-approve"]);
    assert_eq!(code, Some(0), "{out}");
    let after = find(portainer_get(&site, "/endpoints"), "upagent");
    assert_eq!(after["Id"], ep["Id"], "the same environment");
    assert_eq!(after["URL"], json!("tcp://upagent-b.lab:9001"));
    assert_eq!(after["TLSConfig"], ep["TLSConfig"]);
    let stack_after = find(portainer_get(&site, "/stacks"), "upweb");
    assert_eq!(stack_after["Id"], stack["Id"], "the stack was not removed");
    assert_eq!(stack_after["UpdateDate"], json!(0), "nor redeployed");
    let svc: Value = http()
        .get(format!("{}/services/upweb_app", engine("upmgr")))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        svc["Spec"]["Mode"]["Replicated"]["Replicas"],
        json!(2),
        "{svc}"
    );
    let (code, out) = run(&site, &["plan", "--detailed-exitcode"]);
    assert_eq!(code, Some(0), "{out}");

    // Scaled behind phoenix's back; phoenix has no engine for the manager,
    // then one that does not answer: the services come through Portainer.
    edit_service_on("upmgr", "upweb_app", |s| {
        s["Mode"]["Replicated"]["Replicas"] = json!(5);
    });
    let want = json!({"services": {"app": {"image": "nginx:1.25", "replicas": 2, "env": {"MODE": "prod"}}}});
    let want = want.as_object().unwrap();
    for hosts in [vec![], vec![("upmgr", "http://127.0.0.1:1")]] {
        let live = stack_services_with_engines(&site, &hosts);
        assert_eq!(live["services"]["app"]["replicas"], json!(5), "{live}");
        assert_eq!(
            phoenix::plan::diff::attr_differences("portainer", want, live.as_object().unwrap()),
            ["services.app.replicas"],
            "{live}"
        );
    }
    // With the manager's engine, the same.
    let live = stack_services_with_engines(&site, &[("upmgr", &engine("upmgr"))]);
    assert_eq!(live["services"]["app"]["replicas"], json!(5), "{live}");
}
