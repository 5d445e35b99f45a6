//! Turns one file's text into its typed value plus diagnostics: malformed JSON and type
//! errors (with path, line and column), duplicate keys, and unknown keys aggregated per
//! key name, with a "did you mean" when a known field is close.

use std::path::Path;

use serde::de::{self, DeserializeOwned, Deserializer, Visitor};

use super::diagnostic::Diagnostic;
use super::files::*;
use super::locate::{self, Segment, format_path};

/// Which schema a file follows; decides the field names offered as suggestions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FileKind {
    Hypervisor,
    Lxc,
    Vm,
    StacksConfig,
    Certificates,
    StackManifest,
}

/// Parses `text` (the content of `file`, relative to the site root) as `T`.
///
/// Diagnostics go to `out`; `None` when the file could not be read as a `T` (at least one
/// error was pushed then).
pub(super) fn parse<T: DeserializeOwned>(
    file: &Path,
    text: &str,
    kind: FileKind,
    out: &mut Vec<Diagnostic>,
) -> Option<T> {
    let mut ignored: Vec<Vec<Segment>> = Vec::new();
    let mut record = |path: serde_ignored::Path<'_>| {
        let mut segments = Vec::new();
        ignored_segments(&path, &mut segments);
        ignored.push(segments);
    };
    let mut json = serde_json::Deserializer::from_str(text);
    let result = serde_path_to_error::deserialize::<_, T>(serde_ignored::Deserializer::new(
        &mut json,
        &mut record,
    ));

    let duplicates = locate::duplicate_keys(text);
    for dup in &duplicates {
        out.push(
            Diagnostic::error(file, format!("duplicate key {}", quoted_last(&dup.path)))
                .with_path(format_path(&dup.path))
                .with_position(Some(dup.second))
                .with_help(format!(
                    "the same key is also at line {}; JSON keeps only the last one, so the first \
                     is silently lost",
                    dup.first.line
                )),
        );
    }

    let value = match result {
        Ok(value) => value,
        Err(err) => {
            let path: Vec<Segment> = err
                .path()
                .iter()
                .filter_map(|segment| match segment {
                    serde_path_to_error::Segment::Seq { index } => Some(Segment::Index(*index)),
                    serde_path_to_error::Segment::Map { key } => Some(Segment::Key(key.clone())),
                    serde_path_to_error::Segment::Enum { .. } => None,
                    serde_path_to_error::Segment::Unknown => Some(Segment::key("?")),
                })
                .collect();
            let inner = err.into_inner();
            // serde's own "duplicate field" error says less than the duplicate-key one above.
            let already_reported =
                !duplicates.is_empty() && bare_message(&inner).starts_with("duplicate field");
            if !already_reported {
                out.push(error_diagnostic(file, text, &path, &inner));
            }
            return None;
        }
    };
    if let Err(err) = json.end() {
        out.push(error_diagnostic(file, text, &[], &err));
        return None;
    }

    out.extend(unknown_key_warnings(file, text, kind, ignored));
    Some(value)
}

fn ignored_segments(path: &serde_ignored::Path<'_>, out: &mut Vec<Segment>) {
    match path {
        serde_ignored::Path::Root => {}
        serde_ignored::Path::Seq { parent, index } => {
            ignored_segments(parent, out);
            out.push(Segment::Index(*index));
        }
        serde_ignored::Path::Map { parent, key } => {
            ignored_segments(parent, out);
            out.push(Segment::Key(key.clone()));
        }
        serde_ignored::Path::Some { parent }
        | serde_ignored::Path::NewtypeStruct { parent }
        | serde_ignored::Path::NewtypeVariant { parent } => ignored_segments(parent, out),
    }
}

fn quoted_last(path: &[Segment]) -> String {
    match path.last() {
        Some(Segment::Key(key)) => format!("`{key}`"),
        Some(Segment::Index(i)) => format!("[{i}]"),
        None => "(root)".to_owned(),
    }
}

/// serde_json appends " at line L column C" to its messages; the diagnostic shows the
/// position separately.
fn bare_message(err: &serde_json::Error) -> String {
    let message = err.to_string();
    if err.line() == 0 {
        return message;
    }
    let suffix = format!(" at line {} column {}", err.line(), err.column());
    message
        .strip_suffix(&suffix)
        .map(str::to_owned)
        .unwrap_or(message)
}

