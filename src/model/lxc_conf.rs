//! `lxc_conf.<ctid>`: what a container needs in its config file that the
//! Proxmox API cannot set: raw `lxc.*` lines, and bind mount points (the API
//! lets only `root@pam` itself set those, never an API token). phoenix writes
//! them into `/etc/pve/nodes/<node>/lxc/<ctid>.conf` through the host
//! transport (`providers/host/lxc_conf.rs`; decision 0016), and shows every
//! line it adds or removes in the plan.
//!
//! | attribute     | from the manifest | live (the config file) |
//! |---------------|-------------------|------------------------|
//! | `lines`       | `lxc_options` (`key=value` or `key:value`, written `key: value`), `apparmor_profile` (+ nesting lines when `apparmor_manages_nesting` and the profile is not `unconfined`), `gpu_assignment` (device allows and `/dev/nvidia*` mount entries), `id_maps` (complete `lxc.idmap` ranges around each mapping) | every `lxc.*` line of the current config (not of snapshots), in order |
//! | `bind_mounts` | `mount_points`: `<host_path> -> <container_path>`, sorted by container path | every `mpN` whose volume is a host path |
//!
//! phoenix owns every raw line and bind mount of a container whose manifest
//! names any: one added by hand is drift, removed by the next apply. A
//! container whose manifest names none has no `lxc_conf` resource, and its
//! file is never touched. The lines take effect when the container starts:
//! an apply that changes them restarts a running container (the plan says
//! so). The host directories of the bind mounts are created (and given their
//! `owner_uid`/`owner_gid`, shifted by 100000 in an unprivileged container)
//! when the mounts are written; their ownership is not compared afterwards.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::{Address, Attrs, DesiredResource, Kind, KindSchema, LiveObject};
use crate::manifest::files::{IdMap, LxcConfig, MountPoint};
use crate::manifest::{Diagnostic, Severity, Site};

pub const KIND: &str = "lxc_conf";
const LXC_FILE: &str = "etc/phoenix_lxc_configs.json";
/// Where an unprivileged container's ids start on the host (PVE's default map).
pub const SHIFT: u32 = 100_000;
const ID_RANGE: u32 = 65_536;
/// The NVIDIA devices every GPU container gets, and PVE's character majors
/// for them: 195 is fixed by the driver, nvidia-uvm's is dynamic (243 on the
/// seed's host): the plan reminds to check it.
const NVIDIA_MAJORS: [u32; 2] = [195, 243];
const NVIDIA_DEVICES: [&str; 3] = ["nvidiactl", "nvidia-uvm", "nvidia-uvm-tools"];

pub static SCHEMA: KindSchema = KindSchema {
    kind: KIND,
    provider: "host",
    force_new: &[],
    grow_only: &[],
    sensitive: &[],
    destroy_protected: false,
    keep_on_delete: false,
    update_notes,
};

/// The lines act at the container's next start: the apply restarts a running one.
fn update_notes(_changed: &[String], live: &Attrs) -> Vec<String> {
    match live.get("guest_status").and_then(Value::as_str) {
        Some("running") => vec!["restarts the container so the new lines take effect".into()],
        _ => vec!["takes effect when the container next starts".into()],
    }
}

pub struct LxcConfKind;

