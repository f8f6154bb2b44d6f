//! Transfer encodings of encrypted bodies: base64 in fixed-width lines
//! (S/MIME: 76 characters, RFC 2045; OpenPGP armor: 64, RFC 9580 §6.2) and
//! the armor's CRC-24. Streamed from a reader, never held whole.

use std::io::{self, Read, Write};

use base64::Engine as _;

use crate::message::Eol;

/// Writes `data` as base64 in lines of `line_chars` characters (a
/// multiple of 4), each ended by `eol`.
pub fn write_base64_lines(
    data: &[u8],
    line_chars: usize,
    eol: Eol,
    out: &mut dyn Write,
) -> io::Result<()> {
    debug_assert!(
        line_chars >= 4 && line_chars.is_multiple_of(4),
        "base64 lines hold whole groups of four"
    );
    let engine = &base64::engine::general_purpose::STANDARD;
    let eol = eol.as_bytes();
    let line_input = line_chars / 4 * 3;
    // Encode many lines in one call (the encoder's fast path needs long
    // input), then cut the text into lines.
    const LINES_PER_BATCH: usize = 1024;
    // No bigger than the data needs: a 10 KiB message must not pay for
    // zeroing (and page-faulting) buffers sized for megabytes.
    let batch_lines = data.len().div_ceil(line_input).clamp(1, LINES_PER_BATCH);
    let mut encoded = vec![0u8; batch_lines * line_chars];
    let mut lines = Vec::with_capacity(batch_lines * (line_chars + 2));
    for batch in data.chunks(line_input * batch_lines) {
        let n = engine
            .encode_slice(batch, &mut encoded)
            .map_err(|e| io::Error::other(e.to_string()))?;
        lines.clear();
        for line in encoded[..n].chunks(line_chars) {
            lines.extend_from_slice(line);
            lines.extend_from_slice(eol);
        }
        out.write_all(&lines)?;
    }
    Ok(())
}

/// Reads `input` to the end and writes it as base64 lines (see
/// [`write_base64_lines`]); `inspect` sees every chunk of raw input.
pub fn copy_base64_lines(
    input: &mut dyn Read,
    line_chars: usize,
    eol: Eol,
    out: &mut dyn Write,
    mut inspect: impl FnMut(&[u8]),
) -> io::Result<()> {
    // Whole lines per chunk, so line breaks fall where they would if the
    // data were encoded in one piece. The buffer grows with what is read
    // (read_to_end), so a small message allocates little and zeroes
    // nothing.
    let chunk = line_chars / 4 * 3 * 1024;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        input.take(chunk as u64).read_to_end(&mut buf)?;
        if buf.is_empty() {
            return Ok(());
        }
        inspect(&buf);
        write_base64_lines(&buf, line_chars, eol, out)?;
        if buf.len() < chunk {
            return Ok(());
        }
    }
}

/// CRC-24 of RFC 9580 §6.1 (init 0xB704CE, polynomial 0x864CFB),
/// slicing-by-8: eight bytes per step through eight tables (the armor
/// checksum was 5 % of the CPU time of an OpenPGP message with one
/// table lookup per byte).
#[derive(Clone, Debug)]
pub struct Crc24(u32);

/// The polynomial, aligned to the top of a 32-bit register: the checksum
/// is kept shifted left by 8 so that all eight tables are plain `u32`s.
const CRC24_POLY_ALIGNED: u32 = 0x864C_FB00;

const CRC24_TABLES: [[u32; 256]; 8] = {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u32) << 24;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ CRC24_POLY_ALIGNED
            } else {
                crc << 1
            };
            bit += 1;
        }
        t[0][i] = crc;
        i += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = t[k - 1][i];
            t[k][i] = (prev << 8) ^ t[0][(prev >> 24) as usize];
            i += 1;
        }
        k += 1;
    }
    t
};

impl Crc24 {
    /// A fresh checksum.
    pub fn new() -> Self {
        Crc24(0x00B7_04CE << 8)
    }

    /// Adds `data`.
    pub fn update(&mut self, data: &[u8]) {
        let t = &CRC24_TABLES;
        let mut crc = self.0;
        let mut chunks = data.chunks_exact(8);
        for c in &mut chunks {
            let x = crc ^ u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
            crc = t[7][(x >> 24) as usize]
                ^ t[6][((x >> 16) & 0xFF) as usize]
                ^ t[5][((x >> 8) & 0xFF) as usize]
                ^ t[4][(x & 0xFF) as usize]
                ^ t[3][c[4] as usize]
                ^ t[2][c[5] as usize]
                ^ t[1][c[6] as usize]
                ^ t[0][c[7] as usize];
        }
        for &b in chunks.remainder() {
            crc = (crc << 8) ^ t[0][((crc >> 24) as u8 ^ b) as usize];
        }
        self.0 = crc;
    }

    /// The checksum's three bytes, big-endian.
    pub fn bytes(&self) -> [u8; 3] {
        let [a, b, c, _] = self.0.to_be_bytes();
        [a, b, c]
    }
}

impl Default for Crc24 {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bit by bit, straight from the definition.
    fn crc24_bitwise(data: &[u8]) -> [u8; 3] {
        let mut crc: u32 = 0x00B7_04CE;
        for &b in data {
            crc ^= u32::from(b) << 16;
            for _ in 0..8 {
                crc <<= 1;
                if crc & 0x0100_0000 != 0 {
                    crc ^= 0x0186_4CFB;
                }
            }
        }
        let [_, a, b, c] = (crc & 0x00FF_FFFF).to_be_bytes();
        [a, b, c]
    }

    #[test]
    fn crc24_matches_the_definition_at_every_length_and_split() {
        let data: Vec<u8> = (0u32..300).map(|i| (i * 7919 % 251) as u8).collect();
        for len in 0..data.len() {
            let want = crc24_bitwise(&data[..len]);
            let mut whole = Crc24::new();
            whole.update(&data[..len]);
            assert_eq!(whole.bytes(), want, "length {len}");
            let split = len / 3;
            let mut parts = Crc24::new();
            parts.update(&data[..split]);
            parts.update(&data[split..len]);
            assert_eq!(parts.bytes(), want, "length {len} split at {split}");
        }
    }

    #[test]
    fn crc24_check_values() {
        assert_eq!(Crc24::new().bytes(), [0xB7, 0x04, 0xCE]);
        let mut c = Crc24::new();
        c.update(b"123456789");
        // The CRC-24/OPENPGP check value.
        assert_eq!(c.bytes(), [0x21, 0xCF, 0x02]);
    }

    #[test]
    fn lines_have_the_width_asked_for_and_decode() {
        let data: Vec<u8> = (0..=255u8).cycle().take(57 * 3 + 10).collect();
        for width in [76, 64] {
            let mut out = Vec::new();
            copy_base64_lines(&mut &data[..], width, Eol::Crlf, &mut out, |_| {}).unwrap();
            let text = String::from_utf8(out).unwrap();
            let lines: Vec<&str> = text.split_terminator("\r\n").collect();
            assert!(lines[..lines.len() - 1].iter().all(|l| l.len() == width));
            assert!(lines[lines.len() - 1].len() <= width);
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(lines.concat())
                .unwrap();
            assert_eq!(decoded, data);
        }
        let mut empty = Vec::new();
        write_base64_lines(&[], 76, Eol::Lf, &mut empty).unwrap();
        assert!(empty.is_empty());
    }
}
