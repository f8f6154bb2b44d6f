//! OpenPGP with Sequoia: PGP/MIME (RFC 3156) messages in SEIPD v1
//! packets, which every deployed OpenPGP implementation (GnuPG 2.2
//! included) reads.

use std::io::{self, Write};
use std::time::SystemTime;

use sequoia_openpgp as openpgp;

use openpgp::Cert;
use openpgp::cert::prelude::*;
use openpgp::parse::Parse;
use openpgp::policy::StandardPolicy;
use openpgp::serialize::stream::{Encryptor, LiteralWriter, Message, Recipient as PgpRecipient};
use openpgp::types::{DataFormat, Features, RevocationStatus};

use super::{
    BackendError, EncryptOptions, EncryptedEntity, EncryptionBackend, EntityBody, KeyFacts,
    KeyMaterial, KeyRejected, Method, Recipient, RecipientKey, RejectReason,
};
use crate::address::Address;
use crate::backend::encoding::{Crc24, copy_base64_lines};
use crate::message::Eol;
use crate::spool::Spool;
use base64::Engine as _;

/// The OpenPGP backend.
#[derive(Debug, Default)]
pub struct OpenPgpBackend {
    policy: StandardPolicy<'static>,
}

impl OpenPgpBackend {
    /// A new backend with Sequoia's standard policy.
    pub fn new() -> Self {
        OpenPgpBackend {
            policy: StandardPolicy::new(),
        }
    }
}

/// Checks a certificate for encrypting to `addr` at `now`; returns the
/// fingerprints of the subkeys to encrypt to.
pub fn check_cert(
    cert: &Cert,
    addr: &Address,
    policy: &StandardPolicy<'_>,
    now: SystemTime,
) -> Result<Vec<openpgp::Fingerprint>, RejectReason> {
    let vc = cert
        .with_policy(policy, now)
        .map_err(|e| RejectReason::Policy(e.to_string()))?;
    if let RevocationStatus::Revoked(_) = vc.revocation_status() {
        return Err(RejectReason::Revoked);
    }
    if let Err(e) = vc.alive() {
        let when = vc
            .primary_key()
            .key_expiration_time()
            .map(|t| format!("expiration time {}", humantime_utc(t)))
            .unwrap_or_else(|| e.to_string());
        return Err(RejectReason::Expired(when));
    }
    let has_address = vc.userids().any(|ua| {
        !matches!(ua.revocation_status(), RevocationStatus::Revoked(_))
            && ua
                .userid()
                .email()
                .ok()
                .flatten()
                .and_then(|e| Address::parse(e).ok())
                .is_some_and(|a| a.matches_loosely(addr))
    });
    if !has_address {
        return Err(RejectReason::AddressMismatch(addr.to_string()));
    }
    // Transport or storage encryption: inbound mail is encrypted for
    // storage, outbound for transport, and keys usually carry both flags.
    let subkeys: Vec<_> = vc
        .keys()
        .supported()
        .alive()
        .revoked(false)
        .for_transport_encryption()
        .for_storage_encryption()
        .map(|ka| ka.key().fingerprint())
        .collect();
    if subkeys.is_empty() {
        return Err(RejectReason::NoEncryptionKey);
    }
    Ok(subkeys)
}

/// Fingerprint, primary key algorithm and expiry of a certificate.
pub fn describe(data: &[u8]) -> Option<KeyFacts> {
    let cert = Cert::from_bytes(data).ok()?;
    let policy = StandardPolicy::new();
    let pk = cert.primary_key().key();
    let bits = pk
        .mpis()
        .bits()
        .map(|b| format!(" {b}"))
        .unwrap_or_default();
    let expires = cert
        .with_policy(&policy, None)
        .ok()
        .and_then(|vc| vc.primary_key().key_expiration_time())
        .map(humantime_utc)
        .unwrap_or_else(|| "never".to_owned());
    Some(KeyFacts {
        fingerprint: cert.fingerprint().to_hex(),
        algorithm: format!("{}{bits}", pk.pk_algo()),
        expires,
    })
}

