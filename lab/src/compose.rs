//! What `docker stack deploy` does with a compose file, for Portainer's Swarm
//! stacks: substitute the environment, then create or update one service per
//! compose service (`<stack>_<service>`, labelled
//! `com.docker.stack.namespace=<stack>`), the stack's own overlay networks, and
//! with `prune` remove the stack's services the file no longer has.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::world::Cluster;

pub const NAMESPACE: &str = "com.docker.stack.namespace";

/// `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `$VAR` and `$$`, as compose reads them.
pub fn substitute(text: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'$' {
            let ch = text[i..].chars().next().unwrap_or_default();
            out.push(ch);
            i += ch.len_utf8().max(1);
            continue;
        }
        match b.get(i + 1) {
            Some(b'$') => {
                out.push('$');
                i += 2;
            }
            Some(b'{') => {
                let Some(end) = text[i + 2..].find('}') else {
                    out.push_str(&text[i..]);
                    break;
                };
                let inner = &text[i + 2..i + 2 + end];
                let value = if let Some((name, def)) = inner.split_once(":-") {
                    env.get(name)
                        .filter(|v| !v.is_empty())
                        .cloned()
                        .unwrap_or_else(|| def.to_string())
                } else if let Some((name, def)) = inner.split_once('-') {
                    env.get(name).cloned().unwrap_or_else(|| def.to_string())
                } else {
                    env.get(inner).cloned().unwrap_or_default()
                };
                out.push_str(&value);
                i += 3 + end;
            }
            Some(c) if c.is_ascii_alphabetic() || *c == b'_' => {
                let start = i + 1;
                let mut j = start;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                    j += 1;
                }
                out.push_str(env.get(&text[start..j]).map_or("", String::as_str));
                i = j;
            }
            _ => {
                out.push('$');
                i += 1;
            }
        }
    }
    out
}

/// A compose map or list of `k=v` as a JSON object.
fn kv_map(v: &Value) -> Map<String, Value> {
    let mut out = Map::new();
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let s = match x {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                };
                out.insert(k.clone(), json!(s));
            }
        }
        Value::Array(a) => {
            for x in a.iter().filter_map(Value::as_str) {
                let (k, val) = x.split_once('=').unwrap_or((x, ""));
                out.insert(k.to_string(), json!(val));
            }
        }
        _ => {}
    }
    out
}

