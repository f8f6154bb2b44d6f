//! S/MIME: the SignedData of a detached or opaque signed message
//! verified with OpenSSL against the `From:` address's certificates.
//!
//! The keys' certificates go to OpenSSL as the certificates to search
//! first (`PKCS7_get0_signers` looks there before the ones the message
//! carries), so a signer info naming a key's issuer and serial number is
//! verified with that key; a message that embeds a look-alike
//! certificate under the same name fails instead of passing. Chain
//! verification is off (`PKCS7_NOVERIFY`): the key service vouched for
//! the key, and a CA's word is not asked for.

use openssl::error::ErrorStack;
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::stack::Stack;
use openssl::x509::X509;
use openssl::x509::store::X509StoreBuilder;

use super::{MAX_SIGNATURES, Verdict, not_from_keys};
use crate::backend::smime::fingerprint;
use crate::backend::{Recipient, RecipientKey};
use crate::harvest::smime::{SignedForm, signed_data, signed_form};
use crate::message::HeaderField;

/// OpenSSL's reasons, joined: the first alone is often a generic
/// "PKCS7 lib" or an ASN.1 detail.
fn reasons(e: &ErrorStack) -> String {
    let all: Vec<&str> = e.errors().iter().filter_map(|e| e.reason()).collect();
    if all.is_empty() {
        "failed".to_owned()
    } else {
        all.join(": ")
    }
}

fn has_reason(e: &ErrorStack, reason: &str) -> bool {
    e.errors().iter().any(|e| e.reason() == Some(reason))
}

fn perm(what: &str, e: &ErrorStack) -> Verdict {
    Verdict::PermError(format!("{what}: {}", reasons(e)))
}

/// The S/MIME verdict: see the module documentation.
pub(super) fn verify(
    headers: &[HeaderField],
    body: &[u8],
    form: SignedForm,
    keys: &[Recipient],
) -> Verdict {
    if signed_form(headers) != Some(form) {
        return Verdict::PermError(format!("not an S/MIME {form:?} signed message"));
    }
    let (der, content) = match signed_data(headers, body) {
        Ok(d) => d,
        Err(e) => return Verdict::PermError(e.to_string()),
    };
    let p7 = match Pkcs7::from_der(&der) {
        Ok(p) => p,
        Err(e) => return perm("unreadable SignedData", &e),
    };
    if p7.signed().is_none() {
        return Verdict::PermError("a PKCS #7 object that is not SignedData".to_owned());
    }
    let certs: Vec<(&X509, &Recipient)> = keys
        .iter()
        .filter_map(|r| match &r.key {
            RecipientKey::Smime(c) => Some((c, r)),
            RecipientKey::OpenPgp { .. } => None,
        })
        .collect();
    match check(&p7, content, &certs) {
        Ok(v) => v,
        Err(e) => perm("OpenSSL", &e),
    }
}

fn check(
    p7: &Pkcs7,
    content: Option<&[u8]>,
    certs: &[(&X509, &Recipient)],
) -> Result<Verdict, ErrorStack> {
    let mut stack: Stack<X509> = Stack::new()?;
    for (c, _) in certs {
        stack.push((*c).clone())?;
    }
    let signers = match p7.signers(&stack, Pkcs7Flags::empty()) {
        Ok(s) => s,
        // Neither embedded nor a key: nothing to check the signature
        // with, and certainly not a key of the From: address.
        Err(e) if has_reason(&e, "signer certificate not found") => {
            return Ok(not_from_keys(!certs.is_empty(), None));
        }
        Err(e) if has_reason(&e, "no signers") => {
            return Ok(Verdict::PermError("SignedData without a signer".to_owned()));
        }
        Err(e) => return Ok(perm("signer certificate", &e)),
    };
    if signers.is_empty() || signers.len() > MAX_SIGNATURES {
        return Ok(Verdict::PermError(format!(
            "SignedData with {} signers (1 to {MAX_SIGNATURES} are read)",
            signers.len()
        )));
    }
    // The store is never read: chain verification is off.
    let store = X509StoreBuilder::new()?.build();
    // PKCS7_verify checks every signer's signature; NO_DUAL_CONTENT
    // refuses a detached signature that carries content of its own (a
    // reader might show that instead of what was verified).
    if let Err(e) = p7.verify(
        &stack,
        &store,
        content,
        None,
        Pkcs7Flags::NOVERIFY | Pkcs7Flags::NO_DUAL_CONTENT,
    ) {
        // Only a digest or signature mismatch says the bytes or the key
        // are wrong; anything else (no content, an unknown digest) is a
        // message that cannot be processed.
        return Ok(
            if has_reason(&e, "digest failure") || has_reason(&e, "signature failure") {
                Verdict::Fail(reasons(&e))
            } else {
                perm("verification", &e)
            },
        );
    }
    let mut first = None;
    for signer in &signers {
        let der = signer.to_der()?;
        for (c, r) in certs {
            if c.to_der()? == der {
                return Ok(Verdict::Pass {
                    fingerprint: r.fingerprint.clone(),
                });
            }
        }
        first.get_or_insert_with(|| fingerprint(&signer.to_owned()));
    }
    Ok(not_from_keys(!certs.is_empty(), first.as_deref()))
}
