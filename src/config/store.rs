//! `[store]`: where the key store is (learned keys, key history, pins, key
//! changes) and how long a call to it may take. With no `url`, SQLite in
//! the state directory: systemd's `$STATE_DIRECTORY`, else
//! `/var/lib/autoencrypt-milter`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::ConfigError;
use super::forms::opt_path;

/// Where the store lives when neither `url` nor `$STATE_DIRECTORY` says.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/autoencrypt-milter";

/// The SQLite file's name in the state directory.
pub const DEFAULT_STORE_FILE: &str = "keys.sqlite";

/// `[store]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sqlite:///path/keys.sqlite` (a relative path is in the state
    /// directory), `postgres://user@host:port/db?sslmode=…` for a fleet;
    /// `""` = `keys.sqlite` in the state directory.
    pub url: String,
    /// PostgreSQL: file whose first line is the password (owner-only).
    #[serde(with = "opt_path")]
    pub password_file: Option<PathBuf>,
    /// PostgreSQL TLS: PEM file of the only CAs that vouch for the server.
    #[serde(with = "opt_path")]
    pub ca_file: Option<PathBuf>,
    /// PostgreSQL: connecting, logging in and checking the schema, in
    /// milliseconds (1 to 60000).
    pub connect_timeout_ms: u64,
    /// One call to the store, in milliseconds (1 to 60000).
    pub timeout_ms: u64,
    /// How stale pins, learned keys and key history may be on a host, in
    /// seconds (1 to 86400).
    pub refresh_secs: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: String::new(),
            password_file: None,
            ca_file: None,
            connect_timeout_ms: 3_000,
            timeout_ms: 2_000,
            refresh_secs: 30,
        }
    }
}

impl StoreConfig {
    /// The URL to open: `url`, with `""` and relative SQLite paths
    /// resolved in the state directory.
    pub fn resolved_url(&self) -> String {
        resolve(&self.url, std::env::var_os("STATE_DIRECTORY"))
    }
}

/// `url` resolved against `state_directory` (systemd may list several,
/// colon-separated: the first is ours).
fn resolve(url: &str, state_directory: Option<OsString>) -> String {
    let url = url.trim();
    let state = state_directory
        .and_then(|s| {
            s.to_str()
                .and_then(|s| s.split(':').next())
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
    if url.is_empty() {
        return format!("sqlite://{}", state.join(DEFAULT_STORE_FILE).display());
    }
    match url.strip_prefix("sqlite://") {
        Some(p) if Path::new(p).is_relative() => {
            format!("sqlite://{}", state.join(p).display())
        }
        _ => url.to_owned(),
    }
}

/// The checks of `[store]`; `invalid(key, message)` makes the error.
pub(super) fn validate(
    s: &StoreConfig,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<(), ConfigError> {
    let range = |key: &str, v: u64, lo: u64, hi: u64| {
        if (lo..=hi).contains(&v) {
            Ok(())
        } else {
            Err(invalid(key, format!("{v} is out of range ({lo} to {hi})")))
        }
    };
    range("store.connect_timeout_ms", s.connect_timeout_ms, 1, 60_000)?;
    range("store.timeout_ms", s.timeout_ms, 1, 60_000)?;
    range("store.refresh_secs", s.refresh_secs, 1, 86_400)?;
    let url = s.url.trim();
    let postgres = url.starts_with("postgres://") || url.starts_with("postgresql://");
    if postgres {
        let authority = url
            .split_once("://")
            .map(|(_, r)| r.split(['/', '?']).next().unwrap_or(""))
            .unwrap_or("");
        let in_userinfo = authority
            .rsplit_once('@')
            .is_some_and(|(userinfo, _)| userinfo.contains(':'));
        if in_userinfo || url.contains("password=") {
            return Err(invalid(
                "store.url",
                "holds a password: put it in store.password_file instead".to_owned(),
            ));
        }
    } else if !(url.is_empty() || url.len() > "sqlite://".len() && url.starts_with("sqlite://")) {
        return Err(invalid(
            "store.url",
            format!("{url:?} is not sqlite:///path/keys.sqlite or postgres://…"),
        ));
    }
    if !postgres {
        for (key, set) in [
            ("store.password_file", s.password_file.is_some()),
            ("store.ca_file", s.ca_file.is_some()),
        ] {
            if set {
                return Err(invalid(key, "is for a postgres:// store only".to_owned()));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn urls_resolve_in_the_state_directory() {
        assert_eq!(
            resolve("", None),
            "sqlite:///var/lib/autoencrypt-milter/keys.sqlite"
        );
        assert_eq!(
            resolve("", Some("/var/lib/aem:/var/lib/other".into())),
            "sqlite:///var/lib/aem/keys.sqlite"
        );
        assert_eq!(
            resolve("sqlite://k.db", Some("/s".into())),
            "sqlite:///s/k.db"
        );
        assert_eq!(resolve("sqlite:///abs/k.db", None), "sqlite:///abs/k.db");
        assert_eq!(resolve("postgres://u@h/db", None), "postgres://u@h/db");
    }

    #[test]
    fn checks() {
        let invalid = |k: &str, m: String| ConfigError::Invalid {
            location: super::super::Location::Default,
            key: Some(k.to_owned()),
            message: m,
        };
        let ok = |s: StoreConfig| validate(&s, &invalid).is_ok();
        assert!(ok(StoreConfig::default()));
        for url in ["postgres://u@h/db", "sqlite:///x", "sqlite://rel"] {
            assert!(ok(StoreConfig {
                url: url.into(),
                ..StoreConfig::default()
            }));
        }
        for url in [
            "postgres://u:pw@h/db",
            "postgres://u@h/db?password=pw",
            "mysql://h/db",
            "sqlite://",
            "/var/lib/x.sqlite",
        ] {
            assert!(
                !ok(StoreConfig {
                    url: url.into(),
                    ..StoreConfig::default()
                }),
                "{url}"
            );
        }
        assert!(!ok(StoreConfig {
            password_file: Some("/pw".into()),
            ..StoreConfig::default()
        }));
        assert!(!ok(StoreConfig {
            timeout_ms: 0,
            ..StoreConfig::default()
        }));
    }
}
