//! `phoenix apply`: take the write lock for the whole command, compute (or
//! load and verify) the plan, confirm, execute, and report.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Context, PlanOptions, Planned, compute_plan, planfile};
use crate::apply::{self, ApplyOptions as ExecOptions, Cancel, Hooks, Outcome, StateStore};
use crate::error::{Error, Result};
use crate::model::{Address, LiveObject, schema_of};
use crate::plan::{Action, Change, Plan};
use crate::providers::{self};
use crate::shell::Shell;
use crate::state::Saver;
use crate::state::{LockMode, State};

#[derive(Debug, Clone, Default)]
pub struct ApplyOptions {
    pub plan_file: Option<PathBuf>,
    pub auto_approve: bool,
    pub targets: Vec<Address>,
    pub allow_destroy: bool,
    /// Guests to delete (`phoenix delete`), see [`PlanOptions::remove`].
    pub remove: Vec<Address>,
    pub adopt: bool,
    pub parallelism: usize,
    pub lock_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyStatus {
    NoChanges,
    Applied,
    Declined,
}

struct LocalStore {
    saver: Mutex<Saver>,
}

impl StateStore for LocalStore {
    fn prepare(&self, state: &mut State) -> std::result::Result<Option<String>, String> {
        let saver = self
            .saver
            .lock()
            .map_err(|_| "state mutex poisoned".to_string())?;
        Ok(saver.prepare(state))
    }

    fn write(&self, serial: u64, document: String) -> std::result::Result<(), String> {
        let mut saver = self
            .saver
            .lock()
            .map_err(|_| "state mutex poisoned".to_string())?;
        saver
            .write(serial, document)
            .map_err(|e| crate::error::chain(&e))
    }
}

/// Status lines for each change. The executor wants `'static` hooks, so this
/// owns a Shell with the context's settings.
struct ShellHooks {
    shell: Shell,
}

fn verb(a: Action) -> &'static str {
    match a {
        Action::Create => "Creating",
        Action::Update => "Updating",
        Action::Replace => "Replacing",
        Action::Delete => "Deleting",
        Action::Adopt => "Adopting",
        Action::Forget => "Forgetting",
    }
}

impl Hooks for ShellHooks {
    fn started(&self, change: &Change) {
        self.shell.status(verb(change.action), &change.address);
    }
    fn progress(&self, verb: &str, message: &str) {
        self.shell.status(verb, message);
    }
    fn finished(&self, change: &Change, outcome: &Outcome, elapsed: Duration) {
        match outcome {
            Outcome::Done { inconsistent } => {
                self.shell.status(
                    "Committed",
                    format!("{} after {:.1}s", change.address, elapsed.as_secs_f64()),
                );
                if !inconsistent.is_empty() {
                    self.shell.warn(format!(
                        "{} did not read back as planned ({}); the next plan will show it. \
                         This is a phoenix bug: please report it with the plan",
                        change.address,
                        inconsistent.join(", ")
                    ));
                }
            }
            Outcome::Failed { message, details } => {
                self.shell
                    .status_err("Failed", format!("{}: {message}", change.address));
                for d in details {
                    self.shell.raw(format!("             | {d}"));
                }
            }
            Outcome::Skipped { why } => {
                self.shell
                    .status("Skipped", format!("{}: {why}", change.address));
            }
        }
    }
    fn committed(&self, serial: u64) {
        self.shell
            .verbose_status("Committed", format!("state serial {serial}"));
    }
}

/// Refuse destroys of protected kinds without `--allow-destroy`.
fn check_destroys(plan: &Plan, allow: bool) -> Result<()> {
    let blocked: Vec<String> = plan
        .changes
        .iter()
        .filter(|c| c.action.is_destroy())
        .filter(|c| schema_of(c.address.kind()).is_some_and(|s| s.destroy_protected))
        .map(|c| c.address.to_string())
        .collect();
    if blocked.is_empty() || allow {
        return Ok(());
    }
    Err(Error::msg(
        format!(
            "the plan destroys {} object(s) and their data: {}",
            blocked.len(),
            blocked.join(", ")
        ),
        "if that is what you want, run again with `--allow-destroy`; otherwise put them back in the manifests",
    ))
}

