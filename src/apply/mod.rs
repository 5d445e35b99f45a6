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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::Semaphore;

use crate::model::{Address, Desired, DesiredResource, LiveObject, schema_of};
use crate::plan::{Action, Change, Plan, diff::attr_differences};
use crate::providers::{OpContext, ProviderError, Registry};
use crate::state::{PendingKind, PendingOp, ResourceState, State, now_rfc3339};

/// Persists the state; called after every change to it.
pub trait StateStore: Send + Sync {
    fn persist(&self, state: &mut State) -> Result<(), String>;
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
    lanes: lanes::Lanes,
}

impl Shared {
    /// Apply `f` to the state and persist it. A failed persist stops the run.
    fn commit(&self, f: impl FnOnce(&mut State)) -> Result<(), String> {
        let mut st = self
            .state
            .lock()
            .map_err(|_| "state mutex poisoned".to_string())?;
        f(&mut st);
        match self.store.persist(&mut st) {
            Ok(()) => {
                self.hooks.committed(st.serial);
                Ok(())
            }
            Err(e) => {
                if let Ok(mut slot) = self.persist_error.lock() {
                    slot.get_or_insert_with(|| e.clone());
                }
                Err(e)
            }
        }
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
    let mut out: BTreeMap<Address, BTreeSet<Address>> = BTreeMap::new();
    for c in &plan.changes {
        let entry = out.entry(c.address.clone()).or_default();
        match c.action {
            Action::Delete | Action::Forget => {
                // Dependents go first.
                for other in &plan.changes {
                    if matches!(other.action, Action::Delete | Action::Forget)
                        && other.depends_on.contains(&c.address)
                    {
                        entry.insert(other.address.clone());
                    }
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
        lanes: lanes::Lanes::default(),
    });
    let prereq = prerequisites(plan);
    let changes: BTreeMap<Address, Change> = plan
        .changes
        .iter()
        .map(|c| (c.address.clone(), c.clone()))
        .collect();
    let mut outcomes: BTreeMap<Address, Outcome> = BTreeMap::new();
    let mut running: BTreeSet<Address> = BTreeSet::new();
    let sem = Arc::new(Semaphore::new(opts.parallelism.max(1)));
    let mut set = tokio::task::JoinSet::new();

    loop {
        let stop = cancel.is_cancelled()
            || shared
                .persist_error
                .lock()
                .map(|e| e.is_some())
                .unwrap_or(true);
        // Start everything that is ready, in plan order.
        for (addr, change) in &changes {
            if outcomes.contains_key(addr) || running.contains(addr) {
                continue;
            }
            let deps = &prereq[addr];
            if let Some(bad) = deps
                .iter()
                .find(|d| outcomes.get(*d).is_some_and(Outcome::is_failure))
            {
                outcomes.insert(
                    addr.clone(),
                    Outcome::Skipped {
                        why: format!("{bad} did not complete"),
                    },
                );
                continue;
            }
            if !deps.iter().all(|d| outcomes.contains_key(d)) {
                continue;
            }
            if stop {
                continue;
            }
            running.insert(addr.clone());
            let shared = shared.clone();
            let change = change.clone();
            let sem = sem.clone();
            set.spawn(async move {
                let _permit = sem.acquire_owned().await;
                let start = Instant::now();
                shared.hooks.started(&change);
                let outcome = run_one(&shared, &change).await;
                shared.hooks.finished(&change, &outcome, start.elapsed());
                (change.address.clone(), outcome)
            });
        }
        match set.join_next().await {
            Some(Ok((addr, outcome))) => {
                running.remove(&addr);
                outcomes.insert(addr, outcome);
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
    let state = match Arc::try_unwrap(shared) {
        Ok(s) => s.state.into_inner().unwrap_or_else(|p| p.into_inner()),
        Err(arc) => arc.state.lock().map(|s| s.clone()).unwrap_or_default(),
    };
    ApplyResult {
        state,
        outcomes,
        persist_error,
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
    let _lanes = shared
        .lanes
        .acquire(provider.lanes(change, desired.as_ref()))
        .await;
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