fn error_diagnostic(
    file: &Path,
    text: &str,
    path: &[Segment],
    err: &serde_json::Error,
) -> Diagnostic {
    use serde_json::error::Category;

    let message = bare_message(err);
    let from_json = (err.line() > 0).then_some(locate::Position {
        line: err.line(),
        column: err.column(),
    });
    match err.classify() {
        Category::Syntax | Category::Io => {
            Diagnostic::error(file, format!("malformed JSON: {message}")).with_position(from_json)
        }
        Category::Eof => Diagnostic::error(file, format!("malformed JSON: {message}"))
            .with_position(from_json)
            .with_help("the file ends before the JSON is complete; look for a missing `}` or `]`"),
        Category::Data => {
            // serde_json reports a missing field at the object's closing brace, which can
            // be far from its key; point at where the object starts instead.
            let position = if message.starts_with("missing field") {
                locate::locate_key(text, path).or(from_json)
            } else {
                from_json.or_else(|| locate::locate(text, path))
            };
            let mut diagnostic = Diagnostic::error(file, message.clone())
                .with_path(format_path(path))
                .with_position(position);
            if message.starts_with("invalid type: string")
                && ["u16", "u32", "u64", "integer"]
                    .iter()
                    .any(|t| message.ends_with(&format!("expected {t}")))
            {
                diagnostic = diagnostic.with_help("write the number without quotes");
            }
            diagnostic
        }
    }
}

/// One warning per unknown key name (not per place), in order of first appearance.
fn unknown_key_warnings(
    file: &Path,
    text: &str,
    kind: FileKind,
    ignored: Vec<Vec<Segment>>,
) -> Vec<Diagnostic> {
    // (key, first path, count)
    let mut keys: Vec<(String, Vec<Segment>, usize)> = Vec::new();
    for path in ignored {
        let key = match path.last() {
            Some(Segment::Key(key)) => key.clone(),
            Some(Segment::Index(_)) => format_path(&path),
            None => continue,
        };
        if key == "$schema" {
            continue;
        }
        match keys.iter_mut().find(|(k, _, _)| *k == key) {
            Some(entry) => entry.2 += 1,
            None => keys.push((key, path, 1)),
        }
    }
    keys.into_iter()
        .map(|(key, first, count)| {
            let where_ = format_path(&first);
            let message = if count == 1 {
                format!("key `{key}` is not used by phoenix")
            } else {
                format!("key `{key}` is not used by phoenix ({count} places, first at {where_})")
            };
            let parent = &first[..first.len().saturating_sub(1)];
            let help = match fields_at(kind, parent).and_then(|fields| closest(&key, fields)) {
                // Never steer a credential into a field that is kept in git.
                _ if super::lint::looks_secret(&key) => {
                    "phoenix never reads credentials from the manifests; remove it and keep it \
                     in the environment or a secret file"
                        .to_owned()
                }
                Some(field) => format!("did you mean `{field}`?"),
                None => "phoenix ignores it; remove it or check its spelling".to_owned(),
            };
            Diagnostic::warning(file, message)
                .with_path(where_)
                .with_position(locate::locate_key(text, &first))
                .with_help(help)
        })
        .collect()
}

