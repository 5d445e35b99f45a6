//! The seed system's verbs, mapped onto plan/apply so they gain a plan, a
//! confirmation and a state: `sync`, `create`, `converge`, `delete`,
//! `start`, `stop`, `restart`, `status`, `LetsGo`.
//!
//! Guests are named by address (`lxc.101`) or by bare id (`101` means
//! `lxc.101` or `vm.101`, whichever the manifests or the state hold).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;

use super::{Context, PlanOptions, compute_plan, load_site, refresh};
use crate::error::{Error, Result};
use crate::model::{Address, Desired, LiveObject};
use crate::plan::{Action, Plan};
use crate::providers::{self, OpContext, PowerAction};
use crate::state::{LockMode, State};

pub use crate::model::address::GUEST_KINDS;

/// Resolve what the user typed into addresses known to the manifests or the state.
pub fn resolve(items: &[String], desired: &Desired, state: &State) -> Result<Vec<Address>> {
    let known = |a: &Address| desired.get(a).is_some() || state.resources.contains_key(a);
    let mut out = Vec::new();
    for item in items {
        let addr = if item.chars().all(|c| c.is_ascii_digit()) && !item.is_empty() {
            let found: Vec<Address> = GUEST_KINDS
                .iter()
                .map(|k| Address::new(*k, item.as_str()))
                .filter(known)
                .collect();
            match found.as_slice() {
                [one] => one.clone(),
                [] => {
                    return Err(Error::msg(
                        format!("no guest `{item}` in the manifests or the state"),
                        "`phoenix status` lists the guests",
                    ));
                }
                _ => {
                    return Err(Error::msg(
                        format!(
                            "`{item}` is ambiguous: {}",
                            found
                                .iter()
                                .map(ToString::to_string)
                                .collect::<Vec<_>>()
                                .join(" and ")
                        ),
                        "name it by address, e.g. `lxc.101`",
                    ));
                }
            }
        } else {
            let a: Address = item.parse().map_err(|e: crate::model::AddressError| {
                Error::msg(
                    e.to_string(),
                    "use an address like `lxc.101` or a guest id like `101`",
                )
            })?;
            if !known(&a) {
                return Err(Error::msg(
                    format!("`{a}` is neither in the manifests nor in the state"),
                    "`phoenix status` lists the guests",
                ));
            }
            a
        };
        if !out.contains(&addr) {
            out.push(addr);
        }
    }
    Ok(out)
}

/// For `delete`: the targets plus what is attached to them (non-guest
/// resources that depend on them, such as their firewall or snapshots).
/// Guests that depend on a target are refused unless deleted too.
pub fn removal_set(targets: &[Address], desired: &Desired) -> Result<BTreeSet<Address>> {
    let mut set: BTreeSet<Address> = targets.iter().cloned().collect();
    loop {
        let mut grew = false;
        for (a, r) in &desired.resources {
            if set.contains(a) || !r.depends_on.iter().any(|d| set.contains(d)) {
                continue;
            }
            if a.is_guest() {
                let on: Vec<String> = r
                    .depends_on
                    .iter()
                    .filter(|d| set.contains(*d))
                    .map(ToString::to_string)
                    .collect();
                return Err(Error::msg(
                    format!(
                        "{a} depends on {}, so it cannot be deleted alone",
                        on.join(", ")
                    ),
                    format!("delete {a} too (name it as well), or change its manifest first"),
                ));
            }
            set.insert(a.clone());
            grew = true;
        }
        if !grew {
            return Ok(set);
        }
    }
}

/// The guests' dependency order (dependencies first) restricted to `addrs`.
pub fn dependency_order(addrs: &[Address], desired: &Desired) -> Vec<Address> {
    let wanted: BTreeSet<&Address> = addrs.iter().collect();
    let mut out: Vec<Address> = Vec::new();
    let mut seen = BTreeSet::new();
    fn visit(a: &Address, desired: &Desired, seen: &mut BTreeSet<Address>, out: &mut Vec<Address>) {
        if !seen.insert(a.clone()) {
            return;
        }
        if let Some(r) = desired.get(a) {
            for d in &r.depends_on {
                visit(d, desired, seen, out);
            }
        }
        out.push(a.clone());
    }
    for a in addrs {
        visit(a, desired, &mut seen, &mut out);
    }
    out.retain(|a| wanted.contains(a));
    out
}

struct PowerCtx<'a> {
    ctx: &'a Context,
}

impl OpContext for PowerCtx<'_> {
    fn task_started(&self, _address: &Address, _task: &str) {}
    fn progress(&self, verb: &str, message: &str) {
        self.ctx.shell.verbose_status(verb, message);
    }
}

