//! The state lock: an OS file lock on `<state>.lock`, held for the whole
//! command. The exclusive holder writes who it is into the lock file, so a
//! second writer can name it. The OS releases the lock when the holder dies,
//! so a crashed phoenix never leaves a stale lock behind.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::StateError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Readers (`plan`, `drift`): many at once, none while a writer holds it.
    Shared,
    /// Writers (`apply`, `state rm`, `import`): one at a time.
    Exclusive,
}

/// Who holds the lock, written into the lock file by the exclusive holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    #[serde(rename = "ID")]
    pub id: String,
    pub operation: String,
    pub who: String,
    pub pid: u32,
    pub host: String,
    pub version: String,
    pub created: String,
    pub path: String,
}

impl LockInfo {
    /// Who is taking the lock now, for an operation on the state at `location`.
    pub(crate) fn new(operation: &str, location: &str) -> Self {
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| "unknown".into());
        let host = hostname();
        LockInfo {
            id: uuid::Uuid::new_v4().to_string(),
            operation: operation.to_string(),
            who: format!("{user}@{host}"),
            pid: std::process::id(),
            host,
            version: env!("CARGO_PKG_VERSION").to_string(),
            created: super::now_rfc3339(),
            path: location.to_string(),
        }
    }
}

impl std::fmt::Display for LockInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ID {}, `{}` by {} (pid {}) since {}",
            self.id, self.operation, self.who, self.pid, self.created
        )
    }
}

pub(crate) fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

/// The lock is held by someone else.
#[derive(Debug)]
pub struct LockedError {
    /// The lock file, or the pg workspace.
    pub location: String,
    pub holder: Option<LockInfo>,
    pub waited: Option<Duration>,
    /// What frees the lock of a holder that died ("the OS", "PostgreSQL").
    pub released_by: &'static str,
}

impl std::fmt::Display for LockedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the state is locked ({})", self.location)?;
        if let Some(w) = self.waited {
            write!(
                f,
                " and stayed locked for {}",
                humantime::format_duration(w)
            )?;
        }
        match &self.holder {
            Some(h) => write!(f, "\n  held by: {h}")?,
            None => write!(f, "\n  held by: a reader (`phoenix plan` or `drift`)")?,
        }
        write!(
            f,
            "\nhelp: wait for it to finish, or retry with `--lock-timeout 5m` to wait; \
             if the holder is gone, the lock is released by {} on its own",
            self.released_by
        )
    }
}

/// A held lock; released on drop.
#[derive(Debug)]
pub struct LockGuard {
    file: File,
    mode: LockMode,
    pub info: Option<LockInfo>,
    pub path: PathBuf,
}

/// Microseconds since the epoch, for the debug log of lock and state events
/// (the reliability tests check from it that writers never overlap).
pub fn now_micros() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        tracing::debug!(mode = ?self.mode, at_us = now_micros() as u64, "state lock releasing");
        if self.mode == LockMode::Exclusive {
            // Clear who-holds-it before releasing, so nobody reads a stale holder.
            let _ = self.file.set_len(0);
        }
        let _ = self.file.unlock();
    }
}

fn open(path: &Path) -> Result<File, StateError> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        fs::create_dir_all(dir).map_err(|source| StateError::LockIo {
            path: path.to_path_buf(),
            source,
        })?;
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|source| StateError::LockIo {
            path: path.to_path_buf(),
            source,
        })
}

/// Read who holds the lock, if an exclusive holder wrote it.
pub fn read_holder(path: &Path) -> Option<LockInfo> {
    let mut text = String::new();
    File::open(path).ok()?.read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}

