//! Every major operation is implemented here; each command in `cli/` is a
//! thin wrapper that builds an options struct and calls one of these.
//!
//! The flow is DESIGN.md's: manifests -> desired; state -> prior; providers
//! -> live; `plan::diff` -> plan; `apply::execute` -> providers.

pub mod apply;
pub mod graph;
pub mod planfile;
pub mod render;
pub mod seed;
pub mod state_cmds;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::manifest::{self, Severity, Site};
use crate::model::{self, Address, Desired, LiveObject};
use crate::plan::{self, DiffInput, DiffOptions, Plan};
use crate::providers::{self, Registry, Settings};
use crate::shell::Shell;
use crate::state::local::LoadedState;
use crate::state::secrets::SecretKey;
use crate::state::{Backend, LocalBackend, LockMode, PendingKind, State, StateLock};

/// What every operation gets: where the site and the state are, and the Shell.
pub struct Context {
    pub root: PathBuf,
    /// The local state file (the local backend's, and `state migrate`'s local end).
    pub state_path: PathBuf,
    pub shell: Shell,
    /// The backend the command works on (`--backend`).
    pub backend: Backend,
    /// PHOENIX_PG_URL and the workspace, for `state migrate`'s pg end.
    pub pg_url: Option<String>,
    pub workspace: String,
}

impl Context {
    /// A context on the local backend at `state_path`.
    pub fn local(root: PathBuf, state_path: PathBuf, shell: Shell) -> Self {
        Context {
            backend: Backend::Local(LocalBackend::new(&state_path)),
            root,
            state_path,
            shell,
            pg_url: None,
            workspace: crate::state::pg::DEFAULT_WORKSPACE.to_string(),
        }
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    pub fn secret_key(&self) -> Result<SecretKey> {
        Ok(self.backend.secret_key()?)
    }

    /// The key for a command that must not write: the existing one, or one for this process only.
    pub fn secret_key_read_only(&self) -> Result<SecretKey> {
        match self.backend.existing_secret_key()? {
            Some(k) => Ok(k),
            None => Ok(SecretKey::ephemeral().map_err(crate::state::StateError::from)?),
        }
    }

    /// A shared lock for a read-only command; none when no lock file exists
    /// (no phoenix has written this state yet), so nothing is created.
    pub fn lock_read_only(&self, operation: &str, timeout: Duration) -> Result<Option<StateLock>> {
        if self.backend.lockable_read_only() {
            self.lock(LockMode::Shared, operation, timeout).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Take the state lock, announcing a wait (`Blocking`) only on contention.
    pub fn lock(&self, mode: LockMode, operation: &str, timeout: Duration) -> Result<StateLock> {
        Ok(self.backend.lock(mode, operation, timeout, |holder| {
            let who = holder.map_or_else(|| "a reader".to_string(), ToString::to_string);
            self.shell.status(
                "Blocking",
                format!("waiting for the state lock (held by {who})"),
            );
        })?)
    }

    /// Load the state (the lock is the caller's business), saying if the backup was used.
    pub fn load_state(&self) -> Result<LoadedState> {
        let loaded = self.backend.load()?;
        for w in &loaded.warnings {
            self.shell.warn(w);
        }
        if let Some(why) = &loaded.from_backup {
            let backup = self
                .backend
                .backup_path()
                .map_or_else(String::new, |p| p.display().to_string());
            self.shell.warn(format!(
                "the state file was unreadable ({why}); loaded {backup} instead"
            ));
        }
        Ok(loaded)
    }
}

/// `PHOENIX_TIMINGS=1`: how long each phase took, one `timing <phase> <seconds>` line on stderr
/// (for `scripts/bench`; see docs/performance.md). Off by default and costs nothing then.
pub fn timings_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        std::env::var_os("PHOENIX_TIMINGS").is_some_and(|v| v != "0" && !v.is_empty())
    })
}

/// Report a phase that started at `start` (see [`timings_enabled`]).
pub fn timing(phase: &str, start: Instant) {
    if timings_enabled() {
        eprintln!("timing {phase} {:.6}", start.elapsed().as_secs_f64());
    }
}

/// Load and validate the manifests, printing warnings; errors stop here.
pub fn load_site(ctx: &Context) -> Result<Site> {
    match manifest::load(&ctx.root) {
        Ok(loaded) => {
            for d in &loaded.diagnostics {
                if ctx.shell.verbosity() == crate::shell::Verbosity::Verbose {
                    ctx.shell.raw(d);
                }
            }
            let n = loaded
                .diagnostics
                .iter()
                .filter(|d| d.severity == Severity::Warning)
                .count();
            if n > 0 && ctx.shell.verbosity() != crate::shell::Verbosity::Verbose {
                ctx.shell.note(format!(
                    "the manifests have {n} warning(s); `phoenix validate` lists them"
                ));
            }
            Ok(loaded.site)
        }
        Err(e) => {
            if let manifest::ManifestError::Invalid { diagnostics } = &e {
                for d in diagnostics.iter().filter(|d| d.severity == Severity::Error) {
                    ctx.shell.raw(d);
                }
            }
            Err(Error::Manifest(e))
        }
    }
}

