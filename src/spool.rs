//! A byte buffer that stays in memory up to a threshold and moves to an
//! anonymous temporary file beyond it, so that large messages cost disk,
//! not memory. The file has no name (`O_TMPFILE` or unlinked at once): it
//! disappears on every path, including a crash.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;

/// Default threshold (`limits.spool_threshold_bytes`).
pub const DEFAULT_THRESHOLD: usize = 4 * 1024 * 1024;

/// Bytes gathered before one write to the spool file: OpenSSL hands
/// over a few KiB at a time, and a system call each would dominate.
const WRITE_BUFFER: usize = 256 * 1024;

/// A write-once, read-many byte store.
#[derive(Debug)]
pub struct Spool {
    threshold: usize,
    /// The contents while in memory; the write buffer once on disk.
    mem: Vec<u8>,
    file: Option<File>,
    /// Bytes already in the file (the rest is in `mem`).
    file_len: u64,
    len: u64,
}

impl Spool {
    /// An empty spool that moves to a file in the system temporary
    /// directory once it holds more than `threshold` bytes.
    pub fn new(threshold: usize) -> Self {
        Spool {
            threshold,
            mem: Vec::new(),
            file: None,
            file_len: 0,
            len: 0,
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the contents live in a file.
    pub fn is_on_disk(&self) -> bool {
        self.file.is_some()
    }

    /// A reader over everything written, from the start.
    pub fn reader(&self) -> SpoolReader<'_> {
        SpoolReader {
            spool: self,
            pos: 0,
        }
    }

    /// Everything written, in memory (tests and small bodies).
    pub fn to_vec(&self) -> io::Result<Vec<u8>> {
        let mut v = Vec::with_capacity(usize::try_from(self.len).unwrap_or(0));
        self.reader().read_to_end(&mut v)?;
        Ok(v)
    }

    fn spill(&mut self) -> io::Result<()> {
        let mut file = tempfile::tempfile()?;
        file.write_all(&self.mem)?;
        self.file_len = self.mem.len() as u64;
        self.mem = Vec::with_capacity(WRITE_BUFFER);
        self.file = Some(file);
        Ok(())
    }

    fn write_out(&mut self) -> io::Result<()> {
        if let Some(f) = &mut self.file
            && !self.mem.is_empty()
        {
            f.write_all(&self.mem)?;
            self.file_len += self.mem.len() as u64;
            self.mem.clear();
        }
        Ok(())
    }
}

impl Write for Spool {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.file.is_none() && self.mem.len() + buf.len() > self.threshold {
            self.spill()?;
        }
        if self.file.is_some() && self.mem.len() + buf.len() > WRITE_BUFFER {
            self.write_out()?;
        }
        self.mem.extend_from_slice(buf);
        self.len += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_out()
    }
}

/// Reads a [`Spool`] from the start; several readers may exist at once.
#[derive(Debug)]
pub struct SpoolReader<'a> {
    spool: &'a Spool,
    pos: u64,
}

impl Read for SpoolReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let spool = self.spool;
        let n = match &spool.file {
            Some(f) if self.pos < spool.file_len => {
                let left = usize::try_from(spool.file_len - self.pos).unwrap_or(usize::MAX);
                let want = buf.len().min(left);
                f.read_at(&mut buf[..want], self.pos)?
            }
            _ => {
                // In memory: everything, or the part not yet written out.
                let offset = self.pos
                    - if spool.file.is_some() {
                        spool.file_len
                    } else {
                        0
                    };
                let start = usize::try_from(offset)
                    .unwrap_or(usize::MAX)
                    .min(spool.mem.len());
                let rest = &spool.mem[start..];
                let n = rest.len().min(buf.len());
                buf[..n].copy_from_slice(&rest[..n]);
                n
            }
        };
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_in_memory_below_threshold() {
        let mut s = Spool::new(10);
        s.write_all(b"0123456789").unwrap();
        assert!(!s.is_on_disk());
        assert_eq!(s.to_vec().unwrap(), b"0123456789");
    }

    #[test]
    fn reads_across_the_file_and_the_write_buffer() {
        let mut s = Spool::new(8);
        let data: Vec<u8> = (0..WRITE_BUFFER * 2 + 1000)
            .map(|i| (i % 251) as u8)
            .collect();
        for chunk in data.chunks(4096) {
            s.write_all(chunk).unwrap();
        }
        assert!(s.is_on_disk());
        assert_eq!(s.to_vec().unwrap(), data);
        s.flush().unwrap();
        assert_eq!(s.to_vec().unwrap(), data);
    }

    #[test]
    fn spills_to_disk_and_reads_back_twice() {
        let mut s = Spool::new(4);
        s.write_all(b"abc").unwrap();
        s.write_all(b"defgh").unwrap();
        assert!(s.is_on_disk());
        assert_eq!(s.len(), 8);
        assert_eq!(s.to_vec().unwrap(), b"abcdefgh");
        let mut small = [0u8; 3];
        let mut r = s.reader();
        r.read_exact(&mut small).unwrap();
        assert_eq!(&small, b"abc");
        assert_eq!(s.to_vec().unwrap(), b"abcdefgh");
    }
}