/// Deploy (or update) `stack` from `file` into the cluster.
pub fn deploy(
    c: &mut Cluster,
    stack: &str,
    file: &str,
    env: &BTreeMap<String, String>,
    prune: bool,
) -> Result<(), String> {
    let text = substitute(file, env);
    let doc: Value =
        serde_yaml_ng::from_str(&text).map_err(|e| format!("invalid compose file: {e}"))?;
    let services = doc["services"]
        .as_object()
        .ok_or("the compose file has no services")?;
    let ns_label = json!({NAMESPACE: stack});

    // Networks: the stack's own are created; external ones must exist.
    let mut net_ids: BTreeMap<String, String> = BTreeMap::new();
    let declared = doc["networks"].as_object().cloned().unwrap_or_default();
    let mut wanted: Vec<String> = declared.keys().cloned().collect();
    if services.values().any(|s| s.get("networks").is_none()) {
        wanted.push("default".into());
    }
    for key in wanted {
        let decl = declared.get(&key).cloned().unwrap_or(Value::Null);
        let external = decl["external"] == true || decl["external"].is_object();
        let real_name = match decl["name"].as_str() {
            Some(n) => n.to_string(),
            None if external => key.clone(),
            None => format!("{stack}_{key}"),
        };
        let existing = c
            .networks
            .values()
            .find(|n| n.name() == real_name)
            .map(|n| n.id.clone());
        let id = match existing {
            Some(id) => id,
            None if external => {
                return Err(format!(
                    "network {real_name:?} is declared as external, but could not be found. You need to create a swarm-scoped network before the stack is deployed"
                ));
            }
            None => {
                let subnet = format!("10.0.{}.0/24", c.networks.len() + 1);
                let mut n = c.new_obj(
                    json!({
                        "Name": real_name, "Scope": "swarm", "Driver": "overlay", "EnableIPv4": true,
                        "EnableIPv6": false, "IPAM": {"Driver": "default", "Options": null, "Config": [{"Subnet": subnet}]},
                        "Internal": false, "Attachable": decl["attachable"] == true, "Ingress": false,
                        "ConfigFrom": {"Network": ""}, "ConfigOnly": false, "Containers": {}, "Options": {},
                        "Labels": ns_label,
                    }),
                    Value::Null,
                );
                n.extra = Value::Null;
                let id = n.id.clone();
                c.networks.insert(id.clone(), n);
                id
            }
        };
        net_ids.insert(key, id);
    }

    // Secrets: external ones, by name.
    let mut secret_ids: BTreeMap<String, (String, String)> = BTreeMap::new();
    if let Some(decl) = doc["secrets"].as_object() {
        for (key, d) in decl {
            let real = d["name"].as_str().unwrap_or(key).to_string();
            if !(d["external"] == true || d["external"].is_object()) {
                return Err(format!(
                    "secret {key:?}: phoenix-lab deploys external secrets only"
                ));
            }
            let id = c
                .secrets
                .values()
                .find(|s| s.name() == real)
                .map(|s| s.id.clone())
                .ok_or_else(|| format!("secret not found: {real}"))?;
            secret_ids.insert(key.clone(), (id, real));
        }
    }

    let mut names = Vec::new();
    for (svc, def) in services {
        let image = def["image"]
            .as_str()
            .ok_or_else(|| format!("service {svc:?} has no image"))?;
        let name = format!("{stack}_{svc}");
        let env_list: Vec<Value> = kv_map(&def["environment"])
            .into_iter()
            .map(|(k, v)| json!(format!("{k}={}", v.as_str().unwrap_or_default())))
            .collect();
        let mut labels = kv_map(&def["deploy"]["labels"]);
        labels.insert(NAMESPACE.into(), json!(stack));
        labels.insert("com.docker.stack.image".into(), json!(image));
        let mut clabels = kv_map(&def["labels"]);
        clabels.insert(NAMESPACE.into(), json!(stack));
        let svc_nets: Vec<String> = match &def["networks"] {
            Value::Array(a) => a
                .iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect(),
            Value::Object(m) => m.keys().cloned().collect(),
            _ => vec!["default".into()],
        };
        let mut nets = Vec::new();
        for n in svc_nets {
            let id = net_ids
                .get(&n)
                .ok_or_else(|| format!("service {svc:?} refers to undefined network {n}"))?;
            nets.push(json!({"Target": id, "Aliases": [svc]}));
        }
        let mut secrets = Vec::new();
        for s in def["secrets"].as_array().into_iter().flatten() {
            let (key, target) = match s {
                Value::String(k) => (k.clone(), k.clone()),
                other => {
                    let k = other["source"].as_str().unwrap_or_default().to_string();
                    let t = other["target"].as_str().unwrap_or(&k).to_string();
                    (k, t)
                }
            };
            let (id, real) = secret_ids
                .get(&key)
                .ok_or_else(|| format!("service {svc:?} refers to undefined secret {key}"))?;
            secrets.push(json!({"File": {"Name": target, "UID": "0", "GID": "0", "Mode": 292}, "SecretID": id, "SecretName": real}));
        }
        let mut ports = Vec::new();
        for p in def["ports"].as_array().into_iter().flatten() {
            let (published, target) = match p {
                Value::String(s) => {
                    let s = s.split('/').next().unwrap_or_default();
                    let mut it = s.rsplitn(2, ':');
                    let t = it.next().unwrap_or_default().parse::<u64>().ok();
                    let p = it.next().and_then(|x| x.parse::<u64>().ok());
                    (p, t)
                }
                Value::Number(n) => (None, n.as_u64()),
                other => (other["published"].as_u64(), other["target"].as_u64()),
            };
            if let Some(t) = target {
                let mut port =
                    json!({"Protocol": "tcp", "TargetPort": t, "PublishMode": "ingress"});
                if let Some(p) = published {
                    port["PublishedPort"] = json!(p);
                }
                ports.push(port);
            }
        }
        let mut mounts = Vec::new();
        for v in def["volumes"].as_array().into_iter().flatten() {
            if let Some(s) = v.as_str() {
                let mut parts = s.split(':');
                let src = parts.next().unwrap_or_default();
                let tgt = parts.next().unwrap_or_default();
                let ty = if src.starts_with('/') || src.starts_with('.') {
                    "bind"
                } else {
                    "volume"
                };
                let src = if ty == "volume"
                    && !doc["volumes"][src]["external"].as_bool().unwrap_or(false)
                {
                    format!("{stack}_{src}")
                } else {
                    src.to_string()
                };
                mounts.push(json!({"Type": ty, "Source": src, "Target": tgt}));
            }
        }
        let replicas = def["deploy"]["replicas"].as_u64().unwrap_or(1);
        let mode = if def["deploy"]["mode"] == "global" {
            json!({"Global": {}})
        } else {
            json!({"Replicated": {"Replicas": replicas}})
        };
        let mut container = json!({"Image": image, "Labels": clabels});
        if !env_list.is_empty() {
            container["Env"] = Value::Array(env_list);
        }
        if !secrets.is_empty() {
            container["Secrets"] = Value::Array(secrets);
        }
        if !mounts.is_empty() {
            container["Mounts"] = Value::Array(mounts);
        }
        let mut spec = json!({
            "Name": name,
            "Labels": labels,
            "TaskTemplate": {"ContainerSpec": container, "Networks": nets, "ForceUpdate": 0, "Runtime": "container"},
            "Mode": mode,
            "EndpointSpec": {"Mode": "vip"},
        });
        if !ports.is_empty() {
            spec["EndpointSpec"]["Ports"] = Value::Array(ports);
        }
        let existing = c
            .services
            .values()
            .find(|s| s.name() == name)
            .map(|s| s.id.clone());
        match existing {
            Some(id) => {
                let index = c.bump();
                if let Some(s) = c.services.get_mut(&id)
                    && s.spec != spec
                {
                    s.extra = json!({"PreviousSpec": s.spec});
                    s.spec = spec;
                    s.version = index;
                    s.updated = crate::world::now_rfc3339();
                }
            }
            None => {
                let s = c.new_obj(spec, Value::Null);
                c.services.insert(s.id.clone(), s);
            }
        }
        names.push(name);
    }
    if prune {
        c.services.retain(|_, s| {
            s.spec["Labels"][NAMESPACE] != stack || names.iter().any(|n| n == s.name())
        });
    }
    Ok(())
}

