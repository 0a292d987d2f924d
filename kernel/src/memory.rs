//! Physical frames and device mappings.
//!
//! * [`FrameAlloc`]: a bump allocator over the `Usable` regions of the boot memory map
//!   (the kernel never frees page-table frames, so bump is enough).
//! * [`map_mmio`]: maps a physical range into a dedicated virtual area (one unused
//!   top-level page-table slot, 512 GiB) — uncached for registers, write-back for
//!   memory windows. The bootloader's physical-memory map is *not* used for devices:
//!   it is write-back and does not reach high BARs under OVMF (measured).

use bootloader_api::info::{MemoryRegionKind, MemoryRegions};
use spin::Mutex;
use x86_64::structures::paging::{
    FrameAllocator, Mapper, OffsetPageTable, Page, PageSize, PageTable, PageTableFlags, PhysFrame,
    Size2MiB, Size4KiB,
};
use x86_64::{PhysAddr, VirtAddr};

/// How a physical range is cached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapKind {
    /// Device registers: uncached (PCD|PWT), never speculatively read.
    Uncached,
    /// Memory windows (CXL HDM, ivshmem BAR): write-back cacheable, so the
    /// cache-maintenance instructions are meaningful.
    WriteBack,
}

/// Errors of the mapping layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    NotInitialised,
    OutOfFrames,
    OutOfVirtualSpace,
    ZeroLength,
    AlreadyMapped(u64),
}

impl core::fmt::Display for MapError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MapError::NotInitialised => write!(f, "memory manager not initialised"),
            MapError::OutOfFrames => write!(f, "out of physical frames for page tables"),
            MapError::OutOfVirtualSpace => write!(f, "device mapping area exhausted"),
            MapError::ZeroLength => write!(f, "zero-length mapping"),
            MapError::AlreadyMapped(v) => write!(f, "virtual page {v:#x} already mapped"),
        }
    }
}

/// Bump allocator over usable physical memory.
pub struct FrameAlloc {
    regions: &'static MemoryRegions,
    region: usize,
    next: u64,
    /// Ranges handed out by [`reserve`]; never given out as frames.
    reserved: heapless::Vec<(u64, u64), 8>,
}

impl FrameAlloc {
    fn new(regions: &'static MemoryRegions) -> Self {
        FrameAlloc {
            regions,
            region: 0,
            next: 0,
            reserved: heapless::Vec::new(),
        }
    }

    /// Carve `len` bytes (4 KiB aligned) from the top of a usable region that
    /// the bump pointer has not reached and no earlier reservation overlaps.
    fn reserve(&mut self, len: u64) -> Option<u64> {
        let len = len.next_multiple_of(4096);
        let mut best: Option<u64> = None;
        for (i, r) in self.regions.iter().enumerate() {
            if r.kind != MemoryRegionKind::Usable || i < self.region {
                continue;
            }
            let mut top = r.end & !0xfff;
            for &(s, e) in &self.reserved {
                if s < r.end && e > r.start {
                    top = top.min(s);
                }
            }
            let floor = if i == self.region {
                self.next.max(r.start)
            } else {
                r.start
            };
            if top >= floor + len && best.is_none_or(|b| top - len > b) {
                best = Some(top - len);
            }
        }
        let start = best?;
        self.reserved.push((start, start + len)).ok()?;
        Some(start)
    }
}

// SAFETY: only frames of `Usable` regions are returned, each at most once.
unsafe impl FrameAllocator<Size4KiB> for FrameAlloc {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        while self.region < self.regions.len() {
            let r = &self.regions[self.region];
            if r.kind == MemoryRegionKind::Usable {
                let mut start = self.next.max(r.start.next_multiple_of(4096));
                while let Some(&(_, e)) = self
                    .reserved
                    .iter()
                    .find(|&&(s, e)| start < e && start + 4096 > s)
                {
                    start = e;
                }
                if start + 4096 <= r.end {
                    self.next = start + 4096;
                    return Some(PhysFrame::containing_address(PhysAddr::new(start)));
                }
            }
            self.region += 1;
            self.next = 0;
        }
        None
    }
}