/// The binary transferable public key (what an OPENPGPKEY record holds)
/// from an armored or binary key; secret key material is never included.
pub fn binary_public_key(data: &[u8]) -> Result<Vec<u8>, RejectReason> {
    use openpgp::serialize::SerializeInto;
    let cert = Cert::from_bytes(data).map_err(|e| RejectReason::Unreadable(e.to_string()))?;
    // Cert::to_vec serializes public parts only.
    cert.to_vec()
        .map_err(|e| RejectReason::Unreadable(e.to_string()))
}

/// What a Web Key Directory serves for `addr`: the binary public key,
/// only if it can be encrypted to for `addr` at `now` (not expired, not
/// revoked, an encryption subkey, a user ID with the address), and with
/// every user ID for another address removed (the draft asks for it: the
/// directory vouches for this address only, and publishing the others
/// would disclose them).
pub fn wkd_key(data: &[u8], addr: &Address, now: SystemTime) -> Result<Vec<u8>, RejectReason> {
    use openpgp::serialize::SerializeInto;
    let cert = Cert::from_bytes(data).map_err(|e| RejectReason::Unreadable(e.to_string()))?;
    check_cert(&cert, addr, &StandardPolicy::new(), now)?;
    let cert = cert.retain_userids(|ua| {
        ua.userid()
            .email()
            .ok()
            .flatten()
            .and_then(|e| Address::parse(e).ok())
            .is_some_and(|a| a.matches_loosely(addr))
    });
    cert.to_vec()
        .map_err(|e| RejectReason::Unreadable(e.to_string()))
}

/// Most certificates read from one web answer; a WKD file holds one key
/// per address, rarely a few.
pub const MAX_CERTS_PER_ANSWER: usize = 16;

/// The certificates of a web answer (WKD file, keyserver response;
/// binary or armored, one or several) split by whether they carry a user
/// ID for `addr`: the binary public key and fingerprint of each that
/// does, the fingerprints of those that do not. Only the user IDs are
/// judged here (bound, not revoked, the address with its local part
/// compared in ASCII case only); the key's validity is the backend's
/// `validate`. An answer that is
/// not a sequence of OpenPGP certificates (an HTML page, garbage after a
/// key), holds none, or more than [`MAX_CERTS_PER_ANSWER`], is an error.
#[allow(clippy::type_complexity, reason = "two plain lists, named in the doc")]
pub fn certs_for_address(
    data: &[u8],
    addr: &Address,
) -> Result<(Vec<(Vec<u8>, String)>, Vec<String>), String> {
    use openpgp::serialize::SerializeInto;
    let (mut matching, mut others) = (Vec::new(), Vec::new());
    for cert in web_answer_certs(data)? {
        let fpr = cert.fingerprint().to_hex();
        let names = |uid: &openpgp::packet::UserID| {
            uid.email()
                .ok()
                .flatten()
                .and_then(|e| Address::parse(e).ok())
                .is_some_and(|a| same_address_ascii(&a, addr))
        };
        // Only user IDs bound by a valid self-signature and not revoked
        // count; a certificate the policy refuses as a whole keeps its
        // raw user IDs here, so that validation names why it is unusable.
        let has = match cert.with_policy(&StandardPolicy::new(), None) {
            Ok(vc) => vc.userids().any(|ua| {
                !matches!(ua.revocation_status(), RevocationStatus::Revoked(_))
                    && names(ua.userid())
            }),
            Err(_) => cert.userids().any(|ua| names(ua.userid())),
        };
        if has {
            let bytes = cert.to_vec().map_err(|e| e.to_string())?;
            matching.push((bytes, fpr));
        } else {
            others.push(fpr);
        }
    }
    Ok((matching, others))
}

/// Whether `a` is `b` with the local part compared case-insensitively in
/// ASCII only, as WKD hashes it: a web server vouches for the address it
/// was asked about, and Unicode case folding (`ß` → `ss`, the Kelvin
/// sign → `k`) would let a key for another mailbox through.
fn same_address_ascii(a: &Address, b: &Address) -> bool {
    a.has_dns_domain()
        && b.has_dns_domain()
        && a.domain() == b.domain()
        && a.local_unquoted().eq_ignore_ascii_case(&b.local_unquoted())
}

