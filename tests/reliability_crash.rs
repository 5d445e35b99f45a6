//! Crash safety (issue 6): `apply` on a site of 37 resources killed with
//! SIGKILL at random points, and stopped with SIGTERM/SIGINT.
//!
//! After every kill: the state loads (or its `.backup` does, and phoenix says
//! which), every object the world holds is in the state or in the journal, the
//! next `apply` creates nothing twice (counted in the fake's request log), and
//! the plan after it is empty.
//!
//! Trials: `PHOENIX_REL_KILL_TRIALS` (CI: 2; `scripts/reliability`: 200).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{Site, lxc, stderr, stdout};
use crate::reliability_common::*;

const APPLY_LIMIT: Duration = Duration::from_secs(240);

/// What one kill left behind, and what the checks found.
#[derive(Default, Debug)]
struct Tally {
    trials: u64,
    kills: u64,
    /// The apply had already finished when the signal came.
    finished_first: u64,
    killed_with_journal: u64,
    loaded_from_backup: u64,
    recovered_from_journal: u64,
    double_creates: u64,
    lost_objects: u64,
    unloadable: u64,
    recovery_failed: u64,
    plan_not_empty: u64,
    mixed_trials: u64,
    /// Half-written temp files a kill left beside the state (swept by the next write).
    temp_files_left_by_kills: u64,
    temp_files_after_recovery: u64,
    /// The first failures, in full.
    failures: Vec<String>,
}

impl Tally {
    fn fail(&mut self, msg: String) {
        eprintln!("FAILURE: {msg}");
        if self.failures.len() < 5 {
            self.failures.push(msg);
        }
    }
}

