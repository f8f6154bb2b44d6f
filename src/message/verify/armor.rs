//! ASCII armor (RFC 9580 §6.2) checked line by line: white space, one
//! `BEGIN PGP MESSAGE` block (armor headers, base64, optional CRC-24 that
//! must match), white space. The decoded bytes go to the packet checker.

use super::pgp::Packets;
use super::transfer::{Base64, Fail, not};
use crate::backend::encoding::Crc24;

const BEGIN: &[u8] = b"-----BEGIN PGP MESSAGE-----";
const END: &[u8] = b"-----END PGP MESSAGE-----";
/// Armor header lines (`Version:`, `Comment:`...) accepted.
const MAX_HEADERS: usize = 32;
/// Bytes of armor header lines accepted in all. They are readable text
/// outside the ciphertext (a `Comment:` can say anything), so they get
/// the same budget as the PGP/MIME preamble; clients write one or two
/// short lines.
pub(super) const MAX_HEADER_BYTES: usize = 1024;

/// An RFC 9580 §6.2.2 armor header line: `Key: Value`, the key letters,
/// digits and `-`.
fn is_armor_header(t: &[u8]) -> bool {
    match t.iter().position(|&b| b == b':') {
        Some(colon) if colon > 0 => {
            t[..colon]
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
                && matches!(t.get(colon + 1), None | Some(b' '))
        }
        _ => false,
    }
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    Before,
    /// Armor header lines and their bytes so far.
    Headers(usize, usize),
    Data,
    /// The checksum line was read; only END may follow.
    Checksum,
    After,
}

/// The armor checker.
pub(super) struct Armor {
    state: State,
    b64: Base64,
    crc: Crc24,
    packets: Packets,
    out: Vec<u8>,
}

impl Armor {
    pub(super) fn new() -> Self {
        Armor {
            state: State::Before,
            b64: Base64::default(),
            crc: Crc24::new(),
            packets: Packets::new(),
            out: Vec::with_capacity(16 * 1024),
        }
    }

    /// Feeds one line (without its line ending).
    pub(super) fn line(&mut self, line: &[u8]) -> Result<(), Fail> {
        let t = line.trim_ascii_end();
        match self.state {
            State::Before if t.trim_ascii_start().is_empty() => Ok(()),
            State::Before if t == BEGIN => {
                self.state = State::Headers(0, 0);
                Ok(())
            }
            State::Before => not("text before the PGP armor"),
            State::Headers(..) if t.is_empty() => {
                self.state = State::Data;
                Ok(())
            }
            State::Headers(n, bytes) if t.contains(&b':') => {
                if !is_armor_header(t) {
                    return not("a line in the armor headers that is not an armor header");
                }
                let bytes = bytes + t.len();
                if n >= MAX_HEADERS || bytes > MAX_HEADER_BYTES {
                    return not("armor header lines over 1 KiB (readable text)");
                }
                self.state = State::Headers(n + 1, bytes);
                Ok(())
            }
            // No blank line after BEGIN: tolerated, the line is data.
            State::Headers(0, _) => {
                self.state = State::Data;
                self.data(t)
            }
            // Header lines must end in a blank line (RFC 9580 §6.2); without
            // it OpenPGP readers refuse the armor (found by fuzzing).
            State::Headers(..) => not("armor header lines not followed by a blank line"),
            State::Data if t == END => {
                self.end_data()?;
                self.state = State::After;
                Ok(())
            }
            State::Data if t.len() == 5 && t[0] == b'=' => {
                self.end_data()?;
                let mut sum = Vec::with_capacity(3);
                let mut b = Base64::default();
                b.push(&t[1..], &mut sum).map_err(|e| Fail::Not(e.into()))?;
                if sum != self.crc.bytes() {
                    return not("the armor checksum does not match");
                }
                self.state = State::Checksum;
                Ok(())
            }
            State::Data => self.data(t),
            State::Checksum if t == END => {
                self.state = State::After;
                Ok(())
            }
            State::Checksum => not("data after the armor checksum"),
            State::After if t.trim_ascii_start().is_empty() => Ok(()),
            State::After => not("text after the PGP armor"),
        }
    }

    fn data(&mut self, t: &[u8]) -> Result<(), Fail> {
        if t.is_empty() {
            return not("a blank line inside the armor");
        }
        if self.b64.padded() {
            return not("armor data after the base64 padding");
        }
        if t.iter().any(|&b| b == b' ' || b == b'\t') {
            return not("white space inside an armor line");
        }
        self.out.clear();
        self.b64
            .push(t, &mut self.out)
            .map_err(|e| Fail::Not(e.into()))?;
        self.crc.update(&self.out);
        self.packets.push(&self.out)
    }

