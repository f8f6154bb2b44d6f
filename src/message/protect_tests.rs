#![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]

use super::*;
use crate::message::rewrite::apply_edits;
use crate::message::{Eol, Message};

/// The fields of a header section (CRLF), unfolded, in order.
fn fields(section: &[u8]) -> Vec<(String, String)> {
    let m = Message::parse(section);
    m.headers
        .iter()
        .map(|h| (h.name.clone(), h.unfolded().trim().to_owned()))
        .collect()
}

fn named<'a>(f: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    f.iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// RFC 9788 Appendix C.3.1 (`smime-signed-enc-hp-baseline`): the header
/// the composer wrote, rebuilt from the payload's copies, protected here,
/// matches the RFC's payload field for field and `HP-Outer` for
/// `HP-Outer`; the outer header gets the RFC's `Subject: [...]`.
#[test]
fn rfc_9788_c_3_1_field_for_field() {
    let rfc = include_bytes!("../../tests/fixtures/rfc9788/c.3.1-payload.eml");
    let want = fields(rfc);
    // What the MUA wrote: the payload's header without the HP additions.
    let original: Vec<HeaderField> = Message::parse(rfc)
        .headers
        .into_iter()
        .filter(|h| !h.is("HP-Outer"))
        .map(|mut h| {
            if h.is("Content-Type") {
                h.value = b" text/plain; charset=\"utf-8\"".to_vec();
            }
            h
        })
        .collect();
    let p = protect(&original).unwrap();
    let got = fields(&p.inner_header);
    for name in [
        "Subject",
        "Message-ID",
        "From",
        "To",
        "Date",
        "User-Agent",
        "MIME-Version",
        "Content-Transfer-Encoding",
        "HP-Outer",
    ] {
        assert_eq!(named(&got, name), named(&want, name), "{name}");
    }
    assert_eq!(got.len(), want.len());
    let ct = ContentType::parse(named(&got, "Content-Type")[0]).unwrap();
    let rfc_ct = ContentType::parse(named(&want, "Content-Type")[0]).unwrap();
    assert!(ct.is("text", "plain"));
    for p in ["charset", "hp"] {
        assert_eq!(ct.param(p), rfc_ct.param(p), "{p}");
    }
    assert_eq!(ct.param("protected-headers"), Some("v1"));
    // The outer header the RFC's HP-Outer fields describe.
    let mut outer = original.clone();
    apply_edits(&mut outer, &p.edits, Eol::Crlf);
    let subject: Vec<_> = outer.iter().filter(|h| h.is("Subject")).collect();
    assert_eq!(subject.len(), 1);
    assert_eq!(subject[0].value, b" [...]");
    for record in named(&want, "HP-Outer") {
        let (name, value) = record.split_once(": ").unwrap();
        assert!(
            outer
                .iter()
                .any(|h| h.is(name) && h.unfolded().trim() == value),
            "HP-Outer {record:?} not outside"
        );
    }
}

/// The complex vector (C.3.9, multipart/mixed): the same for a multipart
/// root, its boundary parameter kept.
#[test]
fn rfc_9788_c_3_9_multipart_root() {
    let rfc = include_bytes!("../../tests/fixtures/rfc9788/c.3.9-payload.eml");
    let want = fields(rfc);
    let original: Vec<HeaderField> = Message::parse(rfc)
        .headers
        .into_iter()
        .filter(|h| !h.is("HP-Outer"))
        .map(|mut h| {
            if h.is("Content-Type") {
                h.value = b" multipart/mixed; boundary=\"3a3\"".to_vec();
            }
            h
        })
        .collect();
    let got = fields(&protect(&original).unwrap().inner_header);
    assert_eq!(named(&got, "HP-Outer"), named(&want, "HP-Outer"));
    let ct = ContentType::parse(named(&got, "Content-Type")[0]).unwrap();
    assert!(ct.is("multipart", "mixed"));
    assert_eq!(ct.param("boundary"), Some("3a3"));
    assert_eq!(ct.param("hp"), Some("cipher"));
}

