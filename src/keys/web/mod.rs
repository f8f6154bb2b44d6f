//! The web-PKI key sources' one HTTP client: HTTPS GETs with every bound
//! a hostile or broken server calls for, and their answers cached like
//! DNS answers. The WKD and keyserver sources (`crate::keys::wkd`,
//! `crate::keys::keyserver`) build URLs and read keys; this module only
//! fetches.
//!
//! * Host names are resolved through the DNS key source's resolvers (the
//!   configured ones, in `dns.mode`): a bogus address record is bogus, a
//!   name that does not exist is [`Fetched::NoSuchHost`].
//! * TLS is verified against the system roots plus `wkd.ca_file`, with
//!   the host name checked; nothing but `https://` is fetched, redirects
//!   included.
//! * Bounds: `wkd.connect_timeout_ms` per address, `wkd.timeout_ms` for
//!   the whole fetch (redirects and the wait for a slot included),
//!   `wkd.max_response_bytes`, `wkd.max_redirects`, `wkd.max_in_flight`.
//! * Both sources fetch OpenPGP keys for one address per URL, so a body is
//!   read when it arrives: a 200 that is not keys (an HTML page, more than
//!   16 certificates) is a failure, cached as one; otherwise only the
//!   certificates for the address are kept, within [`CACHE_BYTES`].
//! * Outcomes are values: 200 is a body; 404/410 and a refused connection
//!   are denials; a timeout, another status, a TLS failure, an oversized
//!   body or a bad redirect is a failure, never "no key".
//! * Only public addresses are connected to unless
//!   `wkd.allow_private_addresses` (`public.rs`): a recipient's domain
//!   must not make the milter open connections into the operator's
//!   network.
//! * A host that timed out or failed TLS is not asked again for
//!   [`FAILURE_TTL`], for any address (`down`).
//! * Cache: one fetch per URL shared by concurrent lookups; bodies kept
//!   for `Cache-Control: max-age` within [`MIN_TTL`]…[`MAX_TTL`]
//!   ([`MAX_TTL`] without one), denials up to [`MAX_NEGATIVE_TTL`],
//!   failures for [`FAILURE_TTL`].

pub(crate) mod answer;
mod down;
mod fetch;
mod public;
pub(crate) mod url;

use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use openssl::ssl::{SslConnector, SslMethod, SslVersion};
use tokio::sync::Semaphore;

use crate::address::Address;
use crate::config::WkdConfig;
use crate::keys::FailReason;
use crate::keys::cache::SharedCache;
pub use crate::keys::dns::{FAILURE_TTL, MAX_NEGATIVE_TTL};
pub use fetch::cache_control_max_age;
use url::HttpsUrl;

/// Shortest time any web answer is reused (`max-age=0` and `no-cache`
/// included): a burst of mail to one recipient costs one fetch.
pub const MIN_TTL: Duration = Duration::from_secs(60);
/// Longest time a fetched key is reused, whatever the server says (a
/// revoked or replaced key is noticed within it); also the time without
/// a `Cache-Control: max-age`.
pub const MAX_TTL: Duration = Duration::from_secs(3600);

/// Most bytes of keys the web answer cache holds, all answers together:
/// a hostile domain serving large valid keys under many local parts
/// cannot fill memory with them.
pub const CACHE_BYTES: usize = 32 * 1024 * 1024;

/// Settings of the HTTP client (from `[wkd]`).
#[derive(Clone, Debug)]
pub struct WebSettings {
    /// Extra CA certificates (PEM).
    pub ca_file: Option<PathBuf>,
    /// TCP connect plus TLS handshake, per address.
    pub connect_timeout: Duration,
    /// A whole fetch.
    pub timeout: Duration,
    /// Largest body accepted.
    pub max_response_bytes: u64,
    /// Redirects followed.
    pub max_redirects: u32,
    /// Fetches at once.
    pub max_in_flight: usize,
    /// Connect to non-public addresses too.
    pub allow_private_addresses: bool,
}

impl WebSettings {
    /// Settings from the configuration.
    pub fn from_config(c: &WkdConfig) -> Self {
        WebSettings {
            ca_file: c.ca_file.clone(),
            connect_timeout: Duration::from_millis(c.connect_timeout_ms),
            timeout: Duration::from_millis(c.timeout_ms),
            max_response_bytes: c.max_response_bytes,
            max_redirects: c.max_redirects,
            max_in_flight: c.max_in_flight,
            allow_private_addresses: c.allow_private_addresses,
        }
    }
}

/// The HTTP client cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum WebSetupError {
    /// `wkd.ca_file` is unreadable or holds no certificate.
    #[error("{}: wkd.ca_file: {reason}", path.display())]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// OpenSSL refused the TLS set-up.
    #[error("TLS client set-up: {0}")]
    Tls(String),
}

/// What resolving a host name gave.
#[derive(Clone, Debug)]
pub enum HostAnswer {
    /// Its addresses (IPv4 first).
    Addrs(Vec<IpAddr>),
    /// The name does not exist, or has no address records.
    NoSuchHost,
    /// DNSSEC validation of the address records failed.
    Bogus(String),
    /// The lookup could not be completed.
    Failed(FailReason),
}

/// A boxed future of a [`HostAnswer`].
pub type HostFuture<'a> = Pin<Box<dyn Future<Output = HostAnswer> + Send + 'a>>;

/// Resolves host names (the DNS key source, through its resolvers).
pub trait Hosts: Send + Sync {
    /// The addresses of `host`.
    fn resolve<'a>(&'a self, host: &'a str) -> HostFuture<'a>;
}

