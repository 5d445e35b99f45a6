//! The diff: Desired (D), Prior (P) and Live (L) in, a [`Plan`] out. Pure:
//! no I/O, no knowledge of any kind beyond its [`KindSchema`].
//!
//! | D | P | L | action |
//! |---|---|---|--------|
//! | yes | no | no | create |
//! | yes | yes | no | create, "deleted outside phoenix" |
//! | yes | no | yes | adopt, only with `--adopt` (or recovered from the journal); else an error |
//! | yes | yes | yes | update / replace per attribute |
//! | no | yes | yes | delete |
//! | no | yes | no | forget |
//! | no | no | yes | unmanaged: never asked for, so never seen |
//!
//! Attribute rule: keys absent from the desired object are not managed (at
//! any depth); `null` means "must be absent". Drift compares P with L over
//! the attributes P recorded.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::{Action, Change, DriftEntry, DriftKind, Plan, Precondition, Reason, mask};
use crate::model::{Address, Attrs, Desired, KindSchema, LiveObject, normalize, schema_of};
use crate::state::ResourceState;

#[derive(Debug, Clone, Default)]
pub struct DiffOptions {
    /// Take objects that exist but are not in the state into it.
    pub adopt: bool,
    /// Report drift only; plan no changes.
    pub refresh_only: bool,
    /// Limit the plan to these addresses and what they depend on (empty: everything).
    pub targets: Vec<Address>,
}

pub struct DiffInput<'a> {
    pub desired: &'a Desired,
    pub prior: &'a BTreeMap<Address, ResourceState>,
    /// Objects that exist, for every address asked about; absent means "does not exist".
    pub live: &'a BTreeMap<Address, LiveObject>,
    /// Addresses a previous, interrupted apply was creating (the journal).
    pub recovered: &'a BTreeSet<Address>,
    pub options: &'a DiffOptions,
    /// Keyed fingerprint of a secret value (see `state::secrets`).
    pub secret_fingerprint: &'a dyn Fn(&Value) -> String,
}

/// Something that stops the plan, attached to an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanProblem {
    pub address: Address,
    pub message: String,
    pub help: String,
}

impl std::fmt::Display for PlanProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}\n  help: {}",
            self.address, self.message, self.help
        )
    }
}

/// Addresses the plan covers: all of D and P, or the targets and their dependencies.
pub fn scope(
    desired: &Desired,
    prior: &BTreeMap<Address, ResourceState>,
    targets: &[Address],
) -> BTreeSet<Address> {
    if targets.is_empty() {
        desired
            .resources
            .keys()
            .chain(prior.keys())
            .cloned()
            .collect()
    } else {
        let mut s = desired.with_dependencies(targets);
        s.retain(|a| desired.resources.contains_key(a) || prior.contains_key(a));
        s
    }
}

