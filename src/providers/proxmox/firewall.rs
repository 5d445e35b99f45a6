//! `firewall.cluster` and `firewall.<guest id>` on Proxmox: read each
//! firewall's options and rules (a guest's node and type from the bulk
//! inventory), and change them in place: options with their digest, rules
//! with the edit script of `model/firewall.rs`, one API call per edit, each
//! carrying the rules digest read just before it, so a concurrent edit is
//! refused instead of overwritten. "Delete" resets what phoenix manages (the
//! options it sets, every rule); it never destroys anything else.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::{Map, Value, json};
use tokio::sync::Semaphore;

use super::Pve;
use super::guest::GuestType;
use crate::model::firewall::{
    self as model, CLUSTER, CLUSTER_OPTIONS, GUEST_OPTIONS, KIND, Rule, RuleEdit,
};
use crate::model::{Address, Attrs, DesiredResource, LiveObject};
use crate::plan::Change;
use crate::providers::{BoxFuture, Lane, OpContext, ProviderError, ResourceProvider};

pub struct FirewallProvider {
    pve: Arc<Pve>,
}

/// Which firewall: the datacenter's, or one guest's on its node.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scope {
    Cluster,
    Guest {
        node: String,
        ty: GuestType,
        vmid: u32,
    },
}

impl Scope {
    fn base(&self) -> String {
        match self {
            Scope::Cluster => "/cluster/firewall".into(),
            Scope::Guest { node, ty, vmid } => {
                format!("/nodes/{node}/{}/{vmid}/firewall", ty.path())
            }
        }
    }

    fn remote(&self) -> Value {
        match self {
            Scope::Cluster => json!({"scope": CLUSTER}),
            Scope::Guest { node, ty, vmid } => {
                json!({"node": node, "type": ty.path(), "vmid": vmid})
            }
        }
    }

    fn from_remote(remote: &Value) -> Option<Scope> {
        if remote["scope"] == CLUSTER {
            return Some(Scope::Cluster);
        }
        Some(Scope::Guest {
            node: remote["node"].as_str()?.to_string(),
            ty: guest_type(remote["type"].as_str()?)?,
            vmid: u32::try_from(remote["vmid"].as_u64()?).ok()?,
        })
    }

    /// The options phoenix manages here, which a reset deletes.
    fn managed_options(&self) -> &'static [&'static str] {
        match self {
            Scope::Cluster => &CLUSTER_OPTIONS,
            Scope::Guest { .. } => &GUEST_OPTIONS,
        }
    }
}

fn guest_type(t: &str) -> Option<GuestType> {
    match t {
        "lxc" => Some(GuestType::Lxc),
        "qemu" => Some(GuestType::Qemu),
        _ => None,
    }
}

/// `None` for `firewall.cluster`, the guest id otherwise.
fn vmid_of(addr: &Address) -> Result<Option<u32>, ProviderError> {
    if addr.name() == CLUSTER {
        return Ok(None);
    }
    addr.name().parse().map(Some).map_err(|_| {
        ProviderError::Other(format!(
            "`{addr}`: a firewall address is `firewall.cluster` or `firewall.<guest id>`"
        ))
    })
}

/// Where a guest lives, from an inventory (`/cluster/resources?type=vm`) answer.
fn find_guest(inventory: &[Value], vmid: u32) -> Option<Scope> {
    let entry = inventory
        .iter()
        .find(|g| g["vmid"].as_u64() == Some(u64::from(vmid)))?;
    Some(Scope::Guest {
        node: entry["node"].as_str()?.to_string(),
        ty: guest_type(entry["type"].as_str()?)?,
        vmid,
    })
}

/// The live object's token holds both digests: options and rules change apart.
fn token(options_digest: Option<&str>, rules_digest: Option<&str>) -> String {
    format!(
        "options={};rules={}",
        options_digest.unwrap_or(""),
        rules_digest.unwrap_or("")
    )
}

fn token_parts(token: Option<&str>) -> (Option<String>, Option<String>) {
    let mut options = None;
    let mut rules = None;
    for part in token.unwrap_or("").split(';') {
        match part.split_once('=') {
            Some(("options", d)) if !d.is_empty() => options = Some(d.to_string()),
            Some(("rules", d)) if !d.is_empty() => rules = Some(d.to_string()),
            _ => {}
        }
    }
    (options, rules)
}

