//! The PostgreSQL state backend, for a team and its CI sharing one site's state.
//!
//! - One row per workspace in `phoenix.states` holds the document, its serial and
//!   lineage. Every write is one statement that checks the serial (and lineage) it
//!   read, so even a writer that lost its lock can never overwrite a newer state.
//! - The lock is `pg_try_advisory_lock` on a key derived from the workspace, taken
//!   by the command's one session and held until the command ends: PostgreSQL drops
//!   it when the session ends, so a killed phoenix leaves no lock behind. Who holds
//!   it is written to `phoenix.locks` with the session's backend pid; a waiter shows
//!   a row only while that pid still holds the advisory lock.
//! - The HMAC key of the workspace lives in `phoenix.keys` (see docs/decisions/0013).
//! - The schema is created on first use, under a transaction-level advisory lock so
//!   two first users do not race, and carries a version a newer phoenix raises.
//!
//! tokio-postgres is async and the state layer is called from sync and async code
//! alike: the session runs on a small runtime of its own, and each call blocks on it
//! from a scoped thread, which is never inside any runtime.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio_postgres::Client;
use tokio_postgres::config::SslMode;

use super::local::LoadedState;
use super::lock::{LockInfo, LockMode, LockedError};
use super::secrets::SecretKey;
use super::{State, StateError, file};

/// The schema layout this phoenix reads and writes.
pub const SCHEMA_VERSION: i64 = 1;

/// A constant key for the transaction lock that serializes schema creation.
const SCHEMA_LOCK_KEY: i64 = 0x7068_6e78_0000_0001;

/// The workspace when none is given.
pub const DEFAULT_WORKSPACE: &str = "default";

const HELP_URL: &str = "help: set PHOENIX_PG_URL to a libpq connection string, e.g. \
     `postgres://phoenix@db.lan:5432/phoenix?sslmode=verify-full&sslrootcert=/etc/phoenix/db-ca.pem` \
     (the password in the URL or in PGPASSWORD)";

/// Check a workspace name: it names a row and shows in messages, so keep it plain.
pub fn check_workspace(name: &str) -> Result<(), StateError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(StateError::PgConfig(format!(
            "invalid workspace name `{name}`: use 1 to 64 letters, digits, `-`, `_` or `.`"
        )))
    }
}

/// How the connection uses TLS, libpq's `sslmode` (with `sslrootcert`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tls {
    Disable,
    /// TLS when the server offers it, unverified (libpq's default, `prefer`).
    Prefer,
    /// TLS or no connection, unverified (`require` without `sslrootcert`).
    Require,
    /// TLS, the chain checked against this CA file (`verify-ca`, or `require` with `sslrootcert`).
    VerifyCa(PathBuf),
    /// Also the host name (`verify-full`).
    VerifyFull(PathBuf),
}

/// A parsed PHOENIX_PG_URL.
#[derive(Clone)]
struct PgConfig {
    pg: tokio_postgres::Config,
    tls: Tls,
    /// Where, for messages: never the password.
    location: String,
}

