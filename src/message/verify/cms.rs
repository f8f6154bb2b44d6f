//! A streamed BER walker for CMS (RFC 5652, RFC 5083): checks that the
//! bytes are exactly one ContentInfo holding EnvelopedData or
//! AuthEnvelopedData. Definite and indefinite lengths (OpenSSL's
//! streaming output), constructed strings, bounded nesting; every byte
//! must belong to the structure. The top levels are kept as a small tree
//! and checked against the schema at the end (`cms_schema.rs`).

use super::cms_schema::{UNIVERSAL, schema};
use super::transfer::{Fail, not};

/// Deepest nesting accepted (real CMS stays under 16).
const MAX_DEPTH: usize = 32;
/// Elements kept for the schema check (depth ≤ [`KEPT_DEPTH`]); more
/// than this many recipients is not verified (and gets encrypted again).
const MAX_NODES: usize = 4096;
const KEPT_DEPTH: usize = 4;
/// Primitive values kept (OIDs, the version).
const MAX_VALUE: usize = 16;

/// One element of the top levels.
#[derive(Debug, Clone)]
pub(super) struct Node {
    pub(super) class: u8,
    pub(super) constructed: bool,
    pub(super) number: u32,
    pub(super) parent: Option<usize>,
    pub(super) children: u32,
    /// Content length of a primitive (0 for constructed).
    pub(super) len: u64,
    /// The content of a primitive of at most [`MAX_VALUE`] octets.
    pub(super) value: Vec<u8>,
}

impl Node {
    pub(super) fn is(&self, class: u8, number: u32) -> bool {
        self.class == class && self.number == number
    }
}

#[derive(Debug)]
struct Open {
    end: Option<u64>,
    node: Option<usize>,
}

#[derive(Debug)]
enum State {
    Tag,
    /// High tag number form: continuation octets.
    TagMore {
        class: u8,
        constructed: bool,
        number: u32,
        octets: usize,
    },
    Len {
        class: u8,
        constructed: bool,
        number: u32,
    },
    LenMore {
        class: u8,
        constructed: bool,
        number: u32,
        need: usize,
        have: usize,
        len: u64,
    },
    /// The second octet of an end-of-contents marker.
    Eoc,
    Prim {
        left: u64,
        node: Option<usize>,
    },
}

/// What the structure turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CmsKind {
    Enveloped,
    AuthEnveloped,
}

/// The walker.
pub(super) struct Ber {
    offset: u64,
    stack: Vec<Open>,
    state: State,
    done: bool,
    nodes: Vec<Node>,
}

impl Ber {
    pub(super) fn new() -> Self {
        Ber {
            offset: 0,
            stack: Vec::new(),
            state: State::Tag,
            done: false,
            nodes: Vec::new(),
        }
    }