fn conflict(addr: &Address, e: ProviderError) -> ProviderError {
    match e {
        ProviderError::Api { message, .. }
            if message.contains("detected modified configuration") =>
        {
            ProviderError::Conflict(format!(
                "the firewall of {addr} changed in Proxmox while phoenix was changing it\n\
                 help: run `phoenix plan` again to see the new state"
            ))
        }
        other => other,
    }
}

/// What the rule list must still be before phoenix edits it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect {
    /// Whatever it is (a create, a reset).
    Anything,
    /// What the plan read: this digest, or `None` for an empty list (which has none).
    Digest(Option<String>),
}

/// The changes of one create or update, in the terms of the API.
struct Work {
    /// `PUT .../options` parameters (empty: none).
    options: Vec<(String, String)>,
    /// The options digest they were computed against.
    options_digest: Option<String>,
    /// The rule list wanted, if it changes.
    rules: Option<(Vec<Rule>, Expect)>,
    /// The options switch the firewall off.
    turning_off: bool,
}

/// What one firewall holds, as read.
struct Snapshot {
    options: Map<String, Value>,
    rules: Vec<Rule>,
    rules_digest: Option<String>,
}

impl Snapshot {
    fn live(&self, scope: &Scope) -> LiveObject {
        let attrs = match scope {
            Scope::Cluster => model::cluster_attrs_from_pve(&self.options, &self.rules),
            Scope::Guest { .. } => model::guest_attrs_from_pve(&self.options, &self.rules),
        };
        LiveObject {
            attrs,
            remote: scope.remote(),
            token: Some(token(
                self.options.get("digest").and_then(Value::as_str),
                self.rules_digest.as_deref(),
            )),
        }
    }
}

async fn get_rules(pve: &Pve, scope: &Scope) -> Result<(Vec<Rule>, Option<String>), ProviderError> {
    let answer = pve.api.get(&format!("{}/rules", scope.base()), &[]).await?;
    Ok((model::rules_from_pve(&answer), model::rules_digest(&answer)))
}

async fn get_options(pve: &Pve, scope: &Scope) -> Result<Map<String, Value>, ProviderError> {
    let answer = pve
        .api
        .get(&format!("{}/options", scope.base()), &[])
        .await?;
    Ok(answer.as_object().cloned().unwrap_or_default())
}

async fn snapshot(pve: &Pve, scope: &Scope) -> Result<Snapshot, ProviderError> {
    let options = get_options(pve, scope).await?;
    let (rules, rules_digest) = get_rules(pve, scope).await?;
    Ok(Snapshot {
        options,
        rules,
        rules_digest,
    })
}

impl FirewallProvider {
    pub fn new(pve: Arc<Pve>) -> Self {
        FirewallProvider { pve }
    }

    /// The guest's firewall scope, from a fresh inventory (the run's cached
    /// one predates guests this apply created).
    async fn locate_guest(&self, vmid: u32) -> Result<Option<Scope>, ProviderError> {
        let inv = self
            .pve
            .api
            .get(
                "/cluster/resources",
                &super::params(&[("type", "vm".into())]),
            )
            .await?;
        Ok(find_guest(
            inv.as_array().map_or(&[][..], Vec::as_slice),
            vmid,
        ))
    }

    /// `PUT .../options` with these parameters, refused by PVE if the options
    /// changed since `digest` was read.
    async fn set_options(
        &self,
        addr: &Address,
        scope: &Scope,
        mut params: Vec<(String, String)>,
        digest: Option<String>,
        ctx: &dyn OpContext,
    ) -> Result<(), ProviderError> {
        if params.is_empty() {
            return Ok(());
        }
        if let Some(d) = digest {
            params.push(("digest".into(), d));
        }
        ctx.progress("Configuring", &format!("{addr}: options"));
        self.pve
            .api
            .put(&format!("{}/options", scope.base()), &params)
            .await
            .map_err(|e| conflict(addr, e))?;
        Ok(())
    }

