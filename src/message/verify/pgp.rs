//! OpenPGP packet framing (RFC 9580 §4.2, RFC 4880 §4.2), checked as the
//! bytes stream in: one or more session key packets (PKESK 1, SKESK 3)
//! followed by exactly one encrypted data packet (SED 9, SEIPD 18,
//! AEAD 20), every length consistent to the last byte. Only framing is
//! checked: whether the packets decrypt is the recipient's business.

use super::transfer::{Fail, not};

const PKESK: u8 = 1;
const SKESK: u8 = 3;
const SED: u8 = 9;
const SEIPD: u8 = 18;
const AEAD: u8 = 20;

/// RFC 4880 §4.2.2.4: the first partial length is at least 512 octets.
const MIN_FIRST_PARTIAL: u64 = 512;

fn is_data(tag: u8) -> bool {
    matches!(tag, SED | SEIPD | AEAD)
}

#[derive(Debug)]
enum State {
    /// At a packet's first octet.
    Tag,
    /// Reading a new-format length; `first` unless it continues a
    /// partial body.
    NewLen {
        tag: u8,
        first: bool,
        buf: [u8; 5],
        have: usize,
    },
    /// Reading an old-format length of `need` octets.
    OldLen {
        buf: [u8; 4],
        need: usize,
        have: usize,
    },
    /// Inside a body: `left` octets to go, then another partial length
    /// if `partial`.
    Body { tag: u8, left: u64, partial: bool },
    /// Old-format indeterminate length: the packet runs to the end.
    ToEnd,
}

/// The packet sequence checker.
#[derive(Debug)]
pub(super) struct Packets {
    state: State,
    esk: bool,
    data: bool,
}

impl Packets {
    pub(super) fn new() -> Self {
        Packets {
            state: State::Tag,
            esk: false,
            data: false,
        }
    }

    /// A packet with `tag` starts.
    fn start(&mut self, tag: u8) -> Result<(), Fail> {
        match tag {
            PKESK | SKESK if self.data => not("a packet after the encrypted data"),
            PKESK | SKESK => {
                self.esk = true;
                Ok(())
            }
            t if is_data(t) && self.data => not("two encrypted data packets"),
            t if is_data(t) && !self.esk => not("encrypted data without a session key packet"),
            t if is_data(t) => {
                self.data = true;
                Ok(())
            }
            t => not(format!(
                "OpenPGP packet type {t} is neither a session key nor encrypted data"
            )),
        }
    }

    /// Feeds decoded bytes.
    pub(super) fn push(&mut self, mut data: &[u8]) -> Result<(), Fail> {
        while let Some((&b, rest)) = data.split_first() {
            match &mut self.state {
                State::Body { tag, left, partial } => {
                    let n = usize::try_from(*left).unwrap_or(usize::MAX).min(data.len());
                    data = &data[n..];
                    *left -= n as u64;
                    if *left == 0 {
                        self.state = if *partial {
                            State::NewLen {
                                tag: *tag,
                                first: false,
                                buf: [0; 5],
                                have: 0,
                            }
                        } else {
                            State::Tag
                        };
                    }
                    continue;
                }
                State::ToEnd => return Ok(()),
                State::Tag => {
                    if b & 0x80 == 0 {
                        return not("not an OpenPGP packet");
                    }
                    if b & 0x40 != 0 {
                        let tag = b & 0x3F;
                        self.start(tag)?;
                        self.state = State::NewLen {
                            tag,
                            first: true,
                            buf: [0; 5],
                            have: 0,
                        };
                    } else {
                        let tag = (b >> 2) & 0x0F;
                        self.start(tag)?;
                        self.state = match b & 3 {
                            3 if is_data(tag) => State::ToEnd,
                            3 => return not("indeterminate length on a session key packet"),
                            lt => State::OldLen {
                                buf: [0; 4],
                                need: 1 << lt,
                                have: 0,
                            },
                        };
                        // A 'tag' whose length was zero octets long cannot happen.
                    }
                }
                State::OldLen { buf, need, have } => {
                    buf[*have] = b;
                    *have += 1;
                    if *have == *need {
                        let len = buf[..*need]
                            .iter()
                            .fold(0u64, |acc, &x| acc << 8 | u64::from(x));
                        self.body(0, len, false);
                    }
                }
                State::NewLen {
                    tag,
                    first,
                    buf,
                    have,
                } => {
                    buf[*have] = b;
                    *have += 1;
                    let (tag, first) = (*tag, *first);
                    let o = buf[0];
                    match (o, *have) {
                        (0..=191, 1) => self.body(tag, u64::from(o), false),
                        (192..=223, 2) => {
                            let len = ((u64::from(o) - 192) << 8) + u64::from(buf[1]) + 192;
                            self.body(tag, len, false);
                        }
                        (224..=254, 1) => {
                            if !is_data(tag) {
                                return not("a partial length on a session key packet");
                            }
                            let len = 1u64 << (o & 0x1F);
                            if first && len < MIN_FIRST_PARTIAL {
                                return not("a first partial length under 512 octets");
                            }
                            self.body(tag, len, true);
                        }
                        (255, 5) => {
                            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
                            self.body(tag, u64::from(len), false);
                        }
                        _ => {}
                    }
                }
            }
            data = rest;
        }
        Ok(())
    }

