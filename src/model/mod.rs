//! The typed resource model: addresses, what each kind declares about its
//! attributes, and the desired/live values every other layer passes around.
//!
//! A kind lives in one file here (`lxc.rs`): it turns the manifests into
//! [`DesiredResource`]s and declares its [`KindSchema`]. Its provider
//! (`providers/<system>/<kind>.rs`) turns the real system into
//! [`LiveObject`]s with the same attribute names, normalized the same way, so
//! the diff in `plan/` can compare them without knowing what they mean.

pub mod address;
pub mod cert;
pub mod dns;
pub mod feature;
pub mod file;
pub mod firewall;
pub mod lxc;
pub mod lxc_conf;
pub mod normalize;
pub mod portainer;
pub mod propstring;
pub mod snapshot;
pub mod storage;
pub mod swarm;
pub mod template;
pub mod vm;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

pub use address::{Address, AddressError};

use crate::manifest::{Diagnostic, Site};

/// Attributes: a JSON object of normalized values. Keys absent from the
/// desired object are not managed; `null` means "must be absent".
pub type Attrs = Map<String, Value>;

/// What a kind declares about its attributes: the part of a provider schema
/// the diff needs to choose between update, replace and refusal.
#[derive(Debug)]
pub struct KindSchema {
    /// The address prefix, e.g. `lxc`.
    pub kind: &'static str,
    /// Which provider serves it (`proxmox`, `host`, ...), for messages and grouping.
    pub provider: &'static str,
    /// Top-level attributes whose change can only be made by re-creating the object.
    pub force_new: &'static [&'static str],
    /// Numeric top-level attributes that may only grow (disk sizes): a shrink is an error, never a replace.
    pub grow_only: &'static [&'static str],
    /// Top-level attributes whose values never appear in state or output.
    pub sensitive: &'static [&'static str],
    /// Deleting or replacing it loses data: needs `--allow-destroy`.
    pub destroy_protected: bool,
    /// Removing it from the manifests only drops it from the state; the object
    /// stays (shared things phoenix did not necessarily make, like OS templates).
    pub keep_on_delete: bool,
    /// Notes for an in-place update, shown in the plan: given the changed
    /// paths and the live attributes (e.g. "takes effect at the next reboot").
    pub update_notes: fn(&[String], &Attrs) -> Vec<String>,
}

/// For kinds whose updates need no explanation.
pub fn no_notes(_changed: &[String], _live: &Attrs) -> Vec<String> {
    Vec::new()
}

impl KindSchema {
    pub fn is_force_new(&self, attr: &str) -> bool {
        self.force_new.contains(&attr)
    }
    pub fn is_grow_only(&self, attr: &str) -> bool {
        self.grow_only.contains(&attr)
    }
    pub fn is_sensitive(&self, attr: &str) -> bool {
        self.sensitive.contains(&attr)
    }
}

/// One resource as the manifests want it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesiredResource {
    pub address: Address,
    /// Managed attributes, normalized.
    pub attrs: Attrs,
    /// Arguments used only when the object is created (template, clone source):
    /// the real system does not report them back, so they are never diffed.
    #[serde(default)]
    pub create: Attrs,
    /// Resources that must exist (and be converged) before this one.
    #[serde(default)]
    pub depends_on: Vec<Address>,
}

/// Everything the manifests want, keyed by address.
#[derive(Debug, Default, Clone)]
pub struct Desired {
    pub resources: BTreeMap<Address, DesiredResource>,
}

impl Desired {
    pub fn get(&self, addr: &Address) -> Option<&DesiredResource> {
        self.resources.get(addr)
    }

    /// The addresses and everything they depend on, transitively.
    pub fn with_dependencies(&self, roots: &[Address]) -> BTreeSet<Address> {
        let mut out = BTreeSet::new();
        let mut stack: Vec<Address> = roots.to_vec();
        while let Some(a) = stack.pop() {
            if !out.insert(a.clone()) {
                continue;
            }
            if let Some(r) = self.resources.get(&a) {
                stack.extend(r.depends_on.iter().cloned());
            }
        }
        out
    }
}

