//! The one state interface the commands use: lock, load, save (with a
//! compare-and-swap on the serial), the secret key and force-unlock, over the
//! local file ([`LocalBackend`]) or PostgreSQL ([`PgBackend`]).

use std::path::Path;
use std::time::Duration;

use super::local::{LoadedState, LocalBackend};
use super::lock::{self, LockGuard, LockInfo, LockMode};
use super::pg::{PgBackend, PgLockGuard};
use super::secrets::SecretKey;
use super::{State, StateError, file};

#[derive(Debug, Clone)]
pub enum Backend {
    Local(LocalBackend),
    Pg(PgBackend),
}

impl From<LocalBackend> for Backend {
    fn from(b: LocalBackend) -> Self {
        Backend::Local(b)
    }
}

impl From<PgBackend> for Backend {
    fn from(b: PgBackend) -> Self {
        Backend::Pg(b)
    }
}

/// A held state lock of either backend; released on drop.
#[derive(Debug)]
pub enum StateLock {
    Local(LockGuard),
    Pg(PgLockGuard),
}

impl StateLock {
    /// Who holds it (this process), for an exclusive lock.
    pub fn info(&self) -> Option<&LockInfo> {
        match self {
            StateLock::Local(g) => g.info.as_ref(),
            StateLock::Pg(g) => g.info.as_ref(),
        }
    }
}

/// What force-unlock did.
#[derive(Debug)]
pub struct Unlocked {
    pub holder: LockInfo,
    /// The pg holder's session was alive and has been ended.
    pub ended_session: bool,
}

impl Backend {
    /// `local` or `pg`.
    pub fn kind(&self) -> &'static str {
        match self {
            Backend::Local(_) => "local",
            Backend::Pg(_) => "pg",
        }
    }

    /// Where the state is, for messages.
    pub fn location(&self) -> String {
        match self {
            Backend::Local(b) => b.path().display().to_string(),
            Backend::Pg(b) => b.location(),
        }
    }

    pub fn lock(
        &self,
        mode: LockMode,
        operation: &str,
        timeout: Duration,
        on_wait: impl FnMut(Option<&LockInfo>),
    ) -> Result<StateLock, StateError> {
        match self {
            Backend::Local(b) => b
                .lock(mode, operation, timeout, on_wait)
                .map(StateLock::Local),
            Backend::Pg(b) => b.lock(mode, operation, timeout, on_wait).map(StateLock::Pg),
        }
    }

    /// Whether a read-only command should take the shared lock: a local state
    /// no phoenix has written has no lock file, and a read must not create one.
    /// A pg advisory lock writes nothing.
    pub fn lockable_read_only(&self) -> bool {
        match self {
            Backend::Local(b) => b.lock_path().exists(),
            Backend::Pg(_) => true,
        }
    }

    pub fn load(&self) -> Result<LoadedState, StateError> {
        match self {
            Backend::Local(b) => b.load(),
            Backend::Pg(b) => b.load(),
        }
    }

    /// Whether the backend holds a state yet.
    pub fn exists(&self) -> Result<bool, StateError> {
        match self {
            Backend::Local(b) => Ok(b.path().exists()),
            Backend::Pg(b) => b.exists(),
        }
    }

    /// Write `state` if its content differs from `previous` (what this command
    /// loaded), raising the serial; refused if the store no longer holds `previous`.
    pub fn save(&self, state: &mut State, previous: &State) -> Result<bool, StateError> {
        match self {
            Backend::Local(b) => b.save(state, previous),
            Backend::Pg(b) => {
                if state.same_content(previous) && previous.serial > 0 {
                    state.serial = previous.serial;
                    return Ok(false);
                }
                state.serial = previous.serial + 1;
                state.phoenix_version = env!("CARGO_PKG_VERSION").to_string();
                let expected =
                    (previous.serial > 0).then_some((previous.serial, &*previous.lineage));
                b.write(expected, state.serial, &state.lineage, &file::render(state))?;
                Ok(true)
            }
        }
    }

    /// Write `state` as it is, serial and lineage kept (`state push`, `state
    /// migrate`), over `current` (`None`: the store must hold no state).
    pub fn write_as_is(&self, state: &State, current: Option<&State>) -> Result<(), StateError> {
        let text = file::render(state);
        match self {
            Backend::Local(b) => b.write_checked(current.map(|c| c.serial), &text),
            Backend::Pg(b) => b.write(
                current.map(|c| (c.serial, c.lineage.as_str())),
                state.serial,
                &state.lineage,
                &text,
            ),
        }
    }

    /// The key of the state's fingerprints, created on first use.
    pub fn secret_key(&self) -> Result<SecretKey, StateError> {
        match self {
            Backend::Local(b) => Ok(SecretKey::load_or_create(&b.key_path())?),
            Backend::Pg(b) => b.secret_key(),
        }
    }

    /// The key if there is one; creates nothing.
    pub fn existing_secret_key(&self) -> Result<Option<SecretKey>, StateError> {
        match self {
            Backend::Local(b) => Ok(SecretKey::load(&b.key_path())?),
            Backend::Pg(b) => b.secret_key_read_only(),
        }
    }

    /// Replace the key (a migrated state brings the key its fingerprints were made with).
    pub fn set_secret_key(&self, key: &SecretKey) -> Result<(), StateError> {
        match self {
            Backend::Local(b) => Ok(key.store(&b.key_path())?),
            Backend::Pg(b) => b.set_secret_key(key),
        }
    }

    pub fn force_unlock(&self, id: &str) -> Result<Unlocked, StateError> {
        match self {
            Backend::Local(b) => lock::force_unlock(&b.lock_path(), id).map(|holder| Unlocked {
                holder,
                ended_session: false,
            }),
            Backend::Pg(b) => b.force_unlock(id).map(|(holder, ended_session)| Unlocked {
                holder,
                ended_session,
            }),
        }
    }

    /// The local backup file, where there is one.
    pub fn backup_path(&self) -> Option<std::path::PathBuf> {
        match self {
            Backend::Local(b) => Some(b.backup_path()),
            Backend::Pg(_) => None,
        }
    }
}

