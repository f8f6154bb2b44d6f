//! The CMS schema check over the top levels the BER walker kept:
//! ContentInfo → `[0]` → EnvelopedData (RFC 5652 §6.1) or
//! AuthEnvelopedData (RFC 5083 §2.1), the encrypted content present.

use super::cms::{CmsKind, Node};
use super::transfer::{Fail, not};

pub(super) const OID_ENVELOPED: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x07, 0x03];
pub(super) const OID_AUTH_ENVELOPED: &[u8] = &[
    0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x09, 0x10, 0x01, 0x17,
];

pub(super) const UNIVERSAL: u8 = 0;
const CONTEXT: u8 = 2;

fn children(nodes: &[Node], parent: usize) -> Vec<&Node> {
    nodes.iter().filter(|n| n.parent == Some(parent)).collect()
}

fn index_of(nodes: &[Node], node: &Node) -> usize {
    nodes
        .iter()
        .position(|n| std::ptr::eq(n, node))
        .unwrap_or(usize::MAX)
}

/// Whether a kept OID is well encoded (X.690 §8.19): content present and
/// kept (at most `MAX_VALUE` octets), no sub-identifier with a leading
/// 0x80, the last octet ending one.
fn valid_oid(node: &Node) -> bool {
    let v = &node.value;
    let kept = !v.is_empty() && u64::try_from(v.len()).is_ok_and(|l| l == node.len);
    kept && v.last().is_some_and(|b| b & 0x80 == 0)
        && v.iter()
            .enumerate()
            .all(|(i, &b)| b != 0x80 || (i > 0 && v[i - 1] & 0x80 != 0))
}

/// ContentInfo → [0] → (Auth)EnvelopedData, per RFC 5652 §6.1 and
/// RFC 5083 §2.1.
pub(super) fn schema(nodes: &[Node]) -> Result<CmsKind, Fail> {
    let root = nodes.first().ok_or(Fail::Not("no CMS structure".into()))?;
    if !(root.is(UNIVERSAL, 16) && root.constructed) {
        return not("CMS ContentInfo is not a SEQUENCE");
    }
    let top = children(nodes, 0);
    let [oid, explicit] = top[..] else {
        return not("CMS ContentInfo does not have two fields");
    };
    if !oid.is(UNIVERSAL, 6) || oid.constructed {
        return not("CMS contentType is not an OID");
    }
    let kind = match oid.value.as_slice() {
        OID_ENVELOPED => CmsKind::Enveloped,
        OID_AUTH_ENVELOPED => CmsKind::AuthEnveloped,
        _ => return not("CMS content is neither EnvelopedData nor AuthEnvelopedData"),
    };
    if !(explicit.is(CONTEXT, 0) && explicit.constructed) {
        return not("CMS content is not [0] EXPLICIT");
    }
    let inner = children(nodes, index_of(nodes, explicit));
    let [data] = inner[..] else {
        return not("CMS [0] does not hold one element");
    };
    if !(data.is(UNIVERSAL, 16) && data.constructed) {
        return not("EnvelopedData is not a SEQUENCE");
    }
    let fields = children(nodes, index_of(nodes, data));
    let mut f = fields.iter().copied().peekable();
    match f.next() {
        Some(v) if v.is(UNIVERSAL, 2) && !v.constructed && v.len > 0 => {}
        _ => return not("EnvelopedData has no version"),
    }
    if f.next_if(|n| n.is(CONTEXT, 0) && n.constructed).is_some() {
        // originatorInfo
    }
    match f.next() {
        Some(set) if set.is(UNIVERSAL, 17) && set.constructed && set.children > 0 => {}
        _ => return not("EnvelopedData has no recipientInfos"),
    }
    let Some(eci) = f.next().filter(|n| n.is(UNIVERSAL, 16) && n.constructed) else {
        return not("EnvelopedData has no encryptedContentInfo");
    };
    let eci_fields = children(nodes, index_of(nodes, eci));
    match eci_fields[..] {
        [ct, _, _] if !(ct.is(UNIVERSAL, 6) && !ct.constructed && valid_oid(ct)) => {
            return not("the encrypted content type is not a valid OID");
        }
        [_, alg, content]
            if alg.is(UNIVERSAL, 16)
                && alg.constructed
                && content.is(CONTEXT, 0)
                && (content.len > 0 || content.children > 0) => {}
        [_, _] => return not("the encrypted content is detached (absent)"),
        _ => return not("encryptedContentInfo is malformed"),
    }
    // unprotectedAttrs / authAttrs
    f.next_if(|n| n.is(CONTEXT, 1) && n.constructed);
    if kind == CmsKind::AuthEnveloped {
        match f.next() {
            Some(mac) if mac.is(UNIVERSAL, 4) => {}
            _ => return not("AuthEnvelopedData has no mac"),
        }
        f.next_if(|n| n.is(CONTEXT, 2) && n.constructed);
    }
    if f.next().is_some() {
        return not("EnvelopedData has unexpected fields");
    }
    Ok(kind)
}
