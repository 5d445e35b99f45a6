//! JSON Schemas of the manifest files, generated from the same Rust types the
//! loader uses, so editors can validate `etc/*.json` as users type. Published
//! in `schemas/` (`phoenix schema --out-dir schemas`) and by `phoenix schema NAME`.

use schemars::{JsonSchema, Schema, generate::SchemaSettings};
use serde_json::Value;

use super::files;

/// One schema: its name, the files it describes, and how to build it.
pub struct Entry {
    pub name: &'static str,
    pub files: &'static str,
    build: fn() -> Schema,
}

fn build<T: JsonSchema>() -> Schema {
    SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<T>()
}

pub const ENTRIES: &[Entry] = &[
    Entry {
        name: "hypervisor",
        files: files::HYPERVISOR_FILE,
        build: build::<files::HypervisorConfig>,
    },
    Entry {
        name: "lxc",
        files: files::LXC_FILE,
        build: build::<files::LxcFile>,
    },
    Entry {
        name: "vm",
        files: files::VM_FILE,
        build: build::<files::VmFile>,
    },
    Entry {
        name: "stacks-config",
        files: files::STACKS_CONFIG_FILE,
        build: build::<files::StacksConfigFile>,
    },
    Entry {
        name: "certificates",
        files: files::CERTIFICATES_FILE,
        build: build::<Vec<files::CertificateEntry>>,
    },
    Entry {
        name: "stack",
        files: "stacks/*/phoenix.json",
        build: build::<files::StackManifest>,
    },
];

impl Entry {
    /// The schema as JSON, with an `$id`-like title naming the files it is for.
    pub fn schema(&self) -> Value {
        let mut v = (self.build)().to_value();
        if let Some(o) = v.as_object_mut() {
            o.insert(
                "title".into(),
                Value::String(format!("phoenix: {}", self.files)),
            );
        }
        v
    }

    /// The file name under `schemas/`.
    pub fn file_name(&self) -> String {
        format!("{}.schema.json", self.name)
    }
}

pub fn find(name: &str) -> Option<&'static Entry> {
    ENTRIES
        .iter()
        .find(|e| e.name == name || e.files.ends_with(name))
}

/// The text written to `schemas/<name>.schema.json`.
pub fn render(e: &Entry) -> String {
    let mut s = serde_json::to_string_pretty(&e.schema()).unwrap_or_else(|_| "{}".into());
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `schemas/` must be what the types generate: run `phoenix schema --out-dir schemas` after changing them.
    #[test]
    fn committed_schemas_are_in_sync_with_the_types() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
        for e in ENTRIES {
            let committed = std::fs::read_to_string(dir.join(e.file_name())).unwrap_or_default();
            assert!(
                committed == render(e),
                "schemas/{} is stale: run `cargo run -- schema --out-dir schemas`",
                e.file_name()
            );
        }
    }

    #[test]
    fn every_entry_builds_an_object_schema() {
        for e in ENTRIES {
            let v = e.schema();
            assert!(
                v.get("properties").is_some() || v.get("items").is_some(),
                "{}",
                e.name
            );
        }
        assert!(find("lxc").is_some());
        assert!(find("phoenix_lxc_configs.json").is_some());
    }
}
