//! The lab against the published references: statuses, field names and auth
//! behaviour a client sees, through HTTP as a client would.

use std::collections::BTreeSet;

use phoenix_lab::{Faults, Lab, WorldConfig};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

async fn lab() -> (Lab, Client) {
    let cfg: WorldConfig = serde_json::from_str("{}").unwrap();
    let lab = Lab::start(cfg, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    (lab, Client::new())
}

fn docker(lab: &Lab, host: &str) -> String {
    lab.docker_urls()
        .into_iter()
        .find(|(h, _)| h == host)
        .map(|(_, u)| u)
        .unwrap()
}

async fn send(c: &Client, method: &str, url: String, body: Option<Value>) -> (StatusCode, Value) {
    let mut rb = c.request(method.parse().unwrap(), url);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb.send().await.unwrap();
    let s = r.status();
    let text = r.text().await.unwrap();
    (
        s,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Every route the lab answers is one the references list (no invented API).
#[test]
fn every_route_is_in_the_references() {
    let specs = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/specs");
    let Ok(docker) =
        std::fs::read_to_string(format!("{specs}/docker/requested-endpoints-v1.55.txt"))
    else {
        eprintln!("skipped: ../shared/specs is not beside the repository");
        return;
    };
    let portainer =
        std::fs::read_to_string(format!("{specs}/portainer/requested-endpoints-ce.txt")).unwrap();
    let mut listed = BTreeSet::new();
    // Portainer's own annotations of its handlers (2.23.0): the routes the
    // requested list leaves out, such as `PUT /api/endpoints/{id}`.
    let annotations: Value = serde_json::from_str(
        &std::fs::read_to_string(format!(
            "{specs}/portainer/portainer-ce-2.23.0-annotations.json"
        ))
        .unwrap(),
    )
    .unwrap();
    for (path, methods) in annotations["paths"].as_object().unwrap() {
        for m in methods.as_object().unwrap().keys() {
            listed.insert(format!("{m} /api{path}"));
        }
    }
    for l in docker.lines().chain(portainer.lines()) {
        let l = l.trim_start_matches('=').trim();
        let mut it = l.split_whitespace();
        if let (Some(m), Some(p)) = (it.next(), it.next())
            && p.starts_with('/')
        {
            listed.insert(format!("{m} {p}"));
        }
    }
    // The routes the lab serves (docker.rs and portainer.rs), spelled as the references do.
    let served = [
        "GET /swarm",
        "POST /swarm/init",
        "POST /swarm/join",
        "POST /swarm/leave",
        "POST /swarm/update",
        "GET /nodes",
        "GET /nodes/{id}",
        "POST /nodes/{id}/update",
        "DELETE /nodes/{id}",
        "GET /networks",
        "POST /networks/create",
        "DELETE /networks/{id}",
        "GET /secrets",
        "POST /secrets/create",
        "POST /secrets/{id}/update",
        "DELETE /secrets/{id}",
        "GET /services",
        "POST /services/create",
        "GET /services/{id}",
        "POST /services/{id}/update",
        "DELETE /services/{id}",
        "GET /tasks",
        "GET /info",
        "GET /api/system/status",
        "GET /api/users/admin/check",
        "POST /api/users/admin/init",
        "POST /api/auth",
        "POST /api/users/{id}/tokens",
        "GET /api/users/{id}/tokens",
        "GET /api/endpoints",
        "POST /api/endpoints",
        "GET /api/endpoints/{id}",
        "PUT /api/endpoints/{id}",
        "DELETE /api/endpoints/{id}",
        "GET /api/stacks",
        "POST /api/stacks/create/swarm/string",
        "GET /api/stacks/{id}",
        "PUT /api/stacks/{id}",
        "DELETE /api/stacks/{id}",
        "GET /api/stacks/{id}/file",
    ];
    let missing: Vec<&str> = served
        .iter()
        .copied()
        .filter(|r| !listed.contains(*r))
        .collect();
    assert!(
        missing.is_empty(),
        "served but not in the references: {missing:?}"
    );
}

#[tokio::test]
async fn admin_init_once_then_409_and_check_tells_them_apart() {
    let (lab, c) = lab().await;
    let p = lab.portainer_url();
    let (s, _) = send(&c, "GET", format!("{p}/api/users/admin/check"), None).await;
    assert_eq!(s, 404, "no admin yet");
    let (s, st) = send(&c, "GET", format!("{p}/api/system/status"), None).await;
    assert_eq!(s, 200);
    assert!(
        st["InstanceID"].is_string() && st["Version"].is_string(),
        "{st}"
    );
    // Go matches keys case-insensitively.
    let (s, short) = send(
        &c,
        "POST",
        format!("{p}/api/users/admin/init"),
        Some(json!({"username": "admin", "password": "short"})),
    )
    .await;
    assert_eq!(s, 400, "{short}");
    let (s, u) = send(
        &c,
        "POST",
        format!("{p}/api/users/admin/init"),
        Some(json!({"username": "admin", "password": "a-long-password"})),
    )
    .await;
    assert_eq!(s, 200, "{u}");
    assert_eq!(u["Username"], "admin");
    assert_eq!(u["Role"], 1);
    let (s, e) = send(
        &c,
        "POST",
        format!("{p}/api/users/admin/init"),
        Some(json!({"Username": "admin", "Password": "a-long-password"})),
    )
    .await;
    assert_eq!(s, 409, "{e}");
    assert!(e["message"].is_string() && e["details"].is_string());
    let (s, _) = send(&c, "GET", format!("{p}/api/users/admin/check"), None).await;
    assert_eq!(s, 204);
    let (s, _) = send(
        &c,
        "POST",
        format!("{p}/api/auth"),
        Some(json!({"Username": "admin", "Password": "wrong-password!"})),
    )
    .await;
    assert_eq!(s, 422);
    lab.shutdown().await;
}

#[tokio::test]
async fn api_keys_need_a_jwt_and_requests_use_one_credential() {
    let (lab, c) = lab().await;
    let p = lab.portainer_url();
    send(
        &c,
        "POST",
        format!("{p}/api/users/admin/init"),
        Some(json!({"Username": "admin", "Password": "a-long-password"})),
    )
    .await;
    let (_, a) = send(
        &c,
        "POST",
        format!("{p}/api/auth"),
        Some(json!({"Username": "admin", "Password": "a-long-password"})),
    )
    .await;
    let jwt = a["jwt"].as_str().unwrap().to_string();
    let r = c.get(format!("{p}/api/endpoints")).send().await.unwrap();
    assert_eq!(r.status(), 401, "no credential");
    let r = c
        .post(format!("{p}/api/users/1/tokens"))
        .bearer_auth(&jwt)
        .json(&json!({"description": "phoenix", "password": "a-long-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let k: Value = r.json().await.unwrap();
    let key = k["rawAPIKey"].as_str().unwrap().to_string();
    assert_eq!(k["apiKey"]["userId"], 1);
    let r = c
        .get(format!("{p}/api/endpoints"))
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(format!("{p}/api/endpoints"))
        .bearer_auth(&jwt)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(format!("{p}/api/endpoints"))
        .bearer_auth(&jwt)
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a JWT and an API key together are refused");
    let r = c
        .post(format!("{p}/api/users/1/tokens"))
        .header("X-API-Key", &key)
        .json(&json!({"description": "again", "password": "a-long-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "an API key cannot mint an API key");
    lab.shutdown().await;
}

#[tokio::test]
async fn swarm_lifecycle_with_engine_errors() {
    let (lab, c) = lab().await;
    let m = docker(&lab, "Portainer");
    let wk = docker(&lab, "drphoenix");
    let (s, e) = send(&c, "GET", format!("{m}/v1.47/swarm"), None).await;
    assert_eq!(s, 503, "{e}");
    let (s, id) = send(
        &c,
        "POST",
        format!("{m}/v1.47/swarm/init"),
        Some(json!({"advertiseaddr": "10.0.0.111", "listenaddr": "0.0.0.0:2377"})),
    )
    .await;
    assert_eq!(s, 200);
    assert!(id.is_string());
    let (s, _) = send(
        &c,
        "POST",
        format!("{m}/swarm/init"),
        Some(json!({"AdvertiseAddr": "10.0.0.111"})),
    )
    .await;
    assert_eq!(s, 503, "already part of a swarm");
    let (_, sw) = send(&c, "GET", format!("{m}/swarm"), None).await;
    let token = sw["JoinTokens"]["Worker"].as_str().unwrap().to_string();
    let (s, _) = send(
        &c,
        "POST",
        format!("{wk}/swarm/join"),
        Some(json!({"JoinToken": "SWMTKN-1-bad", "RemoteAddrs": ["10.0.0.111:2377"]})),
    )
    .await;
    assert_eq!(s, 400);
    let (s, _) = send(
        &c,
        "POST",
        format!("{wk}/swarm/join"),
        Some(json!({"JoinToken": token, "RemoteAddrs": ["10.0.0.111:2377"]})),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = send(&c, "GET", format!("{wk}/nodes"), None).await;
    assert_eq!(s, 503, "a worker cannot list nodes");
    let (_, nodes) = send(&c, "GET", format!("{m}/nodes"), None).await;
    assert_eq!(nodes.as_array().unwrap().len(), 2);
    let w = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["Description"]["Hostname"] == "drphoenix")
        .unwrap()
        .clone();
    let v = w["Version"]["Index"].as_u64().unwrap();
    let nid = w["ID"].as_str().unwrap();
    let spec = json!({"Labels": {"gpu": "false"}, "Role": "worker", "Availability": "active"});
    let (s, e) = send(
        &c,
        "POST",
        format!("{m}/nodes/{nid}/update?version={}", v + 100),
        Some(spec.clone()),
    )
    .await;
    assert_eq!(s, 500, "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("update out of sequence")
    );
    let (s, _) = send(
        &c,
        "POST",
        format!("{m}/nodes/{nid}/update?version={v}"),
        Some(spec),
    )
    .await;
    assert_eq!(s, 200);
    // Secrets: data never read back; a name is taken once.
    let (s, sec) = send(
        &c,
        "POST",
        format!("{m}/secrets/create"),
        Some(json!({"Name": "pw", "Data": "c2VjcmV0"})),
    )
    .await;
    assert_eq!(s, 201);
    let (s, _) = send(
        &c,
        "POST",
        format!("{m}/secrets/create"),
        Some(json!({"Name": "pw", "Data": "c2VjcmV0"})),
    )
    .await;
    assert_eq!(s, 409);
    let (_, got) = send(
        &c,
        "GET",
        format!("{m}/secrets/{}", sec["ID"].as_str().unwrap()),
        None,
    )
    .await;
    assert!(got["Spec"].get("Data").is_none(), "{got}");
    let (s, n) = send(
        &c,
        "POST",
        format!("{m}/networks/create"),
        Some(json!({"Name": "traefik-public", "Driver": "overlay", "Attachable": true})),
    )
    .await;
    assert_eq!(s, 201, "{n}");
    let (s, _) = send(
        &c,
        "POST",
        format!("{m}/networks/create"),
        Some(json!({"Name": "traefik-public", "Driver": "overlay"})),
    )
    .await;
    assert_eq!(s, 409);
    // A node down refuses connections and shows down in the swarm.
    lab.set_faults(Faults {
        down: vec!["drphoenix".into()],
        ..Default::default()
    })
    .await;
    assert!(
        c.get(format!("{wk}/info")).send().await.is_err(),
        "a down node refuses connections"
    );
    let (_, nodes) = send(&c, "GET", format!("{m}/nodes"), None).await;
    let w = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["Description"]["Hostname"] == "drphoenix")
        .unwrap()
        .clone();
    assert_eq!(w["Status"]["State"], "down");
    lab.set_faults(Faults::default()).await;
    let (s, info) = send(&c, "GET", format!("{wk}/info"), None).await;
    assert_eq!(s, 200);
    assert_eq!(info["Swarm"]["LocalNodeState"], "active");
    // Injected errors and latency.
    lab.set_faults(Faults {
        latency_ms: 50,
        errors: vec![phoenix_lab::ErrorRule {
            server: None,
            method: Some("GET".into()),
            path: "/info".into(),
            status: 500,
            message: "boom".into(),
            times: Some(1),
            rate: None,
        }],
        down: vec![],
        seed: None,
    })
    .await;
    let t = std::time::Instant::now();
    let (s, e) = send(&c, "GET", format!("{m}/info"), None).await;
    assert_eq!((s.as_u16(), e["message"].as_str()), (500, Some("boom")));
    assert!(t.elapsed() >= std::time::Duration::from_millis(50));
    let (s, _) = send(&c, "GET", format!("{m}/info"), None).await;
    assert_eq!(s, 200, "the rule answered once");
    lab.shutdown().await;
}

#[tokio::test]
async fn endpoints_are_forms_and_stacks_become_services() {
    let (lab, c) = lab().await;
    let p = lab.portainer_url();
    let m = docker(&lab, "Portainer");
    let wk = docker(&lab, "drphoenix");
    send(
        &c,
        "POST",
        format!("{m}/swarm/init"),
        Some(json!({"AdvertiseAddr": "10.0.0.111"})),
    )
    .await;
    let (_, sw) = send(&c, "GET", format!("{m}/swarm"), None).await;
    send(
        &c,
        "POST",
        format!("{wk}/swarm/join"),
        Some(json!({"JoinToken": sw["JoinTokens"]["Worker"], "RemoteAddrs": ["10.0.0.111"]})),
    )
    .await;
    send(
        &c,
        "POST",
        format!("{p}/api/users/admin/init"),
        Some(json!({"Username": "admin", "Password": "a-long-password"})),
    )
    .await;
    let (_, a) = send(
        &c,
        "POST",
        format!("{p}/api/auth"),
        Some(json!({"Username": "admin", "Password": "a-long-password"})),
    )
    .await;
    let jwt = a["jwt"].as_str().unwrap().to_string();
    // The seed's JSON body: Go's FormValue finds no name in it.
    let r = c.post(format!("{p}/api/endpoints")).bearer_auth(&jwt)
        .json(&json!({"Name": "drphoenix", "URL": "tcp://portainer-agent.internal.thinkheads.ai:9001", "Type": 2, "TLS": false}))
        .send().await.unwrap();
    assert_eq!(r.status(), 400);
    let form = reqwest::multipart::Form::new()
        .text("Name", "drphoenix")
        .text("EndpointCreationType", "2")
        .text("URL", "tcp://portainer-agent.internal.thinkheads.ai:9001")
        .text("TLS", "true")
        .text("TLSSkipVerify", "true")
        .text("TLSSkipClientVerify", "true");
    let r = c
        .post(format!("{p}/api/endpoints"))
        .bearer_auth(&jwt)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ep: Value = r.json().await.unwrap();
    assert_eq!(ep["Type"], 2);
    assert_eq!(ep["TLSConfig"]["TLSSkipVerify"], true);
    let r = c
        .post(format!("{p}/api/endpoints"))
        .bearer_auth(&jwt)
        .form(&[
            ("Name", "drphoenix"),
            ("EndpointCreationType", "2"),
            ("URL", "tcp://10.0.0.102:9001"),
            ("TLS", "true"),
            ("TLSSkipVerify", "true"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "a name is unique");
    let eid = ep["Id"].as_u64().unwrap();
    let file = "version: '3.8'\nservices:\n  qdrant:\n    image: qdrant/qdrant:${TAG}\n    deploy:\n      labels:\n        - traefik.enable=true\n";
    let r = c.post(format!("{p}/api/stacks/create/swarm/string?endpointId={eid}")).bearer_auth(&jwt)
        .json(&json!({"Name": "qdrant_service", "SwarmID": sw["ID"], "StackFileContent": file, "Env": [{"name": "TAG", "value": "v1"}]}))
        .send().await.unwrap();
    assert_eq!(r.status(), 200);
    let st: Value = r.json().await.unwrap();
    assert_eq!(st["Type"], 1);
    assert_eq!(st["Env"][0]["name"], "TAG");
    // The services exist in the swarm, seen through the proxy and the engine.
    let r = c
        .get(format!("{p}/api/endpoints/{eid}/docker/services"))
        .bearer_auth(&jwt)
        .send()
        .await
        .unwrap();
    let svcs: Value = r.json().await.unwrap();
    assert_eq!(svcs[0]["Spec"]["Name"], "qdrant_service_qdrant");
    assert_eq!(
        svcs[0]["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"],
        "qdrant/qdrant:v1"
    );
    assert_eq!(
        svcs[0]["Spec"]["Labels"]["com.docker.stack.namespace"],
        "qdrant_service"
    );
    // The proxy honours the service filters as the Engine does (tests/docker.rs
    // holds the lab's engine to the real one on the same filters).
    for (filters, want) in [
        (
            json!({"label": ["com.docker.stack.namespace=qdrant_service"]}),
            1,
        ),
        (
            json!({"label": {"com.docker.stack.namespace=qdrant_service": true}}),
            1,
        ),
        (json!({"label": ["com.docker.stack.namespace="]}), 1),
        (json!({"label": ["com.docker.stack.namespace=other"]}), 0),
        (
            json!({"label": ["com.docker.stack.namespace=qdrant_service", "absent"]}),
            0,
        ),
        (json!({"name": ["qdrant_service_q"]}), 1),
        (json!({"name": ["service"]}), 0),
        (json!({"mode": ["replicated"]}), 1),
        (json!({"mode": ["global"]}), 0),
    ] {
        let r = c
            .get(format!("{p}/api/endpoints/{eid}/docker/services"))
            .query(&[("filters", filters.to_string())])
            .bearer_auth(&jwt)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{filters}");
        let list: Value = r.json().await.unwrap();
        assert_eq!(list.as_array().unwrap().len(), want, "{filters}: {list}");
    }
    let r = c
        .get(format!("{p}/api/endpoints/{eid}/docker/services"))
        .query(&[("filters", r#"{"Label": ["x"]}"#)])
        .bearer_auth(&jwt)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "an unknown filter key is the Engine's 400");
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["message"], "Invalid filter 'Label'");

    // An environment changes in place: its id and stacks stay.
    let other = c
        .post(format!("{p}/api/endpoints"))
        .bearer_auth(&jwt)
        .form(&[
            ("Name", "other"),
            ("EndpointCreationType", "2"),
            ("URL", "tcp://10.0.0.111:9001"),
            ("TLS", "true"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
    let put = |body: Value| {
        c.put(format!("{p}/api/endpoints/{eid}"))
            .bearer_auth(&jwt)
            .json(&body)
            .send()
    };
    let r = put(json!({"URL": "tcp://10.0.0.102:9001", "GroupID": 2}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["Id"], ep["Id"]);
    assert_eq!(e["URL"], "tcp://10.0.0.102:9001");
    assert_eq!(e["GroupId"], 2);
    assert_eq!(e["TLSConfig"], ep["TLSConfig"], "TLS absent: unchanged");
    // Go's keys match case-insensitively; TLS false clears the skip flags.
    let r = put(json!({"tls": false, "tlsskipverify": true}))
        .await
        .unwrap();
    let e: Value = r.json().await.unwrap();
    assert_eq!(
        e["TLSConfig"],
        json!({"TLS": false, "TLSSkipVerify": false, "TLSSkipClientVerify": false})
    );
    let r = put(json!({"TLS": true, "TLSSkipVerify": true, "TLSSkipClientVerify": true}))
        .await
        .unwrap();
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["TLSConfig"], ep["TLSConfig"]);
    assert_eq!(put(json!({"Name": "other"})).await.unwrap().status(), 409);
    assert_eq!(put(json!({"URL": 5})).await.unwrap().status(), 400);
    assert_eq!(put(json!("x")).await.unwrap().status(), 400);
    let r = c
        .put(format!("{p}/api/endpoints/999"))
        .bearer_auth(&jwt)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = c
        .get(format!("{p}/api/endpoints/{eid}/docker/services"))
        .bearer_auth(&jwt)
        .send()
        .await
        .unwrap();
    let svcs: Value = r.json().await.unwrap();
    assert_eq!(
        svcs[0]["Spec"]["Name"], "qdrant_service_qdrant",
        "still there"
    );

    let sid = st["Id"].as_u64().unwrap();
    let r = c
        .get(format!("{p}/api/stacks/{sid}/file"))
        .bearer_auth(&jwt)
        .send()
        .await
        .unwrap();
    let f: Value = r.json().await.unwrap();
    assert_eq!(f["StackFileContent"], file);
    let r = c
        .delete(format!("{p}/api/stacks/{sid}?endpointId={eid}"))
        .bearer_auth(&jwt)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (_, svcs) = send(&c, "GET", format!("{m}/services"), None).await;
    assert_eq!(svcs, json!([]));
    lab.shutdown().await;
}