impl DesiredResource {
    /// A text attribute, or "" when absent.
    pub fn attr_str(&self, key: &str) -> &str {
        self.attrs
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// A text create-only value, or "" when absent.
    pub fn create_str(&self, key: &str) -> &str {
        self.create
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
    }
}

/// The sha256 of `bytes` in hex, as `sha256sum` prints it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// One object as read from the real system, normalized to the kind's attributes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveObject {
    pub attrs: Attrs,
    /// Identifiers the provider needs to find the object again (node, vmid, ...).
    #[serde(default)]
    pub remote: Value,
    /// The system's own concurrency token (the PVE config `digest`), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl LiveObject {
    /// A stable fingerprint of what was read: a saved plan records it and apply
    /// refuses to touch the object if it no longer matches.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update(canonical_json(&Value::Object(self.attrs.clone())).as_bytes());
        if let Some(t) = &self.token {
            h.update(b"\0");
            h.update(t.as_bytes());
        }
        hex::encode(h.finalize())
    }
}

/// JSON with object keys sorted, so equal values hash equally whatever their insertion order.
pub fn canonical_json(v: &Value) -> String {
    fn sort(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let sorted: BTreeMap<&String, Value> =
                    m.iter().map(|(k, v)| (k, sort(v))).collect();
                Value::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect())
            }
            Value::Array(a) => Value::Array(a.iter().map(sort).collect()),
            other => other.clone(),
        }
    }
    sort(v).to_string()
}

/// A resource kind: its schema and how the manifests produce its desired resources.
pub trait Kind: Send + Sync {
    fn schema(&self) -> &'static KindSchema;
    /// The desired resources of this kind. Errors are diagnostics naming the
    /// manifest file and JSON path.
    fn desired(&self, site: &Site) -> Result<Vec<DesiredResource>, Vec<Diagnostic>>;
    /// Objects of this kind are *verified*, not owned, when they already
    /// exist: one that is not in the state needs no `--adopt`; if it matches
    /// the manifests the plan leaves it alone (and out of the state), if it
    /// differs the plan changes it like a managed one. Default: no (a guest
    /// found outside the state needs `phoenix import` or `--adopt`).
    fn verifies_existing(&self) -> bool {
        false
    }
    /// Objects of this kind live inside a guest (its Docker engine, the
    /// Portainer it runs): while a guest they depend on does not exist, they
    /// cannot exist either, and the plan does not try to reach them (a first
    /// plan of a site must not need engines on VMs it has yet to create).
    fn lives_in_guest(&self) -> bool {
        false
    }
    /// Objects of this kind go when the guest they depend on is destroyed
    /// (its firewall, its config lines, snapshots, provisioning, files
    /// pushed into it): a replaced guest gets them created again in the same
    /// apply, whatever was read before the replacement.
    fn destroyed_with_guest(&self) -> bool {
        false
    }
    /// Things worth telling about an object (`live` is `None` when it does
    /// not exist yet), whether or not the plan changes it (e.g. "runs on
    /// another node than the manifest says"). Pure. Default: nothing.
    fn observe(&self, _desired: &DesiredResource, _live: Option<&LiveObject>) -> Vec<String> {
        Vec::new()
    }
    /// A reason the plan cannot go on for this resource given what exists
    /// (`live` is `None` when the object does not): `(message, help)`. For
    /// what phoenix cannot create or change, such as a storage it only
    /// verifies. Pure: no I/O. Default: none.
    fn precheck(
        &self,
        _desired: &DesiredResource,
        _live: Option<&LiveObject>,
    ) -> Option<(String, String)> {
        None
    }
}

