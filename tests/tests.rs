//! phoenix's integration tests: one binary (`autotests = false`), a module per
//! behaviour, all against the real fake PVE started once for the binary.
//!
//! - `ci_recipes`: the shell of `examples/ci/` recipes, run against the fake.
//! - `cli`: commands that need no Proxmox (validate, graph, completions).
//! - `cluster`: several nodes: guests found anywhere, created where asked.
//! - `common`: a temp site per test and a `phoenix` command wired to the world.
//! - `lifecycle`: plan -> apply -> empty plan; updates, grow, replace, destroy.
//! - `drift`: changes made outside phoenix, and `phoenix drift`'s exit codes.
//! - `progress`: status lines, the live view, --quiet and --verbose.
//! - `schemas`: the published JSON Schemas accept the example sites and the seed.
//! - `state_safety`: locks, stale saved plans, SIGKILL mid-apply, file modes.
//! - `errors`: bad manifests, unreachable API, refused credentials, adoption.
//! - `host_apply`, `host_render`: dns.records and file.* through plan/apply and `phoenix render`,
//!   checked by the real dnsmasq and nginx; `host_support`: the host world of lab/host.
//! - `reliability_*`: crash, race, fault, fuzz and secret checks (issue 6), each
//!   with a private fake (`reliability_lab`: and a private phoenix-lab); small here, full in
//!   `scripts/reliability` (docs/reliability.md).

mod common;
mod support;

mod ci_recipes;
mod cli;
mod cluster;
mod drift;
mod errors;
mod firewall;
mod host_apply;
mod host_cert;
mod host_feature;
mod host_render;
mod host_support;
mod lifecycle;
mod lxc_conf;
mod progress;
mod proxmox_storage;
mod reliability_common;
mod reliability_concurrency;
mod reliability_crash;
mod reliability_faults;
mod reliability_input;
mod reliability_lab;
mod reliability_security;
mod schemas;
mod seed_verbs;
mod state_safety;
mod vm;
