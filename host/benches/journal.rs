//! Journal commit at QD1, durability tokens vs FUA on every commit.
//!
//! `cargo bench -p host --bench journal [-- secs N write_us flush_us]` (defaults 3 s, 4 blocks,
//! 20 µs, 1000 µs)
//!
//! Host and backend engines in two threads over one coherent shared region; the
//! workload (N STANDARD data blocks + a commit record, CRITICAL for "fua", STANDARD
//! plus the durability watermark for "tokens") is `host::journal`. The same workload
//! runs against the device kernel in QEMU with `cargo run -- bench journal`.
//!
//! The media is `native::CrashMedia` with a cost model: `write_us` per 4 KiB write,
//! `flush_us` per flush (defaults 20 µs and 1000 µs: a SATA/NVMe SSD without
//! power-loss protection; a virtio-blk image with fsync on the host is similar).

use device::backend::{Backend, BackendConfig};
use device::layout::*;
use device::native::{CrashMedia, HeapMem, MediaCost};
use device::shm::Shm;
use device::trace::NoTrace;
use device::transport::{Transport, format_flags};
use host::engine::{Host, HostConfig};
use host::journal::{self, Journal};
use std::sync::atomic::{AtomicBool, Ordering::*};
use std::time::{Duration, Instant};

const T0: u64 = 1_700_000_000_000_000_000;
const DISK: usize = 64 << 20;

fn now(start: Instant) -> u64 {
    T0 + start.elapsed().as_nanos() as u64
}

fn main() {
    // `cargo bench` appends `--bench` after the user's arguments.
    let a: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let arg = |i: usize, d: f64| a.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let secs = arg(0, 3.0);
    let n = arg(1, 4.0) as u64;
    let cost = MediaCost {
        write_ns_per_4k: (arg(2, 20.0) * 1000.0) as u64,
        flush_ns: (arg(3, 1000.0) * 1000.0) as u64,
    };
    let mem = HeapMem::new(TransportInfo::region_for(2) as usize);
    let start = Instant::now();
    Transport::format(Shm::new(&mem, &NoTrace), format_flags(true), false, T0).unwrap();
    let stop = AtomicBool::new(false);
    let started = AtomicBool::new(false);
    std::thread::scope(|s| {
        let (mem, stop, started_ref) = (&mem, &stop, &started);
        let dev = s.spawn(move || {
            let mut scratch = vec![0u8; chan::MAX_IO as usize];
            let mut staging = vec![0u8; 4 << 20];
            let mut media = CrashMedia::new(DISK, 1);
            media.cost = cost;
            let shm = Shm::new(mem, &NoTrace);
            let mut b = Backend::start(
                shm,
                BackendConfig::default(),
                media,
                &mut scratch,
                now(start),
            )
            .unwrap();
            b.set_staging(&mut staging).unwrap();
            started_ref.store(true, SeqCst);
            while !stop.load(Relaxed) {
                b.poll(now(start)).unwrap();
            }
            (b.stager_stats(), b.media().flushes)
        });
        // Slot allocation has no lock: register only once the backend is up.
        while !started.load(SeqCst) {
            assert!(!dev.is_finished(), "backend thread ended");
            std::thread::yield_now();
        }
        let shm = Shm::new(mem, &NoTrace);
        let host = Host::register(shm, HostConfig::default(), now(start)).unwrap();
        let bid = loop {
            if let Ok(id) = host.find_backend(now(start)) {
                break id;
            }
        };
        let mut blk = host.dev_start(bid, 1, now(start)).unwrap();
        while !blk.poll_ready(now(start)).unwrap() {}
        let q = &mut blk.queues[0];
        let j = Journal {
            blocks: n,
            secs,
            span: DISK as u64,
            stall: Duration::from_secs(30),
        };
        let result = journal::compare(q, &j, &|| now(start));
        let ts = q.tokens;
        stop.store(true, Relaxed);
        let (st, flushes) = dev.join().unwrap();
        let c = match result {
            Ok(c) => c,
            Err(e) => {
                eprintln!("journal bench: {e}");
                std::process::exit(1);
            }
        };
        println!(
            "simulated media: write {} us per 4 KiB, flush {} us (native engines, two threads)",
            cost.write_ns_per_4k / 1000,
            cost.flush_ns / 1000
        );
        println!("{}", c.report(&j));
        println!(
            "tokens issued {} confirmed {} lost {}; media flushes {} (device {:?})",
            ts.issued, ts.confirmed, ts.lost, flushes, st
        );
    });
}