/// `docker stack rm`: the stack's services, then its networks.
pub fn remove(c: &mut Cluster, stack: &str) {
    c.services
        .retain(|_, s| s.spec["Labels"][NAMESPACE] != stack);
    c.networks
        .retain(|_, n| n.spec["Labels"][NAMESPACE] != stack);
    c.bump();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitutes_like_compose() {
        let env: BTreeMap<String, String> = [("A".to_string(), "1".to_string())].into();
        assert_eq!(
            substitute("x${A}y $A ${B:-d} ${A:-d} $$A ${B}.", &env),
            "x1y 1 d 1 $A ."
        );
    }

    #[test]
    fn deploys_and_prunes() {
        let mut c = Cluster::new(json!({}));
        let file = "services:\n  web:\n    image: nginx:${TAG}\n    deploy:\n      replicas: 2\n      labels:\n        - traefik.enable=true\n  db:\n    image: postgres\n";
        let env: BTreeMap<String, String> = [("TAG".to_string(), "1.27".to_string())].into();
        deploy(&mut c, "app", file, &env, true).unwrap();
        assert_eq!(c.services.len(), 2);
        let web = c.services.values().find(|s| s.name() == "app_web").unwrap();
        assert_eq!(
            web.spec["TaskTemplate"]["ContainerSpec"]["Image"],
            "nginx:1.27"
        );
        assert_eq!(web.spec["Mode"]["Replicated"]["Replicas"], 2);
        assert_eq!(web.spec["Labels"]["traefik.enable"], "true");
        assert_eq!(web.spec["Labels"][NAMESPACE], "app");
        deploy(
            &mut c,
            "app",
            "services:\n  web:\n    image: nginx\n",
            &env,
            true,
        )
        .unwrap();
        assert_eq!(c.services.len(), 1);
        remove(&mut c, "app");
        assert!(c.services.is_empty() && c.networks.is_empty());
    }
}