/// The known field names of the object at `parent` in a file of `kind`, if it is a struct.
fn fields_at(kind: FileKind, parent: &[Segment]) -> Option<&'static [&'static str]> {
    let shape: Vec<&str> = parent
        .iter()
        .map(|segment| match segment {
            Segment::Key(key) => key.as_str(),
            Segment::Index(_) => "[]",
        })
        .collect();
    let fields = match (kind, shape.as_slice()) {
        // Shared shapes first, wherever they appear.
        (
            _,
            [
                ..,
                "rules" | "global_firewall_rules" | "firewall_rules",
                "[]",
            ],
        ) => fields_of::<FirewallRule>(),
        (_, [.., "traefik_service"]) => fields_of::<TraefikService>(),
        (_, [.., "dns_records", "[]"]) => fields_of::<DnsRecord>(),

        (FileKind::Lxc, []) => fields_of::<LxcFile>(),
        (FileKind::Lxc, ["lxc_configs", _]) => fields_of::<LxcConfig>(),
        (
            FileKind::Lxc,
            [
                "lxc_configs",
                _,
                "network_config" | "secondary_network_config",
            ],
        ) => fields_of::<LxcNetworkConfig>(),
        (FileKind::Lxc | FileKind::Vm, [.., "firewall"]) => fields_of::<GuestFirewall>(),
        (FileKind::Lxc, ["lxc_configs", _, "id_maps", "[]"]) => fields_of::<IdMap>(),
        (FileKind::Lxc, ["lxc_configs", _, "mount_points", "[]"]) => fields_of::<MountPoint>(),
        (FileKind::Lxc, ["lxc_configs", _, "zfs_volumes", "[]"]) => fields_of::<ZfsVolume>(),

        (FileKind::Vm, []) => fields_of::<VmFile>(),
        (FileKind::Vm, ["vm_defaults"]) => fields_of::<VmDefaults>(),
        (FileKind::Vm, ["vms", "[]"]) => fields_of::<VmConfig>(),
        (FileKind::Vm, ["vms", "[]", "network_config"]) => fields_of::<VmNetworkConfig>(),
        (FileKind::Vm, ["vms", "[]", "user_config"]) => fields_of::<UserConfig>(),
        (FileKind::Vm, ["vms", "[]", "volumes", "[]"]) => fields_of::<VmVolume>(),
        (FileKind::Vm, ["vms", "[]", "docker_stacks", "[]"]) => &["name", "environment"],

        (FileKind::Hypervisor, []) => fields_of::<HypervisorConfig>(),
        (FileKind::Hypervisor, ["users"]) => fields_of::<AdminUser>(),
        (FileKind::Hypervisor, ["core_paths"]) => fields_of::<CorePaths>(),
        (FileKind::Hypervisor, ["network"]) => fields_of::<NetworkConfig>(),
        (FileKind::Hypervisor, ["network", "interfaces"]) => fields_of::<HostInterface>(),
        (FileKind::Hypervisor, ["network", "internal_bridge"]) => fields_of::<InternalBridge>(),
        (FileKind::Hypervisor, ["docker"]) => fields_of::<DockerImages>(),
        (FileKind::Hypervisor, ["nfs"]) => fields_of::<NfsConfig>(),
        (FileKind::Hypervisor, ["nfs", "exports", "[]"]) => fields_of::<NfsExport>(),
        (FileKind::Hypervisor, ["samba"]) => fields_of::<SambaConfig>(),
        (FileKind::Hypervisor, ["samba", "shares", "[]"]) => fields_of::<SambaShare>(),
        (FileKind::Hypervisor, ["zfs"]) => fields_of::<ZfsConfig>(),
        (FileKind::Hypervisor, ["zfs", "pools", "[]"]) => fields_of::<ZfsPool>(),
        (FileKind::Hypervisor, ["zfs", "datasets", "[]"]) => fields_of::<ZfsDataset>(),
        (FileKind::Hypervisor, ["shared_volumes"]) => fields_of::<SharedVolumes>(),
        (FileKind::Hypervisor, ["firewall"] | ["shared_volumes", "firewall"]) => {
            fields_of::<ClusterFirewall>()
        }
        (FileKind::Hypervisor, ["shared_volumes", _]) => fields_of::<SharedVolume>(),
        (FileKind::Hypervisor, ["portainer_api"]) => fields_of::<PortainerApi>(),
        (FileKind::Hypervisor, ["vm_defaults"]) => fields_of::<HypervisorVmDefaults>(),
        (FileKind::Hypervisor, ["dns_server"]) => fields_of::<DnsServer>(),
        (FileKind::Hypervisor, ["step_ca"]) => fields_of::<StepCa>(),
        (FileKind::Hypervisor, ["proxmox"]) => fields_of::<ProxmoxConnection>(),

        (FileKind::StacksConfig, []) => fields_of::<StacksConfigFile>(),
        (FileKind::StacksConfig, ["docker_stacks", _]) => fields_of::<StackConfig>(),
        (FileKind::StackManifest, []) => fields_of::<StackManifest>(),
        (FileKind::StacksConfig | FileKind::StackManifest, [.., "environments", _]) => {
            fields_of::<StackEnvironment>()
        }
        (FileKind::StacksConfig | FileKind::StackManifest, [.., "variables", "[]"]) => {
            fields_of::<StackVariable>()
        }
        (FileKind::StacksConfig | FileKind::StackManifest, [.., "files", "[]"]) => {
            fields_of::<StackFile>()
        }
        (FileKind::StacksConfig | FileKind::StackManifest, [.., "services", _]) => {
            fields_of::<StackService>()
        }

        (FileKind::Certificates, ["[]"]) => fields_of::<CertificateEntry>(),
        _ => return None,
    };
    Some(fields)
}

/// The field names serde derives for `T` (the `fields` it passes to `deserialize_struct`),
/// so suggestions never drift from the types.
fn fields_of<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Capture<'a>(&'a mut &'static [&'static str]);

    impl<'de> Deserializer<'de> for Capture<'_> {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("fields captured"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Capture(&mut fields));
    fields
}

/// The known field closest to `key`, if it is close enough to be a likely typo.
fn closest(key: &str, fields: &[&'static str]) -> Option<&'static str> {
    let key_lower = key.to_ascii_lowercase();
    let limit = (key.chars().count() / 3).max(1);
    fields
        .iter()
        .filter(|field| !field.starts_with('$'))
        .map(|field| (edit_distance(&key_lower, field), *field))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, field)| field)
}