    /// Make the rule list `want`, one edit at a time. If the list is not what
    /// `expected` says (the plan's digest), nothing is touched. After every edit the list is read again: its digest guards the
    /// next edit, and a list that is not what the edit should have made means
    /// someone else is editing it too.
    async fn sync_rules(
        &self,
        addr: &Address,
        scope: &Scope,
        want: &[Rule],
        expected: Expect,
        ctx: &dyn OpContext,
    ) -> Result<(), ProviderError> {
        let base = format!("{}/rules", scope.base());
        let (mut current, mut digest) = get_rules(&self.pve, scope).await?;
        if let Expect::Digest(expected) = expected
            && expected != digest
        {
            return Err(ProviderError::Conflict(format!(
                "the firewall rules of {addr} changed in Proxmox since the plan read them\n\
                 help: run `phoenix plan` again to see the new state"
            )));
        }
        let script = model::edit_script(&current, want);
        if script.is_empty() {
            return Ok(());
        }
        ctx.progress(
            "Configuring",
            &format!("{addr}: {} rule edit(s)", script.len()),
        );
        for edit in &script {
            let mut params = match edit {
                RuleEdit::Delete { .. } => Vec::new(),
                RuleEdit::Update { pos, rule } => current
                    .get(*pos)
                    .map(|from| from.update_params(rule))
                    .unwrap_or_default(),
                RuleEdit::Move { moveto, .. } => vec![("moveto".into(), moveto.to_string())],
                RuleEdit::Insert { rule } => {
                    // PVE puts a new rule at the top whatever `pos` says; say so.
                    let mut p = rule.create_params();
                    p.push(("pos".into(), "0".into()));
                    p
                }
            };
            if let Some(d) = &digest {
                params.push(("digest".into(), d.clone()));
            }
            let sent = match edit {
                RuleEdit::Delete { pos } => {
                    self.pve.api.delete(&format!("{base}/{pos}"), &params).await
                }
                RuleEdit::Update { pos, .. } | RuleEdit::Move { pos, .. } => {
                    self.pve.api.put(&format!("{base}/{pos}"), &params).await
                }
                RuleEdit::Insert { .. } => self.pve.api.post(&base, &params).await,
            };
            sent.map_err(|e| conflict(addr, e))?;
            model::apply_edit(&mut current, edit).map_err(|e| {
                ProviderError::Other(format!(
                    "{addr}: an impossible rule edit ({e}); this is a bug"
                ))
            })?;
            let (now, now_digest) = get_rules(&self.pve, scope).await?;
            let touched = match edit {
                RuleEdit::Update { pos, .. } => Some(*pos),
                RuleEdit::Insert { .. } => Some(0),
                _ => None,
            };
            let others_equal = now.len() == current.len()
                && now
                    .iter()
                    .zip(&current)
                    .enumerate()
                    .all(|(i, (a, b))| Some(i) == touched || a == b);
            if !others_equal {
                return Err(ProviderError::Conflict(format!(
                    "the firewall rules of {addr} changed in Proxmox while phoenix was editing them\n\
                     help: run `phoenix plan` again to see the new state"
                )));
            }
            // A rule PVE rewrote in a way the normalizer does not know: go on with
            // PVE's version; the read-back check after the apply names the difference.
            current = now;
            digest = now_digest;
        }
        Ok(())
    }

    async fn read_back(&self, scope: &Scope) -> Result<LiveObject, ProviderError> {
        Ok(snapshot(&self.pve, scope).await?.live(scope))
    }

    /// Options first when they turn the firewall off, rules first otherwise:
    /// a firewall is never on with half its rules.
    async fn converge(
        &self,
        addr: &Address,
        scope: &Scope,
        work: Work,
        ctx: &dyn OpContext,
    ) -> Result<(), ProviderError> {
        let Work {
            options,
            options_digest,
            rules,
            turning_off,
        } = work;
        if turning_off {
            self.set_options(addr, scope, options, options_digest, ctx)
                .await?;
            if let Some((want, expected)) = rules {
                self.sync_rules(addr, scope, &want, expected, ctx).await?;
            }
        } else {
            if let Some((want, expected)) = rules {
                self.sync_rules(addr, scope, &want, expected, ctx).await?;
            }
            self.set_options(addr, scope, options, options_digest, ctx)
                .await?;
        }
        Ok(())
    }

