//! Finds where a JSON path (keys and indexes) starts in a file's source text, so that
//! diagnostics found after parsing can still name a line and column.
//!
//! serde throws positions away once a value is parsed, so this is a small scanner over the
//! original text rather than a second parser: it walks only down the requested path and
//! skips everything else (strings with escapes included).

use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};

/// One step of a JSON path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Segment {
    Key(String),
    Index(usize),
}

impl Segment {
    pub fn key(key: impl Into<String>) -> Self {
        Segment::Key(key.into())
    }
}

impl From<&str> for Segment {
    fn from(key: &str) -> Self {
        Segment::Key(key.to_owned())
    }
}

impl From<String> for Segment {
    fn from(key: String) -> Self {
        Segment::Key(key)
    }
}

impl From<usize> for Segment {
    fn from(index: usize) -> Self {
        Segment::Index(index)
    }
}

/// Builds a `[Segment; N]` from keys (`&str`, `String`) and indexes (`usize`); borrow it
/// as a path or call `.to_vec()` to extend it.
macro_rules! json_path {
    ($($seg:expr),* $(,)?) => {
        [$($crate::manifest::locate::Segment::from($seg)),*]
    };
}
pub(crate) use json_path;

/// A 1-based line and column (columns count characters, not bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// Formats a path the way diagnostics show it: `lxc_configs."101".firewall.rules[3]`.
/// Keys that are not plain identifiers (ctids, `$schema`) are quoted so the path stays
/// unambiguous.
pub fn format_path(path: &[Segment]) -> String {
    let mut out = String::new();
    for segment in path {
        match segment {
            Segment::Index(i) => {
                let _ = write!(out, "[{i}]");
            }
            Segment::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                if is_identifier(key) {
                    out.push_str(key);
                } else {
                    out.push('"');
                    for c in key.chars() {
                        if c == '"' || c == '\\' {
                            out.push('\\');
                        }
                        out.push(c);
                    }
                    out.push('"');
                }
            }
        }
    }
    out
}

fn is_identifier(key: &str) -> bool {
    let mut chars = key.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Where the value at `path` starts (`{`, `[`, `"` or the first character of a scalar).
/// `None` if the path does not exist or the text is not well-formed up to it.
pub fn locate(text: &str, path: &[Segment]) -> Option<Position> {
    Scanner::new(text).find(path, 0).map(|(_, value)| value)
}

/// Where the member named by the last segment of `path` starts: its key for an object
/// member (what an editor should jump to for "unknown key"), the value for an array item.
pub fn locate_key(text: &str, path: &[Segment]) -> Option<Position> {
    Scanner::new(text).find(path, 0).map(|(key, _)| key)
}

/// An object key that appears twice in the same object. JSON parsers keep only the last
/// value for maps, so the first one silently disappears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateKey {
    /// Path of the second occurrence (the one that wins).
    pub path: Vec<Segment>,
    pub first: Position,
    pub second: Position,
}

/// Every duplicate key in the document, in order of appearance. Empty for malformed text.
pub fn duplicate_keys(text: &str) -> Vec<DuplicateKey> {
    let mut scanner = Scanner::new(text);
    let mut out = Vec::new();
    let mut path = Vec::new();
    scanner.skip_ws();
    if scanner.walk(&mut path, &mut out, 0).is_none() {
        return Vec::new();
    }
    out
}

/// The text of every manifest file that was read, keyed by its path relative to the site
/// root, so lints can turn a JSON path into a line and column.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    files: BTreeMap<PathBuf, String>,
}

impl Sources {
    pub fn insert(&mut self, file: impl Into<PathBuf>, text: String) {
        self.files.insert(file.into(), text);
    }

    pub fn get(&self, file: &Path) -> Option<&str> {
        self.files.get(file).map(String::as_str)
    }

    pub fn files(&self) -> impl Iterator<Item = (&Path, &str)> {
        self.files.iter().map(|(p, t)| (p.as_path(), t.as_str()))
    }