/// Spawn `apply` and kill it with SIGKILL, either after a delay or when its
/// k-th status line arrives. Returns whether it had already ended by itself.
fn apply_and_kill(
    pw: &PrivateWorld,
    site: &Site,
    args: &[&str],
    rng: &mut Rng,
    calib: &Calibration,
    share: u64,
) -> bool {
    let mut child = pw
        .std_cmd(site, args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let start = Instant::now();
    // `share`: the percentage of a full apply's work this run has to do.
    if rng.chance(50) {
        let at = Duration::from_millis(rng.range(0, calib.millis * share / 100 + 1));
        while start.elapsed() < at {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            let _ = rx.recv_timeout(Duration::from_millis(5));
        }
    } else {
        let k = rng.range(1, calib.lines * share / 100 + 2);
        let mut seen = 0;
        while seen < k {
            match rx.recv_timeout(APPLY_LIMIT) {
                Ok(_) => seen += 1,
                Err(_) => break,
            }
        }
    }
    let done_before = matches!(child.try_wait(), Ok(Some(_)));
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
    let _ = reader.join();
    done_before
}

struct Calibration {
    millis: u64,
    lines: u64,
}

/// How long an uncut apply of the big site takes, and how many status lines it prints.
fn calibrate() -> Calibration {
    let pw = PrivateWorld::start(&[]);
    let site = Site::new(&big_site_lxcs(512));
    let mut c = pw.std_cmd(&site, &["apply", "--auto-approve"]);
    c.stdin(Stdio::null());
    let (code, _, err, took) = run_bounded(c, APPLY_LIMIT);
    assert_eq!(code, Some(0), "calibration apply failed:\n{err}");
    let cal = Calibration {
        millis: took.as_millis() as u64,
        lines: err.lines().count() as u64,
    };
    let state = read_state(&site.state_path()).unwrap();
    assert_eq!(
        state.resources,
        big_site_addresses(),
        "the big site applies to 37 resources"
    );
    cal
}

/// The checks after every kill. Returns (loaded from backup, journal entries).
fn check_after_kill(pw: &PrivateWorld, site: &Site, t: &mut Tally, ctx: &str) -> usize {
    let api = pw.api();
    // The state loads, through phoenix (which says when it used the backup).
    let out = pw.cmd(site, &["state", "list"]).output().unwrap();
    if !out.status.success() {
        t.unloadable += 1;
        t.fail(format!("{ctx}: the state does not load:\n{}", stderr(&out)));
        return 0;
    }
    if stderr(&out).contains(".backup instead") {
        t.loaded_from_backup += 1;
    }
    let live = live_objects(&api);
    let Some(state) = read_state(&site.state_path()) else {
        // Killed before the first commit: nothing may exist yet.
        if !live.is_empty() {
            t.lost_objects += live.len() as u64;
            t.fail(format!("{ctx}: no state, but the world holds {live:?}"));
        }
        return 0;
    };
    let known: BTreeSet<String> = state.resources.union(&state.pending).cloned().collect();
    let lost: Vec<&String> = live.difference(&known).collect();
    if !lost.is_empty() {
        t.lost_objects += lost.len() as u64;
        let msg = format!(
            "{ctx}: objects exist that neither the state nor the journal knows: {lost:?}\nresources {:?}\npending {:?}",
            state.resources, state.pending
        );
        t.fail(msg);
    }
    state.pending.len()
}

/// Apply to the end; then the plan must be empty and every object created once.
fn recover_and_verify(
    pw: &PrivateWorld,
    site: &Site,
    t: &mut Tally,
    ctx: &str,
    want: &BTreeSet<String>,
) {
    let mut c = pw.std_cmd(site, &["apply", "--auto-approve", "--allow-destroy"]);
    c.stdin(Stdio::null());
    let (code, _, err, _) = run_bounded(c, APPLY_LIMIT);
    if code != Some(0) {
        t.recovery_failed += 1;
        t.fail(format!(
            "{ctx}: the apply after the kill failed ({code:?}):\n{err}"
        ));
        return;
    }
    if err.contains("recovered") || err.contains("Adopting") {
        t.recovered_from_journal += 1;
    }
    let requests = pw.requests();
    let creates = creates_per_guest(&requests);
    let twice: Vec<_> = creates.iter().filter(|(_, n)| **n > 1).collect();
    if !twice.is_empty() || snapshots_taken(&requests) > 1 {
        t.double_creates += 1;
        let msg = format!(
            "{ctx}: created twice: {twice:?}, snapshots {}",
            snapshots_taken(&requests)
        );
        t.fail(msg);
    }
    let out = pw
        .cmd(site, &["plan", "--detailed-exitcode"])
        .output()
        .unwrap();
    if out.status.code() != Some(0) {
        t.plan_not_empty += 1;
        t.fail(format!(
            "{ctx}: the plan after recovery is not empty:\n{}{}",
            stdout(&out),
            stderr(&out)
        ));
        return;
    }
    let state = read_state(&site.state_path()).unwrap();
    let live = live_objects(&pw.api());
    if &state.resources != want || !state.pending.is_empty() || &live != want {
        t.plan_not_empty += 1;
        t.fail(format!(
            "{ctx}: after recovery: state {:?}, journal {:?}, world {live:?}",
            state.resources, state.pending
        ));
    }
}

/// The mixed plan of some trials: from the applied big site, update 9
/// containers, remove 5 (and one firewall) and add 5 new ones.
fn mixed_lxcs() -> (Vec<(u32, Value)>, BTreeSet<String>) {
    let mut lxcs: Vec<(u32, Value)> = big_site_lxcs(512)
        .into_iter()
        .filter(|(id, _)| !(826..=830).contains(id))
        .map(|(id, mut v)| {
            if id % 3 == 0 {
                v["memory_mb"] = json!(768);
            }
            (id, v)
        })
        .collect();
    for id in 833..=837u32 {
        lxcs.push((id, lxc(&format!("rel-{id}"), id - 700)));
    }
    let mut want = big_site_addresses();
    for id in 826..=830u32 {
        want.remove(&format!("lxc.{id}"));
        want.remove(&format!("firewall.{id}"));
    }
    for id in 833..=837u32 {
        want.insert(format!("lxc.{id}"));
    }
    (lxcs, want)
}

fn live_mixed(api: &Api) -> BTreeSet<String> {
    let mut live = live_objects(api);
    let guests = api.guests();
    for id in 833..=837u32 {
        if guests.contains(&id) {
            live.insert(format!("lxc.{id}"));
        }
    }
    live
}

/// Temp files of the state's atomic writes, left in its directory.
fn temp_files(site: &Site) -> u64 {
    std::fs::read_dir(site.root().join("state"))
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(".phoenix.state.json.tmp-")
                })
                .count() as u64
        })
        .unwrap_or(0)
}