    async fn create_impl(
        &self,
        d: &DesiredResource,
        ctx: &dyn OpContext,
    ) -> Result<LiveObject, ProviderError> {
        let addr = &d.address;
        let scope = match vmid_of(addr)? {
            None => Scope::Cluster,
            Some(vmid) => self.locate_guest(vmid).await?.ok_or_else(|| {
                ProviderError::Other(format!(
                    "{addr}: guest {vmid} does not exist in Proxmox; its firewall is set up once it does"
                ))
            })?,
        };
        let want = model::rules_from_attrs(&d.attrs)
            .map_err(|e| ProviderError::Other(format!("{addr}: {e}")))?;
        let options = model::options_params(&d.attrs);
        let options_digest = if options.is_empty() {
            None
        } else {
            get_options(&self.pve, &scope)
                .await?
                .get("digest")
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let turning_off = d.attrs.get("enable") == Some(&Value::Bool(false));
        let work = Work {
            options,
            options_digest,
            rules: Some((want, Expect::Anything)),
            turning_off,
        };
        self.converge(addr, &scope, work, ctx).await?;
        self.read_back(&scope).await
    }

    async fn update_impl(
        &self,
        d: &DesiredResource,
        live: &LiveObject,
        change: &Change,
        ctx: &dyn OpContext,
    ) -> Result<LiveObject, ProviderError> {
        let addr = &d.address;
        let scope = Scope::from_remote(&live.remote).ok_or_else(|| {
            ProviderError::Other(format!("`{addr}`: the plan has no location for it"))
        })?;
        let tops: BTreeSet<&str> = change
            .changed_paths
            .iter()
            .map(|p| p.split('.').next().unwrap_or(p))
            .collect();
        let changed_options: Attrs = d
            .attrs
            .iter()
            .filter(|(k, _)| CLUSTER_OPTIONS.contains(&k.as_str()) && tops.contains(k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let (options_digest, rules_digest) = token_parts(live.token.as_deref());
        let rules = if tops.contains("rules") || tops.contains("rule_count") {
            let want = model::rules_from_attrs(&d.attrs)
                .map_err(|e| ProviderError::Other(format!("{addr}: {e}")))?;
            Some((want, Expect::Digest(rules_digest)))
        } else {
            None
        };
        let turning_off = changed_options.get("enable") == Some(&Value::Bool(false));
        let work = Work {
            options: model::options_params(&changed_options),
            options_digest,
            rules,
            turning_off,
        };
        self.converge(addr, &scope, work, ctx).await?;
        self.read_back(&scope).await
    }

    /// `_remote` is where the guest was when last read; where it is now is
    /// what counts (it may have migrated), so the inventory is asked again.
    async fn delete_impl(
        &self,
        addr: &Address,
        _remote: &Value,
        ctx: &dyn OpContext,
    ) -> Result<(), ProviderError> {
        let scope = match vmid_of(addr)? {
            None => Scope::Cluster,
            // A guest that is gone took its firewall with it.
            Some(vmid) => match self.locate_guest(vmid).await? {
                Some(s) => s,
                None => return Ok(()),
            },
        };
        let options = get_options(&self.pve, &scope).await?;
        let present: Vec<&str> = scope
            .managed_options()
            .iter()
            .copied()
            .filter(|k| options.contains_key(*k))
            .collect();
        let params = if present.is_empty() {
            Vec::new()
        } else {
            vec![("delete".to_string(), present.join(","))]
        };
        let digest = options
            .get("digest")
            .and_then(Value::as_str)
            .map(str::to_string);
        // Off first, then the rules go: never a firewall on with half its rules.
        self.set_options(addr, &scope, params, digest, ctx).await?;
        self.sync_rules(addr, &scope, &[], Expect::Anything, ctx)
            .await
    }
}

impl ResourceProvider for FirewallProvider {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn refresh<'a>(
        &'a self,
        addresses: &'a [Address],
    ) -> BoxFuture<'a, Result<BTreeMap<Address, LiveObject>, ProviderError>> {
        Box::pin(async move {
            let mut out = BTreeMap::new();
            let mut found = Vec::new();
            for addr in addresses {
                match vmid_of(addr)? {
                    None => found.push((addr.clone(), Scope::Cluster)),
                    Some(vmid) => {
                        // An index lookup: a scan of the inventory per address is quadratic.
                        let entry = self.pve.inventory_guest(vmid).await?;
                        if let Some(scope) =
                            entry.and_then(|e| find_guest(std::slice::from_ref(e), vmid))
                        {
                            found.push((addr.clone(), scope));
                        }
                    }
                }
            }
            let sem = Arc::new(Semaphore::new(self.pve.read_concurrency));
            let mut set = tokio::task::JoinSet::new();
            for (addr, scope) in found {
                let pve = self.pve.clone();
                let sem = sem.clone();
                set.spawn(async move {
                    let _permit = sem.acquire_owned().await;
                    let read = snapshot(&pve, &scope).await;
                    (addr, scope, read)
                });
            }
            while let Some(joined) = set.join_next().await {
                let (addr, scope, read) =
                    joined.map_err(|e| ProviderError::Other(format!("a read task failed: {e}")))?;
                match read {
                    // Nothing set: PVE has no firewall file for it, so it does not exist yet.
                    Ok(s) if model::is_pristine(&s.options, &s.rules) => {}
                    Ok(s) => {
                        out.insert(addr, s.live(&scope));
                    }
                    Err(ProviderError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(out)
        })
    }

    fn create<'a>(
        &'a self,
        desired: &'a DesiredResource,
        ctx: &'a dyn OpContext,
    ) -> BoxFuture<'a, Result<LiveObject, ProviderError>> {
        Box::pin(self.create_impl(desired, ctx))
    }

    fn update<'a>(
        &'a self,
        desired: &'a DesiredResource,
        live: &'a LiveObject,
        change: &'a Change,
        ctx: &'a dyn OpContext,
    ) -> BoxFuture<'a, Result<LiveObject, ProviderError>> {
        Box::pin(self.update_impl(desired, live, change, ctx))
    }