    fn body(&mut self, tag: u8, left: u64, partial: bool) {
        self.state = if left == 0 && !partial {
            State::Tag
        } else {
            State::Body { tag, left, partial }
        };
    }

    /// The end of the data: the last packet must be complete.
    pub(super) fn finish(&self) -> Result<(), Fail> {
        match self.state {
            State::Tag | State::ToEnd if self.data => Ok(()),
            State::Tag if !self.esk => not("no OpenPGP packets"),
            State::Tag => not("no encrypted data packet"),
            _ => not("a truncated OpenPGP packet"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(bytes: &[u8]) -> Result<(), String> {
        let mut p = Packets::new();
        // Byte by byte and whole must agree.
        let mut q = Packets::new();
        for b in bytes {
            q.push(std::slice::from_ref(b))
                .map_err(|e| format!("{e:?}"))?;
        }
        q.finish().map_err(|e| format!("{e:?}"))?;
        p.push(bytes).map_err(|e| format!("{e:?}"))?;
        p.finish().map_err(|e| format!("{e:?}"))
    }

    /// PKESK (new format, 3 octets) + SEIPD (new format, 4 octets).
    const GOOD: &[u8] = &[0xC1, 3, 3, 0, 0, 0xD2, 4, 1, 2, 3, 4];

    #[test]
    fn good_sequences() {
        check(GOOD).unwrap();
        // Old format: PKESK 1-octet length, SED 2-octet length.
        check(&[0x84, 2, 3, 0, 0xA5, 0, 3, 9, 9, 9]).unwrap();
        // Two ESKs, then SED with indeterminate old-format length.
        check(&[0xC1, 1, 3, 0xC3, 1, 4, 0xA7, 1, 2, 3]).unwrap();
        // Partial: 512 + 3.
        let mut v = vec![0xC1, 1, 3, 0xD2, 0xE9];
        v.extend(std::iter::repeat_n(7, 512));
        v.extend([3, 1, 2, 3]);
        check(&v).unwrap();
        // Five-octet length.
        check(&[0xC1, 1, 3, 0xD2, 255, 0, 0, 0, 2, 1, 2]).unwrap();
    }

    #[test]
    fn truncated_and_trailing() {
        assert!(
            check(&GOOD[..GOOD.len() - 1])
                .unwrap_err()
                .contains("truncated")
        );
        let mut v = GOOD.to_vec();
        v.push(0);
        assert!(check(&v).is_err(), "trailing zero octet");
        // A literal data packet (11) after the encrypted one.
        let mut v = GOOD.to_vec();
        v.extend([0xCB, 2, b'b', 0]);
        assert!(check(&v).unwrap_err().contains("neither"));
        // A second encrypted message concatenated.
        let v = [GOOD, GOOD].concat();
        assert!(check(&v).unwrap_err().contains("after the encrypted data"));
    }

    #[test]
    fn wrong_sequences() {
        assert!(check(&[]).unwrap_err().contains("no OpenPGP"));
        assert!(
            check(&[0xC1, 1, 3])
                .unwrap_err()
                .contains("no encrypted data")
        );
        assert!(
            check(&[0xD2, 1, 3])
                .unwrap_err()
                .contains("without a session key")
        );
        // Literal data only.
        assert!(check(&[0xCB, 3, b'b', 0, 0]).is_err());
        // Compressed data wrapping the message.
        assert!(check(&[0xC8, 2, 1, 0]).is_err());
        // Plain text is not a packet.
        assert!(check(b"hello").unwrap_err().contains("not an OpenPGP"));
        // Partial length on a PKESK, and a first partial under 512.
        assert!(check(&[0xC1, 0xE1, 0, 0]).unwrap_err().contains("partial"));
        assert!(
            check(&[0xC1, 1, 3, 0xD2, 0xE1, 0, 0, 1, 0])
                .unwrap_err()
                .contains("512")
        );
        // Huge claimed length, short body.
        assert!(
            check(&[0xC1, 1, 3, 0xD2, 255, 0xFF, 0xFF, 0xFF, 0xFF, 1])
                .unwrap_err()
                .contains("truncated")
        );
        // Partial body whose final length never comes.
        let mut v = vec![0xC1, 1, 3, 0xD2, 0xE9];
        v.extend(std::iter::repeat_n(7, 512));
        assert!(check(&v).unwrap_err().contains("truncated"));
    }
}