/// `start|stop|restart <id>...`: only the named guests, dependencies first
/// for start and restart, dependents first for stop.
pub async fn power(
    ctx: &Context,
    items: &[String],
    action: PowerAction,
    dry_run: bool,
    lock_timeout: Duration,
) -> Result<()> {
    let _guard = if dry_run {
        None
    } else {
        Some(ctx.lock(LockMode::Exclusive, "power", lock_timeout)?)
    };
    let state = ctx.load_state()?.state;
    let site = load_site(ctx)?;
    let desired = super::desired(ctx, &site)?;
    let targets = resolve(items, &desired, &state)?;
    if let Some(a) = targets.iter().find(|a| !a.is_guest()) {
        return Err(Error::msg(
            format!("{a} is not a guest"),
            "start, stop and restart act on `lxc.*` and `vm.*`",
        ));
    }
    let mut order = dependency_order(&targets, &desired);
    for t in &targets {
        if !order.contains(t) {
            order.push(t.clone());
        }
    }
    if action == PowerAction::Stop {
        order.reverse();
    }
    let verb = match action {
        PowerAction::Start => "start",
        PowerAction::Stop => "stop",
        PowerAction::Restart => "restart",
    };
    if dry_run {
        for a in &order {
            ctx.shell.status("Would", format!("{verb} {a}"));
        }
        return Ok(());
    }
    let kinds = order.iter().map(|a| a.kind().to_string()).collect();
    let registry = providers::registry(&kinds, &super::settings(Some(&site))?)?;
    let live = refresh(ctx, &registry, &order.iter().cloned().collect()).await?;
    let pctx = PowerCtx { ctx };
    for a in &order {
        let Some(obj) = live.get(a) else {
            return Err(Error::msg(
                format!("{a} does not exist"),
                format!("`phoenix create {}` creates it", a.name()),
            ));
        };
        let Some(p) = registry.get(a.kind()) else {
            continue;
        };
        let verb_ing = match action {
            PowerAction::Start => "Starting",
            PowerAction::Stop => "Stopping",
            PowerAction::Restart => "Restarting",
        };
        ctx.shell.status(verb_ing, a);
        p.power(a, &obj.remote, action, &pctx).await?;
    }
    ctx.shell.status(
        "Finished",
        format!(
            "{verb} of {}",
            order
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    Ok(())
}

/// One row of `phoenix status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StatusRow {
    pub address: Address,
    pub name: String,
    pub status: String,
    pub node: String,
    pub ip: String,
    /// `yes`, `drift: ...`, `pending: ...`, `missing`, `not managed`, `not in manifests`.
    pub matches: String,
}

fn ip_of(attrs: &serde_json::Map<String, Value>) -> Option<String> {
    ["net0", "ipconfig0"]
        .iter()
        .find_map(|k| {
            attrs
                .get(*k)
                .and_then(|n| n.get("ip"))
                .and_then(Value::as_str)
        })
        .map(str::to_string)
}

fn name_of(attrs: &serde_json::Map<String, Value>) -> Option<String> {
    ["hostname", "name"]
        .iter()
        .find_map(|k| attrs.get(*k).and_then(Value::as_str))
        .map(str::to_string)
}

/// `status [<id>...]`: each guest's live status, node, IP, and whether it matches the manifests.
pub async fn status(
    ctx: &Context,
    items: &[String],
    lock_timeout: Duration,
) -> Result<Vec<StatusRow>> {
    let planned = compute_plan(
        ctx,
        &PlanOptions {
            adopt: true,
            read_only: true,
            lock_timeout,
            ..Default::default()
        },
        None,
    )
    .await?;
    let wanted: Vec<Address> = if items.is_empty() {
        planned
            .desired
            .resources
            .keys()
            .chain(planned.state.resources.keys())
            .filter(|a| a.is_guest())
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    } else {
        resolve(items, &planned.desired, &planned.state)?
    };
    let drift: BTreeMap<&Address, &crate::plan::DriftEntry> =
        planned.plan.drift.iter().map(|d| (&d.address, d)).collect();
    let mut rows = Vec::new();
    for a in wanted {
        let live: Option<&LiveObject> = planned.live.get(&a);
        let d = planned.desired.get(&a);
        let attrs = live.map(|l| &l.attrs).or(d.map(|d| &d.attrs));
        let change = planned.plan.change(&a);
        let matches = match (change, drift.get(&a)) {
            (_, Some(dr)) if !dr.changed_paths.is_empty() => {
                format!("drift: {}", dr.changed_paths.join(", "))
            }
            (Some(c), _) => match c.action {
                Action::Create => "missing".into(),
                Action::Adopt if c.changed_paths.is_empty() => "not managed".into(),
                Action::Adopt => format!("not managed; differs: {}", c.changed_paths.join(", ")),
                Action::Delete | Action::Forget => "not in manifests".into(),
                _ => format!("pending: {}", c.changed_paths.join(", ")),
            },
            (None, _) => "yes".into(),
        };
        rows.push(StatusRow {
            name: attrs.and_then(name_of).unwrap_or_default(),
            status: live
                .and_then(|l| l.attrs.get("status"))
                .and_then(Value::as_str)
                .unwrap_or("absent")
                .to_string(),
            node: live
                .and_then(|l| l.remote["node"].as_str())
                .unwrap_or("-")
                .to_string(),
            ip: attrs.and_then(ip_of).unwrap_or_else(|| "-".into()),
            matches,
            address: a,
        });
    }
    Ok(rows)
}

/// Print the status table.
pub fn print_status(rows: &[StatusRow]) {
    let head = ["ADDRESS", "NAME", "STATUS", "NODE", "IP", "MATCHES"];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.address.to_string(),
                r.name.clone(),
                r.status.clone(),
                r.node.clone(),
                r.ip.clone(),
                r.matches.clone(),
            ]
        })
        .collect();
    let mut w = head.map(str::len);
    for c in &cells {
        for (i, v) in c.iter().enumerate() {
            w[i] = w[i].max(v.len());
        }
    }
    let line = |c: [&str; 6]| {
        let mut s = String::new();
        for (i, v) in c.iter().enumerate() {
            if i == 5 {
                s.push_str(v);
            } else {
                s.push_str(&format!("{v:<width$}  ", width = w[i]));
            }
        }
        s
    };
    println!("{}", line(head));
    for c in &cells {
        println!("{}", line([&c[0], &c[1], &c[2], &c[3], &c[4], &c[5]]));
    }
}