struct Mm {
    mapper: OffsetPageTable<'static>,
    frames: FrameAlloc,
    phys_offset: u64,
    /// Next free virtual address in the device area, and its end.
    next_va: u64,
    end_va: u64,
}

static MM: Mutex<Option<Mm>> = Mutex::new(None);

/// Summary of the boot memory map.
#[derive(Clone, Copy, Debug, Default)]
pub struct MemorySummary {
    pub regions: usize,
    pub usable_bytes: u64,
    pub usable_regions: usize,
    pub bootloader_bytes: u64,
    pub firmware_bytes: u64,
    pub highest: u64,
}

/// Count the memory map.
pub fn summarize(regions: &MemoryRegions) -> MemorySummary {
    let mut s = MemorySummary {
        regions: regions.len(),
        ..Default::default()
    };
    for r in regions.iter() {
        let len = r.end - r.start;
        s.highest = s.highest.max(r.end);
        match r.kind {
            MemoryRegionKind::Usable => {
                s.usable_bytes += len;
                s.usable_regions += 1;
            }
            MemoryRegionKind::Bootloader => s.bootloader_bytes += len,
            _ => s.firmware_bytes += len,
        }
    }
    s
}

/// Set up the page-table mapper and pick the device mapping area.
///
/// # Safety
/// `phys_offset` must be the offset at which the bootloader mapped all physical
/// memory, and this must be called once, before any other paging operation.
pub unsafe fn init(phys_offset: u64, regions: &'static MemoryRegions) {
    let (p4_frame, _) = x86_64::registers::control::Cr3::read();
    let p4_virt = phys_offset + p4_frame.start_address().as_u64();
    // SAFETY: the caller guarantees the physical map at `phys_offset`; the active
    // P4 table is therefore mapped there, and only this module mutates it.
    let p4: &'static mut PageTable = unsafe { &mut *(p4_virt as *mut PageTable) };
    // Choose the highest unused lower-half P4 slot (1..=255) as the device area.
    let slot = (1..256usize)
        .rev()
        .find(|&i| p4[i].is_unused())
        .unwrap_or(0);
    let start = (slot as u64) << 39;
    // SAFETY: as above.
    let mapper = unsafe { OffsetPageTable::new(p4, VirtAddr::new(phys_offset)) };
    *MM.lock() = Some(Mm {
        mapper,
        frames: FrameAlloc::new(regions),
        phys_offset,
        next_va: start,
        end_va: if slot == 0 { start } else { start + (1 << 39) },
    });
    log::debug!("mm: device mapping area at P4 slot {slot} ({start:#x})");
}

/// Take `len` bytes of contiguous usable RAM for the device's own use (RAM media,
/// bounce buffers), zeroed, through the physical-memory map. Never freed.
pub fn reserve(len: u64) -> Option<&'static mut [u8]> {
    reserve_phys(len).map(|(_, s)| s)
}

/// Like [`reserve`], also returning the physical address (for DMA).
pub fn reserve_phys(len: u64) -> Option<(u64, &'static mut [u8])> {
    let mut guard = MM.lock();
    let mm = guard.as_mut()?;
    let phys = mm.frames.reserve(len)?;
    let virt = mm.phys_offset + phys;
    // SAFETY: `phys..phys+len` is usable RAM that the frame allocator will never
    // hand out and no other reservation overlaps, so this is the only reference;
    // the bootloader's physical map covers it (usable RAM is below `max_phys`).
    let s = unsafe { core::slice::from_raw_parts_mut(virt as *mut u8, len as usize) };
    s.fill(0);
    log::debug!("mm: reserved {len:#x} bytes of RAM at {phys:#x}");
    Some((phys, s))
}

