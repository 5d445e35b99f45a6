//! The command line: one definition (clap derive) that parsing, `--help`,
//! completions and the man page share. Parsing only validates and records;
//! each command file turns its arguments into an options struct and calls
//! `ops`. Exit codes are decided in `main.rs`.

pub mod apply;
pub mod drift;
pub mod graph;
pub mod import;
pub mod lock;
pub mod plan;
pub mod render;
pub mod seed;
pub mod state;
pub mod validate;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::error::Result;
use crate::model::Address;
use crate::ops::Context;
use crate::shell::{Shell, Verbosity};

/// What a command asks `main` to exit with, besides errors (exit 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: success, or no changes.
    Success,
    /// 2: changes present (`plan --detailed-exitcode`), or only manifest changes pending (`drift`).
    Changes,
    /// 3: something changed outside phoenix (`drift`).
    Drift,
}

/// Plan and apply a Proxmox VE homelab from its JSON manifests.
#[derive(Debug, Parser)]
#[command(name = "phoenix", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// The site root, holding `etc/` and `stacks/`.
    #[arg(long, global = true, env = "PHOENIX_ROOT", default_value = ".")]
    pub root: PathBuf,
    /// The state file of the local backend [default: <root>/state/phoenix.state.json].
    #[arg(long, global = true, env = "PHOENIX_STATE")]
    pub state: Option<PathBuf>,
    /// Where the state lives: `local` (the file above) or `pg` (PostgreSQL at PHOENIX_PG_URL,
    /// shared by a team and its CI).
    #[arg(
        long,
        global = true,
        env = "PHOENIX_BACKEND",
        value_enum,
        default_value = "local"
    )]
    pub backend: BackendKind,
    /// The state's workspace in the pg backend: one database holds several sites.
    #[arg(
        long,
        global = true,
        env = "PHOENIX_WORKSPACE",
        default_value = "default"
    )]
    pub workspace: String,
    /// No colors (also when NO_COLOR is set or the output is not a terminal).
    #[arg(long, global = true)]
    pub no_color: bool,
    /// Print only errors.
    #[arg(long, short, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Print more: every warning, every state commit.
    #[arg(long, short, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load every manifest and report errors (exit 1) and warnings (exit 0).
    Validate,
    /// Show what apply would change.
    Plan(plan::PlanArgs),
    /// Change what differs, and record it in the state.
    Apply(apply::ApplyArgs),
    /// Read-only check for CI: exit 0 in sync, 2 manifest changes pending, 3 changed outside phoenix.
    Drift(drift::DriftArgs),
    /// Inspect or edit the state.
    #[command(subcommand)]
    State(state::StateCommand),
    /// Take an existing object into the state, as it is.
    Import(import::ImportArgs),
    /// Print the dependency graph of the manifests.
    Graph(graph::GraphArgs),
    /// Print (or write under a directory) the files phoenix generates, without touching the site.
    Render(render::RenderArgs),
    /// Remove a lock left behind by a process that is gone.
    ForceUnlock(lock::ForceUnlockArgs),
    /// Seed verb: plan + confirm + apply of the whole site (`sync all`) or of some guests.
    Sync(seed::SyncArgs),
    /// Seed verb: create what is missing and converge the guests and what they depend on.
    Create(seed::GuestsArgs),
    /// Seed verb: the same as `create`: change only what differs.
    Converge(seed::GuestsArgs),
    /// Seed verb: destroy guests (and what is attached to them), after showing the plan.
    Delete(seed::DeleteArgs),
    /// Seed verb: start the named guests only, dependencies first.
    Start(seed::PowerArgs),
    /// Seed verb: stop the named guests only, dependents first.
    Stop(seed::PowerArgs),
    /// Seed verb: restart the named guests only.
    Restart(seed::PowerArgs),
    /// Seed verb: each guest's live status, node, IP, and whether it matches the manifests.
    Status(seed::StatusArgs),
    /// Seed verb: apply every guest in dependency order, then start them in boot order.
    #[command(name = "LetsGo", alias = "letsgo", alias = "lets-go")]
    LetsGo(seed::VerbArgs),
    /// Print shell completions (`scripts/install` puts them in place).
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man page, in roff (`scripts/install` puts it in place).
    Man,
    /// Print the JSON Schema of a manifest file (`lxc`, `vm`, `hypervisor`, ...), or write them all.
    Schema {
        /// A schema name or a manifest file name; without it, list them.
        name: Option<String>,
        /// Write every schema into this directory (the repository keeps them in `schemas/`).
        #[arg(long, value_name = "DIR", conflicts_with = "name")]
        out_dir: Option<PathBuf>,
    },
}

