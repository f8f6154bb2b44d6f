//! Harvesting keys from inbound mail (issue 12): the pure part. Which
//! messages may teach a key ([`screen`], headers only, on the MTA's
//! thread at end of message) and what they teach ([`examine`], signature
//! verification and key validation, on the blocking pool). No I/O here:
//! the queue, the worker and the store are elsewhere.
//!
//! A message teaches only when the receiving MTA authenticated its author:
//! an `Authentication-Results` field under the configured authserv-id
//! saying DKIM passed for the `From:` domain, or DMARC passed for it
//! ([`auth_results`]). Then:
//!
//! * S/MIME ([`smime`]): a top-level signed message whose signature
//!   verifies, by exactly one signer, whose certificate the S/MIME
//!   backend accepts for the `From:` address now (validity, key usage and
//!   EKU allowing encryption, the address in it);
//! * Autocrypt ([`autocrypt`]): exactly one valid Level 1 header for the
//!   `From:` address, whose key the OpenPGP backend accepts for it.
//!
//! Each learned key carries the message's effective date ([`date`]: the
//! `Date:`, clamped to now) for the store's update rule.

pub mod auth_results;
pub mod autocrypt;
pub mod date;
pub mod dkim_sig;
pub mod from;
mod learned_types;
mod lex;
mod queue;
pub mod smime;

use std::time::SystemTime;

use crate::address::{Address, Domain};
use crate::backend::{KeyMaterial, Method, Registry, RejectReason, identify, unix_seconds};
use crate::material::{Provenance, Security, SourceKind};
use crate::message::HeaderField;
use crate::message::mime::ContentType;

pub use auth_results::AuthBy;

/// The largest key learned, in bytes: real certificates and Autocrypt keys
/// are a few KiB (an Autocrypt header is at most 10 KiB).
pub const MAX_KEY_BYTES: usize = 16 * 1024;
pub use learned_types::{LearnedFrom, LearnedKey, PreferEncrypt};
pub use queue::{Harvester, Job, PAUSE};

/// What the header says before any crypto.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Screen {
    /// No Autocrypt header, not S/MIME signed.
    Nothing,
    /// Key material present, but the author is not authenticated under
    /// the authserv-id (or there is no single `From:` mailbox: `None`).
    Unauthenticated {
        /// The author, when there is exactly one.
        from: Option<Address>,
    },
    /// Worth examining.
    Candidate(Candidate),
}

/// A message that may teach keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The author (the one `From:` mailbox).
    pub from: Address,
    /// How the MTA authenticated the author's domain.
    pub by: AuthBy,
    /// S/MIME signed: the body is needed.
    pub smime: bool,
    /// At least one `Autocrypt:` header (headers suffice).
    pub autocrypt: bool,
    /// Every DKIM signature of the `From:` domain covers the `Autocrypt`
    /// field (at least one does): without it, anyone holding one signed
    /// message of the sender could add a header with their own key
    /// ([`dkim_sig`]), and [`examine`] refuses the header. The milter sets
    /// it when the operator accepts unsigned headers
    /// (`harvest.autocrypt_unsigned`).
    pub autocrypt_signed: bool,
    /// The effective date: `Date:` clamped to now; now when absent or
    /// unparseable. Unix seconds.
    pub effective: i64,
}

/// Why a message teaches no key (of one method). [`Refusal::as_str`] is
/// the metric label.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The S/MIME signature does not verify over the content.
    #[error("{0}")]
    BadSignature(String),
    /// More than one signer.
    #[error("S/MIME signature with {0} signers (exactly one is learned from)")]
    SeveralSigners(usize),
    /// The signer's certificate is not for the `From:` address.
    #[error("the S/MIME signer's certificate is not for {0}")]
    SignerMismatch(String),
    /// The key is not usable for the `From:` address (expired, no
    /// encryption usage, unreadable, no user ID for it, ...).
    #[error("{method} key refused: {reason}")]
    InvalidKey {
        /// The key's method.
        method: Method,
        /// The backend's reason.
        reason: RejectReason,
    },
    /// More than one valid Autocrypt header.
    #[error("{0} valid Autocrypt headers (at most one)")]
    SeveralHeaders(usize),
    /// Autocrypt `addr` is not the `From:` address.
    #[error("Autocrypt addr {0:?} is not the From: address")]
    AddrMismatch(String),
    /// An Autocrypt header with an unknown critical attribute.
    #[error("Autocrypt header with the unknown critical attribute {0:?}")]
    CriticalAttribute(String),
    /// An Autocrypt header over 10 KiB.
    #[error("Autocrypt header of {0} bytes (at most 10 KiB)")]
    Oversized(usize),
    /// A key (a signer's certificate) larger than [`MAX_KEY_BYTES`].
    #[error("key of {0} bytes (at most 16 KiB are learned)")]
    KeyTooLarge(usize),
    /// An Autocrypt header the `From:` domain's DKIM signatures do not
    /// cover ([`dkim_sig`]), and `harvest.autocrypt_unsigned` is off.
    #[error(
        "Autocrypt header outside the From: domain's DKIM signature (harvest.autocrypt_unsigned \
         is off)"
    )]
    UnsignedAutocrypt,
    /// Not a well-formed signed message or Autocrypt header.
    #[error("malformed {method}: {detail}")]
    Malformed {
        /// Which kind of key material.
        method: Method,
        /// What is wrong.
        detail: String,
    },
}

