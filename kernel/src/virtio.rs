//! virtio-blk as the device's non-volatile media. The `virtio-drivers` crate gives
//! the PCI transport and the virtqueue; our [`Hal`] gives it DMA memory (reserved
//! RAM), register mappings (`map_mmio`) and buffer addresses (page-table walk); ECAM
//! config access comes from `pci`. The block requests themselves (header, data,
//! status byte) are built here: virtio-drivers' block driver has no non-blocking
//! flush. "Durable" = the disk's write and flush completed.
//!
//! The stager's write-back is asynchronous ([`Media::start_write`],
//! [`Media::start_flush`]): up to [`ASYNC_SLOTS`] requests in flight on the one
//! virtqueue, completed in any order; synchronous requests (reads, write-through,
//! flush) wait for their own completion and park the asynchronous completions they
//! meet for [`Media::poll_done`].

use core::hint::spin_loop;
use core::ptr::NonNull;

use device::media::{Media, MediaError, Started, Ticket};
use virtio_drivers::queue::VirtQueue;
use virtio_drivers::transport::Transport;
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

/// Descriptors of the virtqueue; a request takes 3 (header, data, status) or 2 (flush).
const QUEUE_SIZE: usize = 32;
/// Asynchronous requests (writes, flushes) in flight at once: `3 × 8` descriptors plus
/// 3 for one synchronous request fit in the queue.
pub const ASYNC_SLOTS: usize = 8;
const SECTOR_SIZE: usize = 512;
const QUEUE: u16 = 0;

/// virtio-blk request types and status (virtio 1.2, 5.2.6).
const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const S_OK: u8 = 0;
/// The status byte before the device wrote it.
const S_NONE: u8 = 0xff;

bitflags::bitflags! {
    /// The features we take (virtio 1.2, 5.2.3 and 6).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    struct Features: u64 {
        const RO = 1 << 5;
        const FLUSH = 1 << 9;
        const VERSION_1 = 1 << 32;
    }
}

/// The request header and status byte of one request: the device reads the one and
/// writes the other until the request completed, so they live in DMA memory that
/// never moves (the [`VirtioMedia`] itself is moved around).
#[repr(C)]
struct Hdr {
    /// type (u32 LE), reserved (u32), sector (u64 LE).
    req: [u8; 16],
    status: [u8; 1],
}

impl Hdr {
    fn set(&mut self, ty: u32, sector: u64) {
        self.req[..4].copy_from_slice(&ty.to_le_bytes());
        self.req[4..8].fill(0);
        self.req[8..].copy_from_slice(&sector.to_le_bytes());
        self.status[0] = S_NONE;
    }
    fn result(&self) -> Result<(), MediaError> {
        match self.status[0] {
            S_OK => Ok(()),
            _ => Err(MediaError::Io),
        }
    }
}

/// One asynchronous request in flight.
#[derive(Clone, Copy)]
struct Slot {
    token: u16,
    ticket: Ticket,
    /// A write's data (address, length: handed back to the queue on completion); a
    /// flush has none.
    data: Option<(usize, usize)>,
}

type Queue = VirtQueue<KernelHal, QUEUE_SIZE>;
type Done = (Ticket, Result<(), MediaError>);

