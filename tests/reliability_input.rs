//! Bad input (issue 6): the manifest loader, the state loader and the
//! saved-plan loader fuzzed with proptest, and hostile values in manifests.
//!
//! Each fuzz case takes a valid document and applies random mutations: JSON
//! nodes replaced by random values (wrong types, huge numbers, shell
//! metacharacters, `..` paths, long strings), keys removed or added (known
//! field names with random values, and random names), then the text cut or
//! spliced. The properties: no panic, no hang (every case within 2 s), and
//! every error names the file and the place in it: the JSON path, or the line
//! and column where the JSON itself is broken.
//!
//! Cases per loader: `PHOENIX_REL_FUZZ_CASES` (CI: 300; `scripts/reliability`:
//! 100000). Failing cases are shrunk by proptest and printed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use serde_json::{Map, Value, json};

use crate::common::{Site, lxc};
use crate::reliability_common::*;

const CASE_LIMIT: Duration = Duration::from_secs(2);

fn cases() -> u32 {
    knob("PHOENIX_REL_FUZZ_CASES", 300) as u32
}

// ------------------------------------------------------------ mutations

#[derive(Debug, Clone)]
enum Mutation {
    /// Replace the n-th node (pre-order) with a value.
    Replace(u32, Value),
    /// Remove the n-th node from its parent.
    Remove(u32),
    /// Add a key to the n-th object (or an item to the n-th array).
    Insert(u32, String, Value),
}

#[derive(Debug, Clone)]
enum TextCut {
    None,
    /// Keep this share (per mille) of the text.
    Truncate(u16),
    /// Insert a string at this share (per mille) of the text.
    Splice(u16, String),
}

/// Field names phoenix knows: a mutation that adds one with a random value
/// reaches the typed parts of the loaders.
const KNOWN_KEYS: &[&str] = &[
    "name",
    "memory_mb",
    "cores",
    "template",
    "storage_pool",
    "storage_size_gb",
    "network_config",
    "ip",
    "gw",
    "bridge",
    "firewall",
    "rules",
    "enabled",
    "port",
    "sport",
    "proto",
    "type",
    "action",
    "source",
    "dest",
    "dependencies",
    "clone_from_ctid",
    "clone_from_vmid",
    "template_snapshot_name",
    "mac_address",
    "status",
    "tags",
    "vmid",
    "vms",
    "lxc_configs",
    "vm_defaults",
    "is_template",
    "disk_size_gb",
    "docker_stacks",
    "user_config",
    "proxmox",
    "url",
    "ca_file",
    "zfs",
    "datasets",
    "proxmox_storage_type",
    "global_firewall_rules",
    "format",
    "lineage",
    "serial",
    "resources",
    "pending",
    "address",
    "kind",
    "attributes",
    "remote",
    "op",
    "task",
    "changes",
    "drift",
    "before",
    "after",
    "precondition",
    "fingerprint",
    "changed_paths",
    "reason",
    "depends_on",
    "format_version",
    "plan",
    "environments",
    "variables",
    "start_at_boot",
    "boot_order",
    "unprivileged",
    "pct_options",
    "searchdomain",
    "nameservers",
    "interfaces",
    "domain_name",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        (-1e300f64..1e300).prop_map(|f| json!(f)),
        Just(json!(0)),
        Just(json!(-1)),
        Just(json!(65536)),
        Just(json!(4294967296u64)),
        ".{0,24}".prop_map(Value::String),
        "[a-z0-9._:/-]{0,40}".prop_map(Value::String),
        prop_oneof![
            Just("web; rm -rf / #"),
            Just("$(reboot)"),
            Just("`id`"),
            Just("a\nb"),
            Just("../../../../etc/shadow"),
            Just("/var/lib/vz/template/cache/../../../etc/passwd"),
            Just("local:vztmpl/../../etc/shadow"),
            Just("70000"),
            Just("1:99999"),
            Just("lxc."),
            Just(".101"),
            Just("lxc.1 01"),
            Just("UPID:"),
            Just("hmac-sha256:"),
            Just("\u{0}"),
            Just("\u{202e}evil"),
        ]
        .prop_map(|s| Value::String(s.to_string())),
        (1usize..6000).prop_map(|n| Value::String("x".repeat(n))),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(("[a-z_]{1,12}", inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(KNOWN_KEYS).prop_map(str::to_string),
        1 => ".{0,12}",
        1 => "[0-9]{1,12}",
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<u32>(), value()).prop_map(|(n, v)| Mutation::Replace(n, v)),
        2 => any::<u32>().prop_map(Mutation::Remove),
        3 => (any::<u32>(), key(), value()).prop_map(|(n, k, v)| Mutation::Insert(n, k, v)),
    ]
}

