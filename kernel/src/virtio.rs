//! virtio-blk as the device's non-volatile media, through the `virtio-drivers`
//! crate: our [`Hal`] gives it DMA memory (reserved RAM), register mappings
//! (`map_mmio`) and buffer addresses (page-table walk); ECAM config access comes
//! from `pci`. "Durable" = the disk's write and flush completed.

use core::ptr::NonNull;

use device::media::{Media, MediaError};
use virtio_drivers::device::blk::{SECTOR_SIZE, VirtIOBlk};
use virtio_drivers::transport::pci::PciTransport;
use virtio_drivers::transport::pci::bus::{ConfigurationAccess, DeviceFunction, PciRoot};
use virtio_drivers::{BufferDirection, Hal, PhysAddr};

use crate::memory;
use crate::mmio::Mmio;
use crate::pci;

/// The kernel's side of virtio-drivers.
pub struct KernelHal;

// SAFETY: `dma_alloc` returns zeroed, physically contiguous, never-reused memory
// (reserved RAM); `mmio_phys_to_virt` maps the exact device range uncached; `share`
// returns the physical address of a buffer that it checks is physically contiguous.
unsafe impl Hal for KernelHal {
    fn dma_alloc(pages: usize, _dir: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        match memory::reserve_phys(pages as u64 * 4096) {
            Some((phys, s)) => (phys as PhysAddr, NonNull::from(s).cast()),
            None => panic!("virtio: out of DMA memory ({pages} pages)"),
        }
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, _vaddr: NonNull<u8>, _pages: usize) -> i32 {
        // Queues live for the whole run; reserved RAM is never reused.
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, size: usize) -> NonNull<u8> {
        match Mmio::map(paddr, size as u64) {
            Ok(m) => NonNull::new(m.virt_addr(0) as *mut u8).expect("mapped address is non-null"),
            Err(e) => panic!("virtio: cannot map BAR range {paddr:#x}+{size:#x}: {e}"),
        }
    }

    unsafe fn share(buffer: NonNull<[u8]>, _dir: BufferDirection) -> PhysAddr {
        let va = buffer.as_ptr() as *mut u8 as u64;
        let len = buffer.len() as u64;
        let start = memory::virt_to_phys(va).expect("virtio: buffer not mapped");
        if len > 1 {
            let end = memory::virt_to_phys(va + len - 1).expect("virtio: buffer end not mapped");
            assert_eq!(
                end - start,
                len - 1,
                "virtio: DMA buffer is not physically contiguous"
            );
        }
        start as PhysAddr
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _dir: BufferDirection) {
        // QEMU's DMA is cache-coherent; nothing to copy back.
    }
}

/// ECAM configuration access for virtio-drivers.
pub struct Ecam;

impl ConfigurationAccess for Ecam {
    fn read_word(&self, df: DeviceFunction, off: u8) -> u32 {
        pci::config(df.bus, df.device, df.function)
            .map(|f| f.read32_raw(off as u16))
            .unwrap_or(u32::MAX)
    }

    fn write_word(&mut self, df: DeviceFunction, off: u8, data: u32) {
        if let Some(f) = pci::config(df.bus, df.device, df.function) {
            f.write32(off as u16, data);
        }
    }

    unsafe fn unsafe_clone(&self) -> Self {
        Ecam
    }
}

/// A virtio-blk disk used as [`Media`].
pub struct VirtioMedia {
    blk: VirtIOBlk<KernelHal, PciTransport>,
    size: u64,
    pub writes: u64,
    pub flushes: u64,
}

/// Find the first virtio-blk PCI function (1af4:1042 modern, 1af4:1001 transitional).
pub fn find_blk() -> Option<VirtioMedia> {
    find_blk_nth(0)
}

/// The `n`-th virtio-blk PCI function in bus order (modern or transitional), started.
pub fn find_blk_nth(n: usize) -> Option<VirtioMedia> {
    let d = pci::find_nth(0x1af4, &[0x1042, 0x1001], n)?;
    d.f.enable_memory();
    let mut root = PciRoot::new(Ecam);
    let df = DeviceFunction {
        bus: d.f.bus,
        device: d.f.dev,
        function: d.f.func,
    };
    let transport = match PciTransport::new::<KernelHal, _>(&mut root, df) {
        Ok(t) => t,
        Err(e) => {
            log::error!("virtio: {:02x}:{:02x}.{}: {e}", d.f.bus, d.f.dev, d.f.func);
            return None;
        }
    };
    match VirtIOBlk::<KernelHal, _>::new(transport) {
        Ok(blk) => {
            let size = blk.capacity() * SECTOR_SIZE as u64;
            log::info!(
                "virtio: block device {:02x}:{:02x}.{}: {} MiB",
                d.f.bus,
                d.f.dev,
                d.f.func,
                size >> 20
            );
            Some(VirtioMedia {
                blk,
                size,
                writes: 0,
                flushes: 0,
            })
        }
        Err(e) => {
            log::error!("virtio: block device init failed: {e}");
            None
        }
    }
}

fn check(offset: u64, len: usize, size: u64) -> Result<usize, MediaError> {
    if !offset.is_multiple_of(SECTOR_SIZE as u64) || !len.is_multiple_of(SECTOR_SIZE) {
        return Err(MediaError::Unsupported);
    }
    match offset.checked_add(len as u64) {
        Some(end) if end <= size => Ok((offset / SECTOR_SIZE as u64) as usize),
        _ => Err(MediaError::OutOfRange),
    }
}

impl Media for VirtioMedia {
    fn size(&self) -> u64 {
        self.size
    }

    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), MediaError> {
        let block = check(offset, buf.len(), self.size)?;
        if buf.is_empty() {
            return Ok(());
        }
        self.blk.read_blocks(block, buf).map_err(|_| MediaError::Io)
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), MediaError> {
        let block = check(offset, data.len(), self.size)?;
        if data.is_empty() {
            return Ok(());
        }
        self.writes += 1;
        self.blk
            .write_blocks(block, data)
            .map_err(|_| MediaError::Io)
    }

    fn flush(&mut self) -> Result<(), MediaError> {
        self.flushes += 1;
        self.blk.flush().map_err(|_| MediaError::Io)
    }
}
