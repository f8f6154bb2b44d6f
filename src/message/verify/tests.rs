//! Whole-message verification on hand-built inputs (the real tools'
//! output is tested in tests/ciphertext_verify.rs).

use base64::Engine as _;

use super::*;
use crate::backend::encoding::Crc24;
use crate::message::Message;

/// PKESK + SEIPD framing (contents are not checked).
const PACKETS: &[u8] = &[0xC1, 3, 3, 0, 0, 0xD2, 4, 1, 2, 3, 4];

fn armor(packets: &[u8]) -> String {
    let e = &base64::engine::general_purpose::STANDARD;
    let mut c = Crc24::new();
    c.update(packets);
    format!(
        "-----BEGIN PGP MESSAGE-----\n\n{}\n={}\n-----END PGP MESSAGE-----\n",
        e.encode(packets),
        e.encode(c.bytes())
    )
}

fn run(raw: &[u8]) -> Verification {
    let m = Message::parse(raw);
    verify(&m.headers, &mut &raw[m.body_offset..])
}

fn rejected(raw: &[u8], why: &str) {
    match run(raw) {
        Verification::NotCiphertext(r) => assert!(r.contains(why), "{r:?} should say {why:?}"),
        v => panic!("{v:?} for {}", String::from_utf8_lossy(raw)),
    }
}

fn pgp_mime(preamble: &str, data_part: &str, epilogue: &str) -> String {
    format!(
        "Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"b\"\n\n\
{preamble}--b\nContent-Type: application/pgp-encrypted\n\nVersion: 1\n\n--b\n\
Content-Type: application/octet-stream\n\n{data_part}\n--b--\n{epilogue}"
    )
}

#[test]
fn pgp_mime_verified() {
    let m = pgp_mime(
        "This is an OpenPGP/MIME encrypted message\n",
        &armor(PACKETS),
        "",
    );
    assert_eq!(
        run(m.as_bytes()),
        Verification::Verified(EncryptedKind::PgpMime)
    );
    let crlf = m.replace('\n', "\r\n");
    assert_eq!(
        run(crlf.as_bytes()),
        Verification::Verified(EncryptedKind::PgpMime)
    );
}

#[test]
fn pgp_mime_with_plain_parts_or_wrong_protocol() {
    let plain = pgp_mime("", "Dear Bob, the secret is 42.", "");
    rejected(plain.as_bytes(), "PGP armor");
    let no_proto = plain.replace("; protocol=\"application/pgp-encrypted\"", "");
    rejected(no_proto.as_bytes(), "protocol");
    let other = armor(PACKETS);
    let third = pgp_mime(
        "",
        &format!("{other}\n--b\nContent-Type: application/pdf\n\nsecret"),
        "",
    );
    rejected(third.as_bytes(), "more than two parts");
    let version = pgp_mime("", &armor(PACKETS), "").replace("Version: 1", "secret");
    rejected(version.as_bytes(), "Version: 1");
    let qp = pgp_mime("", &armor(PACKETS), "").replace(
        "application/octet-stream\n",
        "application/octet-stream\nContent-Transfer-Encoding: base64\n",
    );
    rejected(qp.as_bytes(), "second PGP/MIME part");
}

#[test]
fn pgp_mime_preamble_and_epilogue_bound() {
    let at = "x".repeat(pgp_mime::MAX_AROUND);
    let over = "x".repeat(pgp_mime::MAX_AROUND + 1);
    let ok = pgp_mime(&format!("{at}\n"), &armor(PACKETS), &format!("{at}\n"));
    assert_eq!(
        run(ok.as_bytes()),
        Verification::Verified(EncryptedKind::PgpMime)
    );
    rejected(
        pgp_mime(&format!("{over}\n"), &armor(PACKETS), "").as_bytes(),
        "preamble",
    );
    rejected(
        pgp_mime("", &armor(PACKETS), &format!("{over}\n")).as_bytes(),
        "epilogue",
    );
    // White space does not count.
    let ws = format!("{}\n", " ".repeat(4000));
    assert!(matches!(
        run(pgp_mime(&ws, &armor(PACKETS), "").as_bytes()),
        Verification::Verified(_)
    ));
}

