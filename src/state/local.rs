//! The local state backend: one JSON file, written atomically (temp file in
//! the same directory, fsync, rename, fsync the directory), mode 0600, with
//! the previous version kept as `<state>.backup`.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::lock::{self, LockGuard, LockInfo, LockMode};
use super::{State, StateError, file};

/// What the state file holds now, for the compare-and-swap of a write.
enum OnDisk {
    Absent,
    Serial(u64),
    Unknown,
}

#[derive(Debug, Clone)]
pub struct LocalBackend {
    path: PathBuf,
}

/// A state as loaded, and where it came from.
#[derive(Debug)]
pub struct LoadedState {
    pub state: State,
    /// The main file was unreadable and the `.backup` was used; the message says why.
    pub from_backup: Option<String>,
    /// No state existed yet: this is a new, empty one.
    pub fresh: bool,
    /// Problems worth a loud warning (files readable by others).
    pub warnings: Vec<String>,
}

/// A warning when `path` exists and others than its owner may read or write it.
pub fn exposed(path: &Path) -> Option<String> {
    let mode = fs::metadata(path).ok()?.permissions().mode() & 0o7777;
    (mode & 0o077 != 0).then(|| {
        format!(
            "{} is readable by others (mode {mode:04o}); phoenix writes it 0600\n\
             help: run `chmod 600 {}`",
            path.display(),
            path.display()
        )
    })
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

impl LocalBackend {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        LocalBackend { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn lock_path(&self) -> PathBuf {
        with_suffix(&self.path, ".lock")
    }

    pub fn backup_path(&self) -> PathBuf {
        with_suffix(&self.path, ".backup")
    }

    pub fn key_path(&self) -> PathBuf {
        with_suffix(&self.path, ".key")
    }

    pub fn lock(
        &self,
        mode: LockMode,
        operation: &str,
        timeout: Duration,
        on_wait: impl FnMut(Option<&LockInfo>),
    ) -> Result<LockGuard, StateError> {
        lock::acquire(&self.lock_path(), mode, operation, timeout, on_wait)
    }

    pub(crate) fn read(path: &Path) -> Result<Option<State>, StateError> {
        match fs::read_to_string(path) {
            Ok(text) => file::parse(path, &text).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StateError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Load the state; an unreadable main file falls back to the `.backup`
    /// (and says so). A state newer than this phoenix is never bypassed.
    pub fn load(&self) -> Result<LoadedState, StateError> {
        let mut loaded = self.load_inner()?;
        loaded.warnings = [self.path.clone(), self.backup_path(), self.key_path()]
            .iter()
            .filter_map(|p| exposed(p))
            .collect();
        Ok(loaded)
    }

    fn load_inner(&self) -> Result<LoadedState, StateError> {
        match Self::read(&self.path) {
            Ok(Some(state)) => Ok(LoadedState {
                state,
                from_backup: None,
                fresh: false,
                warnings: Vec::new(),
            }),
            Ok(None) => Ok(LoadedState {
                state: State::new(),
                from_backup: None,
                fresh: true,
                warnings: Vec::new(),
            }),
            Err(e @ StateError::NewerFormat { .. }) => Err(e),
            Err(e) => match Self::read(&self.backup_path()) {
                Ok(Some(state)) => Ok(LoadedState {
                    state,
                    from_backup: Some(e.to_string()),
                    fresh: false,
                    warnings: Vec::new(),
                }),
                _ => Err(e),
            },
        }
    }

    /// Write `state` if its content differs from `previous`, raising the serial.
    /// Returns whether anything was written. Refused (a [`StateError::Conflict`])
    /// when the file no longer holds `previous`'s serial.
    pub fn save(&self, state: &mut State, previous: &State) -> Result<bool, StateError> {
        if state.same_content(previous) && self.path.exists() {
            state.serial = previous.serial;
            return Ok(false);
        }
        state.serial = previous.serial + 1;
        state.phoenix_version = env!("CARGO_PKG_VERSION").to_string();
        let expected = (previous.serial > 0).then_some(previous.serial);
        self.write_checked(expected, &file::render(state))?;
        tracing::debug!(
            serial = state.serial,
            at_us = super::lock::now_micros() as u64,
            "state written"
        );
        Ok(true)
    }

    /// The serial of the file as it is now, read from its head only: the
    /// rendering puts the top-level `serial` line in the first few lines.
    fn serial_on_disk(&self) -> OnDisk {
        use std::io::Read;
        let mut head = vec![0u8; 4096];
        let n = match File::open(&self.path).and_then(|mut f| f.read(&mut head)) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return OnDisk::Absent,
            Err(_) => return OnDisk::Unknown,
        };
        let text = String::from_utf8_lossy(&head[..n]);
        let serial = text.find("\n  \"serial\": ").and_then(|at| {
            let rest = &text[at + 13..];
            let end = rest.find(|c: char| !c.is_ascii_digit())?;
            rest[..end].parse().ok()
        });
        serial.map_or(OnDisk::Unknown, OnDisk::Serial)
    }

    /// Write `text` if the file still holds serial `expected` (no file for `None`).
    /// The lock already keeps writers apart; this is the check that holds when
    /// two writers read the same serial anyway (both without the lock). A file
    /// whose serial cannot be read (corrupt, being recovered from its backup)
    /// is overwritten as before.
    pub fn write_checked(&self, expected: Option<u64>, text: &str) -> Result<(), StateError> {
        let found = match (expected, self.serial_on_disk()) {
            (_, OnDisk::Unknown) | (None, OnDisk::Absent) => None,
            (Some(e), OnDisk::Serial(f)) if e == f => None,
            (_, OnDisk::Serial(f)) => Some(format!("serial {f}")),
            (Some(_), OnDisk::Absent) => Some("no state file at all".to_string()),
        };
        if let Some(found) = found {
            return Err(StateError::Conflict {
                location: self.path.display().to_string(),
                expected: expected.map_or_else(|| "none (a new state)".into(), |e| e.to_string()),
                found,
            });
        }
        self.write_atomic(text)
    }

    pub(crate) fn write_atomic(&self, text: &str) -> Result<(), StateError> {
        let werr = |source| StateError::Write {
            path: self.path.clone(),
            source,
        };
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&dir).map_err(werr)?;
        // Temp files of this state only (another state may share the directory),
        // so a writer (the lock holder) can sweep those a killed writer left.
        let prefix = format!(
            ".{}.tmp-",
            self.path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "phoenix-state".into())
        );
        if let Ok(entries) = fs::read_dir(&dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        // NamedTempFile creates the file with mode 0600.
        let mut tmp = tempfile::Builder::new()
            .prefix(&prefix)
            .tempfile_in(&dir)
            .map_err(werr)?;
        tmp.write_all(text.as_bytes()).map_err(werr)?;
        tmp.as_file().sync_all().map_err(werr)?;
        if self.path.exists() {
            // Keep the version being replaced: link it under a temp name, then
            // rename over the backup, so a backup is always whole.
            let staged = with_suffix(&self.path, ".backup.tmp");
            let _ = fs::remove_file(&staged);
            fs::hard_link(&self.path, &staged).map_err(werr)?;
            fs::rename(&staged, self.backup_path()).map_err(werr)?;
        }
        tmp.persist(&self.path).map_err(|e| werr(e.error))?;
        fs::set_permissions(&self.path, fs::Permissions::from_mode(0o600)).map_err(werr)?;
        File::open(&dir).and_then(|d| d.sync_all()).map_err(werr)?;
        Ok(())
    }
}

pub use super::backend::Saver;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Address;
    use crate::state::ResourceState;

    fn res(name: &str) -> ResourceState {
        ResourceState {
            address: Address::new("lxc", name),
            kind: "lxc".into(),
            attributes: Default::default(),
            remote: serde_json::Value::Null,
            dependencies: vec![],
            updated_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn serial_rises_only_on_change_and_backup_kept() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path().join("state/phoenix.state.json"));
        let loaded = b.load().unwrap();
        assert!(loaded.fresh);
        let prev = loaded.state;
        let mut s = prev.clone();
        assert!(b.save(&mut s, &prev).unwrap());
        assert_eq!(s.serial, 1);
        let prev = s.clone();
        let mut same = s.clone();
        assert!(!b.save(&mut same, &prev).unwrap());
        assert_eq!(same.serial, 1);
        let mut next = prev.clone();
        next.resources.insert(Address::new("lxc", "1"), res("1"));
        assert!(b.save(&mut next, &prev).unwrap());
        assert_eq!(next.serial, 2);
        let backup = LocalBackend::read(&b.backup_path()).unwrap().unwrap();
        assert_eq!(backup.serial, 1);
        let mode = fs::metadata(b.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn saver_writes_what_save_writes_and_skips_unchanged_content() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path().join("state/phoenix.state.json"));
        let loaded = b.load().unwrap().state;
        let mut saver = Saver::new(b.clone(), &loaded);
        // No file yet: the first save writes, even with nothing in it.
        let mut s = loaded.clone();
        let text = saver.prepare(&mut s).expect("the first save writes");
        assert_eq!(s.serial, 1);
        saver.write(s.serial, text).unwrap();
        assert_eq!(LocalBackend::read(b.path()).unwrap().unwrap(), s);
        // Unchanged content: no write, the serial stays.
        let mut same = s.clone();
        assert!(saver.prepare(&mut same).is_none());
        assert_eq!(same.serial, 1);
        // A change: the next serial, and the previous version becomes the backup.
        s.resources.insert(Address::new("lxc", "1"), res("1"));
        let text = saver.prepare(&mut s).unwrap();
        assert_eq!(s.serial, 2);
        saver.write(s.serial, text).unwrap();
        assert_eq!(LocalBackend::read(b.path()).unwrap().unwrap(), s);
        assert_eq!(
            LocalBackend::read(&b.backup_path())
                .unwrap()
                .unwrap()
                .serial,
            1
        );
        // A saver made from what was loaded compares with the file, whichever phoenix wrote it.
        let mut old = LocalBackend::read(b.path()).unwrap().unwrap();
        old.phoenix_version = "0.0.1".into();
        let saver = Saver::new(b.clone(), &old);
        let mut again = old.clone();
        assert!(saver.prepare(&mut again).is_none());
        assert_eq!(again.serial, 2);
        // A value that looks like a serial line inside a string is not one.
        let mut tricky = again.clone();
        tricky.lineage = "x\n  \"serial\": 9".into();
        assert!(saver.prepare(&mut tricky).is_some());
    }

    #[test]
    fn corrupt_main_falls_back_to_backup_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path().join("s.json"));
        let prev = State::new();
        let mut s1 = prev.clone();
        b.save(&mut s1, &prev).unwrap();
        let mut s2 = s1.clone();
        s2.resources.insert(Address::new("lxc", "1"), res("1"));
        b.save(&mut s2, &s1).unwrap();
        fs::write(b.path(), "{ truncated").unwrap();
        let loaded = b.load().unwrap();
        assert_eq!(loaded.state.serial, 1);
        assert!(loaded.from_backup.is_some());
    }
}