/// Verify a saved plan against the state and the live systems before
/// touching anything. Returns the fresh live objects.
async fn verify_saved(ctx: &Context, saved: &planfile::SavedPlan, planned: &Planned) -> Result<()> {
    let state = &planned.state;
    if saved.lineage != state.lineage || saved.serial != state.serial {
        return Err(Error::msg(
            format!(
                "the saved plan is stale: it was made against state serial {} ({}), the state is now at serial {} ({})",
                saved.serial, saved.lineage, state.serial, state.lineage
            ),
            "run `phoenix plan --out FILE` again and apply the new plan",
        ));
    }
    let mut moved = Vec::new();
    for c in &saved.plan.changes {
        let now = planned.live.get(&c.address).map(LiveObject::fingerprint);
        if now != c.precondition.fingerprint {
            moved.push(format!(
                "{} changed in the real system since the plan",
                c.address
            ));
        }
        let d = planned.desired.get(&c.address);
        let want = d.map(|d| {
            planned
                .key
                .fingerprint(&serde_json::json!({"attrs": d.attrs, "create": d.create}))
        });
        if want != c.desired_fingerprint {
            moved.push(format!(
                "{} changed in the manifests since the plan",
                c.address
            ));
        }
    }
    if !moved.is_empty() {
        for m in &moved {
            ctx.shell.error(m);
        }
        return Err(Error::msg(
            format!(
                "the saved plan no longer matches: {} object(s) moved under it; nothing was changed",
                moved.len()
            ),
            "run `phoenix plan --out FILE` again, review it, and apply the new plan",
        ));
    }
    Ok(())
}

/// `phoenix apply`. `confirm` asks the user (it is not called with `--auto-approve` or a saved plan).
pub async fn apply(
    ctx: &Context,
    opts: &ApplyOptions,
    confirm: &mut dyn FnMut(&Plan) -> Result<bool>,
) -> Result<ApplyStatus> {
    let _guard = ctx.lock(LockMode::Exclusive, "apply", opts.lock_timeout)?;
    let mut loaded = ctx.load_state()?;
    let saved = match &opts.plan_file {
        Some(p) => {
            if let Some(w) = crate::state::local::exposed(p) {
                ctx.shell.warn(w);
            }
            Some(planfile::read(p)?)
        }
        None => None,
    };
    // A plan saved before any state existed carries the lineage of the empty
    // state it was made against, which was never written: the state this apply
    // creates takes that lineage, so the plan is not refused as stale.
    if let Some(s) = &saved
        && loaded.fresh
        && s.serial == 0
    {
        loaded.state.lineage = s.lineage.clone();
    }
    let plan_opts = PlanOptions {
        targets: saved
            .as_ref()
            .map_or_else(|| opts.targets.clone(), |s| s.plan.targets.clone()),
        adopt: opts.adopt
            || saved
                .as_ref()
                .is_some_and(|s| s.plan.changes.iter().any(|c| c.action == Action::Adopt)),
        refresh_only: false,
        lock_timeout: opts.lock_timeout,
        remove: opts.remove.clone(),
        read_only: false,
        parallelism: opts.parallelism,
    };
    let planned = compute_plan(ctx, &plan_opts, Some(loaded.state.clone())).await?;
    let plan = match &saved {
        Some(s) => {
            verify_saved(ctx, s, &planned).await?;
            s.plan.clone()
        }
        None => planned.plan.clone(),
    };
    if !plan.has_changes() {
        ctx.shell
            .status("Finished", "no changes; the site matches the manifests");
        return Ok(ApplyStatus::NoChanges);
    }
    check_destroys(&plan, opts.allow_destroy)?;
    if saved.is_none() {
        let mut out = std::io::stdout();
        super::render(
            &plan,
            super::OutputFormat::Text,
            &mut out,
            ctx.shell.color(),
        )?;
        if !opts.auto_approve && !confirm(&plan)? {
            ctx.shell
                .status("Finished", "apply cancelled; nothing was changed");
            return Ok(ApplyStatus::Declined);
        }
    }

    let mut state = planned.state.clone();
    // Journal entries the plan does not act on are already settled (their
    // object is in the wanted condition): drop them.
    let acted: BTreeSet<&Address> = plan.changes.iter().map(|c| &c.address).collect();
    state.pending.retain(|p| acted.contains(&p.address));

    let store = Arc::new(LocalStore {
        saver: Mutex::new(Saver::new(ctx.backend().clone(), &loaded.state)),
    });
    store.persist(&mut state).map_err(|e| {
        Error::msg(
            format!("failed to save the state: {e}"),
            match ctx.backend() {
                crate::state::Backend::Local(_) => "check the state directory",
                crate::state::Backend::Pg(_) => {
                    "check the database connection, then run `phoenix plan`"
                }
            },
        )
    })?;

    let cancel = Cancel::default();
    let signals = spawn_signal_watch(cancel.clone());
    let key = planned.key.clone();
    let fingerprint: Arc<dyn Fn(&Value) -> String + Send + Sync> =
        Arc::new(move |v| key.fingerprint(v));
    let started = Instant::now();
    let shell = Shell::new(ctx.shell.color(), ctx.shell.verbosity());
    let hooks: Arc<dyn Hooks> = if ctx.shell.is_tty() {
        Arc::new(LiveHooks::new(shell))
    } else {
        Arc::new(ShellHooks { shell })
    };
    let result = apply::execute(
        &plan,
        Arc::new(planned.desired),
        Arc::new(planned.live),
        planned.registry,
        state,
        store,
        hooks,
        fingerprint,
        &ExecOptions {
            parallelism: opts.parallelism.max(1),
        },
        cancel.clone(),
    )
    .await;
    super::timing("execute", started);
    if super::timings_enabled() {
        let c = &result.commits;
        eprintln!("timing state_writes {:.6}", c.write_time.as_secs_f64());
        eprintln!("count commits {}", c.commits);
        eprintln!("count state_writes {}", c.writes);
    }
    signals.abort();
    report(
        ctx,
        &plan,
        &result.outcomes,
        result.state.serial,
        started.elapsed(),
    );
    if let Some(e) = result.persist_error {
        return Err(Error::msg(
            format!("the state could not be saved, so the apply stopped: {e}"),
            match ctx.backend() {
                crate::state::Backend::Local(_) => {
                    "fix the problem with the state file's directory, then run `phoenix plan`: the journal lets it reconcile"
                }
                crate::state::Backend::Pg(_) => {
                    "check the database (and whether someone ran `phoenix force-unlock`), then run `phoenix plan`: the journal lets it reconcile"
                }
            },
        ));
    }
    if cancel.is_cancelled() {
        return Err(Error::msg(
            "apply interrupted; in-flight work was finished and committed",
            "run `phoenix plan` to see what is left",
        ));
    }
    let failed = result.outcomes.values().filter(|o| o.is_failure()).count();
    if failed > 0 {
        return Err(Error::msg(
            format!("apply finished with {failed} change(s) failed or skipped"),
            "the state records everything that was done; fix the cause and run `phoenix apply` again",
        ));
    }
    Ok(ApplyStatus::Applied)
}

