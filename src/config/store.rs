//! `[store]` and `[harvest]`: where the key store lives (learned keys,
//! the fingerprints each source returned, pins, key changes) and how keys
//! are learned from inbound mail; with the top-level `authserv_id`, whose
//! `Authentication-Results` fields harvesting trusts.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::ConfigError;
use super::forms::opt_path;

/// Where the store lives when `store.url` is empty and systemd gives no
/// `STATE_DIRECTORY`.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/autoencrypt-milter";

/// The file name of the default SQLite store in the state directory.
pub const DEFAULT_STORE_FILE: &str = "keys.sqlite";

/// `[store]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sqlite:///path/keys.sqlite` (one host) or
    /// `postgres://user@host:port/db?sslmode=require` (a fleet sharing
    /// one store); `""` = a SQLite file in the state directory
    /// ([`StoreConfig::effective_url`]).
    pub url: String,
    /// File holding the PostgreSQL password (owner-only); `None` (written
    /// `""`) = no password. Never in the URL.
    #[serde(with = "opt_path")]
    pub password_file: Option<PathBuf>,
    /// PEM file of the CAs that may vouch for the PostgreSQL server (only
    /// these); `None` = the system roots.
    #[serde(with = "opt_path")]
    pub ca_file: Option<PathBuf>,
    /// Time to connect to PostgreSQL, in milliseconds (1 to 60000).
    pub connect_timeout_ms: u64,
    /// Time for one store operation, in milliseconds (1 to 60000).
    pub timeout_ms: u64,
    /// How stale a host's view of the store may be, in seconds (1 to
    /// 3600): pins, learned keys and key history are re-read at least this
    /// often, so a `keys pin` on one host takes effect on every host
    /// within it.
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
    /// The URL in force: `url`, or `sqlite://` a file in `state_dir`
    /// (systemd's `STATE_DIRECTORY`, else [`DEFAULT_STATE_DIR`]).
    pub fn effective_url(&self, state_dir: Option<&Path>) -> String {
        if !self.url.is_empty() {
            return self.url.clone();
        }
        let dir = state_dir.unwrap_or(Path::new(DEFAULT_STATE_DIR));
        format!("sqlite://{}", dir.join(DEFAULT_STORE_FILE).display())
    }

    /// [`StoreConfig::effective_url`] with the state directory systemd
    /// gives (`STATE_DIRECTORY`; its first entry when it lists several).
    pub fn url_in_force(&self) -> String {
        let state = std::env::var_os("STATE_DIRECTORY").map(|v| {
            let s = v.to_string_lossy().into_owned();
            PathBuf::from(s.split(':').next().unwrap_or_default())
        });
        self.effective_url(state.as_deref().filter(|p| !p.as_os_str().is_empty()))
    }
}

/// `[harvest]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HarvestConfig {
    /// Learn keys from authenticated inbound mail (S/MIME signatures,
    /// Autocrypt headers). Needs `authserv_id`.
    pub enabled: bool,
    /// Messages waiting to be examined (1 to 65536); when it is full, a
    /// message is not examined (counted), never delayed.
    pub queue: usize,
    /// Signed messages larger than this are not examined (counted), in
    /// bytes (1 KiB to 64 MiB): verifying a signature reads the whole
    /// message.
    pub max_message_bytes: u64,
    /// Learn from `Autocrypt:` headers that the `From:` domain's DKIM
    /// signature does not cover (most providers do not sign the field).
    /// Off: anyone holding one DKIM-signed message of a sender could add a
    /// header with their own key and replay it.
    pub autocrypt_unsigned: bool,
    /// Learn keys although the milter listens on a TCP socket. Harvesting
    /// believes the `Authentication-Results` fields of whoever connects:
    /// on TCP every local user can connect, write a pass and plant a key,
    /// so a unix socket only the MTA's group can reach is required unless
    /// this says otherwise.
    pub allow_inet_socket: bool,
    /// A sender whose key was confirmed (learned, or found known) is not
    /// examined again for this many seconds (0 to 86400; 0 = every
    /// message): a key rollover is then learned from a message after it.
    pub recheck_secs: u64,
    /// Messages examined per second at most (1 to 100000); beyond it a
    /// message is not examined (counted), so a flood of signed mail takes
    /// a bounded share of the CPU.
    pub max_per_second: u32,
}

impl Default for HarvestConfig {
    fn default() -> Self {
        HarvestConfig {
            enabled: true,
            queue: 256,
            max_message_bytes: 4_194_304,
            autocrypt_unsigned: false,
            allow_inet_socket: false,
            recheck_secs: 600,
            max_per_second: 50,
        }
    }
}