fn try_lock(file: &File, mode: LockMode) -> Result<bool, std::io::Error> {
    let r = match mode {
        LockMode::Shared => file.try_lock_shared(),
        LockMode::Exclusive => file.try_lock(),
    };
    match r {
        Ok(()) => Ok(true),
        Err(std::fs::TryLockError::WouldBlock) => Ok(false),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// Take the lock. Fails at once naming the holder, or waits up to `timeout`
/// (calling `on_wait` once, when it starts waiting).
pub fn acquire(
    path: &Path,
    mode: LockMode,
    operation: &str,
    timeout: Duration,
    mut on_wait: impl FnMut(Option<&LockInfo>),
) -> Result<LockGuard, StateError> {
    let file = open(path)?;
    let start = Instant::now();
    // A reader holds the lock for a few milliseconds only: a writer gives it
    // that long before calling the state locked, whatever the timeout.
    let reader_grace = Duration::from_millis(1500);
    let mut announced = false;
    loop {
        let got = try_lock(&file, mode).map_err(|source| StateError::LockIo {
            path: path.to_path_buf(),
            source,
        })?;
        if got {
            break;
        }
        let holder = read_holder(path);
        let limit = if holder.is_none() {
            timeout.max(reader_grace)
        } else {
            timeout
        };
        if start.elapsed() >= limit {
            return Err(StateError::Locked(Box::new(LockedError {
                location: path.display().to_string(),
                holder,
                waited: (!timeout.is_zero()).then(|| start.elapsed()),
                released_by: "the OS",
            })));
        }
        if !announced && !timeout.is_zero() {
            on_wait(holder.as_ref());
            announced = true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut guard = LockGuard {
        file,
        mode,
        info: None,
        path: path.to_path_buf(),
    };
    if mode == LockMode::Exclusive {
        let info = LockInfo::new(operation, &path.display().to_string());
        let text = serde_json::to_string_pretty(&info).unwrap_or_default();
        let f = &mut guard.file;
        f.set_len(0)
            .and_then(|_| f.seek(SeekFrom::Start(0)))
            .and_then(|_| f.write_all(text.as_bytes()))
            .and_then(|_| f.sync_data())
            .map_err(|source| StateError::LockIo {
                path: path.to_path_buf(),
                source,
            })?;
        guard.info = Some(info);
    }
    tracing::debug!(mode = ?mode, at_us = now_micros() as u64, "state lock acquired");
    Ok(guard)
}

/// Clear a lock left behind, after checking that `id` is the holder's and
/// that no process holds it any more.
pub fn force_unlock(path: &Path, id: &str) -> Result<LockInfo, StateError> {
    let holder = read_holder(path).ok_or_else(|| {
        StateError::Unlock(format!(
            "no lock information in {}: nothing to unlock",
            path.display()
        ))
    })?;
    if holder.id != id {
        return Err(StateError::Unlock(format!(
            "lock ID `{id}` does not match the lock on {}\n  held by: {holder}\nhelp: pass the ID shown above",
            path.display()
        )));
    }
    let file = open(path)?;
    let free = try_lock(&file, LockMode::Exclusive).map_err(|source| StateError::LockIo {
        path: path.to_path_buf(),
        source,
    })?;
    if !free {
        return Err(StateError::Unlock(format!(
            "the lock is held by a running process\n  held by: {holder}\n\
             help: a local lock is released when its process ends; stop pid {} on {} instead",
            holder.pid, holder.host
        )));
    }
    file.set_len(0).map_err(|source| StateError::LockIo {
        path: path.to_path_buf(),
        source,
    })?;
    let _ = file.unlock();
    Ok(holder)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_exclusive_fails_naming_holder() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.lock");
        let g = acquire(&p, LockMode::Exclusive, "apply", Duration::ZERO, |_| {}).unwrap();
        let err = acquire(&p, LockMode::Exclusive, "apply", Duration::ZERO, |_| {}).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("`apply`"), "{text}");
        assert!(text.contains(&std::process::id().to_string()), "{text}");
        // Shared is refused while a writer holds it.
        assert!(acquire(&p, LockMode::Shared, "plan", Duration::ZERO, |_| {}).is_err());
        drop(g);
        let _g2 = acquire(&p, LockMode::Exclusive, "apply", Duration::ZERO, |_| {}).unwrap();
    }

    #[test]
    fn readers_share() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.lock");
        let _a = acquire(&p, LockMode::Shared, "plan", Duration::ZERO, |_| {}).unwrap();
        let _b = acquire(&p, LockMode::Shared, "plan", Duration::ZERO, |_| {}).unwrap();
    }

    #[test]
    fn waits_then_gets_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.lock");
        let g = acquire(&p, LockMode::Exclusive, "apply", Duration::ZERO, |_| {}).unwrap();
        let p2 = p.clone();
        let t = std::thread::spawn(move || {
            let mut waited = false;
            let r = acquire(
                &p2,
                LockMode::Exclusive,
                "apply",
                Duration::from_secs(10),
                |_| waited = true,
            );
            (r.is_ok(), waited)
        });
        std::thread::sleep(Duration::from_millis(300));
        drop(g);
        assert_eq!(t.join().unwrap(), (true, true));
    }

    #[test]
    fn force_unlock_checks_id_and_liveness() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.lock");
        let g = acquire(&p, LockMode::Exclusive, "apply", Duration::ZERO, |_| {}).unwrap();
        let id = g.info.clone().unwrap().id;
        assert!(force_unlock(&p, "wrong").is_err());
        assert!(force_unlock(&p, &id).is_err(), "held by a live lock");
        // Simulate a holder that vanished without clearing its info.
        std::mem::forget(g);
    }
}
