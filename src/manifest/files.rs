//! serde types for every file of a site, exactly as the seed system writes them.
//!
//! The seed's files are read as they are (see `docs/decisions/0002-manifest-loading.md`):
//! every key the seed uses has a field here, even the ones phoenix does not act on yet, so
//! that only genuinely unknown keys are reported. What a small site may leave out is an
//! `Option` or defaults to empty. Guest ids appear both as numbers and as strings in the
//! seed, hence [`GuestId`]. Fields marked "phoenix extension" are not in the seed.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Site-relative paths of the files in `etc/`.
pub const HYPERVISOR_FILE: &str = "etc/phoenix_hypervisor_config.json";
pub const LXC_FILE: &str = "etc/phoenix_lxc_configs.json";
pub const VM_FILE: &str = "etc/phoenix_vm_configs.json";
pub const STACKS_CONFIG_FILE: &str = "etc/phoenix_stacks_config.json";
pub const CERTIFICATES_FILE: &str = "etc/certificate-manifest.json";
/// Directory of convention-based stacks: `stacks/<name>/{docker-compose.yml,phoenix.json}`.
pub const STACKS_DIR: &str = "stacks";
pub const STACK_MANIFEST: &str = "phoenix.json";
pub const STACK_COMPOSE: &str = "docker-compose.yml";
/// A stack's env files: `stacks/<name>/configs/<environment>.env`.
pub const STACK_CONFIGS_DIR: &str = "configs";

// ---------------------------------------------------------------------------------------
// Shared value types
// ---------------------------------------------------------------------------------------

/// A Proxmox guest id (ctid or vmid). The seed writes it as a number (`9000`) or as a
/// numeric string (`"900"`); both are accepted, anything else is an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct GuestId(pub u32);

impl fmt::Display for GuestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<u32> for GuestId {
    fn from(id: u32) -> Self {
        GuestId(id)
    }
}

impl<'de> Deserialize<'de> for GuestId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct GuestIdVisitor;

        impl Visitor<'_> for GuestIdVisitor {
            type Value = GuestId;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a guest id: a number such as 101 or a numeric string such as "101""#)
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<GuestId, E> {
                u32::try_from(v)
                    .map(GuestId)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<GuestId, E> {
                u32::try_from(v)
                    .map(GuestId)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<GuestId, E> {
                // `u32::from_str` would accept "+101"; the seed never writes that.
                if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(E::invalid_value(de::Unexpected::Str(v), &self));
                }
                v.parse()
                    .map(GuestId)
                    .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
            }
        }

        deserializer.deserialize_any(GuestIdVisitor)
    }
}

/// Desired run state of a guest (phoenix extension). Absent means running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum GuestStatus {
    #[default]
    Running,
    Stopped,
}

/// A guest's Proxmox firewall: `firewall{enabled, rules[]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GuestFirewall {
    pub enabled: Option<bool>,
    #[serde(default)]
    pub rules: Vec<FirewallRule>,
}

/// One Proxmox firewall rule as the seed writes it (`pvesh` parameter names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FirewallRule {
    /// `in`, `out` or `group`.
    pub r#type: String,
    /// `ACCEPT`, `DROP`, `REJECT`, or a security group name for `type: group`.
    pub action: String,
    pub source: Option<String>,
    pub dest: Option<String>,
    pub proto: Option<String>,
    /// Destination port(s), e.g. `"80,443"` or `"8000:8010"`; a bare number is accepted.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    #[schemars(schema_with = "schema::opt_string_or_number")]
    pub port: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    #[schemars(schema_with = "schema::opt_string_or_number")]
    pub sport: Option<String>,
    pub iface: Option<String>,
    pub r#macro: Option<String>,
    /// Log level (`nolog`, `info`, ...).
    pub log: Option<String>,
    /// `false`/`0` writes the rule disabled.
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    #[schemars(schema_with = "schema::opt_bool_or_01")]
    pub enable: Option<bool>,
    pub comment: Option<String>,
}

/// `traefik_service{name, port}`: a Traefik router/service for the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TraefikService {
    pub name: String,
    pub port: u16,
    /// `http` or `https`: how Traefik talks to the guest (phoenix extension). Default: `https`
    /// for ports 443, 8443 and 9443, else `http`.
    pub scheme: Option<String>,
}

/// `dns_records[]{hostname, ip}` (schema only in the seed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DnsRecord {
    pub hostname: String,
    pub ip: String,
}

