//! The transport-safe form for signing (issue 15): arbitrary bytes
//! through `signing::safe::transport_safe`, whose output must be a fixed
//! point and carry the same content.

use std::borrow::Cow;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use crate::signing::safe::{self, Cte, Head, MAX_DEPTH, Split, decode_qp, default_type, encloses};

/// An entity: when it is made safe, the result must be safe unchanged
/// (borrowed, so idempotent), and every leaf must decode to what the
/// input's leaf decodes to, in the same places of the same structure.
pub fn transport_safe(data: &[u8]) {
    let Ok(out) = safe::transport_safe(data) else {
        return;
    };
    match safe::transport_safe(&out) {
        Ok(Cow::Borrowed(again)) => assert_eq!(again, &*out),
        Ok(Cow::Owned(_)) => panic!("the safe form changed again"),
        Err(e) => panic!("the safe form is refused: {e}"),
    }
    if let Cow::Borrowed(same) = &out {
        assert_eq!(*same, data, "borrowed means unchanged");
    }
    let (before, after) = (decoded_leaves(data), decoded_leaves(&out));
    assert_eq!(before.len(), after.len(), "the structure changed");
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        assert_eq!(b.0, a.0, "leaf {i}: type changed");
        assert!(b.1 == a.1, "leaf {i}: content changed");
    }
}

/// Each leaf of `entity` in order: its `type/subtype` and its content,
/// decoded from its transfer encoding. Preambles and epilogues count as
/// leaves (they are kept as they are). Malformed structure ends the walk
/// (inputs the rules accepted are never malformed).
pub(crate) fn decoded_leaves(entity: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    walk(entity, false, 0, &mut out);
    out
}

fn walk(entity: &[u8], in_digest: bool, depth: usize, out: &mut Vec<(String, Vec<u8>)>) {
    if depth > MAX_DEPTH {
        return;
    }
    let Ok(head) = Head::parse(entity) else {
        return;
    };
    let ct = head
        .content_type
        .clone()
        .unwrap_or_else(|| default_type(in_digest));
    let kind = format!("{}/{}", ct.kind, ct.subtype);
    if ct.kind == "multipart" {
        let Some(split) = ct
            .param("boundary")
            .and_then(|b| Split::new(head.body, b.as_bytes()).ok())
        else {
            return;
        };
        out.push(("preamble".into(), split.preamble().to_vec()));
        for part in split.parts() {
            walk(part, ct.is("multipart", "digest"), depth + 1, out);
        }
        out.push(("epilogue".into(), split.epilogue().to_vec()));
    } else if encloses(&ct) && !matches!(head.cte, Cte::Base64 | Cte::Qp | Cte::Other) {
        walk(head.body, false, depth + 1, out);
    } else {
        let content = match head.cte {
            Cte::Qp => decode_qp(head.body),
            Cte::Base64 => decode_base64(head.body).unwrap_or_else(|| head.body.to_vec()),
            _ => head.body.to_vec(),
        };
        out.push((kind, content));
    }
}

fn decode_base64(text: &[u8]) -> Option<Vec<u8>> {
    let clean: Vec<u8> = text
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let engine = GeneralPurpose::new(
        &alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    engine.decode(clean).ok()
}
