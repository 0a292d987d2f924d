//! `mode=backend`: the device proper. Finds (or formats) the CBD v3 transport in
//! the shared region, registers as a CBD backend with a RAM-backed disk, and
//! serves the channels until told to stop on the console (`stop`).
//!
//! Run-time options (fw_cfg `opt/cbdfw/<key>`):
//! * `transport-offset` — byte offset of the transport in the region; without it
//!   the device scans for the v3 magic at 2 MiB steps (a Linux devdax namespace puts
//!   metadata first) and formats at offset 0 if none is found;
//! * `transport` — `auto` (default, as above) or `wait`: never format, keep scanning
//!   until a host has formatted one (CXL + devdax: the host owns the layout), at most
//!   `wait-secs` (default 300);
//! * `media` — `auto` (default: the virtio-blk disk if the VM has one, else RAM),
//!   `virtio`, `ram`;
//! * `disks` — several disks, one backend each: `ram[:MIB]` / `virtio` comma-separated
//!   (`virtio` entries take the VM's virtio-blk disks in bus order; backend paths
//!   `/dev/cbdfw0`, `/dev/cbdfw1`, …); without it one disk as `media` says;
//! * `disk-mib` (default 64) — size of a RAM disk;
//! * `channels` (default 2) — handler channels;
//! * `noncoherent` (`on`/`off`, default off) — offer the non-coherent mode;
//! * `trace` (`on`/`off`) — print every protocol event;
//! * `profile` (`on`/`off`, default off) — count TSC cycles per phase of the serve
//!   loop (`device::profile`); the console's `profile` prints the breakdown, `profile
//!   reset` starts it again, and it is printed when the device stops;
//! * `takeover` (`on`/off) — restarting after a crash: take over this device's own
//!   host and backend records at once instead of waiting for the dead
//!   incarnation's heartbeat to expire (30 s);
//! * `serve-secs` — stop by itself after this many seconds (0 = never);
//! * `idle-us` (default 20) — when the rings have been quiet for a while, halt this
//!   long between polls (LAPIC timer) instead of spinning; 0 = always spin.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use device::backend::{Backend, BackendConfig, BackendError};
use device::layout::{TRANSPORT_MAGIC, tflags};
use device::media::{Media, MediaError, SliceMedia, Started, Ticket};
use device::profile::Profile;
use device::ratelimit::{HeldBack, RateLimit};
use device::shm::{SharedMem, Shm};
use device::trace::{TraceEvent, Tracer};
use device::transport::{Transport, format_flags};

use crate::arch::time::{rdtsc, tsc_hz, wall_clock_ns};
use crate::exit::ExitCode;
use crate::fwcfg;
use crate::region::SharedRegion;

/// Counts protocol events and optionally prints each one.
pub struct KernelTracer {
    print: AtomicBool,
    /// Charge TSC cycles to serve-loop phases (`profile=on`).
    profiling: AtomicBool,
    pub profile: Profile,
    pub ses: AtomicU64,
    pub ces: AtomicU64,
    pub bytes: AtomicU64,
    pub media_ops: AtomicU64,
    pub rejected: AtomicU64,
    pub errors: AtomicU64,
    pub write_backs: AtomicU64,
    pub invalidates: AtomicU64,
    pub heartbeats: AtomicU64,
}

impl KernelTracer {
    pub const fn new() -> Self {
        KernelTracer {
            print: AtomicBool::new(false),
            profiling: AtomicBool::new(false),
            profile: Profile::new(),
            ses: AtomicU64::new(0),
            ces: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            media_ops: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            write_backs: AtomicU64::new(0),
            invalidates: AtomicU64::new(0),
            heartbeats: AtomicU64::new(0),
        }
    }

    pub fn set_print(&self, on: bool) {
        self.print.store(on, Ordering::Relaxed);
    }

    pub fn set_profiling(&self, on: bool) {
        self.profiling.store(on, Ordering::Relaxed);
    }

    /// The serve loop's own marks (see `device::profile`), when profiling.
    fn mark(&self, f: impl FnOnce(&Profile, u64)) {
        if self.profiling.load(Ordering::Relaxed) {
            f(&self.profile, rdtsc());
        }
    }

