//! `[wkd]` and `[keyserver]`: the web-PKI key sources. `[wkd]` also
//! holds the limits of every HTTPS fetch (the keyserver's too: one HTTP
//! client, one set of bounds), so that an operator tunes them in one
//! place.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::error::ConfigError;
use super::forms::{opt_path, string_list};

/// `[wkd]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WkdConfig {
    /// Ask the recipient domain's Web Key Directory for OpenPGP keys.
    pub enabled: bool,
    /// PEM file of CA certificates trusted besides the system roots
    /// (a private PKI, the tests' CA); `None` (written `""`) means the
    /// system roots only.
    #[serde(with = "opt_path")]
    pub ca_file: Option<PathBuf>,
    /// Time to open the TCP connection and finish the TLS handshake with
    /// one address, in milliseconds (1 to 60000).
    pub connect_timeout_ms: u64,
    /// Time for a whole fetch — host lookup, connections, redirects,
    /// response — in milliseconds (1 to 60000).
    pub timeout_ms: u64,
    /// Largest response body accepted, in bytes (1 KiB to 16 MiB); a
    /// larger one is a failure, never "no key".
    pub max_response_bytes: u64,
    /// Redirects followed (0 to 10); `https://` only.
    pub max_redirects: u32,
    /// HTTPS fetches in flight at once, WKD and keyservers together (1 to
    /// 4096); a fetch beyond it waits within its `timeout_ms`.
    pub max_in_flight: usize,
    /// Connect to loopback, private, link-local and other non-public
    /// addresses (off: a recipient's domain cannot make the milter probe
    /// the operator's own network; the tests turn it on).
    pub allow_private_addresses: bool,
}

impl Default for WkdConfig {
    fn default() -> Self {
        WkdConfig {
            enabled: true,
            ca_file: None,
            connect_timeout_ms: 3_000,
            timeout_ms: 5_000,
            max_response_bytes: 262_144,
            max_redirects: 3,
            max_in_flight: 64,
            allow_private_addresses: false,
        }
    }
}

/// `[keyserver]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeyserverConfig {
    /// Base URLs of verifying keyservers speaking the VKS API
    /// (`https://keys.openpgp.org`), asked in order; empty = no keyserver.
    #[serde(deserialize_with = "string_list")]
    pub urls: Vec<String>,
}

/// The range checks of `[wkd]` and the URL checks of `[keyserver]`;
/// `invalid(key, message)` makes the error.
pub(super) fn validate(
    wkd: &WkdConfig,
    keyserver: &mut KeyserverConfig,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<(), ConfigError> {
    let range = |key: &str, v: u64, lo: u64, hi: u64| {
        super::forms::in_range(v, lo, hi).map_err(|m| invalid(key, m))
    };
    range("wkd.connect_timeout_ms", wkd.connect_timeout_ms, 1, 60_000)?;
    range("wkd.timeout_ms", wkd.timeout_ms, 1, 60_000)?;
    range(
        "wkd.max_response_bytes",
        wkd.max_response_bytes,
        1_024,
        16 * 1_048_576,
    )?;
    range("wkd.max_redirects", u64::from(wkd.max_redirects), 0, 10)?;
    range("wkd.max_in_flight", wkd.max_in_flight as u64, 1, 4_096)?;
    for url in &mut keyserver.urls {
        let trimmed = url.trim().trim_end_matches('/').to_owned();
        let parsed = crate::keys::web::check_base_url(&trimmed)
            .map_err(|why| invalid("keyserver.urls", why))?;
        *url = parsed;
    }
    Ok(())
}