fn text_cut() -> impl Strategy<Value = TextCut> {
    prop_oneof![
        6 => Just(TextCut::None),
        1 => (0u16..1000).prop_map(TextCut::Truncate),
        1 => (0u16..1000, prop_oneof![
            Just("{".to_string()), Just("}".to_string()), Just(",".to_string()),
            Just("\"".to_string()), Just("\\".to_string()), Just("]]]".to_string()),
            Just("\u{feff}".to_string()), ".{1,8}",
        ]).prop_map(|(at, s)| TextCut::Splice(at, s)),
    ]
}

fn count(v: &Value) -> u32 {
    1 + match v {
        Value::Array(a) => a.iter().map(count).sum(),
        Value::Object(o) => o.values().map(count).sum(),
        _ => 0,
    }
}

/// The node numbered `n` (pre-order), with `f` applied to it and its parent slot.
fn with_node(v: &mut Value, n: &mut u32, f: &mut dyn FnMut(&mut Value) -> bool) -> bool {
    if *n == 0 {
        return f(v);
    }
    *n -= 1;
    match v {
        Value::Array(a) => a.iter_mut().any(|c| with_node(c, n, f)),
        Value::Object(o) => o.values_mut().any(|c| with_node(c, n, f)),
        _ => false,
    }
}

fn apply(doc: &mut Value, m: &Mutation) {
    let total = count(doc);
    match m {
        Mutation::Replace(n, with) => {
            let mut i = n % total;
            with_node(doc, &mut i, &mut |node| {
                *node = with.clone();
                true
            });
        }
        Mutation::Remove(n) => {
            // Remove a child of the n-th container node.
            let mut i = n % total;
            let pick = *n as usize;
            with_node(doc, &mut i, &mut |node| match node {
                Value::Object(o) if !o.is_empty() => {
                    let k = o.keys().nth(pick % o.len()).cloned().unwrap();
                    o.remove(&k);
                    true
                }
                Value::Array(a) if !a.is_empty() => {
                    a.remove(pick % a.len());
                    true
                }
                _ => false,
            });
        }
        Mutation::Insert(n, k, with) => {
            let mut i = n % total;
            with_node(doc, &mut i, &mut |node| match node {
                Value::Object(o) => {
                    o.insert(k.clone(), with.clone());
                    true
                }
                Value::Array(a) => {
                    a.push(with.clone());
                    true
                }
                _ => false,
            });
        }
    }
}

fn render(doc: &Value, cut: &TextCut) -> String {
    let text = serde_json::to_string_pretty(doc).unwrap();
    let at = |per_mille: u16| {
        let mut i = text.len() * per_mille as usize / 1000;
        while !text.is_char_boundary(i) {
            i -= 1;
        }
        i
    };
    match cut {
        TextCut::None => text,
        TextCut::Truncate(p) => text[..at(*p)].to_string(),
        TextCut::Splice(p, s) => {
            let i = at(*p);
            format!("{}{s}{}", &text[..i], &text[i..])
        }
    }
}

/// Run `cases` cases of `strategy` through `check`; a failure is shrunk and reported.
fn fuzz<S: Strategy>(
    name: &str,
    strategy: S,
    check: impl Fn(S::Value) -> Result<(), TestCaseError>,
) -> (u32, Duration)
where
    S::Value: std::fmt::Debug,
{
    let n = cases();
    let seed = seed();
    eprintln!("{name}: PHOENIX_REL_SEED={seed}");
    let mut runner = TestRunner::new(Config {
        cases: n,
        failure_persistence: None,
        max_shrink_iters: 2000,
        rng_seed: RngSeed::Fixed(seed),
        ..Config::default()
    });
    let slowest = std::cell::Cell::new(Duration::ZERO);
    let start = Instant::now();
    let result = runner.run(&strategy, |input| {
        let t = Instant::now();
        let r = check(input);
        let took = t.elapsed();
        slowest.set(slowest.get().max(took));
        prop_assert!(took < CASE_LIMIT, "a case took {took:?} (a hang)");
        r
    });
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
    eprintln!(
        "{name}: {n} cases in {:?}, slowest {:?}",
        start.elapsed(),
        slowest.get()
    );
    (n, slowest.get())
}