/// Successive saves of one state by one writer (an apply commits after every
/// resource): each is compared with the document written before it, not with
/// a copy of the state, so a save renders the state once and never clones it.
/// What it writes, and when the serial rises, is exactly what [`Backend::save`]
/// does, with the same compare-and-swap against the serial last written.
#[derive(Debug)]
pub struct Saver {
    backend: Backend,
    /// The serial of the last version written (or loaded).
    serial: u64,
    lineage: String,
    /// That version as written; `None` when the store holds no state yet (the first save always writes).
    text: Option<String>,
}

impl Saver {
    /// A saver for `backend`, which now holds `loaded`.
    pub fn new(backend: impl Into<Backend>, loaded: &State) -> Saver {
        let backend = backend.into();
        // An unreadable store counts as holding a state: the write then checks
        // the serial, which is the safe side.
        let exists = backend.exists().unwrap_or(true);
        let text = exists.then(|| {
            let mut s = loaded.clone();
            s.phoenix_version = env!("CARGO_PKG_VERSION").to_string();
            file::render(&s)
        });
        Saver {
            backend,
            serial: loaded.serial,
            lineage: loaded.lineage.clone(),
            text,
        }
    }

    /// Give `state` the serial of its next version and render it; `None` (and
    /// the serial left as it was) when its content is the one last written.
    /// No I/O: a caller may hold a lock on the state meanwhile.
    pub fn prepare(&self, state: &mut State) -> Option<String> {
        state.serial = self.serial + 1;
        state.phoenix_version = env!("CARGO_PKG_VERSION").to_string();
        let text = file::render(state);
        if self
            .text
            .as_deref()
            .is_some_and(|last| same_but_serial(last, &text))
        {
            state.serial = self.serial;
            return None;
        }
        Some(text)
    }

    /// Write a document from [`Saver::prepare`] (with its serial), if the
    /// store still holds the version this saver wrote or loaded last.
    pub fn write(&mut self, serial: u64, text: String) -> Result<(), StateError> {
        let expected = self.text.as_ref().map(|_| self.serial);
        match &self.backend {
            Backend::Local(b) => {
                b.write_checked(expected, &text)?;
                tracing::debug!(
                    serial,
                    at_us = super::lock::now_micros() as u64,
                    "state written"
                );
            }
            Backend::Pg(b) => b.write(
                expected.map(|e| (e, self.lineage.as_str())),
                serial,
                &self.lineage,
                &text,
            )?,
        }
        self.serial = serial;
        self.text = Some(text);
        Ok(())
    }
}

/// Two rendered states equal but for their serial. Pretty JSON puts the
/// top-level keys, and only them, two spaces in (a newline inside a string is
/// escaped), so the first `\n  "serial": ` line is the document's serial.
fn same_but_serial(a: &str, b: &str) -> bool {
    fn split(t: &str) -> Option<(&str, &str)> {
        let start = t.find("\n  \"serial\": ")?;
        let end = start + 1 + t[start + 1..].find('\n')?;
        Some((&t[..start], &t[end..]))
    }
    matches!((split(a), split(b)), (Some(x), Some(y)) if x == y)
}

/// Parse a state document given by the user (`state push`).
pub fn parse_document(origin: &Path, text: &str) -> Result<State, StateError> {
    file::parse(origin, text)
}
