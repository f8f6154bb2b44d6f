//! PGP/MIME signed messages (RFC 3156 §5) verified with Sequoia against
//! the `From:` address's certificates.
//!
//! Structure: `multipart/signed; protocol="application/pgp-signature"`
//! with a boundary, exactly two parts (split as S/MIME's, RFC 1847 §2.1:
//! the first part with its headers is the signed data, the CRLF before
//! the next delimiter excluded), the second `application/pgp-signature`
//! holding one ASCII-armored `PGP SIGNATURE` of signature packets only.
//! `micalg` is not compared: each signature packet names its own hash,
//! and a wrong label changes nothing about what is verified.
//!
//! Sequoia's standard policy decides which algorithms are acceptable;
//! the key that made a signature must be signing-capable, alive and not
//! revoked at the signature's creation time, and the signature alive now.

use std::io::Read;

use sequoia_openpgp as openpgp;

use openpgp::armor::{Kind, Reader, ReaderMode};
use openpgp::packet::{Packet, Tag};
use openpgp::parse::stream::{
    DetachedVerifierBuilder, MessageLayer, MessageStructure, VerificationError, VerificationHelper,
};
use openpgp::parse::{PacketParser, PacketParserResult, Parse};
use openpgp::policy::StandardPolicy;
use openpgp::{Cert, KeyHandle};

use super::{MAX_PGP_SIGNATURE_BYTES, MAX_SIGNATURES, Verdict, content_type, is_pgp_signed};
use crate::backend::{Recipient, RecipientKey};
use crate::harvest::smime::{der_body, two_parts};
use crate::message::{HeaderField, Message};

fn perm(what: impl Into<String>) -> Verdict {
    Verdict::PermError(what.into())
}

/// The PGP/MIME verdict: see the module documentation.
pub(super) fn verify(headers: &[HeaderField], body: &[u8], keys: &[Recipient]) -> Verdict {
    let signature = match signature_packets(headers, body) {
        Ok(s) => s,
        Err(v) => return v,
    };
    let certs: Vec<Cert> = keys
        .iter()
        .filter_map(|r| match &r.key {
            RecipientKey::OpenPgp { cert, .. } => Some(Cert::clone(cert)),
            RecipientKey::Smime(_) => None,
        })
        .collect();
    let keys_found = !certs.is_empty();
    let policy = StandardPolicy::new();
    let helper = Helper {
        certs,
        outcomes: Vec::new(),
    };
    let mut verifier = match DetachedVerifierBuilder::from_bytes(&signature.packets)
        .and_then(|b| b.with_policy(&policy, None, helper))
    {
        Ok(v) => v,
        Err(e) => return perm(format!("unreadable OpenPGP signature: {e}")),
    };
    if let Err(e) = verifier.verify_bytes(signature.signed) {
        return perm(format!("OpenPGP verification: {e}"));
    }
    decide(&verifier.into_helper().outcomes, keys_found)
}

/// The signed bytes and the binary signature packets of a PGP/MIME
/// message, or the verdict on why there are none.
struct Signature<'a> {
    signed: &'a [u8],
    packets: Vec<u8>,
}

fn signature_packets<'a>(
    headers: &[HeaderField],
    body: &'a [u8],
) -> Result<Signature<'a>, Verdict> {
    let ct = content_type(headers).ok_or_else(|| perm("no single Content-Type that parses"))?;
    if !is_pgp_signed(&ct) {
        return Err(perm("not PGP/MIME multipart/signed"));
    }
    let boundary = match ct.param("boundary") {
        Some(b) if !b.is_empty() => b.as_bytes().to_vec(),
        _ => return Err(perm("multipart/signed without a boundary")),
    };
    let (signed, part) = two_parts(body, &boundary).map_err(|e| perm(e.to_string()))?;
    let parsed = Message::parse(part);
    let is_signature =
        content_type(&parsed.headers).is_some_and(|ct| ct.is("application", "pgp-signature"));
    if !is_signature {
        return Err(perm("the second part is not application/pgp-signature"));
    }
    let text = part.get(parsed.body_offset..).unwrap_or_default();
    if text.len() > MAX_PGP_SIGNATURE_BYTES {
        return Err(perm(format!(
            "a signature part of {} bytes (at most {MAX_PGP_SIGNATURE_BYTES})",
            text.len()
        )));
    }
    let armored = der_body(&parsed.headers, text).map_err(|e| perm(e.to_string()))?;
    let mut packets = Vec::new();
    Reader::from_bytes(&armored, ReaderMode::Tolerant(Some(Kind::Signature)))
        .read_to_end(&mut packets)
        .map_err(|e| perm(format!("not an armored PGP SIGNATURE: {e}")))?;
    count_signatures(&packets)?;
    Ok(Signature { signed, packets })
}

