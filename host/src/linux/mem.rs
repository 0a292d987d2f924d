//! [`MappedMem`]: the CBD transport as seen by this process, a shared `mmap` of a devdax device,
//! an ivshmem BAR (`resource2`) or a plain file, implementing [`device::shm::SharedMem`].
//!
//! This module holds the host program's `unsafe`: the mapping itself, raw copies in and out of
//! it, atomic views of aligned words, and the x86 cache-line instructions.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use device::shm::SharedMem;

/// Cache line size assumed for write-back/invalidate loops (x86).
pub const CACHE_LINE: u64 = 64;

/// Which instruction writes a line back (kept in cache where possible) to memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteBack {
    /// CLWB: write back, line may stay valid.
    Clwb,
    /// CLFLUSHOPT: write back and invalidate, weakly ordered.
    Clflushopt,
    /// CLFLUSH: write back and invalidate, ordered (every x86_64 has it).
    Clflush,
}

impl WriteBack {
    /// The best instruction this CPU supports (CPUID leaf 7, EBX bits 24/23).
    pub fn detect() -> WriteBack {
        #[cfg(target_arch = "x86_64")]
        {
            // CPUID is available on every x86_64 CPU; leaf 0 gives the max leaf.
            let max = core::arch::x86_64::__cpuid(0).eax;
            if max >= 7 {
                let ebx = core::arch::x86_64::__cpuid_count(7, 0).ebx;
                if ebx & (1 << 24) != 0 {
                    return WriteBack::Clwb;
                }
                if ebx & (1 << 23) != 0 {
                    return WriteBack::Clflushopt;
                }
            }
        }
        WriteBack::Clflush
    }
}

/// A shared, read-write mapping of (part of) a file or device.
pub struct MappedMem {
    ptr: NonNull<u8>,
    len: usize,
    wb: WriteBack,
    _file: File,
}

// SAFETY: `MappedMem` is a pointer to memory that is shared by design (with the CBD backend and
// between this program's queue threads). It never hands out references into the mapping; every
// access is a bounds-checked copy or an atomic operation, so using it from several threads is
// no different from several agents using the shared memory.
unsafe impl Send for MappedMem {}
// SAFETY: see `Send`.
unsafe impl Sync for MappedMem {}

impl MappedMem {
    /// Maps `len` bytes of `file` at `offset` (`MAP_SHARED`, read-write). Alignment rules are the
    /// file's (devdax: 2 MiB for offset and length); the caller checks them for a clear message.
    pub fn map(file: File, offset: u64, len: usize) -> io::Result<MappedMem> {
        if len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty mapping"));
        }
        let off = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?;
        // SAFETY: a fresh mapping chosen by the kernel (addr NULL); it aliases nothing in this
        // process. Its contents may change under us (the peer writes it): `MappedMem` only
        // accesses it through raw copies and atomics, never through Rust references.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                off,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(MappedMem {
            ptr: NonNull::new(p.cast()).expect("mmap returned NULL without MAP_FAILED"),
            len,
            wb: WriteBack::detect(),
            _file: file,
        })
    }

    /// The write-back instruction in use.
    pub fn write_back_insn(&self) -> WriteBack {
        self.wb
    }

    #[inline]
    fn check(&self, off: u64, len: u64, align: u64) -> usize {
        let end = off.checked_add(len).expect("shared access overflows");
        assert!(
            end <= self.len as u64 && off.is_multiple_of(align),
            "shared access [{off:#x}, +{len:#x}) out of bounds ({:#x}) or misaligned",
            self.len
        );
        off as usize
    }

    /// Address of byte `o` (already bounds checked).
    #[inline]
    fn at(&self, o: usize) -> *mut u8 {
        // SAFETY: callers pass `o <= len` (checked), so the result stays inside the mapping
        // or one past its end.
        unsafe { self.ptr.as_ptr().add(o) }
    }

    fn lines(&self, off: u64, len: u64) -> impl Iterator<Item = *mut u8> + '_ {
        let o = self.check(off, len, 1) as u64;
        let start = o & !(CACHE_LINE - 1);
        let end = o + len;
        (start..end)
            .step_by(CACHE_LINE as usize)
            .map(move |l| self.at(l as usize))
    }
}