/// Flags shared by commands that take the state lock.
#[derive(Debug, Clone, Args)]
pub struct LockArgs {
    /// Wait this long for the state lock (e.g. `30s`, `5m`) instead of failing at once.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub lock_timeout: Duration,
}

/// Parallelism of refresh and apply.
#[derive(Debug, Clone, Args)]
pub struct ParallelArgs {
    /// How many operations run at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub parallelism: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    Local,
    Pg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
    Markdown,
}

pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 30s, 5m, 1h)"))
}

pub fn parse_address(s: &str) -> std::result::Result<Address, String> {
    s.parse::<Address>().map_err(|e| e.to_string())
}

impl Cli {
    fn context(&self) -> Context {
        let color = !self.no_color
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            && console::Term::stderr().is_term();
        let verbosity = if self.quiet {
            Verbosity::Quiet
        } else if self.verbose {
            Verbosity::Verbose
        } else {
            Verbosity::Normal
        };
        let state_path = self
            .state
            .clone()
            .unwrap_or_else(|| crate::ops::default_state_path(&self.root));
        let shell = Shell::new(color, verbosity);
        let mut ctx = Context::local(self.root.clone(), state_path, shell);
        // Never a flag: a password on the command line shows in `ps`.
        ctx.pg_url = std::env::var("PHOENIX_PG_URL").ok();
        ctx.workspace = self.workspace.clone();
        if self.backend == BackendKind::Pg {
            ctx.backend = crate::state::Backend::Pg(crate::state::PgBackend::new(
                ctx.pg_url.clone(),
                self.workspace.clone(),
            ));
        }
        ctx
    }

    /// Workspaces are the pg backend's: a local state is chosen by `--state`.
    fn check_workspace(&self) -> Result<()> {
        crate::state::pg::check_workspace(&self.workspace)?;
        if self.backend == BackendKind::Local
            && self.workspace != crate::state::pg::DEFAULT_WORKSPACE
            && !matches!(
                self.command,
                Command::State(state::StateCommand::Migrate { .. })
                    | Command::Completions { .. }
                    | Command::Man
                    | Command::Schema { .. }
            )
        {
            return Err(crate::error::Error::msg(
                format!(
                    "--workspace {} (or PHOENIX_WORKSPACE) needs the pg backend",
                    self.workspace
                ),
                "add `--backend pg` (or PHOENIX_BACKEND=pg); a local state is chosen with `--state FILE`",
            ));
        }
        Ok(())
    }

