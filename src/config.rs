//! Configuration: the typed [`Config`], and its loading in three layers —
//! built-in defaults, then the TOML file given by `--config`, then
//! `AUTOENCRYPT_<SECTION>__<KEY>` environment variables (figment).
//!
//! This module owns every configuration key, its type and its validation,
//! and the attribution of a value to where it came from: every error names
//! the file and line (or the environment variable) and the key. figment
//! forgets spans, so the file is first parsed with the `toml` crate, which
//! keeps them; figment then does the layering.
//!
//! The policy rules are not configuration in this sense: they live in
//! `policy_dir` and are read by [`crate::policy`].

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::material::SmimeCipher;

/// Default configuration file (also the default of `--config`).
pub const DEFAULT_CONFIG: &str = "/etc/autoencrypt-milter/autoencrypt-milter.toml";

/// Default policy directory.
pub const DEFAULT_POLICY_DIR: &str = "/etc/autoencrypt-milter/policies";

/// Prefix of the environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "AUTOENCRYPT_";

/// Every configuration key, as a dotted path, in documentation order.
pub const KEYS: &[&str] = &[
    "socket",
    "socket_mode",
    "metrics_listen",
    "local_domains",
    "policy_dir",
    "dry_run",
    "log_level",
    "dns.mode",
    "dns.resolvers",
    "dns.trust_anchor",
    "dns.timeout_ms",
    "dns.allow_insecure",
    "dns.lowercase_fallback",
    "keys.directory",
    "smime.cipher",
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
    /// DNS lookups.
    pub dns: DnsConfig,
    /// Local key store.
    pub keys: KeysConfig,
    /// S/MIME output.
    pub smime: SmimeConfig,
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
            dns: DnsConfig::default(),
            keys: KeysConfig::default(),
            smime: SmimeConfig::default(),
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

/// The milter socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Socket {
    /// `inet:HOST:PORT` — an IPv4 address or a host name.
    Inet {
        /// Address or name to bind.
        host: String,
        /// TCP port.
        port: u16,
    },
    /// `inet6:[ADDR]:PORT`.
    Inet6 {
        /// IPv6 address to bind.
        addr: Ipv6Addr,
        /// TCP port.
        port: u16,
    },
    /// `unix:/path`.
    Unix(PathBuf),
}

/// Why a socket specification is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid socket {input:?}: {reason} (expected inet:HOST:PORT, inet6:[ADDR]:PORT or unix:/path)"
)]
pub struct SocketError {
    /// The text given.
    pub input: String,
    /// What is wrong.
    pub reason: &'static str,
}

impl FromStr for Socket {
    type Err = SocketError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| SocketError {
            input: s.to_owned(),
            reason,
        };
        let port = |p: &str| match p.parse::<u16>() {
            Ok(0) => Err(err("port 0")),
            Ok(n) => Ok(n),
            Err(_) => Err(err("bad port")),
        };
        if let Some(rest) = s.strip_prefix("unix:") {
            if rest.is_empty() {
                return Err(err("empty path"));
            }
            return Ok(Socket::Unix(PathBuf::from(rest)));
        }
        if let Some(rest) = s.strip_prefix("inet6:") {
            let rest = rest
                .strip_prefix('[')
                .ok_or_else(|| err("IPv6 address must be in brackets"))?;
            let (addr, p) = rest.split_once("]:").ok_or_else(|| err("missing ]:PORT"))?;
            let addr = addr
                .parse::<Ipv6Addr>()
                .map_err(|_| err("bad IPv6 address"))?;
            return Ok(Socket::Inet6 {
                addr,
                port: port(p)?,
            });
        }
        if let Some(rest) = s.strip_prefix("inet:") {
            let (host, p) = rest.rsplit_once(':').ok_or_else(|| err("missing :PORT"))?;
            if host.is_empty() {
                return Err(err("empty host"));
            }
            let host_ok = host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
            if !host_ok {
                return Err(err("bad host (IPv6 needs inet6:[ADDR]:PORT)"));
            }
            return Ok(Socket::Inet {
                host: host.to_owned(),
                port: port(p)?,
            });
        }
        Err(err("unknown kind"))
    }
}

impl fmt::Display for Socket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Socket::Inet { host, port } => write!(f, "inet:{host}:{port}"),
            Socket::Inet6 { addr, port } => write!(f, "inet6:[{addr}]:{port}"),
            Socket::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl Serialize for Socket {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        via_str::serialize(self, s)
    }
}

impl<'de> Deserialize<'de> for Socket {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        via_str::deserialize(d)
    }
}

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

/// A loaded configuration with the origin of every value.
#[derive(Clone, Debug)]
pub struct LoadedConfig {
    /// The effective configuration.
    pub config: Config,
    /// The configuration file that was read, if one existed.
    pub file: Option<PathBuf>,
    /// Where each key of [`KEYS`] came from.
    pub origins: BTreeMap<String, Location>,
}