/// The certificates of a web answer: at least one, at most
/// [`MAX_CERTS_PER_ANSWER`], nothing else in it; why not otherwise.
fn web_answer_certs(data: &[u8]) -> Result<Vec<Cert>, String> {
    use openpgp::cert::CertParser;
    let parser = CertParser::from_bytes(data).map_err(|e| format!("not an OpenPGP key: {e}"))?;
    let mut certs = Vec::new();
    for (i, cert) in parser.enumerate() {
        if i >= MAX_CERTS_PER_ANSWER {
            return Err(format!("more than {MAX_CERTS_PER_ANSWER} certificates"));
        }
        certs.push(cert.map_err(|e| format!("not an OpenPGP key: {e}"))?);
    }
    if certs.is_empty() {
        return Err("no OpenPGP key in it".into());
    }
    Ok(certs)
}

/// A time as OpenSSL prints it (`Jan  1 00:00:00 2020 GMT`).
fn humantime_utc(t: SystemTime) -> String {
    match openssl::asn1::Asn1Time::from_unix(super::unix_seconds(t)) {
        Ok(a) => format!("{}", &*a),
        Err(_) => "unknown time".to_owned(),
    }
}

impl EncryptionBackend for OpenPgpBackend {
    fn method(&self) -> Method {
        Method::OpenPgp
    }

    fn validate(
        &self,
        key: &KeyMaterial,
        addr: &Address,
        now: SystemTime,
    ) -> Result<Recipient, KeyRejected> {
        key.expect_method(Method::OpenPgp)?;
        let reject = |reason| key.reject(reason);
        let cert = Cert::from_bytes(&key.data)
            .map_err(|e| reject(RejectReason::Unreadable(e.to_string())))?;
        let subkeys = check_cert(&cert, addr, &self.policy, now).map_err(reject)?;
        Ok(Recipient {
            address: addr.clone(),
            fingerprint: cert.fingerprint().to_hex(),
            origin: key.origin.clone(),
            provenance: key.provenance,
            hidden: false,
            key: RecipientKey::OpenPgp {
                cert: std::sync::Arc::new(cert),
                subkeys,
            },
        })
    }

    fn encrypt(
        &self,
        inner: &mut dyn io::Read,
        to: &[Recipient],
        opts: &EncryptOptions,
    ) -> Result<EncryptedEntity, BackendError> {
        let crypto = |e: anyhow_like::Error| BackendError::Crypto {
            method: Method::OpenPgp,
            detail: e.to_string(),
        };
        if to.is_empty() {
            return Err(BackendError::Recipients("no recipients".into()));
        }
        let mut recipients = Vec::new();
        for r in to {
            let RecipientKey::OpenPgp { cert, subkeys } = &r.key else {
                return Err(BackendError::Recipients(format!(
                    "{} has a {} key, not an OpenPGP key",
                    r.address,
                    r.method()
                )));
            };
            let before = recipients.len();
            for ka in cert
                .keys()
                .filter(|ka| subkeys.contains(&ka.key().fingerprint()))
            {
                // Announce only SEIPD v1 so that Sequoia never writes v2
                // packets, which GnuPG 2.2 cannot read. A blind recipient's
                // PKESK names no key (the anonymous key ID of RFC 9580
                // §5.1.8): every reader tries its secret keys on it.
                let handle = (!r.hidden).then(|| openpgp::KeyHandle::from(ka.key().keyid()));
                recipients.push(PgpRecipient::new(
                    Features::empty().set_seipdv1(),
                    handle,
                    ka.key(),
                ));
            }
            if recipients.len() == before {
                return Err(BackendError::Recipients(format!(
                    "{}: validated subkeys vanished",
                    r.address
                )));
            }
        }
        let mut ciphertext = Spool::new(opts.spool_threshold);
        {
            let message = Message::new(&mut ciphertext);
            let message = Encryptor::for_recipients(message, recipients)
                .build()
                .map_err(crypto)?;
            let mut literal = LiteralWriter::new(message)
                .format(DataFormat::Binary)
                .build()
                .map_err(crypto)?;
            // Bounded chunks: Sequoia's cipher stage buffers whatever one
            // write hands it.
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = match inner.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(BackendError::Io(e)),
                };
                literal.write_all(&buf[..n])?;
            }
            literal.finalize().map_err(crypto)?;
        }
        let boundary = new_boundary().map_err(|e| BackendError::Crypto {
            method: Method::OpenPgp,
            detail: e.to_string(),
        })?;
        Ok(EncryptedEntity {
            method: Method::OpenPgp,
            fields: vec![(
                "Content-Type",
                format!(
                    "multipart/encrypted; protocol=\"application/pgp-encrypted\";\n boundary=\"{boundary}\""
                ),
            )],
            body: Box::new(PgpMimeBody {
                boundary,
                ciphertext,
            }),
        })
    }
}

