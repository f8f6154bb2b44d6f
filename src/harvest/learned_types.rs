//! The learned-key vocabulary of the key store, as `/work/wt/FACTS.md`
//! spells it (`crate::store::{LearnedKey, LearnedFrom, PreferEncrypt}`).
//! Defined here only until the store lands; the merge moves these types to
//! `src/store/` and this file goes.

use crate::material::Method;

/// How a key was learned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LearnedFrom {
    /// The signer's certificate of a verified S/MIME signature.
    SmimeSignature,
    /// An Autocrypt Level 1 header.
    Autocrypt,
}

impl LearnedFrom {
    /// The name stored and shown (`smime-signature`, `autocrypt`).
    pub fn as_str(self) -> &'static str {
        match self {
            LearnedFrom::SmimeSignature => "smime-signature",
            LearnedFrom::Autocrypt => "autocrypt",
        }
    }
}

/// Autocrypt's `prefer-encrypt` (Level 1 §2.1.1): `mutual`, or anything
/// else (or nothing), which reads as `nopreference`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PreferEncrypt {
    /// `prefer-encrypt=mutual`.
    Mutual,
    /// No attribute, or another value.
    NoPreference,
}

impl PreferEncrypt {
    /// The value as Autocrypt writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            PreferEncrypt::Mutual => "mutual",
            PreferEncrypt::NoPreference => "nopreference",
        }
    }
}

/// One key learned from mail: the current key per (address, method).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LearnedKey {
    /// [`crate::Address`] in its display form.
    pub address: String,
    /// The key's method.
    pub method: Method,
    /// Upper-case hex fingerprint (`backend::identify`).
    pub fingerprint: String,
    /// Canonical binary: a DER certificate, or a binary OpenPGP certificate.
    pub key: Vec<u8>,
    /// How it was learned.
    pub how: LearnedFrom,
    /// Autocrypt only.
    pub prefer_encrypt: Option<PreferEncrypt>,
    /// The message's effective date (Autocrypt update rule), Unix seconds.
    pub effective: i64,
    /// When first seen, Unix seconds.
    pub first_seen: i64,
    /// When last seen, Unix seconds.
    pub last_seen: i64,
}