fn run_kill_trials(trials: u64) -> Tally {
    let seed = seed();
    eprintln!("kill trials: {trials}, PHOENIX_REL_SEED={seed}");
    let mut rng = Rng::new(seed);
    let calib = calibrate();
    eprintln!(
        "calibration: an uncut apply takes {} ms and prints {} lines",
        calib.millis, calib.lines
    );
    let mut t = Tally::default();
    for trial in 0..trials {
        t.trials += 1;
        let pw = PrivateWorld::start(&[]);
        let parallelism = [1, 2, 4, 8][rng.range(0, 4) as usize].to_string();
        let mixed = rng.chance(25);
        let site = Site::new(&big_site_lxcs(512));
        let mut want = big_site_addresses();
        if mixed {
            t.mixed_trials += 1;
            recover_and_verify(&pw, &site, &mut t, "mixed: initial apply", &want);
            let (lxcs, w) = mixed_lxcs();
            site.set_lxcs(&lxcs);
            want = w;
        }
        pw.clear_requests();
        // One kill, and in a third of the trials a second one during the recovery.
        let kills = if rng.chance(33) { 2 } else { 1 };
        for k in 0..kills {
            let ctx =
                format!("trial {trial} (seed {seed}, kill {k}, mixed {mixed}, -p {parallelism})");
            t.kills += 1;
            let args = [
                "apply",
                "--auto-approve",
                "--allow-destroy",
                "--parallelism",
                &parallelism,
            ];
            // The mixed plan is about a third of the work; a second kill hits the rest.
            let share = match (mixed, k) {
                (false, 0) => 90,
                (true, 0) => 40,
                _ => 30,
            };
            if apply_and_kill(&pw, &site, &args, &mut rng, &calib, share) {
                t.finished_first += 1;
            }
            t.temp_files_left_by_kills += temp_files(&site);
            let pending = if mixed {
                // Deleted guests may still be in the state (the journal says so): only check creations.
                let api = pw.api();
                let live = live_mixed(&api);
                let Some(state) = read_state(&site.state_path()) else {
                    t.unloadable += 1;
                    t.fail(format!("{ctx}: no state file after the kill"));
                    continue;
                };
                let known: BTreeSet<String> =
                    state.resources.union(&state.pending).cloned().collect();
                let lost: Vec<&String> = live.difference(&known).collect();
                if !lost.is_empty() {
                    t.lost_objects += lost.len() as u64;
                    t.fail(format!("{ctx}: unknown objects {lost:?}"));
                }
                let out = pw.cmd(&site, &["state", "list"]).output().unwrap();
                if !out.status.success() {
                    t.unloadable += 1;
                    t.fail(format!("{ctx}: {}", stderr(&out)));
                }
                if stderr(&out).contains(".backup instead") {
                    t.loaded_from_backup += 1;
                }
                state.pending.len()
            } else {
                check_after_kill(&pw, &site, &mut t, &ctx)
            };
            if pending > 0 {
                t.killed_with_journal += 1;
            }
        }
        let ctx = format!("trial {trial} (seed {seed}, mixed {mixed})");
        if mixed {
            let api = pw.api();
            recover_and_verify_mixed(&pw, &site, &mut t, &ctx, &want, &api);
        } else {
            recover_and_verify(&pw, &site, &mut t, &ctx, &want);
        }
        let left = temp_files(&site);
        if left > 0 {
            t.temp_files_after_recovery += left;
            t.fail(format!(
                "{ctx}: {left} temp file(s) left after the recovery apply"
            ));
        }
    }
    t
}

fn recover_and_verify_mixed(
    pw: &PrivateWorld,
    site: &Site,
    t: &mut Tally,
    ctx: &str,
    want: &BTreeSet<String>,
    api: &Api,
) {
    let mut c = pw.std_cmd(site, &["apply", "--auto-approve", "--allow-destroy"]);
    c.stdin(Stdio::null());
    let (code, _, err, _) = run_bounded(c, APPLY_LIMIT);
    if code != Some(0) {
        t.recovery_failed += 1;
        t.fail(format!(
            "{ctx}: the apply after the kill failed ({code:?}):\n{err}"
        ));
        return;
    }
    let creates = creates_per_guest(&pw.requests());
    if creates.values().any(|n| *n > 1) {
        t.double_creates += 1;
        t.fail(format!("{ctx}: created twice: {creates:?}"));
    }
    let out = pw
        .cmd(site, &["plan", "--detailed-exitcode"])
        .output()
        .unwrap();
    if out.status.code() != Some(0) {
        t.plan_not_empty += 1;
        t.fail(format!(
            "{ctx}: plan not empty:\n{}{}",
            stdout(&out),
            stderr(&out)
        ));
        return;
    }
    let state = read_state(&site.state_path()).unwrap();
    let live = live_mixed(api);
    if &state.resources != want || !state.pending.is_empty() || &live != want {
        t.plan_not_empty += 1;
        t.fail(format!(
            "{ctx}: after recovery: state {:?}, journal {:?}, world {live:?}",
            state.resources, state.pending
        ));
    }
}