/// Split the TLS options tokio-postgres does not know (`verify-*`, `sslrootcert`) off a
/// connection string, in its URL or its `key=value` form.
fn split_tls_options(url: &str) -> (String, Option<String>, Option<String>) {
    let mut mode = None;
    let mut root = None;
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return (url.to_string(), None, None);
        };
        let mut kept = Vec::new();
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some(("sslmode", v)) => mode = Some(percent_decode(v)),
                Some(("sslrootcert", v)) => root = Some(percent_decode(v)),
                _ => kept.push(pair),
            }
        }
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        (rest, mode, root)
    } else {
        let mut kept = Vec::new();
        for word in url.split_whitespace() {
            match word.split_once('=') {
                Some(("sslmode", v)) => mode = Some(v.trim_matches('\'').to_string()),
                Some(("sslrootcert", v)) => root = Some(v.trim_matches('\'').to_string()),
                _ => kept.push(word),
            }
        }
        (kept.join(" "), mode, root)
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(h) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(h, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl PgConfig {
    fn parse(url: &str) -> Result<PgConfig, StateError> {
        let (rest, mode, root) = split_tls_options(url);
        let mut pg: tokio_postgres::Config = rest.parse().map_err(|e| {
            StateError::PgConfig(format!(
                "PHOENIX_PG_URL is not a valid connection string: {e}\n{HELP_URL}"
            ))
        })?;
        let root = root.map(PathBuf::from);
        let need_root = |mode: &str| {
            root.clone().ok_or_else(|| {
                StateError::PgConfig(format!(
                    "sslmode={mode} in PHOENIX_PG_URL needs `sslrootcert=FILE`, the CA that signed \
                     the server's certificate"
                ))
            })
        };
        let tls = match mode.as_deref() {
            Some("disable") => Tls::Disable,
            None | Some("prefer") | Some("allow") => match &root {
                Some(r) => Tls::VerifyCa(r.clone()),
                None => Tls::Prefer,
            },
            Some("require") => match &root {
                Some(r) => Tls::VerifyCa(r.clone()),
                None => Tls::Require,
            },
            Some("verify-ca") => Tls::VerifyCa(need_root("verify-ca")?),
            Some("verify-full") => Tls::VerifyFull(need_root("verify-full")?),
            Some(other) => {
                return Err(StateError::PgConfig(format!(
                    "sslmode={other} in PHOENIX_PG_URL is not one of disable, prefer, require, \
                     verify-ca, verify-full"
                )));
            }
        };
        pg.ssl_mode(match tls {
            Tls::Disable => SslMode::Disable,
            Tls::Prefer => SslMode::Prefer,
            _ => SslMode::Require,
        });
        // libpq's defaults that tokio-postgres leaves to the caller.
        if pg.get_user().is_none() {
            let user = std::env::var("PGUSER")
                .or_else(|_| std::env::var("USER"))
                .unwrap_or_else(|_| "postgres".into());
            pg.user(&user);
        }
        if pg.get_password().is_none()
            && let Ok(p) = std::env::var("PGPASSWORD")
        {
            pg.password(p);
        }
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(Duration::from_secs(10));
        }
        pg.application_name("phoenix");
        let location = location_of(&pg);
        Ok(PgConfig { pg, tls, location })
    }
}

fn location_of(pg: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let host = match pg.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    let user = pg.get_user().unwrap_or("?");
    let db = pg.get_dbname().unwrap_or(user);
    format!("postgres://{user}@{host}:{port}/{db}")
}

/// Words for a tokio-postgres error: the server's message when it sent one, else the chain.
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return db.message().to_string();
    }
    crate::error::chain(e)
}

/// One session: the connection, and the runtime that drives it.
struct Session {
    client: Client,
    rt: Option<tokio::runtime::Runtime>,
    /// Whether the tables exist (known once checked; created when a write needs them).
    schema: Mutex<Option<bool>>,
    /// `pg_backend_pid()`, which `phoenix.locks` records so a waiter can tell a live holder.
    backend_pid: i32,
}

impl Drop for Session {
    fn drop(&mut self) {
        // Dropping a runtime inside another one panics; this never blocks.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Session {
    fn run<F>(rt: &tokio::runtime::Runtime, f: F) -> F::Output
    where
        F: Future + Send,
        F::Output: Send,
    {
        let handle = rt.handle();
        std::thread::scope(|s| match s.spawn(|| handle.block_on(f)).join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        })
    }

    fn block<F>(&self, f: F) -> F::Output
    where
        F: Future + Send,
        F::Output: Send,
    {
        match &self.rt {
            Some(rt) => Self::run(rt, f),
            None => unreachable!("the runtime lives as long as the session"),
        }
    }
}

/// The pg backend of one workspace. Cheap to clone; connects on first use and keeps
/// that one session (and so its locks) until the last clone is dropped.
#[derive(Clone)]
pub struct PgBackend {
    inner: Arc<Inner>,
}

struct Inner {
    url: Option<String>,
    workspace: String,
    session: Mutex<Option<Arc<Session>>>,
}

impl std::fmt::Debug for PgBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the URL: it may hold a password.
        f.debug_struct("PgBackend")
            .field("workspace", &self.inner.workspace)
            .finish_non_exhaustive()
    }
}

/// The advisory lock key of a workspace: the first 63 bits of a hash of its name.
pub fn lock_key(workspace: &str) -> i64 {
    let digest = Sha256::digest(format!("phoenix-state:{workspace}").as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(b) >> 1) as i64
}