// ---------------------------------------------------------------------------------------
// etc/phoenix_hypervisor_config.json
// ---------------------------------------------------------------------------------------

/// `etc/phoenix_hypervisor_config.json`: the host and site-wide settings.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct HypervisorConfig {
    #[serde(rename = "$schema")]
    pub schema: Option<String>,
    pub version: Option<Value>,
    pub author: Option<Value>,
    /// Search domain and suffix of every DNS name, e.g. `internal.thinkheads.ai`.
    pub domain_name: String,
    pub users: Option<AdminUser>,
    pub core_paths: Option<CorePaths>,
    pub timezone: Option<String>,
    pub network: NetworkConfig,
    pub docker: Option<DockerImages>,
    pub nfs: Option<NfsConfig>,
    pub samba: Option<SambaConfig>,
    pub zfs: Option<ZfsConfig>,
    /// Storage ids keyed by the seed's `<pool>_<dataset>` names.
    pub proxmox_storage_ids: Option<BTreeMap<String, String>>,
    pub mount_point_base: Option<String>,
    pub proxmox_defaults: Option<Value>,
    pub tests: Option<Value>,
    pub nvidia_driver: Option<Value>,
    pub behavior: Option<Value>,
    /// Holds the seed's misplaced `firewall` block; see [`HypervisorConfig::cluster_firewall`].
    pub shared_volumes: Option<SharedVolumes>,
    /// Where the `rootesting` branch moved the cluster firewall.
    pub firewall: Option<ClusterFirewall>,
    pub portainer_api: Option<PortainerApi>,
    pub vm_defaults: Option<HypervisorVmDefaults>,
    pub dns_server: Option<DnsServer>,
    pub step_ca: Option<StepCa>,
    pub shared_zfs_volumes: Option<Value>,
    /// How phoenix reaches the Proxmox API (phoenix extension; never secrets).
    pub proxmox: Option<ProxmoxConnection>,
    /// Which containers are the Nginx gateway and Traefik (phoenix extension).
    pub ingress: Option<Ingress>,
}

