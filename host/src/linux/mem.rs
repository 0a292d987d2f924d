//! [`MappedMem`]: the CBD transport as seen by this process, a shared `mmap` of a devdax device,
//! an ivshmem BAR (`resource2`) or a plain file; [`ReadOnlyMem`], the same mapped `PROT_READ` for
//! `cbd-host inspect`.
//!
//! Every access of the mapped bytes is [`device::shm::raw::RawRegion`]'s (atomic copies and words,
//! written once for the kernel, this program and the native tests). This module holds what is
//! the host program's own: the `mmap`/`munmap` and the x86 cache-line instructions from user
//! space ([`X86Cache`]).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;

use device::shm::raw::{self, CacheOps, RawRegion, ReadOnly, ReadWrite};

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

/// The cache primitives from user space: CLWB/CLFLUSHOPT/CLFLUSH line by line, SFENCE, MFENCE
/// (the instructions the kernel's `arch::cache` uses; all are unprivileged).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct X86Cache {
    pub wb: WriteBack,
}

impl CacheOps for X86Cache {
    unsafe fn write_back(&self, addr: *const u8, len: usize) {
        for line in raw::lines(addr, len) {
            // SAFETY: the range is mapped (this trait's contract), so is each of its lines.
            unsafe { write_back_line(self.wb, line) };
        }
    }
    unsafe fn invalidate(&self, addr: *const u8, len: usize) {
        for line in raw::lines(addr, len) {
            // SAFETY: as in `write_back`.
            unsafe { flush_line(line) };
        }
        // Later loads must not be satisfied before the flushes.
        self.full_fence();
    }
    fn store_fence(&self) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: SFENCE has no operands and only orders this CPU's stores; SSE is part of
        // x86_64.
        unsafe {
            core::arch::asm!("sfence", options(nostack, preserves_flags))
        };
        #[cfg(not(target_arch = "x86_64"))]
        std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
    }
    fn full_fence(&self) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: MFENCE has no operands and only orders this CPU's accesses; SSE2 is part of
        // x86_64.
        unsafe {
            core::arch::asm!("mfence", options(nostack, preserves_flags))
        };
        #[cfg(not(target_arch = "x86_64"))]
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    }
}

/// CLFLUSH the line at `line` (write back + invalidate).
///
/// # Safety
/// `line` is inside a live mapping of this process.
#[inline]
unsafe fn flush_line(line: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `line` is mapped (caller); CLFLUSH changes no memory contents and needs only read
    // permission (so it works on the read-only mapping too). SSE2 (CLFLUSH) is part of x86_64.
    unsafe {
        core::arch::asm!("clflush [{0}]", in(reg) line, options(nostack, preserves_flags))
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = line;
}

/// Write back the line at `line` with the chosen instruction.
///
/// # Safety
/// `line` is inside a live mapping of this process.
#[inline]
unsafe fn write_back_line(wb: WriteBack, line: usize) {
    #[cfg(target_arch = "x86_64")]
    match wb {
        // SAFETY: `line` is mapped (caller); CLWB changes no memory contents, and is only chosen
        // when CPUID reports it (`detect`).
        WriteBack::Clwb => unsafe {
            core::arch::asm!("clwb [{0}]", in(reg) line, options(nostack, preserves_flags))
        },
        // SAFETY: as above, for CLFLUSHOPT (also only chosen when CPUID reports it).
        WriteBack::Clflushopt => unsafe {
            core::arch::asm!("clflushopt [{0}]", in(reg) line, options(nostack, preserves_flags))
        },
        // SAFETY: `line` is mapped (caller).
        WriteBack::Clflush => unsafe { flush_line(line) },
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (wb, line);
}

/// `mmap(NULL, len, prot, MAP_SHARED, file, offset)`.
fn mmap(file: &File, offset: u64, len: usize, prot: libc::c_int) -> io::Result<NonNull<u8>> {
    if len == 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty mapping"));
    }
    let off = libc::off_t::try_from(offset)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?;
    // SAFETY: a fresh mapping chosen by the kernel (addr NULL): it aliases nothing in this process.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            prot,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            off,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(NonNull::new(p.cast()).expect("mmap returned NULL without MAP_FAILED"))
}

/// A mapping of (part of) a file or device: the region over it, the file it maps.
pub struct Mapped<A> {
    raw: RawRegion<X86Cache, A>,
    _file: File,
}

/// The shared, read-write mapping the host role runs on.
pub type MappedMem = Mapped<ReadWrite>;
/// A `PROT_READ` mapping of a file opened read-only (`cbd-host inspect`): it has no store
/// methods, its [`device::shm::SharedMem`] stores panic before touching memory, and a store that
/// got through anyway would fault.
pub type ReadOnlyMem = Mapped<ReadOnly>;

impl MappedMem {
    /// Maps `len` bytes of `file` at `offset` (`MAP_SHARED`, read-write). Alignment rules are the
    /// file's (devdax: 2 MiB for offset and length); the caller checks them for a clear message.
    pub fn map(file: File, offset: u64, len: usize) -> io::Result<MappedMem> {
        let base = mmap(&file, offset, len, libc::PROT_READ | libc::PROT_WRITE)?;
        // SAFETY: `len` bytes mapped read-write, page aligned, unmapped only in `Drop` (after the
        // region is gone); this program accesses them only through the region. The peer and
        // other mappings of this process are the agents the region is made for.
        let raw = unsafe {
            RawRegion::new(
                base,
                len,
                X86Cache {
                    wb: WriteBack::detect(),
                },
            )
        };
        Ok(Mapped { raw, _file: file })
    }
}

impl ReadOnlyMem {
    /// Maps `len` bytes of `file` at `offset` `PROT_READ`, `MAP_SHARED`. The file must have been
    /// opened read-only (`O_RDONLY`, checked), so neither the mapping nor the descriptor can write.
    pub fn map_read_only(file: File, offset: u64, len: usize) -> io::Result<ReadOnlyMem> {
        // SAFETY: F_GETFL on a descriptor this `File` owns; no memory is passed.
        let fl = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
        if fl < 0 {
            return Err(io::Error::last_os_error());
        }
        if fl & libc::O_ACCMODE != libc::O_RDONLY {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a read-only mapping needs a file opened read-only",
            ));
        }
        let base = mmap(&file, offset, len, libc::PROT_READ)?;
        // SAFETY: `len` bytes mapped readable, page aligned, unmapped only in `Drop`; a read-only
        // region only loads, relaxed and at most 8 bytes at a time (allowed on read-only memory).
        let raw = unsafe {
            RawRegion::new_read_only(
                base,
                len,
                X86Cache {
                    wb: WriteBack::detect(),
                },
            )
        };
        Ok(Mapped { raw, _file: file })
    }
}