/// A virtio-blk disk used as [`Media`].
pub struct VirtioMedia {
    transport: PciTransport,
    queue: Queue,
    size: u64,
    flush_supported: bool,
    /// `ASYNC_SLOTS` headers for the asynchronous requests, one for synchronous ones.
    hdrs: &'static mut [Hdr],
    slots: [Option<Slot>; ASYNC_SLOTS],
    /// Asynchronous completions met while waiting for a synchronous request.
    done: heapless::Deque<Done, ASYNC_SLOTS>,
    next_ticket: Ticket,
    pub writes: u64,
    pub flushes: u64,
    /// Time from a flush's start to the collection of its completion, and the longest
    /// one, in nanoseconds (the serve loop goes on meanwhile for asynchronous ones).
    pub flush_ns: u64,
    pub flush_max_ns: u64,
    flush_t0: u64,
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
    let name = (d.f.bus, d.f.dev, d.f.func);
    let mut transport = match PciTransport::new::<KernelHal, _>(&mut root, df) {
        Ok(t) => t,
        Err(e) => {
            log::error!("virtio: {:02x}:{:02x}.{}: {e}", name.0, name.1, name.2);
            return None;
        }
    };
    let features = transport.begin_init(Features::all());
    let capacity = transport.read_consistent(|| {
        let lo: u32 = transport.read_config_space(0)?;
        let hi: u32 = transport.read_config_space(4)?;
        Ok(lo as u64 | (hi as u64) << 32)
    });
    let queue = Queue::new(&mut transport, QUEUE, false, false);
    let (capacity, queue) = match (capacity, queue) {
        (Ok(c), Ok(q)) => (c, q),
        (Err(e), _) | (_, Err(e)) => {
            log::error!("virtio: block device init failed: {e}");
            return None;
        }
    };
    transport.finish_init();
    let size = capacity * SECTOR_SIZE as u64;
    if features.contains(Features::RO) {
        log::warn!("virtio: the block device is read-only; writes will fail");
    }
    log::info!(
        "virtio: block device {:02x}:{:02x}.{}: {} MiB{}",
        name.0,
        name.1,
        name.2,
        size >> 20,
        if features.contains(Features::FLUSH) {
            ""
        } else {
            " (no FLUSH: write-through cache)"
        }
    );
    Some(VirtioMedia {
        transport,
        queue,
        size,
        flush_supported: features.contains(Features::FLUSH),
        hdrs: headers()?,
        slots: [None; ASYNC_SLOTS],
        done: heapless::Deque::new(),
        next_ticket: 0,
        writes: 0,
        flushes: 0,
        flush_ns: 0,
        flush_max_ns: 0,
        flush_t0: 0,
    })
}

/// `ASYNC_SLOTS + 1` request headers in reserved RAM (never reused, never moves).
fn headers() -> Option<&'static mut [Hdr]> {
    const N: usize = ASYNC_SLOTS + 1;
    const _: () = assert!(N * core::mem::size_of::<Hdr>() <= 4096);
    let Some((_, page)) = memory::reserve_phys(4096) else {
        log::error!("virtio: no RAM for the request headers");
        return None;
    };
    let p = page.as_mut_ptr().cast::<Hdr>();
    for i in 0..N {
        // SAFETY: `page` is 4096 bytes of page-aligned RAM we own exclusively
        // ('static, from `reserve_phys`); `N` headers fit (asserted above) and `Hdr`
        // (byte arrays) has alignment 1.
        unsafe {
            p.add(i).write(Hdr {
                req: [0; 16],
                status: [S_NONE],
            })
        };
    }
    // SAFETY: the `N` headers were initialised above; the page is ours alone for the
    // rest of the run, so this is the only reference to it.
    Some(unsafe { core::slice::from_raw_parts_mut(p, N) })
}

fn check(offset: u64, len: usize, size: u64) -> Result<u64, MediaError> {
    if !offset.is_multiple_of(SECTOR_SIZE as u64) || !len.is_multiple_of(SECTOR_SIZE) {
        return Err(MediaError::Unsupported);
    }
    match offset.checked_add(len as u64) {
        Some(end) if end <= size => Ok(offset / SECTOR_SIZE as u64),
        _ => Err(MediaError::OutOfRange),
    }
}

