//! `phoenix graph [--format dot|mermaid]`.

use clap::{Args, ValueEnum};

use super::Exit;
use crate::error::Result;
use crate::ops::{self, Context, graph};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum GraphFormat {
    Dot,
    Mermaid,
}

#[derive(Debug, Args)]
pub struct GraphArgs {
    #[arg(long, value_enum, default_value = "dot")]
    pub format: GraphFormat,
}

pub fn run(ctx: &Context, a: GraphArgs) -> Result<Exit> {
    let site = ops::load_site(ctx)?;
    let desired = ops::desired(ctx, &site)?;
    print!(
        "{}",
        match a.format {
            GraphFormat::Dot => graph::dot(&desired),
            GraphFormat::Mermaid => graph::mermaid(&desired),
        }
    );
    Ok(Exit::Success)
}
