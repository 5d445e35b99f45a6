//! Keyed fingerprints of secret values. The state and every output keep
//! `hmac-sha256:<hex>` instead of a secret, so a changed secret still shows as
//! a change, while the key (a file beside the state, mode 0600) never leaves
//! the machine that runs phoenix.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::model::canonical_json;

/// The marker that prefixes a fingerprint.
pub const PREFIX: &str = "hmac-sha256:";

#[derive(Clone)]
pub struct SecretKey {
    key: [u8; 32],
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

#[derive(Debug, thiserror::Error)]
#[error("failed to {action} the secret key {path}")]
pub struct SecretKeyError {
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl SecretKey {
    pub fn from_bytes(key: [u8; 32]) -> Self {
        SecretKey { key }
    }

    /// The key as stored (64 hex characters); for the backends only, never for output.
    pub(crate) fn to_hex(&self) -> String {
        hex::encode(self.key)
    }

    pub(crate) fn from_hex(text: &str) -> Option<Self> {
        let mut key = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut key).ok()?;
        Some(SecretKey { key })
    }

    /// Write this key to `path` (mode 0600), replacing any key there: a migrated
    /// state arrives with the key its fingerprints were made with.
    pub fn store(&self, path: &Path) -> Result<(), SecretKeyError> {
        let err = |source| SecretKeyError {
            action: "write",
            path: path.to_path_buf(),
            source,
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&dir).map_err(err)?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".phoenix-key-")
            .tempfile_in(&dir)
            .map_err(err)?;
        tmp.write_all(self.to_hex().as_bytes())
            .and_then(|_| tmp.as_file().sync_all())
            .map_err(err)?;
        tmp.persist(path).map_err(|e| err(e.error))?;
        Ok(())
    }

    /// Read the key if it exists; never creates anything (for read-only commands).
    pub fn load(path: &Path) -> Result<Option<Self>, SecretKeyError> {
        if path.exists() {
            Self::load_or_create(path).map(Some)
        } else {
            Ok(None)
        }
    }

    /// A key for this process only. Read-only commands on a site that has no
    /// key yet use one: there is no state fingerprint to compare with anyway.
    pub fn ephemeral() -> Result<Self, SecretKeyError> {
        let mut key = [0u8; 32];
        fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut key))
            .map_err(|source| SecretKeyError {
                action: "create",
                path: PathBuf::from("/dev/urandom"),
                source,
            })?;
        Ok(SecretKey { key })
    }

    /// Read the key, creating it (mode 0600) on first use.
    pub fn load_or_create(path: &Path) -> Result<Self, SecretKeyError> {
        let err = |action, source| SecretKeyError {
            action,
            path: path.to_path_buf(),
            source,
        };
        if let Ok(meta) = fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            return Err(err(
                "use",
                std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!(
                        "it is readable by others (mode {:04o}); with it and the state, secrets \
                         can be guessed\nhelp: run `chmod 600 {}`",
                        meta.permissions().mode() & 0o7777,
                        path.display()
                    ),
                ),
            ));
        }
        match fs::read(path) {
            Ok(bytes) if bytes.len() == 64 => {
                let text = String::from_utf8_lossy(&bytes);
                let mut key = [0u8; 32];
                hex::decode_to_slice(text.as_ref(), &mut key).map_err(|e| {
                    err(
                        "read",
                        std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
                    )
                })?;
                Ok(SecretKey { key })
            }
            Ok(_) => Err(err(
                "read",
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "expected 64 hex characters",
                ),
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                fs::File::open("/dev/urandom")
                    .and_then(|mut f| f.read_exact(&mut key))
                    .map_err(|e| err("create", e))?;
                let dir = match path.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                    _ => PathBuf::from("."),
                };
                fs::create_dir_all(&dir).map_err(|e| err("create", e))?;
                // Written whole under a temp name (mode 0600), then linked into
                // place: a process racing us either wins, and we read its whole
                // key, or loses; nobody ever reads a half-written key.
                let mut tmp = tempfile::Builder::new()
                    .prefix(".phoenix-key-")
                    .tempfile_in(&dir)
                    .map_err(|e| err("create", e))?;
                tmp.write_all(hex::encode(key).as_bytes())
                    .and_then(|_| tmp.as_file().sync_all())
                    .map_err(|e| err("write", e))?;
                match fs::hard_link(tmp.path(), path) {
                    Ok(()) => Ok(SecretKey { key }),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        Self::load_or_create(path)
                    }
                    Err(e) => Err(err("create", e)),
                }
            }
            Err(e) => Err(err("read", e)),
        }
    }

    /// The keyed fingerprint of a value.
    pub fn fingerprint(&self, value: &Value) -> String {
        // A key of any length is valid for HMAC, so this cannot fail.
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.key) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC accepts keys of any length"),
        };
        mac.update(canonical_json(value).as_bytes());
        format!("{PREFIX}{}", hex::encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_once_with_mode_0600_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        let a = SecretKey::load_or_create(&p).unwrap();
        let b = SecretKey::load_or_create(&p).unwrap();
        assert_eq!(
            a.fingerprint(&json!("s3cret")),
            b.fingerprint(&json!("s3cret"))
        );
        assert_ne!(
            a.fingerprint(&json!("s3cret")),
            a.fingerprint(&json!("other"))
        );
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!a.fingerprint(&json!("s3cret")).contains("s3cret"));
    }
}
