//! The published JSON Schemas (`schemas/`) accept every example site and the
//! seed, as an editor would check them (Python's `jsonschema`, installed in
//! `.venv` by scripts/setup), and reject a wrong type.

use std::path::Path;
use std::process::Command;

const CHECK: &str = r#"
import json, sys, jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft7Validator.check_schema(schema)
errors = []
for path in sys.argv[2:]:
    for e in jsonschema.Draft7Validator(schema).iter_errors(json.load(open(path))):
        errors.append("%s: %s at %s" % (path, e.message, "/".join(map(str, e.absolute_path))))
print("\n".join(errors))
sys.exit(1 if errors else 0)
"#;

fn python() -> String {
    std::env::var("PHOENIX_FAKEPVE_PYTHON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python").into())
}

fn check(schema: &str, files: &[String]) -> (bool, String) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(python())
        .arg("-c")
        .arg(CHECK)
        .arg(repo.join("schemas").join(schema))
        .args(files)
        .output()
        .expect("the venv python (run ./scripts/setup)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn examples_and_seed_validate_against_the_published_schemas() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sites = [
        repo.to_path_buf(),
        repo.join("examples/minimal"),
        repo.join("../shared/fixtures/phoenix-seed"),
    ];
    let pairs = [
        (
            "hypervisor.schema.json",
            "etc/phoenix_hypervisor_config.json",
        ),
        ("lxc.schema.json", "etc/phoenix_lxc_configs.json"),
        ("vm.schema.json", "etc/phoenix_vm_configs.json"),
        (
            "stacks-config.schema.json",
            "etc/phoenix_stacks_config.json",
        ),
        ("certificates.schema.json", "etc/certificate-manifest.json"),
    ];
    let mut checked = 0;
    for site in &sites {
        for (schema, file) in pairs {
            let f = site.join(file);
            if f.exists() {
                let (ok, out) = check(schema, &[f.display().to_string()]);
                assert!(ok, "{} against {schema}: {out}", f.display());
                checked += 1;
            }
        }
        if let Ok(dirs) = std::fs::read_dir(site.join("stacks")) {
            for d in dirs.flatten() {
                let f = d.path().join("phoenix.json");
                if f.exists() {
                    let (ok, out) = check("stack.schema.json", &[f.display().to_string()]);
                    assert!(ok, "{}: {out}", f.display());
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 12, "only {checked} files checked");
}

#[test]
fn a_wrong_type_is_rejected_by_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("lxc.json");
    std::fs::write(
        &f,
        r#"{"lxc_configs": {"101": {"name": "x", "memory_mb": "lots"}}}"#,
    )
    .unwrap();
    let (ok, out) = check("lxc.schema.json", &[f.display().to_string()]);
    assert!(!ok, "{out}");
    assert!(out.contains("memory_mb"), "{out}");
}
