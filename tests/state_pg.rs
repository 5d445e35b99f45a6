//! Shared state: the pg backend against a real PostgreSQL server (one for this
//! binary, tests/support/postgres.rs), and the contract both backends keep, run
//! against the local file and pg alike: compare-and-swap on the serial, one
//! writer at a time among racing processes, a killed holder's lock freed, the
//! holder shown to a waiter, force-unlock. Then migrate/push/pull round trips,
//! workspaces, the schema's version, TLS, and the errors a user meets first.
//! Each test has a workspace (and guest ids) of its own.

#[allow(dead_code)]
#[path = "common.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::io::{Read, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Pve, Site, lxc, stderr, stdout};
use phoenix::state::{Backend, LocalBackend, LockMode, PgBackend, Saver, StateError};
use serde_json::Value;
use support::postgres::postgres;

/// Which backend a contract test runs on.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Local,
    Pg,
}

/// A site, and the backend its state lives in.
struct Subject {
    site: Site,
    kind: Kind,
    workspace: String,
}

impl Subject {
    fn new(kind: Kind, workspace: &str, lxcs: &[(u32, Value)]) -> Subject {
        Subject {
            site: Site::new(lxcs),
            kind,
            workspace: workspace.to_string(),
        }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        match self.kind {
            Kind::Local => vec![("PHOENIX_BACKEND", "local".into())],
            Kind::Pg => vec![
                ("PHOENIX_BACKEND", "pg".into()),
                ("PHOENIX_PG_URL", postgres().url()),
                ("PHOENIX_WORKSPACE", self.workspace.clone()),
            ],
        }
    }

    fn cmd(&self, args: &[&str]) -> assert_cmd::Command {
        let mut c = self.site.cmd(args);
        c.env_remove("PHOENIX_WORKSPACE");
        for (k, v) in self.env() {
            c.env(k, v);
        }
        c
    }

    fn std_cmd(&self, args: &[&str]) -> std::process::Command {
        let mut c = self.site.std_cmd(args);
        c.env_remove("PHOENIX_WORKSPACE");
        for (k, v) in self.env() {
            c.env(k, v);
        }
        c
    }

    /// A backend object of the library on this subject's store (a session of its own for pg).
    fn backend(&self) -> Backend {
        match self.kind {
            Kind::Local => Backend::Local(LocalBackend::new(self.site.state_path())),
            Kind::Pg => Backend::Pg(PgBackend::new(
                Some(postgres().url()),
                self.workspace.clone(),
            )),
        }
    }

    /// The state as `phoenix state pull` prints it.
    fn pull(&self) -> Value {
        let out = self.cmd(&["state", "pull"]).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_str(&stdout(&out)).unwrap()
    }
}

/// Run a contract test on both backends.
macro_rules! contract {
    ($name:ident) => {
        mod $name {
            #[test]
            fn local() {
                super::$name(super::Kind::Local, concat!(stringify!($name), "-local"));
            }
            #[test]
            fn pg() {
                super::$name(super::Kind::Pg, stringify!($name));
            }
        }
    };
}

