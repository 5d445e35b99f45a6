//! The lab's world: the simulated Docker engines (one per node), the swarms
//! they form, the Portainer instance, and the faults in force. Everything is
//! in memory, behind one mutex; handlers never hold it across an await.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The world file (`--world FILE`): which nodes exist, and faults from the start.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct WorldConfig {
    /// The simulated Docker engines, each served on its own port.
    #[serde(default = "default_nodes")]
    pub nodes: Vec<NodeConfig>,
    #[serde(default)]
    pub faults: Faults,
}

/// One simulated VM running a Docker engine.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// The engine's hostname (`docker info` `Name`, the swarm node's `Description.Hostname`).
    pub hostname: String,
    /// The address the node would have on the site (Swarm `Addr`); any string.
    #[serde(default = "loopback")]
    pub addr: String,
    /// Other names a Portainer endpoint URL may use for this node (the agent's DNS name).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// The port to serve its Engine API on; 0 or absent: the next free one.
    #[serde(default)]
    pub port: u16,
    /// A real Docker engine that is this node (`unix:///path`, `tcp://host:port`,
    /// `http://host:port`): nothing is simulated for it, Portainer's Docker
    /// proxy forwards there and its stacks run `docker stack deploy` on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
}

fn loopback() -> String {
    "127.0.0.1".into()
}

/// Two nodes named like the seed site's VMs.
fn default_nodes() -> Vec<NodeConfig> {
    vec![
        NodeConfig {
            hostname: "Portainer".into(),
            addr: "10.0.0.111".into(),
            aliases: vec![],
            port: 0,
            engine: None,
        },
        NodeConfig {
            hostname: "drphoenix".into(),
            addr: "10.0.0.102".into(),
            aliases: vec![
                "portainer-agent.internal.thinkheads.ai".into(),
                "drphoenix-agent.internal.thinkheads.ai".into(),
            ],
            port: 0,
            engine: None,
        },
    ]
}

/// Faults to inject. Changed at run time with `PUT /_lab/faults`.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// Added to every answer, in milliseconds.
    #[serde(default)]
    pub latency_ms: u64,
    /// Requests answered with an error instead.
    #[serde(default)]
    pub errors: Vec<ErrorRule>,
    /// Nodes whose engine is down: its port refuses connections, its swarm node is `down`.
    #[serde(default)]
    pub down: Vec<String>,
    /// The seed of the draws of `rate` rules, so a run replays; absent: from the clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

/// Answer matching requests with `status` (and a message in the server's error format).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ErrorRule {
    /// `portainer`, or a node's hostname; absent: any server.
    #[serde(default)]
    pub server: Option<String>,
    /// `GET`, `POST`, ...; absent: any.
    #[serde(default)]
    pub method: Option<String>,
    /// A substring of the path (without the Docker API version prefix).
    #[serde(default)]
    pub path: String,
    pub status: u16,
    #[serde(default = "injected")]
    pub message: String,
    /// How many requests it answers; absent: all.
    #[serde(default)]
    pub times: Option<u32>,
    /// The share of matching requests it answers (0 to 1, drawn per request); absent: every one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
}

fn injected() -> String {
    "injected by phoenix-lab".into()
}

/// The draws of `rate` rules: xorshift64*, seeded by [`Faults::seed`] (or the clock).
#[derive(Debug, Clone)]
pub struct Draws(u64);