pub fn diff(input: &DiffInput<'_>) -> Result<Plan, Vec<PlanProblem>> {
    let DiffInput {
        desired,
        prior,
        live,
        recovered,
        options,
        ..
    } = *input;
    let mut changes = Vec::new();
    let mut drift = Vec::new();
    let mut notes = Vec::new();
    let mut problems = Vec::new();

    for addr in scope(desired, prior, &options.targets) {
        let Some(schema) = schema_of(addr.kind()) else {
            problems.push(PlanProblem {
                address: addr.clone(),
                message: format!("the state holds a kind this phoenix does not know: `{}`", addr.kind()),
                help: "use the phoenix version that wrote the state, or `phoenix state rm` the address".into(),
            });
            continue;
        };
        let d = desired.get(&addr);
        let p = prior.get(&addr);
        let l = live.get(&addr);

        if let Some(entry) = p.and_then(|p| drift_of(&addr, p, l, d.map(|d| &d.attrs))) {
            drift.push(entry);
        }
        if options.refresh_only {
            continue;
        }
        let kind = crate::model::kind_of(addr.kind());
        if let (Some(k), Some(d)) = (kind, d) {
            for note in k.observe(d, l) {
                notes.push(super::PlanNote {
                    address: addr.clone(),
                    note,
                });
            }
        }
        if let (Some(k), Some(d)) = (kind, d)
            && let Some((message, help)) = k.precheck(d, l)
        {
            problems.push(PlanProblem {
                address: addr.clone(),
                message,
                help,
            });
            continue;
        }

        // Both fingerprints hash a copy of the object: computed only for a
        // change, not for every address of a site that is mostly unchanged.
        let precondition = || Precondition {
            fingerprint: l.map(LiveObject::fingerprint),
        };
        let desired_fingerprint = || {
            d.map(|d| {
                (input.secret_fingerprint)(
                    &serde_json::json!({"attrs": d.attrs, "create": d.create}),
                )
            })
        };
        let drifted: BTreeSet<String> = drift
            .last()
            .filter(|e| e.address == addr)
            .map(|e| e.changed_paths.iter().cloned().collect())
            .unwrap_or_default();
        let base = |action, before: Option<&Attrs>, after: Option<&Attrs>| Change {
            address: addr.clone(),
            action,
            before: before.map(|a| {
                let mut m = mask(a, schema.sensitive);
                // Secrets are never read back; if one was written before, say so.
                for k in schema.sensitive {
                    if p.is_some_and(|p| p.attributes.contains_key(*k)) {
                        m.insert((*k).to_string(), Value::String(super::SENSITIVE.into()));
                    }
                }
                m
            }),
            after: after.map(|a| mask(a, schema.sensitive)),
            changed_paths: Vec::new(),
            replace_paths: Vec::new(),
            reason: None,
            drift: false,
            depends_on: d
                .map(|d| d.depends_on.clone())
                .or_else(|| p.map(|p| p.dependencies.clone()))
                .unwrap_or_default(),
            precondition: precondition(),
            notes: Vec::new(),
            desired_fingerprint: desired_fingerprint(),
        };

        match (d, p, l) {
            (Some(d), p, None) => {
                let mut c = base(Action::Create, p.map(|p| &p.attributes), Some(&d.attrs));
                c.changed_paths = d.attrs.keys().cloned().collect();
                if p.is_some() {
                    c.reason = Some(Reason::DeletedOutside);
                    c.drift = true;
                }
                changes.push(c);
            }
            (Some(d), p, Some(l)) => {
                // A kind that verifies existing objects treats one outside the
                // state like a managed one: changed only where it differs.
                let adopting = p.is_none() && !kind.is_some_and(|k| k.verifies_existing());
                if adopting && !options.adopt && !recovered.contains(&addr) {
                    problems.push(PlanProblem {
                        address: addr.clone(),
                        message: "exists but is not managed by phoenix (not in the state)".into(),
                        help: format!(
                            "take it over with `phoenix import {addr}` or `phoenix plan --adopt`, \
                             or remove it from the manifests"
                        ),
                    });
                    continue;
                }
                let paths = changed_paths(
                    schema,
                    &d.attrs,
                    &l.attrs,
                    p.map(|p| &p.attributes),
                    input.secret_fingerprint,
                );
                let shrinks = shrinking(schema, &d.attrs, &l.attrs, &paths);
                if !shrinks.is_empty() {
                    for (attr, from, to) in shrinks {
                        problems.push(PlanProblem {
                            address: addr.clone(),
                            message: format!("`{attr}` cannot shrink from {from} to {to}"),
                            help: format!(
                                "set `{attr}` back to at least {from} in the manifest; sizes only grow \
                                 (moving the data to a new, smaller {kind} is a manual job)",
                                kind = addr.kind()
                            ),
                        });
                    }
                    continue;
                }
                let replace_paths: Vec<String> = paths
                    .iter()
                    .filter(|p| schema.is_force_new(top(p)))
                    .cloned()
                    .collect();
                // A kind that verifies existing objects leaves a matching one out of
                // the state, unless phoenix itself created it (a journaled create
                // that was cut short): that one is taken in, as after an uncut apply.
                let adopting =
                    adopting || (p.is_none() && recovered.contains(&addr) && paths.is_empty());
                if adopting {
                    let mut c = base(Action::Adopt, Some(&l.attrs), Some(&d.attrs));
                    c.reason = Some(if recovered.contains(&addr) {
                        Reason::RecoveredFromJournal
                    } else {
                        Reason::Adopt
                    });
                    if !replace_paths.is_empty() {
                        problems.push(PlanProblem {
                            address: addr.clone(),
                            message: format!(
                                "exists with {} different from the manifests, which would force a replacement",
                                replace_paths.join(", ")
                            ),
                            help: "fix the manifest to match the object, adopt it, then change it deliberately".into(),
                        });
                        continue;
                    }
                    c.changed_paths = paths;
                    changes.push(c);
                } else if !paths.is_empty() {
                    let action = if replace_paths.is_empty() {
                        Action::Update
                    } else {
                        Action::Replace
                    };
                    let mut c = base(action, Some(&l.attrs), Some(&d.attrs));
                    c.drift = paths.iter().any(|p| drifted.contains(p));
                    if action == Action::Replace {
                        c.reason = Some(Reason::ForcesReplacement);
                    } else {
                        c.notes = (schema.update_notes)(&paths, &l.attrs);
                    }
                    c.changed_paths = paths;
                    c.replace_paths = replace_paths;
                    changes.push(c);
                }
            }
            (None, Some(_), Some(l)) if schema.keep_on_delete => {
                let mut c = base(Action::Forget, Some(&l.attrs), None);
                c.reason = Some(Reason::KeptOnRemoval);
                changes.push(c);
            }
            (None, Some(p), Some(l)) => {
                let mut c = base(Action::Delete, Some(&l.attrs), None);
                c.reason = Some(Reason::RemovedFromManifests);
                c.changed_paths = Vec::new();
                let _ = p;
                changes.push(c);
            }
            (None, Some(p), None) => {
                let mut c = base(Action::Forget, Some(&p.attributes), None);
                c.reason = Some(Reason::AlreadyGone);
                changes.push(c);
            }
            (None, None, _) => {}
        }
    }

    if !options.refresh_only {
        recreate_with_replaced_guests(&mut changes, input);
    }
    if problems.is_empty() {
        Ok(Plan {
            changes,
            drift,
            refresh_only: options.refresh_only,
            targets: options.targets.clone(),
            notes,
        })
    } else {
        Err(problems)
    }
}