    /// Feeds decoded bytes.
    pub(super) fn push(&mut self, mut data: &[u8]) -> Result<(), Fail> {
        while let Some((&b, rest)) = data.split_first() {
            if self.done {
                return not("bytes after the CMS structure");
            }
            if let State::Prim { left, node } = &mut self.state {
                let n = usize::try_from(*left).unwrap_or(usize::MAX).min(data.len());
                if let Some(i) = *node
                    && self.nodes[i].len <= MAX_VALUE as u64
                {
                    self.nodes[i].value.extend_from_slice(&data[..n]);
                }
                *left -= n as u64;
                self.offset += n as u64;
                data = &data[n..];
                if *left == 0 {
                    self.state = State::Tag;
                    self.close_finished();
                }
                continue;
            }
            self.offset += 1;
            data = rest;
            self.state = match self.state {
                State::Prim { .. } => unreachable_state()?,
                State::Tag => {
                    let in_indefinite = self.stack.last().is_some_and(|o| o.end.is_none());
                    if b == 0 && in_indefinite {
                        State::Eoc
                    } else {
                        let (class, constructed, low) = (b >> 6, b & 0x20 != 0, b & 0x1F);
                        if low == 0x1F {
                            State::TagMore {
                                class,
                                constructed,
                                number: 0,
                                octets: 0,
                            }
                        } else {
                            State::Len {
                                class,
                                constructed,
                                number: u32::from(low),
                            }
                        }
                    }
                }
                State::TagMore {
                    class,
                    constructed,
                    number,
                    octets,
                } => {
                    if octets >= 4 {
                        return not("a CMS tag number too large");
                    }
                    let number = number << 7 | u32::from(b & 0x7F);
                    if b & 0x80 != 0 {
                        State::TagMore {
                            class,
                            constructed,
                            number,
                            octets: octets + 1,
                        }
                    } else {
                        State::Len {
                            class,
                            constructed,
                            number,
                        }
                    }
                }
                State::Len {
                    class,
                    constructed,
                    number,
                } => match b {
                    0..=0x7F => self.element(class, constructed, number, Some(u64::from(b)))?,
                    0x80 if constructed => self.element(class, constructed, number, None)?,
                    0x80 => return not("an indefinite length on a primitive CMS element"),
                    0x81..=0x88 => State::LenMore {
                        class,
                        constructed,
                        number,
                        need: usize::from(b & 0x7F),
                        have: 0,
                        len: 0,
                    },
                    _ => return not("a CMS length too large"),
                },
                State::LenMore {
                    class,
                    constructed,
                    number,
                    need,
                    have,
                    len,
                } => {
                    let len = len << 8 | u64::from(b);
                    if have + 1 == need {
                        self.element(class, constructed, number, Some(len))?
                    } else {
                        State::LenMore {
                            class,
                            constructed,
                            number,
                            need,
                            have: have + 1,
                            len,
                        }
                    }
                }
                State::Eoc => {
                    if b != 0 {
                        return not("a malformed end-of-contents marker");
                    }
                    self.stack.pop();
                    self.close_finished();
                    State::Tag
                }
            };
        }
        Ok(())
    }

    /// An element's header is complete: open it.
    fn element(
        &mut self,
        class: u8,
        constructed: bool,
        number: u32,
        len: Option<u64>,
    ) -> Result<State, Fail> {
        let depth = self.stack.len();
        if depth >= MAX_DEPTH {
            return not("CMS nesting too deep");
        }
        if class == UNIVERSAL && number == 0 {
            return not("a misplaced end-of-contents marker");
        }
        if depth == 0 && !(class == UNIVERSAL && number == 16 && constructed) {
            // Fail early with a clear reason (plain text lands here).
            return not("the body is not a CMS ContentInfo SEQUENCE");
        }
        let end = match len {
            Some(l) => Some(
                self.offset
                    .checked_add(l)
                    .ok_or(Fail::Not("a CMS length too large".into()))?,
            ),
            None => None,
        };
        let parent = self.stack.last();
        if let (
            Some(end),
            Some(Open {
                end: Some(pend), ..
            }),
        ) = (end, parent)
            && end > *pend
        {
            return not("a CMS element longer than the one containing it");
        }
        let parent_node = parent.and_then(|p| p.node);
        if let Some(p) = parent_node {
            self.nodes[p].children = self.nodes[p].children.saturating_add(1);
        }
        let node = if depth <= KEPT_DEPTH {
            if self.nodes.len() >= MAX_NODES {
                return not("too many CMS elements (recipients)");
            }
            self.nodes.push(Node {
                class,
                constructed,
                number,
                parent: parent_node,
                children: 0,
                len: if constructed { 0 } else { len.unwrap_or(0) },
                value: Vec::new(),
            });
            Some(self.nodes.len() - 1)
        } else {
            None
        };
        if constructed {
            self.stack.push(Open { end, node });
            self.close_finished();
            Ok(State::Tag)
        } else {
            match len {
                Some(0) | None => {
                    self.close_finished_primitive(depth);
                    Ok(State::Tag)
                }
                Some(left) => Ok(State::Prim { left, node }),
            }
        }
    }

    fn close_finished_primitive(&mut self, depth: usize) {
        if depth == 0 {
            self.done = true;
        }
        self.close_finished();
    }