/// The desired resources of a site.
pub fn desired(ctx: &Context, site: &Site) -> Result<Desired> {
    model::desired(site).map_err(|diags| {
        for d in &diags {
            ctx.shell.raw(d);
        }
        Error::Desired(diags)
    })
}

/// Read the live objects of these addresses, one bulk call per kind.
pub async fn refresh(
    ctx: &Context,
    registry: &Registry,
    addresses: &BTreeSet<Address>,
) -> Result<BTreeMap<Address, LiveObject>> {
    let mut by_kind: BTreeMap<&str, Vec<Address>> = BTreeMap::new();
    for a in addresses {
        by_kind.entry(a.kind()).or_default().push(a.clone());
    }
    let mut live = BTreeMap::new();
    for (kind, addrs) in by_kind {
        let Some(p) = registry.get(kind) else {
            return Err(Error::msg(
                format!("no provider serves `{kind}`"),
                "this phoenix does not know that kind; check the manifests and the state",
            ));
        };
        ctx.shell
            .status("Refreshing", format!("{} {kind} object(s)", addrs.len()));
        live.extend(p.refresh(&addrs).await?);
    }
    Ok(live)
}

/// Read everything but what lives inside guests, then that, except the
/// objects whose guest was read and does not exist: they cannot exist either,
/// and their engine (on a VM still to be created) cannot answer.
async fn refresh_site(
    ctx: &Context,
    registry: &Registry,
    addresses: &BTreeSet<Address>,
    desired: &Desired,
) -> Result<BTreeMap<Address, LiveObject>> {
    let (inside, outside): (BTreeSet<Address>, BTreeSet<Address>) = addresses
        .iter()
        .cloned()
        .partition(|a| model::kind_of(a.kind()).is_some_and(|k| k.lives_in_guest()));
    let mut live = refresh(ctx, registry, &outside).await?;
    let (readable, unborn): (BTreeSet<Address>, BTreeSet<Address>) =
        inside.into_iter().partition(|a| {
            desired
                .with_dependencies(std::slice::from_ref(a))
                .iter()
                .filter(|d| d.is_guest() && outside.contains(*d))
                .all(|g| live.contains_key(g))
        });
    if !unborn.is_empty() {
        tracing::debug!(
            count = unborn.len(),
            "not read: their guests do not exist yet"
        );
    }
    live.extend(refresh(ctx, registry, &readable).await?);
    Ok(live)
}

/// Options that shape a plan.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    pub targets: Vec<Address>,
    pub adopt: bool,
    pub refresh_only: bool,
    pub lock_timeout: Duration,
    /// Guests to delete (`phoenix delete`): they and what is attached to them
    /// are taken out of the desired resources, and the plan is limited to them.
    pub remove: Vec<Address>,
    /// Write nothing at all (no lock file, no key): `drift` and `plan` without `--out`.
    pub read_only: bool,
    /// Concurrent reads during refresh (0: the provider's default).
    pub parallelism: usize,
}

/// A plan and everything it was computed from.
pub struct Planned {
    pub site: Site,
    pub plan: Plan,
    pub desired: Desired,
    pub live: BTreeMap<Address, LiveObject>,
    pub state: State,
    pub registry: Registry,
    pub key: SecretKey,
}

/// Provider settings for a site.
pub fn settings(site: Option<&Site>) -> Result<Settings> {
    Ok(Settings {
        proxmox: providers::proxmox::PveSettings::resolve(site)?,
        host: providers::host::HostSettings::resolve(site)?,
        docker: providers::docker::DockerSettings::resolve(site)?,
        portainer: providers::portainer::PortainerSettings::resolve(site)?,
    })
}

/// Check that the targets name something.
fn check_targets(targets: &[Address], desired: &Desired, state: &State) -> Result<()> {
    for t in targets {
        if desired.get(t).is_none() && !state.resources.contains_key(t) {
            return Err(Error::msg(
                format!("target `{t}` is neither in the manifests nor in the state"),
                "`phoenix state list` shows what phoenix manages; `phoenix graph` shows what the manifests define",
            ));
        }
    }
    Ok(())
}