/// The live view on a terminal: a spinner per operation in flight (with the
/// task it waits on), the same status lines as the plain view printed above
/// the spinners as operations start and end.
struct LiveHooks {
    plain: ShellHooks,
    mp: indicatif::MultiProgress,
    bars: Mutex<BTreeMap<Address, indicatif::ProgressBar>>,
}

impl LiveHooks {
    fn new(shell: Shell) -> Self {
        LiveHooks {
            plain: ShellHooks { shell },
            mp: indicatif::MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::stderr()),
            bars: Mutex::new(BTreeMap::new()),
        }
    }

    fn line(&self, verb: &str, message: impl std::fmt::Display) {
        let _ = self.mp.println(self.plain.shell.status_line(verb, message));
    }
}

impl Hooks for LiveHooks {
    fn started(&self, change: &Change) {
        self.line(verb(change.action), &change.address);
        let bar = self.mp.add(indicatif::ProgressBar::new_spinner());
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{spinner:.cyan} {msg} ({elapsed})")
        {
            bar.set_style(style);
        }
        bar.set_message(format!("{} {}", verb(change.action), change.address));
        bar.enable_steady_tick(Duration::from_millis(120));
        if let Ok(mut bars) = self.bars.lock() {
            bars.insert(change.address.clone(), bar);
        }
    }
    fn progress(&self, verb: &str, message: &str) {
        self.line(verb, message);
        // Messages start with the address they are about.
        let addr = message
            .split_whitespace()
            .next()
            .and_then(|w| w.trim_end_matches(':').parse::<Address>().ok());
        if let (Some(a), Ok(bars)) = (addr, self.bars.lock())
            && let Some(bar) = bars.get(&a)
        {
            bar.set_message(format!("{verb} {message}"));
        }
    }
    fn finished(&self, change: &Change, outcome: &Outcome, elapsed: Duration) {
        if let Ok(mut bars) = self.bars.lock()
            && let Some(bar) = bars.remove(&change.address)
        {
            bar.finish_and_clear();
        }
        self.mp
            .suspend(|| self.plain.finished(change, outcome, elapsed));
    }
    fn committed(&self, serial: u64) {
        self.mp.suspend(|| self.plain.committed(serial));
    }
}

