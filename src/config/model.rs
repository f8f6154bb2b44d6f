//! The typed configuration keys: [`Config`] and its sections, their
//! built-in defaults, and the checks the types alone cannot make
//! (ranges, `local_domains` in canonical form, `socket_mode`).
//!
//! How a value is written (strings, lists, `""` for none) is in
//! `forms`; where a value came from is the business of `load`.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::error::{ConfigError, Location};
use super::forms::{opt_path, opt_socket_addr, resolver_list, string_list, via_str};
use super::ldap::LdapConfig;
use super::signing::{SigningConfig, VerifyConfig};
use super::socket::Socket;
use super::store::{HarvestConfig, StoreConfig};
use super::web::{KeyserverConfig, WkdConfig};
use crate::material::SmimeCipher;

/// Default policy directory.
pub const DEFAULT_POLICY_DIR: &str = "/etc/autoencrypt-milter/policies";

/// Every configuration key, as a dotted path, in documentation order.
pub const KEYS: &[&str] = &[
    "socket",
    "socket_mode",
    "metrics_listen",
    "local_domains",
    "policy_dir",
    "dry_run",
    "log_level",
    "log_format",
    "authserv_id",
    "dns.mode",
    "dns.resolvers",
    "dns.trust_anchor",
    "dns.timeout_ms",
    "dns.allow_insecure",
    "dns.lowercase_fallback",
    "keys.directory",
    "wkd.enabled",
    "wkd.ca_file",
    "wkd.connect_timeout_ms",
    "wkd.timeout_ms",
    "wkd.max_response_bytes",
    "wkd.max_redirects",
    "wkd.max_in_flight",
    "wkd.allow_private_addresses",
    "keyserver.urls",
    "store.url",
    "store.password_file",
    "store.ca_file",
    "store.connect_timeout_ms",
    "store.timeout_ms",
    "store.refresh_secs",
    "harvest.enabled",
    "harvest.queue",
    "harvest.max_message_bytes",
    "harvest.autocrypt_unsigned",
    "harvest.allow_inet_socket",
    "harvest.recheck_secs",
    "harvest.max_per_second",
    "smime.cipher",
    "openpgp.hide_blind_recipients",
    "signing.key_dir",
    "signing.login_map",
    "signing.max_message_bytes",
    "verify.enabled",
    "verify.max_message_bytes",
    "limits.max_message_bytes",
    "limits.spool_threshold_bytes",
    "limits.max_header_bytes",
    "limits.memory_budget_bytes",
    "limits.max_connections",
    "limits.negotiation_timeout_ms",
    "limits.idle_timeout_secs",
];

