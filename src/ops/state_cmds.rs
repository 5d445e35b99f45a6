//! `phoenix state list | show | rm | pull | push | migrate` and `phoenix force-unlock`.

use std::path::Path;
use std::time::Duration;

use super::Context;
use crate::error::{Error, Result};
use crate::model::Address;
use crate::state::backend::{Unlocked, parse_document};
use crate::state::{Backend, LocalBackend, LockMode, PgBackend, ResourceState, State, file};

pub fn list(ctx: &Context, lock_timeout: Duration) -> Result<Vec<Address>> {
    let _g = ctx.lock(LockMode::Shared, "state list", lock_timeout)?;
    Ok(ctx.load_state()?.state.resources.keys().cloned().collect())
}

pub fn show(ctx: &Context, addr: &Address, lock_timeout: Duration) -> Result<ResourceState> {
    let _g = ctx.lock(LockMode::Shared, "state show", lock_timeout)?;
    let st = ctx.load_state()?.state;
    st.resources.get(addr).cloned().ok_or_else(|| {
        Error::msg(
            format!("`{addr}` is not in the state"),
            "`phoenix state list` shows what phoenix manages",
        )
    })
}

/// Drop an address from the state; the object itself is left alone.
pub fn rm(ctx: &Context, addr: &Address, lock_timeout: Duration) -> Result<u64> {
    let _g = ctx.lock(LockMode::Exclusive, "state rm", lock_timeout)?;
    let loaded = ctx.load_state()?;
    let mut st = loaded.state.clone();
    if st.resources.remove(addr).is_none() {
        return Err(Error::msg(
            format!("`{addr}` is not in the state"),
            "`phoenix state list` shows what phoenix manages",
        ));
    }
    st.clear_pending(addr);
    ctx.backend().save(&mut st, &loaded.state)?;
    Ok(st.serial)
}

pub fn force_unlock(ctx: &Context, id: &str) -> Result<Unlocked> {
    Ok(ctx.backend().force_unlock(id)?)
}

/// `state pull`: the state document as stored, for a backup or a look.
pub fn pull(ctx: &Context, lock_timeout: Duration) -> Result<String> {
    let _g = ctx.lock_read_only("state pull", lock_timeout)?;
    let loaded = ctx.load_state()?;
    if loaded.fresh {
        return Err(Error::msg(
            format!("there is no state at {}", ctx.backend().location()),
            "check --backend, --workspace (PHOENIX_WORKSPACE) and --state",
        ));
    }
    Ok(file::render(&loaded.state))
}

/// What `state push` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    Written { serial: u64 },
    AlreadyThere { serial: u64 },
}

/// `state push FILE`: make a document the state, serial and lineage kept. Refused,
/// unless `force`, when it would go back in history or replace another lineage.
pub fn push(
    ctx: &Context,
    origin: &Path,
    text: &str,
    force: bool,
    lock_timeout: Duration,
) -> Result<Pushed> {
    let doc = parse_document(origin, text)?;
    let _g = ctx.lock(LockMode::Exclusive, "state push", lock_timeout)?;
    let current = ctx.load_state()?;
    let cur = &current.state;
    if !current.fresh && !force {
        if cur.lineage != doc.lineage {
            return Err(Error::msg(
                format!(
                    "{} holds another state (lineage {}), not an older version of this one \
                     (lineage {})",
                    ctx.backend().location(),
                    cur.lineage,
                    doc.lineage
                ),
                "push it to an empty workspace, or pass `--force` to replace that state (`state \
                 pull` first keeps a copy)",
            ));
        }
        if doc.serial < cur.serial || (doc.serial == cur.serial && !doc.same_content(cur)) {
            return Err(Error::msg(
                format!(
                    "the document is at serial {}, the state at {} is at serial {}: pushing it \
                     would lose changes",
                    doc.serial,
                    ctx.backend().location(),
                    cur.serial
                ),
                "`phoenix state pull` shows the newer state; pass `--force` to overwrite it anyway",
            ));
        }
    }
    if !current.fresh && doc.serial == cur.serial && doc.same_content(cur) {
        return Ok(Pushed::AlreadyThere { serial: doc.serial });
    }
    ctx.backend()
        .write_as_is(&doc, (!current.fresh).then_some(cur))?;
    Ok(Pushed::Written { serial: doc.serial })
}

/// Where `state migrate` moves a state to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrateTo {
    Local,
    Pg,
}

/// What `state migrate` did.
#[derive(Debug)]
pub struct Migrated {
    pub from: String,
    pub to: String,
    pub serial: u64,
    pub lineage: String,
    pub key: bool,
}

/// `state migrate --to pg|local`: copy the state and its secret key between the
/// local file (`--state`) and the pg workspace (PHOENIX_PG_URL, `--workspace`),
/// both locked, serial and lineage kept. The source is left as it was.
pub fn migrate(ctx: &Context, to: MigrateTo, lock_timeout: Duration) -> Result<Migrated> {
    let local = Backend::Local(LocalBackend::new(&ctx.state_path));
    let pg = Backend::Pg(PgBackend::new(ctx.pg_url.clone(), ctx.workspace.clone()));
    let (src, dst) = match to {
        MigrateTo::Pg => (local, pg),
        MigrateTo::Local => (pg, local),
    };
    let wait = |holder: Option<&crate::state::LockInfo>| {
        let who = holder.map_or_else(|| "a reader".to_string(), ToString::to_string);
        ctx.shell.status(
            "Blocking",
            format!("waiting for the state lock (held by {who})"),
        );
    };
    let _src_lock = src.lock(LockMode::Exclusive, "state migrate", lock_timeout, wait)?;
    let _dst_lock = dst.lock(LockMode::Exclusive, "state migrate", lock_timeout, wait)?;
    let source = src.load()?;
    if source.fresh {
        return Err(Error::msg(
            format!("there is no state at {} to migrate", src.location()),
            "check --state, --workspace (PHOENIX_WORKSPACE) and PHOENIX_PG_URL",
        ));
    }
    if let Some(why) = &source.from_backup {
        return Err(Error::msg(
            format!("the source state is unreadable ({why})"),
            "repair it first (`phoenix plan` loads its backup and says which), then migrate",
        ));
    }
    let dest = dst.load()?;
    let s: &State = &source.state;
    if !dest.fresh {
        let d = &dest.state;
        let older_copy = d.lineage == s.lineage && d.serial <= s.serial;
        if !older_copy {
            return Err(Error::msg(
                format!(
                    "{} already holds a state (lineage {}, serial {}), not an older copy of this \
                     one (lineage {}, serial {})",
                    dst.location(),
                    d.lineage,
                    d.serial,
                    s.lineage,
                    s.serial
                ),
                "migrate into an empty workspace or state file, or `state pull` that state, keep \
                 it, and remove it first",
            ));
        }
    }
    let key = src.existing_secret_key()?;
    if dest.fresh {
        dst.write_as_is(s, None)?;
    } else if !(dest.state.serial == s.serial && dest.state.same_content(s)) {
        dst.write_as_is(s, Some(&dest.state))?;
    }
    if let Some(k) = &key {
        dst.set_secret_key(k)?;
    }
    Ok(Migrated {
        from: src.location(),
        to: dst.location(),
        serial: s.serial,
        lineage: s.lineage.clone(),
        key: key.is_some(),
    })
}
