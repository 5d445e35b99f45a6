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
                    {"hostname": "vaultmgr", "addr": "192.0.2.141"},
                    {"hostname": "upmgr", "addr": "192.0.2.151"},
                    {"hostname": "upagent", "addr": "192.0.2.152",
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

/// `stacks/<name>/` with this compose file and `phoenix.json`.
fn write_stack(site: &Site, name: &str, compose: &str, manifest: &Value) {
    let dir = site.root().join("stacks").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("docker-compose.yml"), compose).unwrap();
    site.write(&format!("stacks/{name}/phoenix.json"), manifest);
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
    write_stack(
        &site,
        "web",
        "version: '3.8'\nservices:\n  app:\n    image: nginx:${TAG}\n    environment:\n      - MODE=${MODE}\n      - DB_PASSWORD=${DB_PASSWORD}\n    networks:\n      - public\nnetworks:\n  public:\n    external: true\n    name: traefik-public\n",
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

/// The seed's own stacks, `qdrant_service` (its compose file and Traefik
/// labels, unchanged) and `thinkheads_ai_app` (whose `${API_PORT}` is only in
/// its `configs/prod.env`), on a second swarm of the same Portainer. It runs
/// beside the test above: whichever initialises the admin first, the other
/// finds it initialised (409) or existing and logs in.
#[test]
fn the_seeds_stacks_deploy_with_their_labels_and_env_files_and_replan_empty() {
    const DB_PASS: &str = "thinkheads-db-pass-5e1d";
    let site = Site::new(&[]);
    let mut mgr = vm_from_image(1711, "seedmgr", 121);
    mgr["swarm_role"] = json!("manager");
    mgr["portainer_role"] = json!("primary");
    let mut agent = vm_from_image(1712, "seedagent", 122);
    agent["swarm_role"] = json!("worker");
    agent["portainer_role"] = json!("agent");
    agent["docker_stacks"] = json!(["qdrant_service", "thinkheads_ai_app"]);
    site.set_vms(&[mgr, agent]);
    let seed = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/phoenix-seed/stacks");
    for (stack, files) in [
        (
            "qdrant_service",
            &["docker-compose.yml", "phoenix.json"][..],
        ),
        (
            "thinkheads_ai_app",
            &[
                "docker-compose.yml",
                "phoenix.json",
                "configs/prod.env",
                "configs/test.env",
            ][..],
        ),
    ] {
        let dir = site.root().join("stacks").join(stack);
        std::fs::create_dir_all(dir.join("configs")).unwrap();
        for f in files {
            std::fs::copy(seed.join(stack).join(f), dir.join(f)).unwrap();
        }
    }
    let run = |site: &Site, args: &[&str]| {
        run_with(site, args, &[("PHOENIX_SECRET_DATABASE_PASS", DB_PASS)])
    };

    let (code, out) = run(&site, &["plan", "--detailed-exitcode"]);
    assert_eq!(code, Some(2), "{out}");
    for want in [
        "+ portainer.stack.thinkheads_ai_app",
        "- 8000:8000",
        "- API_PORT=8000",
        "+ API_PORT      = \"8000\"",
    ] {
        assert!(out.contains(want), "{want} missing:\n{out}");
    }
    assert!(!out.contains("${API_PORT}"), "{out}");
    assert!(!out.contains(DB_PASS), "{out}");
    assert!(!out.contains("PROD_SECRET_PASSWORD"), "{out}");
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
    let app: Value = http()
        .get(format!(
            "{}/services/thinkheads_ai_app_thinkheads_ai_app",
            engine("seedmgr")
        ))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let spec = &app["Spec"]["TaskTemplate"]["ContainerSpec"];
    assert_eq!(spec["Image"], json!("thinkheads_ai_app:latest"), "{app}");
    assert!(
        spec["Env"]
            .as_array()
            .is_some_and(|e| e.contains(&json!("API_PORT=8000"))),
        "{app}"
    );
}

/// Plans need no secret: without the admin password or a swarm secret's value
/// a swarm site validates clean, a first plan (its VMs not created yet) does
/// not reach the engines and says what the apply will need, and the apply
/// that needs the password stops at `portainer.admin` with a clear error.
#[test]
fn plans_need_no_secrets_and_the_apply_that_does_says_so() {
    let site = Site::new(&[]);
    let mut mgr = vm_from_image(1721, "nosecretmgr", 131);
    mgr["swarm_role"] = json!("manager");
    mgr["portainer_role"] = json!("primary");
    // Its agent (a worker) deploys the stack.
    let mut agent = vm_from_image(1722, "nosecretagent", 132);
    agent["swarm_role"] = json!("worker");
    agent["portainer_role"] = json!("agent");
    agent["docker_stacks"] = json!(["vault"]);
    site.set_vms(&[mgr, agent]);
    write_stack(
        &site,
        "vault",
        "services:\n  app:\n    image: busybox\n    secrets: [vault_token]\nsecrets:\n  vault_token:\n    external: true\n",
        &json!({"environments": {"production": {"variables": [
            {"name": "VAULT_PASSWORD", "value": ""}]}}}),
    );
    let no_secrets = |args: &[&str]| {
        let out = site
            .cmd(args)
            .env("PHOENIX_PORTAINER_URL", &lab().0)
            .env(
                "PHOENIX_DOCKER_HOST",
                format!("nosecretmgr={}", engine("seedmgr")),
            )
            .env_remove("PHOENIX_PORTAINER_PASSWORD")
            .env_remove("PHOENIX_PORTAINER_PASSWORD_FILE")
            .env_remove("PHOENIX_SECRET_VAULT_TOKEN")
            .output()
            .unwrap();
        (
            out.status.code(),
            format!("{}{}", stdout(&out), stderr(&out)),
        )
    };

    let (code, out) = no_secrets(&["validate"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("0 errors"), "{out}");

    let (code, out) = no_secrets(&["plan", "--detailed-exitcode"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("+ portainer.admin"), "{out}");
    assert!(out.contains("the apply needs the admin password"), "{out}");
    assert!(
        out.contains("PHOENIX_SECRET_VAULT_TOKEN or secrets/vault_token"),
        "{out}"
    );
    assert!(
        out.contains("no value is set for VAULT_PASSWORD (PHOENIX_SECRET_VAULT_PASSWORD)"),
        "{out}"
    );
    // The VM does not exist yet: nothing inside it was read.
    assert!(!out.contains("Refreshing 1 portainer"), "{out}");
    assert!(!out.contains("swarm object(s)"), "{out}");

    let (code, out) = no_secrets(&["apply", "--auto-approve", "--target", "portainer.admin"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("portainer.admin needs the Portainer admin password"),
        "{out}"
    );
    assert!(
        out.contains("help: set PHOENIX_PORTAINER_PASSWORD"),
        "{out}"
    );
    // What it could do is done and kept.
    assert!(site.state().to_string().contains("vm.1721"), "{out}");
}

/// A stack's swarm secret: the stack is deployed pointing at the secret's
/// version (`docker stack deploy` needs a name that exists), a new value
/// rotates the secret and redeploys the stack onto the new version, the old
/// one is removed, and a plan without the value changes nothing.
#[test]
fn stacks_use_their_secrets_by_version_and_follow_a_rotation() {
    let site = Site::new(&[]);
    let mut vm = vm_from_image(1731, "vaultmgr", 141);
    vm["swarm_role"] = json!("manager");
    vm["portainer_role"] = json!("agent");
    vm["docker_stacks"] = json!(["vault"]);
    site.set_vms(&[vm]);
    write_stack(
        &site,
        "vault",
        "services:\n  app:\n    image: busybox:1.36\n    secrets:\n      - source: vault_token\n        target: token\nsecrets:\n  vault_token:\n    external: true\n",
        &json!({"environments": {}}),
    );
    let with = |args: &[&str], value: &str| {
        run_with(&site, args, &[("PHOENIX_SECRET_VAULT_TOKEN", value)])
    };
    let secret_of_service = || -> String {
        let svc: Value = http()
            .get(format!("{}/services/vault_app", engine("vaultmgr")))
            .send()
            .unwrap()
            .json()
            .unwrap();
        svc["Spec"]["TaskTemplate"]["ContainerSpec"]["Secrets"][0]["SecretName"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let versions = || -> Vec<String> {
        let list: Value = http()
            .get(format!("{}/secrets", engine("vaultmgr")))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let mut v: Vec<String> = list
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["Spec"]["Name"].as_str())
            .filter(|n| n.starts_with("vault_token"))
            .map(str::to_string)
            .collect();
        v.sort();
        v
    };

    let (code, out) = with(&["apply", "--auto-approve"], "token-one-8c1f");
    assert_eq!(code, Some(0), "{out}");
    let first = secret_of_service();
    assert!(first.starts_with("vault_token-"), "{first}");
    assert_eq!(versions(), std::slice::from_ref(&first));
    let (code, out) = with(&["plan", "--detailed-exitcode"], "token-one-8c1f");
    assert_eq!(code, Some(0), "{out}");

    let (code, out) = with(&["plan", "--detailed-exitcode"], "token-two-0d9e");
    assert_eq!(code, Some(2), "{out}");
    for want in [
        "~ swarm.secret.vault_token",
        "~ portainer.stack.vault",
        "secrets",
    ] {
        assert!(out.contains(want), "{want} missing:\n{out}");
    }
    assert!(!out.contains("token-two"), "{out}");
    let (code, out) = with(&["apply", "--auto-approve"], "token-two-0d9e");
    assert_eq!(code, Some(0), "{out}");
    let second = secret_of_service();
    assert!(
        second.starts_with("vault_token-") && second != first,
        "{second}"
    );
    assert_eq!(
        versions(),
        std::slice::from_ref(&second),
        "the old version is removed"
    );
    let (code, out) = with(&["plan", "--detailed-exitcode"], "token-two-0d9e");
    assert_eq!(code, Some(0), "{out}");

    // Without the value (a CI plan): nothing to change, and the plan says why.
    let out = site
        .cmd(&["plan", "--detailed-exitcode"])
        .env("PHOENIX_PORTAINER_URL", &lab().0)
        .env(
            "PHOENIX_DOCKER_HOST",
            format!("vaultmgr={}", engine("vaultmgr")),
        )
        .env_remove("PHOENIX_SECRET_VAULT_TOKEN")
        .output()
        .unwrap();
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("whether it changed is not known"), "{text}");
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
    let mut mgr = vm_from_image(1751, "upmgr", 151);
    mgr["swarm_role"] = json!("manager");
    mgr["portainer_role"] = json!("primary");
    let mut agent = vm_from_image(1752, "upagent", 152);
    agent["swarm_role"] = json!("worker");
    agent["portainer_role"] = json!("agent");
    agent["portainer_agent_hostname"] = json!("upagent-a.lab");
    agent["docker_stacks"] = json!(["upweb"]);
    site.set_vms(&[mgr.clone(), agent.clone()]);
    write_stack(
        &site,
        "upweb",
        "version: '3.8'\nservices:\n  app:\n    image: nginx:1.25\n    environment:\n      - MODE=prod\n    deploy:\n      replicas: 2\n",
        &json!({"environments": {"production": {}}}),
    );

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