/// Physical address of a kernel virtual address (page-table walk).
pub fn virt_to_phys(virt: u64) -> Option<u64> {
    use x86_64::structures::paging::Translate;
    let guard = MM.lock();
    let mm = guard.as_ref()?;
    mm.mapper
        .translate_addr(VirtAddr::try_new(virt).ok()?)
        .map(|p| p.as_u64())
}

/// The bootloader's physical-memory offset (RAM and ACPI tables only).
pub fn phys_offset() -> u64 {
    MM.lock().as_ref().map(|m| m.phys_offset).unwrap_or(0)
}

/// A device mapping: `virt` corresponds to the requested physical address.
#[derive(Clone, Copy, Debug)]
pub struct Mapping {
    pub phys: u64,
    pub virt: u64,
    pub len: u64,
    pub kind: MapKind,
}

use x86_64::structures::paging::mapper::MapToError;

/// `true` when the failure was running out of frames.
fn map_err_2m(e: MapToError<Size2MiB>) -> bool {
    matches!(e, MapToError::FrameAllocationFailed)
}

fn map_err_4k(e: MapToError<Size4KiB>) -> bool {
    matches!(e, MapToError::FrameAllocationFailed)
}

/// Map `len` bytes of physical address space at `phys` with the given caching.
/// Uses 2 MiB pages for ranges of at least 2 MiB, 4 KiB pages otherwise.
pub fn map_mmio(phys: u64, len: u64, kind: MapKind) -> Result<Mapping, MapError> {
    if len == 0 {
        return Err(MapError::ZeroLength);
    }
    let mut guard = MM.lock();
    let mm = guard.as_mut().ok_or(MapError::NotInitialised)?;
    let mut flags = PageTableFlags::PRESENT | PageTableFlags::WRITABLE | PageTableFlags::NO_EXECUTE;
    if kind == MapKind::Uncached {
        flags |= PageTableFlags::NO_CACHE | PageTableFlags::WRITE_THROUGH;
    }
    let huge = len >= Size2MiB::SIZE;
    let page = if huge { Size2MiB::SIZE } else { Size4KiB::SIZE };
    let pstart = phys & !(page - 1);
    let pend = (phys + len).next_multiple_of(page);
    let vstart = mm.next_va.next_multiple_of(page);
    if vstart + (pend - pstart) > mm.end_va {
        return Err(MapError::OutOfVirtualSpace);
    }
    let Mm { mapper, frames, .. } = mm;
    let mut off = 0;
    while pstart + off < pend {
        let va = VirtAddr::new(vstart + off);
        let pa = PhysAddr::new(pstart + off);
        // SAFETY: the virtual page lies in the device area owned by this module and
        // not yet handed out; the physical range is device/window space named by
        // the caller, so no Rust object aliases it.
        let res = unsafe {
            if huge {
                mapper
                    .map_to(
                        Page::<Size2MiB>::containing_address(va),
                        PhysFrame::<Size2MiB>::containing_address(pa),
                        flags | PageTableFlags::HUGE_PAGE,
                        frames,
                    )
                    .map(|f| f.flush())
                    .map_err(map_err_2m)
            } else {
                mapper
                    .map_to(
                        Page::<Size4KiB>::containing_address(va),
                        PhysFrame::<Size4KiB>::containing_address(pa),
                        flags,
                        frames,
                    )
                    .map(|f| f.flush())
                    .map_err(map_err_4k)
            }
        };
        match res {
            Ok(()) => {}
            Err(true) => return Err(MapError::OutOfFrames),
            Err(false) => return Err(MapError::AlreadyMapped(va.as_u64())),
        }
        off += page;
    }
    mm.next_va = vstart + (pend - pstart);
    let m = Mapping {
        phys,
        virt: vstart + (phys - pstart),
        len,
        kind,
    };
    log::debug!(
        "mm: mapped {:#x}+{:#x} -> {:#x} ({:?})",
        phys,
        len,
        m.virt,
        kind
    );
    Ok(m)
}
