//! A coherent, sparse shared region for the fuzz targets.
//!
//! A one-segment transport is 16 MiB; the native `HeapMem` allocates and zeroes all
//! of it, and provisioning zeroes the channel segment again, so every fuzz input would
//! spend milliseconds in `memset`. Here a page that was never written (or was filled
//! with zeros whole) is `None` and reads as zeros: a fresh region, `Transport::format`
//! and a backend start touch a few dozen pages. Semantics are `HeapMem`'s (one
//! coherent memory, fences are no-ops); out-of-range accesses panic, as the
//! `SharedMem` contract asks (protocol code never makes them: it goes through `Shm`).

use device::layout::PAGE;
use device::shm::SharedMem;
use std::cell::RefCell;

pub struct SparseMem {
    size: u64,
    pages: RefCell<Vec<Option<Box<[u8; PAGE]>>>>,
}

impl SparseMem {
    pub fn new(size: u64) -> Self {
        let n = size.div_ceil(PAGE as u64) as usize;
        Self {
            size,
            pages: RefCell::new((0..n).map(|_| None).collect()),
        }
    }

    fn check(&self, off: u64, len: u64) {
        assert!(
            off.checked_add(len).is_some_and(|e| e <= self.size),
            "SparseMem: access [{off:#x}, +{len:#x}) outside the region of {:#x} bytes",
            self.size
        );
    }

    /// Visit `[off, off+len)` page by page: `(page, offset in page, bytes)`.
    fn chunks(off: u64, len: u64, mut f: impl FnMut(usize, usize, usize)) {
        let mut o = off;
        let end = off + len;
        while o < end {
            let page = (o / PAGE as u64) as usize;
            let in_page = (o % PAGE as u64) as usize;
            let n = ((PAGE - in_page) as u64).min(end - o) as usize;
            f(page, in_page, n);
            o += n as u64;
        }
    }
}

impl SharedMem for SparseMem {
    fn size(&self) -> u64 {
        self.size
    }
    fn read(&self, off: u64, buf: &mut [u8]) {
        self.check(off, buf.len() as u64);
        let pages = self.pages.borrow();
        let mut done = 0;
        Self::chunks(off, buf.len() as u64, |p, i, n| {
            let dst = &mut buf[done..done + n];
            match &pages[p] {
                Some(pg) => dst.copy_from_slice(&pg[i..i + n]),
                None => dst.fill(0),
            }
            done += n;
        });
    }
    fn write(&self, off: u64, data: &[u8]) {
        self.check(off, data.len() as u64);
        let mut pages = self.pages.borrow_mut();
        let mut done = 0;
        Self::chunks(off, data.len() as u64, |p, i, n| {
            let pg = pages[p].get_or_insert_with(|| Box::new([0; PAGE]));
            pg[i..i + n].copy_from_slice(&data[done..done + n]);
            done += n;
        });
    }
    fn fill(&self, off: u64, len: u64, byte: u8) {
        self.check(off, len);
        let mut pages = self.pages.borrow_mut();
        Self::chunks(off, len, |p, i, n| {
            if byte == 0 && n == PAGE {
                pages[p] = None;
            } else if byte != 0 || pages[p].is_some() {
                let pg = pages[p].get_or_insert_with(|| Box::new([0; PAGE]));
                pg[i..i + n].fill(byte);
            }
        });
    }
    fn load_u32(&self, off: u64) -> u32 {
        assert!(
            off.is_multiple_of(4),
            "SparseMem: misaligned u32 at {off:#x}"
        );
        let mut b = [0u8; 4];
        self.read(off, &mut b);
        u32::from_le_bytes(b)
    }
    fn store_u32(&self, off: u64, v: u32) {
        assert!(
            off.is_multiple_of(4),
            "SparseMem: misaligned u32 at {off:#x}"
        );
        self.write(off, &v.to_le_bytes());
    }
    fn load_u64(&self, off: u64) -> u64 {
        assert!(
            off.is_multiple_of(8),
            "SparseMem: misaligned u64 at {off:#x}"
        );
        let mut b = [0u8; 8];
        self.read(off, &mut b);
        u64::from_le_bytes(b)
    }
    fn store_u64(&self, off: u64, v: u64) {
        assert!(
            off.is_multiple_of(8),
            "SparseMem: misaligned u64 at {off:#x}"
        );
        self.write(off, &v.to_le_bytes());
    }
    fn write_back(&self, off: u64, len: u64) {
        self.check(off, len);
    }
    fn invalidate(&self, off: u64, len: u64) {
        self.check(off, len);
    }
    fn store_fence(&self) {}
    fn full_fence(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_was_written_across_pages_and_fills() {
        let m = SparseMem::new(5 * PAGE as u64 + 100);
        let data: Vec<u8> = (0..3 * PAGE + 77).map(|i| i as u8 | 1).collect();
        m.write(PAGE as u64 - 10, &data);
        let mut back = vec![0u8; data.len()];
        m.read(PAGE as u64 - 10, &mut back);
        assert_eq!(back, data);
        m.fill(PAGE as u64, 2 * PAGE as u64, 0);
        m.read(PAGE as u64 - 10, &mut back);
        assert_eq!(&back[..10], &data[..10]);
        assert!(back[10..10 + 2 * PAGE].iter().all(|&b| b == 0));
        assert_eq!(&back[10 + 2 * PAGE..], &data[10 + 2 * PAGE..]);
        m.fill(3, 5, 0xAB);
        let mut b = [0u8; 10];
        m.read(0, &mut b);
        assert_eq!(b, [0, 0, 0, 0xAB, 0xAB, 0xAB, 0xAB, 0xAB, 0, 0]);
        m.store_u64(8, 0x0102_0304_0506_0708);
        assert_eq!(m.load_u32(8), 0x0506_0708);
    }
}
