//! The executor: walks the plan's dependency DAG with bounded concurrency and
//! per-target lanes, calls providers through [`ResourceProvider`], journals
//! creates and deletes before dispatching them, and commits the state after
//! every resource. It knows no kind's details.
//!
//! [`execute`] always returns the resulting state, partly updated when
//! something failed: a failure stops the work that depends on it, lets
//! independent work finish, and is reported in the outcomes.

pub mod lanes;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::Semaphore;

use crate::model::{Address, Desired, DesiredResource, LiveObject, schema_of};
use crate::plan::{Action, Change, Plan, diff::attr_differences};
use crate::providers::{OpContext, ProviderError, Registry};
use crate::state::{PendingKind, PendingOp, ResourceState, State, now_rfc3339};

/// Persists the state; called after every change to it, in two steps so the
/// slow one (the durable write) runs without the state locked.
pub trait StateStore: Send + Sync {
    /// Give `state` the serial of its next version and render it; `None` when
    /// nothing changed since the last write. Called with the state locked: no I/O.
    fn prepare(&self, state: &mut State) -> Result<Option<String>, String>;
    /// Write a document from [`StateStore::prepare`] durably.
    fn write(&self, serial: u64, document: String) -> Result<(), String>;
    /// Both steps.
    fn persist(&self, state: &mut State) -> Result<(), String> {
        match self.prepare(state)? {
            Some(document) => self.write(state.serial, document),
            None => Ok(()),
        }
    }
}

/// Run `f`, which blocks (a lock, a file write, fsync), without stalling the
/// other tasks of a multi-threaded runtime.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Progress reporting (the CLI's status lines are one implementation).
pub trait Hooks: Send + Sync {
    fn started(&self, _change: &Change) {}
    fn progress(&self, _verb: &str, _message: &str) {}
    fn finished(&self, _change: &Change, _outcome: &Outcome, _elapsed: Duration) {}
    fn committed(&self, _serial: u64) {}
}

/// What happened to one change.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Done {
        /// Attributes that did not read back as planned (a provider bug if any).
        inconsistent: Vec<String>,
    },
    Failed {
        message: String,
        details: Vec<String>,
    },
    /// Not attempted: a dependency failed, or the run was interrupted.
    Skipped { why: String },
}

impl Outcome {
    pub fn is_failure(&self) -> bool {
        !matches!(self, Outcome::Done { .. })
    }
}

#[derive(Debug, Clone)]
pub struct ApplyOptions {
    pub parallelism: usize,
}

/// Set to stop starting new work (SIGINT/SIGTERM); in-flight work finishes.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

pub struct ApplyResult {
    pub state: State,
    pub outcomes: BTreeMap<Address, Outcome>,
    /// The state could not be written at some point: the run stopped there.
    pub persist_error: Option<String>,
    /// Commits asked for, versions of the state written, and the time spent
    /// preparing and writing them (docs/performance.md).
    pub commits: CommitStats,
}

/// See [`ApplyResult::commits`].
#[derive(Debug, Clone, Copy, Default)]
pub struct CommitStats {
    pub commits: u64,
    pub writes: u64,
    pub write_time: Duration,
}

/// Everything a running change needs, shared between tasks.
struct Shared {
    state: Mutex<State>,
    store: Arc<dyn StateStore>,
    hooks: Arc<dyn Hooks>,
    registry: Registry,
    desired: Arc<Desired>,
    live: Arc<BTreeMap<Address, LiveObject>>,
    fingerprint: Arc<dyn Fn(&Value) -> String + Send + Sync>,
    persist_error: Mutex<Option<String>>,
    /// Changes made to `state` so far (counted under its lock).
    changes_made: AtomicU64,
    /// Held while a version is prepared and written: how many changes are on
    /// disk, how many writes made it so, and the time they took.
    on_disk: Mutex<(u64, u64, Duration)>,
    lanes: lanes::Lanes,
    cancel: Cancel,
}

impl Shared {
    /// The lanes of a change (see [`crate::providers::Lane`]), held until dropped.
    async fn acquire_lanes(&self, change: &Change) -> lanes::Held {
        let wanted = match self.registry.get(change.address.kind()) {
            Some(p) => p.lanes(change, self.desired.get(&change.address)),
            None => Vec::new(),
        };
        self.lanes.acquire(wanted).await
    }