/// The guests a plan would start, in `boot_order` (then address) order:
/// LetsGo's start phase.
pub fn boot_order(plan_desired: &Desired, addrs: &[Address]) -> Vec<Address> {
    let mut v: Vec<(u64, Address)> = addrs
        .iter()
        .filter_map(|a| {
            let d = plan_desired.get(a)?;
            let order = d
                .attrs
                .get("startup")
                .and_then(|s| s.get("order"))
                .and_then(Value::as_u64)
                .unwrap_or(u64::MAX);
            Some((order, a.clone()))
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, a)| a).collect()
}

/// Whether a plan touches anything (for `--dry-run` summaries).
pub fn describe(plan: &Plan) -> String {
    crate::plan::render::summary_line(plan)
}

/// Resolve ids against the manifests and the state as they are now.
pub fn resolve_now(
    ctx: &Context,
    items: &[String],
    lock_timeout: Duration,
) -> Result<Vec<Address>> {
    let site = load_site(ctx)?;
    let desired = super::desired(ctx, &site)?;
    let state = {
        let _g = ctx.lock_read_only("resolve", lock_timeout)?;
        ctx.load_state()?.state
    };
    resolve(items, &desired, &state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DesiredResource;

    fn desired(edges: &[(&str, &[&str])]) -> Desired {
        let mut d = Desired::default();
        for (a, deps) in edges {
            let addr: Address = a.parse().unwrap();
            d.resources.insert(
                addr.clone(),
                DesiredResource {
                    address: addr,
                    attrs: Default::default(),
                    create: Default::default(),
                    depends_on: deps.iter().map(|s| s.parse().unwrap()).collect(),
                },
            );
        }
        d
    }

    #[test]
    fn bare_ids_resolve_to_the_one_guest_that_exists() {
        let d = desired(&[("lxc.101", &[]), ("vm.1002", &[])]);
        let s = State::new();
        let got = resolve(&["101".into(), "1002".into(), "lxc.101".into()], &d, &s).unwrap();
        assert_eq!(
            got,
            vec![
                "lxc.101".parse::<Address>().unwrap(),
                "vm.1002".parse().unwrap()
            ]
        );
        assert!(resolve(&["55".into()], &d, &s).is_err());
        let both = desired(&[("lxc.7", &[]), ("vm.7", &[])]);
        let err = resolve(&["7".into()], &both, &s).unwrap_err().to_string();
        assert!(err.contains("ambiguous"), "{err}");
    }

    #[test]
    fn delete_takes_attachments_and_refuses_dependent_guests() {
        let d = desired(&[
            ("lxc.900", &[]),
            ("snapshot.900.base", &["lxc.900"]),
            ("lxc.101", &["snapshot.900.base"]),
            ("firewall.101", &["lxc.101"]),
        ]);
        let set = removal_set(&["lxc.101".parse().unwrap()], &d).unwrap();
        let names: Vec<String> = set.iter().map(ToString::to_string).collect();
        assert_eq!(names, ["firewall.101", "lxc.101"]);
        let err = removal_set(&["lxc.900".parse().unwrap()], &d)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("lxc.101 depends on snapshot.900.base"),
            "{err}"
        );
        assert!(
            removal_set(
                &["lxc.900".parse().unwrap(), "lxc.101".parse().unwrap()],
                &d
            )
            .is_ok()
        );
    }

    #[test]
    fn power_order_is_dependency_order_of_the_named_only() {
        let d = desired(&[
            ("lxc.103", &[]),
            ("lxc.101", &["lxc.103"]),
            ("vm.1002", &["lxc.101"]),
        ]);
        let order = dependency_order(
            &["vm.1002".parse().unwrap(), "lxc.103".parse().unwrap()],
            &d,
        );
        let names: Vec<String> = order.iter().map(ToString::to_string).collect();
        assert_eq!(names, ["lxc.103", "vm.1002"]);
    }
}