impl Draws {
    pub fn new(seed: Option<u64>) -> Draws {
        let seed = seed.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
        Draws(seed.max(1) ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// Uniform in `[0, 1)`.
    pub fn uniform(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Faults {
    /// The injected error for this request, if any (counting it down). A rule
    /// with a `rate` answers a matching request when its draw falls under it.
    pub fn take_error(
        &mut self,
        server: &str,
        method: &str,
        path: &str,
        draws: &mut Draws,
    ) -> Option<(u16, String)> {
        let idx = self.errors.iter().position(|r| {
            r.server.as_deref().is_none_or(|s| s == server)
                && r.method
                    .as_deref()
                    .is_none_or(|m| m.eq_ignore_ascii_case(method))
                && path.contains(&r.path)
                && r.times != Some(0)
                && r.rate.is_none_or(|rate| draws.uniform() < rate)
        })?;
        let rule = &mut self.errors[idx];
        if let Some(t) = rule.times.as_mut() {
            *t -= 1;
        }
        Some((rule.status, rule.message.clone()))
    }
}

/// Now, as the Engine and Portainer's Go code print times.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_nanos(SystemTime::now()).to_string()
}

/// Now as Unix seconds (Portainer's dates).
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A Swarm-style object id: 25 lowercase letters and digits.
pub fn swarm_id() -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let a = uuid::Uuid::new_v4().as_u128();
    let b = uuid::Uuid::new_v4().as_u128();
    let mut n = a ^ (b << 7);
    let mut out = String::with_capacity(25);
    for _ in 0..25 {
        out.push(ALPHABET[(n % 36) as usize] as char);
        n /= 36;
    }
    out
}

/// A 64-hex id (engine-local networks).
pub fn long_id() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// One simulated engine.
#[derive(Debug, Clone)]
pub struct Engine {
    pub hostname: String,
    pub addr: String,
    pub aliases: Vec<String>,
    /// The Engine's own id (`docker info` `ID`).
    pub id: String,
    /// The swarm it belongs to and its node id there.
    pub swarm: Option<Membership>,
    /// Where its API is served (`http://127.0.0.1:PORT`), once bound; a
    /// real engine's own URL.
    pub url: String,
    /// The real engine this node is, if it is one ([`crate::real`]).
    pub real: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Membership {
    pub cluster: String,
    pub node_id: String,
}

/// A swarm: its raft store, as the managers see it.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub id: String,
    pub created: String,
    pub updated: String,
    pub version: u64,
    pub spec: Value,
    pub worker_token: String,
    pub manager_token: String,
    /// The raft index: every write takes the next one.
    pub index: u64,
    pub nodes: BTreeMap<String, Obj>,
    pub networks: BTreeMap<String, Obj>,
    pub secrets: BTreeMap<String, Obj>,
    pub services: BTreeMap<String, Obj>,
}

/// A stored swarm object: its id, version, times and spec (and extra fields for nodes).
#[derive(Debug, Clone)]
pub struct Obj {
    pub id: String,
    pub version: u64,
    pub created: String,
    pub updated: String,
    pub spec: Value,
    /// Kind-specific fields written as they are (a node's `Description`, `Status`...).
    pub extra: Value,
}

impl Obj {
    pub fn name(&self) -> &str {
        self.spec["Name"].as_str().unwrap_or_default()
    }

    /// The object as the Engine writes it.
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "ID": self.id,
            "Version": {"Index": self.version},
            "CreatedAt": self.created,
            "UpdatedAt": self.updated,
            "Spec": self.spec,
        });
        if let (Some(m), Some(extra)) = (v.as_object_mut(), self.extra.as_object()) {
            for (k, x) in extra {
                m.insert(k.clone(), x.clone());
            }
        }
        v
    }
}

impl Cluster {
    pub fn new(spec: Value) -> Self {
        let now = now_rfc3339();
        let id = swarm_id();
        Cluster {
            worker_token: format!("SWMTKN-1-{}-{}", swarm_id(), swarm_id()),
            manager_token: format!("SWMTKN-1-{}-{}", swarm_id(), swarm_id()),
            id,
            created: now.clone(),
            updated: now,
            version: 10,
            spec,
            index: 10,
            nodes: BTreeMap::new(),
            networks: BTreeMap::new(),
            secrets: BTreeMap::new(),
            services: BTreeMap::new(),
        }
    }

    /// The next raft index.
    pub fn bump(&mut self) -> u64 {
        self.index += 1;
        self.index
    }

    /// A new object stored at the next index.
    pub fn new_obj(&mut self, spec: Value, extra: Value) -> Obj {
        let now = now_rfc3339();
        Obj {
            id: swarm_id(),
            version: self.bump(),
            created: now.clone(),
            updated: now,
            spec,
            extra,
        }
    }
}

