//! The `phoenix` binary: parse the command line, run the command, map the
//! outcome to an exit code. Everything else is in the library.
//!
//! Exit codes: 0 success / no changes; 1 error; 2 changes present
//! (`plan --detailed-exitcode`) or only manifest changes pending (`drift`);
//! 3 changed outside phoenix (`drift`).

use std::process::ExitCode;

use clap::Parser;
use phoenix::cli::{Cli, Exit};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PHOENIX_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        // Escape codes only for a person at a terminal, never into a CI log or a file.
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        )
        .init();
    let cli = Cli::parse();
    let (ctx, result) = cli.run();
    match result {
        Ok(Exit::Success) => ExitCode::SUCCESS,
        Ok(Exit::Changes) => ExitCode::from(2),
        Ok(Exit::Drift) => ExitCode::from(3),
        Err(e) => {
            let err: anyhow::Error = e.into();
            let help = err
                .downcast_ref::<phoenix::error::Error>()
                .and_then(|e| e.help());
            ctx.shell.error(&err);
            for cause in err.chain().skip(1) {
                ctx.shell.raw(format!("\nCaused by:\n  {cause}"));
            }
            if let Some(h) = help {
                ctx.shell.raw(format!("help: {h}"));
            }
            ExitCode::from(1)
        }
    }
}
