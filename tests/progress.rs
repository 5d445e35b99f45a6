//! Progress during apply: plain status lines when stderr is not a terminal
//! (CI logs), a live view with spinners when it is, `--quiet` and `--verbose`.

use crate::common::{Site, lxc, stderr, transport_env};

#[test]
fn plain_lines_in_ci_logs_with_a_final_summary() {
    let site = Site::new(&[(432, lxc("prog-432", 232))]);
    let out = site.cmd(&["apply", "--auto-approve"]).output().unwrap();
    let e = stderr(&out);
    assert!(e.contains("    Creating lxc.432"), "{e}");
    assert!(e.contains("     Waiting lxc.432 on UPID:"), "{e}");
    assert!(e.contains("   Committed lxc.432 after"), "{e}");
    assert!(
        e.lines()
            .last()
            .unwrap()
            .trim_start()
            .starts_with("Finished"),
        "{e}"
    );
    assert!(!e.contains('\u{1b}'), "no escape codes in a log: {e}");
}

#[test]
fn quiet_prints_nothing_on_success_and_verbose_shows_commits() {
    let site = Site::new(&[(433, lxc("prog-433", 233))]);
    let out = site
        .cmd(&["--quiet", "apply", "--auto-approve"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(stderr(&out), "", "--quiet");
    let mut e = lxc("prog-433", 233);
    e["cores"] = serde_json::json!(2);
    site.set_lxcs(&[(433, e)]);
    let out = site
        .cmd(&["--verbose", "apply", "--auto-approve"])
        .output()
        .unwrap();
    assert!(stderr(&out).contains("state serial"), "{}", stderr(&out));
}

#[test]
fn live_view_on_a_terminal() {
    let site = Site::new(&[(434, lxc("prog-434", 234))]);
    let phoenix = assert_cmd::cargo::cargo_bin("phoenix");
    let cmd = format!(
        "{} --root {} apply --auto-approve",
        phoenix.display(),
        site.root().display()
    );
    // `script` runs the command on a pseudo-terminal, as a user's shell would.
    let mut c = std::process::Command::new("script");
    c.args(["-qec", &cmd, "/dev/null"])
        .env("TERM", "xterm")
        .env_remove("NO_COLOR")
        .env_remove("RUST_BACKTRACE");
    for (k, v) in transport_env() {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Committed"), "{text}");
    assert!(
        text.contains("\u{1b}["),
        "a terminal gets the live view: {text}"
    );
}