/// What goes with a guest (`Kind::destroyed_with_guest`: its firewall, config
/// lines, snapshots, provisioning, files in it) is created again when the
/// plan replaces the guest: it was read before the replacement, and would
/// otherwise be missing until the next apply (a new guest without its
/// firewall, for one). Also under `--target`: replacing a guest includes
/// what goes with it.
fn recreate_with_replaced_guests(changes: &mut Vec<Change>, input: &DiffInput<'_>) {
    let replaced: BTreeSet<Address> = changes
        .iter()
        .filter(|c| c.action == Action::Replace && c.address.is_guest())
        .map(|c| c.address.clone())
        .collect();
    if replaced.is_empty() {
        return;
    }
    let mut added = false;
    for (addr, d) in &input.desired.resources {
        let goes = crate::model::kind_of(addr.kind()).is_some_and(|k| k.destroyed_with_guest());
        if !goes || !d.depends_on.iter().any(|g| replaced.contains(g)) {
            continue;
        }
        let Some(schema) = schema_of(addr.kind()) else {
            continue;
        };
        let existing = changes.iter().position(|c| &c.address == addr);
        if let Some(i) = existing
            && changes[i].action == Action::Create
        {
            continue;
        }
        let before = input
            .live
            .get(addr)
            .map(|l| mask(&l.attrs, schema.sensitive));
        let change = Change {
            address: addr.clone(),
            action: Action::Create,
            before,
            after: Some(mask(&d.attrs, schema.sensitive)),
            changed_paths: d.attrs.keys().cloned().collect(),
            replace_paths: Vec::new(),
            reason: Some(Reason::GuestReplaced),
            drift: false,
            depends_on: d.depends_on.clone(),
            precondition: Precondition {
                fingerprint: input.live.get(addr).map(LiveObject::fingerprint),
            },
            notes: Vec::new(),
            desired_fingerprint: Some((input.secret_fingerprint)(
                &serde_json::json!({"attrs": d.attrs, "create": d.create}),
            )),
        };
        match existing {
            Some(i) => changes[i] = change,
            None => {
                changes.push(change);
                added = true;
            }
        }
    }
    if added {
        changes.sort_by(|a, b| a.address.cmp(&b.address));
    }
}

