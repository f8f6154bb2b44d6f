//! What a configuration error says: the [`Location`] of a value (built-in
//! default, file and line, environment variable) and [`ConfigError`].
//! The messages are part of the interface: tests and administrators'
//! scripts read them.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Where a configuration value (or an error) comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// The built-in default.
    Default,
    /// A configuration or policy file, and the line when known.
    File {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: Option<usize>,
    },
    /// An environment variable.
    Env {
        /// Its name.
        var: String,
    },
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Default => f.write_str("built-in default"),
            Location::File {
                path,
                line: Some(l),
            } => write!(f, "{}:{l}", path.display()),
            Location::File { path, line: None } => write!(f, "{}", path.display()),
            Location::Env { var } => write!(f, "environment variable {var}"),
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists but cannot be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// An explicitly named configuration file does not exist.
    #[error("{}: configuration file not found", path.display())]
    NotFound {
        /// The file.
        path: PathBuf,
    },
    /// A value, key or the syntax is wrong.
    #[error("{location}: {}{message}", key.as_ref().map(|k| format!("key `{k}`: ")).unwrap_or_default())]
    Invalid {
        /// File and line, or environment variable.
        location: Location,
        /// The dotted key, when known.
        key: Option<String>,
        /// What is wrong.
        message: String,
    },
}