/// Optimal string alignment distance: Levenshtein plus adjacent transpositions, the
/// commonest typo (`memroy_mb`).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<T: DeserializeOwned>(kind: FileKind, text: &str) -> (Option<T>, Vec<Diagnostic>) {
        let mut out = Vec::new();
        let value = parse::<T>(Path::new("etc/test.json"), text, kind, &mut out);
        (value, out)
    }

    #[test]
    fn field_capture_sees_renames() {
        let fields = fields_of::<LxcFile>();
        assert!(fields.contains(&"$schema"));
        assert!(fields.contains(&"lxc_configs"));
        assert!(fields_of::<FirewallRule>().contains(&"type"));
        assert!(fields_of::<FirewallRule>().contains(&"macro"));
    }

    #[test]
    fn suggestions() {
        assert_eq!(
            closest("memroy_mb", fields_of::<LxcConfig>()),
            Some("memory_mb")
        );
        assert_eq!(
            closest("nameserver", fields_of::<LxcNetworkConfig>()),
            Some("nameservers")
        );
        assert_eq!(closest("dport", fields_of::<FirewallRule>()), Some("port"));
        assert_eq!(closest("Name", fields_of::<LxcConfig>()), Some("name"));
        assert_eq!(closest("completely_else", fields_of::<LxcConfig>()), None);
    }

    #[test]
    fn unknown_keys_are_aggregated_per_name() {
        let text = r#"{"vms": [
            {"vmid": 101, "name": "a", "colour": 1},
            {"vmid": 102, "name": "b", "colour": 2, "corse": 3}
        ], "$schema": "x"}"#;
        let (value, diags) = run::<VmFile>(FileKind::Vm, text);
        assert!(value.is_some());
        assert_eq!(diags.len(), 2, "{diags:#?}");
        assert_eq!(
            diags[0].message,
            "key `colour` is not used by phoenix (2 places, first at vms[0].colour)"
        );
        assert_eq!(diags[0].json_path, "vms[0].colour");
        assert_eq!((diags[0].line, diags[0].column), (Some(2), Some(40)));
        assert_eq!(diags[1].message, "key `corse` is not used by phoenix");
        assert_eq!(diags[1].help.as_deref(), Some("did you mean `cores`?"));
    }

    #[test]
    fn credentials_are_not_suggested_anywhere() {
        let text = r#"{"domain_name": "d", "network": {"interfaces": {"name": "vmbr0", "address": "192.0.2.13/24"}},
            "proxmox": {"node": "pve1", "token_secret": "abc"}}"#;
        let (value, diags) = run::<HypervisorConfig>(FileKind::Hypervisor, text);
        assert!(value.is_some());
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].json_path, "proxmox.token_secret");
        assert!(
            diags[0]
                .help
                .as_deref()
                .unwrap()
                .starts_with("phoenix never reads credentials")
        );
    }

    #[test]
    fn syntax_error_has_line_and_column() {
        let (value, diags) =
            run::<VmFile>(FileKind::Vm, "{\n  \"vms\": [\n    {\"vmid\": 1,,}\n  ]\n}");
        assert!(value.is_none());
        assert_eq!(diags.len(), 1);
        assert!(
            diags[0].message.starts_with("malformed JSON: "),
            "{}",
            diags[0].message
        );
        assert_eq!((diags[0].line, diags[0].column), (Some(3), Some(16)));
    }

    #[test]
    fn trailing_garbage_is_malformed() {
        let (value, diags) = run::<VmFile>(FileKind::Vm, "{\"vms\": []} x");
        assert!(value.is_none());
        assert!(
            diags[0].message.starts_with("malformed JSON"),
            "{}",
            diags[0].message
        );
    }

    #[test]
    fn type_error_names_path_and_line() {
        let text =
            "{\"vms\": [\n  {\"vmid\": 1001, \"name\": \"a\",\n   \"memory_mb\": \"4096\"}\n]}";
        let (value, diags) = run::<VmFile>(FileKind::Vm, text);
        assert!(value.is_none());
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].json_path, "vms[0].memory_mb");
        assert_eq!(diags[0].line, Some(3));
        assert!(
            diags[0].message.contains("invalid type: string \"4096\""),
            "{}",
            diags[0].message
        );
        assert_eq!(
            diags[0].help.as_deref(),
            Some("write the number without quotes")
        );
    }

    #[test]
    fn missing_field_points_at_the_object() {
        let text = "{\"vms\": [\n  {\"vmid\": 1001,\n   \"cores\": 2\n  }\n]}";
        let (_, diags) = run::<VmFile>(FileKind::Vm, text);
        assert_eq!(diags[0].message, "missing field `name`");
        assert_eq!(diags[0].json_path, "vms[0]");
        assert_eq!((diags[0].line, diags[0].column), (Some(2), Some(3)));
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let text = "{\"lxc_configs\": {},\n \"lxc_configs\": {}}";
        let (_, diags) = run::<LxcFile>(FileKind::Lxc, text);
        assert_eq!(diags.len(), 1, "{diags:#?}");
        assert_eq!(diags[0].message, "duplicate key `lxc_configs`");
        assert_eq!(diags[0].line, Some(2));
    }
}