    /// Why no new work may start, if it may not.
    fn stopped(&self) -> Option<&'static str> {
        if self.cancel.is_cancelled() {
            Some("interrupted before it started")
        } else if self
            .persist_error
            .lock()
            .map(|e| e.is_some())
            .unwrap_or(true)
        {
            Some("not started: the state could not be saved")
        } else {
            None
        }
    }

    /// Apply `f` to the state and persist it: when this returns `Ok`, the
    /// change is on disk. A failed persist stops the run.
    ///
    /// Group commit: one write at a time, each of the whole state as it is
    /// when the write starts, so changes made while a write is in flight go
    /// out together in the next one instead of one write each (a write costs
    /// the size of the state, and an apply makes several changes per resource).
    fn commit(&self, f: impl FnOnce(&mut State)) -> Result<(), String> {
        fn poisoned<T>(_: T) -> String {
            "state mutex poisoned".to_string()
        }
        let mine = {
            let mut st = self.state.lock().map_err(poisoned)?;
            f(&mut st);
            self.changes_made.fetch_add(1, Ordering::SeqCst) + 1
        };
        blocking(|| {
            let mut on_disk = self.on_disk.lock().map_err(poisoned)?;
            if let Some(e) = self.persist_error.lock().ok().and_then(|e| e.clone()) {
                return Err(e);
            }
            if on_disk.0 >= mine {
                return Ok(()); // written by a commit that started after this change
            }
            let started = Instant::now();
            let (upto, serial, prepared) = {
                let mut st = self.state.lock().map_err(poisoned)?;
                let upto = self.changes_made.load(Ordering::SeqCst);
                let prepared = self.store.prepare(&mut st);
                (upto, st.serial, prepared)
            };
            let written = match prepared {
                Ok(Some(document)) => {
                    on_disk.1 += 1;
                    self.store.write(serial, document)
                }
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            };
            on_disk.2 += started.elapsed();
            match written {
                Ok(()) => {
                    on_disk.0 = upto;
                    self.hooks.committed(serial);
                    Ok(())
                }
                Err(e) => {
                    if let Ok(mut slot) = self.persist_error.lock() {
                        slot.get_or_insert_with(|| e.clone());
                    }
                    Err(e)
                }
            }
        })
    }

    fn resource_state(
        &self,
        d: Option<&DesiredResource>,
        addr: &Address,
        live: &LiveObject,
        deps: &[Address],
    ) -> ResourceState {
        let mut attributes = live.attrs.clone();
        if let (Some(schema), Some(d)) = (schema_of(addr.kind()), d) {
            for k in schema.sensitive {
                if let Some(v) = d.attrs.get(*k) {
                    attributes.insert((*k).to_string(), Value::String((self.fingerprint)(v)));
                }
            }
        }
        ResourceState {
            address: addr.clone(),
            kind: addr.kind().to_string(),
            attributes,
            remote: live.remote.clone(),
            dependencies: deps.to_vec(),
            updated_at: now_rfc3339(),
        }
    }
}

struct Ctx<'a> {
    shared: &'a Shared,
}

impl OpContext for Ctx<'_> {
    fn task_started(&self, address: &Address, task: &str) {
        let task = task.to_string();
        let addr = address.clone();
        // Journal the task id so an interrupted run can find it again.
        let _ = self.shared.commit(|st| {
            if let Some(p) = st.pending.iter_mut().find(|p| p.address == addr) {
                p.task = Some(task);
            }
        });
    }
    fn progress(&self, verb: &str, message: &str) {
        self.shared.hooks.progress(verb, message);
    }
}

/// Which changes must finish before each change may start.
pub fn prerequisites(plan: &Plan) -> BTreeMap<Address, BTreeSet<Address>> {
    let by_addr: BTreeMap<&Address, &Change> =
        plan.changes.iter().map(|c| (&c.address, c)).collect();
    let removing = |c: &Change| matches!(c.action, Action::Delete | Action::Forget);
    // For each address, the deletes and forgets that depend on it (linear, not a scan per change).
    let mut removed_dependents: BTreeMap<&Address, Vec<&Address>> = BTreeMap::new();
    for other in plan.changes.iter().filter(|c| removing(c)) {
        for dep in &other.depends_on {
            removed_dependents
                .entry(dep)
                .or_default()
                .push(&other.address);
        }
    }
    let mut out: BTreeMap<Address, BTreeSet<Address>> = BTreeMap::new();
    for c in &plan.changes {
        let entry = out.entry(c.address.clone()).or_default();
        match c.action {
            Action::Delete | Action::Forget => {
                // Dependents go first.
                for other in removed_dependents.get(&c.address).into_iter().flatten() {
                    entry.insert((*other).clone());
                }
            }
            _ => {
                for dep in &c.depends_on {
                    if let Some(dc) = by_addr.get(dep)
                        && !matches!(dc.action, Action::Delete | Action::Forget)
                    {
                        entry.insert(dep.clone());
                    }
                }
            }
        }
    }
    out
}