    /// See [`locate`].
    pub fn locate(&self, file: &Path, path: &[Segment]) -> Option<Position> {
        locate(self.get(file)?, path)
    }

    /// See [`locate_key`].
    pub fn locate_key(&self, file: &Path, path: &[Segment]) -> Option<Position> {
        locate_key(self.get(file)?, path)
    }
}

/// serde_json refuses nesting deeper than 128; anything deeper is not a manifest.
const MAX_DEPTH: usize = 256;

struct Scanner<'a> {
    bytes: &'a [u8],
    at: usize,
    line: usize,
    column: usize,
}

impl<'a> Scanner<'a> {
    fn new(text: &'a str) -> Self {
        Scanner {
            bytes: text.as_bytes(),
            at: 0,
            line: 1,
            column: 1,
        }
    }

    fn position(&self) -> Position {
        Position {
            line: self.line,
            column: self.column,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.at += 1;
        if b == b'\n' {
            self.line += 1;
            self.column = 1;
        } else if b & 0xC0 != 0x80 {
            // Only the first byte of a UTF-8 sequence starts a new character.
            self.column += 1;
        }
        Some(b)
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.bump()? == byte).then_some(())
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.bump();
        }
    }

    /// Reads a string token and decodes its escapes (keys are compared decoded).
    fn string(&mut self) -> Option<String> {
        self.expect(b'"')?;
        let mut raw = Vec::new();
        loop {
            match self.bump()? {
                b'"' => break,
                b'\\' => match self.bump()? {
                    b'"' => raw.push(b'"'),
                    b'\\' => raw.push(b'\\'),
                    b'/' => raw.push(b'/'),
                    b'b' => raw.push(0x08),
                    b'f' => raw.push(0x0C),
                    b'n' => raw.push(b'\n'),
                    b'r' => raw.push(b'\r'),
                    b't' => raw.push(b'\t'),
                    b'u' => {
                        let first = self.hex4()?;
                        let code = if (0xD800..0xDC00).contains(&first)
                            && self.bytes.get(self.at..self.at + 2) == Some(b"\\u")
                        {
                            self.bump();
                            self.bump();
                            let second = self.hex4()?;
                            0x10000
                                + ((first - 0xD800) << 10)
                                + (second.wrapping_sub(0xDC00) & 0x3FF)
                        } else {
                            first
                        };
                        let c = char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER);
                        let mut buf = [0u8; 4];
                        raw.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    }
                    _ => return None,
                },
                b => raw.push(b),
            }
        }
        Some(String::from_utf8_lossy(&raw).into_owned())
    }

    fn hex4(&mut self) -> Option<u32> {
        let mut value = 0;
        for _ in 0..4 {
            let digit = char::from(self.bump()?).to_digit(16)?;
            value = value * 16 + digit;
        }
        Some(value)
    }

    /// Skips one value of any kind; the cursor must be at its first byte.
    fn skip_value(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' => {
                self.bump();
                self.members(|scanner, _, _| scanner.skip_value(depth + 1))
            }
            b'[' => {
                self.bump();
                self.elements(|scanner, _| scanner.skip_value(depth + 1))
            }
            _ => {
                let start = self.at;
                while let Some(b) = self.peek() {
                    if matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                        break;
                    }
                    self.bump();
                }
                (self.at > start).then_some(())
            }
        }
    }

    /// Iterates the members of an object whose `{` was consumed, calling `member` with the
    /// cursor at each value; `member` must consume the value. Consumes the closing `}`.
    fn members(
        &mut self,
        mut member: impl FnMut(&mut Self, String, Position) -> Option<()>,
    ) -> Option<()> {
        self.skip_ws();
        if self.peek()? == b'}' {
            self.bump();
            return Some(());
        }
        loop {
            self.skip_ws();
            let key_position = self.position();
            let key = self.string()?;
            self.skip_ws();
            self.expect(b':')?;
            self.skip_ws();
            member(self, key, key_position)?;
            self.skip_ws();
            match self.bump()? {
                b',' => continue,
                b'}' => return Some(()),
                _ => return None,
            }
        }
    }

    /// Like [`Self::members`] for an array whose `[` was consumed.
    fn elements(&mut self, mut element: impl FnMut(&mut Self, usize) -> Option<()>) -> Option<()> {
        self.skip_ws();
        if self.peek()? == b']' {
            self.bump();
            return Some(());
        }
        let mut index = 0;
        loop {
            self.skip_ws();
            element(self, index)?;
            index += 1;
            self.skip_ws();
            match self.bump()? {
                b',' => continue,
                b']' => return Some(()),
                _ => return None,
            }
        }
    }

    /// Descends along `path` from the value at the cursor; returns (key or value start,
    /// value start) of the target. Stops scanning as soon as the target is found.
    fn find(&mut self, path: &[Segment], depth: usize) -> Option<(Position, Position)> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.skip_ws();
        let Some((first, rest)) = path.split_first() else {
            let here = self.position();
            return Some((here, here));
        };
        match first {
            Segment::Key(wanted) => {
                self.expect(b'{')?;
                self.skip_ws();
                if self.peek()? == b'}' {
                    return None;
                }
                loop {
                    self.skip_ws();
                    let key_position = self.position();
                    let key = self.string()?;
                    self.skip_ws();
                    self.expect(b':')?;
                    self.skip_ws();
                    if &key == wanted {
                        if rest.is_empty() {
                            return Some((key_position, self.position()));
                        }
                        return self.find(rest, depth + 1);
                    }
                    self.skip_value(depth + 1)?;
                    self.skip_ws();
                    if self.bump()? != b',' {
                        return None;
                    }
                }
            }
            Segment::Index(wanted) => {
                self.expect(b'[')?;
                self.skip_ws();
                if self.peek()? == b']' {
                    return None;
                }
                let mut index = 0;
                loop {
                    self.skip_ws();
                    if index == *wanted {
                        return self.find(rest, depth + 1);
                    }
                    self.skip_value(depth + 1)?;
                    index += 1;
                    self.skip_ws();
                    if self.bump()? != b',' {
                        return None;
                    }
                }
            }
        }
    }

    /// Walks the whole value at the cursor, recording duplicate keys.
    fn walk(
        &mut self,
        path: &mut Vec<Segment>,
        out: &mut Vec<DuplicateKey>,
        depth: usize,
    ) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'{' => {
                self.bump();
                let mut seen: HashMap<String, Position> = HashMap::new();
                self.members(|scanner, key, key_position| {
                    path.push(Segment::Key(key.clone()));
                    if let Some(first) = seen.get(&key) {
                        out.push(DuplicateKey {
                            path: path.clone(),
                            first: *first,
                            second: key_position,
                        });
                    } else {
                        seen.insert(key, key_position);
                    }
                    let walked = scanner.walk(path, out, depth + 1);
                    path.pop();
                    walked
                })
            }
            b'[' => {
                self.bump();
                self.elements(|scanner, index| {
                    path.push(Segment::Index(index));
                    let walked = scanner.walk(path, out, depth + 1);
                    path.pop();
                    walked
                })
            }
            _ => self.skip_value(depth),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(line: usize, column: usize) -> Option<Position> {
        Some(Position { line, column })
    }

    const DOC: &str = r#"{
  "lxc_configs": {
    "101": {
      "name": "a { tricky } \"quoted\" [name]",
      "memory_mb": 512,
      "firewall": {
        "rules": [
          {"type": "in", "port": "80"},
          {"type": "out", "comment": "has \\ backslash and \" quote }"},
          {"type": "out"}
        ]
      }
    },
    "102": {"name": "b"}
  },
  "vms": [1, [2, 3], {"ip": "dhcp"}],
  "$schema": "x"
}"#;

    #[test]
    fn finds_nested_object_values() {
        assert_eq!(locate(DOC, &json_path!["lxc_configs"]), pos(2, 18));
        assert_eq!(
            locate(DOC, &json_path!["lxc_configs", "101", "memory_mb"]),
            pos(5, 20)
        );
        assert_eq!(
            locate(DOC, &json_path!["lxc_configs", "102", "name"]),
            pos(14, 21)
        );
        assert_eq!(locate(DOC, &json_path!["$schema"]), pos(17, 14));
    }

    #[test]
    fn finds_array_items_past_tricky_strings() {
        let rules = json_path!["lxc_configs", "101", "firewall", "rules"].to_vec();
        let mut third = rules.clone();
        third.push(Segment::Index(2));
        assert_eq!(locate(DOC, &third), pos(10, 11));
        let mut port = rules.clone();
        port.extend(json_path![0, "port"]);
        assert_eq!(locate(DOC, &port), pos(8, 34));
        assert_eq!(locate(DOC, &json_path!["vms", 2, "ip"]), pos(16, 29));
        assert_eq!(locate(DOC, &json_path!["vms", 1, 1]), pos(16, 18));
    }

    #[test]
    fn key_position_points_at_the_key() {
        assert_eq!(
            locate_key(DOC, &json_path!["lxc_configs", "101", "memory_mb"]),
            pos(5, 7)
        );
        assert_eq!(locate_key(DOC, &json_path!["vms", 0]), pos(16, 11));
    }

    #[test]
    fn missing_paths_and_type_mismatches_are_none() {
        assert_eq!(locate(DOC, &json_path!["lxc_configs", "999"]), None);
        assert_eq!(locate(DOC, &json_path!["vms", 3]), None);
        assert_eq!(locate(DOC, &json_path!["vms", "ip"]), None);
        assert_eq!(locate(DOC, &json_path!["lxc_configs", 0]), None);
        assert_eq!(locate("{\"a\": ", &json_path!["a", "b"]), None);
    }

    #[test]
    fn root_and_escaped_keys() {
        assert_eq!(locate("  [1]", &[]), pos(1, 3));
        assert_eq!(
            locate(r#"{"a\"b": 1, "\u0041": 2}"#, &json_path!["a\"b"]),
            pos(1, 10)
        );
        assert_eq!(
            locate(r#"{"a\"b": 1, "\u0041": 2}"#, &json_path!["A"]),
            pos(1, 23)
        );
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        assert_eq!(
            locate("{\"é€\": 1, \"x\": 2}", &json_path!["x"]),
            pos(1, 16)
        );
    }

    #[test]
    fn formats_paths() {
        assert_eq!(
            format_path(&json_path!["lxc_configs", "101", "firewall", "rules", 3]),
            r#"lxc_configs."101".firewall.rules[3]"#
        );
        assert_eq!(
            format_path(&json_path!["vms", 1, "network_config", "ip"]),
            "vms[1].network_config.ip"
        );
        assert_eq!(format_path(&json_path![0, "sans"]), "[0].sans");
        assert_eq!(format_path(&json_path!["$schema"]), r#""$schema""#);
        assert_eq!(format_path(&[]), "");
    }

    #[test]
    fn finds_duplicate_keys() {
        let text =
            "{\n \"a\": {\"x\": 1, \"y\": \"}\", \"x\": 2},\n \"a\": [{\"k\": 1, \"k\": 2}]\n}";
        let dups = duplicate_keys(text);
        assert_eq!(dups.len(), 3);
        assert_eq!(dups[0].path, json_path!["a", "x"]);
        assert_eq!(
            (dups[0].first, dups[0].second),
            (
                Position { line: 2, column: 8 },
                Position {
                    line: 2,
                    column: 26
                }
            )
        );
        assert_eq!(dups[1].path, json_path!["a"]);
        assert_eq!(dups[2].path, json_path!["a", 0, "k"]);
        assert!(duplicate_keys("{\"a\": ").is_empty());
    }
}