/// Spawn `phoenix apply` and wait until it prompts: it then holds the lock.
fn holder_at_prompt(s: &Subject) -> (std::process::Child, std::thread::JoinHandle<String>) {
    let mut child = s
        .std_cmd(&["apply"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = child.stderr.take().unwrap();
    let start = Instant::now();
    let mut seen = String::new();
    let mut buf = [0u8; 256];
    while !seen.contains("Enter a value") {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no prompt: {seen}"
        );
        let n = err.read(&mut buf).unwrap();
        assert!(n > 0, "the holder ended early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    // Keep draining its stderr so it never blocks on a full pipe.
    let rest = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = err.read_to_string(&mut rest);
        rest
    });
    (child, rest)
}

fn cas_two_writers_that_read_the_same_serial(kind: Kind, ws: &str) {
    let s = Subject::new(kind, ws, &[]);
    let (a, b) = (s.backend(), s.backend());
    // A first version, so both writers read serial 1.
    let empty = a.load().unwrap().state;
    let mut first = empty.clone();
    assert!(a.save(&mut first, &empty).unwrap());
    assert_eq!(first.serial, 1);

    let read_a = a.load().unwrap().state;
    let read_b = b.load().unwrap().state;
    assert_eq!((read_a.serial, read_b.serial), (1, 1));
    let mut saver_a = Saver::new(a.clone(), &read_a);
    let mut saver_b = Saver::new(b.clone(), &read_b);
    let mut mine = read_a.clone();
    mine.pending.push(pending("lxc.1"));
    let text = saver_a.prepare(&mut mine).unwrap();
    saver_a.write(mine.serial, text).unwrap();
    let mut theirs = read_b.clone();
    theirs.pending.push(pending("lxc.2"));
    let text = saver_b.prepare(&mut theirs).unwrap();
    assert_eq!(theirs.serial, 2);
    let err = saver_b.write(theirs.serial, text).unwrap_err();
    assert!(matches!(err, StateError::Conflict { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("read serial 1")
            && msg.contains("serial 2")
            && msg.contains("nothing was written"),
        "{msg}"
    );
    // The winner's version is the one stored, whole.
    let now = b.load().unwrap().state;
    assert_eq!(now, mine);
    // The one-shot save (state rm, import) checks the same way.
    let mut stale = read_b.clone();
    stale.pending.push(pending("lxc.3"));
    assert!(matches!(
        b.save(&mut stale, &read_b),
        Err(StateError::Conflict { .. })
    ));
    assert_eq!(a.load().unwrap().state, mine);
    // So does writing a new state where one appeared meanwhile.
    let other = Subject::new(kind, &format!("{ws}-new"), &[]);
    let (x, y) = (other.backend(), other.backend());
    let (fresh_x, fresh_y) = (x.load().unwrap().state, y.load().unwrap().state);
    let mut sx = fresh_x.clone();
    x.save(&mut sx, &fresh_x).unwrap();
    let mut sy = fresh_y.clone();
    sy.pending.push(pending("lxc.4"));
    assert!(matches!(
        y.save(&mut sy, &fresh_y),
        Err(StateError::Conflict { .. })
    ));
}
contract!(cas_two_writers_that_read_the_same_serial);

fn pending(addr: &str) -> phoenix::state::PendingOp {
    phoenix::state::PendingOp {
        address: addr.parse().unwrap(),
        op: phoenix::state::PendingKind::Create,
        started_at: "2026-01-01T00:00:00Z".into(),
        task: None,
    }
}

fn lock_exclusivity_and_holder_shown(kind: Kind, ws: &str) {
    let s = Subject::new(kind, ws, &[]);
    let (a, b) = (s.backend(), s.backend());
    let held = a
        .lock(LockMode::Exclusive, "apply", Duration::ZERO, |_| {})
        .unwrap();
    let id = held.info().unwrap().id.clone();
    let err = b
        .lock(LockMode::Exclusive, "apply", Duration::ZERO, |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("the state is locked"), "{err}");
    assert!(err.contains(&id) && err.contains("`apply`"), "{err}");
    assert!(
        err.contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
    assert!(
        b.lock(LockMode::Shared, "plan", Duration::ZERO, |_| {})
            .is_err(),
        "a reader waits for a writer"
    );
    // A waiter is told who it waits for, then gets the lock once it is free.
    let t = std::thread::spawn(move || {
        let mut seen = None;
        let r = b.lock(
            LockMode::Exclusive,
            "state rm",
            Duration::from_secs(20),
            |h| seen = h.map(|h| h.id.clone()),
        );
        (r.map(|g| g.info().map(|i| i.operation.clone())), seen)
    });
    std::thread::sleep(Duration::from_millis(600));
    drop(held);
    let (got, seen) = t.join().unwrap();
    assert_eq!(got.unwrap().as_deref(), Some("state rm"));
    assert_eq!(seen.as_deref(), Some(id.as_str()));
    // Readers share.
    let c = s.backend();
    let _r1 = a
        .lock(LockMode::Shared, "plan", Duration::ZERO, |_| {})
        .unwrap();
    let _r2 = c
        .lock(LockMode::Shared, "plan", Duration::ZERO, |_| {})
        .unwrap();
}
contract!(lock_exclusivity_and_holder_shown);

fn killed_holder_frees_the_lock(kind: Kind, ws: &str) {
    let id = if kind == Kind::Local { 501 } else { 502 };
    let s = Subject::new(kind, ws, &[(id, lxc(&format!("kill-{id}"), id - 300))]);
    let (mut holder, _) = holder_at_prompt(&s);
    let out = s.cmd(&["apply", "--auto-approve"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let e = stderr(&out);
    assert!(e.contains("the state is locked"), "{e}");
    assert!(
        e.contains(&format!("pid {}", holder.id())),
        "the holder is named: {e}"
    );
    holder.kill().unwrap(); // SIGKILL: no chance to unlock.
    let _ = holder.wait();
    // Freed by the OS (local) or by PostgreSQL when the session ends (pg); the
    // server may take a moment to see the socket close.
    let out = s
        .cmd(&["apply", "--auto-approve", "--lock-timeout", "20s"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(Pve::new().count(id), 1);
    assert_eq!(s.pull()["resources"].as_object().unwrap().len(), 1);
}
contract!(killed_holder_frees_the_lock);

fn racing_applies_one_writer_at_a_time(kind: Kind, ws: &str) {
    let ids: Vec<u32> = if kind == Kind::Local {
        vec![511, 512, 513]
    } else {
        vec![514, 515, 516]
    };
    let lxcs: Vec<(u32, Value)> = ids
        .iter()
        .map(|&i| (i, lxc(&format!("race-{i}"), i - 300)))
        .collect();
    let s = Subject::new(kind, ws, &lxcs);
    let racers: Vec<std::process::Child> = (0..4)
        .map(|n| {
            let mut args = vec!["apply", "--auto-approve"];
            // Half fail fast, half wait their turn.
            if n % 2 == 1 {
                args.extend(["--lock-timeout", "60s"]);
            }
            s.std_cmd(&args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut created = 0;
    for r in racers {
        let out = r.wait_with_output().unwrap();
        let (o, e) = (stdout(&out), stderr(&out));
        if out.status.success() {
            if e.contains("3 created") {
                created += 1;
            } else {
                assert!(e.contains("no changes"), "{o}{e}");
            }
        } else {
            assert!(
                e.contains("the state is locked") && e.contains("held by"),
                "{o}{e}"
            );
        }
    }
    assert_eq!(created, 1, "exactly one apply did the work");
    let pve = Pve::new();
    for &i in &ids {
        assert_eq!(pve.count(i), 1, "lxc.{i} created once");
    }
    let state = s.pull();
    assert_eq!(state["resources"].as_object().unwrap().len(), 3);
    s.cmd(&["plan", "--detailed-exitcode"]).assert().code(0);
}
contract!(racing_applies_one_writer_at_a_time);

fn apply_killed_mid_way_leaves_a_whole_state(kind: Kind, ws: &str) {
    let ids: Vec<u32> = if kind == Kind::Local {
        (551..557).collect()
    } else {
        (561..567).collect()
    };
    let lxcs: Vec<(u32, Value)> = ids
        .iter()
        .map(|&i| (i, lxc(&format!("atom-{i}"), i - 400)))
        .collect();
    let s = Subject::new(kind, ws, &lxcs);
    let mut child = s
        .std_cmd(&["apply", "--auto-approve", "--parallelism", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    let mut line = String::new();
    while !log.contains("Committed") {
        line.clear();
        let n = std::io::BufRead::read_line(&mut err, &mut line).unwrap();
        assert!(n > 0, "the apply ended before a commit: {log}");
        log.push_str(&line);
    }
    child.kill().unwrap(); // SIGKILL, between or during state writes.
    let _ = child.wait();
    // The stored document is whole, and knows every guest that exists.
    let state = s.pull();
    let pve = Pve::new();
    for &i in &ids {
        if pve.count(i) == 1 {
            let addr = format!("lxc.{i}");
            let journaled = state["pending"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["address"] == serde_json::json!(addr));
            assert!(
                state["resources"].get(&addr).is_some() || journaled,
                "{addr} exists but the state does not know it: {state}"
            );
        }
    }
    let out = s
        .cmd(&["apply", "--auto-approve", "--lock-timeout", "20s"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    for &i in &ids {
        assert_eq!(pve.count(i), 1, "lxc.{i} exists exactly once");
    }
    s.cmd(&["plan", "--detailed-exitcode"]).assert().code(0);
}
contract!(apply_killed_mid_way_leaves_a_whole_state);

/// A stuck pg holder (its client alive but gone silent) is cleared by force-unlock,
/// which ends its session; the old holder then cannot write anything.
#[test]
fn force_unlock_ends_a_stuck_pg_session_and_the_old_holder_cannot_write() {
    let s = Subject::new(Kind::Pg, "force-unlock", &[(521, lxc("stuck-521", 221))]);
    let (mut holder, holder_err) = holder_at_prompt(&s);
    let out = s.cmd(&["apply", "--auto-approve"]).output().unwrap();
    let e = stderr(&out);
    let id = e
        .split("ID ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .unwrap_or_else(|| panic!("no lock ID in: {e}"))
        .to_string();
    let wrong = s.cmd(&["force-unlock", "not-the-id"]).output().unwrap();
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        stderr(&wrong).contains("does not match"),
        "{}",
        stderr(&wrong)
    );
    let out = s.cmd(&["force-unlock", &id]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("has been ended"), "{}", stderr(&out));
    // The lock is free at once.
    s.cmd(&["apply", "--auto-approve"]).assert().success();
    // The old holder goes on when told to, and fails before changing anything.
    let serial = s.pull()["serial"].clone();
    holder.stdin.take().unwrap().write_all(b"yes\n").unwrap();
    let status = holder.wait().unwrap();
    assert!(!status.success());
    let said = holder_err.join().unwrap();
    assert!(
        said.contains("failed to save the state") && said.contains("session was lost"),
        "{said}"
    );
    assert_eq!(Pve::new().count(521), 1);
    assert_eq!(s.pull()["serial"], serial);
    // Without a holder row there is nothing to unlock.
    let out = s.cmd(&["force-unlock", &id]).output().unwrap();
    assert!(
        stderr(&out).contains("nothing to unlock"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn migrate_push_pull_round_trips_keep_lineage_serial_and_key() {
    let s = Subject::new(Kind::Local, "migrate", &[(531, lxc("mig-531", 231))]);
    s.cmd(&["apply", "--auto-approve"]).assert().success();
    let local = s.pull();
    let key = std::fs::read_to_string(s.site.root().join("state/phoenix.state.json.key")).unwrap();
    let pg = Subject {
        site: Site {
            dir: tempfile::tempdir().unwrap(),
        },
        kind: Kind::Pg,
        workspace: "migrate".into(),
    };
    // Same site files: the pg subject shares the site's root.
    let pg_cmd = |args: &[&str]| {
        let mut c = s.cmd(args);
        for (k, v) in pg.env() {
            c.env(k, v);
        }
        c
    };
    let out = pg_cmd(&["state", "migrate", "--to", "pg"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("with its secret key"),
        "{}",
        stderr(&out)
    );
    let pulled: Value =
        serde_json::from_str(&stdout(&pg_cmd(&["state", "pull"]).output().unwrap())).unwrap();
    assert_eq!(pulled, local, "the same document, serial and lineage");
    assert_eq!(
        postgres().psql("SELECT key FROM phoenix.keys WHERE workspace = 'migrate'"),
        key.trim(),
        "the key came along"
    );
    // Work goes on in pg: a change raises the serial there.
    pg_cmd(&["plan", "--detailed-exitcode"]).assert().code(0);
    let mut bigger = lxc("mig-531", 231);
    bigger["memory_mb"] = serde_json::json!(768);
    s.site.set_lxcs(&[(531, bigger)]);
    pg_cmd(&["apply", "--auto-approve"]).assert().success();
    let pg_state: Value =
        serde_json::from_str(&stdout(&pg_cmd(&["state", "pull"]).output().unwrap())).unwrap();
    assert_eq!(pg_state["serial"], local["serial"].as_u64().unwrap() + 1);
    assert_eq!(pg_state["lineage"], local["lineage"]);

    // Back to a local file elsewhere: the same document, and the key beside it.
    let back = tempfile::tempdir().unwrap();
    let back_state = back.path().join("s.json");
    let out = pg_cmd(&[
        "--state",
        back_state.to_str().unwrap(),
        "state",
        "migrate",
        "--to",
        "local",
    ])
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let round: Value =
        serde_json::from_str(&std::fs::read_to_string(&back_state).unwrap()).unwrap();
    assert_eq!(round, pg_state);
    assert_eq!(
        std::fs::read_to_string(back.path().join("s.json.key"))
            .unwrap()
            .trim(),
        key.trim()
    );
    // Migrating into a store that holds newer or other history is refused.
    let out = pg_cmd(&["state", "migrate", "--to", "pg"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not an older copy"),
        "{}",
        stderr(&out)
    );

    // push: an older version is refused, a newer one is taken as it is.
    let old = s.site.root().join("old.json");
    std::fs::write(&old, serde_json::to_string_pretty(&local).unwrap()).unwrap();
    let out = pg_cmd(&["state", "push", old.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("would lose changes"),
        "{}",
        stderr(&out)
    );
    let mut newer = pg_state.clone();
    newer["serial"] = serde_json::json!(pg_state["serial"].as_u64().unwrap() + 5);
    let newer_file = s.site.root().join("newer.json");
    std::fs::write(&newer_file, serde_json::to_string_pretty(&newer).unwrap()).unwrap();
    pg_cmd(&["state", "push", newer_file.to_str().unwrap()])
        .assert()
        .success();
    let now: Value =
        serde_json::from_str(&stdout(&pg_cmd(&["state", "pull"]).output().unwrap())).unwrap();
    assert_eq!(now["serial"], newer["serial"]);
    // Another lineage is refused, unless forced.
    let mut other = newer.clone();
    other["lineage"] = serde_json::json!("00000000-0000-4000-8000-000000000000");
    std::fs::write(&newer_file, serde_json::to_string_pretty(&other).unwrap()).unwrap();
    let out = pg_cmd(&["state", "push", newer_file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(stderr(&out).contains("another state"), "{}", stderr(&out));
    pg_cmd(&["state", "push", "--force", newer_file.to_str().unwrap()])
        .assert()
        .success();
    drop(pg);
}

#[test]
fn workspaces_are_isolated_and_the_key_stays_in_the_database() {
    let a = Subject::new(Kind::Pg, "ws-a", &[(541, lxc("ws-541", 241))]);
    a.cmd(&["apply", "--auto-approve"]).assert().success();
    let b = Subject {
        site: Site::new(&[]),
        kind: Kind::Pg,
        workspace: "ws-b".into(),
    };
    let out = b.cmd(&["state", "list"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "", "workspace b sees nothing of a");
    // a's lock does not block b.
    let held = a
        .backend()
        .lock(LockMode::Exclusive, "apply", Duration::ZERO, |_| {})
        .unwrap();
    b.backend()
        .lock(LockMode::Exclusive, "apply", Duration::ZERO, |_| {})
        .unwrap();
    drop(held);
    // The key: in the database, never beside the site, never in output.
    assert!(
        !a.site.root().join("state").exists(),
        "nothing written locally"
    );
    let key = postgres().psql("SELECT key FROM phoenix.keys WHERE workspace = 'ws-a'");
    assert_eq!(key.len(), 64, "{key}");
    let out = a.cmd(&["state", "pull"]).output().unwrap();
    assert!(!stdout(&out).contains(&key) && !stderr(&out).contains(&key));
    let rows = postgres().psql("SELECT workspace FROM phoenix.states WHERE workspace LIKE 'ws-%'");
    assert_eq!(
        rows, "ws-a",
        "a row for the workspace that has a state, none for the other"
    );
}

#[test]
fn schema_created_on_first_write_and_a_newer_version_refused() {
    let pg = postgres();
    pg.psql_db("postgres", "CREATE DATABASE schema_test");
    let url = pg.url_db("schema_test");
    let site = Site::new(&[]);
    let cmd = |args: &[&str]| {
        let mut c = site.cmd(args);
        c.env("PHOENIX_BACKEND", "pg").env("PHOENIX_PG_URL", &url);
        c
    };
    // Reads create nothing.
    cmd(&["state", "list"]).assert().success();
    assert_eq!(
        pg.psql_db(
            "schema_test",
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'phoenix'"
        ),
        "0"
    );
    cmd(&["apply", "--auto-approve"]).assert().success();
    assert_eq!(
        pg.psql_db(
            "schema_test",
            "SELECT value FROM phoenix.meta WHERE key = 'schema_version'"
        ),
        "1"
    );
    pg.psql_db(
        "schema_test",
        "UPDATE phoenix.meta SET value = '2' WHERE key = 'schema_version'",
    );
    let out = cmd(&["state", "list"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let e = stderr(&out);
    assert!(
        e.contains("is at version 2") && e.contains("knows version 1"),
        "{e}"
    );
    assert!(e.contains("newer phoenix"), "{e}");
}

#[test]
fn tls_when_the_url_asks_for_it() {
    let pg = postgres();
    let site = Site::new(&[]);
    let list = |url: &str| {
        site.cmd(&["state", "list"])
            .env("PHOENIX_BACKEND", "pg")
            .env("PHOENIX_PG_URL", url)
            .env("PHOENIX_WORKSPACE", "tls")
            .output()
            .unwrap()
    };
    let ca = pg.ca_file.display().to_string();
    for ok in [
        format!("sslmode=verify-full&sslrootcert={ca}"),
        format!("sslmode=verify-ca&sslrootcert={ca}"),
        "sslmode=require".to_string(),
    ] {
        let out = list(&pg.url_with(&ok));
        assert!(out.status.success(), "{ok}: {}", stderr(&out));
    }
    // Verification is real: a CA that did not sign the server's certificate is refused.
    let wrong = list(&pg.url_with(&format!(
        "sslmode=verify-full&sslrootcert={}",
        pg.other_ca_file.display()
    )));
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        stderr(&wrong).contains("cannot connect"),
        "{}",
        stderr(&wrong)
    );
    // A server without TLS: `require` fails, and says why.
    pg.psql("ALTER SYSTEM SET ssl = off");
    pg.psql("SELECT pg_reload_conf()");
    let start = Instant::now();
    while pg.psql("SHOW ssl") != "off" {
        assert!(start.elapsed() < Duration::from_secs(10), "ssl stays on");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = list(&pg.url_with("sslmode=require"));
    pg.psql("ALTER SYSTEM RESET ssl");
    pg.psql("SELECT pg_reload_conf()");
    assert_eq!(out.status.code(), Some(1));
    let e = stderr(&out);
    assert!(e.contains("does not offer it"), "{e}");
}

#[test]
fn clear_errors_for_missing_url_unreachable_server_and_wrong_password() {
    let site = Site::new(&[]);
    let run = |url: Option<&str>, extra: &[&str]| {
        let mut args = vec!["state", "list"];
        args.extend(extra);
        let mut c = site.cmd(&args);
        c.env("PHOENIX_BACKEND", "pg")
            .env_remove("PHOENIX_PG_URL")
            .env_remove("PGPASSWORD");
        if let Some(u) = url {
            c.env("PHOENIX_PG_URL", u);
        }
        let out = c.output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        stderr(&out)
    };
    let e = run(None, &[]);
    assert!(
        e.contains("PHOENIX_PG_URL is not set") && e.contains("postgres://"),
        "{e}"
    );
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = run(
        Some(&format!(
            "postgres://u:p@127.0.0.1:{port}/d?sslmode=disable"
        )),
        &[],
    );
    assert!(
        e.contains("cannot connect") && e.contains("check that the server is up"),
        "{e}"
    );
    let e = run(
        Some(&format!(
            "postgres://phoenix:wrong@127.0.0.1:{}/phoenix?sslmode=disable",
            postgres().port
        )),
        &[],
    );
    assert!(
        e.contains("refused the login") && e.contains("password"),
        "{e}"
    );
    assert!(!e.contains("wrong@"), "the password is never shown: {e}");
    // A workspace on the local backend is a mistake, said so.
    let out = site
        .cmd(&["state", "list", "--workspace", "prod"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("needs the pg backend"),
        "{}",
        stderr(&out)
    );
    // Commands that never touch the state do not mind a workspace in the environment.
    site.cmd(&["completions", "bash"])
        .env("PHOENIX_WORKSPACE", "prod")
        .assert()
        .success();
}

#[test]
fn help_and_man_page_name_the_backend_options() {
    let site = Site::new(&[]);
    let help = stdout(&site.cmd(&["--help"]).output().unwrap());
    for want in [
        "--backend",
        "--workspace",
        "PHOENIX_BACKEND",
        "PHOENIX_WORKSPACE",
        "PHOENIX_PG_URL",
    ] {
        assert!(help.contains(want), "--help lacks {want}: {help}");
    }
    let state = stdout(&site.cmd(&["state", "--help"]).output().unwrap());
    for verb in ["pull", "push", "migrate"] {
        assert!(
            state.contains(&format!("  {verb} ")),
            "state --help lacks {verb}: {state}"
        );
    }
    let man = stdout(&site.cmd(&["man"]).output().unwrap());
    // clap_mangen leaves out `[env: ...]`; the option texts name the URL variable themselves.
    assert!(
        man.contains("backend") && man.contains("workspace") && man.contains("PHOENIX_PG_URL"),
        "{man}"
    );
}
