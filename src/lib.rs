//! phoenix: plan and apply for a Proxmox VE homelab.
//!
//! Module map (the data flow of DESIGN.md section 1):
//!
//! - [`manifest`]: read the seed-format JSON manifests and `stacks/`, validate, lint.
//! - [`model`]: addresses, resource kinds and their normalized attributes (Desired).
//! - [`state`]: what phoenix manages (Prior): format, local and PostgreSQL backends, lock, secrets.
//! - [`providers`]: read the real systems (Live) and change them.
//! - [`render`]: the files phoenix generates (dnsmasq records, Traefik, Nginx), from `templates/`.
//! - [`plan`]: the pure diff of Desired, Prior and Live, and its renderers.
//! - [`apply`]: the executor: DAG walk, lanes, journal, commit after every resource.
//! - [`ops`]: every command's operation; [`cli`] is the thin layer over it.
//! - [`shell`]: status lines on stderr; [`error`]: errors with what to do next.
//!
//! Files phoenix touches:
//!
//! | file | read/written by |
//! |------|-----------------|
//! | `<root>/etc/*.json`, `<root>/stacks/*/` | [`manifest`] (read only) |
//! | `<root>/state/phoenix.state.json` (+ `.backup`) | [`state::local`] |
//! | `<state>.lock` | [`state::lock`] |
//! | `<state>.key` | [`state::secrets`] |
//! | PostgreSQL schema `phoenix` (`--backend pg`) | [`state::pg`] |
//! | plan files (`plan --out`) | [`ops::planfile`] |

pub mod apply;
pub mod cli;
pub mod error;
pub mod manifest;
pub mod model;
pub mod ops;
pub mod plan;
pub mod providers;
pub mod render;
pub mod shell;
pub mod state;
