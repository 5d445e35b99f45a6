//! How Go's `encoding/json` reads a request body, which both Docker and
//! Portainer are: object keys match struct fields case-insensitively (an exact
//! match wins), and what a server stores it writes back under its own field
//! names. A client that sends `advertiseaddr` or `username` works against the
//! real servers, so it must work here too.

use serde_json::{Map, Value};

/// The value of `key` in `obj`, matched the way Go matches a struct field.
pub fn get<'a>(obj: &'a Value, key: &str) -> Option<&'a Value> {
    let m = obj.as_object()?;
    m.get(key).or_else(|| {
        m.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// A string field, `""` when absent or not a string (Go's zero value).
pub fn str_of(obj: &Value, key: &str) -> String {
    get(obj, key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// A boolean field, `false` when absent.
pub fn bool_of(obj: &Value, key: &str) -> bool {
    get(obj, key).and_then(Value::as_bool).unwrap_or(false)
}

/// Keys whose values are maps of the user's own keys (labels, driver
/// options): Go decodes them into `map[string]string`, keeping the keys as given.
const USER_MAPS: &[&str] = &["Labels", "Options", "DriverOpts", "Sysctls"];

/// The Docker field names the lab stores, spelled as the Engine writes them.
const DOCKER_FIELDS: &[&str] = &[
    "Name",
    "Labels",
    "Role",
    "Availability",
    "TaskTemplate",
    "ContainerSpec",
    "Image",
    "Env",
    "Args",
    "Command",
    "Hostname",
    "Dir",
    "User",
    "Secrets",
    "Configs",
    "File",
    "UID",
    "GID",
    "Mode",
    "SecretID",
    "SecretName",
    "ConfigID",
    "ConfigName",
    "Replicated",
    "Replicas",
    "Global",
    "Networks",
    "Target",
    "Aliases",
    "EndpointSpec",
    "Ports",
    "Protocol",
    "TargetPort",
    "PublishedPort",
    "PublishMode",
    "Placement",
    "Constraints",
    "Preferences",
    "Resources",
    "Limits",
    "Reservations",
    "RestartPolicy",
    "Condition",
    "Delay",
    "MaxAttempts",
    "UpdateConfig",
    "RollbackConfig",
    "Parallelism",
    "FailureAction",
    "Order",
    "Data",
    "Driver",
    "Templating",
    "Attachable",
    "Internal",
    "Ingress",
    "Scope",
    "IPAM",
    "Config",
    "EnableIPv6",
    "EnableIPv4",
    "Mounts",
    "Source",
    "Type",
    "ReadOnly",
    "VolumeOptions",
    "DriverConfig",
    "Healthcheck",
    "Test",
    "Interval",
    "Timeout",
    "Retries",
    "ForceUpdate",
    "Runtime",
    "LogDriver",
    "ContainerLabels",
];

/// `v` with every object key spelled as the Engine spells it (user maps left alone).
pub fn canonical(v: &Value) -> Value {
    canonical_in(v, false)
}

fn canonical_in(v: &Value, user_keys: bool) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, val) in m {
                if user_keys {
                    out.insert(k.clone(), val.clone());
                    continue;
                }
                let name = DOCKER_FIELDS
                    .iter()
                    .find(|f| f.eq_ignore_ascii_case(k))
                    .map_or_else(|| k.clone(), |f| (*f).to_string());
                let inner_user = USER_MAPS.contains(&name.as_str());
                out.insert(name, canonical_in(val, inner_user));
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| canonical_in(x, false)).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_match_like_go() {
        let v = json!({"username": "a", "Password": "b", "PASSWORD": "c"});
        assert_eq!(str_of(&v, "Username"), "a");
        // An exact match wins over a case-insensitive one.
        assert_eq!(str_of(&v, "Password"), "b");
        assert_eq!(str_of(&v, "missing"), "");
    }

    #[test]
    fn canonical_keeps_user_map_keys() {
        let v = json!({"name": "x", "labels": {"traefik.enable": "true", "name": "keep"},
                       "taskTemplate": {"containerSpec": {"image": "busybox"}}});
        assert_eq!(
            canonical(&v),
            json!({"Name": "x", "Labels": {"traefik.enable": "true", "name": "keep"},
                   "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}}})
        );
    }
}
