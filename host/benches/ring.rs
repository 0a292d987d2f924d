//! Ring benchmark: request rates through the full ring between two threads
//! (host engine ↔ backend engine over shared memory), 4 KiB and 128 KiB, in
//! coherent (CBD v3) and non-coherent mode, each next to its **copy bound**.
//!
//! `cargo bench -p host --bench ring [-- seconds]` (default 2 s per configuration);
//! `RING_BENCH_ONLY=coherent:128` (or `non-coherent:4`) runs one configuration alone,
//! e.g. under `perf record`; `RING_BENCH_MEDIA=ram|staged|through` picks the media
//! (default `ram`: volatile RAM, written in place; `staged`: 8 MiB staging in front of
//! media that stands for non-volatile storage; `through`: that media without staging).
//! The run ends with the three WRITE paths side by side, coherent, at 4 KiB, 128 KiB
//! and 1 MiB (each figure the best of three alternating runs).
//!
//! First it measures the shared-memory copies alone (`SharedMem::write`/`read` of
//! 1 MiB, aligned and at an odd offset, one thread), interleaved with a private
//! `memcpy` of the same size, each figure from its fastest run (so that a loaded
//! machine disturbs it least): the ratio to memcpy is the figure to compare.
//!
//! The copy bound of a configuration is the request rate at which the same two
//! threads can do only the copies the ring does, of the same request size, over the
//! same footprint, at the same time: the host thread copies its buffer into the data
//! area (WRITE) or out of it (READ), the device thread the data area to the media
//! (WRITE) or back (READ), alternating as the ring's requests alternate. The ring's
//! rate over that bound is what the ring's own work (entries, CRCs, polling, the
//! stager) costs; it is measured right before the ring in the same run.

use device::backend::{Backend, BackendConfig};
use device::layout::*;
use device::native::{HeapMem, VecMedia, now_ns};
use device::shm::{SharedMem, Shm};
use device::trace::NoTrace;
use device::transport::{Transport, format_flags};
use host::engine::{Host, HostConfig, HostError, Request};
use std::sync::atomic::{AtomicBool, Ordering::*};
use std::time::{Duration, Instant};

const DISK: usize = 256 << 20;

/// The backend's media and how WRITEs reach it.
#[derive(Clone, Copy, Debug, PartialEq)]
enum MediaKind {
    /// Volatile RAM (the kernel's RAM disk): payloads copied in place, no staging.
    Ram,
    /// Media that stands for non-volatile storage with 8 MiB of staging in front (the
    /// kernel's virtio-blk path): data area -> staging, later -> media.
    Staged,
    /// The same media without staging: data area -> scratch -> media.
    Through,
}

impl MediaKind {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ram" => Self::Ram,
            "staged" => Self::Staged,
            "through" => Self::Through,
            _ => return None,
        })
    }
}

/// Requests per second and payload bytes per second for one configuration.
fn ring(noncoherent: bool, size: u32, secs: f64, media: MediaKind) -> (f64, f64) {
    let flags = format_flags(noncoherent);
    let mem = HeapMem::new(TransportInfo::region_for(2) as usize);
    Transport::format(Shm::new(&mem, &NoTrace), flags, false, now_ns()).unwrap();
    let stop = AtomicBool::new(false);
    let started = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut scratch = vec![0u8; chan::MAX_IO as usize];
            let mut staging = vec![0u8; 8 << 20];
            let cfg = BackendConfig {
                noncoherent,
                ..BackendConfig::default()
            };
            let mut disk = match media {
                MediaKind::Ram => VecMedia::volatile(DISK),
                MediaKind::Staged | MediaKind::Through => VecMedia::new(DISK),
            };
            // Touched before the clock starts: no first-write page faults in the figures.
            disk.data.fill(0x3C);
            let shm = Shm::new(&mem, &NoTrace);
            let mut b = Backend::start(shm, cfg, disk, &mut scratch, now_ns()).unwrap();
            if media == MediaKind::Staged {
                b.set_staging(&mut staging).unwrap();
            }
            started.store(true, SeqCst);
            while !stop.load(Relaxed) {
                b.poll(now_ns()).unwrap();
            }
        });
        while !started.load(SeqCst) {
            std::hint::spin_loop();
        }
        let hc = HostConfig {
            hostname: "bench",
            noncoherent,
            ..HostConfig::default()
        };
        let host = Host::register(Shm::new(&mem, &NoTrace), hc, now_ns()).unwrap();
        let bid = host.find_backend(now_ns()).unwrap();
        let mut dev = host.dev_start(bid, 1, now_ns()).unwrap();
        while !dev.poll_ready(now_ns()).unwrap() {}
        let q = &mut dev.queues[0];
        let payload = vec![0x5Au8; size as usize];
        let mut buf = vec![0u8; chan::MAX_IO as usize];
        let span = (DISK as u64 / size as u64).max(1);
        let (mut n, mut i) = (0u64, 0u64);
        let t = Instant::now();
        let deadline = Duration::from_secs_f64(secs);
        while t.elapsed() < deadline {
            loop {
                let op = if i % 2 == 0 { op::WRITE } else { op::READ };
                let req = Request {
                    op,
                    offset: (i % span) * size as u64,
                    len: size,
                };
                match q.submit(req, &payload) {
                    Ok(_) => i += 1,
                    Err(HostError::Busy) => break,
                    Err(e) => panic!("{e:?}"),
                }
            }
            // Every CE the head shows, in one poll, until a poll finds none.
            let mut took = |c: &host::engine::Completion, _: &[u8]| {
                assert_eq!(c.result, 0);
                n += 1;
            };
            while q.poll_batch(&mut buf, &mut took).unwrap() > 0 {}
        }
        let el = t.elapsed().as_secs_f64();
        stop.store(true, SeqCst);
        (n as f64 / el, n as f64 * size as f64 / el)
    })
}

