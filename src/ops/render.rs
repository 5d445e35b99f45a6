//! `phoenix render`: the files phoenix generates for the site (the dnsmasq
//! records, Traefik's dynamic configuration, the Nginx gateway), from the
//! manifests alone: no Proxmox, no host, no state.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::Context;
use crate::error::{Error, Result};
use crate::model::{Address, Desired};

/// One generated file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedFile {
    pub address: Address,
    /// Where apply puts it: `the host:/etc/...` or `lxc.102:/etc/...`.
    pub location: String,
    /// Its place under `--out` (and under `PHOENIX_HOST_ROOT`): `etc/...` for
    /// the host, `guests/<id>/etc/...` for a guest.
    pub relative: PathBuf,
    pub content: String,
}

#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    /// Only these (empty: every generated file).
    pub addresses: Vec<Address>,
    /// Write them under this directory instead of returning them for printing.
    pub out: Option<PathBuf>,
}

/// Every desired resource that is a file: a `content` text and a `path`.
pub fn files(desired: &Desired) -> Vec<RenderedFile> {
    desired
        .resources
        .values()
        .filter_map(|r| {
            let content = r.attrs.get("content")?.as_str()?;
            let path = r.attrs.get("path")?.as_str()?;
            let rel = path.trim_start_matches('/');
            let (location, relative) = match r.attrs.get("guest").and_then(Value::as_u64) {
                Some(g) => (
                    format!("lxc.{g}:{path}"),
                    Path::new("guests").join(g.to_string()).join(rel),
                ),
                None => (format!("the host:{path}"), PathBuf::from(rel)),
            };
            Some(RenderedFile {
                address: r.address.clone(),
                location,
                relative,
                content: content.to_string(),
            })
        })
        .collect()
}

pub fn render(ctx: &Context, opts: &RenderOptions) -> Result<Vec<RenderedFile>> {
    let site = super::load_site(ctx)?;
    let desired = super::desired(ctx, &site)?;
    let all = files(&desired);
    let chosen: Vec<RenderedFile> = if opts.addresses.is_empty() {
        all
    } else {
        let mut chosen = Vec::new();
        for a in &opts.addresses {
            match all.iter().find(|f| &f.address == a) {
                Some(f) => chosen.push(f.clone()),
                None => {
                    let known: Vec<String> = all.iter().map(|f| f.address.to_string()).collect();
                    return Err(Error::msg(
                        format!("`{a}` is not a file this site generates"),
                        if known.is_empty() {
                            "this site generates no files: set `dns_server.enabled` for dns.records, \
                             and give it an ingress (containers 101 and 102, or `ingress`) for file.*"
                                .to_string()
                        } else {
                            format!("these are: {}", known.join(", "))
                        },
                    ));
                }
            }
        }
        chosen
    };
    if let Some(dir) = &opts.out {
        for f in &chosen {
            let path = dir.join(&f.relative);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|source| Error::Io {
                    action: "create",
                    path: parent.to_path_buf(),
                    source,
                })?;
            }
            std::fs::write(&path, &f.content).map_err(|source| Error::Io {
                action: "write",
                path: path.clone(),
                source,
            })?;
            ctx.shell
                .status("Wrote", format!("{} ({})", path.display(), f.address));
        }
    }
    Ok(chosen)
}
