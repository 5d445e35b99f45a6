//! The on-disk state format: read the `format` field first and refuse a
//! format this phoenix does not know, with both versions in the message.

use std::path::Path;

use serde_json::Value;

use super::{State, StateError};

/// The state format this phoenix reads and writes.
pub const FORMAT_VERSION: &str = "1";

/// Parse a state document, checking its format version before anything else.
pub fn parse(path: &Path, text: &str) -> Result<State, StateError> {
    let corrupt = |message: String| StateError::Corrupt {
        path: path.to_path_buf(),
        message,
    };
    let value: Value = serde_json::from_str(text)
        .map_err(|e| corrupt(format!("{e} (line {}, column {})", e.line(), e.column())))?;
    let format = match value.get("format") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => return Err(corrupt(format!("`format` must be a string, found {other}"))),
        None => return Err(corrupt("missing the `format` field".into())),
    };
    if format != FORMAT_VERSION {
        let newer = format
            .parse::<u64>()
            .ok()
            .zip(FORMAT_VERSION.parse::<u64>().ok())
            .is_some_and(|(f, ours)| f > ours);
        if newer {
            return Err(StateError::NewerFormat {
                path: path.to_path_buf(),
                found: format,
                supported: FORMAT_VERSION,
                ours: env!("CARGO_PKG_VERSION"),
            });
        }
        return Err(corrupt(format!("unknown format `{format}`")));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let at = e.path().to_string();
        corrupt(format!("at `{at}`: {}", e.into_inner()))
    })
}

/// The document as written: pretty JSON with a trailing newline, so it diffs well.
pub fn render(state: &State) -> String {
    let mut s = serde_json::to_string_pretty(state).unwrap_or_else(|_| "{}".to_string());
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let s = State::new();
        let back = parse(Path::new("s.json"), &render(&s)).unwrap();
        assert_eq!(s, back);
    }

    #[test]
    fn refuses_newer_format_naming_both_versions() {
        let text = r#"{"format": "7", "lineage": "x", "serial": 1, "phoenix_version": "9.0.0"}"#;
        let err = parse(Path::new("s.json"), text).unwrap_err().to_string();
        assert!(err.contains("format 7"), "{err}");
        assert!(err.contains("reads format 1"), "{err}");
    }

    #[test]
    fn corrupt_names_the_field() {
        let text = r#"{"format": "1", "lineage": "x", "serial": "two", "phoenix_version": "0"}"#;
        let err = parse(Path::new("s.json"), text).unwrap_err().to_string();
        assert!(err.contains("serial"), "{err}");
        let err = parse(Path::new("s.json"), "{\"format\": ")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 1"), "{err}");
    }
}
