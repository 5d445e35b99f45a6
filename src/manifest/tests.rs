//! Loading whole sites: the seed fixture, the example sites, and small sites built in a
//! temp dir to show each kind of diagnostic.

use serde_json::{Value, json};
use tempfile::TempDir;

use super::*;

const SEED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/fixtures/phoenix-seed"
);
const EXAMPLE: &str = env!("CARGO_MANIFEST_DIR");
const MINIMAL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/minimal");

fn all_diagnostics(result: Result<Loaded, ManifestError>) -> Vec<Diagnostic> {
    match result {
        Ok(loaded) => loaded.diagnostics,
        Err(ManifestError::Invalid { diagnostics }) => diagnostics,
        Err(err) => panic!("unexpected error: {err:?}"),
    }
}

fn errors(diagnostics: &[Diagnostic]) -> Vec<&Diagnostic> {
    diagnostics.iter().filter(|d| d.is_error()).collect()
}

fn find<'a>(diagnostics: &'a [Diagnostic], json_path: &str) -> &'a Diagnostic {
    diagnostics
        .iter()
        .find(|d| d.json_path == json_path)
        .unwrap_or_else(|| panic!("no diagnostic at {json_path}: {diagnostics:#?}"))
}

/// A valid three-container site that tests change piece by piece.
struct Fixture {
    hypervisor: Value,
    lxc: Value,
    vms: Value,
    extra: Vec<(String, String)>,
}

impl Fixture {
    fn new() -> Self {
        let container = |name: &str, ip: &str, mac: &str| {
            json!({
                "name": name,
                "memory_mb": 512,
                "template": "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
                "storage_pool": "local-lvm",
                "storage_size_gb": 8,
                "network_config": {"name": "eth0", "bridge": "vmbr0", "ip": ip, "gw": "192.0.2.1"},
                "mac_address": mac,
            })
        };
        Fixture {
            hypervisor: json!({
                "domain_name": "lab.example.internal",
                "network": {"interfaces": {"name": "vmbr0", "address": "192.0.2.13/24", "gateway": "192.0.2.1"}},
            }),
            lxc: json!({"lxc_configs": {
                "201": container("web", "192.0.2.21/24", "BC:24:11:00:02:01"),
                "202": container("db", "192.0.2.22/24", "BC:24:11:00:02:02"),
                "203": container("cache", "192.0.2.23/24", "BC:24:11:00:02:03"),
            }}),
            vms: json!({"vms": []}),
            extra: Vec::new(),
        }
    }

    fn lxc(&mut self, ctid: &str) -> &mut Value {
        &mut self.lxc["lxc_configs"][ctid]
    }

    fn file(mut self, path: &str, text: &str) -> Self {
        self.extra.push((path.to_owned(), text.to_owned()));
        self
    }

    fn write(&self) -> TempDir {
        let dir = tempfile::tempdir().unwrap();
        let mut files = vec![
            (HYPERVISOR_FILE.to_owned(), pretty(&self.hypervisor)),
            (LXC_FILE.to_owned(), pretty(&self.lxc)),
            (VM_FILE.to_owned(), pretty(&self.vms)),
        ];
        files.extend(self.extra.iter().cloned());
        for (path, text) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }

    fn load(&self) -> Vec<Diagnostic> {
        let dir = self.write();
        all_diagnostics(load(dir.path()))
    }
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap()
}

// -- real sites ------------------------------------------------------------------------