impl Refusal {
    /// The metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            Refusal::BadSignature(_) => "bad_signature",
            Refusal::SeveralSigners(_) => "several_signers",
            Refusal::SignerMismatch(_) => "signer_mismatch",
            Refusal::InvalidKey { .. } => "invalid_key",
            Refusal::SeveralHeaders(_) => "several_headers",
            Refusal::AddrMismatch(_) => "addr_mismatch",
            Refusal::CriticalAttribute(_) => "critical_attribute",
            Refusal::Oversized(_) => "oversized",
            Refusal::UnsignedAutocrypt => "autocrypt_unsigned",
            Refusal::KeyTooLarge(_) => "key_too_large",
            Refusal::Malformed { .. } => "malformed",
        }
    }

    /// Every label [`Refusal::as_str`] gives (metric series made up front).
    pub const LABELS: [&'static str; 11] = [
        "bad_signature",
        "several_signers",
        "signer_mismatch",
        "invalid_key",
        "several_headers",
        "addr_mismatch",
        "critical_attribute",
        "oversized",
        "autocrypt_unsigned",
        "key_too_large",
        "malformed",
    ];

    /// The method whose key was refused.
    pub fn method(&self) -> Method {
        match self {
            Refusal::BadSignature(_) | Refusal::SeveralSigners(_) | Refusal::SignerMismatch(_) => {
                Method::Smime
            }
            Refusal::InvalidKey { method, .. } | Refusal::Malformed { method, .. } => *method,
            // The S/MIME signer's certificate; an Autocrypt header is at
            // most 10 KiB, so its key never is.
            Refusal::KeyTooLarge(_) => Method::Smime,
            Refusal::SeveralHeaders(_)
            | Refusal::AddrMismatch(_)
            | Refusal::CriticalAttribute(_)
            | Refusal::Oversized(_)
            | Refusal::UnsignedAutocrypt => Method::OpenPgp,
        }
    }
}

/// Autocrypt Level 1 §2.3: auto-replies and reports do not update peer
/// state (an MDN or a vacation reply is not the sender's MUA speaking).
fn autocrypt_ignored(headers: &[HeaderField]) -> bool {
    let auto_replied = headers.iter().filter(|h| h.is("Auto-Submitted")).any(|h| {
        let v = h.unfolded();
        let word = v.split([';', '(', ' ', '\t']).next().unwrap_or("");
        word.eq_ignore_ascii_case("auto-replied")
    });
    let report = headers
        .iter()
        .filter(|h| h.is("Content-Type"))
        .filter_map(|h| ContentType::parse(&h.unfolded()))
        .any(|ct| ct.is("multipart", "report"));
    auto_replied || report
}

/// [`screen_at`] now.
pub fn screen(headers: &[HeaderField], authserv_id: &str) -> Screen {
    screen_at(headers, authserv_id, SystemTime::now())
}

/// What the header says, `now` being the time of receipt. Headers only,
/// linear in their size.
pub fn screen_at(headers: &[HeaderField], authserv_id: &str, now: SystemTime) -> Screen {
    match material(headers) {
        None => Screen::Nothing,
        Some(m) => judge(m, headers, authserv_id, now),
    }
}

/// What key material the header promises, and whose: the first, cheapest
/// half of [`screen_at`] (the milter skips a sender it confirmed lately
/// before the rest). `None`: no Autocrypt header, not S/MIME signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Material {
    /// The one `From:` mailbox; `None` when there is not exactly one.
    pub from: Option<Address>,
    /// S/MIME signed.
    pub smime: bool,
    /// An `Autocrypt:` header that may count (not an auto-reply or report).
    pub autocrypt: bool,
}

/// [`Material`] of `headers`.
pub fn material(headers: &[HeaderField]) -> Option<Material> {
    let smime = smime::signed_form(headers).is_some();
    let autocrypt = autocrypt::present(headers) && !autocrypt_ignored(headers);
    if !smime && !autocrypt {
        return None;
    }
    Some(Material {
        from: from::author(headers).ok(),
        smime,
        autocrypt,
    })
}

