//! Concurrency (issue 6): N processes racing `apply` on one state. Exactly one
//! holds the lock at a time; the others fail fast naming the holder, or wait
//! when asked (`--lock-timeout`); never two writers; `plan` and `drift` hold
//! the lock only for their read of the state.
//!
//! The proof of "never two writers" comes from phoenix's own debug log
//! (`PHOENIX_LOG=phoenix::state=debug`): every process logs when it took and
//! released the state lock and when it wrote the state (microseconds since the
//! epoch, one clock). Exclusive intervals must not overlap each other or any
//! shared one, and every state write must fall inside its writer's exclusive
//! interval.
//!
//! Rounds: `PHOENIX_REL_RACE_ROUNDS` (CI: 3; `scripts/reliability`: 50), 4
//! racers each (`PHOENIX_REL_RACERS`).

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{Site, lxc};
use crate::reliability_common::*;

#[derive(Debug, Clone)]
struct Interval {
    #[allow(dead_code)] // shown in failure messages
    pid: u32,
    exclusive: bool,
    from: u64,
    to: u64,
}

/// `at_us=N` of a debug line.
fn at_us(line: &str) -> Option<u64> {
    // The first long run of digits after the field: robust to escape codes
    // (`\x1b[2m=\x1b[0m`) between the field and its value.
    let rest = &line[line.find("at_us")? + 5..];
    rest.split(|c: char| !c.is_ascii_digit())
        .find(|s| s.len() >= 10)?
        .parse()
        .ok()
}

/// Lock intervals and state writes of one process, from its stderr.
fn events(pid: u32, log: &str) -> (Vec<Interval>, Vec<u64>) {
    let mut out = Vec::new();
    let mut writes = Vec::new();
    let mut open: Option<(bool, u64)> = None;
    for line in log.lines() {
        if line.contains("state lock acquired") {
            let t = at_us(line).expect("at_us");
            open = Some((line.contains("Exclusive"), t));
        } else if line.contains("state lock releasing") {
            let t = at_us(line).expect("at_us");
            let (exclusive, from) = open.take().expect("release without acquire");
            out.push(Interval {
                pid,
                exclusive,
                from,
                to: t,
            });
        } else if line.contains("state written") {
            writes.push(at_us(line).expect("at_us"));
        }
    }
    assert!(open.is_none(), "pid {pid}: a lock never released:\n{log}");
    (out, writes)
}

/// Two writers, or a writer beside a reader, at the same time: the overlaps found.
fn overlaps(all: &[Interval]) -> Vec<(Interval, Interval)> {
    let mut bad = Vec::new();
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            if (a.exclusive || b.exclusive) && a.from < b.to && b.from < a.to {
                bad.push((a.clone(), b.clone()));
            }
        }
    }
    bad
}

struct Racer {
    child: Child,
    role: &'static str,
    started: Instant,
    out: Drain,
    err: Drain,
}

