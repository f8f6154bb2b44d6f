//! The messages of the harvesting and key-change tests, made with the
//! reference tools: S/MIME signatures by `openssl cms -sign`, Autocrypt
//! headers carrying a key `gpg` generated, `Authentication-Results`
//! fields as the receiving MTA's DKIM/DMARC milter would write them.
//! Line endings are LF here; the SMTP client sends CRLF.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::common::{Scratch, SmimeId, smime_sign_tool, to_lf};

/// The authserv-id the milter under test is configured with.
pub const AUTHSERV_ID: &str = "mx.autoencrypt.test";

/// Unix seconds now.
pub fn unix_now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs(),
    )
    .expect("seconds fit")
}

/// `t` (unix seconds, UTC) as an RFC 5322 date: `Wed, 02 Dec 2026 09:00:00 +0000`.
pub fn rfc5322_date(t: i64) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // 1970-01-01 was a Thursday.
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][days.rem_euclid(7) as usize];
    let mon = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(month - 1) as usize];
    format!(
        "{weekday}, {day:02} {mon} {year} {:02}:{:02}:{:02} +0000",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// `Authentication-Results: <id>; dkim=pass header.d=<domain>`.
pub fn dkim_pass(authserv_id: &str, domain: &str) -> String {
    format!(
        "Authentication-Results: {authserv_id};\n dkim=pass (2048-bit key) header.d={domain} header.s=sel1"
    )
}

/// `Authentication-Results: <id>; dkim=pass header.d=<parent>;
/// dmarc=pass header.from=<domain>`: DMARC passed on the parent domain's
/// DKIM signature (relaxed alignment), which is the only DMARC pass the
/// milter learns from (one on SPF alone vouches for no header).
pub fn dmarc_pass(authserv_id: &str, domain: &str) -> String {
    let parent = domain.split_once('.').map_or(domain, |(_, p)| p);
    format!(
        "Authentication-Results: {authserv_id};\n dkim=pass header.d={parent};\n dmarc=pass (p=reject dis=none) header.from={domain}"
    )
}

/// The header section of a message: From, To, Subject, Date, Message-ID,
/// then `extra` fields as given (each one field, folds allowed), LF ended.
pub fn header(from: &str, to: &str, subject: &str, date: i64, extra: &[String]) -> String {
    let mut h = format!(
        "From: {from}\nTo: {to}\nSubject: {subject}\nDate: {}\nMessage-ID: <{}.{}@{}>\n",
        rfc5322_date(date),
        unique(),
        date,
        from.rsplit('@').next().unwrap_or("example.net")
    );
    for f in extra {
        h.push_str(f);
        h.push('\n');
    }
    h
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    N.fetch_add(1, Ordering::Relaxed) * 1_000_003 + u64::from(std::process::id())
}

/// The entity a sender signs.
pub fn signed_entity(from: &str) -> Vec<u8> {
    format!(
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\nSigned by {from}: this is my certificate.\r\n"
    )
    .into_bytes()
}

/// A message from `from` to `to` signed by `id` with `openssl cms -sign`
/// (detached: multipart/signed; else application/pkcs7-mime signed-data),
/// with the `extra` header fields (the authentication result) first.
pub fn smime_signed(
    scratch: &Scratch,
    id: &SmimeId,
    from: &str,
    to: &str,
    date: i64,
    extra: &[String],
    detached: bool,
) -> Vec<u8> {
    let signed = to_lf(&smime_sign_tool(
        scratch,
        &signed_entity(from),
        id,
        detached,
    ));
    let mut msg = header(from, to, "signed", date, extra).into_bytes();
    // openssl's output starts with its own MIME-Version and Content-Type.
    msg.extend_from_slice(&signed);
    msg
}

/// `msg` with the signed text changed after signing: the signature no
/// longer verifies over the content.
pub fn tampered(msg: &[u8]) -> Vec<u8> {
    let text = String::from_utf8(msg.to_vec()).expect("ASCII message");
    assert!(
        text.contains("this is my certificate."),
        "no signed text to alter"
    );
    text.replacen("this is my certificate.", "this is my certificatE.", 1)
        .into_bytes()
}

/// An `Autocrypt:` header for `addr` carrying `keydata` (a binary
/// transferable public key), folded at 76 columns, after the
/// `DKIM-Signature` field of `addr`'s domain that signs it, as a provider
/// that signs the header writes it (the test MTA verifies nothing: the
/// Authentication-Results field a test adds says what passed).
pub fn autocrypt_field(addr: &str, keydata: &[u8]) -> String {
    let domain = addr.rsplit('@').next().unwrap_or_default();
    format!(
        "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d={domain}; s=sel1;\n \
         h=from:to:subject:date:message-id:autocrypt; bh=AAAA; b=AAAA\n{}",
        autocrypt_unsigned_field(addr, keydata)
    )
}

/// The `Autocrypt:` header alone, with no DKIM signature covering it.
pub fn autocrypt_unsigned_field(addr: &str, keydata: &[u8]) -> String {
    let b64 = openssl::base64::encode_block(keydata);
    let mut f = format!("Autocrypt: addr={addr}; prefer-encrypt=mutual; keydata=");
    for chunk in b64.as_bytes().chunks(76) {
        f.push_str("\n ");
        f.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
    }
    f
}

/// A plain text message with the `extra` header fields (authentication
/// result, Autocrypt headers).
pub fn plain_with(from: &str, to: &str, date: i64, extra: &[String]) -> Vec<u8> {
    let mut msg = header(from, to, "hello", date, extra).into_bytes();
    msg.extend_from_slice(
        format!(
            "MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\nHello from {from}.\n"
        )
        .as_bytes(),
    );
    msg
}

/// The reply a local user sends (the outbound message that should be
/// encrypted), 8-bit text.
pub fn reply(from: &str, to: &str) -> Vec<u8> {
    format!(
        "From: {from}\nTo: {to}\nSubject: Re: your key\nDate: {}\nMessage-ID: <r{}@local.autoencrypt.test>\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\nGrüße an {to}: nur für dich lesbar.\n",
        rfc5322_date(unix_now()),
        unique()
    )
    .into_bytes()
}

#[test]
fn dates_are_rfc5322() {
    assert_eq!(rfc5322_date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
    assert_eq!(
        rfc5322_date(1_796_202_000),
        "Wed, 02 Dec 2026 09:00:00 +0000"
    );
    assert_eq!(rfc5322_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
}