// ------------------------------------------------------- the manifests

/// The files of a valid site: this repository's example site and, when it is
/// there, the seed system's (the richest manifests we have).
fn base_sites() -> Vec<Vec<(PathBuf, String)>> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut sites = Vec::new();
    for root in [
        repo.to_path_buf(),
        repo.join("../shared/fixtures/phoenix-seed"),
    ] {
        if !root.join("etc/phoenix_hypervisor_config.json").is_file() {
            continue;
        }
        let mut files = Vec::new();
        for f in [
            "etc/phoenix_hypervisor_config.json",
            "etc/phoenix_lxc_configs.json",
            "etc/phoenix_vm_configs.json",
            "etc/phoenix_stacks_config.json",
            "etc/certificate-manifest.json",
        ] {
            if let Ok(t) = std::fs::read_to_string(root.join(f)) {
                files.push((PathBuf::from(f), t));
            }
        }
        if let Ok(dirs) = std::fs::read_dir(root.join("stacks")) {
            for d in dirs.flatten() {
                let rel = Path::new("stacks").join(d.file_name());
                for f in ["phoenix.json", "docker-compose.yml"] {
                    if let Ok(t) = std::fs::read_to_string(d.path().join(f)) {
                        files.push((rel.join(f), t));
                    }
                }
            }
        }
        sites.push(files);
    }
    assert!(!sites.is_empty());
    sites
}