/// For guest kinds: a guest found on another node than its manifest names is
/// reported, never recreated or moved.
pub fn node_mismatch(desired: &DesiredResource, live: &LiveObject) -> Vec<String> {
    match (
        desired
            .create
            .get("node")
            .and_then(serde_json::Value::as_str),
        live.remote["node"].as_str(),
    ) {
        (Some(want), Some(have)) if want != have => vec![format!(
            "runs on node `{have}`, the manifest says `{want}`: phoenix leaves it there \
             (migrate it in Proxmox, or change `node` in the manifest)"
        )],
        _ => Vec::new(),
    }
}

/// The kind by its address prefix.
pub fn kind_of(kind: &str) -> Option<&'static dyn Kind> {
    kinds().iter().copied().find(|k| k.schema().kind == kind)
}

/// Every kind phoenix knows. A new kind adds one line here.
#[cfg(not(test))]
pub fn kinds() -> &'static [&'static dyn Kind] {
    &[
        &lxc::LxcKind,
        &vm::VmKind,
        &firewall::FirewallKind,
        &storage::StorageKind,
        &template::TemplateKind,
        &snapshot::SnapshotKind,
        &dns::DnsKind,
        &file::FileKind,
        &lxc_conf::LxcConfKind,
        &cert::CertKind,
        &feature::FeatureKind,
        &feature::AppKind,
        &swarm::SwarmKind,
        &portainer::PortainerKind,
    ]
}

/// In unit tests, the same kinds and one with a secret, to prove secrets never show.
#[cfg(test)]
pub fn kinds() -> &'static [&'static dyn Kind] {
    &[
        &lxc::LxcKind,
        &vm::VmKind,
        &firewall::FirewallKind,
        &storage::StorageKind,
        &template::TemplateKind,
        &snapshot::SnapshotKind,
        &dns::DnsKind,
        &file::FileKind,
        &lxc_conf::LxcConfKind,
        &cert::CertKind,
        &feature::FeatureKind,
        &feature::AppKind,
        &swarm::SwarmKind,
        &portainer::PortainerKind,
        &testkind::SecretKind,
    ]
}

#[cfg(test)]
pub mod testkind {
    //! A kind that exists only in unit tests: one sensitive attribute.
    use super::*;

    pub static SCHEMA: KindSchema = KindSchema {
        kind: "test_secret",
        provider: "test",
        force_new: &[],
        grow_only: &[],
        sensitive: &["password"],
        destroy_protected: false,
        keep_on_delete: false,
        update_notes: no_notes,
    };

    pub struct SecretKind;

    impl Kind for SecretKind {
        fn schema(&self) -> &'static KindSchema {
            &SCHEMA
        }
        fn desired(&self, _site: &Site) -> Result<Vec<DesiredResource>, Vec<Diagnostic>> {
            Ok(Vec::new())
        }
    }
}

/// The schema of a kind by its address prefix.
pub fn schema_of(kind: &str) -> Option<&'static KindSchema> {
    kinds().iter().map(|k| k.schema()).find(|s| s.kind == kind)
}

/// Build everything the manifests want. Dependencies on addresses no kind
/// produces are kept (they may be served by a kind added later) but do not
/// order anything.
pub fn desired(site: &Site) -> Result<Desired, Vec<Diagnostic>> {
    let mut out = Desired::default();
    let mut errors = Vec::new();
    for kind in kinds() {
        match kind.desired(site) {
            Ok(rs) => {
                for r in rs {
                    out.resources.insert(r.address.clone(), r);
                }
            }
            Err(mut d) => errors.append(&mut d),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fingerprint_ignores_key_order() {
        let a = LiveObject {
            attrs: json!({"a": 1, "b": {"x": 1, "y": 2}})
                .as_object()
                .unwrap()
                .clone(),
            remote: Value::Null,
            token: Some("d".into()),
        };
        let b = LiveObject {
            attrs: json!({"b": {"y": 2, "x": 1}, "a": 1})
                .as_object()
                .unwrap()
                .clone(),
            remote: Value::Null,
            token: Some("d".into()),
        };
        assert_eq!(a.fingerprint(), b.fingerprint());
        let c = LiveObject {
            token: Some("other".into()),
            ..b
        };
        assert_ne!(a.fingerprint(), c.fingerprint());
    }
}
