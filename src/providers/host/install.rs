//! Reading, installing and removing a file on any [`Machine`], each step one
//! POSIX `sh` script run there, so the same code serves the host and every kind
//! of guest, locally or over ssh.
//!
//! Installing never leaves a file that failed its check in place:
//!
//! 1. the new content goes to `.<name>.phoenix-new` beside the file (a hidden
//!    name: dnsmasq's `conf-dir` and nginx's `sites-enabled` never read it);
//! 2. `precheck` (dnsmasq: `dnsmasq --test` on the new file) runs on it; a
//!    failure deletes it, and the old file was never touched;
//! 3. the old file is copied to `.<name>.phoenix-prev`, the new one renamed over
//!    it (atomic) and its enabling link made;
//! 4. `check` (nginx: `nginx -t`) and `reload` run; if either fails, the old
//!    file and link are put back (and reloaded) before the error is returned.

use super::{Machine, Output};
use crate::providers::ProviderError;

/// `sh -c SCRIPT phoenix ARGS...`. The script is a constant (`&'static str`: a
/// script built at run time does not compile); data goes in `$1`, `$2`, ...
pub fn sh(script: &'static str, args: &[String]) -> Vec<String> {
    let mut v = vec!["sh".into(), "-c".into(), script.into(), "phoenix".into()];
    v.extend(args.iter().cloned());
    v
}

/// The exit status of [`READ`] for a missing file.
const ABSENT: i32 = 44;

/// `$1` the file, `$2` its link (or empty): `mode=`, `link=`, an empty line, the content.
const READ: &str = r#"
f=$1 l=$2
[ -f "$f" ] || exit 44
m=$(stat -c %a "$f") || exit 1
ln=
if [ -n "$l" ] && [ -L "$l" ] && [ "$(readlink "$l")" = "$f" ]; then ln=$l; fi
printf 'mode=%s\nlink=%s\n\n' "$m" "$ln"
exec cat -- "$f"
"#;

/// `$1` the directory: make it, and clear a stale new file.
const PREPARE: &str = r#"mkdir -p "$1" && rm -f "$2""#;

/// Exit status of [`INSTALL`] when the precheck rejects the new file (nothing changed).
const REJECTED: i32 = 2;
/// ... when the check failed after the move (the old file is back).
const CHECK_FAILED: i32 = 3;
/// ... when the reload failed (the old file is back, reloaded).
const RELOAD_FAILED: i32 = 4;

/// `$1` file, `$2` mode, `$3` link, `$4` precheck, `$5` check, `$6` reload
/// (shell commands; `$PHOENIX_FILE` is the new file during the precheck).
const INSTALL: &str = r#"
set -u
f=$1 mode=$2 l=$3 precheck=$4 check=$5 reload=$6
d=${f%/*} b=${f##*/}
new=$d/.$b.phoenix-new prev=$d/.$b.phoenix-prev
[ -f "$new" ] || { echo "the new file $new is missing" >&2; exit 1; }
chmod "$mode" "$new" || exit 1
if [ -n "$precheck" ]; then
    if ! out=$(PHOENIX_FILE=$new sh -c "$precheck" 2>&1); then
        rm -f "$new"
        printf '%s\n' "$out" >&2
        exit 2
    fi
fi
had=0 oldlink=
if [ -e "$f" ]; then cp -p "$f" "$prev" || exit 1; had=1; fi
if [ -n "$l" ]; then
    if [ -L "$l" ]; then oldlink=$(readlink "$l")
    elif [ -e "$l" ]; then echo "$l exists and is not a symlink" >&2; rm -f "$new" "$prev"; exit 1
    fi
fi
restore() {
    if [ "$had" = 1 ]; then mv -f "$prev" "$f"; else rm -f "$f"; fi
    if [ -n "$l" ]; then
        if [ -n "$oldlink" ]; then ln -sfn "$oldlink" "$l"; else rm -f "$l"; fi
    fi
}
mv -f "$new" "$f" || exit 1
if [ -n "$l" ]; then
    mkdir -p "${l%/*}" && ln -sfn "$f" "$l" || { restore; exit 1; }
fi
if [ -n "$check" ]; then
    if ! out=$(sh -c "$check" 2>&1); then
        restore
        printf '%s\n' "$out" >&2
        exit 3
    fi
fi
if [ -n "$reload" ]; then
    if ! out=$(sh -c "$reload" 2>&1); then
        restore
        sh -c "$reload" >/dev/null 2>&1
        printf '%s\n' "$out" >&2
        exit 4
    fi