/// The effective configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the milter listens for the MTA.
    pub socket: Socket,
    /// Permissions of a `unix:` socket, octal (`"0660"`: the MTA's user
    /// must be in the milter's group).
    pub socket_mode: String,
    /// Address of the /metrics and /healthz endpoint; `None` (written `""`)
    /// disables it.
    #[serde(with = "opt_socket_addr")]
    pub metrics_listen: Option<SocketAddr>,
    /// Domains whose recipients are "inbound" (lower-case, no trailing dot).
    #[serde(deserialize_with = "string_list")]
    pub local_domains: Vec<String>,
    /// Directory of policy files (`*.toml`, read in name order).
    pub policy_dir: PathBuf,
    /// Decide and log, but change no message.
    pub dry_run: bool,
    /// Log verbosity.
    pub log_level: LogLevel,
    /// Log line format.
    pub log_format: LogFormat,
    /// The receiving MTA's RFC 8601 authserv-id: harvesting trusts only
    /// `Authentication-Results` fields under it; `""` = none, and nothing
    /// is learned.
    pub authserv_id: String,
    /// DNS lookups.
    pub dns: DnsConfig,
    /// Local key store.
    pub keys: KeysConfig,
    /// Web Key Directory, and the limits of every HTTPS fetch.
    pub wkd: WkdConfig,
    /// Verifying keyservers.
    pub keyserver: KeyserverConfig,
    /// LDAP directories (`[[ldap]]` tables), asked in this order within
    /// a trust level.
    pub ldap: Vec<LdapConfig>,
    /// The key store: learned keys, key history, pins, key changes.
    pub store: StoreConfig,
    /// Learning keys from inbound mail.
    pub harvest: HarvestConfig,
    /// S/MIME output.
    pub smime: SmimeConfig,
    /// OpenPGP output.
    pub openpgp: OpenPgpConfig,
    /// Signing the mail of authenticated senders.
    pub signing: SigningConfig,
    /// Verifying the signatures of inbound mail.
    pub verify: VerifyConfig,
    /// Size limits.
    pub limits: LimitsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            socket: Socket::Inet {
                host: "127.0.0.1".to_owned(),
                port: 10040,
            },
            socket_mode: "0660".to_owned(),
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9184))),
            local_domains: Vec::new(),
            policy_dir: PathBuf::from(DEFAULT_POLICY_DIR),
            dry_run: false,
            log_level: LogLevel::Info,
            log_format: LogFormat::Text,
            authserv_id: String::new(),
            dns: DnsConfig::default(),
            keys: KeysConfig::default(),
            wkd: WkdConfig::default(),
            keyserver: KeyserverConfig::default(),
            ldap: Vec::new(),
            store: StoreConfig::default(),
            harvest: HarvestConfig::default(),
            smime: SmimeConfig::default(),
            openpgp: OpenPgpConfig::default(),
            signing: SigningConfig::default(),
            verify: VerifyConfig::default(),
            limits: LimitsConfig::default(),
        }
    }
}

/// `[dns]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// How DNSSEC is checked.
    pub mode: DnsMode,
    /// Resolvers to ask; empty means those of /etc/resolv.conf. A bare IP
    /// address means port 53.
    #[serde(with = "resolver_list")]
    pub resolvers: Vec<SocketAddr>,
    /// File of DNSKEY/DS records; `None` (written `""`) means the built-in
    /// root trust anchor.
    #[serde(with = "opt_path")]
    pub trust_anchor: Option<PathBuf>,
    /// Per-lookup timeout in milliseconds (1 to 60000).
    pub timeout_ms: u64,
    /// Use keys from unsigned zones. Off: such keys are never used.
    pub allow_insecure: bool,
    /// Retry with the local part lower-cased (RFC 7929 §3).
    pub lowercase_fallback: bool,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            mode: DnsMode::Validate,
            resolvers: Vec::new(),
            trust_anchor: None,
            timeout_ms: 3000,
            allow_insecure: false,
            lowercase_fallback: true,
        }
    }
}

/// `dns.mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DnsMode {
    /// Validate DNSSEC in-process.
    Validate,
    /// Trust the AD bit of a validating resolver on a trusted path.
    TrustAd,
}

/// `[keys]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    /// Local key directory; `None` (written `""`) means none.
    #[serde(with = "opt_path")]
    pub directory: Option<PathBuf>,
}

/// `[smime]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmimeConfig {
    /// Content cipher, unless a rule names its own.
    #[serde(with = "via_str")]
    pub cipher: SmimeCipher,
}

/// `[openpgp]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpenPgpConfig {
    /// Blind (Bcc) recipients get the anonymous key ID in their PKESK
    /// (RFC 9580 §5.1.8), so the other recipients cannot tell they
    /// received the message. Their software must then try its secret keys
    /// on it: GnuPG and Sequoia do; RNP only from 0.17 and when its caller
    /// allows it (Debian 12's 0.16.3 cannot).
    pub hide_blind_recipients: bool,
}

impl Default for OpenPgpConfig {
    fn default() -> Self {
        OpenPgpConfig {
            hide_blind_recipients: true,
        }
    }
}

