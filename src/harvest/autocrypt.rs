//! `Autocrypt:` headers (Autocrypt Level 1, "The Autocrypt Header" and
//! "Updating Autocrypt Peer State").
//!
//! Format: `addr=…; [prefer-encrypt=mutual;] keydata=BASE64`, attributes
//! separated by `;`, `keydata` last. Three attributes are defined; a name
//! starting with `_` is non-critical and ignored, any other unknown name
//! is critical and makes the whole header invalid (so a future version
//! can hide headers from Level 1 readers). `prefer-encrypt` other than
//! `mutual`, or absent, reads as `nopreference`. A header over 10 KiB
//! (name, colon and folds counted) is invalid, as the spec advises.
//!
//! Selection: every header is examined; the valid ones whose `addr` is
//! not the `From:` address are invalid too ("MUST be treated as
//! invalid"); of what is left exactly one may remain — more than one
//! valid header is an error and all are discarded. Addresses are compared
//! as Autocrypt canonicalises them: the local part case-insensitively,
//! the domain in its canonical form ([`Address::matches_loosely`]).
//! Attribute names are compared exactly: the spec defines them in lower
//! case, and `ADDR` is not `addr` (it is an unknown critical attribute).

use super::lex::decode_base64;
use crate::address::Address;
use crate::message::HeaderField;

pub use super::learned_types::PreferEncrypt;

/// Largest valid header, `Autocrypt:` and folding white space included.
pub const MAX_HEADER_BYTES: usize = 10 * 1024;

/// One syntactically valid `Autocrypt:` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AutocryptHeader {
    /// The `addr` attribute as written.
    pub addr: String,
    /// `prefer-encrypt`.
    pub prefer_encrypt: PreferEncrypt,
    /// The decoded `keydata`: a binary OpenPGP transferable public key.
    pub keydata: Vec<u8>,
}

/// Why an `Autocrypt:` header is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AutocryptError {
    /// Larger than [`MAX_HEADER_BYTES`].
    #[error("Autocrypt header of {0} bytes (at most 10 KiB)")]
    Oversized(usize),
    /// A part between `;` that is not `name=value`.
    #[error("Autocrypt attribute without '=': {0:?}")]
    NotAnAttribute(String),
    /// An attribute given twice.
    #[error("Autocrypt attribute {0:?} given twice")]
    Repeated(String),
    /// An unknown attribute without a leading `_`.
    #[error("unknown critical Autocrypt attribute {0:?}")]
    Critical(String),
    /// No `addr`, or no `keydata`.
    #[error("Autocrypt header without {0}")]
    Missing(&'static str),
    /// `keydata` followed by other attributes.
    #[error("Autocrypt keydata is not the last attribute")]
    KeydataNotLast,
    /// `keydata` that is not base64, or empty.
    #[error("Autocrypt keydata is not base64")]
    Keydata,
    /// `addr` that is not an address.
    #[error("Autocrypt addr {0:?} is not an address")]
    Addr(String),
}

/// Parses one header (its raw value, folds included; `name_len` is the
/// length of the field name as received, for the size limit).
pub fn parse(name_len: usize, value: &[u8]) -> Result<AutocryptHeader, AutocryptError> {
    let size = name_len + 1 + value.len();
    if size > MAX_HEADER_BYTES {
        return Err(AutocryptError::Oversized(size));
    }
    let (mut addr, mut prefer, mut keydata) = (None, None, None);
    let mut parts = value.split(|&b| b == b';').peekable();
    while let Some(part) = parts.next() {
        let trimmed = part.trim_ascii();
        if trimmed.is_empty() && parts.peek().is_none() && keydata.is_some() {
            // A trailing ';' after keydata.
            break;
        }
        if keydata.is_some() {
            return Err(AutocryptError::KeydataNotLast);
        }
        let text = String::from_utf8_lossy(trimmed);
        let Some((name, v)) = text.split_once('=') else {
            return Err(AutocryptError::NotAnAttribute(
                text.chars().take(64).collect(),
            ));
        };
        let name = name.trim_ascii_end();
        let repeated = || AutocryptError::Repeated(name.to_owned());
        match name {
            "addr" => {
                if addr.replace(v.trim().to_owned()).is_some() {
                    return Err(repeated());
                }
            }
            "prefer-encrypt" => {
                let p = if v.trim() == "mutual" {
                    PreferEncrypt::Mutual
                } else {
                    PreferEncrypt::NoPreference
                };
                if prefer.replace(p).is_some() {
                    return Err(repeated());
                }
            }
            "keydata" => {
                // The value is the rest of this part, base64 with folds.
                let raw = &trimmed[trimmed.iter().position(|&b| b == b'=').map_or(0, |i| i + 1)..];
                match decode_base64(raw) {
                    Some(k) if !k.is_empty() => keydata = Some(k),
                    _ => return Err(AutocryptError::Keydata),
                }
            }
            n if n.starts_with('_') => {}
            n => return Err(AutocryptError::Critical(n.chars().take(64).collect())),
        }
    }
    let addr = addr.ok_or(AutocryptError::Missing("addr"))?;
    let keydata = keydata.ok_or(AutocryptError::Missing("keydata"))?;
    Ok(AutocryptHeader {
        addr,
        prefer_encrypt: prefer.unwrap_or(PreferEncrypt::NoPreference),
        keydata,
    })
}

/// Whether the message has an `Autocrypt:` field at all.
pub fn present(headers: &[HeaderField]) -> bool {
    headers.iter().any(|h| h.is("Autocrypt"))
}

/// Why a message's `Autocrypt:` headers give no key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Selection {
    /// No `Autocrypt:` field.
    #[error("no Autocrypt header")]
    None,
    /// More than one valid header for the `From:` address.
    #[error("{0} valid Autocrypt headers (at most one)")]
    Several(usize),
    /// Valid headers, but none for the `From:` address.
    #[error("Autocrypt addr {0:?} is not the From: address")]
    AddrMismatch(String),
    /// No valid header: why the first one is invalid.
    #[error("{0}")]
    Invalid(AutocryptError),
}

/// The one valid header for `from`, as the update process takes it.
pub fn select(headers: &[HeaderField], from: &Address) -> Result<AutocryptHeader, Selection> {
    let mut valid = Vec::new();
    let mut mismatch = None;
    let mut first_error = None;
    for h in headers.iter().filter(|h| h.is("Autocrypt")) {
        match parse(h.name.len(), &h.value) {
            Ok(ac) => match Address::parse(&ac.addr) {
                Ok(a) if a.matches_loosely(from) => valid.push(ac),
                Ok(_) => {
                    mismatch.get_or_insert(ac.addr);
                }
                Err(_) => {
                    first_error.get_or_insert(AutocryptError::Addr(ac.addr));
                }
            },
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match valid.len() {
        1 => Ok(valid.remove(0)),
        0 => Err(match (mismatch, first_error) {
            (Some(addr), _) => Selection::AddrMismatch(addr),
            (None, Some(e)) => Selection::Invalid(e),
            (None, None) => Selection::None,
        }),
        n => Err(Selection::Several(n)),
    }
}

#[cfg(test)]
#[path = "autocrypt_tests.rs"]
mod tests;