impl HypervisorConfig {
    /// The datacenter firewall: top-level `firewall` if present (rootesting), otherwise the
    /// seed's `shared_volumes.firewall`.
    pub fn cluster_firewall(&self) -> Option<&ClusterFirewall> {
        self.firewall
            .as_ref()
            .or_else(|| self.shared_volumes.as_ref()?.firewall.as_ref())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct AdminUser {
    pub username: String,
    /// `NOT_SET` (the seed's value) means no password is set.
    pub password_hash: Option<String>,
    pub sudo_access: Option<bool>,
    pub ssh_public_key: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CorePaths {
    pub lxc_config_file: Option<String>,
    pub lxc_config_schema_file: Option<String>,
    pub vm_config_file: Option<String>,
    pub hf_token_file: Option<String>,
    pub docker_token_file: Option<String>,
    pub docker_images_path: Option<String>,
    pub hypervisor_marker_dir: Option<String>,
    pub hypervisor_marker: Option<String>,
}

/// `network`: the host's bridge plus site-wide addresses.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct NetworkConfig {
    pub interfaces: HostInterface,
    /// Read by the seed (default `phoenix`) but never written there.
    pub hostname: Option<String>,
    pub external_registry_url: Option<String>,
    pub portainer_server_ip: Option<String>,
    pub portainer_server_port: Option<u16>,
    pub portainer_agent_port: Option<u16>,
    pub default_subnet: Option<String>,
    pub nfs_server: Option<String>,
    pub fallback_dns: Option<String>,
    // rootesting
    pub public_bridge: Option<String>,
    pub macvlan_vlan_tag: Option<u16>,
    pub public_vlan_tag: Option<u16>,
    pub internal_bridge: Option<InternalBridge>,
}

/// `network.interfaces`: one bridge (the seed writes an object, not a list).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct HostInterface {
    /// Bridge name, e.g. `vmbr0`.
    pub name: String,
    /// Host address in CIDR form, e.g. `10.0.0.13/24`.
    pub address: String,
    pub gateway: Option<String>,
    #[serde(default)]
    pub dns_nameservers: Vec<String>,
}

/// `network.internal_bridge` (rootesting).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct InternalBridge {
    pub name: String,
    pub subnet: Option<String>,
    pub address: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DockerImages {
    pub portainer_server_image: Option<String>,
    pub portainer_agent_image: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct NfsConfig {
    #[serde(default)]
    pub exports: Vec<NfsExport>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct NfsExport {
    pub path: String,
    #[serde(default)]
    pub clients: Vec<String>,
    #[serde(default)]
    pub options: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SambaConfig {
    pub user: Option<String>,
    #[serde(default)]
    pub shares: Vec<SambaShare>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SambaShare {
    pub name: String,
    pub path: String,
    /// Ignored by the seed's script (it reads the three booleans below instead).
    pub options: Option<String>,
    #[serde(default)]
    pub valid_users: Vec<String>,
    pub read_only: Option<bool>,
    pub browsable: Option<bool>,
    pub guest_ok: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ZfsConfig {
    pub arc_max_gb: Option<u64>,
    #[serde(default)]
    pub pools: Vec<ZfsPool>,
    #[serde(default)]
    pub datasets: Vec<ZfsDataset>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ZfsPool {
    pub name: String,
    /// `mirror`, `RAIDZ1`; anything else means a stripe.
    pub raid_level: Option<String>,
    #[serde(default)]
    pub disks: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ZfsDataset {
    pub name: String,
    pub pool: String,
    /// Comma-separated `zfs set` properties, e.g. `recordsize=16K,quota=600G`.
    pub properties: Option<String>,
    /// `zfspool` or `dir`.
    pub proxmox_storage_type: Option<String>,
    /// Comma-separated Proxmox content types, e.g. `images,rootdir`.
    pub proxmox_content_type: Option<String>,
    pub storage_class: Option<String>,
}

/// `shared_volumes`: host paths shared into guests (unused by the seed) and, misplaced
/// here, the cluster firewall.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SharedVolumes {
    pub ssl_certs: Option<SharedVolume>,
    pub nginx_sites: Option<SharedVolume>,
    pub nginx_logs: Option<SharedVolume>,
    pub ollama_models: Option<SharedVolume>,
    pub llamacpp_models: Option<SharedVolume>,
    pub vllm_models: Option<SharedVolume>,
    pub firewall: Option<ClusterFirewall>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SharedVolume {
    pub host_path: String,
    /// ctid -> path in the guest.
    #[serde(default)]
    pub mounts: BTreeMap<String, String>,
}

/// The datacenter firewall (`cluster.fw`): options and global rules.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ClusterFirewall {
    pub enabled: Option<bool>,
    pub default_input_policy: Option<String>,
    pub default_output_policy: Option<String>,
    #[serde(default)]
    pub global_firewall_rules: Vec<FirewallRule>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PortainerApi {
    pub admin_user: String,
    /// Plaintext in the seed; a lint warns about it.
    pub admin_password: Option<String>,
    pub portainer_hostname: String,
    /// rootesting writes an API key back here (`null` until then).
    pub api_key: Option<String>,
}

/// `vm_defaults` of the hypervisor file (not the VM file's).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct HypervisorVmDefaults {
    /// Ubuntu cloud image release, e.g. `noble`.
    pub ubuntu_release: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DnsServer {
    pub enabled: Option<bool>,
    #[serde(default)]
    pub upstream_servers: Vec<String>,
    #[serde(default)]
    pub authoritative_zones: Vec<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct StepCa {
    pub root_ca_name: Option<String>,
    pub intermediate_ca_name: Option<String>,
    pub dns_name: Option<String>,
    pub provisioner_name: Option<String>,
}

/// `ingress` (phoenix extension): the containers that serve the routed hostnames. Without it, the
/// seed's: the gateway is container 101 and Traefik container 102, when both exist.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct Ingress {
    /// `false`: phoenix generates no gateway or Traefik configuration (default `true`).
    pub enabled: Option<bool>,
    /// The Nginx gateway container: TLS for every routed hostname, proxied to Traefik (default 101).
    pub gateway: Option<GuestId>,
    /// The Traefik container: routes each hostname to its guest (default 102).
    pub traefik: Option<GuestId>,
}

/// `proxmox` (phoenix extension): where the API is. Credentials come from the
/// environment, never from the manifest.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct ProxmoxConnection {
    /// e.g. `https://192.0.2.13:8006`.
    pub url: Option<String>,
    /// PVE node name, e.g. `pve1`.
    pub node: Option<String>,
    /// PEM file to trust for the API's certificate.
    pub ca_file: Option<String>,
    /// e.g. `phoenix@pve`.
    pub user: Option<String>,
    /// Token name without the user, e.g. `plan`.
    pub token_id: Option<String>,
}

// ---------------------------------------------------------------------------------------
// etc/phoenix_lxc_configs.json
// ---------------------------------------------------------------------------------------

/// `etc/phoenix_lxc_configs.json`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct LxcFile {
    #[serde(rename = "$schema")]
    pub schema: Option<String>,
    pub nvidia_driver_version: Option<String>,
    pub nvidia_repo_url: Option<String>,
    /// The seed's LXC scripts fall back to this root key for GPU containers.
    pub nvidia_runfile_url: Option<String>,
    /// Keyed by ctid as a string (`"101"`); the loader rejects non-numeric keys.
    pub lxc_configs: BTreeMap<String, LxcConfig>,
}

/// One container of `lxc_configs`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct LxcConfig {
    /// Hostname (`pct --hostname`) and DNS name, case-insensitive.
    pub name: String,
    pub memory_mb: u64,
    pub swap_mb: Option<u64>,
    pub cores: Option<u32>,
    /// Volume id `storage:vztmpl/file` or a host path (seed form). Exclusive with
    /// `clone_from_ctid`.
    pub template: Option<String>,
    pub clone_from_ctid: Option<GuestId>,
    pub storage_pool: String,
    pub storage_size_gb: u64,
    pub network_config: LxcNetworkConfig,
    pub mac_address: Option<String>,
    pub unprivileged: Option<bool>,
    pub start_at_boot: Option<bool>,
    pub boot_order: Option<u32>,
    pub boot_delay: Option<u32>,
    /// Feature scripts run on the host against the guest, e.g. `base_setup`.
    #[serde(default)]
    pub features: Vec<String>,
    /// Joined with commas into `pct set --features`, e.g. `nesting=1`.
    #[serde(default)]
    pub pct_options: Vec<String>,
    /// Raw lines for `/etc/pve/lxc/<ctid>.conf`.
    #[serde(default)]
    pub lxc_options: Vec<String>,
    #[serde(default)]
    pub dependencies: Vec<GuestId>,
    pub firewall: Option<GuestFirewall>,
    pub traefik_service: Option<TraefikService>,
    /// Snapshot taken after provisioning; clones of this container start from it.
    pub template_snapshot_name: Option<String>,
    /// `none`, or GPU indexes such as `0`, `0,1`, `0, 1`.
    pub gpu_assignment: Option<String>,
    pub portainer_role: Option<String>,
    pub id_maps: Option<Vec<IdMap>>,
    pub mount_points: Option<Vec<MountPoint>>,
    pub zfs_volumes: Option<Vec<ZfsVolume>>,
    /// No container of the seed uses it, so its shape is not pinned down.
    pub volumes: Option<Vec<Value>>,
    /// Script under the site's `bin/` run inside the container.
    pub application_script: Option<String>,
    pub bootstrap_ca_url: Option<String>,
    pub apparmor_profile: Option<String>,
    pub apparmor_manages_nesting: Option<bool>,
    pub enable_lifecycle_snapshots: Option<bool>,
    pub trigger_sync_on_completion: Option<bool>,
    pub vllm_engine_config: Option<Value>,
    /// Unused by the seed system (documented there as dead keys).
    pub ports: Option<Vec<String>>,
    pub health_check: Option<Value>,
    pub tests: Option<Value>,
    pub dns_records: Option<Vec<DnsRecord>>,
    /// rootesting: `net1`.
    pub secondary_network_config: Option<LxcNetworkConfig>,
    /// rootesting.
    pub public_interface: Option<Value>,
    /// phoenix extension: Proxmox tags.
    pub tags: Option<Vec<String>>,
    /// phoenix extension: desired run state (absent = running).
    pub status: Option<GuestStatus>,
    /// phoenix extension: `pct --searchdomain` (defaults to the site's `domain_name`).
    pub searchdomain: Option<String>,
    /// phoenix extension: the cluster node to create the container on (default:
    /// PHOENIX_PVE_NODE, else the only node).
    pub node: Option<String>,
}

impl LxcConfig {
    /// `status`, with absent meaning running.
    pub fn desired_status(&self) -> GuestStatus {
        self.status.unwrap_or_default()
    }
}

/// `network_config` of a container (`net0`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LxcNetworkConfig {
    /// Interface name in the guest, e.g. `eth0`.
    pub name: String,
    pub bridge: String,
    /// `10.0.0.10/24`, `dhcp` or `manual`.
    pub ip: String,
    pub gw: Option<String>,
    /// `pct --nameserver` (note the plural; VMs say `nameserver`).
    pub nameservers: Option<String>,
}

/// `id_maps[]` (the seed only acts on their presence).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct IdMap {
    /// `uid` or `gid`.
    pub r#type: String,
    pub host_id: u32,
    pub container_id: u32,
    pub size: u32,
}

/// `mount_points[]`: a host directory bind-mounted into the container.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct MountPoint {
    pub host_path: String,
    pub container_path: String,
    pub owner_uid: Option<u32>,
    pub owner_gid: Option<u32>,
}

/// `zfs_volumes[]`: a new volume allocated on a storage and mounted in the container.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ZfsVolume {
    pub name: String,
    /// A Proxmox storage id despite the name.
    pub pool: String,
    pub size_gb: u64,
    pub mount_point: String,
}

// ---------------------------------------------------------------------------------------
// etc/phoenix_vm_configs.json
// ---------------------------------------------------------------------------------------

/// `etc/phoenix_vm_configs.json`; `{"vms": []}` for a site without VMs.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct VmFile {
    #[serde(rename = "$schema")]
    pub schema: Option<String>,
    pub vm_defaults: Option<VmDefaults>,
    pub vms: Vec<VmConfig>,
}

