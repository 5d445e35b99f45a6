//! `phoenix render [ADDR...] [--out DIR]`.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use super::Exit;
use crate::error::{Error, Result};
use crate::model::Address;
use crate::ops::{self, Context};

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// The generated files to show (`dns.records`, `file.traefik_dynamic`, `file.nginx_gateway`); all without any.
    #[arg(value_parser = super::parse_address, value_name = "ADDR")]
    pub addresses: Vec<Address>,
    /// Write them under DIR, laid out as PHOENIX_HOST_ROOT is (`etc/...` for the host,
    /// `guests/<id>/...` for a container), instead of printing them.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

pub fn run(ctx: &Context, a: RenderArgs) -> Result<Exit> {
    let opts = ops::render::RenderOptions {
        addresses: a.addresses,
        out: a.out.clone(),
    };
    let files = ops::render::render(ctx, &opts)?;
    if files.is_empty() {
        ctx.shell.note(
            "this site generates no files (no `dns_server.enabled`, and no ingress routing anything)",
        );
        return Ok(Exit::Success);
    }
    if a.out.is_some() {
        return Ok(Exit::Success);
    }
    let mut out = std::io::stdout().lock();
    let one = files.len() == 1;
    let mut w = || -> std::io::Result<()> {
        for (i, f) in files.iter().enumerate() {
            if !one {
                if i > 0 {
                    writeln!(out)?;
                }
                writeln!(out, "# ==> {} ({}) <==", f.address, f.location)?;
            }
            out.write_all(f.content.as_bytes())?;
        }
        out.flush()
    };
    w().map_err(|source| Error::Io {
        action: "write the files to",
        path: PathBuf::from("stdout"),
        source,
    })?;
    Ok(Exit::Success)
}