fi
rm -f "$prev"
"#;

/// `$1` file, `$2` link, `$3` check, `$4` reload: remove both, then check and reload.
const REMOVE: &str = r#"
set -u
f=$1 l=$2 check=$3 reload=$4
if [ -n "$l" ] && [ -L "$l" ] && [ "$(readlink "$l")" = "$f" ]; then rm -f "$l" || exit 1; fi
rm -f "$f" || exit 1
if [ -n "$check" ]; then
    sh -c "$check" >&2 || exit 3
fi
if [ -n "$reload" ]; then
    sh -c "$reload" >&2 || exit 4
fi
"#;

/// A file as read: its content, mode (`644`) and whether its link points at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileState {
    pub content: String,
    pub mode: String,
    pub link: bool,
}

/// How a file is installed.
#[derive(Debug, Clone, Default)]
pub struct Install<'a> {
    /// The path as the machine names it (the host's already under its root).
    pub path: &'a str,
    pub mode: &'a str,
    pub link: Option<&'a str>,
    pub precheck: Option<&'a str>,
    pub check: Option<&'a str>,
    pub reload: Option<&'a str>,
}

fn failure(m: &dyn Machine, what: &str, out: &Output) -> ProviderError {
    ProviderError::TaskFailed {
        upid: m.label(),
        status: what.to_string(),
        log_tail: out.tail(),
    }
}

/// Parse [`READ`]'s output.
pub fn parse_read(stdout: &[u8]) -> Option<FileState> {
    let text = String::from_utf8_lossy(stdout);
    let (head, content) = text.split_once("\n\n")?;
    let mut mode = None;
    let mut link = false;
    for l in head.lines() {
        if let Some(m) = l.strip_prefix("mode=") {
            mode = Some(m.to_string());
        } else if let Some(v) = l.strip_prefix("link=") {
            link = !v.is_empty();
        }
    }
    Some(FileState {
        content: content.to_string(),
        mode: mode?,
        link,
    })
}

/// The file at `path` (and whether `link` points at it), or `None` when it does not exist.
pub async fn read(
    m: &dyn Machine,
    path: &str,
    link: Option<&str>,
) -> Result<Option<FileState>, ProviderError> {
    let argv = sh(READ, &[path.to_string(), link.unwrap_or("").to_string()]);
    let out = m.exec(&argv, None).await?;
    match out.code {
        0 => parse_read(&out.stdout).map(Some).ok_or_else(|| {
            ProviderError::Other(format!("unreadable answer reading {path} on {}", m.label()))
        }),
        ABSENT => Ok(None),
        _ => Err(failure(m, &format!("reading {path} failed"), &out)),
    }
}

/// Install `content` at `spec.path` (see the module documentation).
pub async fn install(
    m: &dyn Machine,
    spec: &Install<'_>,
    content: &str,
) -> Result<(), ProviderError> {
    let path = spec.path;
    let (dir, base) = path
        .rsplit_once('/')
        .ok_or_else(|| ProviderError::Other(format!("`{path}` is not an absolute path")))?;
    let new = format!("{dir}/.{base}.phoenix-new");
    let out = m
        .exec(&sh(PREPARE, &[dir.to_string(), new.clone()]), None)
        .await?;
    if !out.success() {
        return Err(failure(m, &format!("creating {dir} failed"), &out));
    }
    m.push(content.as_bytes(), &new).await?;
    let args = [
        path.to_string(),
        spec.mode.to_string(),
        spec.link.unwrap_or("").to_string(),
        spec.precheck.unwrap_or("").to_string(),
        spec.check.unwrap_or("").to_string(),
        spec.reload.unwrap_or("").to_string(),
    ];
    let out = m.exec(&sh(INSTALL, &args), None).await?;
    match out.code {
        0 => Ok(()),
        REJECTED => Err(failure(
            m,
            &format!(
                "`{}` rejected the new {path}; the old file is untouched",
                spec.precheck.unwrap_or("")
            ),
            &out,
        )),
        CHECK_FAILED => Err(failure(
            m,
            &format!(
                "`{}` failed with the new {path}; the previous file is back in place",
                spec.check.unwrap_or("")
            ),
            &out,
        )),
        RELOAD_FAILED => Err(failure(
            m,
            &format!(
                "`{}` failed after writing {path}; the previous file is back in place",
                spec.reload.unwrap_or("")
            ),
            &out,
        )),
        _ => Err(failure(m, &format!("installing {path} failed"), &out)),
    }
}