fn spawn_signal_watch(cancel: Cancel) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return,
            };
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
            if cancel.is_cancelled() {
                // The handlers above replaced the default action: without this a
                // second Ctrl-C would do nothing while a long task runs. Every
                // commit is atomic and the journal holds what is in flight, so
                // leaving now is as safe as a SIGKILL.
                eprintln!(
                    "{:>12} second interrupt: exiting now; the journal records the work in flight \
                     and the next `phoenix plan` reconciles it",
                    "Stopping"
                );
                std::process::exit(1);
            }
            // Cancel before saying so: a test (or a user) that sees the line may rely on
            // nothing new starting after it.
            cancel.cancel();
            eprintln!(
                "{:>12} interrupt received: finishing in-flight work, starting nothing new \
                 (interrupt again to exit at once)",
                "Stopping"
            );
        }
    })
}

fn report(
    ctx: &Context,
    plan: &Plan,
    outcomes: &BTreeMap<Address, Outcome>,
    serial: u64,
    elapsed: Duration,
) {
    let mut done: BTreeMap<Action, usize> = BTreeMap::new();
    let mut failed = 0;
    let mut skipped = 0;
    for c in &plan.changes {
        match outcomes.get(&c.address) {
            Some(Outcome::Done { .. }) => *done.entry(c.action).or_default() += 1,
            Some(Outcome::Failed { .. }) => failed += 1,
            _ => skipped += 1,
        }
    }
    let n = |a| done.get(&a).copied().unwrap_or(0);
    let mut line = format!(
        "{} created, {} updated, {} replaced, {} destroyed",
        n(Action::Create),
        n(Action::Update),
        n(Action::Replace),
        n(Action::Delete)
    );
    if n(Action::Adopt) > 0 {
        line.push_str(&format!(", {} adopted", n(Action::Adopt)));
    }
    if n(Action::Forget) > 0 {
        line.push_str(&format!(", {} forgotten", n(Action::Forget)));
    }
    line.push_str(&format!(
        " in {:.1}s (state serial {serial})",
        elapsed.as_secs_f64()
    ));
    if failed + skipped > 0 {
        ctx.shell.status_err(
            "Failed",
            format!("{line}; {failed} failed, {skipped} not done"),
        );
    } else {
        ctx.shell.status("Finished", line);
    }
}

/// `phoenix import ADDR`: take an existing object into the state as it is.
pub async fn import(ctx: &Context, addr: &Address, lock_timeout: Duration) -> Result<()> {
    let _guard = ctx.lock(LockMode::Exclusive, "import", lock_timeout)?;
    let loaded = ctx.load_state()?;
    let site = super::load_site(ctx)?;
    let desired = super::desired(ctx, &site)?;
    let Some(d) = desired.get(addr) else {
        return Err(Error::msg(
            format!("`{addr}` is not in the manifests"),
            "add it to the manifests first, so phoenix knows what it should look like",
        ));
    };
    if loaded.state.resources.contains_key(addr) {
        return Err(Error::msg(
            format!("`{addr}` is already managed by phoenix"),
            "`phoenix state show` prints what the state holds",
        ));
    }
    let kinds = std::iter::once(addr.kind().to_string()).collect();
    let registry = providers::registry(&kinds, &super::settings(Some(&site))?)?;
    let live = super::refresh(ctx, &registry, &std::iter::once(addr.clone()).collect()).await?;
    let Some(obj) = live.get(addr) else {
        return Err(Error::msg(
            format!("`{addr}` does not exist, so there is nothing to import"),
            "`phoenix apply` creates it",
        ));
    };
    let key = ctx.secret_key()?;
    let mut state = loaded.state.clone();
    let mut attributes = obj.attrs.clone();
    if let Some(schema) = schema_of(addr.kind()) {
        for k in schema.sensitive {
            if let Some(v) = d.attrs.get(*k) {
                attributes.insert((*k).to_string(), Value::String(key.fingerprint(v)));
            }
        }
    }
    state.resources.insert(
        addr.clone(),
        crate::state::ResourceState {
            address: addr.clone(),
            kind: addr.kind().to_string(),
            attributes,
            remote: obj.remote.clone(),
            dependencies: d.depends_on.clone(),
            updated_at: crate::state::now_rfc3339(),
        },
    );
    state.clear_pending(addr);
    ctx.backend().save(&mut state, &loaded.state)?;
    ctx.shell.status(
        "Imported",
        format!("{addr} (state serial {})", state.serial),
    );
    ctx.shell
        .note("run `phoenix plan` to see how it differs from the manifests");
    Ok(())
}