impl PgBackend {
    /// `url` is PHOENIX_PG_URL (its absence is reported on first use, not here, so
    /// commands that never touch the state work without it).
    pub fn new(url: Option<String>, workspace: impl Into<String>) -> Self {
        PgBackend {
            inner: Arc::new(Inner {
                url,
                workspace: workspace.into(),
                session: Mutex::new(None),
            }),
        }
    }

    pub fn workspace(&self) -> &str {
        &self.inner.workspace
    }

    /// Where the state is, for messages.
    pub fn location(&self) -> String {
        let server = self
            .inner
            .url
            .as_deref()
            .and_then(|u| PgConfig::parse(u).ok())
            .map_or_else(|| "postgres".to_string(), |c| c.location);
        format!("workspace `{}` of {server}", self.inner.workspace)
    }

    fn session(&self) -> Result<Arc<Session>, StateError> {
        let mut slot = self
            .inner
            .session
            .lock()
            .map_err(|_| StateError::PgConfig("the pg session mutex is poisoned".into()))?;
        if let Some(s) = slot.as_ref() {
            return Ok(s.clone());
        }
        check_workspace(&self.inner.workspace)?;
        let url = self.inner.url.as_deref().filter(|u| !u.trim().is_empty());
        let Some(url) = url else {
            return Err(StateError::PgConfig(format!(
                "the pg state backend is selected (--backend pg or PHOENIX_BACKEND=pg), but \
                 PHOENIX_PG_URL is not set\n{HELP_URL}"
            )));
        };
        let cfg = PgConfig::parse(url)?;
        let session = Arc::new(connect(&cfg)?);
        *slot = Some(session.clone());
        Ok(session)
    }