impl<A> Mapped<A> {
    /// The write-back instruction in use.
    pub fn write_back_insn(&self) -> WriteBack {
        self.raw.cache().wb
    }
    /// The region over the mapping.
    pub fn region(&self) -> &RawRegion<X86Cache, A> {
        &self.raw
    }
}

impl<A> Drop for Mapped<A> {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping created in `map`/`map_read_only`; the region over it
        // goes with `self`, and it never handed out references into it.
        unsafe { libc::munmap(self.raw.base().as_ptr().cast(), self.raw.len()) };
    }
}

device::forward_shared_mem!(MappedMem => raw);
device::forward_shared_mem!(ReadOnlyMem => raw);

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use device::shm::SharedMem;
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

    /// The permissions column of `/proc/self/maps` for the mapping that starts at `addr`.
    fn perms_of(addr: usize) -> String {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let line = maps
            .lines()
            .find(|l| usize::from_str_radix(l.split('-').next().unwrap(), 16) == Ok(addr))
            .unwrap_or_else(|| panic!("no mapping at {addr:#x}"));
        line.split_whitespace().nth(1).unwrap().to_string()
    }

    #[test]
    fn read_only_mapping_is_prot_read_and_refuses_stores() {
        let (f, p) = tmpfile(2 * 4096);
        let live = MappedMem::map(f, 0, 2 * 4096).unwrap();
        live.write(4096 + 5, b"live ring");
        // A writable descriptor is refused: the inspector's file must be opened read-only.
        let rw = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .unwrap();
        let e = ReadOnlyMem::map_read_only(rw, 0, 4096).err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        let ro = ReadOnlyMem::map_read_only(File::open(&p).unwrap(), 4096, 4096).unwrap();
        // The kernel maps it readable and shared only: a store would fault.
        assert_eq!(perms_of(ro.region().base().as_ptr().addr()), "r--s");
        assert_eq!(perms_of(live.region().base().as_ptr().addr()), "rw-s");
        let mut b = [0u8; 9];
        ro.read(5, &mut b);
        assert_eq!(&b, b"live ring");
        // It stays a live view of the ring...
        live.store_u32(4096 + 16, 0x1234_5678);
        ro.invalidate(16, 4);
        assert_eq!(ro.load_u32(16), 0x1234_5678);
        // ...that cannot store: every SharedMem store panics before touching memory.
        let m: &dyn SharedMem = &ro;
        for store in [
            &(|| m.write(5, b"X")) as &dyn Fn(),
            &|| m.fill(5, 1, 0),
            &|| m.store_u32(16, 0),
            &|| m.store_u64(16, 0),
        ] {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(store));
            assert!(
                r.is_err(),
                "a store into the read-only mapping was not refused"
            );
        }
        live.read(4096 + 5, &mut b);
        assert_eq!(&b, b"live ring");
        assert_eq!(live.load_u32(4096 + 16), 0x1234_5678);
        std::fs::remove_file(p).unwrap();
    }
}
