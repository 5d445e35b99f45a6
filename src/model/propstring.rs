//! Proxmox property strings (`name=eth0,bridge=vmbr0,ip=dhcp`): PVE reorders
//! keys and adds defaults, so both sides are parsed into maps before comparing.

use std::collections::BTreeMap;

/// A parsed property string: an optional leading bare value (a volume id in
/// `rootfs`) and its `key=value` pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PropString {
    pub first: Option<String>,
    pub props: BTreeMap<String, String>,
}

impl PropString {
    /// Parse the way PVE does: comma-separated, the first item may lack `=`.
    pub fn parse(text: &str) -> Self {
        let mut out = PropString::default();
        for (n, part) in text.split(',').enumerate() {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            match part.split_once('=') {
                Some((k, v)) => {
                    out.props.insert(k.trim().to_string(), v.trim().to_string());
                }
                None if n == 0 => out.first = Some(part.to_string()),
                // PVE treats a bare word after the first as a flag set to 1 in
                // some formats; we keep it visible rather than drop it silently.
                None => {
                    out.props.insert(part.to_string(), "1".to_string());
                }
            }
        }
        out
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.props.get(key).map(String::as_str)
    }

    /// Print with `leading` keys first in that order, the rest sorted.
    pub fn print(&self, leading: &[&str]) -> String {
        let mut parts: Vec<String> = Vec::new();
        if let Some(f) = &self.first {
            parts.push(f.clone());
        }
        for k in leading {
            if let Some(v) = self.props.get(*k) {
                parts.push(format!("{k}={v}"));
            }
        }
        for (k, v) in &self.props {
            if !leading.contains(&k.as_str()) {
                parts.push(format!("{k}={v}"));
            }
        }
        parts.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_volume_and_options() {
        let p = PropString::parse("local-lvm:vm-101-disk-0,size=8G");
        assert_eq!(p.first.as_deref(), Some("local-lvm:vm-101-disk-0"));
        assert_eq!(p.get("size"), Some("8G"));
    }

    #[test]
    fn key_order_does_not_matter() {
        let a = PropString::parse("name=eth0,bridge=vmbr0,ip=dhcp");
        let b = PropString::parse("bridge=vmbr0,ip=dhcp,name=eth0");
        assert_eq!(a, b);
        assert_eq!(a.print(&["name"]), "name=eth0,bridge=vmbr0,ip=dhcp");
    }

    #[test]
    fn tolerates_spaces_and_empty_items() {
        let p = PropString::parse(" order=2, up=5,,");
        assert_eq!(p.get("order"), Some("2"));
        assert_eq!(p.get("up"), Some("5"));
        assert_eq!(p.first, None);
    }
}