    fn err(&self, action: &'static str) -> impl Fn(tokio_postgres::Error) -> StateError + '_ {
        move |e| {
            if e.is_closed() || e.as_db_error().is_none() && e.to_string().contains("connection") {
                StateError::Pg {
                    action,
                    location: self.location(),
                    message: format!(
                        "{}; the session was lost (a force-unlock, a server restart or the \
                         network), and with it the lock",
                        describe(&e)
                    ),
                }
            } else {
                StateError::Pg {
                    action,
                    location: self.location(),
                    message: describe(&e),
                }
            }
        }
    }

    /// Check the schema, creating it when `create` and missing. Returns whether it exists.
    fn schema(&self, s: &Session, create: bool) -> Result<bool, StateError> {
        let mut known = s
            .schema
            .lock()
            .map_err(|_| StateError::PgConfig("the pg schema mutex is poisoned".into()))?;
        if *known == Some(true) || (*known == Some(false) && !create) {
            return Ok(known.unwrap_or(false));
        }
        let err = self.err("read the schema version");
        let version = s.block(async {
            let exists: bool = s
                .client
                .query_one("SELECT to_regclass('phoenix.meta') IS NOT NULL", &[])
                .await?
                .get(0);
            if !exists {
                return Ok(None);
            }
            let row = s
                .client
                .query_opt(
                    "SELECT value FROM phoenix.meta WHERE key = 'schema_version'",
                    &[],
                )
                .await?;
            Ok(row.map(|r| r.get::<_, String>(0)))
        });
        let version = version.map_err(err)?;
        let version = match version {
            Some(v) => Some(v.parse::<i64>().map_err(|_| StateError::Pg {
                action: "read the schema version",
                location: self.location(),
                message: format!("phoenix.meta holds schema_version `{v}`, not a number"),
            })?),
            None => None,
        };
        match version {
            Some(v) if v > SCHEMA_VERSION => {
                return Err(StateError::PgNewerSchema {
                    location: self.location(),
                    found: v,
                    supported: SCHEMA_VERSION,
                    ours: env!("CARGO_PKG_VERSION"),
                });
            }
            Some(_) => {
                *known = Some(true);
                return Ok(true);
            }
            None if !create => {
                *known = Some(false);
                return Ok(false);
            }
            None => {}
        }
        let ddl = format!(
            "BEGIN;
             SELECT pg_advisory_xact_lock({SCHEMA_LOCK_KEY});
             CREATE SCHEMA IF NOT EXISTS phoenix;
             CREATE TABLE IF NOT EXISTS phoenix.meta (
                 key text PRIMARY KEY,
                 value text NOT NULL);
             INSERT INTO phoenix.meta VALUES ('schema_version', '{SCHEMA_VERSION}')
                 ON CONFLICT (key) DO NOTHING;
             CREATE TABLE IF NOT EXISTS phoenix.states (
                 workspace text PRIMARY KEY,
                 lineage text NOT NULL,
                 serial bigint NOT NULL,
                 document text NOT NULL,
                 updated_at timestamptz NOT NULL DEFAULT now());
             CREATE TABLE IF NOT EXISTS phoenix.locks (
                 workspace text PRIMARY KEY,
                 id text NOT NULL,
                 info text NOT NULL,
                 backend_pid integer NOT NULL);
             CREATE TABLE IF NOT EXISTS phoenix.keys (
                 workspace text PRIMARY KEY,
                 key text NOT NULL);
             COMMIT;"
        );
        s.block(s.client.batch_execute(&ddl))
            .map_err(self.err("create the schema (the user needs CREATE on the database)"))?;
        drop(known);
        // Another phoenix may have created it first, with a newer version.
        *s.schema
            .lock()
            .map_err(|_| StateError::PgConfig("the pg schema mutex is poisoned".into()))? = None;
        self.schema(s, false)
    }

    /// Take the lock; see [`super::lock::acquire`] for the waiting rules.
    pub fn lock(
        &self,
        mode: LockMode,
        operation: &str,
        timeout: Duration,
        mut on_wait: impl FnMut(Option<&LockInfo>),
    ) -> Result<PgLockGuard, StateError> {
        let s = self.session()?;
        let has_schema = self.schema(&s, mode == LockMode::Exclusive)?;
        let key = lock_key(&self.inner.workspace);
        let sql = match mode {
            LockMode::Shared => "SELECT pg_try_advisory_lock_shared($1)",
            LockMode::Exclusive => "SELECT pg_try_advisory_lock($1)",
        };
        let start = Instant::now();
        let reader_grace = Duration::from_millis(1500);
        let mut announced = false;
        loop {
            let got: bool = s
                .block(s.client.query_one(sql, &[&key]))
                .map_err(self.err("take the state lock"))?
                .get(0);
            if got {
                break;
            }
            let holder = if has_schema || self.schema(&s, false)? {
                self.holder(&s)?
            } else {
                None
            };
            let limit = if holder.is_none() {
                timeout.max(reader_grace)
            } else {
                timeout
            };
            if start.elapsed() >= limit {
                return Err(StateError::Locked(Box::new(LockedError {
                    location: self.location(),
                    holder,
                    waited: (!timeout.is_zero()).then(|| start.elapsed()),
                    released_by: "PostgreSQL when the holder's session ends",
                })));
            }
            if !announced && !timeout.is_zero() {
                on_wait(holder.as_ref());
                announced = true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut guard = PgLockGuard {
            backend: self.clone(),
            session: s.clone(),
            mode,
            key,
            info: None,
        };
        if mode == LockMode::Exclusive {
            let info = LockInfo::new(operation, &self.location());
            let text = serde_json::to_string(&info).unwrap_or_default();
            let ws = self.inner.workspace.as_str();
            s.block(s.client.execute(
                "INSERT INTO phoenix.locks (workspace, id, info, backend_pid)
                 VALUES ($1, $2, $3, pg_backend_pid())
                 ON CONFLICT (workspace) DO UPDATE
                 SET id = EXCLUDED.id, info = EXCLUDED.info, backend_pid = EXCLUDED.backend_pid",
                &[&ws, &info.id, &text],
            ))
            .map_err(self.err("record the lock holder"))?;
            guard.info = Some(info);
        }
        tracing::debug!(mode = ?mode, at_us = super::lock::now_micros() as u64, "state lock acquired");
        Ok(guard)
    }

    /// The recorded holder, if its session still holds the workspace's advisory lock.
    fn holder(&self, s: &Session) -> Result<Option<LockInfo>, StateError> {
        let key = lock_key(&self.inner.workspace);
        let (class, obj) = ((key >> 32), (key & 0xffff_ffff));
        let ws = self.inner.workspace.as_str();
        let row = s
            .block(s.client.query_opt(
                "SELECT l.info FROM phoenix.locks l
                 WHERE l.workspace = $1 AND EXISTS (
                     SELECT 1 FROM pg_locks p
                     WHERE p.locktype = 'advisory' AND p.granted AND p.mode = 'ExclusiveLock'
                       AND p.pid = l.backend_pid AND p.objsubid = 1
                       AND p.classid::bigint = $2 AND p.objid::bigint = $3
                       AND p.database = (SELECT oid FROM pg_database
                                         WHERE datname = current_database()))",
                &[&ws, &class, &obj],
            ))
            .map_err(self.err("read the lock holder"))?;
        Ok(row.and_then(|r| serde_json::from_str(&r.get::<_, String>(0)).ok()))
    }

    /// The document of the workspace, if it has one.
    fn read_document(&self, s: &Session) -> Result<Option<String>, StateError> {
        if !self.schema(s, false)? {
            return Ok(None);
        }
        let ws = self.inner.workspace.as_str();
        let row = s
            .block(s.client.query_opt(
                "SELECT document FROM phoenix.states WHERE workspace = $1",
                &[&ws],
            ))
            .map_err(self.err("read the state"))?;
        Ok(row.map(|r| r.get(0)))
    }

    pub fn load(&self) -> Result<LoadedState, StateError> {
        let s = self.session()?;
        let (state, fresh) = match self.read_document(&s)? {
            Some(text) => (file::parse(Path::new(&self.location()), &text)?, false),
            None => (State::new(), true),
        };
        Ok(LoadedState {
            state,
            from_backup: None,
            fresh,
            warnings: Vec::new(),
        })
    }

    /// Whether the workspace holds a state.
    pub fn exists(&self) -> Result<bool, StateError> {
        let s = self.session()?;
        Ok(self.read_document(&s)?.is_some())
    }

    /// Write `document` (the state `serial`/`lineage`) if the row still holds
    /// `expected` (serial and lineage), or is absent when `expected` is `None`.
    pub fn write(
        &self,
        expected: Option<(u64, &str)>,
        serial: u64,
        lineage: &str,
        document: &str,
    ) -> Result<(), StateError> {
        let s = self.session()?;
        self.schema(&s, true)?;
        let ws = self.inner.workspace.as_str();
        let serial_i = serial as i64;
        let n = s
            .block(async {
                match expected {
                    None => {
                        s.client
                            .execute(
                                "INSERT INTO phoenix.states (workspace, lineage, serial, document)
                                 VALUES ($1, $2, $3, $4) ON CONFLICT (workspace) DO NOTHING",
                                &[&ws, &lineage, &serial_i, &document],
                            )
                            .await
                    }
                    Some((old_serial, old_lineage)) => {
                        let old = old_serial as i64;
                        s.client
                            .execute(
                                "UPDATE phoenix.states
                                 SET lineage = $2, serial = $3, document = $4, updated_at = now()
                                 WHERE workspace = $1 AND serial = $5 AND lineage = $6",
                                &[&ws, &lineage, &serial_i, &document, &old, &old_lineage],
                            )
                            .await
                    }
                }
            })
            .map_err(self.err("write the state"))?;
        if n == 1 {
            tracing::debug!(
                serial,
                at_us = super::lock::now_micros() as u64,
                "state written"
            );
            return Ok(());
        }
        let now = s
            .block(s.client.query_opt(
                "SELECT serial, lineage FROM phoenix.states WHERE workspace = $1",
                &[&ws],
            ))
            .map_err(self.err("read the state"))?;
        let found = match now {
            Some(r) => format!(
                "serial {} (lineage {})",
                r.get::<_, i64>(0),
                r.get::<_, String>(1)
            ),
            None => "no state at all".to_string(),
        };
        Err(StateError::Conflict {
            location: self.location(),
            expected: match expected {
                Some((n, l)) => format!("{n} (lineage {l})"),
                None => "none (a new state)".into(),
            },
            found,
        })
    }

    /// The workspace's HMAC key, created on first use.
    pub fn secret_key(&self) -> Result<SecretKey, StateError> {
        let s = self.session()?;
        self.schema(&s, true)?;
        let fresh = SecretKey::ephemeral().map_err(|e| StateError::PgConfig(e.to_string()))?;
        self.store_key(&s, &fresh, false)?;
        self.read_key(&s)?
            .ok_or_else(|| StateError::PgConfig("the workspace key vanished".into()))
    }

    /// The key if the workspace has one; writes nothing.
    pub fn secret_key_read_only(&self) -> Result<Option<SecretKey>, StateError> {
        let s = self.session()?;
        if !self.schema(&s, false)? {
            return Ok(None);
        }
        self.read_key(&s)
    }

    /// Make `key` the workspace's key (migrating a state brings its key along).
    pub fn set_secret_key(&self, key: &SecretKey) -> Result<(), StateError> {
        let s = self.session()?;
        self.schema(&s, true)?;
        self.store_key(&s, key, true)
    }

    fn store_key(&self, s: &Session, key: &SecretKey, replace: bool) -> Result<(), StateError> {
        let ws = self.inner.workspace.as_str();
        let hex = key.to_hex();
        let sql = if replace {
            "INSERT INTO phoenix.keys (workspace, key) VALUES ($1, $2)
             ON CONFLICT (workspace) DO UPDATE SET key = EXCLUDED.key"
        } else {
            "INSERT INTO phoenix.keys (workspace, key) VALUES ($1, $2)
             ON CONFLICT (workspace) DO NOTHING"
        };
        s.block(s.client.execute(sql, &[&ws, &hex]))
            .map_err(self.err("store the secret key"))?;
        Ok(())
    }

    fn read_key(&self, s: &Session) -> Result<Option<SecretKey>, StateError> {
        let ws = self.inner.workspace.as_str();
        let row = s
            .block(
                s.client
                    .query_opt("SELECT key FROM phoenix.keys WHERE workspace = $1", &[&ws]),
            )
            .map_err(self.err("read the secret key"))?;
        match row {
            None => Ok(None),
            Some(r) => SecretKey::from_hex(&r.get::<_, String>(0))
                .map(Some)
                .ok_or_else(|| StateError::Pg {
                    action: "read the secret key",
                    location: self.location(),
                    message: "phoenix.keys holds a key that is not 64 hex characters".into(),
                }),
        }
    }

    /// Clear a lock whose holder is stuck: check the ID, then end the holder's
    /// session if it is still alive (PostgreSQL then frees its lock).
    pub fn force_unlock(&self, id: &str) -> Result<(LockInfo, bool), StateError> {
        let s = self.session()?;
        let none = || {
            StateError::Unlock(format!(
                "no lock information for {}: nothing to unlock",
                self.location()
            ))
        };
        if !self.schema(&s, false)? {
            return Err(none());
        }
        let ws = self.inner.workspace.as_str();
        let row = s
            .block(s.client.query_opt(
                "SELECT info, backend_pid FROM phoenix.locks WHERE workspace = $1",
                &[&ws],
            ))
            .map_err(self.err("read the lock holder"))?
            .ok_or_else(none)?;
        let info: LockInfo = serde_json::from_str(&row.get::<_, String>(0)).map_err(|e| {
            StateError::Unlock(format!("the lock information is not readable: {e}"))
        })?;
        let pid: i32 = row.get(1);
        if info.id != id {
            return Err(StateError::Unlock(format!(
                "lock ID `{id}` does not match the lock on {}\n  held by: {info}\nhelp: pass the ID shown above",
                self.location()
            )));
        }
        let alive = self.holder(&s)?.is_some_and(|h| h.id == info.id);
        let mut terminated = false;
        if alive {
            terminated = s
                .block(
                    s.client
                        .query_one("SELECT pg_terminate_backend($1)", &[&pid]),
                )
                .map_err(|e| StateError::Unlock(format!(
                    "the holder's session (backend pid {pid}) is alive and could not be ended: {}\n\
                     help: ask a database superuser to run `SELECT pg_terminate_backend({pid})`",
                    describe(&e)
                )))?
                .get(0);
            if !terminated {
                return Err(StateError::Unlock(format!(
                    "the holder's session (backend pid {pid}) could not be ended\n\
                     help: ask a database superuser to run `SELECT pg_terminate_backend({pid})`"
                )));
            }
        }
        s.block(s.client.execute(
            "DELETE FROM phoenix.locks WHERE workspace = $1 AND id = $2",
            &[&ws, &info.id],
        ))
        .map_err(self.err("clear the lock holder"))?;
        Ok((info, terminated))
    }
}

fn connect(cfg: &PgConfig) -> Result<Session, StateError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("phoenix-pg")
        .enable_all()
        .build()
        .map_err(|e| StateError::PgConnect {
            location: cfg.location.clone(),
            message: format!("cannot start its runtime: {e}"),
        })?;
    let tls = tls::connector(&cfg.tls).map_err(|message| {
        StateError::PgConfig(format!("TLS setup for {} failed: {message}", cfg.location))
    })?;
    let pg = cfg.pg.clone();
    let connected = Session::run(&rt, async move {
        let (client, conn) = match tls {
            Some(tls) => {
                let (c, conn) = pg.connect(tls).await?;
                (c, tokio::spawn(conn))
            }
            None => {
                let (c, conn) = pg.connect(tokio_postgres::NoTls).await?;
                (c, tokio::spawn(conn))
            }
        };
        drop(conn);
        let pid: i32 = client
            .query_one("SELECT pg_backend_pid()", &[])
            .await?
            .get(0);
        Ok::<_, tokio_postgres::Error>((client, pid))
    });
    let (client, backend_pid) = connected.map_err(|e| connect_error(cfg, &e))?;
    Ok(Session {
        client,
        rt: Some(rt),
        schema: Mutex::new(None),
        backend_pid,
    })
}

fn connect_error(cfg: &PgConfig, e: &tokio_postgres::Error) -> StateError {
    use tokio_postgres::error::SqlState;
    let location = cfg.location.clone();
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        if *code == SqlState::INVALID_PASSWORD
            || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        {
            return StateError::PgAuth {
                location,
                message: db.message().to_string(),
            };
        }
    }
    let text = describe(e);
    let message = if text.contains("server does not support TLS") {
        format!(
            "{text}: PHOENIX_PG_URL asks for TLS (sslmode={}), and the server does not offer it",
            match cfg.tls {
                Tls::VerifyFull(_) => "verify-full",
                Tls::VerifyCa(_) => "verify-ca",
                _ => "require",
            }
        )
    } else if text.contains("password missing") {
        return StateError::PgAuth {
            location,
            message: "the server asks for a password and none was given".into(),
        };
    } else {
        text
    };
    StateError::PgConnect { location, message }
}

impl std::fmt::Debug for PgLockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLockGuard")
            .field("mode", &self.mode)
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// A held pg lock; released (and its holder row cleared) on drop. The session
/// it was taken on stays open at least as long.
pub struct PgLockGuard {
    backend: PgBackend,
    session: Arc<Session>,
    mode: LockMode,
    key: i64,
    pub info: Option<LockInfo>,
}

impl PgLockGuard {
    /// The session's backend pid (tests end it to simulate a lost connection).
    pub fn backend_pid(&self) -> i32 {
        self.session.backend_pid
    }
}

impl Drop for PgLockGuard {
    fn drop(&mut self) {
        tracing::debug!(mode = ?self.mode, at_us = super::lock::now_micros() as u64, "state lock releasing");
        let s = &self.session;
        let ws = self.backend.inner.workspace.as_str();
        let key = self.key;
        let id = self.info.as_ref().map(|i| i.id.clone());
        let unlock = match self.mode {
            LockMode::Shared => "SELECT pg_advisory_unlock_shared($1)",
            LockMode::Exclusive => "SELECT pg_advisory_unlock($1)",
        };
        // Failures are harmless: a lost session has released everything already.
        let _ = s.block(async {
            if let Some(id) = &id {
                let _ = s
                    .client
                    .execute(
                        "DELETE FROM phoenix.locks WHERE workspace = $1 AND id = $2",
                        &[&ws, id],
                    )
                    .await;
            }
            s.client.query_one(unlock, &[&key]).await
        });
    }
}

/// rustls for tokio-postgres, on the aws-lc-rs provider (the only one in the build).
mod tls {
    use std::sync::Arc;

    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::{CryptoProvider, aws_lc_rs};
    use rustls::{
        CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    };
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
    use tokio_postgres_rustls::MakeRustlsConnect;

