//! Resource addresses: `kind.name`, one canonical string form, ordered so that
//! numeric names sort as numbers (`lxc.99` before `lxc.101`).

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The address of one managed object, e.g. `lxc.101` or `firewall.cluster`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address {
    kind: String,
    name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid address `{input}`: {why}")]
pub struct AddressError {
    pub input: String,
    pub why: &'static str,
}

/// The kinds that are guests (containers and VMs): what bare ids name, what
/// power verbs act on, what other objects live in or go with.
pub const GUEST_KINDS: [&str; 2] = ["lxc", "vm"];

impl Address {
    /// Whether it names a guest (a container or a VM).
    pub fn is_guest(&self) -> bool {
        GUEST_KINDS.contains(&self.kind())
    }

    pub fn new(kind: impl Into<String>, name: impl Into<String>) -> Self {
        Address {
            kind: kind.into(),
            name: name.into(),
        }
    }

    pub fn kind(&self) -> &str {
        &self.kind
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.kind, self.name)
    }
}

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why| AddressError {
            input: s.to_string(),
            why,
        };
        let (kind, name) = s
            .split_once('.')
            .ok_or_else(|| err("expected `kind.name`, e.g. `lxc.101`"))?;
        if kind.is_empty() || !kind.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            return Err(err("the kind must be lowercase letters, e.g. `lxc`"));
        }
        if name.is_empty() || name.chars().any(char::is_whitespace) {
            return Err(err("the name must be non-empty and without spaces"));
        }
        Ok(Address::new(kind, name))
    }
}

/// Numeric-aware: two numeric names compare as numbers, everything else as text.
fn cmp_names(a: &str, b: &str) -> Ordering {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        (Ok(_), Err(_)) => Ordering::Less,
        (Err(_), Ok(_)) => Ordering::Greater,
        _ => a.cmp(b),
    }
}

impl Ord for Address {
    fn cmp(&self, other: &Self) -> Ordering {
        self.kind
            .cmp(&other.kind)
            .then_with(|| cmp_names(&self.name, &other.name))
            .then_with(|| self.name.cmp(&other.name))
    }
}

impl PartialOrd for Address {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Serialize for Address {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_canonically() {
        let a: Address = "lxc.101".parse().unwrap();
        assert_eq!(a.kind(), "lxc");
        assert_eq!(a.name(), "101");
        assert_eq!(a.to_string(), "lxc.101");
        let b: Address = "swarm.node.worker-1".parse().unwrap();
        assert_eq!(b.kind(), "swarm");
        assert_eq!(b.name(), "node.worker-1");
    }

    #[test]
    fn rejects_malformed() {
        assert!("lxc".parse::<Address>().is_err());
        assert!(".101".parse::<Address>().is_err());
        assert!("lxc.".parse::<Address>().is_err());
        assert!("LXC.1".parse::<Address>().is_err());
    }

    #[test]
    fn numeric_names_sort_as_numbers() {
        let mut v: Vec<Address> = ["lxc.1002", "lxc.99", "lxc.101", "dns.records"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        v.sort();
        let s: Vec<String> = v.iter().map(ToString::to_string).collect();
        assert_eq!(s, ["dns.records", "lxc.99", "lxc.101", "lxc.1002"]);
    }
}