/// The checks of `authserv_id`, `[store]` and `[harvest]`;
/// `invalid(key, message)` makes the error.
pub(super) fn validate(
    authserv_id: &mut String,
    store: &mut StoreConfig,
    harvest: &HarvestConfig,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<(), ConfigError> {
    let range = |key: &str, v: u64, lo: u64, hi: u64| {
        super::forms::in_range(v, lo, hi).map_err(|m| invalid(key, m))
    };
    let id = authserv_id.trim();
    // RFC 8601 §2.5: a domain name, compared case-insensitively; a value
    // with spaces or ';' could never equal a parsed authserv-id.
    if id
        .chars()
        .any(|c| c.is_whitespace() || c == ';' || c.is_control())
    {
        return Err(invalid(
            "authserv_id",
            format!("{authserv_id:?} is not an authserv-id (a host name, as the MTA writes it)"),
        ));
    }
    *authserv_id = id.to_owned();
    store.url = store.url.trim().to_owned();
    if !store.url.is_empty()
        && !store.url.starts_with("sqlite://")
        && !store.url.starts_with("postgres://")
        && !store.url.starts_with("postgresql://")
    {
        return Err(invalid(
            "store.url",
            format!(
                "{:?} is neither sqlite://PATH nor postgres://HOST/DB",
                store.url
            ),
        ));
    }
    // `postgres://user:secret@host/db`: the URL is printed by
    // check-config and in logs; the password belongs in password_file.
    if let Some(rest) = store
        .url
        .strip_prefix("postgres://")
        .or_else(|| store.url.strip_prefix("postgresql://"))
        && let Some((userinfo, _)) = rest.split_once('@')
        && userinfo.contains(':')
    {
        return Err(invalid(
            "store.url",
            "a password in the URL would be shown wherever the URL is; put it in \
             store.password_file"
                .to_owned(),
        ));
    }
    if store.url == "sqlite://" {
        return Err(invalid(
            "store.url",
            "sqlite:// needs a path (sqlite:///var/lib/autoencrypt-milter/keys.sqlite)".to_owned(),
        ));
    }
    range(
        "store.connect_timeout_ms",
        store.connect_timeout_ms,
        1,
        60_000,
    )?;
    range("store.timeout_ms", store.timeout_ms, 1, 60_000)?;
    range("store.refresh_secs", store.refresh_secs, 1, 3_600)?;
    range("harvest.queue", harvest.queue as u64, 1, 65_536)?;
    range("harvest.recheck_secs", harvest.recheck_secs, 0, 86_400)?;
    range(
        "harvest.max_per_second",
        u64::from(harvest.max_per_second),
        1,
        100_000,
    )?;
    range(
        "harvest.max_message_bytes",
        harvest.max_message_bytes,
        1_024,
        64 * 1_048_576,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn empty_url_means_a_file_in_the_state_directory() {
        let c = StoreConfig::default();
        assert_eq!(
            c.effective_url(None),
            "sqlite:///var/lib/autoencrypt-milter/keys.sqlite"
        );
        assert_eq!(
            c.effective_url(Some(Path::new("/srv/state"))),
            "sqlite:///srv/state/keys.sqlite"
        );
        let set = StoreConfig {
            url: "postgres://aem@db/keys".into(),
            ..StoreConfig::default()
        };
        assert_eq!(set.effective_url(None), "postgres://aem@db/keys");
    }

    #[test]
    fn bad_values_are_refused_with_their_key() {
        let invalid = |k: &str, m: String| ConfigError::Invalid {
            location: super::super::Location::Default,
            key: Some(k.to_owned()),
            message: m,
        };
        let h = HarvestConfig::default();
        let check = |id: &str, url: &str| {
            let mut id = id.to_owned();
            let mut s = StoreConfig {
                url: url.to_owned(),
                ..StoreConfig::default()
            };
            validate(&mut id, &mut s, &h, &invalid).map(|()| (id, s.url))
        };
        assert_eq!(
            check(" mx.example.org ", "").unwrap(),
            ("mx.example.org".to_owned(), String::new())
        );
        for (id, url, key) in [
            ("mx example", "", "authserv_id"),
            ("mx;x", "", "authserv_id"),
            ("", "mysql://x/y", "store.url"),
            ("", "sqlite://", "store.url"),
            ("", "postgres://aem:secret@db/keys", "store.url"),
        ] {
            let e = check(id, url).unwrap_err().to_string();
            assert!(e.contains(key), "{id:?} {url:?}: {e}");
        }
    }
}