#[test]
fn inline_pgp_in_every_transfer_encoding() {
    let a = armor(PACKETS);
    let raw = format!("Content-Type: text/plain\n\n\n{a}\n");
    assert_eq!(
        run(raw.as_bytes()),
        Verification::Verified(EncryptedKind::InlinePgp)
    );
    let b64 = base64::engine::general_purpose::STANDARD.encode(a.as_bytes());
    let raw = format!("Content-Type: text/plain\nContent-Transfer-Encoding: base64\n\n{b64}\n");
    assert_eq!(
        run(raw.as_bytes()),
        Verification::Verified(EncryptedKind::InlinePgp)
    );
    let qp = a.replace("=", "=3D");
    let raw =
        format!("Content-Type: text/plain\nContent-Transfer-Encoding: quoted-printable\n\n{qp}");
    assert_eq!(
        run(raw.as_bytes()),
        Verification::Verified(EncryptedKind::InlinePgp)
    );
}

#[test]
fn inline_pgp_followed_by_plain_text() {
    let raw = "Subject: x\n\n-----BEGIN PGP MESSAGE-----\n\nThe secret is 42.\n";
    assert!(matches!(
        run(raw.as_bytes()),
        Verification::NotCiphertext(_)
    ));
    let raw = format!("Subject: x\n\n{}\nP.S. the secret is 42.\n", armor(PACKETS));
    rejected(raw.as_bytes(), "after the PGP armor");
    let raw = format!(
        "Content-Type: multipart/mixed; boundary=m\n\n--m\nContent-Type: text/plain\n\n{}\n--m\n\
Content-Type: application/pdf\n\n%PDF-1.4 secret\n--m--\n",
        armor(PACKETS)
    );
    rejected(raw.as_bytes(), "multipart");
}

#[test]
fn smime_bodies_that_are_not_cms() {
    rejected(
        b"Content-Type: application/pkcs7-mime\nContent-Transfer-Encoding: base64\n\n!!garbage!!\n",
        "base64",
    );
    rejected(
        b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\n\nDear Bob, the secret\n",
        "CMS",
    );
    rejected(
        b"Content-Type: text/plain; name=\"notes.p7m\"\n\nthe secret\n",
        "CMS",
    );
    rejected(
        b"Content-Disposition: inline; filename=\"notes.p7m\"\n\nthe secret\n",
        "CMS",
    );
    rejected(
        b"Content-Type: application/pkcs7-mime; smime-type=signed-data\n\nMIIB\n",
        "smime-type",
    );
    rejected(b"Content-Type: image/png\n\nx", "not an encrypted");
}

#[test]
fn read_errors_are_not_verdicts() {
    struct Broken;
    impl Read for Broken {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("disk on fire"))
        }
    }
    let m = Message::parse(
        b"Content-Type: application/pkcs7-mime\nContent-Transfer-Encoding: base64\n\n",
    );
    assert!(matches!(
        verify(&m.headers, &mut Broken),
        Verification::ReadError(_)
    ));
}

/// A DER EnvelopedData whose encryptedContent is `content` as written.
fn cms_with_content(content: &[u8]) -> Vec<u8> {
    fn tlv(tag: u8, c: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        let n = c.len();
        if n < 0x80 {
            v.push(n as u8);
        } else {
            v.extend([0x82, (n >> 8) as u8, n as u8]);
        }
        v.extend_from_slice(c);
        v
    }
    let ri = tlv(0x30, &[tlv(0x02, &[2]), tlv(0x04, &[1, 2, 3])].concat());
    let eci = tlv(
        0x30,
        &[
            tlv(0x06, &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 1, 7, 1]),
            tlv(0x30, &tlv(0x06, &[0x60])),
            tlv(0x80, content),
        ]
        .concat(),
    );
    let ed = tlv(0x30, &[tlv(0x02, &[2]), tlv(0x31, &ri), eci].concat());
    tlv(
        0x30,
        &[
            tlv(0x06, &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 1, 7, 3]),
            tlv(0xA0, &ed),
        ]
        .concat(),
    )
}

#[test]
fn cms_in_raw_bytes_is_readable_so_not_verified() {
    // Well-formed CMS framing around readable text: with an identity
    // transfer encoding those bytes are stored (and grep-able) as written.
    let der = cms_with_content(b"Dear Bob, the secret plan is to meet at noon.");
    for cte in [
        "",
        "Content-Transfer-Encoding: binary\n",
        "Content-Transfer-Encoding: 8bit\n",
    ] {
        let mut raw =
            format!("Content-Type: application/pkcs7-mime; smime-type=enveloped-data\n{cte}\n")
                .into_bytes();
        raw.extend(&der);
        rejected(&raw, "base64");
    }
    // The same structure in base64 verifies.
    let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
    let raw = format!(
        "Content-Type: application/pkcs7-mime; smime-type=enveloped-data\n\
Content-Transfer-Encoding: base64\n\n{b64}\n"
    );
    assert_eq!(
        run(raw.as_bytes()),
        Verification::Verified(EncryptedKind::Smime)
    );
}