/// Carry out the plan. See the module documentation.
#[allow(clippy::too_many_arguments)]
pub async fn execute(
    plan: &Plan,
    desired: Arc<Desired>,
    live: Arc<BTreeMap<Address, LiveObject>>,
    registry: Registry,
    state: State,
    store: Arc<dyn StateStore>,
    hooks: Arc<dyn Hooks>,
    fingerprint: Arc<dyn Fn(&Value) -> String + Send + Sync>,
    opts: &ApplyOptions,
    cancel: Cancel,
) -> ApplyResult {
    let shared = Arc::new(Shared {
        state: Mutex::new(state),
        store,
        hooks,
        registry,
        desired,
        live,
        fingerprint,
        persist_error: Mutex::new(None),
        changes_made: AtomicU64::new(0),
        on_disk: Mutex::new((0, 0, Duration::ZERO)),
        lanes: lanes::Lanes::default(),
        cancel: cancel.clone(),
    });
    let prereq = prerequisites(plan);
    let changes: BTreeMap<Address, Change> = plan
        .changes
        .iter()
        .map(|c| (c.address.clone(), c.clone()))
        .collect();
    // The walk is linear in the plan: each change counts the prerequisites it
    // still waits for, and a finished one tells only its own dependents.
    let mut waiting_for: BTreeMap<&Address, usize> = BTreeMap::new();
    let mut dependents: BTreeMap<&Address, Vec<&Address>> = BTreeMap::new();
    let mut ready: BTreeSet<&Address> = BTreeSet::new();
    for (addr, deps) in &prereq {
        waiting_for.insert(addr, deps.len());
        for d in deps {
            dependents.entry(d).or_default().push(addr);
        }
        if deps.is_empty() {
            ready.insert(addr);
        }
    }
    let mut outcomes: BTreeMap<Address, Outcome> = BTreeMap::new();
    let sem = Arc::new(Semaphore::new(opts.parallelism.max(1)));
    let mut set = tokio::task::JoinSet::new();

    loop {
        let stop = cancel.is_cancelled()
            || shared
                .persist_error
                .lock()
                .map(|e| e.is_some())
                .unwrap_or(true);
        // Start everything that is ready, in address order; once stopped,
        // nothing new starts (it is reported as skipped below).
        while !stop && let Some(addr) = ready.pop_first() {
            let shared = shared.clone();
            let change = changes[addr].clone();
            let sem = sem.clone();
            set.spawn(async move {
                // Lanes first, then a permit: a change that waits for a busy
                // lane (its guest's, the node's creates) holds no permit that
                // ready work could use meanwhile.
                let _lanes = shared.acquire_lanes(&change).await;
                let _permit = sem.acquire_owned().await;
                // Spawned when ready, but started only with a permit: an
                // interrupt (or a failed commit) meanwhile means it never starts.
                if let Some(why) = shared.stopped() {
                    return (change.address.clone(), Outcome::Skipped { why: why.into() });
                }
                let start = Instant::now();
                shared.hooks.started(&change);
                let outcome = run_one(&shared, &change).await;
                shared.hooks.finished(&change, &outcome, start.elapsed());
                (change.address.clone(), outcome)
            });
        }
        match set.join_next().await {
            Some(Ok((addr, outcome))) => {
                // What depends on a failure is skipped, and what depends on
                // that, naming the prerequisite that did not complete.
                let mut finished = vec![(addr, outcome)];
                while let Some((addr, outcome)) = finished.pop() {
                    let Some((addr, _)) = changes.get_key_value(&addr) else {
                        continue;
                    };
                    if outcomes.contains_key(addr) {
                        continue; // skipped already, through another failed prerequisite
                    }
                    let failed = outcome.is_failure();
                    outcomes.insert(addr.clone(), outcome);
                    for &dep in dependents.get(addr).into_iter().flatten() {
                        if outcomes.contains_key(dep) {
                            continue;
                        }
                        if failed {
                            ready.remove(dep);
                            let why = format!("{addr} did not complete");
                            finished.push((dep.clone(), Outcome::Skipped { why }));
                            continue;
                        }
                        if let Some(n) = waiting_for.get_mut(dep) {
                            *n = n.saturating_sub(1);
                            if *n == 0 {
                                ready.insert(dep);
                            }
                        }
                    }
                }
            }
            Some(Err(e)) => {
                // A panicked task: we cannot tell which; stop starting work.
                tracing::error!("an apply task failed: {e}");
                cancel.cancel();
            }
            None => break,
        }
    }
    let why = if cancel.is_cancelled() {
        "interrupted before it started"
    } else {
        "not started: the state could not be saved"
    };
    for addr in changes.keys() {
        outcomes
            .entry(addr.clone())
            .or_insert_with(|| Outcome::Skipped { why: why.into() });
    }
    let persist_error = shared.persist_error.lock().ok().and_then(|e| e.clone());
    let commits = {
        let on_disk = shared
            .on_disk
            .lock()
            .map(|g| *g)
            .unwrap_or_else(|p| *p.into_inner());
        CommitStats {
            commits: shared.changes_made.load(Ordering::SeqCst),
            writes: on_disk.1,
            write_time: on_disk.2,
        }
    };
    let state = match Arc::try_unwrap(shared) {
        Ok(s) => s.state.into_inner().unwrap_or_else(|p| p.into_inner()),
        Err(arc) => arc.state.lock().map(|s| s.clone()).unwrap_or_default(),
    };
    ApplyResult {
        state,
        outcomes,
        persist_error,
        commits,
    }
}