fn write_site(root: &Path, files: &[(PathBuf, String)]) {
    let _ = std::fs::remove_dir_all(root);
    for (rel, text) in files {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
}

/// Every error names its file, and the JSON path in it (or the line and
/// column, for JSON that does not parse; or the whole file, for one refused as such).
fn check_diagnostics(diags: &[phoenix::manifest::Diagnostic]) -> Result<(), TestCaseError> {
    for d in diags.iter().filter(|d| d.is_error()) {
        let shown = d.to_string();
        prop_assert!(
            !d.file.as_os_str().is_empty() && shown.contains(&d.file.display().to_string()),
            "no file: {shown}"
        );
        prop_assert!(
            !d.json_path.is_empty() || d.line.is_some(),
            "names neither a JSON path nor a line: {shown}"
        );
    }
    Ok(())
}

#[test]
fn fuzz_the_manifest_loader() {
    let sites = base_sites();
    let dir = tempfile::tempdir().unwrap();
    // Each base site is written once; a case rewrites one file and puts it back.
    let roots: Vec<PathBuf> = sites
        .iter()
        .enumerate()
        .map(|(i, files)| {
            let root = dir.path().join(format!("site{i}"));
            write_site(&root, files);
            root
        })
        .collect();
    let strategy = (
        0..sites.len(),
        any::<prop::sample::Index>(),
        prop::collection::vec(mutation(), 1..5),
        text_cut(),
    );
    let (n, slowest) = fuzz("manifest loader", strategy, |(s, file, muts, cut)| {
        let files = &sites[s];
        let root = &roots[s];
        let json_files: Vec<usize> = (0..files.len())
            .filter(|i| files[*i].0.extension().is_some_and(|e| e == "json"))
            .collect();
        let i = json_files[file.index(json_files.len())];
        let mut doc: Value = serde_json::from_str(&files[i].1).unwrap();
        for m in &muts {
            apply(&mut doc, m);
        }
        let target = root.join(&files[i].0);
        std::fs::write(&target, render(&doc, &cut)).unwrap();
        let loaded = phoenix::manifest::load(root);
        std::fs::write(&target, &files[i].1).unwrap();
        match loaded {
            Ok(loaded) => {
                if let Err(diags) = phoenix::model::desired(&loaded.site) {
                    check_diagnostics(&diags)?;
                }
            }
            Err(phoenix::manifest::ManifestError::Invalid { diagnostics }) => {
                prop_assert!(diagnostics.iter().any(|d| d.is_error()));
                check_diagnostics(&diagnostics)?;
            }
            Err(e) => prop_assert!(false, "not a diagnostic: {e}"),
        }
        Ok(())
    });
    report(
        "input_fuzz_manifests",
        json!({"cases": n, "panics": 0, "hangs": 0, "errors_without_file_or_place": 0,
               "slowest_case_ms": slowest.as_millis() as u64}),
    );
}

// ----------------------------------------------------------- the state

fn base_state() -> Value {
    json!({
        "format": "1",
        "lineage": "6f1c3f52-5d0c-4c1a-9a57-1d2b3c4d5e6f",
        "serial": 42,
        "phoenix_version": "0.1.0",
        "resources": {
            "lxc.9801": {
                "address": "lxc.9801", "kind": "lxc",
                "attributes": {"hostname": "web", "memory": 512, "cores": 1,
                    "net0": {"name": "eth0", "bridge": "vmbr0", "ip": "192.0.2.21/24", "gw": "192.0.2.1"},
                    "features": {"nesting": true}, "onboot": true, "startup": {"order": 2, "up": 5},
                    "tags": ["a", "b"], "unprivileged": true, "storage": "local-lvm", "rootfs_size": 4,
                    "status": "running"},
                "remote": {"node": "pve1", "vmid": 9801},
                "dependencies": ["storage.local-lvm"],
                "updated_at": "2026-11-22T00:00:00Z"
            },
            "firewall.9801": {
                "address": "firewall.9801", "kind": "firewall",
                "attributes": {"enable": true, "rules": {"0": "IN ACCEPT -p tcp -dport 22 # ssh"}, "rule_count": 1},
                "remote": {"node": "pve1", "vmid": 9801, "guest": "lxc"},
                "dependencies": ["lxc.9801"],
                "updated_at": "2026-11-22T00:00:00Z"
            },
            "snapshot.9801.golden": {
                "address": "snapshot.9801.golden", "kind": "snapshot",
                "attributes": {"fingerprint": "phoenix:0123456789abcdef", "snaptime": 1700000000},
                "remote": {}, "dependencies": ["lxc.9801"], "updated_at": "2026-11-22T00:00:00Z"
            }
        },
        "pending": [
            {"address": "lxc.9802", "op": "create", "started_at": "2026-11-22T00:00:00Z",
             "task": "UPID:pve1:00001000:00007000:6750A1B2:vzcreate:9802:root@pam!phoenix:"},
            {"address": "lxc.9803", "op": "delete", "started_at": "2026-11-22T00:00:00Z"}
        ]
    })
}

#[test]
fn fuzz_the_state_loader() {
    let base = base_state();
    let path = Path::new("/var/lib/phoenix/state/phoenix.state.json");
    phoenix::state::file::parse(path, &base.to_string()).expect("the base state is valid");
    let strategy = (prop::collection::vec(mutation(), 1..5), text_cut());
    let (n, slowest) = fuzz("state loader", strategy, |(muts, cut)| {
        let mut doc = base.clone();
        for m in &muts {
            apply(&mut doc, m);
        }
        let text = render(&doc, &cut);
        match phoenix::state::file::parse(path, &text) {
            Ok(state) => {
                // What loads renders and loads back the same.
                let again =
                    phoenix::state::file::parse(path, &phoenix::state::file::render(&state));
                prop_assert!(again.as_ref().is_ok_and(|s| *s == state), "{again:?}");
            }
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(msg.contains(&path.display().to_string()), "no file: {msg}");
                let placed = msg.contains(" at `")
                    || msg.contains("(line ")
                    || msg.contains("`format`")
                    || msg.contains("format ");
                prop_assert!(placed, "no place: {msg}");
            }
        }
        Ok(())
    });
    report(
        "input_fuzz_state",
        json!({"cases": n, "panics": 0, "hangs": 0, "errors_without_file_or_place": 0,
               "slowest_case_ms": slowest.as_millis() as u64}),
    );
}

// ------------------------------------------------------ the saved plan