#[test]
fn p7m_name_on_a_rendered_type_is_not_verified() {
    // A reader renders text/* (and other displayable types) inline: the
    // decoded CMS bytes, readable text in its encryptedContent included.
    let der = cms_with_content(b"Dear Bob, the secret plan is to meet at noon.");
    let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
    for head in [
        "Content-Type: text/plain; name=\"notes.p7m\"\n",
        "Content-Type: text/html; name=\"notes.p7m\"\n",
        "Content-Disposition: inline; filename=\"notes.p7m\"\n",
        "Content-Type: message/rfc822; name=\"notes.p7m\"\n",
    ] {
        let raw = format!("{head}Content-Transfer-Encoding: base64\n\n{b64}\n");
        rejected(raw.as_bytes(), "octet-stream");
    }
    let raw = format!(
        "Content-Type: application/octet-stream; name=\"notes.p7m\"\n\
Content-Transfer-Encoding: base64\n\n{b64}\n"
    );
    assert_eq!(
        run(raw.as_bytes()),
        Verification::Verified(EncryptedKind::P7mFile)
    );
}

#[test]
fn inline_pgp_only_in_an_ascii_compatible_charset() {
    // In UTF-7 a '+' starts base64-encoded UTF-16: the armor's base64
    // lines, whose packet bodies the sender chooses, render as any text.
    let a = armor(PACKETS);
    for cs in [
        "utf-7",
        "UTF-7",
        "x-imap4-modified-utf7",
        "utf-16",
        "utf-32be",
    ] {
        let raw = format!("Content-Type: text/plain; charset={cs}\n\n{a}");
        rejected(raw.as_bytes(), "charset");
    }
    for cs in ["us-ascii", "UTF-8", "iso-8859-15", "windows-1252"] {
        let raw = format!("Content-Type: text/plain; charset=\"{cs}\"; format=flowed\n\n{a}");
        assert_eq!(
            run(raw.as_bytes()),
            Verification::Verified(EncryptedKind::InlinePgp),
            "{cs}"
        );
    }
}

#[test]
fn pgp_mime_part_headers_are_bounded_readable_text() {
    // Part header fields are readable text outside the ciphertext, like
    // the preamble: the same 1 KiB budget per part.
    let secret = format!("Content-Description: {}\n", "the secret plan ".repeat(70));
    let m = pgp_mime("", &armor(PACKETS), "").replace(
        "Content-Type: application/octet-stream\n",
        &format!("Content-Type: application/octet-stream\n{secret}"),
    );
    rejected(m.as_bytes(), "part header over 1 KiB");
    let m = pgp_mime("", &armor(PACKETS), "").replace(
        "Content-Type: application/pgp-encrypted\n",
        &format!("Content-Type: application/pgp-encrypted\n{secret}"),
    );
    rejected(m.as_bytes(), "part header over 1 KiB");
    // What clients write passes.
    let m = pgp_mime("", &armor(PACKETS), "").replace(
        "Content-Type: application/octet-stream\n",
        "Content-Type: application/octet-stream; name=\"encrypted.asc\"\n\
Content-Description: OpenPGP encrypted message\n\
Content-Disposition: inline; filename=\"encrypted.asc\"\n",
    );
    assert_eq!(
        run(m.as_bytes()),
        Verification::Verified(EncryptedKind::PgpMime)
    );
}

#[test]
fn a_content_type_parameter_given_twice_is_not_verified() {
    // The parser keeps the first; a reader may take the last.
    let a = armor(PACKETS);
    let raw = format!("Content-Type: text/plain; charset=us-ascii; Charset=\"utf-7\"\n\n{a}");
    rejected(raw.as_bytes(), "given twice");
    let raw = format!("Content-Type: text/plain; charset=us-ascii; charset*=utf-7''\n\n{a}");
    rejected(raw.as_bytes(), "given twice");
    let m =
        pgp_mime("", &armor(PACKETS), "").replace("boundary=\"b\"", "boundary=\"b\"; boundary=c");
    rejected(m.as_bytes(), "given twice");
    // RFC 2231 sections are one parameter.
    let m = pgp_mime("", &armor(PACKETS), "").replace("boundary=\"b\"", "boundary*0=\"b\"");
    assert_eq!(
        run(m.as_bytes()),
        Verification::Verified(EncryptedKind::PgpMime)
    );
}
