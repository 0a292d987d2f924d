//! virtio-blk as the device's non-volatile media, through the `virtio-drivers`
//! crate: our [`Hal`] gives it DMA memory (reserved RAM), register mappings
//! (`map_mmio`) and buffer addresses (page-table walk); ECAM config access comes
//! from `pci`. "Durable" = the disk's write and flush completed.
//!
//! The stager's write-back is asynchronous ([`Media::start_write`]): up to
//! [`WRITE_SLOTS`] writes in flight on the one virtqueue, completed in any order;
//! synchronous requests (reads, write-through, flush) wait for their own completion
//! and park the asynchronous completions they meet for [`Media::poll_done`].

use core::hint::spin_loop;
use core::ptr::NonNull;

use device::media::{Media, MediaError, Started, Ticket};
use virtio_drivers::device::blk::{BlkReq, BlkResp, SECTOR_SIZE, VirtIOBlk};
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

/// Asynchronous writes in flight at once. virtio-drivers' queue has 16 descriptors and
/// a request takes 3 (header, data, status) without indirect descriptors: 4 writes
/// plus one synchronous request fit.
pub const WRITE_SLOTS: usize = 4;

/// The request header and status byte of one request: the device reads the one and
/// writes the other until the request completed, so they live in DMA memory that
/// never moves (the [`VirtioMedia`] itself is moved around).
#[repr(C)]
struct Hdr {
    req: BlkReq,
    resp: BlkResp,
}

/// One asynchronous write in flight.
#[derive(Clone, Copy)]
struct Slot {
    token: u16,
    ticket: Ticket,
    /// The caller's data (address, length), handed back to virtio-drivers on completion.
    addr: usize,
    len: usize,
}

type Blk = VirtIOBlk<KernelHal, PciTransport>;
type Done = (Ticket, Result<(), MediaError>);

/// A virtio-blk disk used as [`Media`].
pub struct VirtioMedia {
    blk: Blk,
    size: u64,
    /// `WRITE_SLOTS` headers for the asynchronous writes, one for synchronous requests.
    hdrs: &'static mut [Hdr],
    slots: [Option<Slot>; WRITE_SLOTS],
    /// Asynchronous completions met while waiting for a synchronous request.
    done: heapless::Deque<Done, WRITE_SLOTS>,
    next_ticket: Ticket,
    pub writes: u64,
    pub flushes: u64,
    /// Time spent in (synchronous) flushes, and the longest one, in nanoseconds.
    pub flush_ns: u64,
    pub flush_max_ns: u64,
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
                hdrs: headers()?,
                slots: [None; WRITE_SLOTS],
                done: heapless::Deque::new(),
                next_ticket: 0,
                writes: 0,
                flushes: 0,
                flush_ns: 0,
                flush_max_ns: 0,
            })
        }
        Err(e) => {
            log::error!("virtio: block device init failed: {e}");
            None
        }
    }
}

/// `WRITE_SLOTS + 1` request headers in reserved RAM (never reused, never moves).
fn headers() -> Option<&'static mut [Hdr]> {
    const N: usize = WRITE_SLOTS + 1;
    const _: () = assert!(N * core::mem::size_of::<Hdr>() <= 4096);
    let Some((_, page)) = memory::reserve_phys(4096) else {
        log::error!("virtio: no RAM for the request headers");
        return None;
    };
    let p = page.as_mut_ptr().cast::<Hdr>();
    for i in 0..N {
        // SAFETY: `page` is 4096 bytes of page-aligned RAM we own exclusively
        // ('static, from `reserve_phys`); `N` headers fit (asserted above) and the
        // alignment of `Hdr` (8) divides 4096 and its size.
        unsafe {
            p.add(i).write(Hdr {
                req: BlkReq::default(),
                resp: BlkResp::default(),
            })
        };
    }
    // SAFETY: the `N` headers were initialised above; the page is ours alone for the
    // rest of the run, so this is the only reference to it.
    Some(unsafe { core::slice::from_raw_parts_mut(p, N) })
}