    fn end_data(&mut self) -> Result<(), Fail> {
        self.out.clear();
        self.b64
            .finish(&mut self.out)
            .map_err(|e| Fail::Not(e.into()))?;
        self.crc.update(&self.out);
        self.packets.push(&self.out)?;
        self.packets.finish()
    }

    /// The end of the text: exactly one complete armored message was seen.
    pub(super) fn finish(&self) -> Result<(), Fail> {
        match self.state {
            State::After => Ok(()),
            State::Before => not("no PGP armor"),
            _ => not("the PGP armor has no END line"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    /// PKESK + SEIPD (see pgp.rs), armored with the right checksum.
    const PACKETS: &[u8] = &[0xC1, 3, 3, 0, 0, 0xD2, 4, 1, 2, 3, 4];

    fn armored(packets: &[u8], crc: bool) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(packets);
        let mut s = format!("-----BEGIN PGP MESSAGE-----\nComment: x\n\n{b64}\n");
        if crc {
            let mut c = Crc24::new();
            c.update(packets);
            let sum = base64::engine::general_purpose::STANDARD.encode(c.bytes());
            s.push_str(&format!("={sum}\n"));
        }
        s.push_str("-----END PGP MESSAGE-----\n");
        s
    }

    fn check(text: &str) -> Result<(), String> {
        let mut a = Armor::new();
        for line in text.lines() {
            a.line(line.as_bytes()).map_err(|e| format!("{e:?}"))?;
        }
        a.finish().map_err(|e| format!("{e:?}"))
    }

    #[test]
    fn good_armor_with_and_without_checksum() {
        check(&armored(PACKETS, true)).unwrap();
        check(&armored(PACKETS, false)).unwrap();
        check(&format!("\n  \n{}\n \n", armored(PACKETS, true))).unwrap();
    }

    #[test]
    fn armor_headers_end_in_a_blank_line() {
        let good = armored(PACKETS, true);
        let no_blank = good.replacen("Comment: x\n\n", "Comment: x\n", 1);
        assert_ne!(good, no_blank);
        let err = check(&no_blank).unwrap_err();
        assert!(err.contains("blank line"), "{err}");
        // Without any header line the blank line may be missing.
        let bare = good.replacen("Comment: x\n\n", "", 1);
        check(&bare).unwrap();
    }

    #[test]
    fn armor_headers_are_bounded_readable_text() {
        let good = armored(PACKETS, true);
        // Real clients write a line or two ("Version: ...", "Comment: URL").
        let two = good.replace(
            "Comment: x\n",
            "Version: Mailvelope v5.0.0\nComment: https://mailvelope.com\n",
        );
        check(&two).unwrap();
        // Readable text smuggled as armor headers: 32 lines of 10 KB.
        let secret = format!("Comment: {}\n", "the secret plan ".repeat(640)).repeat(32);
        let smuggled = good.replace("Comment: x\n", &secret);
        assert!(check(&smuggled).unwrap_err().contains("armor header"));
        // Just over the budget, in short lines.
        let over = "Comment: 0123456789012345678901234567890123456789\n".repeat(21);
        assert!(
            check(&good.replace("Comment: x\n", &over))
                .unwrap_err()
                .contains("armor header")
        );
        // A sentence with a colon is not an armor header.
        let prose = good.replace("Comment: x\n", "Dear Bob: the secret is 42\n");
        assert!(check(&prose).unwrap_err().contains("armor header"));
    }

    #[test]
    fn bad_checksum() {
        let good = armored(PACKETS, true);
        let i = good.find("\n=").unwrap() + 2;
        let mut bad = good.clone().into_bytes();
        bad[i] = if bad[i] == b'A' { b'B' } else { b'A' };
        let err = check(&String::from_utf8(bad).unwrap()).unwrap_err();
        assert!(err.contains("checksum"), "{err}");
    }

    #[test]
    fn text_around_or_inside() {
        let good = armored(PACKETS, true);
        assert!(
            check(&format!("{good}secret\n"))
                .unwrap_err()
                .contains("after")
        );
        assert!(
            check(&format!("secret\n{good}"))
                .unwrap_err()
                .contains("before")
        );
        // Two messages in one text.
        assert!(check(&format!("{good}{good}")).is_err());
        // Two messages inside one armor block.
        let two = armored(&[PACKETS, PACKETS].concat(), true);
        assert!(
            check(&two)
                .unwrap_err()
                .contains("after the encrypted data")
        );
        // The armor lines followed by plain text instead of base64.
        let fake = "-----BEGIN PGP MESSAGE-----\n\nThis is my secret.\n-----END PGP MESSAGE-----\n";
        assert!(check(fake).is_err());
        // No END.
        let open = good.replace("-----END PGP MESSAGE-----\n", "");
        assert!(check(&open).unwrap_err().contains("END"));
        // Truncated data.
        let short = armored(&PACKETS[..PACKETS.len() - 1], false);
        assert!(check(&short).unwrap_err().contains("truncated"));
    }
}