/// Pop the completion `token` of an asynchronous request: `None` if no slot has it.
fn complete(
    queue: &mut Queue,
    slots: &mut [Option<Slot>],
    hdrs: &mut [Hdr],
    token: u16,
) -> Option<Done> {
    let i = slots
        .iter()
        .position(|s| s.is_some_and(|s| s.token == token))?;
    let s = slots[i].take()?;
    let h = &mut hdrs[i];
    let popped = match s.data {
        Some((addr, len)) => {
            // SAFETY: `addr..addr + len` is the data given to `start_write` for this
            // request; the `Media::start_write` contract keeps it valid and unmodified
            // until its completion is reported, which is what this call does (the
            // device only read it).
            let data = unsafe { core::slice::from_raw_parts(addr as *const u8, len) };
            // SAFETY: the header, data and status buffers `add` was given for this
            // token (slot `i` holds header `i` until now); the device is done with
            // them (the token is in the used ring).
            unsafe { queue.pop_used(token, &[&h.req, data], &mut [&mut h.status]) }
        }
        // SAFETY: as above, for a flush (header and status only).
        None => unsafe { queue.pop_used(token, &[&h.req], &mut [&mut h.status]) },
    };
    let r = popped.map_err(|_| MediaError::Io).and_then(|_| h.result());
    Some((s.ticket, r))
}

impl VirtioMedia {
    fn notify(&mut self) {
        if self.queue.should_notify() {
            self.transport.notify(QUEUE);
        }
    }

    /// Wait until the synchronous request `token` is next in the used ring, completing
    /// (and parking) the asynchronous requests that come first. Never returns while
    /// the device may still use the request's buffers: a token no request has means
    /// the queue is broken, and the kernel stops.
    fn wait_for(&mut self, token: u16) {
        let (async_hdrs, _) = self.hdrs.split_at_mut(ASYNC_SLOTS);
        loop {
            match self.queue.peek_used() {
                Some(t) if t == token => return,
                Some(t) => match complete(&mut self.queue, &mut self.slots, async_hdrs, t) {
                    Some(d) => {
                        // At most ASYNC_SLOTS are in flight, so there is room.
                        let _ = self.done.push_back(d);
                    }
                    None => panic!("virtio: completion of an unknown request {t}"),
                },
                None => spin_loop(),
            }
        }
    }

    fn in_flight(&self) -> bool {
        self.slots.iter().any(Option::is_some)
    }

    fn free_slot(&self) -> Result<usize, MediaError> {
        self.slots
            .iter()
            .position(Option::is_none)
            .ok_or(MediaError::Io)
    }

    fn ticket(&mut self) -> Ticket {
        let t = self.next_ticket;
        self.next_ticket = self.next_ticket.wrapping_add(1);
        t
    }

    fn flushed(&mut self) {
        let ns = crate::arch::time::nanos_since(self.flush_t0);
        self.flush_ns += ns;
        self.flush_max_ns = self.flush_max_ns.max(ns);
    }
}