/// Pop the completion with `token` of an asynchronous write: `None` if no slot has it.
fn complete(
    blk: &mut Blk,
    slots: &mut [Option<Slot>],
    hdrs: &mut [Hdr],
    token: u16,
) -> Option<Done> {
    let i = slots
        .iter()
        .position(|s| s.is_some_and(|s| s.token == token))?;
    let s = slots[i].take()?;
    let h = &mut hdrs[i];
    // SAFETY: `addr..addr + len` is the data given to `start_write` for this request;
    // the `Media::start_write` contract keeps it valid and unmodified until its
    // completion is reported, which is what this call does (the device only read it).
    let data = unsafe { core::slice::from_raw_parts(s.addr as *const u8, s.len) };
    // SAFETY: `h.req`, `data` and `h.resp` are the buffers `write_blocks_nb` was given
    // for this token (slot `i` holds header `i` until now), and the device is done
    // with them (the token is in the used ring).
    let r = unsafe { blk.complete_write_blocks(token, &h.req, data, &mut h.resp) };
    Some((s.ticket, r.map_err(|_| MediaError::Io)))
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

impl VirtioMedia {
    /// Wait until the synchronous request `token` is next in the used ring, completing
    /// (and parking) the asynchronous writes that come first.
    fn wait_for(&mut self, token: u16) -> Result<(), MediaError> {
        let (async_hdrs, _) = self.hdrs.split_at_mut(WRITE_SLOTS);
        loop {
            match self.blk.peek_used() {
                Some(t) if t == token => return Ok(()),
                Some(t) => match complete(&mut self.blk, &mut self.slots, async_hdrs, t) {
                    Some(d) => {
                        // At most WRITE_SLOTS are in flight, so there is room.
                        let _ = self.done.push_back(d);
                    }
                    None => {
                        log::error!("virtio: completion of an unknown request {t}");
                        return Err(MediaError::Io);
                    }
                },
                None => spin_loop(),
            }
        }
    }

    fn in_flight(&self) -> bool {
        self.slots.iter().any(Option::is_some)
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
        let h = &mut self.hdrs[WRITE_SLOTS];
        // SAFETY: the header, `buf` and the status byte are not touched until the
        // request completed: `wait_for` returns only once its token is used, and on
        // its error (a token no request of ours has: the queue is broken) we never
        // return to a caller that could reuse `buf` while the device still writes it.
        let token = unsafe { self.blk.read_blocks_nb(block, &mut h.req, buf, &mut h.resp) }
            .map_err(|_| MediaError::Io)?;
        if let Err(e) = self.wait_for(token) {
            panic!("virtio: read request lost in a broken queue: {e:?}");
        }
        let h = &mut self.hdrs[WRITE_SLOTS];
        // SAFETY: the same buffers as given to `read_blocks_nb` for this token, which
        // the device has used.
        unsafe {
            self.blk
                .complete_read_blocks(token, &h.req, buf, &mut h.resp)
        }
        .map_err(|_| MediaError::Io)
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), MediaError> {
        let block = check(offset, data.len(), self.size)?;
        if data.is_empty() {
            return Ok(());
        }
        self.writes += 1;
        let h = &mut self.hdrs[WRITE_SLOTS];
        // SAFETY: as in `read`; the device only reads `data`, and we return only once
        // it is done with it (or panic).
        let token = unsafe {
            self.blk
                .write_blocks_nb(block, &mut h.req, data, &mut h.resp)
        }
        .map_err(|_| MediaError::Io)?;
        if let Err(e) = self.wait_for(token) {
            panic!("virtio: write request lost in a broken queue: {e:?}");
        }
        let h = &mut self.hdrs[WRITE_SLOTS];
        // SAFETY: the same buffers as given to `write_blocks_nb` for this token, used.
        unsafe {
            self.blk
                .complete_write_blocks(token, &h.req, data, &mut h.resp)
        }
        .map_err(|_| MediaError::Io)
    }

    /// Synchronous (virtio-drivers 0.13 has no non-blocking flush): the writes in
    /// flight complete first (parked for `poll_done`), since the driver's blocking
    /// request expects its own completion to be the next one. The stager starts it
    /// only when its writes completed, so that wait is empty there.
    fn flush(&mut self) -> Result<(), MediaError> {
        let (async_hdrs, _) = self.hdrs.split_at_mut(WRITE_SLOTS);
        while self.slots.iter().any(Option::is_some) {
            match self.blk.peek_used() {
                Some(t) => match complete(&mut self.blk, &mut self.slots, async_hdrs, t) {
                    Some(d) => {
                        let _ = self.done.push_back(d);
                    }
                    None => return Err(MediaError::Io),
                },
                None => spin_loop(),
            }
        }
        self.flushes += 1;
        let t0 = crate::arch::time::rdtsc();
        let r = self.blk.flush().map_err(|_| MediaError::Io);
        let ns = crate::arch::time::nanos_since(t0);
        self.flush_ns += ns;
        self.flush_max_ns = self.flush_max_ns.max(ns);
        r
    }

    fn can_start(&self) -> bool {
        self.slots.iter().any(Option::is_none)
    }

    fn start_write(&mut self, offset: u64, data: &[u8]) -> Result<Started, MediaError> {
        let block = check(offset, data.len(), self.size)?;
        if data.is_empty() {
            return Ok(Started::Done);
        }
        let i = self
            .slots
            .iter()
            .position(Option::is_none)
            .ok_or(MediaError::Io)?;
        let h = &mut self.hdrs[i];
        // SAFETY: header `i` belongs to slot `i`, free until this request completes
        // (`complete` frees it); the device only reads `data`, and the
        // `Media::start_write` contract keeps it in place and unmodified until the
        // completion is reported (the stager's staging slot is not reused before).
        let token = unsafe {
            self.blk
                .write_blocks_nb(block, &mut h.req, data, &mut h.resp)
        }
        .map_err(|_| MediaError::Io)?;
        let ticket = self.next_ticket;
        self.next_ticket = self.next_ticket.wrapping_add(1);
        self.slots[i] = Some(Slot {
            token,
            ticket,
            addr: data.as_ptr() as usize,
            len: data.len(),
        });
        self.writes += 1;
        Ok(Started::InFlight(ticket))
    }

    fn poll_done(&mut self) -> Option<Done> {
        if let Some(d) = self.done.pop_front() {
            return Some(d);
        }
        if !self.in_flight() {
            return None;
        }
        let t = self.blk.peek_used()?;
        let (async_hdrs, _) = self.hdrs.split_at_mut(WRITE_SLOTS);
        let d = complete(&mut self.blk, &mut self.slots, async_hdrs, t);
        if d.is_none() {
            log::error!("virtio: completion of an unknown request {t}");
        }
        d
    }

    fn wait_done(&mut self) -> Option<Done> {
        loop {
            if let Some(d) = self.poll_done() {
                return Some(d);
            }
            if !self.in_flight() {
                return None;
            }
            spin_loop();
        }
    }
}