fn failed(e: ProviderError) -> Outcome {
    Outcome::Failed {
        details: e.details(),
        message: e.to_string(),
    }
}

fn persist_failed(e: String) -> Outcome {
    Outcome::Failed {
        message: format!("failed to save the state: {e}"),
        details: vec![],
    }
}

async fn run_one(shared: &Shared, change: &Change) -> Outcome {
    let addr = &change.address;
    let Some(provider) = shared.registry.get(addr.kind()).cloned() else {
        return Outcome::Failed {
            message: format!("no provider for `{}`", addr.kind()),
            details: vec![],
        };
    };
    let desired = shared.desired.get(addr).cloned();
    let ctx = Ctx { shared };
    let deps = desired
        .as_ref()
        .map(|d| d.depends_on.clone())
        .unwrap_or_default();
    // The closures below are `async move`: give them references.
    let (provider, ctx, deps) = (&provider, &ctx, &deps);

    let journal = |op| PendingOp {
        address: addr.clone(),
        op,
        started_at: now_rfc3339(),
        task: None,
    };

    let create = |d: DesiredResource| async move {
        if let Err(e) = shared.commit(|st| {
            st.clear_pending(addr);
            st.pending.push(journal(PendingKind::Create));
        }) {
            return persist_failed(e);
        }
        match provider.create(&d, ctx).await {
            Ok(live) => {
                let rs = shared.resource_state(Some(&d), addr, &live, deps);
                match shared.commit(|st| {
                    st.clear_pending(addr);
                    st.resources.insert(addr.clone(), rs);
                }) {
                    Ok(()) => Outcome::Done {
                        inconsistent: attr_differences(addr.kind(), &d.attrs, &live.attrs),
                    },
                    Err(e) => persist_failed(e),
                }
            }
            // The journal entry stays: the next run reconciles with what exists.
            Err(e) => failed(e),
        }
    };

    let delete = |remote: Value| async move {
        if let Err(e) = shared.commit(|st| {
            st.clear_pending(addr);
            st.pending.push(journal(PendingKind::Delete));
        }) {
            return persist_failed(e);
        }
        match provider.delete(addr, &remote, ctx).await {
            Ok(()) => match shared.commit(|st| {
                st.clear_pending(addr);
                st.resources.remove(addr);
            }) {
                Ok(()) => Outcome::Done {
                    inconsistent: vec![],
                },
                Err(e) => persist_failed(e),
            },
            Err(e) => failed(e),
        }
    };

    let remote_of = || {
        shared
            .live
            .get(addr)
            .map(|l| l.remote.clone())
            .or_else(|| {
                shared
                    .state
                    .lock()
                    .ok()
                    .and_then(|s| s.resources.get(addr).map(|r| r.remote.clone()))
            })
            .unwrap_or(Value::Null)
    };

    match change.action {
        Action::Create => match desired {
            Some(d) => create(d).await,
            None => Outcome::Failed {
                message: "not in the manifests any more".into(),
                details: vec![],
            },
        },
        Action::Delete => delete(remote_of()).await,
        Action::Replace => {
            let Some(d) = desired else {
                return Outcome::Failed {
                    message: "not in the manifests any more".into(),
                    details: vec![],
                };
            };
            match delete(remote_of()).await {
                Outcome::Done { .. } => create(d).await,
                other => other,
            }
        }
        Action::Update | Action::Adopt => {
            let (Some(d), Some(live)) = (desired, shared.live.get(addr).cloned()) else {
                return Outcome::Failed {
                    message: "the plan has no live object to update; run `phoenix plan` again"
                        .into(),
                    details: vec![],
                };
            };
            if change.action == Action::Adopt {
                let rs = shared.resource_state(Some(&d), addr, &live, deps);
                if let Err(e) = shared.commit(|st| {
                    st.clear_pending(addr);
                    st.resources.insert(addr.clone(), rs);
                }) {
                    return persist_failed(e);
                }
                if change.changed_paths.is_empty() {
                    return Outcome::Done {
                        inconsistent: vec![],
                    };
                }
            }
            match provider.update(&d, &live, change, ctx).await {
                Ok(after) => {
                    let rs = shared.resource_state(Some(&d), addr, &after, deps);
                    match shared.commit(|st| {
                        st.resources.insert(addr.clone(), rs);
                    }) {
                        Ok(()) => Outcome::Done {
                            inconsistent: attr_differences(addr.kind(), &d.attrs, &after.attrs),
                        },
                        Err(e) => persist_failed(e),
                    }
                }
                Err(e) => failed(e),
            }
        }
        Action::Forget => match shared.commit(|st| {
            st.clear_pending(addr);
            st.resources.remove(addr);
        }) {
            Ok(()) => Outcome::Done {
                inconsistent: vec![],
            },
            Err(e) => persist_failed(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LiveObject;
    use crate::providers::{BoxFuture, Lane, ResourceProvider};
    use serde_json::json;

    /// Creates whatever it is asked to, except the names in `fail`; records the order.
    struct Fake {
        fail: Vec<&'static str>,
        order: Mutex<Vec<String>>,
    }

    impl ResourceProvider for Fake {
        fn kind(&self) -> &'static str {
            "lxc"
        }
        fn refresh<'a>(
            &'a self,
            _: &'a [Address],
        ) -> BoxFuture<'a, Result<BTreeMap<Address, LiveObject>, ProviderError>> {
            Box::pin(async { Ok(BTreeMap::new()) })
        }
        fn create<'a>(
            &'a self,
            d: &'a DesiredResource,
            _: &'a dyn OpContext,
        ) -> BoxFuture<'a, Result<LiveObject, ProviderError>> {
            Box::pin(async move {
                self.order
                    .lock()
                    .unwrap()
                    .push(d.address.name().to_string());
                if self.fail.contains(&d.address.name()) {
                    return Err(ProviderError::Other("boom".into()));
                }
                Ok(LiveObject {
                    attrs: d.attrs.clone(),
                    remote: Value::Null,
                    token: None,
                })
            })
        }
        fn update<'a>(
            &'a self,
            _: &'a DesiredResource,
            _: &'a LiveObject,
            _: &'a Change,
            _: &'a dyn OpContext,
        ) -> BoxFuture<'a, Result<LiveObject, ProviderError>> {
            Box::pin(async { Err(ProviderError::Other("no updates here".into())) })
        }
        fn delete<'a>(
            &'a self,
            _: &'a Address,
            _: &'a Value,
            _: &'a dyn OpContext,
        ) -> BoxFuture<'a, Result<(), ProviderError>> {
            Box::pin(async { Ok(()) })
        }
        fn lanes(&self, _: &Change, _: Option<&DesiredResource>) -> Vec<Lane> {
            Vec::new()
        }
    }

    struct Memory(Mutex<u64>);

    impl StateStore for Memory {
        fn prepare(&self, state: &mut State) -> Result<Option<String>, String> {
            state.serial = *self.0.lock().unwrap() + 1;
            Ok(Some(String::new()))
        }
        fn write(&self, serial: u64, _: String) -> Result<(), String> {
            *self.0.lock().unwrap() = serial;
            Ok(())
        }
    }

    struct Quiet;
    impl Hooks for Quiet {}

    /// Creates of `lxc.<name>`, each depending on the ones listed.
    fn run(creates: &[(&str, &[&str])], fail: Vec<&'static str>) -> (ApplyResult, Vec<String>) {
        let addr = |n: &str| Address::new("lxc", n);
        let mut desired = Desired::default();
        let mut changes = Vec::new();
        for (name, deps) in creates {
            let deps: Vec<Address> = deps.iter().map(|d| addr(d)).collect();
            desired.resources.insert(
                addr(name),
                DesiredResource {
                    address: addr(name),
                    attrs: Default::default(),
                    create: Default::default(),
                    depends_on: deps.clone(),
                },
            );
            changes.push(json!({
                "address": addr(name), "action": "create", "before": null, "after": {},
                "changed_paths": [], "reason": null, "drift": false, "depends_on": deps,
                "precondition": {"fingerprint": null}
            }));
        }
        let plan: Plan = serde_json::from_value(json!({"changes": changes, "drift": []})).unwrap();
        let fake = Arc::new(Fake {
            fail,
            order: Mutex::new(Vec::new()),
        });
        let mut registry = Registry::default();
        registry.insert(fake.clone());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let result = rt.block_on(execute(
            &plan,
            Arc::new(desired),
            Arc::new(BTreeMap::new()),
            registry,
            State::new(),
            Arc::new(Memory(Mutex::new(0))),
            Arc::new(Quiet),
            Arc::new(|_: &Value| String::new()),
            &ApplyOptions { parallelism: 4 },
            Cancel::default(),
        ));
        let order = fake.order.lock().unwrap().clone();
        (result, order)
    }

    #[test]
    fn prerequisites_first_and_a_failure_skips_what_depends_on_it() {
        let (r, order) = run(
            &[
                ("1", &[]),
                ("2", &["1"]),
                ("3", &["2"]),
                ("4", &["3", "1"]),
                ("5", &[]),
                ("6", &["5"]),
            ],
            vec!["2"],
        );
        let pos = |n: &str| order.iter().position(|o| o == n);
        assert!(pos("1") < pos("2") && pos("5") < pos("6"), "{order:?}");
        assert_eq!(pos("3"), None, "{order:?}");
        let out = |n: &str| r.outcomes[&Address::new("lxc", n)].clone();
        assert!(matches!(out("1"), Outcome::Done { .. }));
        assert!(matches!(out("2"), Outcome::Failed { .. }));
        assert_eq!(
            out("3"),
            Outcome::Skipped {
                why: "lxc.2 did not complete".into()
            }
        );
        assert_eq!(
            out("4"),
            Outcome::Skipped {
                why: "lxc.3 did not complete".into()
            }
        );
        assert!(matches!(out("6"), Outcome::Done { .. }));
        assert_eq!(r.state.resources.len(), 3);
        // Every commit is durable when it returns; a write may carry several.
        assert!(r.commits.writes >= 1 && r.commits.writes <= r.commits.commits);
        assert_eq!(r.state.serial, r.commits.writes);
    }

    #[test]
    fn a_long_chain_and_a_wide_fan_all_complete() {
        let names: Vec<String> = (0..3000).map(|i| i.to_string()).collect();
        let prev: Vec<[&str; 1]> = (0..3000)
            .map(|i| [names[if i < 1500 { 0 } else { i - 1 }].as_str()])
            .collect();
        let creates: Vec<(&str, &[&str])> = (0..3000)
            .map(|i| {
                let deps: &[&str] = if i == 0 { &[] } else { &prev[i] };
                (names[i].as_str(), deps)
            })
            .collect();
        let (r, order) = run(&creates, vec![]);
        assert_eq!(order.len(), 3000);
        assert!(
            r.outcomes
                .values()
                .all(|o| matches!(o, Outcome::Done { .. }))
        );
        for i in 1500..3000 {
            let at = |n: usize| order.iter().position(|o| *o == names[n]).unwrap();
            assert!(at(i - 1) < at(i));
        }
    }
}