/// Checks that `packets` are 1 to [`MAX_SIGNATURES`] signature packets
/// and nothing else, before any is verified.
fn count_signatures(packets: &[u8]) -> Result<(), Verdict> {
    let unreadable = |e: openpgp::anyhow::Error| perm(format!("unreadable OpenPGP signature: {e}"));
    let mut n = 0;
    let mut ppr = PacketParser::from_bytes(packets).map_err(unreadable)?;
    while let PacketParserResult::Some(pp) = ppr {
        match &pp.packet {
            Packet::Signature(_) => n += 1,
            // An unknown packet version parses as Unknown: a signature
            // this reader cannot process.
            Packet::Unknown(u) if u.tag() == Tag::Signature => n += 1,
            other => {
                return Err(perm(format!("a {} in the signature part", other.tag())));
            }
        }
        if n > MAX_SIGNATURES {
            return Err(perm(format!(
                "more than {MAX_SIGNATURES} signatures in the signature part"
            )));
        }
        ppr = pp.next().map_err(unreadable)?.1;
    }
    if n == 0 {
        return Err(perm("a signature part without a signature"));
    }
    Ok(())
}

/// What became of one signature packet.
#[derive(Debug)]
enum Outcome {
    /// Verified by a key of this certificate (fingerprint).
    Good(String),
    /// The issuer is none of the keys.
    Missing(Option<String>),
    /// A key of the certificate made it, but it does not verify.
    Bad(String),
    /// A key of the certificate is named, but the key or the signature
    /// is not acceptable (expired, revoked, not for signing, refused by
    /// the policy): why.
    Refused(String),
    /// The signature cannot be processed: why.
    Malformed(String),
}

struct Helper {
    certs: Vec<Cert>,
    outcomes: Vec<Outcome>,
}

impl VerificationHelper for Helper {
    fn get_certs(&mut self, _ids: &[KeyHandle]) -> openpgp::Result<Vec<Cert>> {
        Ok(std::mem::take(&mut self.certs))
    }

    fn check(&mut self, structure: MessageStructure) -> openpgp::Result<()> {
        for layer in structure {
            match layer {
                MessageLayer::SignatureGroup { results } => {
                    self.outcomes.extend(results.into_iter().map(outcome));
                }
                // A detached signature has no other layer; should one
                // appear, it is not what RFC 3156 describes.
                _ => self
                    .outcomes
                    .push(Outcome::Malformed("not a detached signature".to_owned())),
            }
        }
        Ok(())
    }
}

fn outcome(r: Result<openpgp::parse::stream::GoodChecksum, VerificationError>) -> Outcome {
    use openpgp::Error as E;
    match r {
        Ok(good) => Outcome::Good(good.ka.cert().fingerprint().to_hex()),
        Err(VerificationError::MissingKey { sig }) => {
            Outcome::Missing(sig.get_issuers().first().map(|h| h.to_hex()))
        }
        Err(VerificationError::BadSignature { ka, error, .. }) => {
            let fp = ka.cert().fingerprint().to_hex();
            match error.downcast_ref::<E>() {
                Some(E::PolicyViolation(..) | E::Expired(_) | E::NotYetLive(_)) => {
                    Outcome::Refused(format!("the signature by {fp}: {error}"))
                }
                Some(
                    E::UnsupportedHashAlgorithm(_)
                    | E::UnsupportedPublicKeyAlgorithm(_)
                    | E::UnsupportedSignatureType(_),
                ) => Outcome::Malformed(error.to_string()),
                _ => Outcome::Bad(format!("the signature by {fp} does not verify: {error}")),
            }
        }
        Err(VerificationError::BadKey { ka, error, .. }) => Outcome::Refused(format!(
            "the key of {} that made the signature: {error}",
            ka.cert().fingerprint().to_hex()
        )),
        Err(VerificationError::UnboundKey { cert, error, .. }) => Outcome::Refused(format!(
            "a key of {} that is not bound to it: {error}",
            cert.fingerprint().to_hex()
        )),
        Err(e @ VerificationError::MalformedSignature { .. })
        | Err(e @ VerificationError::UnknownSignature { .. }) => Outcome::Malformed(e.to_string()),
        // The enum is not exhaustive in spirit: a new kind of failure is
        // a signature this reader cannot process.
        #[allow(unreachable_patterns, reason = "future Sequoia variants")]
        Err(e) => Outcome::Malformed(e.to_string()),
    }
}

/// Several signatures: one that cannot be processed makes the message
/// unprocessable; one by a From: key that does not verify fails it; else
/// one good one passes it; else it is not signed by a From: key.
fn decide(outcomes: &[Outcome], keys_found: bool) -> Verdict {
    if let Some(Outcome::Malformed(why)) =
        outcomes.iter().find(|o| matches!(o, Outcome::Malformed(_)))
    {
        return perm(why.clone());
    }
    if let Some(Outcome::Bad(why)) = outcomes.iter().find(|o| matches!(o, Outcome::Bad(_))) {
        return Verdict::Fail(why.clone());
    }
    if let Some(Outcome::Good(fp)) = outcomes.iter().find(|o| matches!(o, Outcome::Good(_))) {
        return Verdict::Pass {
            fingerprint: fp.clone(),
        };
    }
    if let Some(Outcome::Refused(why)) = outcomes.iter().find(|o| matches!(o, Outcome::Refused(_)))
    {
        return Verdict::Policy(why.clone());
    }
    if outcomes.is_empty() {
        return perm("no signature was read");
    }
    let issuer = outcomes.iter().find_map(|o| match o {
        Outcome::Missing(i) => i.as_deref(),
        _ => None,
    });
    super::not_from_keys(keys_found, issuer)
}
