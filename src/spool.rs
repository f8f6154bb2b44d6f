//! A byte buffer that stays in memory up to a threshold and moves to an
//! anonymous temporary file beyond it, so that large messages cost disk,
//! not memory. The file has no name (`O_TMPFILE` or unlinked at once): it
//! disappears on every path, including a crash.
//!
//! A spool made with [`Spool::with_budget`] holds memory only as far as the
//! process-wide [`MemoryBudget`] allows: it reserves every byte of its
//! buffer before allocating it, moves to disk at once when refused, and
//! gives everything back when it moves to disk or is dropped.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;

use crate::memory::MemoryBudget;

/// Default threshold (`limits.spool_threshold_bytes`).
pub const DEFAULT_THRESHOLD: usize = 4 * 1024 * 1024;

/// Bytes gathered before one write to the spool file: OpenSSL hands
/// over a few KiB at a time, and a system call each would dominate.
const WRITE_BUFFER: usize = 256 * 1024;

/// Smallest in-memory allocation of a budgeted spool (grown by doubling).
const FIRST_ALLOCATION: usize = 16 * 1024;

/// A write-once, read-many byte store.
#[derive(Debug)]
pub struct Spool {
    threshold: usize,
    /// The contents while in memory; the write buffer once on disk (none
    /// when the budget could not spare one: then every write goes to the
    /// file).
    mem: Vec<u8>,
    file: Option<File>,
    /// Bytes already in the file (the rest is in `mem`).
    file_len: u64,
    len: u64,
    budget: Option<MemoryBudget>,
    /// Bytes of `mem`'s allocation taken from `budget`.
    reserved: u64,
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
            budget: None,
            reserved: 0,
        }
    }

    /// As [`Spool::new`], and in memory only while `budget` allows.
    pub fn with_budget(threshold: usize, budget: MemoryBudget) -> Self {
        let mut s = Spool::new(threshold);
        s.budget = Some(budget);
        s
    }

    /// Bytes of memory this spool holds from its budget.
    pub fn reserved(&self) -> u64 {
        self.reserved
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
        self.mem = Vec::new();
        self.give_back();
        self.file = Some(file);
        let buffered = match &self.budget {
            None => true,
            Some(b) => b.try_reserve(WRITE_BUFFER as u64),
        };
        if buffered {
            self.mem = Vec::with_capacity(WRITE_BUFFER);
            if self.budget.is_some() {
                self.reserved = WRITE_BUFFER as u64;
                self.account(WRITE_BUFFER as u64);
            }
        }
        Ok(())
    }

    /// Grows the in-memory buffer to hold `need` bytes, if the budget
    /// allows; `false` when it does not (the caller spills).
    fn grow(&mut self, need: usize) -> bool {
        let Some(budget) = &self.budget else {
            return true;
        };
        let have = self.mem.capacity();
        if need <= have {
            return true;
        }
        // Doubling keeps the copies linear; never beyond the threshold,
        // where the spool moves to disk anyway.
        let want = need
            .max(have.saturating_mul(2))
            .max(FIRST_ALLOCATION)
            .min(self.threshold.max(need));
        if !budget.try_reserve((want - have) as u64) {
            return false;
        }
        self.reserved += (want - have) as u64;
        self.mem.reserve_exact(want - self.mem.len());
        self.account(want as u64);
        true
    }

    /// Accounts an allocation larger than the `expected` bytes reserved
    /// for it (the allocator may round up).
    fn account(&mut self, expected: u64) {
        let actual = self.mem.capacity() as u64;
        if let Some(b) = &self.budget
            && actual > expected
        {
            b.force_reserve(actual - expected);
            self.reserved += actual - expected;
        }
    }

    fn give_back(&mut self) {
        if let Some(b) = &self.budget {
            b.release(self.reserved);
        }
        self.reserved = 0;
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

impl Drop for Spool {
    fn drop(&mut self) {
        self.give_back();
    }
}

impl Write for Spool {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.file.is_none() {
            let need = self.mem.len() + buf.len();
            if need > self.threshold || !self.grow(need) {
                self.spill()?;
            }
        }
        if self.file.is_some() {
            let buffered = self.mem.capacity() > 0;
            if buffered && self.mem.len() + buf.len() > WRITE_BUFFER {
                self.write_out()?;
            }
            // Without a write buffer (the budget had none to spare), or a
            // write larger than it: straight to the file, so the buffer
            // never grows.
            if !buffered || buf.len() > WRITE_BUFFER {
                if let Some(f) = &mut self.file {
                    f.write_all(buf)?;
                }
                self.file_len += buf.len() as u64;
                self.len += buf.len() as u64;
                return Ok(buf.len());
            }
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

    #[test]
    fn holds_budget_while_in_memory_and_returns_it() {
        let budget = MemoryBudget::new(1 << 20, None);
        let mut s = Spool::with_budget(64 * 1024, budget.clone());
        s.write_all(&[7u8; 1000]).unwrap();
        assert!(!s.is_on_disk());
        assert!(budget.used() >= 1000);
        assert_eq!(budget.used(), s.reserved());
        drop(s);
        assert_eq!(budget.used(), 0);
        assert!(budget.peak() >= 1000);
    }

    #[test]
    fn goes_to_disk_when_the_budget_is_spent() {
        let budget = MemoryBudget::new(40 * 1024, None);
        let mut a = Spool::with_budget(1 << 20, budget.clone());
        a.write_all(&[1u8; 30 * 1024]).unwrap();
        assert!(!a.is_on_disk());
        let mut b = Spool::with_budget(1 << 20, budget.clone());
        let data: Vec<u8> = (0..100_000).map(|i| (i % 249) as u8).collect();
        for chunk in data.chunks(3000) {
            b.write_all(chunk).unwrap();
        }
        // Below its threshold, yet on disk: the budget had no room.
        assert!(b.is_on_disk());
        assert!(budget.peak() <= budget.limit(), "{}", budget.peak());
        assert_eq!(b.to_vec().unwrap(), data);
        drop(a);
        drop(b);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn without_a_write_buffer_writes_go_straight_to_the_file() {
        // The budget cannot spare a write buffer once on disk.
        let budget = MemoryBudget::new(WRITE_BUFFER as u64 - 1, None);
        let mut s = Spool::with_budget(10, budget.clone());
        let data: Vec<u8> = (0..50_000).map(|i| (i % 13) as u8).collect();
        for chunk in data.chunks(777) {
            s.write_all(chunk).unwrap();
        }
        assert!(s.is_on_disk());
        assert_eq!(s.reserved(), 0);
        assert_eq!(budget.peak(), 0);
        assert_eq!(s.to_vec().unwrap(), data);
    }

    #[test]
    fn large_writes_on_disk_do_not_grow_the_write_buffer() {
        let budget = MemoryBudget::new(1 << 30, None);
        let mut s = Spool::with_budget(10, budget.clone());
        let data: Vec<u8> = (0..WRITE_BUFFER * 3).map(|i| (i % 251) as u8).collect();
        s.write_all(&data[..5]).unwrap();
        s.write_all(&data[5..]).unwrap();
        assert!(s.is_on_disk());
        assert_eq!(s.reserved(), budget.used());
        assert!(
            budget.peak() <= WRITE_BUFFER as u64 + 64,
            "{}",
            budget.peak()
        );
        assert_eq!(s.to_vec().unwrap(), data);
    }
}