    /// The phase breakdown, one log line per phase.
    pub fn print_profile(&self) {
        if !self.profiling.load(Ordering::Relaxed) {
            log::info!("profile: off (boot with profile=on)");
            return;
        }
        log::info!("profile: TSC at {} Hz", tsc_hz());
        self.profile.report(tsc_hz(), |l| log::info!("{l}"));
    }

    /// One summary line.
    pub fn summary(&self, what: &str) {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        log::info!(
            "{what}: requests={} completions={} bytes={} media_ops={} errors={} rejected={} write_backs={} invalidates={} heartbeats={}",
            g(&self.ses),
            g(&self.ces),
            g(&self.bytes),
            g(&self.media_ops),
            g(&self.errors),
            g(&self.rejected),
            g(&self.write_backs),
            g(&self.invalidates),
            g(&self.heartbeats)
        );
    }
}

impl Default for KernelTracer {
    fn default() -> Self {
        Self::new()
    }
}

impl Tracer for KernelTracer {
    fn event(&self, ev: &TraceEvent) {
        let inc = |a: &AtomicU64, n: u64| {
            a.fetch_add(n, Ordering::Relaxed);
        };
        match ev {
            TraceEvent::SeSeen { .. } => inc(&self.ses, 1),
            TraceEvent::CePosted { result, .. } => {
                inc(&self.ces, 1);
                if *result != 0 {
                    inc(&self.errors, 1);
                }
            }
            TraceEvent::DataCopied { len, .. } => inc(&self.bytes, *len as u64),
            TraceEvent::MediaOp { .. } => inc(&self.media_ops, 1),
            TraceEvent::Rejected { .. } => inc(&self.rejected, 1),
            TraceEvent::WrittenBack { .. } => inc(&self.write_backs, 1),
            TraceEvent::Invalidated { .. } => inc(&self.invalidates, 1),
            TraceEvent::Heartbeat { .. } => inc(&self.heartbeats, 1),
            _ => {}
        }
        self.mark(|p, now| p.event(ev, now));
        if self.print.load(Ordering::Relaxed) {
            // Lines-only events are noisy; keep them at debug.
            match ev {
                TraceEvent::WrittenBack { .. } | TraceEvent::Invalidated { .. } => {
                    log::debug!("trace: {ev:?}")
                }
                _ => log::info!("trace: {ev:?}"),
            }
        }
    }
}

static TRACER: KernelTracer = KernelTracer::new();

