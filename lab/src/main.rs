//! `phoenix-lab serve [--listen 127.0.0.1:PORT] [--world FILE]`: serve the
//! twin of a site until stopped, printing the URLs first.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use phoenix_lab::{Lab, WorldConfig};

#[derive(Parser)]
#[command(
    name = "phoenix-lab",
    version,
    about = "A local twin of a phoenix site: Portainer and Docker Engine APIs of simulated Swarm nodes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the lab on loopback and print its URLs, one per line (`portainer URL`, `docker HOSTNAME URL`).
    Serve {
        /// Portainer's address; the nodes take the following ports (port 0: any free ports).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// The world: nodes and faults (JSON; see lab/README.md). Default: the seed's two VMs.
        #[arg(long)]
        world: Option<PathBuf>,
        /// Make node HOSTNAME a real Docker engine (unix:///path, tcp://host:port or
        /// http://host:port): its environment's stacks run `docker stack deploy` there.
        /// A hostname the world lacks is added. Repeatable.
        #[arg(long, value_name = "HOSTNAME=URL", value_parser = parse_engine)]
        engine: Vec<(String, String)>,
    },
}

fn parse_engine(s: &str) -> Result<(String, String), String> {
    let (host, url) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not HOSTNAME=URL"))?;
    phoenix_lab::real::check_url(url).map_err(|e| e.to_string())?;
    Ok((host.to_string(), url.to_string()))
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PHOENIX_LAB_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let Command::Serve {
        listen,
        world,
        engine,
    } = Cli::parse().command;
    if !listen.ip().is_loopback() {
        bail!("phoenix-lab serves on loopback only; {listen} is not a loopback address");
    }
    let cfg: WorldConfig = match &world {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("parsing the world {}", p.display()))?
        }
        None => serde_json::from_str("{}")?,
    };
    let mut cfg = cfg;
    for (host, url) in engine {
        match cfg.nodes.iter_mut().find(|n| n.hostname == host) {
            Some(n) => n.engine = Some(url),
            None => cfg.nodes.push(phoenix_lab::NodeConfig {
                hostname: host,
                addr: "127.0.0.1".into(),
                aliases: Vec::new(),
                port: 0,
                engine: Some(url),
            }),
        }
    }
    let lab = Lab::start(cfg, listen).await?;
    println!("portainer {}", lab.portainer_url());
    for (host, url) in lab.docker_urls() {
        println!("docker {host} {url}");
    }
    use std::io::Write;
    std::io::stdout().flush()?;
    // Stopped by ctrl-c or by its PID (SIGTERM), as the demo and the tests do.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for ctrl-c")?,
        _ = term.recv() => {}
    }
    lab.shutdown().await;
    Ok(())
}
