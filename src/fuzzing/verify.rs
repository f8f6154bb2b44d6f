//! Classification and full ciphertext verification of a whole message
//! (issue 9.1), checked against independent parsers: what the verifier
//! calls ciphertext must parse as encrypted CMS (OpenSSL) or as ESK
//! packets plus one encrypted data packet (Sequoia).

use std::io::{self, Read};

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use openssl::cms::CmsContentInfo;
use sequoia_openpgp::packet::Tag;
use sequoia_openpgp::parse::PacketParser;
use sequoia_openpgp::parse::{PacketParserResult, Parse};

use crate::message::classify::{EncryptedKind, classify};
use crate::message::verify::{Verification, verify as verify_message};
use crate::message::{HeaderField, Message};
use crate::pipeline::{Check, check_ciphertext};

/// The input is a raw message (header section, empty line, body).
pub fn verify(data: &[u8]) {
    let msg = Message::parse(data);
    let body = &data[msg.body_offset..];
    let whole = verify_message(&msg.headers, &mut &body[..]);
    // Streaming: the verdict does not depend on how the body is cut.
    let chunked = verify_message(
        &msg.headers,
        &mut Chunks {
            data: body,
            step: 0,
        },
    );
    assert_eq!(
        verdict(&whole),
        verdict(&chunked),
        "chunking changed the verdict"
    );
    assert!(!matches!(whole, Verification::ReadError(_)));
    let class = classify(&msg.headers, body);
    if let Ok(Check::Verified(kind)) = check_ciphertext(&msg.headers, &class, &mut &body[..]) {
        assert_eq!(whole, Verification::Verified(kind));
    }
    if let Verification::Verified(kind) = whole {
        oracle(&msg.headers, body, kind);
    }
}

fn verdict(v: &Verification) -> Option<EncryptedKind> {
    match v {
        Verification::Verified(k) => Some(*k),
        _ => None,
    }
}

/// A reader that hands out `data` in uneven pieces (1, 2, 3, ... 61 bytes).
struct Chunks<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Chunks<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.step = self.step % 61 + 1;
        let n = self.step.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fn cte(headers: &[HeaderField]) -> String {
    headers
        .iter()
        .find(|h| h.is("Content-Transfer-Encoding"))
        .map(|h| h.unfolded().to_ascii_lowercase())
        .unwrap_or_default()
}

/// Panics unless an independent parser agrees that this is ciphertext.
/// Only for the transfer encodings the oracle can undo itself.
fn oracle(headers: &[HeaderField], body: &[u8], kind: EncryptedKind) {
    let cte = cte(headers);
    match kind {
        EncryptedKind::Smime | EncryptedKind::P7mFile => {
            if cte != "base64" {
                return;
            }
            // Lenient: only the CMS structure is in question here.
            let text: Vec<u8> = body
                .iter()
                .copied()
                .filter(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/'))
                .collect();
            let lenient = GeneralPurpose::new(
                &alphabet::STANDARD,
                GeneralPurposeConfig::new()
                    .with_decode_allow_trailing_bits(true)
                    .with_decode_padding_mode(DecodePaddingMode::Indifferent),
            );
            let Ok(der) = lenient.decode(&text) else {
                return;
            };
            if let Err(e) = CmsContentInfo::from_der(&der) {
                // The verifier checks the CMS structure the issue asks
                // for: recipientInfos a non-empty SET of well-formed BER,
                // the algorithm a SEQUENCE, not the schema inside each
                // RecipientInfo (its `rid` choice, the X.509 names of an
                // issuerAndSerialNumber) or the AlgorithmIdentifier's OID.
                // A bad element there is ciphertext nobody can read, not
                // plaintext (docs/FUZZING.md); anything else OpenSSL
                // cannot read is a finding.
                let text = e.to_string();
                let inside_recipient_info = [
                    "X509_NAME",
                    "x509_name",
                    "ASN1_PRINTABLE",
                    "Type=CMS_RecipientInfo",
                    "Type=CMS_KeyTransRecipientInfo",
                    "Type=CMS_KeyAgreeRecipientInfo",
                    "Type=X509_ALGOR",
                ]
                .iter()
                .any(|n| text.contains(n));
                assert!(
                    inside_recipient_info,
                    "verified S/MIME that OpenSSL cannot read: {e}"
                );
            }
        }
        EncryptedKind::PgpMime | EncryptedKind::InlinePgp => {
            if !matches!(cte.as_str(), "" | "7bit" | "8bit" | "binary") {
                return;
            }
            // Some armored block in the body must be the ciphertext (a
            // preamble may quote an armor line too).
            let begin = b"-----BEGIN PGP MESSAGE-----";
            let end = b"-----END PGP MESSAGE-----";
            let mut errors = Vec::new();
            let mut from = 0;
            while let Some(start) = find(&body[from..], begin).map(|i| from + i) {
                from = start + 1;
                let Some(stop) = find(&body[start..], end) else {
                    break;
                };
                match pgp_oracle(&body[start..start + stop + end.len()]) {
                    Ok(()) => return,
                    Err(e) => errors.push(e),
                }
            }
            panic!(
                "verified {kind:?} without an armored message Sequoia reads as ciphertext: {errors:?}"
            );
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// ESK packets, then exactly one encrypted data packet (SED, SEIPD or AEAD), then nothing.
fn pgp_oracle(armored: &[u8]) -> Result<(), String> {
    // The verifier frames session-key packets; it does not judge the MPIs
    // inside them (a PKESK whose MPI has unzeroed leading bits is
    // ciphertext nobody can decrypt, not plaintext: docs/FUZZING.md).
    let not_judged = |e: String| {
        if e.contains("Malformed MPI") {
            Ok(())
        } else {
            Err(e)
        }
    };
    let mut ppr = match PacketParser::from_bytes(armored) {
        Ok(p) => p,
        Err(e) => return not_judged(e.to_string()),
    };
    let mut tags = Vec::new();
    while let PacketParserResult::Some(pp) = ppr {
        if pp.recursion_depth() != 0 {
            return Err("nested packet outside encryption".into());
        }
        tags.push(pp.packet.tag());
        ppr = match pp.next() {
            Ok((_, next)) => next,
            Err(e) => return not_judged(e.to_string()),
        };
    }
    let Some((last, esks)) = tags.split_last() else {
        return Err("no packets".into());
    };
    if esks.is_empty() {
        return Err("no session key packet".into());
    }
    if let Some(t) = esks.iter().find(|t| !matches!(t, Tag::PKESK | Tag::SKESK)) {
        return Err(format!("{t:?} before the encrypted data"));
    }
    // SED (tag 9) is legacy, unprotected, but encrypted all the same.
    if !matches!(last, Tag::SED | Tag::SEIP | Tag::AED) {
        return Err(format!("last packet {last:?}"));
    }
    Ok(())
}