/// `vm_defaults`: fallbacks for every VM.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct VmDefaults {
    pub template: Option<String>,
    pub cores: Option<u32>,
    pub memory_mb: Option<u64>,
    pub disk_size_gb: Option<u64>,
    pub storage_pool: Option<String>,
    pub network_bridge: Option<String>,
}

/// One VM of `vms[]`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct VmConfig {
    pub vmid: u32,
    pub name: String,
    pub is_template: Option<bool>,
    pub clone_from_vmid: Option<GuestId>,
    /// Cloud image file name, for templates.
    pub template_image: Option<String>,
    pub template_snapshot_name: Option<String>,
    pub cores: Option<u32>,
    pub memory_mb: Option<u64>,
    pub disk_size_gb: Option<u64>,
    pub storage_pool: Option<String>,
    pub network_bridge: Option<String>,
    pub start_at_boot: Option<bool>,
    pub boot_order: Option<u32>,
    pub boot_delay: Option<u32>,
    #[serde(default)]
    pub features: Vec<String>,
    /// `primary`, `agent` or `none`.
    pub portainer_role: Option<String>,
    pub portainer_environment_name: Option<String>,
    pub portainer_agent_hostname: Option<String>,
    #[serde(default)]
    pub dependencies: Vec<GuestId>,
    pub traefik_service: Option<TraefikService>,
    pub network_config: Option<VmNetworkConfig>,
    pub user_config: Option<UserConfig>,
    #[serde(default)]
    pub volumes: Vec<VmVolume>,
    /// Stacks under `stacks/` deployed on this VM.
    #[serde(default)]
    pub docker_stacks: Vec<DockerStackRef>,
    pub firewall: Option<GuestFirewall>,
    pub trigger_sync_on_completion: Option<bool>,
    /// rootesting: `manager` or `worker`.
    pub swarm_role: Option<String>,
    /// rootesting: swarm node labels.
    pub node_labels: Option<NodeLabels>,
    pub dns_records: Option<Vec<DnsRecord>>,
    /// Schema only in the seed.
    pub snapshots: Option<Value>,
    pub count: Option<Value>,
    pub qm_options: Option<Vec<String>>,
    /// phoenix extension: Proxmox tags.
    pub tags: Option<Vec<String>>,
    /// phoenix extension: desired run state (absent = running).
    pub status: Option<GuestStatus>,
    /// phoenix extension: the cluster node to create the VM on (default:
    /// PHOENIX_PVE_NODE, else the only node).
    pub node: Option<String>,
}