/// The outcome of one fetch (after redirects).
#[derive(Clone, Debug)]
pub enum Fetched {
    /// `200 OK` and its body.
    Body {
        /// The body, at most `wkd.max_response_bytes`.
        bytes: Bytes,
        /// The URL that answered (after redirects).
        url: String,
    },
    /// The body read for the address asked about (what the cache keeps):
    /// the certificates with a user ID for it, each with its fingerprint,
    /// and the fingerprints of the others.
    Keys {
        /// Binary certificates for the address, with fingerprints.
        matching: Vec<(Bytes, String)>,
        /// Fingerprints of certificates for other addresses.
        others: Vec<String>,
        /// The URL that answered (after redirects).
        url: String,
    },
    /// A denial: `404`/`410`, or the connection refused.
    NotFound(String),
    /// The host name does not exist (WKD then tries the direct method).
    NoSuchHost(String),
    /// The host's address records are DNSSEC-bogus.
    Bogus(String),
    /// No usable answer: timeout, another status, TLS, size, redirect.
    Failed(FailReason),
}

impl Fetched {
    /// One line for `policy explain` and `lookup`.
    pub fn describe(&self) -> String {
        match self {
            Fetched::Body { bytes, url } => format!("200, {} bytes from {url}", bytes.len()),
            Fetched::Keys { matching, url, .. } => {
                let bytes: usize = matching.iter().map(|(b, _)| b.len()).sum();
                format!("200 from {url}, {bytes} bytes of keys kept")
            }
            Fetched::NotFound(why) => format!("not found ({why})"),
            Fetched::NoSuchHost(host) => format!("no such host {host}"),
            Fetched::Bogus(why) => format!("DNSSEC bogus: {why}"),
            Fetched::Failed(why) => format!("failed: {why}"),
        }
    }
}

/// The HTTPS client of the web sources (one per engine, shared by them).
pub struct WebClient {
    settings: WebSettings,
    hosts: Arc<dyn Hosts>,
    tls: SslConnector,
    in_flight: Semaphore,
    cache: SharedCache<String, Fetched>,
    down: down::DownHosts,
    fetches: AtomicU64,
}

impl WebClient {
    /// A client resolving names with `hosts`; reads the system roots and
    /// `ca_file` once, here (at start and on reload, off the connection
    /// threads).
    pub fn new(settings: WebSettings, hosts: Arc<dyn Hosts>) -> Result<Self, WebSetupError> {
        let tls_err = |e: openssl::error::ErrorStack| WebSetupError::Tls(e.to_string());
        let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(tls_err)?;
        b.set_default_verify_paths().map_err(tls_err)?;
        b.set_min_proto_version(Some(SslVersion::TLS1_2))
            .map_err(tls_err)?;
        b.set_alpn_protos(b"\x08http/1.1").map_err(tls_err)?;
        if let Some(path) = &settings.ca_file {
            let bad = |reason: String| WebSetupError::CaFile {
                path: path.clone(),
                reason,
            };
            let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
            let certs =
                openssl::x509::X509::stack_from_pem(&pem).map_err(|e| bad(e.to_string()))?;
            if certs.is_empty() {
                return Err(bad("no PEM certificate in it".into()));
            }
            for c in certs {
                b.cert_store_mut()
                    .add_cert(c)
                    .map_err(|e| bad(e.to_string()))?;
            }
        }
        Ok(WebClient {
            in_flight: Semaphore::new(settings.max_in_flight),
            settings,
            hosts,
            tls: b.build(),
            cache: SharedCache::with_budget(CACHE_BYTES, weight),
            down: down::DownHosts::new(),
            fetches: AtomicU64::new(0),
        })
    }

    /// Fetches sent to the network so far (cache hits and shared fetches
    /// in flight send none).
    pub fn fetches_sent(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// `url`, which is where `addr`'s key lives, through the cache;
    /// concurrent callers share one fetch. A body is read for `addr` when
    /// it arrives and only what `addr` needs is kept ([`Fetched::Keys`]):
    /// each URL names one address (WKD: the hash and `l=` of the local
    /// part under its domain; a keyserver: the whole address). The flag
    /// says whether the answer came from the cache, the time when it
    /// arrived.
    pub(crate) async fn get(&self, url: &HttpsUrl, addr: &Address) -> (Fetched, bool, SystemTime) {
        self.cache
            .get_or_fetch(&url.text, || async {
                self.fetches.fetch_add(1, Ordering::Relaxed);
                match fetch::fetch(self, url).await {
                    (Fetched::Body { bytes, url }, ttl) => {
                        // Parsing a large key takes a while: off the
                        // threads that answer the MTA.
                        let owner = addr.clone();
                        let read = tokio::task::spawn_blocking(move || {
                            answer::read_body(&bytes, url, &owner)
                        })
                        .await
                        .unwrap_or_else(|e| {
                            Fetched::Failed(FailReason::BadAnswer(format!(
                                "reading the answer failed: {e}"
                            )))
                        });
                        match read {
                            keys @ Fetched::Keys { .. } => (keys, ttl),
                            // A 200 that is no key (an HTML page) is a
                            // failure, kept only as briefly as one.
                            other => (other, FAILURE_TTL),
                        }
                    }
                    other => other,
                }
            })
            .await
    }
}

/// The bytes a cached answer holds (the cache's budget counts them).
fn weight(f: &Fetched) -> usize {
    match f {
        Fetched::Keys { matching, .. } => matching.iter().map(|(b, _)| b.len()).sum(),
        Fetched::Body { bytes, .. } => bytes.len(),
        _ => 0,
    }
}

/// `text` as a keyserver base URL (`https://host[:port][/path]`, no query),
/// or why not.
pub fn check_base_url(text: &str) -> Result<String, String> {
    let u = HttpsUrl::parse(text)?;
    if u.target.contains(['?', '#']) {
        return Err(format!("{text:?}: a base URL has no query or fragment"));
    }
    Ok(text.to_owned())
}