/// Sequoia's error type (an `anyhow::Error` re-export), named here so the
/// crate itself needs no `anyhow` dependency.
mod anyhow_like {
    pub type Error = sequoia_openpgp::anyhow::Error;
}

/// A fresh multipart boundary: random, and of characters that never occur
/// at the start of an armored line.
fn new_boundary() -> Result<String, openssl::error::ErrorStack> {
    let mut rnd = [0u8; 15];
    openssl::rand::rand_bytes(&mut rnd)?;
    let hex: String = rnd.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("=_autoencrypt_{hex}"))
}

/// The PGP/MIME body: version part and armored message, armored while
/// writing.
struct PgpMimeBody {
    boundary: String,
    ciphertext: Spool,
}

impl EntityBody for PgpMimeBody {
    fn write_to(&self, eol: Eol, out: &mut dyn Write) -> io::Result<()> {
        let e = std::str::from_utf8(eol.as_bytes()).unwrap_or("\r\n");
        let b = &self.boundary;
        write!(
            out,
            "This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156){e}\
             --{b}{e}\
             Content-Type: application/pgp-encrypted{e}\
             Content-Description: PGP/MIME version identification{e}\
             {e}\
             Version: 1{e}\
             {e}\
             --{b}{e}\
             Content-Type: application/octet-stream; name=\"encrypted.asc\"{e}\
             Content-Description: OpenPGP encrypted message{e}\
             Content-Disposition: inline; filename=\"encrypted.asc\"{e}\
             {e}"
        )?;
        // ASCII armor (RFC 9580 §6.2), written here rather than by
        // Sequoia's armor writer, whose bytewise CRC-24 took a quarter of
        // the time of a large message.
        write!(out, "-----BEGIN PGP MESSAGE-----{e}{e}")?;
        let mut crc = Crc24::new();
        copy_base64_lines(&mut self.ciphertext.reader(), 64, eol, out, |chunk| {
            crc.update(chunk)
        })?;
        let sum = base64::engine::general_purpose::STANDARD.encode(crc.bytes());
        write!(out, "={sum}{e}-----END PGP MESSAGE-----{e}")?;
        write!(out, "{e}--{b}--{e}")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use openpgp::serialize::SerializeInto;

    fn cert(uid: &str) -> Vec<u8> {
        let (cert, _) = CertBuilder::new()
            .add_userid(uid)
            .add_transport_encryption_subkey()
            .generate()
            .unwrap();
        cert.to_vec().unwrap()
    }

    #[test]
    fn web_answers_match_the_address_in_ascii_case_only() {
        let alice = Address::parse("alice@example.org").unwrap();
        let upper = cert("Alice <ALICE@Example.ORG>");
        let (m, o) = certs_for_address(&upper, &alice).unwrap();
        assert_eq!((m.len(), o.len()), (1, 0), "ASCII case is no difference");
        // Unicode case folding would make these the same mailbox.
        let strasse = Address::parse("strasse@example.org").unwrap();
        let (m, o) = certs_for_address(&cert("<straße@example.org>"), &strasse).unwrap();
        assert_eq!((m.len(), o.len()), (0, 1));
        let k = Address::parse("k@example.org").unwrap();
        let (m, _) = certs_for_address(&cert("<\u{212a}@example.org>"), &k).unwrap();
        assert!(m.is_empty(), "the Kelvin sign is not k");
        // The address inside a name, or a longer domain, is not it.
        for uid in [
            "\"alice@example.org\" <mallory@evil.example>",
            "<alice@example.org.evil.example>",
        ] {
            let (m, o) = certs_for_address(&cert(uid), &alice).unwrap();
            assert_eq!((m.len(), o.len()), (0, 1), "{uid}");
        }
        // Two certificates: only the one for the address is kept.
        let mut two = cert("<bob@example.org>");
        two.extend(cert("<alice@example.org>"));
        let (m, o) = certs_for_address(&two, &alice).unwrap();
        assert_eq!((m.len(), o.len()), (1, 1));
        assert!(certs_for_address(b"<html>not a key</html>", &alice).is_err());
    }
}
