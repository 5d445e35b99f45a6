//! Helpers for the integration tests: the test world's servers.

// Every test module compiles against these, but not every helper has a caller yet.
#![allow(dead_code)]

pub mod fakepve;
pub mod pebble;
pub mod postgres;