    use super::Tls;

    /// `None` for no TLS at all.
    pub(super) fn connector(tls: &Tls) -> Result<Option<MakeRustlsConnect>, String> {
        let provider = Arc::new(aws_lc_rs::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let config = match tls {
            Tls::Disable => return Ok(None),
            // libpq does not check the certificate in these modes either; the
            // connection is still encrypted, and signatures still checked.
            Tls::Prefer | Tls::Require => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Unverified { provider }))
                .with_no_client_auth(),
            Tls::VerifyFull(ca) => builder
                .with_root_certificates(roots(ca)?)
                .with_no_client_auth(),
            Tls::VerifyCa(ca) => {
                let inner =
                    WebPkiServerVerifier::builder_with_provider(Arc::new(roots(ca)?), provider)
                        .build()
                        .map_err(|e| e.to_string())?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(ChainOnly { inner }))
                    .with_no_client_auth()
            }
        };
        Ok(Some(MakeRustlsConnect::new(config)))
    }

    fn roots(ca: &std::path::Path) -> Result<RootCertStore, String> {
        let mut store = RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(ca)
            .map_err(|e| format!("cannot read sslrootcert {}: {e}", ca.display()))?;
        for c in certs {
            let c = c.map_err(|e| format!("cannot read sslrootcert {}: {e}", ca.display()))?;
            store
                .add(c)
                .map_err(|e| format!("sslrootcert {}: {e}", ca.display()))?;
        }
        if store.is_empty() {
            return Err(format!("sslrootcert {} holds no certificate", ca.display()));
        }
        Ok(store)
    }

    /// `sslmode=require`/`prefer`: any certificate, as libpq does.
    #[derive(Debug)]
    struct Unverified {
        provider: Arc<CryptoProvider>,
    }

    impl ServerCertVerifier for Unverified {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    }

    /// `sslmode=verify-ca`: the chain must lead to the CA; the name is not checked.
    #[derive(Debug)]
    struct ChainOnly {
        inner: Arc<WebPkiServerVerifier>,
    }

    impl ServerCertVerifier for ChainOnly {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            server_name: &ServerName<'_>,
            ocsp: &[u8],
            now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            match self
                .inner
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            {
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                )) => Ok(ServerCertVerified::assertion()),
                other => other,
            }
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls12_signature(message, cert, dss)
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls13_signature(message, cert, dss)
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.inner.supported_verify_schemes()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_options_are_split_off_both_forms() {
        let (rest, mode, root) = split_tls_options(
            "postgres://u:p@h:5/db?sslmode=verify-full&application_name=x&sslrootcert=%2Fca.pem",
        );
        assert_eq!(rest, "postgres://u:p@h:5/db?application_name=x");
        assert_eq!(mode.as_deref(), Some("verify-full"));
        assert_eq!(root.as_deref(), Some("/ca.pem"));
        let (rest, mode, root) = split_tls_options("host=h sslmode=require dbname=d");
        assert_eq!(rest, "host=h dbname=d");
        assert_eq!(mode.as_deref(), Some("require"));
        assert_eq!(root, None);
    }

    #[test]
    fn tls_modes_follow_libpq() {
        let t = |u: &str| PgConfig::parse(u).map(|c| c.tls);
        assert_eq!(t("postgres://u@h/d").unwrap(), Tls::Prefer);
        assert_eq!(t("postgres://u@h/d?sslmode=disable").unwrap(), Tls::Disable);
        assert_eq!(t("postgres://u@h/d?sslmode=require").unwrap(), Tls::Require);
        assert_eq!(
            t("postgres://u@h/d?sslmode=require&sslrootcert=/c").unwrap(),
            Tls::VerifyCa("/c".into())
        );
        let e = t("postgres://u@h/d?sslmode=verify-full").unwrap_err();
        assert!(e.to_string().contains("sslrootcert"), "{e}");
        let e = t("postgres://u@h/d?sslmode=sometimes").unwrap_err();
        assert!(e.to_string().contains("not one of"), "{e}");
    }

    #[test]
    fn location_never_shows_the_password() {
        let c = PgConfig::parse("postgres://team:hunter2@db.lan:6432/site").unwrap();
        assert_eq!(c.location, "postgres://team@db.lan:6432/site");
        assert!(
            !format!(
                "{:?}",
                PgBackend::new(Some("postgres://a:hunter2@h/d".into()), "w")
            )
            .contains("hunter2")
        );
    }

    #[test]
    fn lock_keys_differ_per_workspace_and_are_positive() {
        assert_ne!(lock_key("a"), lock_key("b"));
        assert!(lock_key("default") >= 0);
        assert_eq!(lock_key("x"), lock_key("x"));
    }

    #[test]
    fn workspace_names_are_checked() {
        assert!(check_workspace("site-a.prod_2").is_ok());
        for bad in ["", "a b", "x;drop", &"w".repeat(65)] {
            assert!(check_workspace(bad).is_err(), "{bad}");
        }
    }
}
