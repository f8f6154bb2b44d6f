//! What the test environments share: locating their scripts and reading
//! the `KEY='value'` lines the `*-up` scripts write to `env.sh`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A script in tests/env.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("env")
        .join(name)
}

/// Parses `KEY='value'` lines as the `*-up` scripts write them in `env.sh`.
pub fn parse_env_sh(text: &str) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            panic!("env.sh: cannot parse line {line:?}");
        };
        let value = value
            .strip_prefix('\'')
            .and_then(|v| v.strip_suffix('\''))
            .unwrap_or(value);
        vars.insert(key.to_string(), value.to_string());
    }
    vars
}

/// Runs a `*-down` script for `dir`; failures are reported, not raised,
/// because this runs from `Drop`.
pub fn run_down(name: &str, dir: &Path, who: &str) {
    let down = script(name);
    match Command::new(&down).arg(dir).output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => eprintln!(
            "{who}: {} failed ({}): {}",
            down.display(),
            o.status,
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => eprintln!("{who}: cannot run {}: {e}", down.display()),
    }
}