/// The copy bound: requests per second at which two threads (host, device) can do
/// just the ring's payload copies for `size`-byte requests, concurrently, over the
/// data area of one channel and the whole media, WRITE and READ alternating; the
/// slower thread sets the rate.
fn copy_bound(size: u32, secs: f64) -> f64 {
    let mem = HeapMem::new(TransportInfo::region_for(2) as usize);
    let area = chan::DATA_SIZE;
    let slots = (area / size as u64).max(1);
    let span = (DISK as u64 / size as u64).max(1);
    let stop = AtomicBool::new(false);
    let go = std::sync::Barrier::new(3);
    // Each thread's buffers are ready (and touched) before the clock starts.
    let run = |host_side: bool| {
        let mut media = if host_side {
            Vec::new()
        } else {
            vec![0x3Cu8; DISK]
        };
        let mut buf = vec![0x5Au8; size as usize];
        go.wait();
        let mut i = 0u64;
        let t = Instant::now();
        while !stop.load(Relaxed) {
            let data = chan::DATA_OFF + (i % slots) * size as u64;
            let m = ((i % span) * size as u64) as usize;
            let m = m..m + size as usize;
            match (host_side, i.is_multiple_of(2)) {
                (true, true) => mem.write(data, &buf),
                (true, false) => mem.read(data, &mut buf),
                (false, true) => mem.read(data, &mut media[m]),
                (false, false) => mem.write(data, &media[m]),
            }
            i += 1;
        }
        std::hint::black_box((&buf, &media));
        i as f64 / t.elapsed().as_secs_f64()
    };
    let (h, d) = std::thread::scope(|s| {
        let h = s.spawn(|| run(true));
        let d = s.spawn(|| run(false));
        go.wait();
        std::thread::sleep(Duration::from_secs_f64(secs));
        stop.store(true, SeqCst);
        (h.join().unwrap(), d.join().unwrap())
    });
    h.min(d)
}

fn memcpy_bw(secs: f64) -> f64 {
    let src = vec![1u8; 64 << 20];
    let mut dst = vec![0u8; 64 << 20];
    let t = Instant::now();
    let mut bytes = 0f64;
    while t.elapsed().as_secs_f64() < secs {
        dst.copy_from_slice(std::hint::black_box(&src));
        bytes += src.len() as f64;
    }
    std::hint::black_box(&dst);
    bytes / t.elapsed().as_secs_f64()
}

/// Bandwidth of `SharedMem::write` and `read` of 1 MiB at `off` (0 = aligned) and of a
/// private memcpy of the same size, measured in alternation: (write, read, memcpy) B/s,
/// each from the fastest of its runs (the least disturbed by a loaded machine).
fn shared_copy_bw(off: u64, secs: f64) -> (f64, f64, f64) {
    const N: usize = 1 << 20;
    let mem = HeapMem::new(2 * N);
    let src = vec![0xA5u8; N];
    let mut dst = vec![0u8; N];
    let mut private = vec![0u8; N];
    let mut best = [f64::MAX; 3];
    let t = Instant::now();
    while t.elapsed().as_secs_f64() < secs {
        let a = Instant::now();
        mem.write(off, std::hint::black_box(&src));
        let b = Instant::now();
        mem.read(off, std::hint::black_box(&mut dst));
        let c = Instant::now();
        private.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&private);
        let d = Instant::now();
        for (m, x) in best.iter_mut().zip([b - a, c - b, d - c]) {
            *m = m.min(x.as_secs_f64());
        }
    }
    assert_eq!(dst, src);
    let n = N as f64;
    (n / best[0], n / best[1], n / best[2])
}