/// Remove the file and its link, then run the check and the reload.
pub async fn remove(m: &dyn Machine, spec: &Install<'_>) -> Result<(), ProviderError> {
    let args = [
        spec.path.to_string(),
        spec.link.unwrap_or("").to_string(),
        spec.check.unwrap_or("").to_string(),
        spec.reload.unwrap_or("").to_string(),
    ];
    let out = m.exec(&sh(REMOVE, &args), None).await?;
    if out.success() {
        Ok(())
    } else {
        Err(failure(m, &format!("removing {} failed", spec.path), &out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::host::{Host, HostSettings};

    fn local(root: &std::path::Path) -> Host {
        Host::new(&HostSettings {
            transport: Some("local".into()),
            root: Some(root.display().to_string()),
            ..Default::default()
        })
        .unwrap()
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn read_output() {
        let s = parse_read(b"mode=644\nlink=/l\n\na\n\nb\n").unwrap();
        assert_eq!(s.content, "a\n\nb\n");
        assert_eq!(s.mode, "644");
        assert!(s.link);
        assert!(!parse_read(b"mode=600\nlink=\n\n").unwrap().link);
        assert!(parse_read(b"garbage").is_none());
    }

    /// The whole cycle on the local host, with real `sh`: install, a rejected
    /// precheck, a failing check and a failing reload (each leaving the old file),
    /// then removal.
    #[test]
    fn install_check_restore_remove() {
        let dir = tempfile::tempdir().unwrap();
        let h = local(dir.path());
        let path = h.path("/etc/x/site");
        let link = h.path("/etc/enabled/site");
        let log = dir.path().join("reloads");
        let reload = format!("echo reload >> {}", log.display());
        let check = format!("! grep -q CHECKFAIL {path}");
        let failing = format!("grep -q RELOADFAIL {path} && exit 1; {reload}");
        let mut spec = Install {
            path: &path,
            mode: "644",
            link: Some(&link),
            precheck: Some(r#"! grep -q BAD "$PHOENIX_FILE""#),
            check: Some("true"),
            reload: Some(&reload),
        };
        rt().block_on(async {
            assert_eq!(read(&h, &path, Some(&link)).await.unwrap(), None);
            install(&h, &spec, "one\n").await.unwrap();
            let s = read(&h, &path, Some(&link)).await.unwrap().unwrap();
            assert_eq!((s.content.as_str(), s.mode.as_str(), s.link), ("one\n", "644", true));

            let e = install(&h, &spec, "BAD\n").await.unwrap_err();
            assert!(matches!(e, ProviderError::TaskFailed { ref status, .. } if status.contains("rejected")), "{e:?}");
            assert_eq!(read(&h, &path, None).await.unwrap().unwrap().content, "one\n");

            spec.check = Some(&check);
            let e = install(&h, &spec, "CHECKFAIL\n").await.unwrap_err();
            assert!(matches!(e, ProviderError::TaskFailed { ref status, .. } if status.contains("previous file is back")), "{e:?}");
            assert_eq!(read(&h, &path, Some(&link)).await.unwrap().unwrap().content, "one\n");

            spec.reload = Some(&failing);
            let e = install(&h, &spec, "RELOADFAIL\n").await.unwrap_err();
            assert!(format!("{e:?}").contains("failed after writing"), "{e:?}");
            assert_eq!(read(&h, &path, Some(&link)).await.unwrap().unwrap().content, "one\n");
            spec.reload = Some(&reload);

            // Nothing hidden is left beside it.
            let names: Vec<String> = std::fs::read_dir(dir.path().join("etc/x"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            assert_eq!(names, ["site"]);

            remove(&h, &spec).await.unwrap();
            assert_eq!(read(&h, &path, Some(&link)).await.unwrap(), None);
            assert!(std::fs::symlink_metadata(&link).is_err());
        });
        let reloads = std::fs::read_to_string(&log).unwrap();
        // one install, the restore after the failed reload, and the removal.
        assert_eq!(reloads.lines().count(), 3, "{reloads}");
    }

    #[test]
    fn a_first_install_that_fails_its_check_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let h = local(dir.path());
        let path = h.path("/etc/x/site");
        let link = h.path("/etc/enabled/site");
        let spec = Install {
            path: &path,
            mode: "644",
            link: Some(&link),
            check: Some("false"),
            ..Default::default()
        };
        rt().block_on(async {
            install(&h, &spec, "x\n").await.unwrap_err();
            assert_eq!(read(&h, &path, Some(&link)).await.unwrap(), None);
        });
        assert!(std::fs::symlink_metadata(&link).is_err());
    }
}