impl VmConfig {
    /// `status`, with absent meaning running.
    pub fn desired_status(&self) -> GuestStatus {
        self.status.unwrap_or_default()
    }
}

/// `network_config` of a VM (cloud-init `ipconfig0`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VmNetworkConfig {
    /// `10.0.0.111/24` or `dhcp`.
    pub ip: String,
    pub gw: Option<String>,
    /// Singular here (containers say `nameservers`).
    pub nameserver: Option<String>,
    pub searchdomain: Option<String>,
}

/// `user_config`: the cloud-init user.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct UserConfig {
    pub username: String,
    pub ssh_public_key: Option<String>,
}

/// `volumes[]` of a VM: an NFS mount inside the guest.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct VmVolume {
    /// `nfs`.
    pub r#type: String,
    pub name: Option<String>,
    pub path: String,
    pub mount_point: String,
    pub server: Option<String>,
}

/// An entry of `docker_stacks`: the seed writes a stack name, the seed's schema an object
/// `{name, environment}`. Both are accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DockerStackRef {
    pub name: String,
    /// Environment of the stack's `phoenix.json`; absent means `production`, the only one
    /// the seed ever deploys.
    pub environment: Option<String>,
}

impl DockerStackRef {
    pub const DEFAULT_ENVIRONMENT: &'static str = "production";