#[test]
fn bcc_and_transit_fields_stay_out_and_removed_fields_have_no_record() {
    let raw = b"Received: from a by b\nDKIM-Signature: v=1; d=x\nFrom: a@x\nBcc: secret@y\n\
To: b@y\nComments: c\nKeywords: k\nHP-Outer: Subject: forged\nSubject: hi\n\n";
    let m = Message::parse(raw);
    let p = protect(&m.headers).unwrap();
    let got = fields(&p.inner_header);
    for absent in ["Received", "DKIM-Signature", "Bcc"] {
        assert!(named(&got, absent).is_empty(), "{absent} copied");
    }
    assert_eq!(named(&got, "Comments"), ["c"]);
    assert_eq!(named(&got, "Keywords"), ["k"]);
    assert_eq!(
        named(&got, "HP-Outer"),
        ["From: a@x", "To: b@y", "Subject: [...]"]
    );
    let mut outer = m.headers.clone();
    apply_edits(&mut outer, &p.edits, Eol::Lf);
    let names: Vec<&str> = outer.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "Received",
            "DKIM-Signature",
            "From",
            "Bcc",
            "To",
            "HP-Outer",
            "Subject"
        ]
    );
}

#[test]
fn copies_are_byte_for_byte_with_crlf_and_the_mark_is_appended() {
    let raw = b"Subject: =?utf-8?q?caf=C3=A9?=\n =?utf-8?q?_au_lait?=\nTo: \"B, b\" <b@y>\n\
Content-Type: text/plain;\n charset=utf-8;  \nX-8bit: \xc3\xa9t\xc3\xa9\n\nbody\n";
    let m = Message::parse(raw);
    let p = protect(&m.headers).unwrap();
    let inner = String::from_utf8(p.inner_header.clone()).unwrap();
    assert_eq!(
        inner,
        "Subject: =?utf-8?q?caf=C3=A9?=\r\n =?utf-8?q?_au_lait?=\r\nTo: \"B, b\" <b@y>\r\n\
         Content-Type: text/plain;\r\n charset=utf-8;\r\n hp=\"cipher\";\r\n protected-headers=\"v1\"\r\n\
         X-8bit: été\r\n\
         HP-Outer: Subject: [...]\r\nHP-Outer: To: \"B, b\" <b@y>\r\nHP-Outer: X-8bit: été\r\n\r\n"
    );
}

#[test]
fn no_content_type_gets_the_mime_default() {
    let m = Message::parse(b"Subject: s\n\nbody\n");
    let got = fields(&protect(&m.headers).unwrap().inner_header);
    let ct = ContentType::parse(named(&got, "Content-Type")[0]).unwrap();
    assert!(ct.is("text", "plain"));
    assert_eq!(ct.param("charset"), Some("us-ascii"));
    assert_eq!(ct.param("hp"), Some("cipher"));
}

#[test]
fn several_subjects_are_all_obscured_and_none_means_no_edit() {
    let m = Message::parse(b"Subject: one\nsubject: two\nComments: a\nComments: b\n\n");
    let p = protect(&m.headers).unwrap();
    let mut outer = m.headers.clone();
    apply_edits(&mut outer, &p.edits, Eol::Lf);
    let values: Vec<&[u8]> = outer.iter().map(|h| h.value.as_slice()).collect();
    assert_eq!(values, [b" [...]".as_slice(), b" [...]".as_slice()]);
    let m = Message::parse(b"From: a@x\n\n");
    assert!(protect(&m.headers).unwrap().edits.is_empty());
}

#[test]
fn what_cannot_carry_the_protected_header() {
    for (ct, want) in [
        (
            "multipart/signed; protocol=\"application/pkcs7-signature\"; boundary=b",
            Unprotectable::Signed("multipart/signed"),
        ),
        (
            "application/pkcs7-mime; smime-type=signed-data",
            Unprotectable::Signed("application/pkcs7-mime"),
        ),
        (
            "APPLICATION/X-PKCS7-MIME",
            Unprotectable::Signed("application/pkcs7-mime"),
        ),
        ("text/plain; HP=clear", Unprotectable::AlreadyMarked("hp")),
        (
            "text/plain; protected-headers=v1",
            Unprotectable::AlreadyMarked("protected-headers"),
        ),
        ("garbage", Unprotectable::Malformed),
    ] {
        let h = [HeaderField::new("Content-Type", format!(" {ct}"))];
        assert_eq!(protect(&h), Err(want), "{ct}");
    }
    let two = [
        HeaderField::new("Content-Type", " text/plain"),
        HeaderField::new("content-type", " text/html"),
    ];
    assert_eq!(protect(&two), Err(Unprotectable::SeveralContentTypes));
    // Something that only looks encrypted is protected like any payload.
    let h = [HeaderField::new(
        "Content-Type",
        " application/pkcs7-mime; smime-type=enveloped-data",
    )];
    assert!(protect(&h).is_ok());
}