#[test]
fn seed_loads_without_errors_and_lists_its_duplicate_rules() {
    let loaded = load(Path::new(SEED)).unwrap_or_else(|err| match err {
        ManifestError::Invalid { diagnostics } => panic!(
            "{}",
            diagnostics
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n\n")
        ),
        other => panic!("{other:?}"),
    });
    let d = &loaded.diagnostics;
    assert!(errors(d).is_empty());

    let dup = find(d, r#"lxc_configs."101".firewall.rules[3]"#);
    assert_eq!(
        dup.message,
        "duplicate firewall rule (same as rule 2): out ACCEPT tcp 80 -> 10.0.0.12"
    );
    assert_eq!(dup.file, Path::new(LXC_FILE));
    assert!(dup.line.is_some());
    for third in [2, 3] {
        let dup = find(d, &format!(r#"lxc_configs."103".firewall.rules[{third}]"#));
        assert_eq!(
            dup.message,
            "duplicate firewall rule (same as rule 1): out ACCEPT tcp 80 -> 10.0.0.153"
        );
    }
    assert_eq!(
        find(d, r#"lxc_configs."102".firewall.rules[2]"#).message,
        "firewall rule shadowed by rule 1: in ACCEPT tcp 80 from 10.0.0.10"
    );
    assert_eq!(
        find(d, "vms[2].firewall.rules[2]").message,
        "duplicate firewall rule (same as rule 1): in ACCEPT tcp 9001 from 10.0.0.13"
    );
    let qdrant = find(d, "environments.production.firewall_rules[0]");
    assert_eq!(qdrant.file, Path::new("stacks/qdrant_service/phoenix.json"));
    assert_eq!(
        qdrant.message,
        "duplicate firewall rule (same as VM 1002's rule 4): in ACCEPT tcp 6333"
    );
    assert!(
        find(d, "portainer_api.admin_password")
            .help
            .as_deref()
            .unwrap()
            .contains("PHOENIX_PORTAINER_PASSWORD")
    );
    // Every key the seed writes is known.
    assert!(
        !d.iter().any(|d| d.message.contains("not used by phoenix")),
        "{d:#?}"
    );

    let site = &loaded.site;
    assert_eq!(site.stacks.len(), 3);
    assert_eq!(site.certificates.len(), 3);
    assert_eq!(site.guest_kind(101), Some(GuestKind::Lxc));
    assert_eq!(site.guest_kind(1002), Some(GuestKind::Vm));
    assert_eq!(site.guest_kind(5), None);
    let ids: Vec<u32> = site.guest_ids().iter().map(|(id, _)| *id).collect();
    assert_eq!(
        ids,
        [
            101, 102, 103, 801, 802, 900, 901, 910, 911, 912, 914, 917, 1001, 1002, 9000
        ]
    );
    assert_eq!(
        site.lxc(901).and_then(|c| c.clone_from_ctid),
        Some(files::GuestId(900))
    );
    assert_eq!(site.vms.vms[2].docker_stacks[0].name, "qdrant_service");
    assert!(site.hypervisor.cluster_firewall().is_some());
}

#[test]
fn example_sites_have_no_diagnostics() {
    for root in [EXAMPLE, MINIMAL] {
        let loaded = load(Path::new(root)).unwrap_or_else(|err| panic!("{root}: {err:?}"));
        assert_eq!(loaded.diagnostics, [], "{root}");
    }
    let minimal = load(Path::new(MINIMAL)).unwrap().site;
    assert_eq!(minimal.guest_ids().len(), 3);
    assert!(minimal.vms.vms.is_empty());
    assert!(minimal.stacks_config.is_none());
    assert!(minimal.certificates.is_empty());
}

// -- loading rules -----------------------------------------------------------------------

#[test]
fn fixture_is_clean() {
    assert_eq!(Fixture::new().load(), []);
}

#[test]
fn malformed_json_names_file_line_and_column() {
    let d = Fixture::new()
        .file(
            CERTIFICATES_FILE,
            "[\n  {\"common_name\": \"a\"\n   \"cert_path\": \"/x\"}\n]",
        )
        .load();
    assert_eq!(d.len(), 1, "{d:#?}");
    assert_eq!(d[0].file, Path::new(CERTIFICATES_FILE));
    assert!(
        d[0].message.starts_with("malformed JSON"),
        "{}",
        d[0].message
    );
    assert_eq!((d[0].line, d[0].column), (Some(3), Some(4)));
}

#[test]
fn type_error_names_json_path_and_line() {
    let text = "{\"lxc_configs\": {\n  \"201\": {\n    \"name\": \"web\",\n    \"memory_mb\": \"lots\"\n  }\n}}";
    let mut fixture = Fixture::new();
    fixture.lxc = json!({"lxc_configs": {}});
    let d = fixture.file(LXC_FILE, text).load();
    assert_eq!(d.len(), 1, "{d:#?}");
    assert_eq!(d[0].json_path, r#"lxc_configs."201".memory_mb"#);
    assert_eq!(d[0].line, Some(4));
    assert!(
        d[0].message.starts_with("invalid type: string \"lots\""),
        "{}",
        d[0].message
    );
    assert!(
        d[0].to_string().contains(&format!("--> {LXC_FILE}:4:")),
        "{}",
        d[0]
    );
}

#[test]
fn unknown_key_is_a_warning_with_its_path() {
    let mut fixture = Fixture::new();
    fixture.lxc("202")["memroy_mb"] = json!(1);
    fixture.lxc("201")["colour"] = json!("red");
    fixture.lxc("203")["colour"] = json!("blue");
    fixture.lxc("201")["$schema"] = json!("ignored silently");
    let d = fixture.load();
    assert!(errors(&d).is_empty(), "{d:#?}");
    assert_eq!(d.len(), 2, "{d:#?}");
    let colour = find(&d, r#"lxc_configs."201".colour"#);
    assert_eq!(colour.severity, Severity::Warning);
    assert_eq!(
        colour.message,
        r#"key `colour` is not used by phoenix (2 places, first at lxc_configs."201".colour)"#
    );
    assert!(colour.line.is_some());
    let memroy = find(&d, r#"lxc_configs."202".memroy_mb"#);
    assert_eq!(memroy.message, "key `memroy_mb` is not used by phoenix");
    assert_eq!(memroy.help.as_deref(), Some("did you mean `memory_mb`?"));
}

#[test]
fn missing_required_file_says_what_a_minimal_one_looks_like() {
    let dir = Fixture::new().write();
    std::fs::remove_file(dir.path().join(VM_FILE)).unwrap();
    let d = all_diagnostics(load(dir.path()));
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].file, Path::new(VM_FILE));
    assert_eq!(d[0].message, format!("required file {VM_FILE} is missing"));
    assert!(d[0].help.as_deref().unwrap().contains(r#"{"vms": []}"#));
}

#[test]
fn missing_etc_is_one_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = all_diagnostics(load(dir.path()));
    assert_eq!(d.len(), 1);
    assert!(
        d[0].message.contains("no etc/ directory"),
        "{}",
        d[0].message
    );
}

#[test]
fn errors_in_several_files_are_all_reported() {
    let mut fixture = Fixture::new();
    fixture
        .hypervisor
        .as_object_mut()
        .unwrap()
        .remove("domain_name");
    let d = fixture
        .file(
            STACKS_CONFIG_FILE,
            "{\"docker_stacks\": {\"a\": {\"environments\": 3}}}",
        )
        .file(VM_FILE, "{\"vms\": [}")
        .load();
    let files: Vec<&Path> = errors(&d).iter().map(|d| d.file.as_path()).collect();
    assert_eq!(
        files,
        [
            Path::new(HYPERVISOR_FILE),
            Path::new(VM_FILE),
            Path::new(STACKS_CONFIG_FILE)
        ],
        "{d:#?}"
    );
    assert_eq!(d[0].message, "missing field `domain_name`");
}

#[test]
fn invalid_result_keeps_warnings_and_counts_errors() {
    let mut fixture = Fixture::new();
    fixture.lxc("201")["memory_mb"] = json!(0);
    fixture.lxc("202")["colour"] = json!(1);
    let dir = fixture.write();
    let err = load(dir.path()).unwrap_err();
    assert_eq!(err.to_string(), "1 error(s) in the site manifests");
    let ManifestError::Invalid { diagnostics } = err else {
        panic!()
    };
    assert_eq!(diagnostics.len(), 2);
}

#[test]
fn ctid_keys_must_be_numeric_and_in_range() {
    let mut fixture = Fixture::new();
    let configs = fixture.lxc["lxc_configs"].as_object_mut().unwrap();
    let web = configs.remove("201").unwrap();
    let db = configs.remove("202").unwrap();
    let cache = configs.remove("203").unwrap();
    configs.insert("web".into(), web);
    configs.insert("99".into(), db);
    configs.insert("0203".into(), cache);
    let d = fixture.load();
    assert_eq!(errors(&d).len(), 3, "{d:#?}");
    assert_eq!(
        find(&d, r#"lxc_configs.web"#).message,
        "container key `web` is not a ctid"
    );
    assert_eq!(
        find(&d, r#"lxc_configs."99""#).message,
        "ctid 99 is out of range"
    );
    assert_eq!(
        find(&d, r#"lxc_configs."0203""#).message,
        "ctid `0203` has a leading zero"
    );
}

#[test]
fn duplicate_ctid_keys_are_an_error() {
    let fixture = Fixture::new();
    let web = serde_json::to_string(&fixture.lxc["lxc_configs"]["201"]).unwrap();
    let text = format!("{{\"lxc_configs\": {{\n\"201\": {web},\n\"201\": {web}\n}}}}");
    let d = fixture.file(LXC_FILE, &text).load();
    assert_eq!(errors(&d).len(), 1, "{d:#?}");
    let dup = errors(&d)[0];
    assert_eq!(dup.message, "duplicate key `201`");
    assert_eq!(dup.line, Some(3));
}

// -- lints -------------------------------------------------------------------------------

#[test]
fn dependency_cycle_is_an_error() {
    let mut fixture = Fixture::new();
    fixture.lxc("201")["dependencies"] = json!(["203"]);
    fixture.lxc("203")["dependencies"] = json!([202]);
    fixture.lxc("202")["dependencies"] = json!(["201"]);
    let d = fixture.load();
    assert_eq!(d.len(), 1, "{d:#?}");
    assert_eq!(d[0].severity, Severity::Error);
    assert_eq!(d[0].message, "dependency cycle: 201 -> 203 -> 202 -> 201");
    assert_eq!(d[0].json_path, r#"lxc_configs."201".dependencies[0]"#);
    assert!(d[0].line.is_some());
}

#[test]
fn cycle_through_a_clone_and_a_vm() {
    let mut fixture = Fixture::new();
    fixture.lxc("201")["dependencies"] = json!(["1001"]);
    fixture.vms = json!({"vms": [{"vmid": 1001, "name": "vm", "dependencies": ["201"]}]});
    let d = fixture.load();
    assert_eq!(
        errors(&d)[0].message,
        "dependency cycle: 201 -> 1001 -> 201"
    );

    let mut fixture = Fixture::new();
    fixture.lxc("201")["dependencies"] = json!(["201"]);
    assert_eq!(
        errors(&fixture.load())[0].message,
        "dependency cycle: 201 -> 201"
    );
}

#[test]
fn unknown_dependency_and_clone_source_are_warnings() {
    let mut fixture = Fixture::new();
    fixture.lxc("201")["dependencies"] = json!(["555"]);
    let web = fixture.lxc("202").as_object_mut().unwrap();
    web.remove("template");
    web.insert("clone_from_ctid".into(), json!("950"));
    let d = fixture.load();
    assert!(errors(&d).is_empty(), "{d:#?}");
    assert!(
        find(&d, r#"lxc_configs."201".dependencies[0]"#)
            .message
            .contains("guest 555")
    );
    assert!(
        find(&d, r#"lxc_configs."202".clone_from_ctid"#)
            .message
            .contains("clones guest 950")
    );
}

#[test]
fn cloning_a_vm_into_a_container_is_an_error() {
    let mut fixture = Fixture::new();
    let web = fixture.lxc("201").as_object_mut().unwrap();
    web.remove("template");
    web.insert("clone_from_ctid".into(), json!(9000));
    fixture.vms = json!({"vms": [{"vmid": 9000, "name": "tpl", "is_template": true}]});
    let d = fixture.load();
    assert_eq!(
        errors(&d)[0].message,
        "clone_from_ctid 9000 is a VM, not a container"
    );
}

#[test]
fn same_ip_hostname_or_mac_are_warnings() {
    let mut fixture = Fixture::new();
    fixture.lxc("202")["network_config"]["ip"] = json!("192.0.2.21/16");
    fixture.lxc("203")["name"] = json!("WEB");
    fixture.lxc("203")["mac_address"] = json!("bc:24:11:00:02:01");
    fixture.vms = json!({"vms": [
        {"vmid": 1001, "name": "vm", "network_config": {"ip": "192.0.2.13/24"}},
        {"vmid": 1002, "name": "vm2", "network_config": {"ip": "dhcp"}},
        {"vmid": 1003, "name": "vm3", "network_config": {"ip": "dhcp"}},
    ]});
    let d = fixture.load();
    assert!(errors(&d).is_empty(), "{d:#?}");
    assert_eq!(d.len(), 4, "{d:#?}");
    assert_eq!(
        find(&d, r#"lxc_configs."202".network_config.ip"#).message,
        "IP address 192.0.2.21 is also used by container 201 (web)"
    );
    assert_eq!(
        find(&d, r#"lxc_configs."203".name"#).message,
        "hostname `WEB` is also used by container 201 (web)"
    );
    assert_eq!(
        find(&d, r#"lxc_configs."203".mac_address"#).message,
        "MAC address BC:24:11:00:02:01 is also used by container 201 (web)"
    );
    assert_eq!(
        find(&d, "vms[0].network_config.ip").message,
        "IP address 192.0.2.13 is also used by the Proxmox host"
    );
}

#[test]
fn sanity_errors() {
    let mut fixture = Fixture::new();
    fixture.lxc("201")["memory_mb"] = json!(0);
    fixture.lxc("201")["storage_size_gb"] = json!(0);
    fixture.lxc("202")["clone_from_ctid"] = json!("201");
    fixture
        .lxc("203")
        .as_object_mut()
        .unwrap()
        .remove("template");
    fixture.lxc("203")["network_config"]["ip"] = json!("192.0.2.300/24");
    fixture.lxc("203")["mac_address"] = json!("BC:24:11:00:02");
    fixture.lxc("202")["network_config"]["ip"] = json!("192.0.2.22");
    fixture.lxc("201")["mac_address"] = json!("01:00:5E:00:00:01");
    fixture.vms = json!({"vms": [{"vmid": 1001, "name": "vm", "memory_mb": 0, "network_config": {"ip": "manual"}}]});
    let d = fixture.load();
    let messages: Vec<(&str, &str)> = errors(&d)
        .iter()
        .map(|d| (d.json_path.as_str(), d.message.as_str()))
        .collect();
    for expected in [
        (r#"lxc_configs."201".memory_mb"#, "memory_mb is 0"),
        (
            r#"lxc_configs."201".storage_size_gb"#,
            "storage_size_gb is 0",
        ),
        (
            r#"lxc_configs."201".mac_address"#,
            "mac_address `01:00:5E:00:00:01` is a multicast address",
        ),
        (
            r#"lxc_configs."202".clone_from_ctid"#,
            "container has both `template` and `clone_from_ctid`",
        ),
        (
            r#"lxc_configs."202".network_config.ip"#,
            "malformed ip `192.0.2.22`",
        ),
        (
            r#"lxc_configs."203""#,
            "container 203 has neither `template` nor `clone_from_ctid`",
        ),
        (
            r#"lxc_configs."203".network_config.ip"#,
            "malformed ip `192.0.2.300/24`",
        ),
        (
            r#"lxc_configs."203".mac_address"#,
            "malformed mac_address `BC:24:11:00:02`",
        ),
        ("vms[0].memory_mb", "memory_mb is 0"),
        ("vms[0].network_config.ip", "malformed ip `manual`"),
    ] {
        assert!(
            messages.contains(&expected),
            "missing {expected:?} in {messages:#?}"
        );
    }
    assert_eq!(messages.len(), 10, "{messages:#?}");
}

#[test]
fn vm_ids_must_be_unique_across_kinds() {
    let mut fixture = Fixture::new();
    fixture.vms = json!({"vms": [
        {"vmid": 201, "name": "a"},
        {"vmid": 1001, "name": "b"},
        {"vmid": 1001, "name": "c"},
        {"vmid": 42, "name": "d"},
    ]});
    let d = fixture.load();
    let messages: Vec<&str> = errors(&d).iter().map(|d| d.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "id 201 is both a container and a VM",
            "vmid 1001 is declared twice (also at vms[1])",
            "vmid 42 is out of range"
        ]
    );
}

#[test]
fn firewall_duplicates_shadowing_and_stack_rules() {
    let rule = |t: &str, port: Value, source: &str, comment: &str| json!({"type": t, "action": "ACCEPT", "proto": "tcp", "port": port, "source": source, "comment": comment});
    let mut fixture = Fixture::new();
    fixture.lxc("201")["firewall"] = json!({"enabled": true, "rules": [
        rule("in", json!("443, 80"), "192.0.2.1", "a"),
        rule("in", json!(80), "192.0.2.1", "shadowed"),
        rule("in", json!("80,443"), "192.0.2.1", "duplicate"),
        rule("in", json!("8080"), "192.0.2.1", "different port"),
        {"type": "in", "action": "ACCEPT", "proto": "tcp", "port": "443", "source": "192.0.2.1", "enable": 0},
    ]});
    fixture.vms = json!({"vms": [{"vmid": 1001, "name": "vm", "docker_stacks": ["app", {"name": "nope"}],
        "firewall": {"rules": [rule("in", json!("9000"), "192.0.2.5", "vm")]}}]});
    let stack = json!({"environments": {"production": {"firewall_rules": [rule("in", json!("9000"), "192.0.2.5", "stack")]}}});
    let d = fixture
        .file("stacks/app/phoenix.json", &pretty(&stack))
        .file("stacks/app/docker-compose.yml", "services: {}\n")
        .file("stacks/half/phoenix.json", "{}")
        .load();
    assert!(errors(&d).is_empty(), "{d:#?}");
    assert_eq!(
        find(&d, r#"lxc_configs."201".firewall.rules[1]"#).message,
        "firewall rule shadowed by rule 0: in ACCEPT tcp 80 from 192.0.2.1"
    );
    assert_eq!(
        find(&d, r#"lxc_configs."201".firewall.rules[2]"#).message,
        "duplicate firewall rule (same as rule 0): in ACCEPT tcp 80,443 from 192.0.2.1"
    );
    let stack_dup = find(&d, "environments.production.firewall_rules[0]");
    assert_eq!(stack_dup.file, Path::new("stacks/app/phoenix.json"));
    assert_eq!(
        stack_dup.message,
        "duplicate firewall rule (same as VM 1001's rule 0): in ACCEPT tcp 9000 from 192.0.2.5"
    );
    assert!(
        find(&d, "vms[0].docker_stacks[1]")
            .message
            .contains("stack `nope`")
    );
    assert!(
        d.iter()
            .any(|d| d.file == Path::new("stacks/half/phoenix.json")
                && d.message == "stack `half` has no docker-compose.yml, so it is not a stack")
    );
    assert_eq!(d.len(), 5, "{d:#?}");
}

#[test]
fn invalid_firewall_rule_type_is_an_error() {
    let mut fixture = Fixture::new();
    fixture.lxc("201")["firewall"] =
        json!({"rules": [{"type": "IN", "action": "ACCEPT"}, {"type": "out", "action": "ALLOW"}]});
    let d = fixture.load();
    let messages: Vec<&str> = errors(&d).iter().map(|d| d.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "firewall rule type `IN` is not in, out or group",
            "firewall rule action `ALLOW` is not ACCEPT, DROP or REJECT"
        ]
    );
}

#[test]
fn secrets_in_clear_are_warnings() {
    let mut fixture = Fixture::new();
    fixture.hypervisor["users"] = json!({"username": "admin", "password_hash": "$6$abc"});
    fixture.hypervisor["portainer_api"] =
        json!({"admin_user": "admin", "admin_password": "hunter2", "portainer_hostname": "p"});
    let stack = json!({"environments": {"production": {"variables": [
        {"name": "API_TOKEN", "value": "t"}, {"name": "API_PORT", "value": 8000}, {"name": "DB_PASS", "value": ""}
    ]}}});
    let d = fixture
        .file("stacks/app/phoenix.json", &pretty(&stack))
        .file("stacks/app/docker-compose.yml", "services: {}\n")
        .load();
    let paths: Vec<&str> = d.iter().map(|d| d.json_path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "users.password_hash",
            "portainer_api.admin_password",
            "environments.production.variables[0].value"
        ],
        "{d:#?}"
    );
    assert!(d.iter().all(|d| d.severity == Severity::Warning));
}

#[test]
fn ctid_key_parsing() {
    use super::lint::parse_ctid_key;
    assert_eq!(parse_ctid_key("101"), Ok(101));
    assert!(parse_ctid_key("1000000000").is_err());
    assert!(parse_ctid_key("99999999999").is_err());
}

#[test]
fn broken_stack_manifest_is_an_error_without_follow_on_noise() {
    let mut fixture = Fixture::new();
    fixture.vms = json!({"vms": [{"vmid": 1001, "name": "vm", "docker_stacks": ["app"]}]});
    let d = fixture
        .file("stacks/app/phoenix.json", "{\"environments\": []}")
        .file("stacks/app/docker-compose.yml", "services: {}\n")
        .load();
    assert_eq!(d.len(), 1, "{d:#?}");
    assert_eq!(d[0].file, Path::new("stacks/app/phoenix.json"));
    assert_eq!(d[0].json_path, "environments");
    assert!(d[0].is_error());
}

#[test]
fn stack_env_files_load_and_bad_lines_and_undeployed_files_are_named() {
    let d = Fixture::new()
        .file("stacks/app/docker-compose.yml", "services:\n  app:\n    image: x\n")
        .file(
            "stacks/app/phoenix.json",
            r#"{"environments": {"production": {"files": [{"source": "a", "destination_in_container": "/a"}]}}}"#,
        )
        .file("stacks/app/configs/prod.env", "# ok\nAPI_PORT=8000\nAPI_TOKEN=abc\n")
        .load();
    let clear = d
        .iter()
        .find(|d| d.file.ends_with("configs/prod.env"))
        .expect("the clear-text secret is named");
    assert!(
        !clear.is_error() && clear.message.contains("line 3: variable `API_TOKEN`"),
        "{clear:?}"
    );
    assert!(
        find(&d, "environments.production.files[0]")
            .message
            .contains("does not deploy a stack's `files` yet")
    );
    let d = Fixture::new()
        .file(
            "stacks/app/docker-compose.yml",
            "services:\n  app:\n    image: x\n",
        )
        .file("stacks/app/phoenix.json", "{}")
        .file("stacks/app/configs/test.env", "API_PORT 8001\n")
        .load();
    let bad = d
        .iter()
        .find(|d| d.file.ends_with("configs/test.env"))
        .expect("the bad env file is named");
    assert!(bad.is_error() && bad.message.contains("line 1"), "{bad:?}");
}