/// The second half of [`screen_at`]: whether the receiving MTA
/// authenticated the author of `m`.
pub fn judge(m: Material, headers: &[HeaderField], authserv_id: &str, now: SystemTime) -> Screen {
    let Material {
        from,
        smime,
        autocrypt,
    } = m;
    if !smime && !autocrypt {
        return Screen::Nothing;
    }
    let Some(from) = from else {
        return Screen::Unauthenticated { from: None };
    };
    let by = (from.kind() == Domain::Name)
        .then(|| auth_results::authenticated_by(headers, authserv_id, from.domain()))
        .flatten();
    match by {
        None => Screen::Unauthenticated { from: Some(from) },
        Some(by) => Screen::Candidate(Candidate {
            autocrypt_signed: autocrypt && dkim_sig::covers(headers, from.domain(), "autocrypt"),
            from,
            by,
            smime,
            autocrypt,
            effective: date::effective(headers, now),
        }),
    }
}

/// Every key the message teaches, or why it teaches none: one entry per
/// kind of key material the candidate has (S/MIME first, then Autocrypt).
/// `body` is the message body as received (CRLF).
pub fn examine(
    c: &Candidate,
    headers: &[HeaderField],
    body: &[u8],
    registry: &Registry,
    now: SystemTime,
) -> Vec<Result<LearnedKey, Refusal>> {
    let mut out = Vec::new();
    if c.smime {
        out.push(smime_key(c, headers, body, registry, now));
    }
    if c.autocrypt {
        out.push(if c.autocrypt_signed {
            autocrypt_key(c, headers, registry, now)
        } else {
            Err(Refusal::UnsignedAutocrypt)
        });
    }
    out
}

/// Validates `data` for the candidate's author and makes the learned key.
fn learn(
    c: &Candidate,
    method: Method,
    data: Vec<u8>,
    how: LearnedFrom,
    prefer_encrypt: Option<PreferEncrypt>,
    registry: &Registry,
    now: SystemTime,
) -> Result<LearnedKey, Refusal> {
    // Before any parsing: a key is stored, shared by a fleet and read at
    // every lookup of its address.
    if data.len() > MAX_KEY_BYTES {
        return Err(Refusal::KeyTooLarge(data.len()));
    }
    let material = KeyMaterial {
        method,
        data,
        origin: format!("{} of {}", how.as_str(), c.from),
        // What the learned source will say of it.
        provenance: Provenance::now(SourceKind::Learned, Security::Learned),
        bound_addresses: Vec::new(),
    };
    if let Err(rejected) = registry.get(method).validate(&material, &c.from, now) {
        return Err(match rejected.reason {
            RejectReason::AddressMismatch(a) if method == Method::Smime => {
                Refusal::SignerMismatch(a)
            }
            reason => Refusal::InvalidKey { method, reason },
        });
    }
    let id = identify(method, &material.data).ok_or_else(|| Refusal::InvalidKey {
        method,
        reason: RejectReason::Unreadable("no canonical form".to_owned()),
    })?;
    let seen = unix_seconds(now);
    Ok(LearnedKey {
        address: crate::store::store_key(&c.from),
        method,
        fingerprint: id.fingerprint,
        key: id.canonical,
        how,
        prefer_encrypt,
        effective: c.effective,
        first_seen: seen,
        last_seen: seen,
    })
}

fn smime_key(
    c: &Candidate,
    headers: &[HeaderField],
    body: &[u8],
    registry: &Registry,
    now: SystemTime,
) -> Result<LearnedKey, Refusal> {
    let cert = smime::signer(headers, body).map_err(|e| match e {
        smime::SmimeError::Malformed(detail) => Refusal::Malformed {
            method: Method::Smime,
            detail,
        },
        smime::SmimeError::BadSignature(why) => Refusal::BadSignature(why),
        smime::SmimeError::Signers(n) => Refusal::SeveralSigners(n),
    })?;
    learn(
        c,
        Method::Smime,
        cert,
        LearnedFrom::SmimeSignature,
        None,
        registry,
        now,
    )
}

fn autocrypt_key(
    c: &Candidate,
    headers: &[HeaderField],
    registry: &Registry,
    now: SystemTime,
) -> Result<LearnedKey, Refusal> {
    use autocrypt::{AutocryptError, Selection};
    let header = autocrypt::select(headers, &c.from).map_err(|s| match s {
        Selection::Several(n) => Refusal::SeveralHeaders(n),
        Selection::AddrMismatch(a) => Refusal::AddrMismatch(a),
        Selection::Invalid(AutocryptError::Critical(name)) => Refusal::CriticalAttribute(name),
        Selection::Invalid(AutocryptError::Oversized(n)) => Refusal::Oversized(n),
        other => Refusal::Malformed {
            method: Method::OpenPgp,
            detail: other.to_string(),
        },
    })?;
    learn(
        c,
        Method::OpenPgp,
        header.keydata,
        LearnedFrom::Autocrypt,
        Some(header.prefer_encrypt),
        registry,
        now,
    )
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
