//! The normalization table: every way Proxmox rewrites a value it was given,
//! in one place, each row with a test. Both the manifests and the API answers
//! go through these functions before the diff compares them, which is what
//! keeps `apply` followed by `plan` empty.
//!
//! | what PVE does                               | function          |
//! |---------------------------------------------|-------------------|
//! | booleans as `1`/`0`/`true`/`on`...          | [`parse_bool`]    |
//! | sizes as `32G`, `32768M`, bytes             | [`parse_size`], [`format_size`] |
//! | MAC addresses in any case                   | [`mac`]           |
//! | tags split by `;`, `,` or space, lowercased | [`tags`]          |
//! | numbers returned as strings (QEMU `memory`) | [`lenient_u64`]   |

use serde_json::Value;

/// PVE's boolean spellings. `None` for anything else.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

const UNITS: [(char, u64); 4] = [
    ('T', 1 << 40),
    ('G', 1 << 30),
    ('M', 1 << 20),
    ('K', 1 << 10),
];

/// Bytes in a PVE size (`8G`, `512M`, `1.5G`, `1024`); a bare number is bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last()? {
        c if c.is_ascii_alphabetic() => {
            let unit = c.to_ascii_uppercase();
            let mult = UNITS.iter().find(|(u, _)| *u == unit)?.1;
            (&s[..s.len() - 1], mult)
        }
        _ => (s, 1),
    };
    let n: f64 = num.parse().ok()?;
    if !(n.is_finite() && n >= 0.0) {
        return None;
    }
    Some((n * mult as f64).round() as u64)
}

/// PVE's spelling of a size: the largest unit that divides it exactly.
pub fn format_size(bytes: u64) -> String {
    for (unit, mult) in UNITS {
        if bytes != 0 && bytes.is_multiple_of(mult) {
            return format!("{}{}", bytes / mult, unit);
        }
    }
    bytes.to_string()
}

/// A size string in PVE's canonical spelling (`32768M` -> `32G`), or the input if unparsable.
pub fn size(s: &str) -> String {
    parse_size(s)
        .map(format_size)
        .unwrap_or_else(|| s.to_string())
}

/// MAC addresses compare case-insensitively; PVE prints them upper case.
pub fn mac(s: &str) -> String {
    s.trim().to_ascii_uppercase()
}

/// Tags: PVE splits on `;`, `,` and spaces, lowercases, sorts and dedups.
pub fn tags<'a>(items: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = items
        .into_iter()
        .flat_map(|s| s.split([';', ',', ' ']))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// A number PVE may return as a JSON number or as a string.
pub fn lenient_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A boolean PVE may return as 0/1, a string or a JSON bool; absent is `false`
/// for flags whose absence PVE treats as off.
pub fn lenient_bool(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_u64().unwrap_or(0) != 0,
        Some(Value::String(s)) => parse_bool(s).unwrap_or(false),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn booleans() {
        for t in ["1", "true", "yes", "on", "TRUE"] {
            assert_eq!(parse_bool(t), Some(true), "{t}");
        }
        for f in ["0", "false", "no", "off"] {
            assert_eq!(parse_bool(f), Some(false), "{f}");
        }
        assert_eq!(parse_bool("maybe"), None);
        assert!(lenient_bool(Some(&json!(1))));
        assert!(lenient_bool(Some(&json!("1"))));
        assert!(!lenient_bool(None));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("8G"), Some(8 << 30));
        assert_eq!(parse_size("32768M"), Some(32 << 30));
        assert_eq!(parse_size("1.5G"), Some(3 << 29));
        assert_eq!(parse_size("1024"), Some(1024));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size("8Q"), None);
        assert_eq!(size("32768M"), "32G");
        assert_eq!(size("512M"), "512M");
        assert_eq!(format_size(0), "0");
    }

    #[test]
    fn macs() {
        assert_eq!(mac("52:54:00:aa:bb:cc"), "52:54:00:AA:BB:CC");
    }

    #[test]
    fn tag_lists() {
        assert_eq!(tags(["b;A", "c a"]), ["a", "b", "c"]);
    }

    #[test]
    fn numbers_as_strings() {
        assert_eq!(lenient_u64(&json!("4096")), Some(4096));
        assert_eq!(lenient_u64(&json!(4096)), Some(4096));
        assert_eq!(lenient_u64(&json!(null)), None);
    }
}