/// Whether the configuration file must exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileRequirement {
    /// Absent is fine (the default path: built-in defaults apply).
    Optional,
    /// Absent is an error (a path the administrator named).
    Required,
}

impl FileRequirement {
    /// `Optional` for [`DEFAULT_CONFIG`], `Required` for any other path: a
    /// mistyped `--config` must not silently run on defaults.
    pub fn for_path(path: &Path) -> Self {
        if path == Path::new(DEFAULT_CONFIG) {
            FileRequirement::Optional
        } else {
            FileRequirement::Required
        }
    }
}

impl Config {
    /// Loads the configuration from `path` and the process environment.
    pub fn load(path: &Path, req: FileRequirement) -> Result<LoadedConfig, ConfigError> {
        // Non-UTF-8 variables cannot be configuration values; skipping them
        // is right because none of ours can be named that way either.
        let env = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
        Self::load_with_env(path, req, env)
    }

    /// Loads the configuration from `path` and the given environment
    /// (only `AUTOENCRYPT_`-prefixed variables are read). Tests pass their
    /// own environment instead of mutating the process's.
    pub fn load_with_env(
        path: &Path,
        req: FileRequirement,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<LoadedConfig, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => Some(t),
            Err(e) if e.kind() == io::ErrorKind::NotFound => match req {
                FileRequirement::Optional => None,
                FileRequirement::Required => {
                    return Err(ConfigError::NotFound {
                        path: path.to_owned(),
                    });
                }
            },
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };

        // Pass 1: the file alone, with spans, so that syntax errors,
        // unknown keys and bad values get their line.
        let index = match &text {
            Some(t) => {
                let index = TomlIndex::parse(path, t)?;
                if let Err(e) = toml::from_str::<Config>(t) {
                    return Err(index.error(&e));
                }
                Some(index)
            }
            None => None,
        };

        // Pass 2: the layering.
        let mut figment = Figment::new().merge(Serialized::defaults(Config::default()));
        if text.is_some() {
            figment = figment.merge(Toml::file_exact(path));
        }
        let mut vars: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        vars.sort();
        for (var, value) in vars {
            figment = figment.merge(EnvVar::new(var, &value)?);
        }
        let locate = |key: &str| -> Location {
            match figment.find_metadata(key) {
                Some(md) => origin_of(md, key, index.as_ref()),
                None => Location::Default,
            }
        };
        let mut config: Config = match figment.extract() {
            Ok(c) => c,
            Err(e) => return Err(figment_error(e, index.as_ref())),
        };

        config.validate(&locate)?;
        let origins: BTreeMap<String, Location> =
            KEYS.iter().map(|k| ((*k).to_owned(), locate(k))).collect();

        // Relative paths written in the file are relative to the file, so
        // that a configuration directory can be moved as a whole.
        if let Some(base) = path.parent() {
            let in_file = |k: &str| matches!(origins.get(k), Some(Location::File { .. }));
            if in_file("policy_dir") && config.policy_dir.is_relative() {
                config.policy_dir = base.join(&config.policy_dir);
            }
            if in_file("keys.directory")
                && let Some(d) = config.keys.directory.as_mut().filter(|d| d.is_relative())
            {
                *d = base.join(&*d);
            }
            if in_file("dns.trust_anchor")
                && let Some(d) = config.dns.trust_anchor.as_mut().filter(|d| d.is_relative())
            {
                *d = base.join(&*d);
            }
        }

