//! OpenPGP `multipart/signed` (RFC 3156 §5): an ASCII-armored detached
//! signature over exactly the octets of the transport-safe entity.
//!
//! The key is the certificate's first signing-capable key that is alive,
//! not revoked and supported under sequoia's `StandardPolicy` now, and
//! whose secret is present and not passphrase-protected (the milter
//! cannot ask for a passphrase). The digest is SHA-256, whatever the
//! key's preferences, so `micalg=pgp-sha256` is true.
//!
//! The signature is a text signature (type 0x01, as GnuPG's `--textmode`
//! that mutt and KMail use): the entity is canonical CRLF already, so it
//! hashes exactly the octets of the signed part, and it still verifies
//! where a reader stored the message with LF line endings. `gpg --verify`
//! and `rnp --verify` accept it over the CRLF part (and keep trailing
//! white space, which headers may carry). An entity that is not
//! canonical — never the case after [`super::safe`] — gets a binary
//! signature (0x00) instead, which is exact for any octets.

use sequoia_openpgp as openpgp;

use openpgp::Packet;
use openpgp::armor;
use openpgp::crypto::KeyPair;
use openpgp::packet::signature::SignatureBuilder;
use openpgp::policy::StandardPolicy;
use openpgp::serialize::Marshal;
use openpgp::types::{HashAlgorithm, SignatureType};

use super::frame::{Format, signed};
use super::{OpenPgpSigner, SignError, SignedEntity};
use crate::material::Method;

const FORMAT: Format<'static> = Format {
    method: Method::OpenPgp,
    params: &[
        "micalg=pgp-sha256",
        "protocol=\"application/pgp-signature\"",
    ],
    preamble: "This is an OpenPGP/MIME signed message (RFC 4880 and 3156)",
    signature_fields: "Content-Type: application/pgp-signature; name=\"signature.asc\"\r\n\
        Content-Description: OpenPGP digital signature\r\n\
        Content-Disposition: attachment; filename=\"signature.asc\"\r\n",
};

fn crypto(detail: String) -> SignError {
    SignError::Crypto {
        method: Method::OpenPgp,
        detail,
    }
}

/// Signs the transport-safe `entity`.
pub(crate) fn sign(entity: &[u8], key: &OpenPgpSigner) -> Result<SignedEntity, SignError> {
    let armored = signature(entity, key)?;
    signed(entity, &FORMAT, &crate::message::to_crlf(&armored))
}

/// The armored detached signature over `entity` (LF line endings, as
/// sequoia writes armor).
pub(crate) fn signature(entity: &[u8], key: &OpenPgpSigner) -> Result<Vec<u8>, SignError> {
    let mut signer = signing_key(key)?;
    let kind = if canonical(entity) {
        SignatureType::Text
    } else {
        SignatureType::Binary
    };
    let sig = SignatureBuilder::new(kind)
        .set_hash_algo(HashAlgorithm::SHA256)
        .sign_message(&mut signer, entity)
        .map_err(|e| crypto(format!("signing: {e}")))?;
    let mut out = Vec::with_capacity(1024);
    let mut w = armor::Writer::new(&mut out, armor::Kind::Signature)
        .map_err(|e| crypto(format!("armor: {e}")))?;
    Packet::from(sig)
        .serialize(&mut w)
        .map_err(|e| crypto(format!("serializing the signature: {e}")))?;
    w.finalize().map_err(|e| crypto(format!("armor: {e}")))?;
    Ok(out)
}

/// Every line break is CRLF, and there is no other CR or LF: hashing
/// the octets then is hashing the text signature's canonical form.
fn canonical(data: &[u8]) -> bool {
    let crs = memchr::memchr_iter(b'\r', data).count();
    let lfs = memchr::memchr_iter(b'\n', data).count();
    crs == lfs && memchr::memmem::find_iter(data, b"\r\n").count() == crs
}

/// The key pair to sign with (see the module documentation).
fn signing_key(key: &OpenPgpSigner) -> Result<KeyPair, SignError> {
    let policy = StandardPolicy::new();
    let mut protected = None;
    let mut without_secret = None;
    for ka in key
        .cert
        .keys()
        .with_policy(&policy, None)
        .supported()
        .alive()
        .revoked(false)
        .for_signing()
    {
        let k = ka.key();
        match k.optional_secret() {
            Some(s) if !s.is_encrypted() => {
                return k
                    .clone()
                    .parts_into_secret()
                    .and_then(|k| k.into_keypair())
                    .map_err(|e| crypto(format!("signing key {}: {e}", k.fingerprint())));
            }
            Some(_) => protected = protected.or(Some(k.fingerprint())),
            None => without_secret = without_secret.or(Some(k.fingerprint())),
        }
    }
    let fpr = key.cert.fingerprint();
    Err(crypto(match (protected, without_secret) {
        (Some(k), _) => format!(
            "the secret of signing key {k} of {fpr} is passphrase-protected \
             (the milter needs it unprotected)"
        ),
        (None, Some(k)) => format!("no secret for signing key {k} of {fpr}"),
        (None, None) => format!(
            "{fpr} has no signing-capable key that is alive and not revoked \
             under the standard policy"
        ),
    }))
}

#[cfg(test)]
#[path = "openpgp_tests.rs"]
mod tests;
