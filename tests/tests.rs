//! phoenix's integration tests: one binary (`autotests = false`), a module per
//! behaviour, all against the real fake PVE started once for the binary.
//!
//! - `common`: a temp site per test and a `phoenix` command wired to the world.
//! - `lifecycle`: plan -> apply -> empty plan; updates, grow, replace, destroy.
//! - `drift`: changes made outside phoenix, and `phoenix drift`'s exit codes.
//! - `state_safety`: locks, stale saved plans, SIGKILL mid-apply, file modes.
//! - `errors`: bad manifests, unreachable API, refused credentials, adoption.

mod common;
mod support;

mod drift;
mod errors;
mod lifecycle;
mod seed_verbs;
mod state_safety;
