//! Where keys come from: the [`KeySource`] trait and its outcome,
//! [`Lookup`]. Sources only find key material; whether a key may be used
//! is the backend's decision ([`crate::backend::EncryptionBackend::validate`]).

pub mod directory;

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use crate::address::Address;
use crate::backend::{KeyMaterial, Method};

/// How far a found key is vouched for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Security {
    /// DNSSEC validated the answer.
    Secure,
    /// The administrator put the key there (local key directory).
    Local,
    /// From an unsigned zone, used only because `dns.allow_insecure` is on.
    Insecure,
}

/// Why a lookup could not be completed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailReason {
    /// No answer within `dns.timeout_ms`.
    Timeout,
    /// The resolver answered SERVFAIL.
    ServFail,
    /// Network or I/O error (connection refused, unreadable key file).
    Network(String),
}

impl fmt::Display for FailReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailReason::Timeout => f.write_str("timed out"),
            FailReason::ServFail => f.write_str("SERVFAIL"),
            FailReason::Network(s) => write!(f, "{s}"),
        }
    }
}

/// The outcome of looking up one method's keys for one address. A value,
/// not an error: `Bogus` and `Failed` are never "no key".
#[derive(Clone, Debug)]
pub enum Lookup {
    /// One or more keys (not yet validated).
    Found {
        /// The key material found.
        keys: Vec<KeyMaterial>,
        /// How it is vouched for.
        security: Security,
    },
    /// Proven absent (authenticated denial, or no file in the directory).
    NotFound,
    /// The zone is unsigned: whatever it holds is not trusted.
    Insecure,
    /// DNSSEC validation failed.
    Bogus(String),
    /// The lookup could not be completed.
    Failed(FailReason),
}

impl Lookup {
    /// Short name used in logs and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Lookup::Found { .. } => "found",
            Lookup::NotFound => "not_found",
            Lookup::Insecure => "insecure",
            Lookup::Bogus(_) => "bogus",
            Lookup::Failed(_) => "failed",
        }
    }
}

/// A boxed future, so that [`KeySource`] stays object-safe.
pub type LookupFuture<'a> = Pin<Box<dyn Future<Output = Lookup> + Send + 'a>>;

/// A place to find recipients' keys: DNS, a local directory, later others.
///
/// One call asks for one method's keys, because each method has its own
/// record type and its own outcome (a zone may prove SMIMEA absent while
/// the OPENPGPKEY query times out); callers run them concurrently.
pub trait KeySource: Send + Sync {
    /// Looks up `addr`'s keys for `method`.
    fn lookup<'a>(&'a self, addr: &'a Address, method: Method) -> LookupFuture<'a>;
}
