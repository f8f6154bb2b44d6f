//! Header protection (issue 14): a header section through
//! `message::protect` and `message::blind`, whose output a reader parses
//! again.

use crate::address::Address;
use crate::message::blind::blind;
use crate::message::mime::ContentType;
use crate::message::protect::{PLACEHOLDER, protect};
use crate::message::rewrite::apply_edits;
use crate::message::{Eol, Message};

/// A header section (and perhaps a body): protected, its payload header
/// must read back with one `Content-Type` marked `hp="cipher"`, no `Bcc`,
/// and the outer header must show no Subject but the placeholder; the
/// blind check must name every recipient one way or the other.
pub fn protect_header(data: &[u8]) {
    let msg = Message::parse(data);
    let recipients: Vec<Address> = ["a@example.org", "b@example.org"]
        .iter()
        .filter_map(|a| Address::parse(a).ok())
        .collect();
    assert_eq!(blind(&msg.headers, &recipients).len(), recipients.len());
    let Ok(p) = protect(&msg.headers) else {
        return;
    };
    assert!(p.inner_header.ends_with(b"\r\n\r\n") || p.inner_header == b"\r\n");
    let inner = Message::parse(&p.inner_header);
    assert_eq!(
        inner.body_offset,
        p.inner_header.len(),
        "the section ends once"
    );
    let types: Vec<_> = inner
        .headers
        .iter()
        .filter(|h| h.is("Content-Type"))
        .collect();
    assert_eq!(types.len(), 1, "one Content-Type inside");
    let ct = ContentType::parse(&types[0].unfolded());
    assert_eq!(
        ct.as_ref().and_then(|c| c.param("hp")),
        Some("cipher"),
        "{ct:?}"
    );
    assert!(!inner.headers.iter().any(|h| h.is("Bcc")), "Bcc inside");
    let mut outer = msg.headers.clone();
    apply_edits(&mut outer, &p.edits, Eol::Crlf);
    for h in outer.iter().filter(|h| h.is("Subject")) {
        assert_eq!(h.value, format!(" {PLACEHOLDER}").as_bytes());
    }
    assert!(!outer.iter().any(|h| h.is("Keywords") || h.is("Comments")));
}