fn opt_u64(key: &str, default: u64) -> u64 {
    fwcfg::option(key)
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn opt_on(key: &str) -> bool {
    matches!(
        fwcfg::option(key).as_deref(),
        Some("on" | "1" | "yes" | "true")
    )
}

/// Scan for a v3 transport magic at 2 MiB steps (invalidate, then read).
pub fn find_transport(region: &SharedRegion) -> Option<u64> {
    const STEP: u64 = 2 << 20;
    let mut off = 0;
    while off + 4096 <= region.len() {
        let mut m = [0u8; 8];
        region.invalidate(off, 8);
        region.read(off, &mut m);
        if u64::from_le_bytes(m) == TRANSPORT_MAGIC {
            return Some(off);
        }
        off += STEP;
    }
    None
}

/// Serve as a CBD backend until `stop` is typed on the console.
pub fn serve(region: SharedRegion) -> ExitCode {
    TRACER.set_print(opt_on("trace"));
    TRACER.set_profiling(opt_on("profile"));
    let explicit = fwcfg::option("transport-offset").and_then(|s| s.parse::<u64>().ok());
    let wait = fwcfg::option("transport").as_deref() == Some("wait");
    let mut found = if explicit.is_none() {
        find_transport(&region)
    } else {
        None
    };
    let noncoherent = opt_on("noncoherent");
    // A host may be formatting right now: wait until a transport is there *and*
    // validates (its magic is written last, but a header from an older, different
    // run may still be there while the host rewrites it).
    let validates = |off: u64| {
        off < region.len()
            && Transport::open(
                Shm::new(&region.window(off, region.len() - off), &TRACER),
                noncoherent,
            )
            .is_ok()
    };
    if wait && explicit.is_none() && !found.is_some_and(validates) {
        let limit = opt_u64("wait-secs", 300) * 1_000_000_000;
        let t0 = wall_clock_ns();
        log::info!("serve: waiting for a host to format a CBD v3 transport (scanning every 2 MiB)");
        let mut console = crate::serial::LineReader::default();
        let mut told = false;
        while !found.is_some_and(validates) {
            if let Some(off) = found
                && !told
            {
                log::info!("serve: a transport at {off:#x} does not validate yet; waiting");
                told = true;
            }
            if wall_clock_ns() - t0 > limit || console.poll().as_deref() == Some("stop") {
                log::error!("serve: no valid CBD v3 transport appeared in the shared region");
                return ExitCode::NoCxl;
            }
            crate::arch::time::delay_us(100_000);
            found = find_transport(&region);
        }
    }
    let offset = explicit.or(found).unwrap_or(0);
    if offset >= region.len() {
        log::error!(
            "serve: transport offset {offset:#x} is outside the {:#x}-byte region",
            region.len()
        );
        return ExitCode::RegionTooSmall;
    }
    if !offset.is_multiple_of(8) {
        log::error!(
            "serve: transport offset {offset:#x} is not 8-aligned (its words would not be)"
        );
        return ExitCode::Failed;
    }
    let window = region.window(offset, region.len() - offset);
    let shm = Shm::new(&window, &TRACER);
    let now = wall_clock_ns();
    match found.or(explicit) {
        Some(_) if let Ok(tp) = Transport::open(shm, noncoherent) => {
            log::info!("serve: CBD v3 transport found at region offset {offset:#x}");
            let crcs = tflags::CHANNEL_CRC | tflags::CHANNEL_DATA_CRC;
            if noncoherent && tp.info.flags & crcs != crcs {
                log::warn!(
                    "serve: noncoherent=on, but this transport has no entry/payload CRCs: the non-coherent mode is not offered"
                );
            }
        }
        _ if wait => {
            log::error!("serve: the transport at {offset:#x} does not validate");
            return ExitCode::Failed;
        }
        _ => {
            log::info!(
                "serve: no transport at {offset:#x}; formatting {} MiB",
                window.len() >> 20
            );
            if let Err(e) = Transport::format(shm, format_flags(noncoherent), false, now) {
                log::error!("serve: cannot format the transport: {e:?}");
                return ExitCode::RegionTooSmall;
            }
        }
    }
    let mut cfg = BackendConfig {
        n_handlers: opt_u64("channels", 2) as u32,
        noncoherent,
        ..BackendConfig::default()
    };
    // Durability tokens (docs/durability.md): offered unless `tokens=off`; bounds in µs.
    cfg.durable.offer = fwcfg::option("tokens").as_deref() != Some("off");
    // After a crash, take over our own records at once instead of waiting 30 s.
    cfg.takeover = opt_on("takeover");
    cfg.durable.standard_bound_ns =
        opt_u64("standard-bound-us", cfg.durable.standard_bound_ns / 1000) * 1000;
    cfg.durable.ephemeral_bound_ns =
        opt_u64("ephemeral-bound-us", cfg.durable.ephemeral_bound_ns / 1000) * 1000;
    let Some(disks) = choose_disks() else {
        return ExitCode::Failed;
    };
    run(shm, cfg, disks)
}

/// Most disks (backends) one device exports.
const MAX_DISKS: usize = 4;

/// Backend paths, one per exported disk (the first is the single-disk default).
const PATHS: [&str; MAX_DISKS] = ["/dev/cbdfw0", "/dev/cbdfw1", "/dev/cbdfw2", "/dev/cbdfw3"];

/// One exported disk: a RAM disk or a virtio-blk disk of the VM.
// The virtio variant holds its queue inline; the disks live in a fixed array for the
// whole run and the kernel has no heap to box them on.
#[allow(clippy::large_enum_variant)]
pub enum Disk {
    Ram(SliceMedia<'static>),
    Virtio(crate::virtio::VirtioMedia),
}

impl Disk {
    fn describe(&self) -> &'static str {
        match self {
            Disk::Ram(_) => "RAM disk",
            Disk::Virtio(_) => "virtio-blk disk",
        }
    }
}

impl Media for Disk {
    fn size(&self) -> u64 {
        match self {
            Disk::Ram(m) => m.size(),
            Disk::Virtio(m) => m.size(),
        }
    }
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), MediaError> {
        match self {
            Disk::Ram(m) => m.read(offset, buf),
            Disk::Virtio(m) => m.read(offset, buf),
        }
    }
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), MediaError> {
        match self {
            Disk::Ram(m) => m.write(offset, data),
            Disk::Virtio(m) => m.write(offset, data),
        }
    }
    fn flush(&mut self) -> Result<(), MediaError> {
        match self {
            Disk::Ram(m) => m.flush(),
            Disk::Virtio(m) => m.flush(),
        }
    }
    fn write_zeroes(&mut self, offset: u64, len: u64) -> Result<(), MediaError> {
        match self {
            Disk::Ram(m) => m.write_zeroes(offset, len),
            Disk::Virtio(m) => m.write_zeroes(offset, len),
        }
    }
    fn discard(&mut self, offset: u64, len: u64) -> Result<(), MediaError> {
        match self {
            Disk::Ram(m) => m.discard(offset, len),
            Disk::Virtio(m) => m.discard(offset, len),
        }
    }
    fn volatile_bytes(&mut self) -> Option<&mut [u8]> {
        match self {
            Disk::Ram(m) => m.volatile_bytes(),
            Disk::Virtio(_) => None,
        }
    }
    fn can_start(&self) -> bool {
        match self {
            Disk::Ram(m) => m.can_start(),
            Disk::Virtio(m) => m.can_start(),
        }
    }
    fn start_write(&mut self, offset: u64, data: &[u8]) -> Result<Started, MediaError> {
        match self {
            Disk::Ram(m) => m.start_write(offset, data),
            Disk::Virtio(m) => m.start_write(offset, data),
        }
    }
    fn start_flush(&mut self) -> Result<Started, MediaError> {
        match self {
            Disk::Ram(m) => m.start_flush(),
            Disk::Virtio(m) => m.start_flush(),
        }
    }
    fn poll_done(&mut self) -> Option<(Ticket, Result<(), MediaError>)> {
        match self {
            Disk::Ram(m) => m.poll_done(),
            Disk::Virtio(m) => m.poll_done(),
        }
    }
    fn wait_done(&mut self) -> Option<(Ticket, Result<(), MediaError>)> {
        match self {
            Disk::Ram(m) => m.wait_done(),
            Disk::Virtio(m) => m.wait_done(),
        }
    }
}