/// A Portainer user.
#[derive(Debug, Clone)]
pub struct User {
    pub id: u64,
    pub username: String,
    pub password: String,
    pub role: u8,
}

/// A Portainer API key: the raw key is shown once, at creation.
#[derive(Debug, Clone)]
pub struct ApiKey {
    pub id: u64,
    pub user_id: u64,
    pub description: String,
    pub raw: String,
    pub created: i64,
}

/// Portainer's database.
#[derive(Debug, Clone, Default)]
pub struct Portainer {
    pub instance_id: String,
    pub users: Vec<User>,
    pub api_keys: Vec<ApiKey>,
    /// Issued JWTs and the user each belongs to.
    pub jwts: BTreeMap<String, u64>,
    pub endpoints: BTreeMap<u64, Value>,
    pub stacks: BTreeMap<u64, Stack>,
    pub next_id: u64,
}

/// A Portainer stack and its file.
#[derive(Debug, Clone)]
pub struct Stack {
    pub meta: Value,
    pub file: String,
}

impl Portainer {
    pub fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

/// Everything the lab simulates.
#[derive(Debug)]
pub struct World {
    pub engines: Vec<Engine>,
    pub clusters: BTreeMap<String, Cluster>,
    pub portainer: Portainer,
    pub faults: Faults,
    /// The draws of the faults' `rate` rules.
    pub draws: Draws,
}

impl World {
    pub fn new(cfg: &WorldConfig) -> Self {
        World {
            engines: cfg
                .nodes
                .iter()
                .map(|n| Engine {
                    hostname: n.hostname.clone(),
                    addr: n.addr.clone(),
                    aliases: n.aliases.clone(),
                    id: swarm_id(),
                    swarm: None,
                    url: n.engine.clone().unwrap_or_default(),
                    real: n.engine.clone(),
                })
                .collect(),
            clusters: BTreeMap::new(),
            portainer: Portainer {
                instance_id: uuid::Uuid::new_v4().to_string(),
                ..Default::default()
            },
            faults: cfg.faults.clone(),
            draws: Draws::new(cfg.faults.seed),
        }
    }

    pub fn engine_index(&self, hostname: &str) -> Option<usize> {
        self.engines.iter().position(|e| e.hostname == hostname)
    }

    pub fn is_down(&self, hostname: &str) -> bool {
        self.faults.down.iter().any(|d| d == hostname)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(rate: Option<f64>, times: Option<u32>) -> ErrorRule {
        ErrorRule {
            server: None,
            method: Some("GET".into()),
            path: "/info".into(),
            status: 500,
            message: "boom".into(),
            times,
            rate,
        }
    }

    #[test]
    fn a_rate_answers_about_that_share_and_replays_from_its_seed() {
        let run = |seed| {
            let mut f = Faults {
                errors: vec![rule(Some(0.3), None)],
                ..Default::default()
            };
            let mut d = Draws::new(Some(seed));
            (0..2000)
                .map(|_| f.take_error("n", "GET", "/info", &mut d).is_some())
                .collect::<Vec<_>>()
        };
        let a = run(7);
        let hits = a.iter().filter(|h| **h).count();
        assert!((500..700).contains(&hits), "{hits} of 2000 at 30%");
        assert_eq!(a, run(7), "the same seed, the same draws");
        assert_ne!(a, run(8));
    }

    #[test]
    fn times_bound_a_rate_rule_and_other_requests_are_not_drawn_for() {
        let mut f = Faults {
            errors: vec![rule(Some(1.0), Some(2))],
            ..Default::default()
        };
        let mut d = Draws::new(Some(1));
        assert!(f.take_error("n", "POST", "/info", &mut d).is_none());
        assert!(f.take_error("n", "GET", "/info", &mut d).is_some());
        assert!(f.take_error("n", "GET", "/info", &mut d).is_some());
        assert!(f.take_error("n", "GET", "/info", &mut d).is_none());
    }
}