fn top(path: &str) -> &str {
    path.split('.').next().unwrap_or(path)
}

/// Drift: where the live object differs from the state, over the attributes
/// the manifests manage (`managed`, at any depth) and the state recorded.
/// Without a desired resource (it is being removed) every recorded attribute counts.
fn drift_of(
    addr: &Address,
    p: &ResourceState,
    l: Option<&LiveObject>,
    managed: Option<&Attrs>,
) -> Option<DriftEntry> {
    let Some(l) = l else {
        return Some(DriftEntry {
            address: addr.clone(),
            kind: DriftKind::Deleted,
            changed_paths: Vec::new(),
            before: Some(p.attributes.clone()),
            after: None,
        });
    };
    let sensitive = schema_of(addr.kind()).map_or(&[][..], |s| s.sensitive);
    let mut paths = Vec::new();
    for (k, pv) in &p.attributes {
        if sensitive.contains(&k.as_str()) {
            continue;
        }
        let lv = l.attrs.get(k).unwrap_or(&Value::Null);
        match managed {
            Some(m) => {
                if let Some(mv) = m.get(k) {
                    masked_paths(k, mv, pv, lv, &mut paths);
                }
            }
            None => value_paths(k, pv, lv, &mut paths),
        }
    }
    (!paths.is_empty()).then(|| DriftEntry {
        address: addr.clone(),
        kind: DriftKind::Changed,
        changed_paths: paths,
        before: Some(mask(&p.attributes, sensitive)),
        after: Some(mask(&l.attrs, sensitive)),
    })
}