fn ram_disk(mib: u64) -> Option<Disk> {
    match crate::memory::reserve(mib << 20) {
        Some(d) => Some(Disk::Ram(SliceMedia::volatile(d))),
        None => {
            log::error!("serve: cannot reserve a {mib} MiB RAM disk (give the VM more memory)");
            None
        }
    }
}

/// The disks to export. `disks=ram[:MIB],virtio,…` lists them (one backend each,
/// `virtio` entries take the VM's virtio-blk disks in bus order); without it one disk:
/// `media` (`auto`: the virtio-blk disk when there is one, else a RAM disk of `disk-mib`).
fn choose_disks() -> Option<heapless::Vec<Disk, MAX_DISKS>> {
    let mut out = heapless::Vec::new();
    let Some(list) = fwcfg::option("disks") else {
        let want = fwcfg::option("media");
        let virtio = match want.as_deref() {
            Some("ram") => None,
            _ => crate::virtio::find_blk(),
        };
        let disk = match (virtio, want.as_deref()) {
            (Some(v), _) => Disk::Virtio(v),
            (None, Some("virtio")) => {
                log::error!(
                    "serve: media=virtio asked for, but there is no usable virtio-blk disk"
                );
                return None;
            }
            (None, _) => ram_disk(opt_u64("disk-mib", 64))?,
        };
        let _ = out.push(disk);
        return Some(out);
    };
    let mut nth_virtio = 0;
    for item in list.split(',').map(str::trim) {
        let disk = match item.split_once(':') {
            None if item == "virtio" => {
                nth_virtio += 1;
                match crate::virtio::find_blk_nth(nth_virtio - 1) {
                    Some(v) => Disk::Virtio(v),
                    None => {
                        log::error!(
                            "serve: disks={list}: there is no virtio-blk disk number {nth_virtio}"
                        );
                        return None;
                    }
                }
            }
            None if item == "ram" => ram_disk(opt_u64("disk-mib", 64))?,
            Some(("ram", mib)) if let Ok(mib) = mib.parse() => ram_disk(mib)?,
            _ => {
                log::error!("serve: disks={list}: {item:?} is not ram, ram:MIB or virtio");
                return None;
            }
        };
        if out.push(disk).is_err() {
            log::error!("serve: disks={list}: at most {MAX_DISKS} disks");
            return None;
        }
    }
    if out.is_empty() {
        log::error!("serve: disks= lists no disk");
        return None;
    }
    Some(out)
}