/// Compute a plan. With `state` given, the caller holds the lock and has
/// loaded it; otherwise the state is read under a shared lock held only for
/// that read, so a plan never blocks an apply for longer.
pub async fn compute_plan(
    ctx: &Context,
    opts: &PlanOptions,
    state: Option<State>,
) -> Result<Planned> {
    let started = Instant::now();
    let site = load_site(ctx)?;
    let mut desired = desired(ctx, &site)?;
    timing("load", started);
    let started = Instant::now();
    let state = match state {
        Some(s) => s,
        None if opts.read_only => {
            let _guard = ctx.lock_read_only("plan", opts.lock_timeout)?;
            ctx.load_state()?.state
        }
        None => {
            let _guard = ctx.lock(LockMode::Shared, "plan", opts.lock_timeout)?;
            ctx.load_state()?.state
        }
    };
    let mut targets = opts.targets.clone();
    if !opts.remove.is_empty() {
        let set = seed::removal_set(&opts.remove, &desired)?;
        for a in &set {
            desired.resources.remove(a);
        }
        targets = set
            .into_iter()
            .filter(|a| state.resources.contains_key(a))
            .collect();
        if targets.is_empty() {
            // An empty target list would mean "everything": refuse instead.
            return Err(Error::msg(
                "nothing to delete: phoenix does not manage any of these guests",
                "`phoenix state list` shows what phoenix manages; `phoenix import ADDR` takes a guest over",
            ));
        }
    }
    timing("state", started);
    check_targets(&targets, &desired, &state)?;
    let key = if opts.read_only {
        ctx.secret_key_read_only()?
    } else {
        ctx.secret_key()?
    };
    let mut addresses = plan::diff::scope(&desired, &state.resources, &targets);
    let journaled: BTreeSet<Address> = state
        .pending
        .iter()
        .filter(|p| p.op == PendingKind::Create)
        .map(|p| p.address.clone())
        .filter(|a| targets.is_empty() || addresses.contains(a))
        .collect();
    addresses.extend(journaled.iter().cloned());
    let kinds: BTreeSet<String> = addresses.iter().map(|a| a.kind().to_string()).collect();
    let mut settings = settings(Some(&site))?;
    if opts.parallelism > 0 {
        settings.proxmox.read_concurrency = opts.parallelism;
    }
    let registry = providers::registry(&kinds, &settings)?;
    let started = Instant::now();
    let live = refresh_site(ctx, &registry, &addresses, &desired).await?;
    timing("refresh", started);
    let recovered: BTreeSet<Address> = journaled
        .into_iter()
        .filter(|a| live.contains_key(a) && !state.resources.contains_key(a))
        .collect();
    let diff_opts = DiffOptions {
        adopt: opts.adopt,
        refresh_only: opts.refresh_only,
        targets,
    };
    let fp = |v: &Value| key.fingerprint(v);
    let started = Instant::now();
    let plan = plan::diff(&DiffInput {
        desired: &desired,
        prior: &state.resources,
        live: &live,
        recovered: &recovered,
        options: &diff_opts,
        secret_fingerprint: &fp,
    })
    .map_err(|problems| {
        for p in &problems {
            ctx.shell.error(p);
        }
        Error::Plan(problems)
    })?;
    timing("diff", started);
    Ok(Planned {
        site,
        plan,
        desired,
        live,
        state,
        registry,
        key,
    })
}

/// Render a plan in a format to a writer.
pub fn render(
    plan: &Plan,
    format: OutputFormat,
    out: &mut dyn std::io::Write,
    color: bool,
) -> Result<()> {
    let started = Instant::now();
    let r = match format {
        OutputFormat::Text => plan::render::text::render(plan, out, color),
        OutputFormat::Json => plan::render::json::render(plan, out),
        OutputFormat::Markdown => plan::render::markdown::render(plan, out),
    };
    timing("render", started);
    r.map_err(|source| Error::Io {
        action: "write the plan to",
        path: PathBuf::from("stdout"),
        source,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Text,
    Json,
    Markdown,
}

/// Drift check result, for `phoenix drift`'s exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriftStatus {
    InSync,
    PendingManifestChanges,
    Drifted,
}

/// `phoenix drift`: read-only; shared lock for the state read only.
pub async fn drift(ctx: &Context, lock_timeout: Duration) -> Result<(Plan, DriftStatus)> {
    let planned = compute_plan(
        ctx,
        &PlanOptions {
            lock_timeout,
            read_only: true,
            ..Default::default()
        },
        None,
    )
    .await?;
    let plan = planned.plan;
    let status = if plan.has_drift() {
        DriftStatus::Drifted
    } else if plan.has_changes() {
        DriftStatus::PendingManifestChanges
    } else {
        DriftStatus::InSync
    };
    Ok((plan, status))
}

/// Resolve `--state`: relative to the working directory if given, else under the root.
pub fn default_state_path(root: &Path) -> PathBuf {
    root.join("state").join("phoenix.state.json")
}