#[test]
fn sigkill_at_random_points_loses_nothing_and_creates_nothing_twice() {
    let trials = knob("PHOENIX_REL_KILL_TRIALS", 2);
    let start = Instant::now();
    let t = run_kill_trials(trials);
    report(
        "crash_sigkill",
        json!({
            "trials": t.trials, "kills": t.kills, "mixed_trials": t.mixed_trials,
            "finished_before_the_kill": t.finished_first,
            "killed_with_journal_entries": t.killed_with_journal,
            "recovered_from_journal": t.recovered_from_journal,
            "loaded_from_backup": t.loaded_from_backup,
            "unloadable_state": t.unloadable, "lost_objects": t.lost_objects,
            "created_twice": t.double_creates, "recovery_failed": t.recovery_failed,
            "plan_not_empty_after": t.plan_not_empty,
            "temp_files_left_by_kills": t.temp_files_left_by_kills,
            "temp_files_after_recovery": t.temp_files_after_recovery,
            "seconds": start.elapsed().as_secs(),
        }),
    );
    assert_eq!(
        t.unloadable
            + t.lost_objects
            + t.double_creates
            + t.recovery_failed
            + t.plan_not_empty
            + t.temp_files_after_recovery,
        0,
        "{t:#?}"
    );
}

/// A corrupt state file falls back to the `.backup`, and phoenix says so; a
/// corrupt backup as well is a clear error naming the file.
#[test]
fn corrupt_state_loads_the_backup_and_says_which() {
    let pw = PrivateWorld::start(&[]);
    let site = Site::new(&[(840, lxc("bak-840", 140))]);
    pw.cmd(&site, &["apply", "--auto-approve"])
        .assert()
        .success();
    let mut e = lxc("bak-840", 140);
    e["cores"] = json!(2);
    site.set_lxcs(&[(840, e)]);
    pw.cmd(&site, &["apply", "--auto-approve"])
        .assert()
        .success();
    let main = site.state_path();
    let text = std::fs::read_to_string(&main).unwrap();
    // A torn write (as a disk or an editor could leave it): half the file.
    std::fs::write(&main, &text[..text.len() / 2]).unwrap();
    let out = pw.cmd(&site, &["plan"]).output().unwrap();
    let err = stderr(&out);
    assert!(
        err.contains("the state file was unreadable")
            && err.contains("phoenix.state.json.backup instead"),
        "{err}"
    );
    assert!(err.contains("line"), "the reason names the place: {err}");
    // The backup is one commit behind: the plan shows the last change again, nothing is created.
    assert!(
        !stdout(&out).contains("will be created"),
        "{}",
        stdout(&out)
    );
    // Both unreadable: a clear error that names the file.
    std::fs::write(site.root().join("state/phoenix.state.json.backup"), "{").unwrap();
    let out = pw.cmd(&site, &["plan"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("phoenix.state.json"), "{err}");
    assert!(err.contains("help:"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// The SIGTERM / Ctrl-C contract: stop starting new work, let the work in
/// flight finish (bounded) and commit it, exit 1 with a summary.
fn interrupt_run(sig: &str, ids: std::ops::RangeInclusive<u32>) -> Value {
    // Creates take 0.25 s of real time, so the signal lands while work is queued.
    let pw = PrivateWorld::start(&["--time-scale", "0.01"]);
    pw.control("/set", &json!({"ct_secs": {"create": 25}}));
    let lxcs: Vec<(u32, Value)> = ids
        .clone()
        .map(|i| (i, lxc(&format!("int-{i}"), i - 700)))
        .collect();
    let site = Site::new(&lxcs);
    let mut child = pw
        .std_cmd(&site, &["apply", "--auto-approve", "--parallelism", "2"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = BufReader::new(child.stderr.take().unwrap());
    let mut lines = Vec::new();
    let mut sent_at = None;
    let mut signalled = false;
    let start = Instant::now();
    for line in err.lines().map_while(Result::ok) {
        if !signalled && line.contains("Committed") {
            signal(&child, sig);
            sent_at = Some(Instant::now());
            signalled = true;
            lines.push("<<signal>>".to_string());
        }
        lines.push(line);
    }
    let status = child.wait().unwrap();
    let took = sent_at.map(|t| t.elapsed()).unwrap_or_default();
    let log = lines.join("\n");
    assert!(signalled, "no commit seen:\n{log}");
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("interrupt received"), "{log}");
    assert!(log.contains("apply interrupted"), "{log}");
    assert!(log.contains("not done"), "a summary: {log}");
    // Nothing new started after the signal was seen by phoenix.
    let after: Vec<&String> = lines
        .iter()
        .skip_while(|l| !l.contains("interrupt received"))
        .filter(|l| l.contains("Creating"))
        .collect();
    assert!(
        after.is_empty(),
        "work started after the signal: {after:?}\n{log}"
    );
    // What was in flight finished and is in the state, not only in the journal.
    let state = read_state(&site.state_path()).unwrap();
    assert!(
        state.pending.is_empty(),
        "journal left: {:?}\n{log}",
        state.pending
    );
    let api = pw.api();
    let live: BTreeSet<String> = api
        .guests()
        .into_iter()
        .map(|i| format!("lxc.{i}"))
        .collect();
    assert_eq!(live, state.resources, "{log}");
    let total = ids.clone().count();
    assert!(
        state.resources.len() < total,
        "the signal stopped the run early: {log}"
    );
    // The next apply finishes the rest.
    pw.cmd(&site, &["apply", "--auto-approve"])
        .assert()
        .success();
    pw.cmd(&site, &["plan", "--detailed-exitcode"])
        .assert()
        .code(0);
    json!({"signal": sig, "done_before_stop": state.resources.len(), "planned": total,
           "seconds_from_signal_to_exit": (took.as_millis() as f64) / 1000.0,
           "seconds_total": start.elapsed().as_secs()})
}

#[test]
fn sigterm_and_ctrl_c_finish_in_flight_work_commit_and_exit_1() {
    let a = interrupt_run("TERM", 843..=852);
    let b = interrupt_run("INT", 853..=862);
    report("crash_interrupt", json!([a, b]));
}

/// A second signal exits at once (in-flight work stays in the journal, as
/// after a SIGKILL), and the wait for in-flight work is bounded by the task
/// timeout.
#[test]
fn second_signal_exits_at_once_and_the_wait_is_bounded() {
    let pw = PrivateWorld::start(&["--time-scale", "0.01"]);
    // A create takes 30 s of real time.
    pw.control("/set", &json!({"ct_secs": {"create": 3000}}));
    let site = Site::new(&[(863, lxc("slow-863", 163)), (864, lxc("slow-864", 164))]);
    let spawn = || {
        pw.std_cmd(&site, &["apply", "--auto-approve"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let wait_for_creating = |child: &mut std::process::Child| {
        let err = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut all = String::new();
            let mut told = false;
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                all.push_str(&line);
                all.push('\n');
                if !told && line.contains("Creating") {
                    let _ = tx.send(None);
                    told = true;
                }
            }
            let _ = tx.send(Some(all));
        });
        assert!(
            rx.recv_timeout(Duration::from_secs(60)).unwrap().is_none(),
            "no create started"
        );
        std::thread::sleep(Duration::from_millis(300));
        rx
    };
    // Two signals: out within a second or two, the journal holds the creates.
    let mut child = spawn();
    let rx = wait_for_creating(&mut child);
    signal(&child, "INT");
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    signal(&child, "INT");
    let status = child.wait().unwrap();
    let quit_after = t.elapsed();
    let log = rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap();
    assert!(quit_after < Duration::from_secs(5), "{quit_after:?}\n{log}");
    assert_ne!(status.code(), Some(0), "{log}");
    assert!(log.contains("second interrupt"), "{log}");
    let state = read_state(&site.state_path()).unwrap();
    assert!(
        !state.pending.is_empty(),
        "the in-flight creates are journaled: {log}"
    );

    // One signal, a task that outlives PHOENIX_PVE_TASK_TIMEOUT: the wait ends with it.
    let site2 = Site::new(&[(865, lxc("slow-865", 165))]);
    let mut child = pw
        .std_cmd(&site2, &["apply", "--auto-approve"])
        .env("PHOENIX_PVE_TASK_TIMEOUT", "3s")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = wait_for_creating(&mut child);
    let t = Instant::now();
    signal(&child, "TERM");
    let status = child.wait().unwrap();
    let log = rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "{:?}\n{log}",
        t.elapsed()
    );
    assert!(log.contains("still running after"), "{log}");
    let state = read_state(&site2.state_path()).unwrap();
    assert!(state.pending.contains("lxc.865"), "journaled: {log}");
    report(
        "crash_second_signal",
        json!({"seconds_to_exit_after_second_signal": quit_after.as_secs_f64(),
               "seconds_to_exit_with_task_timeout_3s": t.elapsed().as_secs_f64()}),
    );
}