impl Drop for MappedMem {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping created in `map`; no references into it exist.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

impl SharedMem for MappedMem {
    fn size(&self) -> u64 {
        self.len as u64
    }
    fn read(&self, off: u64, buf: &mut [u8]) {
        let o = self.check(off, buf.len() as u64, 1);
        // SAFETY: source in bounds (checked); `buf` is private memory, so no overlap. The peer
        // may store concurrently; the protocol only uses bytes published by an acquire load.
        unsafe { std::ptr::copy_nonoverlapping(self.at(o), buf.as_mut_ptr(), buf.len()) }
    }
    fn write(&self, off: u64, data: &[u8]) {
        let o = self.check(off, data.len() as u64, 1);
        // SAFETY: destination in bounds (checked); `data` is private memory, so no overlap.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.at(o), data.len()) }
    }
    fn fill(&self, off: u64, len: u64, byte: u8) {
        let o = self.check(off, len, 1);
        // SAFETY: in bounds (checked).
        unsafe { std::ptr::write_bytes(self.at(o), byte, len as usize) }
    }
    fn load_u32(&self, off: u64) -> u32 {
        let o = self.check(off, 4, 4);
        // SAFETY: in bounds and 4-aligned (the mapping is page aligned); shared words are only
        // accessed atomically.
        unsafe { (*self.at(o).cast::<AtomicU32>()).load(Ordering::Acquire) }
    }
    fn store_u32(&self, off: u64, v: u32) {
        let o = self.check(off, 4, 4);
        // SAFETY: in bounds and 4-aligned.
        unsafe { (*self.at(o).cast::<AtomicU32>()).store(v, Ordering::Release) }
    }
    fn load_u64(&self, off: u64) -> u64 {
        let o = self.check(off, 8, 8);
        // SAFETY: in bounds and 8-aligned.
        unsafe { (*self.at(o).cast::<AtomicU64>()).load(Ordering::Acquire) }
    }
    fn store_u64(&self, off: u64, v: u64) {
        let o = self.check(off, 8, 8);
        // SAFETY: in bounds and 8-aligned.
        unsafe { (*self.at(o).cast::<AtomicU64>()).store(v, Ordering::Release) }
    }
    fn write_back(&self, off: u64, len: u64) {
        if len == 0 {
            return;
        }
        for line in self.lines(off, len) {
            write_back_line(self.wb, line);
        }
    }
    fn invalidate(&self, off: u64, len: u64) {
        if len == 0 {
            return;
        }
        for line in self.lines(off, len) {
            flush_line(line);
        }
        // Later loads must not be satisfied before the flushes.
        self.full_fence();
    }
    fn store_fence(&self) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: SFENCE has no memory operands; SSE is part of x86_64.
        unsafe {
            core::arch::x86_64::_mm_sfence()
        };
        #[cfg(not(target_arch = "x86_64"))]
        std::sync::atomic::fence(Ordering::Release);
    }
    fn full_fence(&self) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: MFENCE has no memory operands; SSE2 is part of x86_64.
        unsafe {
            core::arch::x86_64::_mm_mfence()
        };
        #[cfg(not(target_arch = "x86_64"))]
        std::sync::atomic::fence(Ordering::SeqCst);
    }
}

/// CLFLUSH one line (write back + invalidate).
#[inline]
fn flush_line(p: *mut u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `p` points into the live mapping (from `MappedMem::lines`); CLFLUSH does not
    // change memory contents. SSE2 (CLFLUSH) is part of x86_64.
    unsafe {
        core::arch::x86_64::_mm_clflush(p)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Write back one line with the chosen instruction.
#[inline]
fn write_back_line(wb: WriteBack, p: *mut u8) {
    #[cfg(target_arch = "x86_64")]
    match wb {
        // SAFETY: `p` points into the live mapping; CLWB does not change memory
        // contents, and is only chosen when CPUID reports it (`detect`).
        WriteBack::Clwb => unsafe {
            core::arch::asm!("clwb [{0}]", in(reg) p, options(nostack, preserves_flags))
        },
        // SAFETY: as above, for CLFLUSHOPT (also only chosen when CPUID reports it).
        WriteBack::Clflushopt => unsafe {
            core::arch::asm!("clflushopt [{0}]", in(reg) p, options(nostack, preserves_flags))
        },
        WriteBack::Clflush => flush_line(p),
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (wb, p);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom, Write};

    /// A temporary file of `len` bytes, named per process and thread (tests of this
    /// crate run in parallel threads); the caller removes it.
    pub(crate) fn tmpfile(len: u64) -> (File, std::path::PathBuf) {
        let p = std::env::temp_dir().join(format!(
            "cbd-host-mem-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        f.set_len(len).unwrap();
        (f, p)
    }

    #[test]
    fn mapping_is_shared_with_the_file() {
        let (f, p) = tmpfile(1 << 20);
        let mut reader = f.try_clone().unwrap();
        let m = MappedMem::map(f, 0, 1 << 20).unwrap();
        m.write(4096 + 3, b"hello");
        m.store_u64(8192, 0x1122_3344_5566_7788);
        m.write_back(4096, 64);
        m.store_fence();
        let mut b = [0u8; 5];
        m.read(4099, &mut b);
        assert_eq!(&b, b"hello");
        assert_eq!(m.load_u64(8192), 0x1122_3344_5566_7788);
        // The file sees the stores (MAP_SHARED), and file writes show in the mapping.
        reader.seek(SeekFrom::Start(4099)).unwrap();
        let mut fb = [0u8; 5];
        reader.read_exact(&mut fb).unwrap();
        assert_eq!(&fb, b"hello");
        reader.seek(SeekFrom::Start(100)).unwrap();
        reader.write_all(&0xdead_beefu32.to_le_bytes()).unwrap();
        m.invalidate(64, 64);
        assert_eq!(m.load_u32(100), 0xdead_beef);
        m.fill(0, 16, 0xab);
        let mut z = [0u8; 16];
        m.read(0, &mut z);
        assert_eq!(z, [0xab; 16]);
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn offset_mapping_starts_at_offset() {
        let (mut f, p) = tmpfile(3 * 4096);
        f.seek(SeekFrom::Start(8192)).unwrap();
        f.write_all(b"page2").unwrap();
        let m = MappedMem::map(f, 8192, 4096).unwrap();
        let mut b = [0u8; 5];
        m.read(0, &mut b);
        assert_eq!(&b, b"page2");
        assert_eq!(m.size(), 4096);
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn out_of_bounds_panics() {
        let (f, p) = tmpfile(4096);
        std::fs::remove_file(p).unwrap();
        let m = MappedMem::map(f, 0, 4096).unwrap();
        m.write(4095, b"xy");
    }

    #[test]
    #[should_panic(expected = "misaligned")]
    fn misaligned_atomic_panics() {
        let (f, p) = tmpfile(4096);
        std::fs::remove_file(p).unwrap();
        let m = MappedMem::map(f, 0, 4096).unwrap();
        m.load_u64(4);
    }
}