        Ok(LoadedConfig {
            config,
            file: text.map(|_| path.to_owned()),
            origins,
        })
    }

    /// Checks what the types alone cannot, and normalises `local_domains`.
    fn validate(&mut self, locate: &dyn Fn(&str) -> Location) -> Result<(), ConfigError> {
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

/// Where figment says a key came from.
fn origin_of(md: &Metadata, key: &str, index: Option<&TomlIndex>) -> Location {
    if let Some(path) = md.source.as_ref().and_then(|s| s.file_path()) {
        let line = index.and_then(|i| i.line_of_key(key));
        return Location::File {
            path: path.to_owned(),
            line,
        };
    }
    if let Some(var) = md.name.strip_prefix(ENV_VAR_NAME_PREFIX) {
        return Location::Env {
            var: var.to_owned(),
        };
    }
    Location::Default
}

/// Turns a figment extraction error into one naming file+line or variable.
fn figment_error(e: figment::Error, index: Option<&TomlIndex>) -> ConfigError {
    let mut key = e.path.join(".");
    if let figment::error::Kind::UnknownField(field, _) = &e.kind {
        key = if key.is_empty() {
            field.clone()
        } else {
            format!("{key}.{field}")
        };
    }
    let location = match &e.metadata {
        Some(md) => origin_of(md, &key, index),
        None => Location::Default,
    };
    ConfigError::Invalid {
        location,
        key: (!key.is_empty()).then_some(key),
        message: e.kind.to_string(),
    }
}

const ENV_VAR_NAME_PREFIX: &str = "environment variable ";

/// One `AUTOENCRYPT_…` variable as a figment provider, so that an error
/// names the variable (figment's own `Env` names only the prefix).
struct EnvVar {
    var: String,
    key: String,
    value: Value,
}

impl EnvVar {
    fn new(var: String, value: &str) -> Result<Self, ConfigError> {
        let rest = &var[ENV_PREFIX.len()..];
        let key = rest.to_ascii_lowercase().replace("__", ".");
        if key.is_empty() || key.split('.').any(str::is_empty) {
            return Err(ConfigError::Invalid {
                location: Location::Env { var },
                key: None,
                message:
                    "not a configuration key (expected AUTOENCRYPT_KEY or AUTOENCRYPT_SECTION__KEY)"
                        .to_owned(),
            });
        }
        // figment reads "3000" as an integer, "true" as a bool and
        // "[a, b]" as an array, as its own Env provider does.
        let value = match value.parse::<Value>() {
            Ok(v) => v,
            Err(never) => match never {},
        };
        Ok(EnvVar { var, key, value })
    }
}

impl Provider for EnvVar {
    fn metadata(&self) -> Metadata {
        Metadata::named(format!("{ENV_VAR_NAME_PREFIX}{}", self.var))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Serialized::default(&self.key, &self.value).data()
    }
}

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

/// Values written as strings and parsed with `FromStr`.
mod via_str {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<T: Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        let s = String::deserialize(d)?;
        s.parse().map_err(D::Error::custom)
    }
}

/// `""` ↔ `None`, otherwise `IP:PORT`.
mod opt_socket_addr {
    use std::net::SocketAddr;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(v: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(a) => s.collect_str(a),
            None => s.serialize_str(""),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() {
            return Ok(None);
        }
        s.parse().map(Some).map_err(|_| {
            D::Error::custom(format!("{s:?} is not IP:PORT (\"\" disables the endpoint)"))
        })
    }
}

/// `""` ↔ `None`, otherwise a path.
mod opt_path {
    use std::path::PathBuf;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(p) => s.collect_str(&p.display()),
            None => s.serialize_str(""),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
        let s = String::deserialize(d)?;
        Ok((!s.is_empty()).then(|| PathBuf::from(s)))
    }
}

/// A list of strings, also accepted as one comma- or space-separated
/// string (convenient in environment variables).
fn string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::Many(v) => v,
        OneOrMany::One(s) => s
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

/// `dns.resolvers`: `IP` (port 53) or `IP:PORT`, as a list or one string.
mod resolver_list {
    use std::net::SocketAddr;

    use serde::{Deserializer, Serializer, de::Error, ser::SerializeSeq};

    pub fn serialize<S: Serializer>(v: &[SocketAddr], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for a in v {
            seq.serialize_element(&a.to_string())?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
        super::string_list(d)?
            .iter()
            .map(|s| super::parse_resolver(s).map_err(D::Error::custom))
            .collect()
    }
}

fn parse_resolver(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    match s.parse::<IpAddr>() {
        Ok(ip) => Ok(SocketAddr::new(ip, 53)),
        Err(_) => Err(format!(
            "resolver {s:?} is not IP or IP:PORT ([v6]:PORT for IPv6 with a port)"
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]
    use super::*;

    #[test]
    fn sockets_parse_and_round_trip() {
        for s in [
            "inet:127.0.0.1:10040",
            "inet:localhost:1",
            "inet6:[::1]:10040",
            "unix:/run/a.sock",
        ] {
            assert_eq!(s.parse::<Socket>().unwrap().to_string(), s);
        }
        for bad in [
            "inet:127.0.0.1",
            "inet::25",
            "inet:1.2.3.4:0",
            "inet:1.2.3.4:70000",
            "inet6:::1:25",
            "inet6:[zz]:25",
            "unix:",
            "tcp:1.2.3.4:5",
            "inet:::1:25",
        ] {
            assert!(bad.parse::<Socket>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn resolvers_default_to_port_53() {
        assert_eq!(
            parse_resolver("192.0.2.1").unwrap(),
            "192.0.2.1:53".parse().unwrap()
        );
        assert_eq!(
            parse_resolver("[::1]:5353").unwrap(),
            "[::1]:5353".parse().unwrap()
        );
        assert!(parse_resolver("resolver.example").is_err());
    }

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

    #[test]
    fn index_lines_and_keys() {
        let text = "a = 1\n[dns]\ntimeout_ms = \"x\"\n";
        let idx = TomlIndex::parse(Path::new("f.toml"), text).unwrap();
        assert_eq!(idx.line_of_key("dns.timeout_ms"), Some(3));
        assert_eq!(idx.line_at(0), 1);
        assert_eq!(idx.line_at(6), 2);
    }
}
