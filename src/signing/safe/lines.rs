//! Line-level checks and the quoted-printable codec of the transport-safe
//! form: what makes a line unsafe ([`scan`]), and quoted-printable that
//! never produces such a line ([`encode_qp`]).

use super::MAX_LINE;

/// Encoded lines of quoted-printable and base64 (RFC 2045 §6.7, §6.8).
pub(super) const ENCODED_LINE: usize = 76;

/// What, if anything, a relay could change in a run of lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Flaws {
    /// An octet ≥ 0x80 (an 8BITMIME downgrade re-encodes it).
    pub eight_bit: bool,
    /// A NUL octet.
    pub nul: bool,
    /// A CR not followed by LF, or an LF not preceded by CR.
    pub bare: bool,
    /// A line longer than 998 octets (RFC 5321 §4.5.3.1.6).
    pub long: bool,
    /// A line ending in space or tab (stripped by some relays).
    pub trailing: bool,
    /// A line starting `From ` (escaped as `>From ` by mbox-minded relays).
    pub from: bool,
}

impl Flaws {
    /// Nothing a relay would touch.
    pub(crate) fn clean(self) -> bool {
        self == Flaws::default()
    }

    /// Whether only the `From ` rule is broken.
    pub(super) fn only_from(self) -> bool {
        self == Flaws {
            from: true,
            ..Flaws::default()
        }
    }

    /// The first flaw, for a message.
    pub(super) fn describe(self) -> &'static str {
        if self.eight_bit {
            "8-bit octets"
        } else if self.nul {
            "a NUL octet"
        } else if self.bare {
            "a bare CR or LF"
        } else if self.long {
            "a line longer than 998 octets"
        } else if self.trailing {
            "trailing white space"
        } else if self.from {
            "a line starting \"From \""
        } else {
            "nothing"
        }
    }
}

/// The flaws of `data`, read as lines ended by CRLF (the last line may
/// have no ending). One pass.
pub(crate) fn scan(data: &[u8]) -> Flaws {
    let mut f = Flaws::default();
    let mut start = 0;
    loop {
        let lf = memchr::memchr(b'\n', &data[start..]).map(|i| start + i);
        let end = lf.unwrap_or(data.len());
        let mut line = &data[start..end];
        if lf.is_some() {
            match line.strip_suffix(b"\r") {
                Some(l) => line = l,
                None => f.bare = true,
            }
        }
        f.long |= line.len() > MAX_LINE;
        f.from |= line.starts_with(b"From ");
        f.trailing |= matches!(line.last(), Some(b' ' | b'\t'));
        for &b in line {
            match b {
                0x80.. => f.eight_bit = true,
                0 => f.nul = true,
                b'\r' => f.bare = true,
                _ => {}
            }
        }
        match lf {
            Some(i) => start = i + 1,
            None => return f,
        }
    }
}

/// `data` as quoted-printable (RFC 2045 §6.7): CRLF stays a hard line
/// break; `=`, 8-bit octets, controls and white space before a line end
/// are escaped; soft breaks keep lines at 76 characters. No line starts
/// with `F` of `From ` (written `=46`) or with `-` (written `=2D`): a soft
/// break must not make a continuation look like a `From ` line or like a
/// boundary delimiter of an enclosing multipart.
pub(super) fn encode_qp(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 8 + 16);
    let mut start = 0;
    loop {
        let crlf = memchr::memmem::find(&data[start..], b"\r\n").map(|i| start + i);
        let end = crlf.unwrap_or(data.len());
        encode_qp_line(&data[start..end], &mut out);
        match crlf {
            Some(i) => {
                out.extend_from_slice(b"\r\n");
                start = i + 2;
            }
            None => return out,
        }
    }
}

fn encode_qp_line(line: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut col = 0;
    for (i, &b) in line.iter().enumerate() {
        let last = i + 1 == line.len();
        let plain = match b {
            b' ' | b'\t' => !last,
            33..=60 | 62..=126 => true,
            _ => false,
        };
        // The last token may use the whole line; any other leaves room
        // for the soft break's `=`. (At column 0 everything fits.)
        let limit = if last { ENCODED_LINE } else { ENCODED_LINE - 1 };
        if col + if plain { 1 } else { 3 } > limit {
            out.extend_from_slice(b"=\r\n");
            col = 0;
        }
        let line_start = col == 0 && (b == b'-' || line[i..].starts_with(b"From "));
        if plain && !line_start {
            out.push(b);
            col += 1;
        } else {
            out.extend_from_slice(&[b'=', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
            col += 3;
        }
    }
}

/// Writes the `F` of every line starting `From ` in a quoted-printable
/// body as `=46`, which decodes to the same octets.
pub(super) fn escape_from(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 16);
    let mut start = 0;
    loop {
        let next = memchr::memchr(b'\n', &data[start..]).map_or(data.len(), |i| start + i + 1);
        let line = &data[start..next];
        match line.strip_prefix(b"F") {
            Some(rest) if rest.starts_with(b"rom ") => {
                out.extend_from_slice(b"=46");
                out.extend_from_slice(rest);
            }
            _ => out.extend_from_slice(line),
        }
        if next >= data.len() {
            return out;
        }
        start = next;
    }
}

/// Decodes quoted-printable leniently (RFC 2045 §6.7): trailing white
/// space dropped, `=` before a line end a soft break, `=XX` an octet, any
/// other `=` kept. For checks of what [`encode_qp`] wrote.
pub(crate) fn decode_qp(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut start = 0;
    loop {
        let lf = memchr::memchr(b'\n', &text[start..]).map(|i| start + i);
        let end = lf.unwrap_or(text.len());
        let mut line = &text[start..end];
        if lf.is_some() {
            line = line.strip_suffix(b"\r").unwrap_or(line);
        }
        let line = line.trim_ascii_end();
        let (line, soft) = match line.strip_suffix(b"=") {
            Some(l) => (l, true),
            None => (line, false),
        };
        let mut i = 0;
        while i < line.len() {
            let hex = |j: usize| line.get(j).and_then(|&c| (c as char).to_digit(16));
            match (line[i], hex(i + 1), hex(i + 2)) {
                (b'=', Some(h), Some(l)) => {
                    // Two hex digits: at most 0xFF.
                    out.push(u8::try_from(h * 16 + l).unwrap_or(b'='));
                    i += 3;
                }
                (c, _, _) => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        match lf {
            Some(i) => {
                if !soft {
                    out.extend_from_slice(b"\r\n");
                }
                start = i + 1;
            }
            None => return out,
        }
    }
}