fn base_plan() -> Value {
    let attrs = json!({"hostname": "web", "memory": 512, "net0": {"ip": "192.0.2.21/24"}, "status": "running"});
    json!({
        "format_version": "1",
        "kind": "phoenix-plan",
        "phoenix_version": "0.1.0",
        "created": "2026-11-22T00:00:00Z",
        "lineage": "6f1c3f52-5d0c-4c1a-9a57-1d2b3c4d5e6f",
        "serial": 7,
        "plan": {
            "changes": [
                {"address": "lxc.9801", "action": "update", "before": attrs, "after": attrs,
                 "changed_paths": ["memory"], "reason": null, "drift": true,
                 "depends_on": ["storage.local-lvm"], "precondition": {"fingerprint": "abc"},
                 "notes": ["a note"], "desired_fingerprint": "hmac-sha256:00"},
                {"address": "lxc.9802", "action": "create", "before": null, "after": attrs,
                 "changed_paths": [], "reason": "recovered_from_journal", "drift": false,
                 "depends_on": [], "precondition": {"fingerprint": null}},
                {"address": "lxc.9803", "action": "replace", "before": attrs, "after": attrs,
                 "changed_paths": ["storage"], "replace_paths": ["storage"], "reason": "forces_replacement",
                 "drift": false, "precondition": {"fingerprint": "def"}}
            ],
            "drift": [
                {"address": "lxc.9801", "kind": "changed", "changed_paths": ["memory"],
                 "before": {"memory": 512}, "after": {"memory": 1024}}
            ],
            "refresh_only": false,
            "targets": ["lxc.9801"]
        }
    })
}

#[test]
fn fuzz_the_saved_plan_loader() {
    let base = base_plan();
    let path = Path::new("/home/ci/plans/tonight.plan");
    phoenix::ops::planfile::parse(path, &base.to_string()).expect("the base plan is valid");
    let strategy = (prop::collection::vec(mutation(), 1..5), text_cut());
    let (n, slowest) = fuzz("saved-plan loader", strategy, |(muts, cut)| {
        let mut doc = base.clone();
        for m in &muts {
            apply(&mut doc, m);
        }
        let text = render(&doc, &cut);
        if let Err(e) = phoenix::ops::planfile::parse(path, &text) {
            let msg = e.to_string();
            prop_assert!(msg.contains(&path.display().to_string()), "no file: {msg}");
            let placed = msg.contains(" at `")
                || msg.contains("(line ")
                || msg.contains("`\"kind\": \"phoenix-plan\"`")
                || msg.contains("plan format");
            prop_assert!(placed, "no place: {msg}");
            prop_assert!(e.help().is_some(), "no help: {msg}");
        }
        Ok(())
    });
    report(
        "input_fuzz_saved_plan",
        json!({"cases": n, "panics": 0, "hangs": 0, "errors_without_file_or_place": 0,
               "slowest_case_ms": slowest.as_millis() as u64}),
    );
}

// ------------------------------------------------------ hostile values

/// A site whose container 9860 carries one hostile value; `validate`,
/// `plan` and `apply` must refuse it, naming the file and the JSON path,
/// before a single request is sent (the API address is a listener that
/// records any connection).
fn refused_before_anything_is_sent(edit: impl Fn(&mut Value), path: &str, words: &[&str]) {
    let mut ct = lxc("hostile-9860", 160);
    edit(&mut ct);
    let site = Site::new(&[(9860, ct)]);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    for args in [&["validate"][..], &["plan"], &["apply", "--auto-approve"]] {
        let out = site
            .cmd(args)
            .env("PHOENIX_PVE_URL", &url)
            .env_remove("PHOENIX_PVE_TRANSPORT")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?} accepted it:\n{err}");
        assert!(err.contains("etc/phoenix_lxc_configs.json"), "{err}");
        assert!(err.contains(path), "{path}: {err}");
        assert!(words.iter().any(|w| err.contains(w)), "{words:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    assert!(
        listener.accept().is_err(),
        "a connection was made to the API"
    );
}