    /// Closes every definite element that ends here.
    fn close_finished(&mut self) {
        while let Some(Open { end: Some(end), .. }) = self.stack.last() {
            if *end != self.offset {
                break;
            }
            self.stack.pop();
        }
        if self.stack.is_empty() && self.offset > 0 {
            self.done = true;
        }
    }

    /// The end of the data: the structure is complete and is
    /// EnvelopedData or AuthEnvelopedData.
    pub(super) fn finish(&self) -> Result<CmsKind, Fail> {
        if self.offset == 0 {
            return not("an empty CMS body");
        }
        if !self.done || !self.stack.is_empty() || !matches!(self.state, State::Tag) {
            return not("a truncated CMS structure");
        }
        schema(&self.nodes)
    }
}

fn unreachable_state() -> Result<State, Fail> {
    not("internal: CMS walker state")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::verify::cms_schema::{OID_AUTH_ENVELOPED, OID_ENVELOPED};

    fn check(bytes: &[u8]) -> Result<CmsKind, String> {
        let mut whole = Ber::new();
        whole.push(bytes).map_err(|e| format!("{e:?}"))?;
        let k = whole.finish().map_err(|e| format!("{e:?}"))?;
        let mut single = Ber::new();
        for b in bytes {
            single
                .push(std::slice::from_ref(b))
                .map_err(|e| format!("{e:?}"))?;
        }
        assert_eq!(single.finish().map_err(|e| format!("{e:?}"))?, k);
        Ok(k)
    }

    /// DER: tag, definite length, content.
    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        let n = content.len();
        if n < 0x80 {
            v.push(n as u8);
        } else {
            v.extend([0x82, (n >> 8) as u8, n as u8]);
        }
        v.extend_from_slice(content);
        v
    }

    fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
        parts.concat()
    }

    fn oid(v: &[u8]) -> Vec<u8> {
        tlv(0x06, v)
    }

    fn enveloped(content: Vec<u8>) -> Vec<u8> {
        let ri = tlv(0x30, &cat(&[tlv(0x02, &[0]), tlv(0x04, &[1, 2, 3])]));
        let eci = tlv(
            0x30,
            &cat(&[
                oid(&[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x07, 0x01]),
                tlv(0x30, &oid(&[0x60])),
                content,
            ]),
        );
        let ed = tlv(0x30, &cat(&[tlv(0x02, &[0]), tlv(0x31, &ri), eci]));
        tlv(0x30, &cat(&[oid(OID_ENVELOPED), tlv(0xA0, &ed)]))
    }

    #[test]
    fn definite_enveloped_data() {
        assert_eq!(
            check(&enveloped(tlv(0x80, &[9; 40]))),
            Ok(CmsKind::Enveloped)
        );
        // Constructed [0] of OCTET STRING chunks.
        let chunks = tlv(0xA0, &cat(&[tlv(0x04, &[9; 20]), tlv(0x04, &[9; 20])]));
        assert_eq!(check(&enveloped(chunks)), Ok(CmsKind::Enveloped));
    }

    #[test]
    fn indefinite_lengths_nested() {
        // 30 80 { OID, A0 80 { 30 80 { version, SET, 30 80 { OID, alg, A0 80 { 04 .. } } } } }
        let mut v = vec![0x30, 0x80];
        v.extend(oid(OID_AUTH_ENVELOPED));
        v.extend([0xA0, 0x80, 0x30, 0x80]);
        v.extend(tlv(0x02, &[0]));
        v.extend(tlv(0x31, &tlv(0x30, &tlv(0x02, &[2]))));
        v.extend([0x30, 0x80]);
        v.extend(oid(&[0x2A]));
        v.extend(tlv(0x30, &oid(&[0x60])));
        v.extend([0xA0, 0x80]);
        v.extend(tlv(0x04, &[7; 10]));
        v.extend(tlv(0x04, &[7; 10]));
        v.extend([0, 0, 0, 0]); // [0], encryptedContentInfo
        v.extend(tlv(0x04, &[1; 16])); // mac
        v.extend([0, 0, 0, 0, 0, 0]);
        assert_eq!(check(&v), Ok(CmsKind::AuthEnveloped));
        // Without the mac it is not AuthEnvelopedData.
        let i = v.len() - 6 - 18;
        let mut no_mac = v[..i].to_vec();
        no_mac.extend([0, 0, 0, 0, 0, 0]);
        assert!(check(&no_mac).unwrap_err().contains("mac"));
        // One end-of-contents missing: truncated.
        assert!(check(&v[..v.len() - 2]).unwrap_err().contains("truncated"));
    }

    #[test]
    fn trailing_bytes_and_truncation() {
        let good = enveloped(tlv(0x80, &[9; 40]));
        let mut v = good.clone();
        v.push(0);
        assert!(check(&v).unwrap_err().contains("after"));
        v.pop();
        v.extend(b"secret");
        assert!(check(&v).unwrap_err().contains("after"));
        assert!(
            check(&good[..good.len() - 1])
                .unwrap_err()
                .contains("truncated")
        );
        assert!(check(&[]).unwrap_err().contains("empty"));
        assert!(
            check(b"Dear Bob, the secret is")
                .unwrap_err()
                .contains("not a CMS")
        );
    }

    #[test]
    fn schema_violations() {
        // Detached content.
        let mut ed = enveloped(Vec::new());
        assert!(check(&ed).unwrap_err().contains("detached"));
        // SignedData.
        ed = tlv(
            0x30,
            &cat(&[
                oid(&[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x07, 0x02]),
                tlv(0xA0, &tlv(0x30, &[])),
            ]),
        );
        assert!(check(&ed).unwrap_err().contains("neither"));
        // Empty recipientInfos.
        let eci = tlv(0x30, &cat(&[oid(&[0x2A]), tlv(0x30, &[]), tlv(0x80, &[1])]));
        let bad = tlv(0x30, &cat(&[tlv(0x02, &[0]), tlv(0x31, &[]), eci]));
        let ci = tlv(0x30, &cat(&[oid(OID_ENVELOPED), tlv(0xA0, &bad)]));
        assert!(check(&ci).unwrap_err().contains("recipientInfos"));
        // An encrypted content type that is no valid OID encoding (found
        // by fuzzing: OpenSSL cannot read such a structure).
        for bad_oid in [
            &[][..],
            &[0x2A, 0x86][..],
            &[0x80, 0x01][..],
            &[0x2A, 0x80, 0x01][..],
        ] {
            let eci = tlv(
                0x30,
                &cat(&[oid(bad_oid), tlv(0x30, &oid(&[0x60])), tlv(0x80, &[1])]),
            );
            let ri = tlv(0x30, &cat(&[tlv(0x02, &[0]), tlv(0x04, &[1, 2, 3])]));
            let ed = tlv(0x30, &cat(&[tlv(0x02, &[0]), tlv(0x31, &ri), eci]));
            let ci = tlv(0x30, &cat(&[oid(OID_ENVELOPED), tlv(0xA0, &ed)]));
            let err = check(&ci).unwrap_err();
            assert!(err.contains("not a valid OID"), "{bad_oid:02x?}: {err}");
        }
        // A well-formed id-data still verifies.
        let ok = enveloped(tlv(0x80, &[1]));
        assert!(check(&ok).is_ok());
    }

    #[test]
    fn huge_lengths_and_depth_bomb() {
        // A claimed 2^60-octet OCTET STRING inside a short SEQUENCE.
        let v = [0x30, 0x0A, 0x04, 0x88, 0x10, 0, 0, 0, 0, 0, 0, 0];
        assert!(check(&v).unwrap_err().contains("longer than"));
        // A claimed huge length at the top, then the data ends.
        let v = [0x30, 0x84, 0x7F, 0xFF, 0xFF, 0xFF, 0x06];
        assert!(check(&v).unwrap_err().contains("truncated"));
        // 10 000 nested indefinite SEQUENCEs.
        let mut v = Vec::new();
        for _ in 0..10_000 {
            v.extend([0x30, 0x80]);
        }
        assert!(check(&v).unwrap_err().contains("deep"));
        // Indefinite primitive.
        assert!(
            check(&[0x30, 0x80, 0x04, 0x80])
                .unwrap_err()
                .contains("primitive")
        );
    }
}
