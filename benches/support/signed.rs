//! Signed inbound mail for the harvesting benchmarks (issue 12): a signer
//! (RSA 2048 S/MIME certificate for its address, with keyEncipherment and
//! emailProtection, so that the milter may learn it, and its private key)
//! and a message from it as the receiving MTA hands it on — detached
//! `multipart/signed` made with OpenSSL's PKCS #7 signing (issuer and
//! serial, the signer's certificate included, as mail clients write it),
//! under an `Authentication-Results` field saying DKIM passed for the
//! `From:` domain.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::stack::Stack;
use openssl::x509::extension::{ExtendedKeyUsage, KeyUsage, SubjectAlternativeName};
use openssl::x509::{X509, X509Builder, X509NameBuilder};

/// Who signs: an address, its certificate and its private key.
pub struct Signer {
    /// The `From:` address, also the certificate's rfc822Name.
    pub addr: String,
    /// Self-signed (a learned key is not chained to a CA), valid 30 days.
    pub cert: X509,
    key: PKey<Private>,
}

impl Signer {
    /// A new RSA 2048 identity for `addr`; `serial` tells certificates of
    /// one run apart.
    pub fn new(addr: &str, serial: u32) -> Signer {
        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", addr).unwrap();
        let name = name.build();
        let mut b = X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        let serial = BigNum::from_u32(serial + 1)
            .unwrap()
            .to_asn1_integer()
            .unwrap();
        b.set_serial_number(&serial).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
            .unwrap();
        let san = SubjectAlternativeName::new()
            .email(addr)
            .build(&b.x509v3_context(None, None))
            .unwrap();
        b.append_extension(san).unwrap();
        b.append_extension(
            KeyUsage::new()
                .digital_signature()
                .key_encipherment()
                .build()
                .unwrap(),
        )
        .unwrap();
        b.append_extension(ExtendedKeyUsage::new().email_protection().build().unwrap())
            .unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        Signer {
            addr: addr.to_owned(),
            cert: b.build(),
            key,
        }
    }

    /// The detached PKCS #7 SignedData (DER) over exactly `content`.
    pub fn sign_detached(&self, content: &[u8]) -> Vec<u8> {
        let none = Stack::new().unwrap();
        Pkcs7::sign(
            &self.cert,
            &self.key,
            &none,
            content,
            Pkcs7Flags::DETACHED | Pkcs7Flags::BINARY,
        )
        .unwrap()
        .to_der()
        .unwrap()
    }
}

/// `t` as an RFC 5322 date in UTC.
pub fn rfc5322_date(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap().as_secs();
    let days = i64::try_from(secs / 86_400).unwrap();
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{weekday}, {day:02} {} {year} {:02}:{:02}:{:02} +0000",
        months[(month - 1) as usize],
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

/// A whole message (CRLF) from `signer` to `to`, about `size` bytes: a
/// text entity signed as `multipart/signed`, under an
/// `Authentication-Results` field of `authserv_id` with `dkim=pass` for
/// the signer's domain, dated `date`.
pub fn signed_message(
    signer: &Signer,
    to: &str,
    authserv_id: &str,
    date: &str,
    size: usize,
) -> Vec<u8> {
    let domain = signer.addr.rsplit_once('@').unwrap().1;
    let header = format!(
        "Received: from mail.{domain} (mail.{domain} [192.0.2.7])\r\n\tby {authserv_id} (Postfix) with ESMTPS id 4XYZ; {date}\r\n\
         Authentication-Results: {authserv_id};\r\n dkim=pass header.d={domain} header.s=sel header.b=AbCdEf12;\r\n spf=pass smtp.mailfrom={domain}\r\n\
         From: Sender <{from}>\r\n\
         To: <{to}>\r\n\
         Subject: signed load test\r\n\
         Date: {date}\r\n\
         Message-ID: <bench.{serial}@{domain}>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\";\r\n micalg=sha-256; boundary=\"----sig-boundary\"\r\n\
         \r\n",
        from = signer.addr,
        serial = signer.cert.serial_number().to_bn().unwrap(),
    );
    let mut entity = String::from(
        "Content-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n\r\n",
    );
    let line =
        "The quick brown fox jumps over the lazy dog; signed mail for the harvest bench.\r\n";
    // Room for the signature part (~2.2 KiB with the certificate).
    while header.len() + entity.len() + line.len() + 2_400 < size {
        entity.push_str(line);
    }
    let sig =
        base64::engine::general_purpose::STANDARD.encode(signer.sign_detached(entity.as_bytes()));
    let mut out = header.into_bytes();
    out.extend_from_slice(b"This is an S/MIME signed message\r\n\r\n------sig-boundary\r\n");
    out.extend_from_slice(entity.as_bytes());
    out.extend_from_slice(
        b"\r\n------sig-boundary\r\n\
          Content-Type: application/pkcs7-signature; name=\"smime.p7s\"\r\n\
          Content-Transfer-Encoding: base64\r\n\
          Content-Disposition: attachment; filename=\"smime.p7s\"\r\n\r\n",
    );
    for chunk in sig.as_bytes().chunks(76) {
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    // The last line end belongs to the close delimiter.
    out.extend_from_slice(b"------sig-boundary--\r\n");
    out
}
