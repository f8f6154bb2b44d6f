//! The TOML position index: key paths and spans of a parsed document,
//! turning a dotted key or a byte offset into a line, and a `toml` error
//! into a [`ConfigError`] with file, line and key. figment forgets spans,
//! so the configuration file (and every policy file) is parsed once more
//! with the `toml` crate, which keeps them.

use std::ops::Range;
use std::path::{Path, PathBuf};

use super::error::{ConfigError, Location};

/// Key paths and spans of a parsed TOML document; shared with the policy
/// file reader, which needs the same "file:line: key" errors.
pub(crate) struct TomlIndex {
    path: PathBuf,
    text_lines: Vec<usize>,
    /// (dotted key, span of the key, span of the value)
    entries: Vec<(String, Range<usize>, Range<usize>)>,
}

impl TomlIndex {
    /// Parses `text` (the contents of `path`), failing with a syntax error.
    pub(crate) fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        let mut index = TomlIndex {
            path: path.to_owned(),
            text_lines: line_starts,
            entries: Vec::new(),
        };
        match toml::de::DeTable::parse(text) {
            Ok(doc) => {
                index.walk_table("", doc.get_ref());
                Ok(index)
            }
            Err(e) => Err(index.error(&e)),
        }
    }

    fn walk_table(&mut self, prefix: &str, table: &toml::de::DeTable<'_>) {
        for (k, v) in table.iter() {
            let path = if prefix.is_empty() {
                k.get_ref().to_string()
            } else {
                format!("{prefix}.{}", k.get_ref())
            };
            self.entries.push((path.clone(), k.span(), v.span()));
            self.walk_value(&path, v.get_ref());
        }
    }

    fn walk_value(&mut self, path: &str, v: &toml::de::DeValue<'_>) {
        match v {
            toml::de::DeValue::Table(t) => self.walk_table(path, t),
            toml::de::DeValue::Array(a) => {
                for (i, item) in a.iter().enumerate() {
                    let p = format!("{path}[{i}]");
                    self.entries.push((p.clone(), item.span(), item.span()));
                    self.walk_value(&p, item.get_ref());
                }
            }
            _ => {}
        }
    }

    /// 1-based line of byte offset `at`.
    pub(crate) fn line_at(&self, at: usize) -> usize {
        match self.text_lines.binary_search(&at) {
            Ok(i) => i + 1,
            Err(i) => i,
        }
    }

    /// Line where `key` (dotted) is written.
    pub(crate) fn line_of_key(&self, key: &str) -> Option<usize> {
        self.entries
            .iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, ks, _)| self.line_at(ks.start))
    }

    /// The innermost key whose key or value contains `span`.
    pub(crate) fn key_at(&self, span: &Range<usize>) -> Option<&str> {
        self.entries
            .iter()
            .filter(|(_, ks, vs)| {
                let inside =
                    |r: &Range<usize>| r.start <= span.start && span.end <= r.end.max(r.start + 1);
                inside(ks) || inside(vs)
            })
            .min_by_key(|(_, _, vs)| vs.end - vs.start)
            .map(|(k, _, _)| k.as_str())
    }

    /// A `toml` error as a [`ConfigError`] with line and key.
    pub(crate) fn error(&self, e: &toml::de::Error) -> ConfigError {
        let (line, key) = match e.span() {
            Some(span) => (
                Some(self.line_at(span.start)),
                self.key_at(&span).map(str::to_owned),
            ),
            None => (None, None),
        };
        // Array positions ("rule[2]") are for locating, not for reading.
        let key = key.map(|k| {
            k.split('.')
                .next_back()
                .map(|last| {
                    if k.contains('[') {
                        last.to_owned()
                    } else {
                        k.clone()
                    }
                })
                .unwrap_or(k.clone())
        });
        ConfigError::Invalid {
            location: Location::File {
                path: self.path.clone(),
                line,
            },
            key,
            message: e.message().trim().to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]
    use super::*;

    #[test]
    fn index_lines_and_keys() {
        let text = "a = 1\n[dns]\ntimeout_ms = \"x\"\n";
        let idx = TomlIndex::parse(Path::new("f.toml"), text).unwrap();
        assert_eq!(idx.line_of_key("dns.timeout_ms"), Some(3));
        assert_eq!(idx.line_at(0), 1);
        assert_eq!(idx.line_at(6), 2);
    }
}