fn main() {
    // `cargo bench` appends `--bench` after the user's arguments.
    let secs: f64 = std::env::args()
        .skip(1)
        .find(|a| a != "--bench")
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let gib = |b: f64| b / (1u64 << 30) as f64;
    let media = match std::env::var("RING_BENCH_MEDIA") {
        Err(_) => MediaKind::Ram,
        Ok(m) => MediaKind::parse(&m).unwrap_or_else(|| {
            eprintln!("RING_BENCH_MEDIA={m}: expected ram, staged or through");
            std::process::exit(2);
        }),
    };
    if let Ok(only) = std::env::var("RING_BENCH_ONLY") {
        let parsed = only.split_once(':').and_then(|(m, k)| {
            let nc = match m {
                "coherent" => false,
                "non-coherent" => true,
                _ => return None,
            };
            Some((nc, k.parse::<u32>().ok()? << 10))
        });
        let Some((nc, size)) = parsed.filter(|&(_, s)| s > 0 && s <= chan::MAX_IO) else {
            eprintln!("RING_BENCH_ONLY={only}: expected coherent:KIB or non-coherent:KIB");
            std::process::exit(2);
        };
        let (r, bw) = ring(nc, size, secs, media);
        println!("{only} ({media:?}): {r:.0} req/s, {:.2} GiB/s", gib(bw));
        return;
    }
    for (what, off) in [("aligned", 0u64), ("offset 3", 3)] {
        let (w, r, m) = shared_copy_bw(off, secs / 2.0);
        println!(
            "shared copy 1 MiB {what:<8}: write {:.2} GiB/s ({:.0}% of memcpy), read {:.2} GiB/s ({:.0}%), memcpy {:.2} GiB/s",
            gib(w),
            100.0 * w / m,
            gib(r),
            100.0 * r / m,
            gib(m)
        );
    }
    let mc = memcpy_bw(secs);
    println!("memcpy (64 MiB buffers, one thread): {:.2} GiB/s", gib(mc));
    println!(
        "{:<14} {:>8} {:>12} {:>10} {:>14} {:>9}",
        "mode", "size", "req/s", "GiB/s", "bound req/s", "of bound"
    );
    let mut rates = Vec::new();
    let mut of_bound = Vec::new();
    for nc in [false, true] {
        for size in [4096u32, 128 << 10] {
            let bound = copy_bound(size, secs);
            let (r, bw) = ring(nc, size, secs, media);
            let mode = if nc { "non-coherent" } else { "coherent(v3)" };
            println!(
                "{:<14} {:>7}K {:>12.0} {:>10.2} {:>14.0} {:>8.1}%",
                mode,
                size / 1024,
                r,
                gib(bw),
                bound,
                100.0 * r / bound
            );
            rates.push(r);
            of_bound.push(r / bound);
        }
    }
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    for (k, size) in ["4K", "128K"].iter().enumerate() {
        let nc = rates[2 + k] / rates[k];
        println!(
            "target non-coherent >= 0.5x coherent at {size}: {nc:.2}x  {}",
            verdict(nc >= 0.5)
        );
        println!(
            "target coherent >= 0.8x its copy bound at {size}: {:.2}x  {}",
            of_bound[k],
            verdict(of_bound[k] >= 0.8)
        );
    }
    println!(
        "(non-coherent adds entry+payload CRCs and line write-back/invalidate calls; on this coherent heap the line calls are no-ops)"
    );
    write_paths(secs);
}

/// The WRITE paths side by side (coherent, same run, alternating so that a change in
/// the machine's load hits all three): RAM media in place, staged, written through;
/// each figure the best of three rounds.
fn write_paths(secs: f64) {
    println!("WRITE paths (coherent, 50 % reads, media {DISK} B):");
    println!(
        "{:>8} {:>12} {:>12} {:>12} {:>10} {:>10}",
        "size", "ram req/s", "staged", "through", "ram/staged", "ram/thru"
    );
    for size in [4096u32, 128 << 10, 1 << 20] {
        let mut best = [0f64; 3];
        for _ in 0..3 {
            for (k, m) in [MediaKind::Ram, MediaKind::Staged, MediaKind::Through]
                .into_iter()
                .enumerate()
            {
                best[k] = best[k].max(ring(false, size, secs / 2.0, m).0);
            }
        }
        println!(
            "{:>7}K {:>12.0} {:>12.0} {:>12.0} {:>9.2}x {:>9.2}x",
            size / 1024,
            best[0],
            best[1],
            best[2],
            best[0] / best[1],
            best[0] / best[2]
        );
    }
}