/// Paths where `before` differs from `after`, looking only where `mask` (the
/// desired value) has keys.
fn masked_paths(path: &str, mask: &Value, before: &Value, after: &Value, out: &mut Vec<String>) {
    match (mask, before, after) {
        (Value::Object(m), Value::Object(b), Value::Object(a)) => {
            for (k, mv) in m {
                let Some(bv) = b.get(k) else { continue };
                masked_paths(
                    &format!("{path}.{k}"),
                    mv,
                    bv,
                    a.get(k).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        _ if before != after => out.push(path.to_string()),
        _ => {}
    }
}

/// Paths where `want` (managed keys only) differs from `have`.
fn value_paths(path: &str, want: &Value, have: &Value, out: &mut Vec<String>) {
    match (want, have) {
        (Value::Object(w), Value::Object(h)) => {
            for (k, wv) in w {
                value_paths(
                    &format!("{path}.{k}"),
                    wv,
                    h.get(k).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        (Value::Object(w), _) if w.is_empty() => {}
        _ if want != have => out.push(path.to_string()),
        _ => {}
    }
}

fn changed_paths(
    schema: &KindSchema,
    desired: &Attrs,
    live: &Attrs,
    prior: Option<&Attrs>,
    fingerprint: &dyn Fn(&Value) -> String,
) -> Vec<String> {
    let mut out = Vec::new();
    for (k, dv) in desired {
        if schema.is_sensitive(k) {
            // Secrets are write-only: the system never shows them back, so the
            // state's fingerprint stands for what was last written.
            let want = Value::String(fingerprint(dv));
            if prior.and_then(|p| p.get(k)) != Some(&want) {
                out.push(k.clone());
            }
            continue;
        }
        value_paths(k, dv, live.get(k).unwrap_or(&Value::Null), &mut out);
    }
    out
}

/// Managed attributes of `desired` that `live` does not match (sensitive
/// ones skipped: they are never read back). After an apply this should be
/// empty; anything else is a normalization bug worth reporting.
pub fn attr_differences(kind: &str, desired: &Attrs, live: &Attrs) -> Vec<String> {
    let sensitive = schema_of(kind).map_or(&[][..], |s| s.sensitive);
    let mut out = Vec::new();
    for (k, dv) in desired {
        if !sensitive.contains(&k.as_str()) {
            value_paths(k, dv, live.get(k).unwrap_or(&Value::Null), &mut out);
        }
    }
    out
}

/// Grow-only attributes that would shrink: (attribute, live, desired).
fn shrinking(
    schema: &KindSchema,
    desired: &Attrs,
    live: &Attrs,
    paths: &[String],
) -> Vec<(String, String, String)> {
    let size = |v: Option<&Value>| -> Option<(u64, String)> {
        match v? {
            Value::String(s) => Some((normalize::parse_size(s)?, s.clone())),
            Value::Number(n) => Some((n.as_u64()?, n.to_string())),
            _ => None,
        }
    };
    paths
        .iter()
        .filter(|p| schema.is_grow_only(p))
        .filter_map(|p| {
            let (want, wt) = size(desired.get(p))?;
            let (have, ht) = size(live.get(p))?;
            (want < have).then(|| (p.clone(), ht, wt))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DesiredResource;
    use serde_json::json;

    fn attrs(v: Value) -> Attrs {
        v.as_object().unwrap().clone()
    }

    fn addr(n: &str) -> Address {
        Address::new("lxc", n)
    }

    fn desired(items: &[(&str, Value)]) -> Desired {
        let mut d = Desired::default();
        for (n, a) in items {
            d.resources.insert(
                addr(n),
                DesiredResource {
                    address: addr(n),
                    attrs: attrs(a.clone()),
                    create: Default::default(),
                    depends_on: vec![],
                },
            );
        }
        d
    }

    fn prior(items: &[(&str, Value)]) -> BTreeMap<Address, ResourceState> {
        items
            .iter()
            .map(|(n, a)| {
                (
                    addr(n),
                    ResourceState {
                        address: addr(n),
                        kind: "lxc".into(),
                        attributes: attrs(a.clone()),
                        remote: Value::Null,
                        dependencies: vec![],
                        updated_at: String::new(),
                    },
                )
            })
            .collect()
    }

    fn live(items: &[(&str, Value)]) -> BTreeMap<Address, LiveObject> {
        items
            .iter()
            .map(|(n, a)| {
                (
                    addr(n),
                    LiveObject {
                        attrs: attrs(a.clone()),
                        remote: Value::Null,
                        token: None,
                    },
                )
            })
            .collect()
    }

    fn run(
        d: &Desired,
        p: &BTreeMap<Address, ResourceState>,
        l: &BTreeMap<Address, LiveObject>,
        o: &DiffOptions,
    ) -> Result<Plan, Vec<PlanProblem>> {
        let fp = |v: &Value| format!("fp:{v}");
        diff(&DiffInput {
            desired: d,
            prior: p,
            live: l,
            recovered: &BTreeSet::new(),
            options: o,
            secret_fingerprint: &fp,
        })
    }

    #[test]
    fn the_table() {
        let d = desired(&[
            ("1", json!({"memory": 1})),
            ("2", json!({"memory": 1})),
            ("3", json!({"memory": 1})),
        ]);
        let p = prior(&[
            ("2", json!({"memory": 1})),
            ("3", json!({"memory": 1})),
            ("4", json!({"memory": 1})),
            ("5", json!({"memory": 1})),
        ]);
        let l = live(&[("3", json!({"memory": 2})), ("4", json!({"memory": 1}))]);
        let plan = run(&d, &p, &l, &DiffOptions::default()).unwrap();
        let got: Vec<(String, Action)> = plan
            .changes
            .iter()
            .map(|c| (c.address.to_string(), c.action))
            .collect();
        assert_eq!(
            got,
            [
                ("lxc.1".to_string(), Action::Create),
                ("lxc.2".to_string(), Action::Create),
                ("lxc.3".to_string(), Action::Update),
                ("lxc.4".to_string(), Action::Delete),
                ("lxc.5".to_string(), Action::Forget),
            ]
        );
        assert_eq!(plan.changes[1].reason, Some(Reason::DeletedOutside));
        assert!(plan.changes[2].drift);
        assert_eq!(plan.changes[2].changed_paths, ["memory"]);
        let drifted: Vec<String> = plan.drift.iter().map(|d| d.address.to_string()).collect();
        assert_eq!(drifted, ["lxc.2", "lxc.3", "lxc.5"]);
    }

    #[test]
    fn unmanaged_keys_and_nested_paths() {
        let d = desired(&[("1", json!({"net0": {"ip": "a", "bridge": "vmbr0"}}))]);
        let p = prior(&[("1", json!({"net0": {"ip": "a", "bridge": "vmbr0"}}))]);
        let l = live(&[(
            "1",
            json!({"net0": {"ip": "b", "bridge": "vmbr0", "hwaddr": "X"}, "extra": 1}),
        )]);
        let plan = run(&d, &p, &l, &DiffOptions::default()).unwrap();
        assert_eq!(plan.changes[0].changed_paths, ["net0.ip"]);
    }

    #[test]
    fn existing_unmanaged_object_needs_adopt() {
        let d = desired(&[("1", json!({"memory": 1}))]);
        let l = live(&[("1", json!({"memory": 1}))]);
        let err = run(&d, &BTreeMap::new(), &l, &DiffOptions::default()).unwrap_err();
        assert!(err[0].help.contains("phoenix import lxc.1"));
        let plan = run(
            &d,
            &BTreeMap::new(),
            &l,
            &DiffOptions {
                adopt: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(plan.changes[0].action, Action::Adopt);
        assert!(plan.changes[0].changed_paths.is_empty());
    }

    #[test]
    fn force_new_replaces_and_grow_only_refuses_shrink() {
        let d = desired(&[
            ("1", json!({"unprivileged": true})),
            ("2", json!({"rootfs_size": "8G"})),
        ]);
        let p = prior(&[
            ("1", json!({"unprivileged": false})),
            ("2", json!({"rootfs_size": "16G"})),
        ]);
        let l = live(&[
            ("1", json!({"unprivileged": false})),
            ("2", json!({"rootfs_size": "16G"})),
        ]);
        let err = run(&d, &p, &l, &DiffOptions::default()).unwrap_err();
        assert_eq!(err.len(), 1);
        assert!(
            err[0].message.contains("cannot shrink from 16G to 8G"),
            "{}",
            err[0].message
        );
        let d1 = desired(&[("1", json!({"unprivileged": true}))]);
        let plan = run(&d1, &p, &l, &DiffOptions::default()).unwrap();
        assert_eq!(plan.changes[0].action, Action::Replace);
        assert_eq!(plan.changes[0].replace_paths, ["unprivileged"]);
    }

    #[test]
    fn what_goes_with_a_replaced_guest_is_created_again() {
        let mut d = desired(&[
            ("1", json!({"unprivileged": true})),
            ("2", json!({"unprivileged": true})),
        ]);
        let mut p = prior(&[
            ("1", json!({"unprivileged": false})),
            ("2", json!({"unprivileged": true})),
        ]);
        let mut l = live(&[
            ("1", json!({"unprivileged": false})),
            ("2", json!({"unprivileged": true})),
        ]);
        for (a, guest) in [
            ("firewall.1", "lxc.1"),
            ("lxc_conf.1", "lxc.1"),
            ("firewall.2", "lxc.2"),
            // Not destroyed with its guest: left alone.
            ("dns.records", "lxc.1"),
        ] {
            let a: Address = a.parse().unwrap();
            d.resources.insert(
                a.clone(),
                DesiredResource {
                    address: a.clone(),
                    attrs: attrs(json!({"enable": true})),
                    create: Default::default(),
                    depends_on: vec![guest.parse().unwrap()],
                },
            );
            p.insert(
                a.clone(),
                ResourceState {
                    address: a.clone(),
                    kind: a.kind().into(),
                    attributes: attrs(json!({"enable": true})),
                    remote: Value::Null,
                    dependencies: vec![guest.parse().unwrap()],
                    updated_at: String::new(),
                },
            );
            l.insert(
                a,
                LiveObject {
                    attrs: attrs(json!({"enable": true})),
                    remote: Value::Null,
                    token: None,
                },
            );
        }
        let plan = run(&d, &p, &l, &DiffOptions::default()).unwrap();
        let got: Vec<(String, Action, Option<Reason>)> = plan
            .changes
            .iter()
            .map(|c| (c.address.to_string(), c.action, c.reason))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "firewall.1".to_string(),
                    Action::Create,
                    Some(Reason::GuestReplaced)
                ),
                (
                    "lxc.1".to_string(),
                    Action::Replace,
                    Some(Reason::ForcesReplacement)
                ),
                (
                    "lxc_conf.1".to_string(),
                    Action::Create,
                    Some(Reason::GuestReplaced)
                ),
            ]
        );
        assert_eq!(
            plan.changes[0].depends_on,
            ["lxc.1".parse::<Address>().unwrap()]
        );
        // Drift-only plans plan nothing.
        let o = DiffOptions {
            refresh_only: true,
            ..Default::default()
        };
        assert!(run(&d, &p, &l, &o).unwrap().changes.is_empty());
    }

    #[test]
    fn grow_is_an_update() {
        let d = desired(&[("2", json!({"rootfs_size": "32G"}))]);
        let p = prior(&[("2", json!({"rootfs_size": "16G"}))]);
        let l = live(&[("2", json!({"rootfs_size": "16G"}))]);
        let plan = run(&d, &p, &l, &DiffOptions::default()).unwrap();
        assert_eq!(plan.changes[0].action, Action::Update);
    }

    #[test]
    fn drift_only_over_managed_attributes() {
        let d = desired(&[("1", json!({"net0": {"ip": "a"}}))]);
        let p = prior(&[(
            "1",
            json!({"net0": {"ip": "a", "hwaddr": "X"}, "swap": 512}),
        )]);
        let l = live(&[(
            "1",
            json!({"net0": {"ip": "a", "hwaddr": "Y"}, "swap": 1024}),
        )]);
        let plan = run(&d, &p, &l, &DiffOptions::default()).unwrap();
        assert!(plan.drift.is_empty(), "{:?}", plan.drift);
        let l2 = live(&[(
            "1",
            json!({"net0": {"ip": "b", "hwaddr": "Y"}, "swap": 1024}),
        )]);
        let plan = run(&d, &p, &l2, &DiffOptions::default()).unwrap();
        assert_eq!(plan.drift[0].changed_paths, ["net0.ip"]);
    }

    #[test]
    fn refresh_only_reports_drift_without_changes() {
        let d = desired(&[("1", json!({"memory": 1}))]);
        let p = prior(&[("1", json!({"memory": 1}))]);
        let l = live(&[("1", json!({"memory": 2}))]);
        let plan = run(
            &d,
            &p,
            &l,
            &DiffOptions {
                refresh_only: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(!plan.has_changes());
        assert_eq!(plan.drift[0].changed_paths, ["memory"]);
    }

    #[test]
    fn targets_limit_to_dependencies() {
        let mut d = desired(&[("1", json!({})), ("2", json!({})), ("3", json!({}))]);
        d.resources.get_mut(&addr("2")).unwrap().depends_on = vec![addr("1")];
        let plan = run(
            &d,
            &BTreeMap::new(),
            &BTreeMap::new(),
            &DiffOptions {
                targets: vec![addr("2")],
                ..Default::default()
            },
        )
        .unwrap();
        let got: Vec<String> = plan.changes.iter().map(|c| c.address.to_string()).collect();
        assert_eq!(got, ["lxc.1", "lxc.2"]);
    }
}