    pub fn environment(&self) -> &str {
        self.environment
            .as_deref()
            .unwrap_or(Self::DEFAULT_ENVIRONMENT)
    }
}

impl<'de> Deserialize<'de> for DockerStackRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize, JsonSchema)]
        struct Object {
            name: String,
            environment: Option<String>,
        }

        struct RefVisitor;

        impl<'de> Visitor<'de> for RefVisitor {
            type Value = DockerStackRef;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a stack name or {"name": ..., "environment": ...}"#)
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<DockerStackRef, E> {
                Ok(DockerStackRef {
                    name: v.to_owned(),
                    environment: None,
                })
            }

            // Deserializing the object through the same map keeps serde_ignored's and
            // serde_path_to_error's paths intact (an untagged enum would buffer it).
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<DockerStackRef, A::Error> {
                let object = Object::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(DockerStackRef {
                    name: object.name,
                    environment: object.environment,
                })
            }
        }

        deserializer.deserialize_any(RefVisitor)
    }
}

/// Swarm node labels (rootesting): an object `{"gpu": "false"}` or a list
/// `["gpu=false"]`, read into key -> value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct NodeLabels(pub BTreeMap<String, String>);

impl<'de> Deserialize<'de> for NodeLabels {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LabelsVisitor;

        impl<'de> Visitor<'de> for LabelsVisitor {
            type Value = NodeLabels;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"an object of labels or a list of "key=value" strings"#)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NodeLabels, A::Error> {
                let mut labels = BTreeMap::new();
                while let Some(item) = seq.next_element::<String>()? {
                    let (key, value) = item.split_once('=').unwrap_or((item.as_str(), ""));
                    labels.insert(key.to_owned(), value.to_owned());
                }
                Ok(NodeLabels(labels))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NodeLabels, A::Error> {
                let mut labels = BTreeMap::new();
                while let Some(key) = map.next_key::<String>()? {
                    let value: lenient::Scalar = map.next_value()?;
                    labels.insert(key, value.0);
                }
                Ok(NodeLabels(labels))
            }
        }

        deserializer.deserialize_any(LabelsVisitor)
    }
}

// ---------------------------------------------------------------------------------------
// etc/phoenix_stacks_config.json and stacks/<name>/
// ---------------------------------------------------------------------------------------

/// `etc/phoenix_stacks_config.json` (vestigial on the seed's main branch, the source of
/// variables and labels on rootesting).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct StacksConfigFile {
    #[serde(rename = "$schema")]
    pub schema: Option<String>,
    #[serde(default)]
    pub docker_stacks: BTreeMap<String, StackConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct StackConfig {
    pub description: Option<String>,
    pub compose_file_path: Option<String>,
    #[serde(default)]
    pub environments: BTreeMap<String, StackEnvironment>,
}

/// `stacks/<name>/phoenix.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct StackManifest {
    #[serde(rename = "$schema")]
    pub schema: Option<String>,
    pub description: Option<String>,
    /// Keyed by environment name; the seed only deploys `production`.
    #[serde(default)]
    pub environments: BTreeMap<String, StackEnvironment>,
}

/// One environment of a stack (both in `phoenix.json` and in the stacks config).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct StackEnvironment {
    #[serde(default)]
    pub variables: Vec<StackVariable>,
    #[serde(default)]
    pub files: Vec<StackFile>,
    #[serde(default)]
    pub services: BTreeMap<String, StackService>,
    /// Added to the firewall of every VM that deploys the stack.
    #[serde(default)]
    pub firewall_rules: Vec<FirewallRule>,
}

/// `variables[]`: substituted for `${NAME}` in the compose file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StackVariable {
    pub name: String,
    /// Numbers and booleans are accepted and kept as written.
    #[serde(deserialize_with = "lenient::string")]
    #[schemars(schema_with = "schema::string_or_number")]
    pub value: String,
}