fn spawn(pw: &PrivateWorld, site: &Site, args: &[&str], role: &'static str) -> Racer {
    let mut child = pw
        .std_cmd(site, args)
        .env("PHOENIX_LOG", "phoenix::state=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = drain(child.stdout.take().unwrap());
    let err = drain(child.stderr.take().unwrap());
    Racer {
        child,
        role,
        started: Instant::now(),
        out,
        err,
    }
}

struct Finished {
    pid: u32,
    role: &'static str,
    code: Option<i32>,
    took: Duration,
    stderr: String,
}

fn finish(mut r: Racer) -> Finished {
    let pid = r.child.id();
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Ok(Some(s)) = r.child.try_wait() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = r.child.kill();
            let _ = r.child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = r.started.elapsed();
    let _ = r.out.join();
    Finished {
        pid,
        role: r.role,
        code: status.and_then(|s| s.code()),
        took,
        stderr: r.err.join(),
    }
}

#[derive(Default, Debug)]
struct Tally {
    rounds: u64,
    processes: u64,
    applied: u64,
    refused_naming_holder: u64,
    waited_then_no_changes: u64,
    no_changes_without_waiting: u64,
    readers: u64,
    overlapping_holders: u64,
    writes_outside_the_lock: u64,
    rounds_without_exactly_one_writer: u64,
    other: u64,
    max_fail_fast_ms: u64,
    max_reader_hold_ms: u64,
}

fn run_rounds(rounds: u64, racers: usize) -> Tally {
    let seed = seed();
    eprintln!("race rounds: {rounds} x {racers}, PHOENIX_REL_SEED={seed}");
    let mut rng = Rng::new(seed);
    let pw = PrivateWorld::start(&[]);
    let ids: Vec<u32> = (870..=877).collect();
    let site_of = |mem: u64| -> Vec<(u32, Value)> {
        ids.iter()
            .map(|&i| {
                let mut c = lxc(&format!("race-{i}"), i - 700);
                c["memory_mb"] = json!(mem);
                (i, c)
            })
            .collect()
    };
    let site = Site::new(&site_of(512));
    pw.cmd(&site, &["apply", "--auto-approve"])
        .assert()
        .success();
    let mut t = Tally::default();
    for round in 0..rounds {
        t.rounds += 1;
        // Every round changes all 8 containers: one of the racers must apply it.
        site.set_lxcs(&site_of(512 + 16 * (round + 1)));
        let mut spawned = Vec::new();
        for i in 0..racers {
            let (args, role): (Vec<&str>, &str) = if i % 2 == 0 {
                (vec!["apply", "--auto-approve"], "fail-fast")
            } else {
                (
                    vec!["apply", "--auto-approve", "--lock-timeout", "120s"],
                    "waiter",
                )
            };
            spawned.push(spawn(&pw, &site, &args, role));
        }
        // Readers in some rounds: a plan and a drift, which must not get in the way.
        if rng.chance(50) {
            spawned.push(spawn(
                &pw,
                &site,
                &["plan", "--lock-timeout", "120s"],
                "plan",
            ));
            spawned.push(spawn(
                &pw,
                &site,
                &["drift", "--lock-timeout", "120s"],
                "drift",
            ));
        }
        let pids: Vec<u32> = spawned.iter().map(|r| r.child.id()).collect();
        let done: Vec<Finished> = spawned.into_iter().map(finish).collect();
        let mut intervals = Vec::new();
        let mut writers = 0;
        for f in &done {
            t.processes += 1;
            let (iv, writes) = events(f.pid, &f.stderr);
            for w in &writes {
                let inside = iv.iter().any(|i| i.exclusive && i.from <= *w && *w <= i.to);
                if !inside {
                    t.writes_outside_the_lock += 1;
                }
            }
            for i in iv.iter().filter(|i| !i.exclusive) {
                t.max_reader_hold_ms = t.max_reader_hold_ms.max((i.to - i.from) / 1000);
            }
            intervals.extend(iv);
            let applied = f.stderr.contains("updated") && f.stderr.contains("Finished");
            let refused = f.stderr.contains("the state is locked");
            match (f.role, f.code) {
                ("plan" | "drift", Some(0 | 2 | 3)) => t.readers += 1,
                (_, Some(0)) if applied && f.stderr.contains("8 updated") => {
                    t.applied += 1;
                    writers += 1;
                }
                (_, Some(0)) if f.stderr.contains("no changes") => {
                    if f.stderr.contains("Blocking") {
                        t.waited_then_no_changes += 1;
                    } else {
                        t.no_changes_without_waiting += 1;
                    }
                }
                ("fail-fast", Some(1)) if refused => {
                    let names = pids
                        .iter()
                        .any(|p| *p != f.pid && f.stderr.contains(&format!("(pid {p})")));
                    if names && f.stderr.contains("`apply`") {
                        t.refused_naming_holder += 1;
                        t.max_fail_fast_ms = t.max_fail_fast_ms.max(f.took.as_millis() as u64);
                    } else {
                        t.other += 1;
                        eprintln!(
                            "round {round}: refused without naming a racer:\n{}",
                            f.stderr
                        );
                    }
                }
                _ => {
                    t.other += 1;
                    eprintln!(
                        "round {round}: {} pid {} ended {:?}:\n{}",
                        f.role, f.pid, f.code, f.stderr
                    );
                }
            }
        }
        let bad = overlaps(&intervals);
        if !bad.is_empty() {
            t.overlapping_holders += bad.len() as u64;
            eprintln!("round {round}: overlapping lock holders: {bad:?}");
        }
        if writers != 1 {
            t.rounds_without_exactly_one_writer += 1;
            eprintln!("round {round}: {writers} racers applied the change");
        }
    }
    t
}

#[test]
fn racing_applies_one_writer_at_a_time_the_others_fail_fast_or_wait() {
    let rounds = knob("PHOENIX_REL_RACE_ROUNDS", 3);
    let racers = knob("PHOENIX_REL_RACERS", 4) as usize;
    let start = Instant::now();
    let t = run_rounds(rounds, racers);
    report(
        "concurrency_race",
        json!({
            "rounds": t.rounds, "racers_per_round": racers, "processes": t.processes,
            "applied_the_change": t.applied,
            "refused_at_once_naming_the_holder": t.refused_naming_holder,
            "waited_then_found_no_changes": t.waited_then_no_changes,
            "got_the_lock_after_the_writer": t.no_changes_without_waiting,
            "readers": t.readers,
            "overlapping_lock_holders": t.overlapping_holders,
            "state_writes_outside_the_lock": t.writes_outside_the_lock,
            "rounds_without_exactly_one_writer": t.rounds_without_exactly_one_writer,
            "other": t.other,
            "slowest_refusal_ms": t.max_fail_fast_ms,
            "longest_reader_hold_ms": t.max_reader_hold_ms,
            "seconds": start.elapsed().as_secs(),
        }),
    );
    assert_eq!(
        t.overlapping_holders
            + t.writes_outside_the_lock
            + t.rounds_without_exactly_one_writer
            + t.other,
        0,
        "{t:?}"
    );
    assert!(t.max_fail_fast_ms < 5000, "{t:?}");
}

/// `plan` and `drift` hold the shared lock only while they read the state:
/// against a slow API (every answer 0.3 s late) they run for seconds, and an
/// apply started meanwhile with no `--lock-timeout` is not refused.
#[test]
fn plan_and_drift_hold_the_lock_only_for_their_read() {
    let pw = PrivateWorld::start(&["--latency", "0.3"]);
    let site = Site::new(&[(878, lxc("slow-878", 178)), (879, lxc("slow-879", 179))]);
    pw.cmd(&site, &["apply", "--auto-approve"])
        .assert()
        .success();
    let mut edited = lxc("slow-878", 178);
    edited["memory_mb"] = json!(640);
    site.set_lxcs(&[(878, edited), (879, lxc("slow-879", 179))]);
    let mut figures = Vec::new();
    for reader in ["plan", "drift"] {
        let r = spawn(&pw, &site, &[reader], "reader");
        // Let it take and drop its shared lock and get into its (slow) refresh.
        std::thread::sleep(Duration::from_millis(700));
        let w = spawn(&pw, &site, &["apply", "--auto-approve"], "writer");
        let (r, w) = (finish(r), finish(w));
        assert!(
            matches!(r.code, Some(0..=3)),
            "{reader} failed:\n{}",
            r.stderr
        );
        assert_eq!(w.code, Some(0), "the apply was blocked:\n{}", w.stderr);
        assert!(!w.stderr.contains("Blocking"), "{}", w.stderr);
        let (ri, _) = events(r.pid, &r.stderr);
        let (wi, _) = events(w.pid, &w.stderr);
        assert_eq!(ri.len(), 1, "{}", r.stderr);
        let hold_ms = (ri[0].to - ri[0].from) / 1000;
        assert!(
            r.took > Duration::from_millis(1500),
            "the {reader} was slow: {:?}",
            r.took
        );
        assert!(hold_ms < 300, "{reader} held the lock {hold_ms} ms");
        let mut all = ri.clone();
        all.extend(wi);
        assert!(overlaps(&all).is_empty());
        figures.push(
            json!({"reader": reader, "reader_ms": r.took.as_millis() as u64,
                            "shared_lock_held_ms": hold_ms}),
        );
        // Undo for the second reader.
        site.set_lxcs(&[(878, lxc("slow-878", 178)), (879, lxc("slow-879", 179))]);
    }
    report("concurrency_readers", json!(figures));
}

/// Two processes creating the HMAC key of a fresh state at once both end up
/// with the same whole key (it used to be `create_new` + write: the loser
/// failed, or read a half-written key).
#[test]
fn concurrent_first_use_of_the_secret_key_agrees() {
    use phoenix::state::secrets::SecretKey;
    let rounds = knob("PHOENIX_REL_KEY_ROUNDS", 200);
    let mut failures = 0;
    for _ in 0..rounds {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/phoenix.state.json.key");
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (p, b) = (path.clone(), barrier.clone());
                std::thread::spawn(move || {
                    b.wait();
                    SecretKey::load_or_create(&p).map(|k| k.fingerprint(&json!("x")))
                })
            })
            .collect();
        let got: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let ok: Vec<&String> = got.iter().filter_map(|r| r.as_ref().ok()).collect();
        if ok.len() != 4 || ok.iter().any(|f| *f != ok[0]) {
            failures += 1;
            eprintln!("{got:?}");
        }
        let leftovers = std::fs::read_dir(path.parent().unwrap()).unwrap().count();
        assert_eq!(leftovers, 1, "only the key remains");
    }
    report(
        "concurrency_key_creation",
        json!({"rounds": rounds, "threads": 4, "disagreements_or_errors": failures}),
    );
    assert_eq!(failures, 0);
}