    /// Run the command. Errors are printed by `main`.
    pub fn run(self) -> (Context, Result<Exit>) {
        let ctx = self.context();
        if let Err(e) = self.check_workspace() {
            return (ctx, Err(e));
        }
        let r = match self.command {
            Command::Validate => validate::run(&ctx),
            Command::Plan(a) => plan::run(&ctx, a),
            Command::Apply(a) => apply::run(&ctx, a),
            Command::Drift(a) => drift::run(&ctx, a),
            Command::State(c) => state::run(&ctx, c),
            Command::Import(a) => import::run(&ctx, a),
            Command::Graph(a) => graph::run(&ctx, a),
            Command::Render(a) => render::run(&ctx, a),
            Command::ForceUnlock(a) => lock::run(&ctx, a),
            Command::Sync(a) => seed::sync(&ctx, a),
            Command::Create(a) | Command::Converge(a) => seed::converge(&ctx, a),
            Command::Delete(a) => seed::delete(&ctx, a),
            Command::Start(a) => seed::power(&ctx, a, crate::providers::PowerAction::Start),
            Command::Stop(a) => seed::power(&ctx, a, crate::providers::PowerAction::Stop),
            Command::Restart(a) => seed::power(&ctx, a, crate::providers::PowerAction::Restart),
            Command::Status(a) => seed::status(&ctx, a),
            Command::LetsGo(a) => seed::lets_go(&ctx, a),
            Command::Completions { shell } => {
                let mut cmd = <Cli as clap::CommandFactory>::command();
                clap_complete::generate(shell, &mut cmd, "phoenix", &mut std::io::stdout());
                Ok(Exit::Success)
            }
            Command::Schema { name, out_dir } => schema(&ctx, name, out_dir),
            Command::Man => {
                let cmd = <Cli as clap::CommandFactory>::command();
                clap_mangen::Man::new(cmd)
                    .render(&mut std::io::stdout())
                    .map(|()| Exit::Success)
                    .map_err(|source| crate::error::Error::Io {
                        action: "write the man page to",
                        path: PathBuf::from("stdout"),
                        source,
                    })
            }
        };
        (ctx, r)
    }
}

fn schema(ctx: &Context, name: Option<String>, out_dir: Option<PathBuf>) -> Result<Exit> {
    use crate::manifest::schema::{ENTRIES, find, render};
    if let Some(dir) = out_dir {
        std::fs::create_dir_all(&dir).map_err(|source| crate::error::Error::Io {
            action: "create",
            path: dir.clone(),
            source,
        })?;
        for e in ENTRIES {
            let path = dir.join(e.file_name());
            std::fs::write(&path, render(e)).map_err(|source| crate::error::Error::Io {
                action: "write",
                path: path.clone(),
                source,
            })?;
            ctx.shell.status("Wrote", path.display());
        }
        return Ok(Exit::Success);
    }
    match name {
        None => {
            for e in ENTRIES {
                println!("{:<14} {}", e.name, e.files);
            }
            Ok(Exit::Success)
        }
        Some(n) => {
            let e = find(&n).ok_or_else(|| {
                crate::error::Error::msg(
                    format!("no schema named `{n}`"),
                    "`phoenix schema` lists them",
                )
            })?;
            print!("{}", render(e));
            Ok(Exit::Success)
        }
    }
}

/// A tokio runtime for the commands that talk to the network.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .map_err(|source| crate::error::Error::Io {
            action: "start the async runtime for",
            path: PathBuf::from("phoenix"),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        <Cli as clap::CommandFactory>::command().debug_assert();
    }

    #[test]
    fn json_and_format_conflict() {
        let r = Cli::try_parse_from(["phoenix", "plan", "--json", "--format", "markdown"]);
        assert!(r.is_err());
        let ok = Cli::try_parse_from(["phoenix", "plan", "--json"]).unwrap();
        assert!(matches!(ok.command, Command::Plan(ref p) if p.json));
    }

    #[test]
    fn lock_timeout_parses_durations() {
        let c = Cli::try_parse_from(["phoenix", "apply", "--lock-timeout", "5m"]).unwrap();
        let Command::Apply(a) = c.command else {
            panic!()
        };
        assert_eq!(a.lock.lock_timeout, Duration::from_secs(300));
        assert!(Cli::try_parse_from(["phoenix", "apply", "--lock-timeout", "soon"]).is_err());
    }

    #[test]
    fn targets_must_be_addresses() {
        assert!(Cli::try_parse_from(["phoenix", "plan", "--target", "lxc.101"]).is_ok());
        assert!(Cli::try_parse_from(["phoenix", "plan", "--target", "101"]).is_err());
    }
}