/// `[limits]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Larger messages are handled as a failure of the matching rule.
    pub max_message_bytes: u64,
    /// Bodies larger than this are spooled to disk.
    pub spool_threshold_bytes: u64,

    // Memory bounds (issue 9.6).
    /// Header bytes kept per message (names, values, separators); beyond
    /// it the message is handled like one over `max_message_bytes`.
    pub max_header_bytes: u64,
    /// Bodies held in memory by all connections together; beyond it
    /// bodies are spooled to disk at once, whatever their size.
    pub memory_budget_bytes: u64,
    // Connections (see `milter::transport::Slots`).
    /// Milter connections open at once; beyond it a new connection takes
    /// the place of the oldest one that has not negotiated, or is closed
    /// at once.
    pub max_connections: usize,
    /// A connection that has not sent its first command (OPTNEG) within
    /// this many milliseconds is closed.
    pub negotiation_timeout_ms: u64,
    /// A connection on which the MTA sends nothing for this many seconds is
    /// closed (needs a restart to change).
    pub idle_timeout_secs: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_message_bytes: 52_428_800,
            spool_threshold_bytes: 4_194_304,
            // Ten header fields of Postfix's own `header_size_limit`
            // (102400); real headers are a few KiB, long Received and
            // ARC/DKIM chains stay far below.
            max_header_bytes: 1_048_576,
            memory_budget_bytes: crate::memory::DEFAULT_BUDGET,
            max_connections: 256,
            negotiation_timeout_ms: 5_000,
            idle_timeout_secs: 300,
        }
    }
}

/// `log_level`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warn,
    /// One line per message (the default).
    Info,
    /// Decisions in detail.
    Debug,
    /// Everything.
    Trace,
}

/// `log_format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (the default).
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

impl LogFormat {
    /// The name as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

impl LogLevel {
    /// The name as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

impl Config {
    /// Checks what the types alone cannot, and normalises `local_domains`.
    pub(super) fn validate(
        &mut self,
        locate: &dyn Fn(&str) -> Location,
    ) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            location: locate(key),
            key: Some(key.to_owned()),
            message,
        };
        let mut domains = Vec::with_capacity(self.local_domains.len());
        for d in &self.local_domains {
            // One canonical form (A-labels, lower case, no trailing dot), so
            // that `bücher.test` and `XN--BCHER-KVA.test.` are one domain.
            let trimmed = d.trim();
            let norm = match crate::address::domain::canonical_name(trimmed) {
                Ok(n) if !trimmed.contains('*') => n,
                _ => {
                    return Err(invalid(
                        "local_domains",
                        format!(
                            "{d:?} is not a domain name with a canonical (IDNA A-label) form \
                             (write \"example.org\"; subdomains are listed one by one)"
                        ),
                    ));
                }
            };
            if !domains.contains(&norm) {
                domains.push(norm);
            }
        }
        self.local_domains = domains;
        if self.policy_dir.as_os_str().is_empty() {
            return Err(invalid("policy_dir", "must not be empty".to_owned()));
        }
        if parse_mode(&self.socket_mode).is_none() {
            return Err(invalid(
                "socket_mode",
                format!(
                    "{:?} is not an octal file mode (write \"0660\")",
                    self.socket_mode
                ),
            ));
        }
        if !(1..=60_000).contains(&self.dns.timeout_ms) {
            return Err(invalid(
                "dns.timeout_ms",
                format!("{} is out of range (1 to 60000)", self.dns.timeout_ms),
            ));
        }
        if !(1..=65_536).contains(&self.limits.max_connections) {
            return Err(invalid(
                "limits.max_connections",
                format!(
                    "{} is out of range (1 to 65536)",
                    self.limits.max_connections
                ),
            ));
        }
        if !(100..=60_000).contains(&self.limits.negotiation_timeout_ms) {
            return Err(invalid(
                "limits.negotiation_timeout_ms",
                format!(
                    "{} is out of range (100 to 60000)",
                    self.limits.negotiation_timeout_ms
                ),
            ));
        }
        if !(1..=86_400).contains(&self.limits.idle_timeout_secs) {
            return Err(invalid(
                "limits.idle_timeout_secs",
                format!(
                    "{} is out of range (1 to 86400)",
                    self.limits.idle_timeout_secs
                ),
            ));
        }
        if self.limits.max_message_bytes == 0 {
            return Err(invalid(
                "limits.max_message_bytes",
                "must be greater than 0".to_owned(),
            ));
        }
        if self.limits.max_header_bytes == 0 {
            return Err(invalid(
                "limits.max_header_bytes",
                "must be greater than 0".to_owned(),
            ));
        }
        super::web::validate(&self.wkd, &mut self.keyserver, &|k, m| invalid(k, m))?;
        super::ldap::validate(&mut self.ldap, &|k, m| invalid(k, m))?;
        super::store::validate(
            &mut self.authserv_id,
            &mut self.store,
            &self.harvest,
            &|k, m| invalid(k, m),
        )?;
        if self.harvest.enabled
            && !self.authserv_id.is_empty()
            && !self.harvest.allow_inet_socket
            && !matches!(self.socket, Socket::Unix { .. })
        {
            return Err(invalid(
                "authserv_id",
                format!(
                    "harvesting keys from mail believes the Authentication-Results of whoever \
                     connects to the milter, and on {} every local user can: listen on a unix \
                     socket the MTA's group alone can reach (socket = \"unix:/run/\
                     autoencrypt-milter/milter.sock\"), or set harvest.allow_inet_socket = true, \
                     or harvest.enabled = false",
                    self.socket
                ),
            ));
        }
        Ok(())
    }

