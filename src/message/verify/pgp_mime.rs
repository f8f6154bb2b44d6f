//! PGP/MIME (RFC 3156 §4) streamed: a bounded preamble, the version part
//! (`application/pgp-encrypted`, `Version: 1`), one
//! `application/octet-stream` part that is one armored PGP MESSAGE, the
//! close delimiter, a bounded epilogue. Nothing else.
//!
//! Preamble and epilogue: MUAs write one line there ("This is an
//! OpenPGP/MIME encrypted message (RFC 4880 and 3156)"); anything beyond
//! [`MAX_AROUND`] non-blank bytes is readable text a reader never sees
//! decrypted, so such a message is not verified and is encrypted again.

use std::io::Read;

use super::armor::Armor;
use super::transfer::{Fail, LineReader, not};
use crate::message::mime::ContentType;
use crate::message::{HeaderField, Message};

/// Non-white-space bytes allowed in the preamble, and in the epilogue.
pub(super) const MAX_AROUND: usize = 1024;
/// Bytes of a part's header section.
const MAX_PART_HEADER: usize = 8 * 1024;
/// Bytes of the version part's body.
const MAX_VERSION_BODY: usize = 1024;

#[derive(Debug, PartialEq, Eq)]
enum Line {
    Delimiter,
    Close,
    Other,
}

fn kind(line: &[u8], boundary: &[u8]) -> Line {
    let Some(rest) = line
        .strip_prefix(b"--")
        .and_then(|l| l.strip_prefix(boundary))
    else {
        return Line::Other;
    };
    if rest.trim_ascii().is_empty() {
        Line::Delimiter
    } else if rest.starts_with(b"--") && rest[2..].trim_ascii().is_empty() {
        Line::Close
    } else {
        Line::Other
    }
}

fn identity_encoding(headers: &[HeaderField]) -> bool {
    headers
        .iter()
        .filter(|h| h.is("Content-Transfer-Encoding"))
        .all(|h| {
            matches!(
                h.unfolded().to_ascii_lowercase().as_str(),
                "7bit" | "8bit" | "binary"
            )
        })
}

/// Reads a part's header section (up to the blank line) and parses it.
fn part_header<R: Read>(
    lines: &mut LineReader<R>,
    boundary: &[u8],
) -> Result<Vec<HeaderField>, Fail> {
    let mut raw = Vec::new();
    loop {
        let Some((line, _)) = lines.next_line()? else {
            return not("a PGP/MIME part header without an end");
        };
        if line.is_empty() {
            break;
        }
        if kind(line, boundary) != Line::Other {
            return not("a PGP/MIME part without a body");
        }
        raw.extend_from_slice(line);
        raw.push(b'\n');
        if raw.len() > MAX_PART_HEADER {
            return not("a PGP/MIME part header over 8 KiB");
        }
    }
    let whole = raw.len();
    raw.push(b'\n');
    let parsed = Message::parse(&raw);
    if parsed.body_offset != whole + 1 && !(whole == 0 && parsed.body_offset == 1) {
        return not("a malformed PGP/MIME part header");
    }
    Ok(parsed.headers)
}

fn part_type(headers: &[HeaderField]) -> Option<ContentType> {
    let mut cts = headers.iter().filter(|h| h.is("Content-Type"));
    let ct = ContentType::parse(&cts.next()?.unfolded())?;
    cts.next().is_none().then_some(ct)
}

/// Counts the non-blank bytes of lines around the parts.
fn around(line: &[u8], count: &mut usize, what: &'static str) -> Result<(), Fail> {
    *count += line.iter().filter(|b| !b.is_ascii_whitespace()).count();
    if *count > MAX_AROUND {
        return not(what);
    }
    Ok(())
}

pub(super) fn check(ct: &ContentType, cte: &str, body: &mut dyn Read) -> Result<(), Fail> {
    if !matches!(cte, "" | "7bit" | "8bit" | "binary") {
        return not("a transfer encoding on multipart/encrypted");
    }
    let boundary = match ct.param("boundary") {
        Some(b) if !b.is_empty() => b.as_bytes().to_vec(),
        _ => return not("multipart/encrypted without a boundary"),
    };
    let mut lines = LineReader::new(body);

    let mut preamble = 0;
    loop {
        let Some((line, _)) = lines.next_line()? else {
            return not("multipart/encrypted without parts");
        };
        match kind(line, &boundary) {
            Line::Delimiter => break,
            Line::Close => return not("multipart/encrypted without parts"),
            Line::Other => around(
                line,
                &mut preamble,
                "a multipart/encrypted preamble over 1 KiB",
            )?,
        }
    }

    let version = part_header(&mut lines, &boundary)?;
    if !part_type(&version).is_some_and(|c| c.is("application", "pgp-encrypted"))
        || !identity_encoding(&version)
    {
        return not("the first PGP/MIME part is not application/pgp-encrypted");
    }
    let mut version_bytes = 0;
    let mut version_lines = 0;
    loop {
        let Some((line, _)) = lines.next_line()? else {
            return not("PGP/MIME without the encrypted part");
        };
        match kind(line, &boundary) {
            Line::Delimiter => break,
            Line::Close => return not("PGP/MIME without the encrypted part"),
            Line::Other => {}
        }
        version_bytes += line.len();
        if version_bytes > MAX_VERSION_BODY {
            return not("a PGP/MIME version part over 1 KiB");
        }
        let t = line.trim_ascii();
        if t.is_empty() {
            continue;
        }
        version_lines += 1;
        if version_lines > 1 || !t.eq_ignore_ascii_case(b"Version: 1") {
            return not("the PGP/MIME version part is not \"Version: 1\"");
        }
    }
    if version_lines != 1 {
        return not("the PGP/MIME version part is not \"Version: 1\"");
    }

    let data = part_header(&mut lines, &boundary)?;
    if !part_type(&data).is_some_and(|c| c.is("application", "octet-stream"))
        || !identity_encoding(&data)
    {
        return not("the second PGP/MIME part is not application/octet-stream");
    }
    let mut armor = Armor::new();
    loop {
        let Some((line, _)) = lines.next_line()? else {
            return not("PGP/MIME without the close delimiter");
        };
        match kind(line, &boundary) {
            Line::Delimiter => return not("PGP/MIME with more than two parts"),
            Line::Close => break,
            Line::Other => armor.line(line)?,
        }
    }
    armor.finish()?;

    let mut epilogue = 0;
    while let Some((line, _)) = lines.next_line()? {
        around(
            line,
            &mut epilogue,
            "a multipart/encrypted epilogue over 1 KiB",
        )?;
    }
    Ok(())
}