impl Media for VirtioMedia {
    fn size(&self) -> u64 {
        self.size
    }

    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), MediaError> {
        let sector = check(offset, buf.len(), self.size)?;
        if buf.is_empty() {
            return Ok(());
        }
        let h = &mut self.hdrs[ASYNC_SLOTS];
        h.set(T_IN, sector);
        // SAFETY: the header, `buf` and the status byte are not touched until the
        // request completed: `wait_for` returns only once its token is used.
        let token = unsafe { self.queue.add(&[&h.req], &mut [buf, &mut h.status]) }
            .map_err(|_| MediaError::Io)?;
        self.notify();
        self.wait_for(token);
        let h = &mut self.hdrs[ASYNC_SLOTS];
        // SAFETY: the same buffers as given to `add` for this token, which the device
        // has used.
        unsafe {
            self.queue
                .pop_used(token, &[&h.req], &mut [buf, &mut h.status])
        }
        .map_err(|_| MediaError::Io)?;
        h.result()
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), MediaError> {
        let sector = check(offset, data.len(), self.size)?;
        if data.is_empty() {
            return Ok(());
        }
        self.writes += 1;
        let h = &mut self.hdrs[ASYNC_SLOTS];
        h.set(T_OUT, sector);
        // SAFETY: as in `read`; the device only reads `data`.
        let token = unsafe { self.queue.add(&[&h.req, data], &mut [&mut h.status]) }
            .map_err(|_| MediaError::Io)?;
        self.notify();
        self.wait_for(token);
        let h = &mut self.hdrs[ASYNC_SLOTS];
        // SAFETY: the same buffers as given to `add` for this token, used.
        unsafe {
            self.queue
                .pop_used(token, &[&h.req, data], &mut [&mut h.status])
        }
        .map_err(|_| MediaError::Io)?;
        h.result()
    }

    /// Synchronous flush: covers every write completed before it (asynchronous ones
    /// still in flight are not covered, as virtio says).
    fn flush(&mut self) -> Result<(), MediaError> {
        self.flushes += 1;
        if !self.flush_supported {
            return Ok(());
        }
        self.flush_t0 = crate::arch::time::rdtsc();
        let h = &mut self.hdrs[ASYNC_SLOTS];
        h.set(T_FLUSH, 0);
        // SAFETY: as in `read` (header and status only).
        let token = unsafe { self.queue.add(&[&h.req], &mut [&mut h.status]) }
            .map_err(|_| MediaError::Io)?;
        self.notify();
        self.wait_for(token);
        let h = &mut self.hdrs[ASYNC_SLOTS];
        // SAFETY: the same buffers as given to `add` for this token, used.
        unsafe { self.queue.pop_used(token, &[&h.req], &mut [&mut h.status]) }
            .map_err(|_| MediaError::Io)?;
        let r = h.result();
        self.flushed();
        r
    }

    fn can_start(&self) -> bool {
        self.slots.iter().any(Option::is_none)
    }

    fn start_write(&mut self, offset: u64, data: &[u8]) -> Result<Started, MediaError> {
        let sector = check(offset, data.len(), self.size)?;
        if data.is_empty() {
            return Ok(Started::Done);
        }
        let i = self.free_slot()?;
        let h = &mut self.hdrs[i];
        h.set(T_OUT, sector);
        // SAFETY: header `i` belongs to slot `i`, free until this request completes
        // (`complete` frees it); the device only reads `data`, and the
        // `Media::start_write` contract keeps it in place and unmodified until the
        // completion is reported (the stager's staging slot is not reused before).
        let token = unsafe { self.queue.add(&[&h.req, data], &mut [&mut h.status]) }
            .map_err(|_| MediaError::Io)?;
        self.notify();
        let ticket = self.ticket();
        self.slots[i] = Some(Slot {
            token,
            ticket,
            data: Some((data.as_ptr() as usize, data.len())),
        });
        self.writes += 1;
        Ok(Started::InFlight(ticket))
    }

    fn start_flush(&mut self) -> Result<Started, MediaError> {
        self.flushes += 1;
        if !self.flush_supported {
            return Ok(Started::Done);
        }
        let i = self.free_slot()?;
        self.flush_t0 = crate::arch::time::rdtsc();
        let h = &mut self.hdrs[i];
        h.set(T_FLUSH, 0);
        // SAFETY: header `i` belongs to slot `i` until the flush completes; a flush
        // has no data buffer.
        let token = unsafe { self.queue.add(&[&h.req], &mut [&mut h.status]) }
            .map_err(|_| MediaError::Io)?;
        self.notify();
        let ticket = self.ticket();
        self.slots[i] = Some(Slot {
            token,
            ticket,
            data: None,
        });
        Ok(Started::InFlight(ticket))
    }

    fn poll_done(&mut self) -> Option<Done> {
        if let Some(d) = self.done.pop_front() {
            return Some(d);
        }
        if !self.in_flight() {
            return None;
        }
        let t = self.queue.peek_used()?;
        let flush = self
            .slots
            .iter()
            .flatten()
            .any(|s| s.token == t && s.data.is_none());
        let (async_hdrs, _) = self.hdrs.split_at_mut(ASYNC_SLOTS);
        let Some(d) = complete(&mut self.queue, &mut self.slots, async_hdrs, t) else {
            panic!("virtio: completion of an unknown request {t}");
        };
        if flush {
            self.flushed();
        }
        Some(d)
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

impl Drop for VirtioMedia {
    fn drop(&mut self) {
        // Reset the device: it stops using the queue and any buffer still in flight.
        self.transport
            .set_status(virtio_drivers::transport::DeviceStatus::empty());
        self.transport.queue_unset(QUEUE);
    }
}
