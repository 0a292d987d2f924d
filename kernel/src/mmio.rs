//! Bounds-checked register access over a mapped MMIO range — the only place the
//! kernel dereferences device registers.

use core::ptr::NonNull;
use volatile::VolatilePtr;

use crate::memory::{MapError, MapKind, Mapping, map_mmio};

/// A mapped, uncached register range.
#[derive(Clone, Copy, Debug)]
pub struct Mmio {
    base: NonNull<u8>,
    len: usize,
    pub phys: u64,
}

// SAFETY: `Mmio` is a handle to device registers; the kernel is single-threaded and
// register access is inherently shared with the device, not with other Rust code.
unsafe impl Send for Mmio {}
// SAFETY: as above.
unsafe impl Sync for Mmio {}

impl Mmio {
    /// Map `len` bytes of registers at `phys` uncached.
    pub fn map(phys: u64, len: u64) -> Result<Mmio, MapError> {
        let m: Mapping = map_mmio(phys, len, MapKind::Uncached)?;
        Ok(Mmio {
            base: NonNull::new(m.virt as *mut u8).ok_or(MapError::ZeroLength)?,
            len: len as usize,
            phys,
        })
    }

    /// Virtual address of register `off` (for code that must reach it without a
    /// Rust reference, e.g. an interrupt stub).
    pub fn virt_addr(&self, off: usize) -> u64 {
        self.base.as_ptr() as u64 + off.min(self.len) as u64
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A sub-range (clamped to this range).
    pub fn slice(&self, off: usize, len: usize) -> Mmio {
        let off = off.min(self.len);
        let len = len.min(self.len - off);
        // SAFETY: `off <= self.len`, so the pointer stays inside (or one past) the mapping.
        let base = unsafe { self.base.add(off) };
        Mmio {
            base,
            len,
            phys: self.phys + off as u64,
        }
    }

    fn ptr<T>(&self, off: usize) -> Option<VolatilePtr<'_, T>> {
        let size = core::mem::size_of::<T>();
        if !off.is_multiple_of(size) || off.checked_add(size)? > self.len {
            return None;
        }
        // SAFETY: `off..off+size` is inside the mapped range and naturally aligned;
        // the mapping is uncached device memory valid for the kernel's lifetime.
        Some(unsafe { VolatilePtr::new(self.base.add(off).cast::<T>()) })
    }

    /// Read a u32 register; out-of-range or misaligned reads return all ones,
    /// like a master abort.
    pub fn read32(&self, off: usize) -> u32 {
        self.ptr::<u32>(off).map(|p| p.read()).unwrap_or(u32::MAX)
    }

    /// Write a u32 register; out-of-range writes are dropped (and logged).
    pub fn write32(&self, off: usize, v: u32) {
        match self.ptr::<u32>(off) {
            Some(p) => p.write(v),
            None => log::warn!(
                "mmio: dropped write {v:#x} at +{off:#x} outside {:#x}+{:#x}",
                self.phys,
                self.len
            ),
        }
    }

    pub fn read16(&self, off: usize) -> u16 {
        self.ptr::<u16>(off).map(|p| p.read()).unwrap_or(u16::MAX)
    }

    pub fn write16(&self, off: usize, v: u16) {
        match self.ptr::<u16>(off) {
            Some(p) => p.write(v),
            None => log::warn!("mmio: dropped write16 {v:#x} at +{off:#x}"),
        }
    }
}