/// `files[]`: a site file copied into the stack's container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StackFile {
    pub source: String,
    pub destination_in_container: String,
}

/// `services.<name>`: extra settings for one compose service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StackService {
    #[serde(default)]
    pub traefik_labels: Vec<String>,
}

/// A stack found under `stacks/<name>/`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Stack {
    /// The directory name.
    pub name: String,
    /// `<site root>/stacks/<name>`.
    pub dir: PathBuf,
    pub manifest: StackManifest,
    /// `docker-compose.yml` as written (not parsed here).
    pub compose: String,
    /// `configs/<name>.env` files, by name (`prod`): variables of an
    /// environment, below its `phoenix.json` variables (see [`Stack::env_file`]).
    #[serde(default)]
    pub env_files: BTreeMap<String, EnvFile>,
}

/// A `KEY=value` file (`docker compose`'s `.env` format, without interpolation).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EnvFile {
    /// `(name, value, line)` in file order.
    pub entries: Vec<(String, String, usize)>,
}

impl EnvFile {
    /// Parse one: blank lines and `#` comments skipped, an optional `export `
    /// prefix, values optionally in matching quotes. Errors name the line.
    pub fn parse(text: &str) -> Result<EnvFile, (usize, String)> {
        let mut entries = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let line = line.strip_prefix("export ").unwrap_or(line);
            let Some((name, value)) = line.split_once('=') else {
                return Err((i + 1, "is not `NAME=value`".into()));
            };
            let name = name.trim();
            let valid = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err((i + 1, format!("`{name}` is not a variable name")));
            }
            let value = value.trim();
            let unquoted = ['"', '\'']
                .iter()
                .find_map(|q| value.strip_prefix(*q)?.strip_suffix(*q))
                .unwrap_or(value);
            entries.push((name.to_string(), unquoted.to_string(), i + 1));
        }
        Ok(EnvFile { entries })
    }
}

impl Stack {
    /// The env file of an environment: `configs/<environment>.env`, else the
    /// short name the seed uses (`production` -> `configs/prod.env`).
    pub fn env_file(&self, environment: &str) -> Option<(&str, &EnvFile)> {
        let short = match environment {
            "production" => "prod",
            "development" => "dev",
            "testing" => "test",
            "staging" => "stage",
            other => other,
        };
        [environment, short]
            .into_iter()
            .find_map(|n| self.env_files.get_key_value(n))
            .map(|(k, v)| (k.as_str(), v))
    }
}

// ---------------------------------------------------------------------------------------
// JSON Schemas of the types with hand-written deserializers (schemas/ is generated from
// these types: `phoenix schema`)
// ---------------------------------------------------------------------------------------

mod schema {
    use schemars::{Schema, SchemaGenerator, json_schema};

    pub(super) fn string_or_number(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": ["string", "number", "boolean"]})
    }

    pub(super) fn opt_string_or_number(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": ["string", "number", "boolean", "null"]})
    }

    pub(super) fn opt_bool_or_01(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"anyOf": [{"type": ["boolean", "null"]}, {"enum": [0, 1]}]})
    }
}

impl JsonSchema for GuestId {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "GuestId".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A Proxmox guest id: a number (101) or a numeric string (\"101\").",
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": "^[0-9]+$"}
            ]
        })
    }
}

impl JsonSchema for DockerStackRef {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "DockerStackRef".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A stack name, or {\"name\", \"environment\"} (environment defaults to production).",
            "anyOf": [
                {"type": "string"},
                {"type": "object", "required": ["name"], "properties": {
                    "name": {"type": "string"}, "environment": {"type": ["string", "null"]}}}
            ]
        })
    }
}

impl JsonSchema for NodeLabels {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "NodeLabels".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "Swarm node labels: an object, or a list of \"key=value\" strings.",
            "anyOf": [
                {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}},
                {"type": "array", "items": {"type": "string"}}
            ]
        })
    }
}

// ---------------------------------------------------------------------------------------
// etc/certificate-manifest.json
// ---------------------------------------------------------------------------------------

/// One entry of `etc/certificate-manifest.json` (a JSON array).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CertificateEntry {
    pub common_name: String,
    #[serde(default)]
    pub sans: Vec<String>,
    /// Host paths.
    pub cert_path: String,
    pub key_path: String,
    /// `user:group` for chown.
    pub owner: Option<String>,
    /// Octal mode such as `"640"`; a bare number is accepted.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    #[schemars(schema_with = "schema::opt_string_or_number")]
    pub permissions: Option<String>,
    /// Shell command run on the host after renewal.
    pub post_renewal_command: Option<String>,
    // rootesting
    pub guest_id: Option<GuestId>,
    pub guest_type: Option<String>,
    pub include_ca: Option<bool>,
    pub cert_type: Option<String>,
}

