//! The CI recipes in `examples/ci/` are run, not just read: the shell between
//! their `# phoenix-ci: <block> begin/end` markers runs against the fake PVE,
//! with stand-ins for `gh` and `curl` that record what would be posted.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use crate::common::{Pve, Site, lxc, transport_env};

const RECIPES: [&str; 3] = ["github-actions.yml", "gitlab-ci.yml", "forgejo-actions.yml"];

/// The shell of one marked block, as the CI system would run it.
fn block(recipe: &str, name: &str) -> String {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples/ci")
            .join(recipe),
    )
    .unwrap();
    let begin = format!("# phoenix-ci: {name} begin");
    let end = format!("# phoenix-ci: {name} end");
    let lines: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.contains(&begin))
        .skip(1)
        .take_while(|l| !l.contains(&end))
        .collect();
    assert!(!lines.is_empty(), "{recipe} has no `{name}` block");
    let indent = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    lines
        .iter()
        .map(|l| {
            let l = if l.len() >= indent {
                &l[indent..]
            } else {
                l.trim()
            };
            // GitLab's `script:` items are list entries, each one command.
            l.strip_prefix("- ").unwrap_or(l).to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A directory of stand-ins: `gh` and `curl` record their arguments (and the body they would send).
fn stubs(dir: &Path) -> PathBuf {
    let bin = dir.join("stub-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let record = r#"#!/usr/bin/env bash
{ printf '%s\n' "$(basename "$0") $*"; for a in "$@"; do case "$a" in @*) cat "${a#@}";; body@*) cat "${a#body@}";; esac; done; } >> "$STUB_LOG"
"#;
    let gh = r#"#!/usr/bin/env bash
{ printf 'gh %s\n' "$*"; while [ $# -gt 0 ]; do [ "$1" = --body-file ] && cat "$2"; shift; done; } >> "$STUB_LOG"
"#;
    for (name, body) in [("curl", record), ("gh", gh)] {
        let p = bin.join(name);
        std::fs::write(&p, body).unwrap();
        std::os::unix::fs::PermissionsExt::set_mode(
            &mut std::fs::metadata(&p).unwrap().permissions(),
            0o755,
        );
        Command::new("chmod").arg("+x").arg(&p).status().unwrap();
    }
    bin
}

fn run(site: &Site, recipe: &str, name: &str, work: &Path) -> (i32, String) {
    let script = block(recipe, name);
    let phoenix_dir = assert_cmd::cargo::cargo_bin("phoenix")
        .parent()
        .unwrap()
        .to_path_buf();
    let path = format!(
        "{}:{}:{}",
        stubs(work).display(),
        phoenix_dir.display(),
        std::env::var("PATH").unwrap()
    );
    let ca = std::fs::read_to_string(&crate::support::fakepve::world().ca_file).unwrap();
    let mut c = Command::new("bash");
    c.arg("-e").arg("-c").arg(&script).current_dir(work);
    for (k, v) in transport_env() {
        c.env(k, v);
    }
    c.env_remove("PHOENIX_PVE_CA_FILE")
        .env(
            "PHOENIX_PVE_CA",
            if recipe.starts_with("gitlab") {
                crate::support::fakepve::world()
                    .ca_file
                    .display()
                    .to_string()
            } else {
                ca
            },
        )
        .env("PATH", path)
        .env("SITE_ROOT", site.root())
        .env("RUNNER_TEMP", work)
        .env("GITHUB_OUTPUT", work.join("github_output"))
        .env("STUB_LOG", work.join("stub.log"))
        .env("PR_NUMBER", "7")
        .env("CI_MERGE_REQUEST_IID", "7")
        .env("CI_API_V4_URL", "https://gitlab.invalid/api/v4")
        .env("CI_PROJECT_ID", "1")
        .env("API", "https://forgejo.invalid/api/v1")
        .env("REPO", "site/homelab")
        .env_remove("RUST_BACKTRACE");
    let out = c.output().unwrap();
    let log = std::fs::read_to_string(work.join("stub.log")).unwrap_or_default();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}{log}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn every_recipe_passes_in_sync_fails_on_drift_and_posts_the_plan() {
    let site = Site::new(&[(430, lxc("ci-430", 230))]);
    site.cmd(&["apply", "--auto-approve"]).assert().success();
    for recipe in RECIPES {
        let work = tempfile::tempdir().unwrap();
        let (code, out) = run(&site, recipe, "check", work.path());
        assert_eq!(code, 0, "{recipe} in sync: {out}");
    }
    let pve = Pve::new();
    pve.put(
        &format!("/nodes/{}/lxc/430/config", pve.node()),
        &[("memory", "1024")],
    );
    for recipe in RECIPES {
        let work = tempfile::tempdir().unwrap();
        let (code, out) = run(&site, recipe, "check", work.path());
        assert_eq!(code, 1, "{recipe} must fail on drift: {out}");
        let plan = std::fs::read_to_string(work.path().join("plan.md")).unwrap();
        assert!(plan.starts_with("### phoenix plan"), "{recipe}: {plan}");
        assert!(plan.contains("lxc.430"), "{recipe}: {plan}");
        let (code, posted) = run(&site, recipe, "comment", work.path());
        assert_eq!(code, 0, "{recipe} comment step: {posted}");
        assert!(
            posted.contains("### phoenix plan"),
            "{recipe} posts the plan: {posted}"
        );
    }
    // A manifest edit alone is pending work: exit 2 from drift, the check fails too.
    site.cmd(&["apply", "--auto-approve"]).assert().success();
    let mut edited = lxc("ci-430", 230);
    edited["memory_mb"] = json!(1024);
    site.set_lxcs(&[(430, edited)]);
    site.cmd(&["drift"]).assert().code(2);
    let work = tempfile::tempdir().unwrap();
    assert_eq!(run(&site, "github-actions.yml", "check", work.path()).0, 1);
}