impl Kind for LxcConfKind {
    fn schema(&self) -> &'static KindSchema {
        &SCHEMA
    }

    fn destroyed_with_guest(&self) -> bool {
        true
    }

    /// Everything phoenix writes is in the file already when an adopted
    /// container was set up by the bash scripts: nothing to own then.
    fn verifies_existing(&self) -> bool {
        true
    }

    fn observe(&self, desired: &DesiredResource, _live: Option<&LiveObject>) -> Vec<String> {
        desired
            .create
            .get("notes")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn desired(&self, site: &Site) -> Result<Vec<DesiredResource>, Vec<Diagnostic>> {
        let mut out = Vec::new();
        let mut errors = Vec::new();
        for (ctid, cfg) in &site.lxc.lxc_configs {
            match desired_one(ctid, cfg) {
                Ok(Some(r)) => out.push(r),
                Ok(None) => {}
                Err(mut d) => errors.append(&mut d),
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }
}

fn error(ctid: &str, field: &str, message: String, help: &str) -> Diagnostic {
    Diagnostic {
        severity: Severity::Error,
        file: LXC_FILE.into(),
        json_path: format!("lxc_configs.\"{ctid}\".{field}"),
        line: None,
        column: None,
        message,
        help: Some(help.to_string()),
    }
}

fn desired_one(ctid: &str, cfg: &LxcConfig) -> Result<Option<DesiredResource>, Vec<Diagnostic>> {
    let mut errors = Vec::new();
    let mut notes = Vec::new();
    let mut lines = Lines::default();
    for (i, option) in cfg.lxc_options.iter().enumerate() {
        match parse_raw(option) {
            Ok((k, v)) => lines.push(k, v),
            Err(why) => errors.push(error(
                ctid,
                &format!("lxc_options[{i}]"),
                format!("`{option}` is not a raw LXC line: {why}"),
                "write `lxc.<key>=<value>`, e.g. `lxc.apparmor.profile=unconfined`",
            )),
        }
    }
    if let Some(profile) = cfg.apparmor_profile.as_deref() {
        apparmor(ctid, cfg, profile, &mut lines, &mut notes, &mut errors);
    }
    if let Some(gpus) = cfg.gpu_assignment.as_deref() {
        match gpu_indexes(gpus) {
            Ok(idx) if !idx.is_empty() => {
                gpu_lines(&idx, &mut lines);
                notes.push(format!(
                    "GPU lines allow character majors {} and {}: check `grep nvidia /proc/devices` on the host \
                     (nvidia-uvm's major is not fixed)",
                    NVIDIA_MAJORS[0], NVIDIA_MAJORS[1]
                ));
            }
            Ok(_) => {}
            Err(why) => errors.push(error(
                ctid,
                "gpu_assignment",
                format!("`{gpus}`: {why}"),
                "write `none`, or GPU indexes such as `0` or `0,1`",
            )),
        }
    }
    if let Some(maps) = cfg.id_maps.as_deref().filter(|m| !m.is_empty()) {
        match idmap_lines(maps) {
            Ok(idmap) => {
                for v in idmap {
                    lines.push("lxc.idmap".into(), v);
                }
                for m in maps {
                    let file = if m.r#type == "uid" { "subuid" } else { "subgid" };
                    notes.push(format!(
                        "maps container {} {} to host {}: the host's /etc/{file} needs `root:{}:{}`",
                        m.r#type, m.container_id, m.host_id, m.host_id, m.size
                    ));
                }
            }
            Err(why) => errors.push(error(
                ctid,
                "id_maps",
                why,
                "give each mapping `type` (uid or gid), `container_id`, `host_id` and `size`, without overlaps, inside 0..65536",
            )),
        }
    }
    let unprivileged = cfg.unprivileged.unwrap_or(true);
    let mut binds = Vec::new();
    let mut dirs = Vec::new();
    for (i, mp) in cfg.mount_points.iter().flatten().enumerate() {
        match bind_mount(mp) {
            Ok(line) => {
                binds.push((mp.container_path.clone(), line));
                dirs.push(json!({
                    "path": mp.host_path,
                    "owner": owner(mp, unprivileged),
                }));
            }
            Err(why) => errors.push(error(
                ctid,
                &format!("mount_points[{i}]"),
                why,
                "host_path and container_path must be absolute paths without `..`, commas or line breaks",
            )),
        }
    }
    if let Some(dup) = lines.conflict.take() {
        errors.push(error(
            ctid,
            "lxc_options",
            dup,
            "keep one value for the key (apparmor_profile also sets lxc.apparmor.profile)",
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    if lines.list.is_empty() && binds.is_empty() {
        return Ok(None);
    }
    binds.sort();
    let mut attrs = Map::new();
    attrs.insert("lines".into(), json!(lines.text()));
    attrs.insert("bind_mounts".into(), json!(bind_text(&binds)));
    let mut create = Map::new();
    create.insert("dirs".into(), Value::Array(dirs));
    create.insert("unprivileged".into(), json!(unprivileged));
    create.insert("notes".into(), json!(notes));
    Ok(Some(DesiredResource {
        address: Address::new(KIND, ctid),
        attrs,
        create,
        depends_on: vec![Address::new(super::lxc::KIND, ctid)],
    }))
}

/// The raw lines in order, without repeats.
#[derive(Default)]
struct Lines {
    list: Vec<(String, String)>,
    conflict: Option<String>,
}

/// Keys LXC takes once: a second, different value is a mistake in the manifest.
const SINGLE: [&str; 2] = ["lxc.apparmor.profile", "lxc.apparmor.allow_nesting"];

impl Lines {
    fn push(&mut self, key: String, value: String) {
        if self.list.iter().any(|(k, v)| *k == key && *v == value) {
            return;
        }
        if SINGLE.contains(&key.as_str())
            && let Some((_, other)) = self.list.iter().find(|(k, _)| *k == key)
        {
            self.conflict
                .get_or_insert(format!("`{key}` is set to both `{other}` and `{value}`"));
            return;
        }
        self.list.push((key, value));
    }

    fn text(&self) -> String {
        self.list
            .iter()
            .map(|(k, v)| format!("{k}: {v}\n"))
            .collect()
    }
}

/// `lxc.key=value` or `lxc.key: value` (PVE reads both) as `(key, value)`.
pub fn parse_raw(line: &str) -> Result<(String, String), String> {
    if line.contains(['\n', '\r']) {
        return Err("it spans lines".into());
    }
    let at = line
        .find([':', '='])
        .ok_or_else(|| "it has no `=` or `:` between key and value".to_string())?;
    let key = line[..at].trim();
    let value = line[at + 1..].trim();
    let name_ok = key.strip_prefix("lxc.").is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    });
    if !name_ok {
        return Err(format!("the key `{key}` is not an `lxc.*` key"));
    }
    Ok((key.to_string(), value.to_string()))
}

fn apparmor(
    ctid: &str,
    cfg: &LxcConfig,
    profile: &str,
    lines: &mut Lines,
    notes: &mut Vec<String>,
    errors: &mut Vec<Diagnostic>,
) {
    let name_ok = !profile.is_empty()
        && profile
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if !name_ok {
        errors.push(error(
            ctid,
            "apparmor_profile",
            format!("`{profile}` is not an AppArmor profile name"),
            "use `unconfined` or the name of a profile loaded on the host",
        ));
        return;
    }
    lines.push("lxc.apparmor.profile".into(), profile.into());
    if profile != "unconfined" {
        notes.push(format!(
            "AppArmor profile `{profile}` must be loaded on the host (phoenix does not install profiles)"
        ));
        if cfg.apparmor_manages_nesting.unwrap_or(false) {
            lines.push("lxc.apparmor.allow_nesting".into(), "1".into());
            lines.push(
                "lxc.include".into(),
                "/usr/share/lxc/config/nesting.conf".into(),
            );
        }
    }
}

/// `none`, ``, `0`, `0,1`, `0, 1` -> the indexes.
pub fn gpu_indexes(text: &str) -> Result<Vec<u32>, String> {
    let t = text.trim();
    if t.is_empty() || t.eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for part in t.split(',') {
        let n: u32 = part
            .trim()
            .parse()
            .map_err(|_| format!("`{}` is not a GPU index", part.trim()))?;
        if !out.contains(&n) {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

fn gpu_lines(indexes: &[u32], lines: &mut Lines) {
    for major in NVIDIA_MAJORS {
        lines.push(
            "lxc.cgroup2.devices.allow".into(),
            format!("c {major}:* rwm"),
        );
    }
    let devices = NVIDIA_DEVICES
        .iter()
        .map(|d| d.to_string())
        .chain(indexes.iter().map(|i| format!("nvidia{i}")));
    for d in devices {
        lines.push(
            "lxc.mount.entry".into(),
            format!("/dev/{d} dev/{d} none bind,optional,create=file"),
        );
    }
}

/// Complete `lxc.idmap` values for the mappings: PVE's default map
/// (container 0.. to host 100000..) around each given one, for uids and gids,
/// so the container keeps all 65536 ids. The seed only wrote the default map,
/// dropping the mapping it was given.
pub fn idmap_lines(maps: &[IdMap]) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for (letter, ty) in [("u", "uid"), ("g", "gid")] {
        let mut ranges: Vec<&IdMap> = maps.iter().filter(|m| m.r#type == ty).collect();
        ranges.sort_by_key(|m| m.container_id);
        let mut next = 0u32;
        for m in ranges {
            if m.size == 0 {
                return Err(format!("a {ty} mapping of size 0"));
            }
            let end = m.container_id.saturating_add(m.size);
            if m.container_id < next || end > ID_RANGE {
                return Err(format!(
                    "the {ty} mapping of container ids {}..{end} overlaps another or leaves 0..{ID_RANGE}",
                    m.container_id
                ));
            }
            if m.container_id > next {
                out.push(format!(
                    "{letter} {next} {} {}",
                    SHIFT + next,
                    m.container_id - next
                ));
            }
            out.push(format!(
                "{letter} {} {} {}",
                m.container_id, m.host_id, m.size
            ));
            next = end;
        }
        if next < ID_RANGE {
            out.push(format!(
                "{letter} {next} {} {}",
                SHIFT + next,
                ID_RANGE - next
            ));
        }
    }
    for m in maps {
        if m.r#type != "uid" && m.r#type != "gid" {
            return Err(format!("`{}` is not uid or gid", m.r#type));
        }
    }
    Ok(out)
}

fn bind_mount(mp: &MountPoint) -> Result<String, String> {
    for (what, p) in [
        ("host_path", &mp.host_path),
        ("container_path", &mp.container_path),
    ] {
        let bad = !p.starts_with('/')
            || p.contains([',', '\n', '\r', '='])
            || p.split('/').any(|s| s == "..");
        if bad {
            return Err(format!("{what} `{p}` cannot be a bind mount path"));
        }
    }
    Ok(format!("{},mp={}", mp.host_path, mp.container_path))
}

/// `uid:gid` on the host, or null when the manifest gives no owner.
fn owner(mp: &MountPoint, unprivileged: bool) -> Value {
    let shift = if unprivileged { SHIFT } else { 0 };
    match (mp.owner_uid, mp.owner_gid) {
        (None, None) => Value::Null,
        (u, g) => json!(format!(
            "{}:{}",
            u.unwrap_or(0) + shift,
            g.unwrap_or(0) + shift
        )),
    }
}

/// The attribute text: one `host_path -> container_path` per mount, sorted by container path.
fn bind_text(binds: &[(String, String)]) -> String {
    binds
        .iter()
        .map(|(_, line)| {
            let (host, ct) = line.split_once(",mp=").unwrap_or((line, ""));
            format!("{host} -> {ct}\n")
        })
        .collect()
}

/// What a container config file holds that this kind manages.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConfFile {
    /// The raw lines of the current config, in order: `(key, value)`.
    pub raw: Vec<(String, String)>,
    /// `mpN` -> `(host_path, container_path)` for bind mounts.
    pub binds: BTreeMap<String, (String, String)>,
    /// Every `mpN`/`unusedN` index in use, bind or not (a new mount takes a free one).
    pub taken: Vec<u32>,
}

/// Reads the current config (the part before the first `[snapshot]` section).
pub fn parse_conf(text: &str) -> ConfFile {
    let mut out = ConfFile::default();
    for line in text.lines() {
        if line.starts_with('[') {
            break;
        }
        if line.starts_with("lxc.") {
            if let Ok((k, v)) = parse_raw(line) {
                out.raw.push((k, v));
            }
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        if let Some(n) = key.strip_prefix("mp").and_then(|n| n.parse::<u32>().ok()) {
            out.taken.push(n);
            let volume = value.split(',').next().unwrap_or_default();
            if volume.starts_with('/') {
                let ct = value
                    .split(',')
                    .find_map(|p| p.strip_prefix("mp="))
                    .unwrap_or_default();
                out.binds
                    .insert(key.to_string(), (volume.to_string(), ct.to_string()));
            }
        }
    }
    out
}

/// The attributes of a config file as the diff compares them.
pub fn attrs_of(conf: &ConfFile, guest_status: &str) -> Attrs {
    let mut binds: Vec<(String, String)> = conf
        .binds
        .values()
        .map(|(h, c)| (c.clone(), format!("{h},mp={c}")))
        .collect();
    binds.sort();
    let mut a = Map::new();
    a.insert(
        "lines".into(),
        json!(
            conf.raw
                .iter()
                .map(|(k, v)| format!("{k}: {v}\n"))
                .collect::<String>()
        ),
    );
    a.insert("bind_mounts".into(), json!(bind_text(&binds)));
    a.insert("guest_status".into(), json!(guest_status));
    a
}

/// `text` with its raw lines and bind mounts replaced by the wanted ones.
/// Every other line stays where it was, snapshot sections included; a bind
/// mount that stays keeps its `mpN`, a new one takes the lowest free index;
/// raw lines go at the end of the current config, where PVE writes them.
pub fn rewrite(text: &str, want_lines: &str, want_binds: &str) -> String {
    let current = parse_conf(text);
    let wanted: Vec<(String, String)> = want_binds
        .lines()
        .filter_map(|l| l.split_once(" -> "))
        .map(|(h, c)| (h.to_string(), c.to_string()))
        .collect();
    let mut taken: Vec<u32> = current
        .taken
        .iter()
        .copied()
        .filter(|n| !current.binds.contains_key(&format!("mp{n}")))
        .collect();
    let mut kept: BTreeMap<String, String> = BTreeMap::new();
    let mut placed = Vec::new();
    for (key, (h, c)) in &current.binds {
        if wanted.iter().any(|(wh, wc)| wh == h && wc == c) && !placed.contains(&(h, c)) {
            kept.insert(key.clone(), format!("{h},mp={c}"));
            placed.push((h, c));
            if let Some(n) = key.strip_prefix("mp").and_then(|n| n.parse().ok()) {
                taken.push(n);
            }
        }
    }
    let mut new_binds = Vec::new();
    for (h, c) in &wanted {
        if placed.contains(&(h, c)) {
            continue;
        }
        let n = (0u32..).find(|n| !taken.contains(n)).unwrap_or(0);
        taken.push(n);
        new_binds.push(format!("mp{n}: {h},mp={c}"));
    }

    let mut head = Vec::new();
    let mut tail = Vec::new();
    let mut in_snapshot = false;
    for line in text.lines() {
        if line.starts_with('[') {
            in_snapshot = true;
        }
        if in_snapshot {
            tail.push(line.to_string());
            continue;
        }
        if line.starts_with("lxc.") {
            continue;
        }
        if let Some((key, _)) = line.split_once(':')
            && current.binds.contains_key(key.trim())
        {
            if let Some(v) = kept.get(key.trim()) {
                head.push(format!("{}: {v}", key.trim()));
            }
            continue;
        }
        head.push(line.to_string());
    }
    // A blank line ends the current config before the snapshots: new lines go before it.
    while head.last().is_some_and(|l| l.trim().is_empty()) {
        head.pop();
    }
    head.extend(new_binds);
    head.extend(want_lines.lines().map(str::to_string));
    let mut out = head.join("\n");
    out.push('\n');
    if !tail.is_empty() {
        out.push('\n');
        out.push_str(&tail.join("\n"));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed() -> Site {
        crate::render::names::tests::seed()
    }

    fn get(site: &Site, id: &str) -> DesiredResource {
        LxcConfKind
            .desired(site)
            .unwrap()
            .into_iter()
            .find(|r| r.address.name() == id)
            .unwrap()
    }

    #[test]
    fn every_seed_container_with_raw_lines_gets_one() {
        let site = seed();
        let all = LxcConfKind.desired(&site).unwrap();
        assert_eq!(all.len(), site.lxc.lxc_configs.len());
        let r = get(&site, "900");
        assert_eq!(
            r.attrs["lines"],
            json!("lxc.apparmor.profile: unconfined\n")
        );
        assert_eq!(r.attrs["bind_mounts"], json!(""));
        assert_eq!(r.depends_on, [Address::new("lxc", "900")]);
    }

    #[test]
    fn the_gateway_maps_gid_33_and_binds_its_directories() {
        let r = get(&seed(), "101");
        assert_eq!(
            r.attrs["lines"],
            json!(
                "lxc.mount.auto: sys:rw\nlxc.apparmor.profile: unconfined\n\
                 lxc.idmap: u 0 100000 65536\nlxc.idmap: g 0 100000 33\n\
                 lxc.idmap: g 33 33 1\nlxc.idmap: g 34 100034 65502\n"
            )
        );
        assert_eq!(
            r.attrs["bind_mounts"],
            json!(
                "/mnt/pve/quickOS/lxc-persistent-data/101/ssl -> /etc/nginx/ssl\n\
                 /mnt/pve/quickOS/lxc-persistent-data/103/ssl -> /etc/step-ca/ssl\n\
                 /mnt/pve/quickOS/lxc-persistent-data/101/logs -> /var/log/nginx\n"
            )
        );
        let dirs = r.create["dirs"].as_array().unwrap();
        assert_eq!(dirs[0]["owner"], json!("100033:100033"));
        assert_eq!(dirs[1]["owner"], json!("100000:100000"));
        let notes = LxcConfKind.observe(&r, None);
        assert!(
            notes
                .iter()
                .any(|n| n.contains("/etc/subgid needs `root:33:1`")),
            "{notes:?}"
        );
    }

    #[test]
    fn gpus_get_device_allows_and_one_mount_entry_per_index() {
        let r = get(&seed(), "901");
        let lines = r.attrs["lines"].as_str().unwrap();
        assert!(lines.contains("lxc.cgroup2.devices.allow: c 195:* rwm\n"));
        assert!(lines.contains("lxc.cgroup2.devices.allow: c 243:* rwm\n"));
        for d in [
            "nvidiactl",
            "nvidia-uvm",
            "nvidia-uvm-tools",
            "nvidia0",
            "nvidia1",
        ] {
            assert!(
                lines.contains(&format!(
                    "lxc.mount.entry: /dev/{d} dev/{d} none bind,optional,create=file\n"
                )),
                "{d}: {lines}"
            );
        }
        assert!(!lines.contains("nvidia2"));
        assert_eq!(gpu_indexes("0, 1"), Ok(vec![0, 1]));
        assert_eq!(gpu_indexes(" none "), Ok(vec![]));
        assert!(gpu_indexes("gpu0").is_err());
    }

    #[test]
    fn raw_lines_take_either_separator_and_refuse_other_keys() {
        assert_eq!(
            parse_raw("lxc.mount.auto:sys:rw").unwrap(),
            ("lxc.mount.auto".into(), "sys:rw".into())
        );
        assert_eq!(
            parse_raw("lxc.apparmor.profile = unconfined").unwrap(),
            ("lxc.apparmor.profile".into(), "unconfined".into())
        );
        assert!(parse_raw("memory: 512").is_err());
        assert!(parse_raw("lxc.cap.drop").is_err());
        assert!(parse_raw("lxc.a=1\nmp0: /etc,mp=/x").is_err());
    }

    #[test]
    fn bad_values_are_errors_naming_the_field() {
        let mut site = seed();
        let c = site.lxc.lxc_configs.get_mut("900").unwrap();
        c.lxc_options = vec!["memory=4096".into()];
        c.apparmor_profile = Some("other".into());
        c.gpu_assignment = Some("x".into());
        c.mount_points = Some(vec![MountPoint {
            host_path: "/srv/../etc".into(),
            container_path: "/x".into(),
            owner_uid: None,
            owner_gid: None,
        }]);
        let errs = LxcConfKind.desired(&site).unwrap_err();
        let paths: Vec<&str> = errs.iter().map(|d| d.json_path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "lxc_configs.\"900\".lxc_options[0]",
                "lxc_configs.\"900\".gpu_assignment",
                "lxc_configs.\"900\".mount_points[0]",
            ]
        );
        let mut site = seed();
        let c = site.lxc.lxc_configs.get_mut("900").unwrap();
        c.lxc_options = vec!["lxc.apparmor.profile=lxc-default".into()];
        let errs = LxcConfKind.desired(&site).unwrap_err();
        assert!(
            errs[0]
                .message
                .contains("both `lxc-default` and `unconfined`")
        );
    }

    #[test]
    fn idmaps_fill_the_whole_range_and_refuse_overlaps() {
        let m = |ty: &str, c, h, s| IdMap {
            r#type: ty.into(),
            host_id: h,
            container_id: c,
            size: s,
        };
        assert_eq!(
            idmap_lines(&[m("uid", 0, 1000, 1), m("uid", 65535, 2000, 1)]).unwrap(),
            [
                "u 0 1000 1",
                "u 1 100001 65534",
                "u 65535 2000 1",
                "g 0 100000 65536"
            ]
        );
        assert!(idmap_lines(&[m("gid", 10, 1, 5), m("gid", 12, 1, 1)]).is_err());
        assert!(idmap_lines(&[m("gid", 65535, 1, 2)]).is_err());
        assert!(idmap_lines(&[m("pid", 1, 1, 1)]).is_err());
    }

    const CONF: &str = "arch: amd64\nhostname: gw\nmp0: /old,mp=/old\nmp1: local-lvm:vm-101-disk-1,mp=/data,size=8G\n\
                        mp2: /keep,mp=/k\nlxc.apparmor.profile: generated\nlxc.cap.drop: \n\n\
                        [snap1]\narch: amd64\nlxc.apparmor.profile: generated\nmp0: /old,mp=/old\n";

    #[test]
    fn a_rewrite_touches_only_raw_lines_and_bind_mounts() {
        let out = rewrite(
            CONF,
            "lxc.apparmor.profile: unconfined\n",
            "/keep -> /k\n/new -> /n\n",
        );
        assert_eq!(
            out,
            "arch: amd64\nhostname: gw\nmp1: local-lvm:vm-101-disk-1,mp=/data,size=8G\nmp2: /keep,mp=/k\n\
             mp0: /new,mp=/n\nlxc.apparmor.profile: unconfined\n\n\
             [snap1]\narch: amd64\nlxc.apparmor.profile: generated\nmp0: /old,mp=/old\n"
        );
        let conf = parse_conf(&out);
        let a = attrs_of(&conf, "running");
        assert_eq!(a["lines"], json!("lxc.apparmor.profile: unconfined\n"));
        assert_eq!(a["bind_mounts"], json!("/keep -> /k\n/new -> /n\n"));
        // Once right, a rewrite changes nothing.
        assert_eq!(
            rewrite(
                &out,
                "lxc.apparmor.profile: unconfined\n",
                "/keep -> /k\n/new -> /n\n"
            ),
            out
        );
        // Removing everything leaves the rest as it was.
        let bare = rewrite(&out, "", "");
        assert!(bare.starts_with("arch: amd64\nhostname: gw\nmp1: local-lvm"));
        assert!(!parse_conf(&bare).raw.iter().any(|_| true));
        assert!(parse_conf(&bare).binds.is_empty());
    }

    #[test]
    fn update_notes_say_whether_the_container_restarts() {
        let mut live = Map::new();
        live.insert("guest_status".into(), json!("running"));
        assert!(update_notes(&[], &live)[0].contains("restarts"));
        live.insert("guest_status".into(), json!("stopped"));
        assert!(update_notes(&[], &live)[0].contains("next starts"));
    }
}