#[test]
fn hostile_values_are_refused_before_anything_is_sent() {
    let at = r#"lxc_configs."9860""#;
    refused_before_anything_is_sent(
        |c| c["name"] = json!("web; rm -rf / #"),
        &format!("{at}.name"),
        &["not a valid host name"],
    );
    refused_before_anything_is_sent(
        |c| c["name"] = json!("$(reboot)"),
        &format!("{at}.name"),
        &["not a valid host name"],
    );
    refused_before_anything_is_sent(
        |c| c["template"] = json!("/var/lib/vz/template/cache/../../../../etc/shadow"),
        &format!("{at}.template"),
        &["template"],
    );
    refused_before_anything_is_sent(
        |c| c["template"] = json!("local:vztmpl/../../../etc/shadow"),
        &format!("{at}.template"),
        &["template"],
    );
    refused_before_anything_is_sent(
        |c| {
            c["firewall"] = json!({"enabled": true, "rules": [
                {"type": "in", "action": "ACCEPT", "proto": "tcp", "port": "70000"}]})
        },
        &format!("{at}.firewall.rules[0]"),
        &["out of range"],
    );
    refused_before_anything_is_sent(
        |c| {
            c["firewall"] = json!({"enabled": true, "rules": [
                {"type": "in", "action": "ACCEPT", "proto": "tcp", "port": "22; reboot"}]})
        },
        &format!("{at}.firewall.rules[0]"),
        &["not a port"],
    );
    refused_before_anything_is_sent(
        |c| c["memory_mb"] = json!(-1),
        &format!("{at}.memory_mb"),
        &["invalid value"],
    );

    // A compose file with a 100 MB line: refused by its size, without reading it.
    let site = Site::new(&[(9861, lxc("compose-9861", 161))]);
    let stack = site.root().join("stacks/huge");
    std::fs::create_dir_all(&stack).unwrap();
    std::fs::write(stack.join("phoenix.json"), r#"{"environments": {}}"#).unwrap();
    {
        use std::io::Write;
        let mut f = std::fs::File::create(stack.join("docker-compose.yml")).unwrap();
        f.write_all(b"services:\n  x:\n    image: \"").unwrap();
        let chunk = vec![b'a'; 1 << 20];
        for _ in 0..100 {
            f.write_all(&chunk).unwrap();
        }
        f.write_all(b"\"\n").unwrap();
    }
    let t = Instant::now();
    let out = site.cmd(&["validate"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("stacks/huge/docker-compose.yml"), "{err}");
    assert!(err.contains("bytes"), "{err}");
    assert!(
        err.len() < 10_000,
        "the line is not echoed: {} bytes of stderr",
        err.len()
    );
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
}

/// Nothing phoenix runs is a shell command built by concatenation: the only
/// shell string (pvesh over ssh) is made of words quoted by `shell_quote`, and
/// a POSIX shell reads every quoted word back exactly.
#[test]
fn shell_words_are_quoted_so_the_shell_reads_them_back_exactly() {
    use phoenix::providers::proxmox::pvesh::shell_quote;
    let n = (cases() / 10).max(30);
    let mut runner = TestRunner::new(Config {
        cases: n,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(seed()),
        ..Config::default()
    });
    let word = prop_oneof![
        ".{0,30}",
        "[ -~]{0,30}",
        Just("'; reboot; echo '".to_string()),
        Just("$(id) `id` $HOME \\ \" ' \n * ? [a] ~ # & | < >".to_string()),
    ]
    .prop_filter("no NUL in argv", |s: &String| !s.contains('\0'));
    runner
        .run(&prop::collection::vec(word, 1..4), |words| {
            let script = format!(
                "printf '%s\\0' {}",
                words
                    .iter()
                    .map(|w| shell_quote(w))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(&script)
                .output()
                .unwrap();
            let back: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split('\0')
                .map(str::to_string)
                .collect();
            prop_assert_eq!(&back[..back.len() - 1], &words[..]);
            Ok(())
        })
        .unwrap();
    // A shell script is a constant: wherever src/ runs `sh -c`, the script is
    // taken as `&'static str` (one built at run time does not compile) and the
    // data goes in as positional arguments; no `bash`, no `Command::new("sh")`.
    let mut offenders = Vec::new();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut stack = vec![src];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                // The one exception: the fixed scripts of the host layer, run as
                // `sh -c SCRIPT phoenix ARGS...` with every value a positional
                // parameter (never part of the script), quoted by `shell_quote` over ssh.
                if p.ends_with("providers/host/install.rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&p).unwrap();
                for needle in ["Command::new(\"sh\")", "Command::new(\"bash\")"] {
                    if text.contains(needle) {
                        offenders.push(format!("{}: {needle}", p.display()));
                    }
                }
                if text.contains("\"-c\"") && !text.contains("script: &'static str") {
                    offenders.push(format!(
                        "{}: `sh -c` with a script that is not a `&'static str` constant",
                        p.display()
                    ));
                }
            }
        }
    }
    assert!(offenders.is_empty(), "{offenders:?}");
    report(
        "input_shell_quoting",
        json!({"cases": n, "misread_words": 0}),
    );
}