type Engine<'a> = Backend<'a, SharedRegion, Disk>;

/// Start one backend engine per disk (backend paths `/dev/cbdfw0`, `/dev/cbdfw1`, …,
/// all under the device's one host record) and serve them all until stopped.
fn run<'a>(
    shm: Shm<'a, SharedRegion>,
    cfg: BackendConfig<'a>,
    disks: heapless::Vec<Disk, MAX_DISKS>,
) -> ExitCode {
    let several = disks.len() > 1;
    let mut engines: heapless::Vec<Option<Engine<'a>>, MAX_DISKS> = heapless::Vec::new();
    let staging_mib = opt_u64("staging-mib", 8);
    for (i, media) in disks.into_iter().enumerate() {
        let desc = media.describe();
        let ram = matches!(media, Disk::Ram(_));
        let size_mib = media.size() >> 20;
        let Some(scratch) = crate::memory::reserve(device::layout::chan::MAX_IO as u64) else {
            log::error!("serve: cannot reserve the bounce buffer");
            return ExitCode::Failed;
        };
        let cfg = BackendConfig {
            path: PATHS[i],
            join_host: i > 0,
            ..cfg
        };
        let mut backend = match Backend::start(shm, cfg, media, scratch, wall_clock_ns()) {
            Ok(b) => b,
            Err(e) => {
                log::error!("serve: backend-start of {} failed: {e:?}", PATHS[i]);
                return ExitCode::Failed;
            }
        };
        // Staging: writes complete once they are in device RAM; the engine writes them
        // back in order and flushes the media within the intent's bound. A RAM disk
        // is device RAM itself: written in place, nothing to stage.
        if staging_mib > 0 && !ram {
            match crate::memory::reserve(staging_mib << 20) {
                Some(buf) => {
                    if let Err(e) = backend.set_staging(buf) {
                        log::error!("serve: cannot install the staging buffer: {e:?}");
                        return ExitCode::Failed;
                    }
                }
                None => log::warn!(
                    "serve: no RAM for a {staging_mib} MiB staging buffer; writing through"
                ),
            }
        }
        // `write-back=sync`: the due write-back waits for the media in the serve loop
        // (the old behaviour, to compare against; default asynchronous).
        backend.set_async_write_back(fwcfg::option("write-back").as_deref() != Some("sync"));
        let chans: heapless::Vec<u32, 16> = backend.channel_segments().collect();
        log::info!(
            "serve: backend {} (host {}) ready: {desc} {size_mib} MiB, path {}, channel segments {:?}, features {:#x}; type 'stop' to stop",
            backend.backend_id,
            backend.host_id,
            PATHS[i],
            &chans[..],
            backend.features()
        );
        let _ = engines.push(Some(backend));
    }
    let serve_ns = opt_u64("serve-secs", 0) * 1_000_000_000;
    let started = wall_clock_ns();
    let mut last_summary = started;
    let mut console = crate::serial::LineReader::default();
    let mut stopping = false;
    // A peer's bad entry or pointer fails every poll until it is mended: at most four
    // lines a second per backend (a repeated error once), with the count held back.
    let mut poll_warn = [RateLimit::<BackendError>::new(1_000_000_000, 4); MAX_DISKS];
    // Idle policy: after `idle-after` empty polls, halt `idle-us` between polls (LAPIC
    // one-shot timer) so a quiet device gives its host CPU back; any work resets it.
    let idle_after = opt_u64("idle-after", 256).min(u32::MAX as u64) as u32;
    let idle_us = opt_u64("idle-us", 20);
    let can_idle = idle_us > 0 && crate::arch::apic::init().is_some();
    let mut empty_polls: u32 = 0;
    let mut stager: [Option<(u32, device::durable::StagerStats)>; MAX_DISKS] = [None; MAX_DISKS];
    loop {
        let now = wall_clock_ns();
        let mut busy = false;
        for (i, slot) in engines.iter_mut().enumerate() {
            let Some(backend) = slot else { continue };
            TRACER.mark(|p, t| p.begin_poll(t));
            let polled = backend.poll(now);
            TRACER.mark(|p, t| p.end_poll(t));
            match polled {
                Ok(st) => {
                    // A write-back in flight counts as work: its completions are
                    // collected by the next poll, not after an idle halt.
                    busy |= st.ses != 0 || st.resets != 0 || backend.write_back_in_flight();
                }
                // Per-channel problems (a stale entry, a bad pointer from the peer) are
                // logged by the engine; the channel is retried on the next poll. One
                // backend's trouble never stops the others from being polled.
                Err(e) => {
                    if let Some(held) = poll_warn[i].allow(e, now) {
                        log::warn!(
                            "serve: poll of backend {}: {e:?}{}",
                            backend.backend_id,
                            HeldBack(held)
                        );
                    }
                }
            }
        }
        if busy {
            empty_polls = 0;
        } else {
            empty_polls = empty_polls.saturating_add(1);
        }
        if let Some(line) = console.poll() {
            match line.as_str() {
                "stop" => stopping = true,
                "stats" => {
                    TRACER.summary("stats");
                    for b in engines.iter().flatten() {
                        log::info!(
                            "stats: backend {}: staging: {:?}",
                            b.backend_id,
                            b.stager_stats()
                        );
                    }
                }
                "profile" => TRACER.print_profile(),
                "profile reset" => TRACER.profile.reset(),
                "trace on" => TRACER.set_print(true),
                "trace off" => TRACER.set_print(false),
                other => {
                    log::warn!(
                        "console: unknown command {other:?} (stop, stats, profile [reset], trace on|off)"
                    )
                }
            }
        }
        if serve_ns != 0 && now - started >= serve_ns {
            stopping = true;
        }
        if now - last_summary >= 10_000_000_000 {
            TRACER.summary("serve");
            last_summary = now;
        }
        if stopping {
            for (i, slot) in engines.iter_mut().enumerate() {
                let Some(mut backend) = slot.take() else {
                    continue;
                };
                // Everything staged goes to the media before the backend record is cleared.
                if let Err(e) = backend.sync() {
                    log::error!("serve: final write-back failed: {e:?}");
                }
                stager[i] = Some((backend.backend_id, backend.stager_stats()));
                let id = backend.backend_id;
                if let Disk::Virtio(m) = backend.media() {
                    log::info!(
                        "serve: virtio media (backend {id}): {} writes, {} flushes, flush avg {} us, max {} us",
                        m.writes,
                        m.flushes,
                        m.flush_ns / m.flushes.max(1) / 1000,
                        m.flush_max_ns / 1000
                    );
                }
                match backend.stop(now) {
                    Ok(_) => {}
                    Err((b, BackendError::Busy)) => {
                        if now - last_summary >= 1_000_000_000 {
                            log::warn!(
                                "serve: a host blkdev still uses backend {}; waiting for it to stop",
                                b.backend_id
                            );
                            last_summary = now;
                        }
                        *slot = Some(b);
                    }
                    Err((_, e)) => {
                        log::error!("serve: stop failed: {e:?}");
                        return ExitCode::Failed;
                    }
                }
            }
            if engines.iter().all(Option::is_none) {
                break;
            }
        }
        if can_idle && empty_polls >= idle_after {
            crate::arch::apic::idle_us(idle_us);
            TRACER.mark(|p, t| p.end_idle(t));
        } else {
            core::hint::spin_loop();
        }
    }
    TRACER.summary("serve: stopped");
    if opt_on("profile") {
        TRACER.print_profile();
    }
    for (id, st) in stager.iter().flatten() {
        if several {
            log::info!("serve: staging (backend {id}): {st:?}");
        } else {
            log::info!("serve: staging: {st:?}");
        }
    }
    ExitCode::Success
}