/// Deserializers for the places where the seed mixes strings and numbers.
mod lenient {
    use std::fmt;

    use serde::de::{self, Deserialize, Deserializer, Visitor};

    /// A string, number or boolean, kept as its text.
    pub(super) struct Scalar(pub(super) String);

    struct ScalarVisitor;

    impl Visitor<'_> for ScalarVisitor {
        type Value = Scalar;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or a number")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
            Ok(Scalar(v.to_owned()))
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
            Ok(Scalar(v.to_string()))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
            Ok(Scalar(v.to_string()))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
            Ok(Scalar(v.to_string()))
        }

        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
            Ok(Scalar(v.to_string()))
        }
    }

    impl<'de> Deserialize<'de> for Scalar {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserializer.deserialize_any(ScalarVisitor)
        }
    }

    pub(super) fn string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
        Scalar::deserialize(deserializer).map(|s| s.0)
    }

    pub(super) fn opt_string<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<String>, D::Error> {
        Option::<Scalar>::deserialize(deserializer).map(|s| s.map(|s| s.0))
    }

    /// `true`/`false` or Proxmox's `1`/`0`.
    pub(super) fn opt_bool<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<bool>, D::Error> {
        struct BoolVisitor;

        impl Visitor<'_> for BoolVisitor {
            type Value = Option<bool>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("true, false, 1 or 0")
            }

            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Option<bool>, E> {
                Ok(Some(v))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Option<bool>, E> {
                match v {
                    0 => Ok(Some(false)),
                    1 => Ok(Some(true)),
                    _ => Err(E::invalid_value(de::Unexpected::Unsigned(v), &self)),
                }
            }

            fn visit_unit<E: de::Error>(self) -> Result<Option<bool>, E> {
                Ok(None)
            }
        }

        deserializer.deserialize_any(BoolVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_id_from_number_and_string() {
        let ids: Vec<GuestId> = serde_json::from_str(r#"[9000, "900", "1002", 0]"#).unwrap();
        assert_eq!(
            ids,
            vec![GuestId(9000), GuestId(900), GuestId(1002), GuestId(0)]
        );
        assert_eq!(GuestId(101).to_string(), "101");
    }

    #[test]
    fn guest_id_rejects_non_numeric() {
        for bad in [
            r#""abc""#,
            r#""""#,
            r#""+101""#,
            r#"" 101""#,
            "-1",
            "1.5",
            "true",
            "4294967296",
        ] {
            let err = serde_json::from_str::<GuestId>(bad).unwrap_err();
            assert!(err.to_string().contains("guest id"), "{bad}: {err}");
        }
    }

    #[test]
    fn docker_stacks_accept_strings_and_objects() {
        let refs: Vec<DockerStackRef> = serde_json::from_str(
            r#"["qdrant", {"name": "app", "environment": "testing"}, {"name": "x"}]"#,
        )
        .unwrap();
        assert_eq!(refs[0].name, "qdrant");
        assert_eq!(refs[0].environment(), "production");
        assert_eq!(refs[1].environment(), "testing");
        assert_eq!(refs[2].environment, None);
        assert!(serde_json::from_str::<DockerStackRef>("3").is_err());
    }

    #[test]
    fn lenient_fields() {
        let rule: FirewallRule =
            serde_json::from_str(r#"{"type": "in", "action": "ACCEPT", "port": 443, "enable": 0}"#)
                .unwrap();
        assert_eq!(rule.port.as_deref(), Some("443"));
        assert_eq!(rule.enable, Some(false));
        let labels: NodeLabels = serde_json::from_str(r#"["gpu=false", "zone"]"#).unwrap();
        assert_eq!(labels.0.get("gpu").map(String::as_str), Some("false"));
        let labels: NodeLabels = serde_json::from_str(r#"{"gpu": false}"#).unwrap();
        assert_eq!(labels.0.get("gpu").map(String::as_str), Some("false"));
        let var: StackVariable =
            serde_json::from_str(r#"{"name": "API_PORT", "value": 8000}"#).unwrap();
        assert_eq!(var.value, "8000");
    }
}