    fn delete<'a>(
        &'a self,
        address: &'a Address,
        remote: &'a Value,
        ctx: &'a dyn OpContext,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(self.delete_impl(address, remote, ctx))
    }

    fn lanes(&self, change: &Change, _desired: Option<&DesiredResource>) -> Vec<Lane> {
        // A guest's firewall shares the guest's lane: no edit races another
        // operation on that guest. The datacenter firewall has its own.
        let key = if change.address.name() == CLUSTER {
            "firewall:cluster".to_string()
        } else {
            format!("guest:{}", change.address.name())
        };
        vec![Lane { key, capacity: 1 }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trips_both_digests() {
        let t = token(Some("abc"), None);
        assert_eq!(token_parts(Some(&t)), (Some("abc".into()), None));
        let t = token(Some("a"), Some("b"));
        assert_eq!(token_parts(Some(&t)), (Some("a".into()), Some("b".into())));
        assert_eq!(token_parts(None), (None, None));
    }

    #[test]
    fn scopes_map_to_api_paths_and_back() {
        let g = Scope::Guest {
            node: "pve1".into(),
            ty: GuestType::Qemu,
            vmid: 1002,
        };
        assert_eq!(g.base(), "/nodes/pve1/qemu/1002/firewall");
        assert_eq!(Scope::from_remote(&g.remote()), Some(g));
        assert_eq!(Scope::Cluster.base(), "/cluster/firewall");
        assert_eq!(
            Scope::from_remote(&Scope::Cluster.remote()),
            Some(Scope::Cluster)
        );
        let inv = vec![json!({"vmid": 101, "node": "pve2", "type": "lxc"})];
        assert_eq!(
            find_guest(&inv, 101),
            Some(Scope::Guest {
                node: "pve2".into(),
                ty: GuestType::Lxc,
                vmid: 101
            })
        );
        assert_eq!(find_guest(&inv, 102), None);
    }
}
