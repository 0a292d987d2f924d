//! Journal commit at QD1, durability tokens vs FUA on every commit (issue 6).
//!
//! `cargo run -p device --release --features std --bin journal-bench [-- secs N write_us flush_us]`
//!
//! Host and backend engines in two threads over one coherent shared region. A
//! transaction = N data block writes (4 KiB, STANDARD) then a commit record (4 KiB):
//! * **fua**: the commit is CRITICAL (= FUA): it completes only once durable, so
//!   every transaction pays a media flush;
//! * **tokens**: the commit is STANDARD; the host goes on and the device confirms
//!   durability asynchronously through the watermark (group commit at the 10 ms
//!   device bound). The run ends only once every commit is confirmed.
//!
//! The media is `native::CrashMedia` with a cost model: `write_us` per 4 KiB write,
//! `flush_us` per flush (defaults 20 µs and 1000 µs: a SATA/NVMe SSD without
//! power-loss protection; a virtio-blk image with fsync on the host is similar).

use device::backend::{Backend, BackendConfig};
use device::host::{Host, HostConfig, HostError, HostQueue, Intent, Request};
use device::layout::*;
use device::native::{CrashMedia, HeapMem, MediaCost};
use device::shm::{SharedMem, Shm};
use device::trace::NoTrace;
use device::transport::Transport;
use std::sync::atomic::{AtomicBool, Ordering::*};
use std::time::Instant;

const T0: u64 = 1_700_000_000_000_000_000;
const DISK: usize = 64 << 20;

fn now(start: Instant) -> u64 {
    T0 + start.elapsed().as_nanos() as u64
}

fn wait_one<M: SharedMem + ?Sized>(q: &mut HostQueue<'_, M>, buf: &mut [u8], start: Instant) {
    loop {
        match q.poll_at(buf, now(start)) {
            Ok(Some(c)) => {
                assert_eq!(c.result, 0, "request failed");
                return;
            }
            Ok(None) => std::hint::spin_loop(),
            Err(e) => panic!("poll: {e:?}"),
        }
    }
}

fn submit<M: SharedMem + ?Sized>(q: &mut HostQueue<'_, M>, req: Request, data: &[u8], i: Intent) {
    loop {
        match q.submit_intent(req, data, i) {
            Ok(_) => return,
            Err(HostError::Busy) => std::hint::spin_loop(),
            Err(e) => panic!("submit: {e:?}"),
        }
    }
}

struct Run {
    txns: u64,
    secs: f64,
}

fn journal<M: SharedMem + ?Sized>(
    q: &mut HostQueue<'_, M>,
    n: u64,
    secs: f64,
    tokens: bool,
    start: Instant,
) -> Run {
    let data = vec![0xA5u8; 4096];
    let mut buf = vec![0u8; 4096];
    let t = Instant::now();
    let mut txns = 0u64;
    let mut off = 0u64;
    let next = |off: &mut u64| {
        let o = *off;
        *off = (*off + 4096) % DISK as u64;
        o
    };
    while t.elapsed().as_secs_f64() < secs {
        for _ in 0..n {
            let r = Request {
                op: op::WRITE,
                offset: next(&mut off),
                len: 4096,
            };
            submit(q, r, &data, Intent::Standard);
            wait_one(q, &mut buf, start);
        }
        let commit = Request {
            op: op::WRITE,
            offset: next(&mut off),
            len: 4096,
        };
        let intent = if tokens {
            Intent::Standard
        } else {
            Intent::Critical
        };
        submit(q, commit, &data, intent);
        wait_one(q, &mut buf, start);
        if tokens {
            q.poll_durable(now(start)).unwrap();
        }
        txns += 1;
    }
    // Every commit must be durable before the run counts.
    while !q.all_completed_durable() {
        q.poll_durable(now(start)).unwrap();
        std::hint::spin_loop();
    }
    Run {
        txns,
        secs: t.elapsed().as_secs_f64(),
    }
}

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, d: f64| a.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let secs = arg(0, 3.0);
    let n = arg(1, 4.0) as u64;
    let cost = MediaCost {
        write_ns_per_4k: (arg(2, 20.0) * 1000.0) as u64,
        flush_ns: (arg(3, 1000.0) * 1000.0) as u64,
    };
    let mem = HeapMem::new((HOST_AREA_OFF + 2 * (3 * OBJ_SLOT + SEGMENT_SIZE)) as usize);
    let start = Instant::now();
    Transport::format(
        Shm::new(&mem, &NoTrace),
        tflags::MULTIHOST | tflags::CHANNEL_CRC | tflags::CHANNEL_DATA_CRC,
        false,
        T0,
    )
    .unwrap();
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
        assert!(
            q.durable_tokens(),
            "backend did not offer durability tokens"
        );
        let fua = journal(q, n, secs, false, start);
        let before = q.tokens;
        let tok = journal(q, n, secs, true, start);
        let ts = q.tokens;
        stop.store(true, Relaxed);
        let (st, flushes) = dev.join().unwrap();
        let (rf, rt) = (fua.txns as f64 / fua.secs, tok.txns as f64 / tok.secs);
        println!(
            "journal commit QD1, {n} data blocks + 1 commit (4 KiB), media write {} us/4K, flush {} us",
            cost.write_ns_per_4k / 1000,
            cost.flush_ns / 1000
        );
        println!(
            "fua:    {:>8.0} commits/s ({} in {:.2} s)",
            rf, fua.txns, fua.secs
        );
        println!(
            "tokens: {:>8.0} commits/s ({} in {:.2} s, all confirmed durable); confirmation latency mean {:.2} ms max {:.2} ms over {} tokens",
            rt,
            tok.txns,
            tok.secs,
            (ts.latency_sum_ns - before.latency_sum_ns) as f64
                / (ts.latency_samples - before.latency_samples).max(1) as f64
                / 1e6,
            ts.latency_max_ns as f64 / 1e6,
            ts.latency_samples - before.latency_samples
        );
        println!("ratio tokens/fua: {:.1}x", rt / rf);
        println!(
            "tokens issued {} confirmed {} lost {}; media flushes {} (device {:?})",
            ts.issued, ts.confirmed, ts.lost, flushes, st
        );
    });
}