    /// `socket_mode` as permission bits.
    pub fn socket_mode_bits(&self) -> u32 {
        parse_mode(&self.socket_mode).unwrap_or(0o660)
    }

    /// Whether `domain` (any case, trailing dot allowed) is one of
    /// `local_domains`. Exact match only: subdomains are not local unless
    /// listed, so that `mail.partner.example.org` is not mistaken for ours.
    pub fn is_local_domain(&self, domain: &str) -> bool {
        crate::address::domain::canonical_name(domain)
            .is_ok_and(|d| self.local_domains.contains(&d))
    }

    /// The effective configuration as `key = value` lines (valid TOML with
    /// dotted keys), in [`KEYS`] order.
    pub fn to_lines(&self) -> Vec<(String, String)> {
        let table = match toml::Table::try_from(self) {
            Ok(t) => t,
            // Every field serialises to a TOML value; if that ever changed,
            // printing nothing is better than a panic in check-config.
            Err(_) => return Vec::new(),
        };
        KEYS.iter()
            .filter_map(|key| {
                let mut parts = key.split('.');
                let first = parts.next()?;
                let mut v = table.get(first)?;
                for p in parts {
                    v = v.get(p)?;
                }
                Some(((*key).to_owned(), v.to_string()))
            })
            .collect()
    }
}

/// An octal permission mode of at most 0777 (`"0660"`, `"660"`).
fn parse_mode(s: &str) -> Option<u32> {
    let digits = s.trim();
    if digits.is_empty() || digits.len() > 4 {
        return None;
    }
    u32::from_str_radix(digits, 8).ok().filter(|m| *m <= 0o777)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]
    use super::*;

    #[test]
    fn local_domain_match_is_exact_and_case_insensitive() {
        let c = Config {
            local_domains: vec!["example.org".into()],
            ..Config::default()
        };
        assert!(c.is_local_domain("EXAMPLE.org."));
        assert!(!c.is_local_domain("mail.example.org"));
        assert!(!c.is_local_domain("example.org.evil"));
    }

    #[test]
    fn local_domains_take_one_canonical_form() {
        let mut c = Config {
            local_domains: vec![
                "Bücher.test.".into(),
                "XN--BCHER-KVA.test".into(),
                "m\u{fc}ller\u{3002}test".into(),
            ],
            ..Config::default()
        };
        c.validate(&|_| Location::Default).unwrap();
        assert_eq!(
            c.local_domains,
            ["xn--bcher-kva.test", "xn--mller-kva.test"]
        );
        assert!(c.is_local_domain("müller.test"));
        assert!(c.is_local_domain("xn--bcher-kva.test."));
        for bad in ["xn--zz.test", "*.example.org", "a..b", "bü*cher.test"] {
            let mut c = Config {
                local_domains: vec![bad.into()],
                ..Config::default()
            };
            let e = c.validate(&|_| Location::Default).unwrap_err().to_string();
            assert!(e.contains("local_domains"), "{bad}: {e}");
        }
    }
}
