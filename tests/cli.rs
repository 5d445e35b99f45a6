//! Commands that need no Proxmox: validate, graph, completions, help.

use crate::common::{stderr, stdout};

fn phoenix(args: &[&str]) -> std::process::Output {
    let mut c = assert_cmd::Command::cargo_bin("phoenix").unwrap();
    c.args(args)
        .env_remove("RUST_BACKTRACE")
        .env_remove("PHOENIX_ROOT")
        .env("NO_COLOR", "1");
    c.output().unwrap()
}

const SEED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/fixtures/phoenix-seed"
);
const EXAMPLE: &str = env!("CARGO_MANIFEST_DIR");

#[test]
fn validate_the_seed_lists_its_duplicate_rules_and_exits_0() {
    let out = phoenix(&["--root", SEED, "validate"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let e = stderr(&out);
    assert!(e.contains("duplicate firewall rule"), "{e}");
    assert!(e.contains("lxc_configs.\"103\".firewall.rules[2]"), "{e}");
    assert!(e.contains("shadowed by rule 1"), "{e}");
    assert!(e.contains("0 errors"), "{e}");
}

#[test]
fn validate_the_example_sites_is_clean() {
    for root in [EXAMPLE.to_string(), format!("{EXAMPLE}/examples/minimal")] {
        let out = phoenix(&["--root", &root, "validate"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("0 errors, 0 warning(s)"),
            "{root}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn graph_as_dot_and_mermaid() {
    let out = phoenix(&["--root", EXAMPLE, "graph"]);
    let dot = stdout(&out);
    assert!(dot.starts_with("digraph phoenix {"), "{dot}");
    assert!(dot.contains("\"lxc.101\" -> \"lxc.103\""), "{dot}");
    let out = phoenix(&["--root", EXAMPLE, "graph", "--format", "mermaid"]);
    let m = stdout(&out);
    assert!(m.starts_with("graph TD"), "{m}");
    assert!(m.contains("lxc_101 --> lxc_103"), "{m}");
}

#[test]
fn dot_output_renders_with_graphviz() {
    let out = phoenix(&["--root", EXAMPLE, "graph"]);
    let dir = tempfile::tempdir().unwrap();
    let dot = dir.path().join("g.dot");
    std::fs::write(&dot, &out.stdout).unwrap();
    let svg = std::process::Command::new("dot")
        .arg("-Tsvg")
        .arg(&dot)
        .output()
        .expect("graphviz `dot` is installed by scripts/setup");
    assert!(
        svg.status.success(),
        "{}",
        String::from_utf8_lossy(&svg.stderr)
    );
    assert!(String::from_utf8_lossy(&svg.stdout).contains("<svg"));
}

#[test]
fn man_page_from_the_cli_definition() {
    let out = phoenix(&["man"]);
    let man = stdout(&out);
    assert!(man.contains(".TH phoenix"), "{man}");
    assert!(man.contains("LetsGo"), "{man}");
}

#[test]
fn install_puts_binary_man_page_and_completions_in_place() {
    let prefix = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/install"))
        .env("PREFIX", prefix.path())
        .env("PHOENIX_BIN", assert_cmd::cargo::cargo_bin("phoenix"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    for f in [
        "bin/phoenix",
        "share/man/man1/phoenix.1",
        "share/bash-completion/completions/phoenix",
        "share/zsh/site-functions/_phoenix",
        "share/fish/vendor_completions.d/phoenix.fish",
    ] {
        let p = prefix.path().join(f);
        assert!(
            std::fs::metadata(&p).map(|m| m.len() > 0).unwrap_or(false),
            "{f} missing"
        );
    }
    let man = std::fs::read_to_string(prefix.path().join("share/man/man1/phoenix.1")).unwrap();
    assert!(man.contains(".TH phoenix"));
}

#[test]
fn completions_and_help() {
    let out = phoenix(&["completions", "bash"]);
    assert!(stdout(&out).contains("_phoenix()"), "{}", stdout(&out));
    let out = phoenix(&["--help"]);
    let h = stdout(&out);
    for verb in [
        "plan", "apply", "drift", "sync", "create", "converge", "delete", "start", "stop",
        "restart", "status", "LetsGo",
    ] {
        assert!(h.contains(&format!("  {verb} ")), "help lacks {verb}: {h}");
    }
}

#[test]
fn a_state_from_a_newer_phoenix_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s.json");
    std::fs::write(
        &state,
        r#"{"format": "9", "lineage": "x", "serial": 1, "phoenix_version": "9.9.9"}"#,
    )
    .unwrap();
    let out = phoenix(&[
        "--root",
        EXAMPLE,
        "--state",
        state.to_str().unwrap(),
        "state",
        "list",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("has format 9"), "{}", stderr(&out));
}
