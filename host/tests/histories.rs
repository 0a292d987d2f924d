//! Recorded histories of native runs, checked against the consistency model
//! (`docs/consistency.md`) by the `history` crate.
//!
//! Host and backend engines run in one thread with their steps interleaved by a
//! seeded schedule, on coherent memory or on the adversarial non-coherent memory,
//! over a media that loses what was not flushed (`native::CrashMedia`). The workload
//! overlaps on purpose: two channels write the same blocks concurrently, reads race
//! writes, requests are 512 B to 1 MiB, FLUSHes are mixed in and durability tokens are
//! on. Every request is recorded (invoked before its submission could take effect,
//! completed after its CE was seen), with the DURABLE flags and the watermarks the host
//! saw; a backend crash records the media read back, then the backend re-attaches.
//! The checker must accept every history; with a broken-device switch
//! (`backend::Sabotage`) on, it must reject it and name the rule.

mod common;
use common::{Memory, Rng};
use device::backend::{Backend, BackendConfig, Sabotage};
use device::durable::DurableConfig;
use device::layout::*;
use device::native::{CrashMedia, HeapMem};
use device::shm::Shm;
use device::trace::NoTrace;
use device::transport::{Transport, format_flags};
use history::{CheckError, Header, OpId, Recorder, Rule};
use host::engine::{Host, HostConfig, HostError, Request};
use host::harness::recorded::{self, Quiet, Sides, Workload, kind};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

const DISK: usize = 2 << 20;
/// Most requests land here, so they overlap.
const HOT: u64 = 64 << 10;
use host::harness::T0;
const SEC: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;
const FLAGS: u16 = format_flags(true);

fn bcfg(nc: bool, sabotage: Sabotage) -> BackendConfig<'static> {
    BackendConfig {
        n_handlers: 2,
        noncoherent: nc,
        batch: 8,
        nc_retries: 256,
        durable: DurableConfig {
            offer: true,
            standard_bound_ns: 100 * MS,
            ephemeral_bound_ns: 200 * MS,
        },
        sabotage,
        ..BackendConfig::default()
    }
}

/// Formatted transport + provisioned backend, built once per mode.
fn base(nc: bool) -> Arc<Vec<u8>> {
    static B: [OnceLock<Arc<Vec<u8>>>; 2] = [OnceLock::new(), OnceLock::new()];
    B[nc as usize]
        .get_or_init(|| {
            let mem = HeapMem::new(TransportInfo::region_for(2) as usize);
            let shm = Shm::new(&mem, &NoTrace);
            Transport::format(shm, FLAGS, false, T0).unwrap();
            let mut scratch = vec![0u8; chan::MAX_IO as usize];
            let b = Backend::start(
                shm,
                bcfg(nc, Sabotage::NONE),
                CrashMedia::new(DISK, 0),
                &mut scratch,
                T0,
            )
            .unwrap();
            drop(b);
            Arc::new(mem.to_vec())
        })
        .clone()
}

/// One schedule's setting.
#[derive(Clone, Copy, Debug)]
struct Run {
    seed: u64,
    nc: bool,
    /// Requests submitted in all.
    total: u64,
    queue_depth: usize,
    /// Crash the backend (and re-attach) after this many submissions.
    crash_at: Option<u64>,
    sabotage: Sabotage,
}

/// A random request: mostly inside the hot region (overlapping), sometimes large.
fn random_request(r: &mut Rng, payload: &mut Vec<u8>) -> Request {
    let k = r.below(100);
    if k < 6 {
        return Request {
            op: op::FLUSH,
            offset: 0,
            len: 0,
        };
    }
    let len = common::random_len(r, chan::MAX_IO);
    let span = if len as u64 <= HOT / 2 && !r.chance(100) {
        HOT
    } else {
        DISK as u64
    };
    let off = r.below((span - len as u64) / 512 + 1) * 512;
    let opc = if k < 56 { op::WRITE } else { op::READ };
    if opc == op::WRITE {
        payload.resize(len as usize, 0);
        r.fill(payload);
    }
    Request {
        op: opc,
        offset: off,
        len,
    }
}

/// The hot region read back in 16 KiB READs, alternating between the two channels.
fn read_back() -> Vec<(usize, Request)> {
    let chunk = 16 << 10;
    (0..HOT / chunk)
        .map(|k| {
            let req = Request {
                op: op::READ,
                offset: k * chunk,
                len: chunk as u32,
            };
            ((k % 2) as usize, req)
        })
        .collect()
}

/// Run one schedule and return its recorded history (or a harness failure).
fn schedule(run: Run) -> Result<history::History, String> {
    let mut r = Rng(run.seed.wrapping_mul(0x2545F4914F6CDD1D) ^ 0x415);
    let nc = run.nc;
    let mem = Memory::new(nc, base(nc), &mut r);
    let views = mem.views();
    let crash = || mem.crash_device();
    let sides = Sides {
        dshm: Shm::new(views.device(), &NoTrace),
        hshm: Shm::new(views.host(), &NoTrace),
        crash_device: &crash,
    };
    let media = CrashMedia::new(DISK, r.next());
    let hc = HostConfig {
        hostname: "hostA",
        noncoherent: nc,
        queue_depth: run.queue_depth,
        nc_retries: 256,
        durable_tokens: true,
        ..HostConfig::default()
    };
    let w = Workload {
        requests: run.total,
        max_steps: 2_000_000,
        crash_at: run.crash_at,
        finals: read_back(),
        request: &random_request,
    };
    let cfg = bcfg(nc, run.sabotage);
    let rec = recorded::run(&mut r, &sides, cfg, hc, media, w, &Quiet)?;
    if let Some(v) = mem
        .adversary()
        .and_then(|a| a.violations().first().cloned())
    {
        return Err(format!("adversary: {v}"));
    }
    Ok(rec.history)
}

/// Run and check; Err = the checker's rejection (harness failures panic).
fn checked(run: Run) -> Result<history::Summary, CheckError> {
    let h = schedule(run).unwrap_or_else(|e| panic!("{run:?}: {e}"));
    history::check(&h)
}

fn accepted(run: Run) {
    match checked(run) {
        Ok(s) => eprintln!("{run:?}: accepted, {s:?}"),
        Err(e) => panic!("{run:?}: legal history rejected: {e}"),
    }
}

fn run(seed: u64, nc: bool) -> Run {
    Run {
        seed,
        nc,
        total: 300,
        queue_depth: if nc { 16 } else { 64 },
        crash_at: None,
        sabotage: Sabotage::NONE,
    }
}

#[test]
fn coherent_overlapping_histories_pass() {
    for seed in 0..4 {
        accepted(run(seed, false));
    }
}

#[test]
fn adversarial_overlapping_histories_pass() {
    for seed in 0..6 {
        accepted(run(seed, true));
    }
}

#[test]
fn crash_and_reattach_histories_pass() {
    for seed in 0..4 {
        for nc in [false, true] {
            accepted(Run {
                crash_at: Some(150),
                ..run(seed, nc)
            });
        }
    }
}

/// With `sab` on, every seed's history is rejected and names `rule`; with it off
/// the same schedules are accepted.
fn rejected(
    base: impl Fn(u64) -> Run,
    sab: Sabotage,
    rule: Rule,
    seeds: impl IntoIterator<Item = u64>,
) {
    let (mut caught, mut n) = (0, 0);
    for seed in seeds {
        n += 1;
        accepted(base(seed));
        match checked(Run {
            sabotage: sab,
            ..base(seed)
        }) {
            Ok(s) => eprintln!("seed {seed}: broken device not caught ({s:?})"),
            Err(CheckError::Violation(v)) => {
                eprintln!("seed {seed}: counter-example:\n{v}");
                assert_eq!(v.rule, rule, "wrong rule: {v}");
                caught += 1;
            }
            Err(e) => panic!("seed {seed}: {e}"),
        }
    }
    assert_eq!(
        caught, n,
        "the broken device was not caught in every schedule"
    );
}

#[test]
fn checker_catches_swapped_completions() {
    let sab = Sabotage {
        swap_completions: true,
        ..Sabotage::NONE
    };
    rejected(|s| run(s, false), sab, Rule::ChannelOrder, 0..2);
}

#[test]
fn checker_catches_early_durable_watermark() {
    let sab = Sabotage {
        early_watermark: true,
        ..Sabotage::NONE
    };
    rejected(
        |s| Run {
            crash_at: Some(150),
            ..run(s, false)
        },
        sab,
        Rule::LostDurable,
        0..3,
    );
}

/// Coherent memory, host and backend in two threads over one mmap'd file: the
/// recorder's logical clock orders what each thread saw, invocations are stamped
/// before the submission (with the tid the queue hands out next) and completions
/// after the CE was consumed.
#[test]
fn two_threads_overlapping_history_passes() {
    use device::native::{MmapMem, VecMedia};
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
    const TOTAL: u64 = 3000;
    let dir = tempfile::tempdir().unwrap();
    let mem = MmapMem::create(&dir.path().join("transport"), TransportInfo::region_for(2)).unwrap();
    Transport::format(Shm::new(&mem, &NoTrace), FLAGS, false, T0).unwrap();
    let clock = AtomicU64::new(T0);
    let stop = AtomicBool::new(false);
    let started = AtomicBool::new(false);
    struct StopOnDrop<'a>(&'a AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, SeqCst);
        }
    }
    let rec = Recorder::new(Header::default());
    std::thread::scope(|s| {
        let _guard = StopOnDrop(&stop);
        let backend = s.spawn(|| {
            let mut scratch = vec![0u8; chan::MAX_IO as usize];
            let shm = Shm::new(&mem, &NoTrace);
            let mut b = Backend::start(
                shm,
                bcfg(false, Sabotage::NONE),
                VecMedia::new(DISK),
                &mut scratch,
                clock.load(SeqCst),
            )
            .expect("backend start");
            started.store(true, SeqCst);
            while !stop.load(SeqCst) {
                b.poll(clock.load(SeqCst)).expect("backend poll");
            }
        });
        // Management steps are serialized (docs/protocol.md): wait for the backend.
        while !started.load(SeqCst) {
            assert!(!backend.is_finished(), "backend thread ended");
            std::thread::yield_now();
        }
        let hc = HostConfig {
            hostname: "hostA",
            queue_depth: 64,
            durable_tokens: true,
            ..HostConfig::default()
        };
        let host = Host::register(Shm::new(&mem, &NoTrace), hc, T0).unwrap();
        let bid = loop {
            match host.find_backend(clock.load(SeqCst)) {
                Ok(id) => break id,
                Err(_) => std::thread::yield_now(),
            }
        };
        let mut dev = host.dev_start(bid, 2, clock.load(SeqCst)).unwrap();
        while !dev.poll_ready(clock.load(SeqCst)).unwrap() {
            std::thread::yield_now();
        }
        let mut r = Rng(0x4157);
        let mut read_buf = vec![0u8; chan::MAX_IO as usize];
        let mut payload = Vec::new();
        // The tid each queue hands out next, learnt from one unrecorded READ (a
        // read changes nothing, so leaving it out of the history is sound).
        let mut next_tid = [0u64; 2];
        for (qi, q) in dev.queues.iter_mut().enumerate() {
            let req = Request {
                op: op::READ,
                offset: 0,
                len: 512,
            };
            next_tid[qi] = q.submit(req, &[]).unwrap() + 1;
            while q.poll(&mut read_buf).unwrap().is_none() {
                std::thread::yield_now();
            }
        }
        // A request invoked but refused (Busy) is retried before anything else on
        // its queue, so its recorded tid stays right.
        let mut pending: [Option<(Request, Vec<u8>, OpId)>; 2] = [None, None];
        let mut inflight: HashMap<(usize, u64), OpId> = HashMap::new();
        let mut watermark = [0u64; 2];
        let (mut submitted, mut idle) = (0u64, 0u64);
        while submitted < TOTAL || !inflight.is_empty() || pending.iter().any(Option::is_some) {
            let now = clock.fetch_add(200_000, SeqCst);
            assert!(!backend.is_finished(), "backend thread ended early");
            idle += 1;
            assert!(idle < 20_000_000, "no progress: {submitted}/{TOTAL}");
            dev.heartbeat(now).unwrap();
            let qi = r.below(2) as usize;
            if pending[qi].is_none() && submitted < TOTAL {
                let req = random_request(&mut r, &mut payload);
                let data = if req.op == op::WRITE {
                    payload.clone()
                } else {
                    Vec::new()
                };
                let d = (req.op == op::WRITE).then_some(&data[..]);
                let id = rec.invoke(
                    qi as u16,
                    next_tid[qi],
                    kind(req.op),
                    req.offset,
                    req.len,
                    d,
                );
                pending[qi] = Some((req, data, id));
                submitted += 1;
            }
            if let Some((req, data, id)) = pending[qi].take() {
                match dev.queues[qi].submit(req, &data) {
                    Ok(tid) => {
                        assert_eq!(tid, next_tid[qi], "the recorded tid");
                        next_tid[qi] += 1;
                        inflight.insert((qi, tid), id);
                    }
                    Err(HostError::Busy) => pending[qi] = Some((req, data, id)),
                    Err(e) => panic!("submit: {e:?}"),
                }
            }
            for (qi, q) in dev.queues.iter_mut().enumerate() {
                while let Some(c) = q.poll_at(&mut read_buf, now).unwrap() {
                    let id = inflight.remove(&(qi, c.req_tid)).expect("known completion");
                    recorded::complete(&rec, id, &c, &read_buf);
                    idle = 0;
                }
                let up = q.poll_durable(now).unwrap();
                if up.watermark > watermark[qi] {
                    watermark[qi] = up.watermark;
                    rec.watermark(qi as u16, up.watermark);
                }
            }
        }
        stop.store(true, SeqCst);
        backend.join().unwrap();
        dev.stop().unwrap();
    });
    let h = rec.into_history();
    match history::check(&h) {
        Ok(s) => eprintln!("two threads: accepted, {s:?}"),
        Err(e) => panic!("two threads: legal history rejected: {e}"),
    }
}

#[test]
fn checker_catches_torn_blocks() {
    let sab = Sabotage {
        torn_block: true,
        ..Sabotage::NONE
    };
    // Seeds whose tear a single read (or the final read-back) shows. In seed 0 the
    // torn block is read only in pieces, before and after (the checker sees a channel
    // whose write did not take effect on part of the block: `channel-order`); in seed 3
    // every torn block is overwritten before any read.
    rejected(|s| run(s, false), sab, Rule::TornBlock, [1, 2, 4, 5]);
}

/// `cbd-host --history` natively: `CbdDisk` (the ublk side of cbd-host) records its
/// history while two queue threads start batches of overlapping requests (writes, reads,
/// token flushes) against the backend engine polling in a third thread; mid-run the
/// backend dies (staged writes lost) and re-attaches. No request fails (the host replays
/// what was lost); the history must show the crash point (new incarnation) and be accepted.
#[test]
fn cbd_disk_history_across_a_backend_restart_passes() {
    use device::layout::TransportInfo;
    use host::linux::attach::{CbdOptions, now_ns};
    use host::linux::cbd_disk::{CbdDisk, HistoryLog, history_header};
    use host::linux::disk::{Disk, Op, Req};
    use host::linux::mem::MappedMem;
    use std::io::Write;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU8, Ordering::SeqCst};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let len = TransportInfo::region_for(2);
    let file = tempfile::tempfile().unwrap();
    file.set_len(len).unwrap();
    let backend_mem = MappedMem::map(file.try_clone().unwrap(), 0, len as usize).unwrap();
    let host_mem: &'static MappedMem =
        Box::leak(Box::new(MappedMem::map(file, 0, len as usize).unwrap()));
    let shm = Shm::new(&backend_mem, &NoTrace);
    Transport::format(shm, FLAGS, false, now_ns()).unwrap();
    let mut scratch = vec![0u8; chan::MAX_IO as usize];
    let mut staging = vec![0u8; 1 << 20];
    // Writes stay staged (not durable) for a second unless flushed: the crash loses some.
    let cfg = BackendConfig {
        takeover: true,
        durable: DurableConfig {
            offer: true,
            standard_bound_ns: 2 * SEC,
            ephemeral_bound_ns: 2 * SEC,
        },
        ..bcfg(false, Sabotage::NONE)
    };
    let mut backend = Backend::start(shm, cfg, CrashMedia::new(DISK, 7), &mut scratch, now_ns())
        .expect("backend start");
    backend.set_staging(&mut staging).unwrap();
    let out = Buf::default();
    let log = Arc::new(HistoryLog::new(Box::new(out.clone()), history_header()).unwrap());
    // 0 run, 1 crash requested, 2 re-attached, 3 stop.
    let phase = AtomicU8::new(0);
    std::thread::scope(|s| {
        let poller = s.spawn(|| {
            let mut b = Some(backend);
            loop {
                match phase.load(SeqCst) {
                    3 => break,
                    1 => {
                        let (mut m, sc, stg) = b.take().unwrap().into_parts_staged();
                        let _ = m.crash();
                        let mut nb = Backend::start(shm, cfg, m, sc, now_ns()).expect("re-attach");
                        nb.set_staging(stg).unwrap();
                        b = Some(nb);
                        phase.store(2, SeqCst);
                    }
                    _ => {}
                }
                b.as_mut().unwrap().poll(now_ns()).expect("backend poll");
                std::thread::yield_now();
            }
        });
        struct StopOnDrop<'a>(&'a AtomicU8);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(3, SeqCst);
            }
        }
        let _stop = StopOnDrop(&phase);
        let opts = CbdOptions {
            queues: 2,
            depth: 32,
            ..CbdOptions::new("histdisk")
        };
        let disk =
            CbdDisk::start_recording(host_mem, &opts, Arc::new(now_ns), Some(log.clone())).unwrap();
        assert!(disk.durable_tokens());
        let (disk, phase, poller) = (&disk, &phase, &poller);
        std::thread::scope(|t| {
            for qi in 0..2u16 {
                t.spawn(move || {
                    let mut q = disk.queue(qi).unwrap();
                    let mut r = Rng(0x5eed ^ qi as u64);
                    for round in 0..60 {
                        if qi == 0 && round == 30 {
                            phase.store(1, SeqCst);
                            while phase.load(SeqCst) == 1 {
                                assert!(!poller.is_finished(), "the backend thread died");
                                std::thread::yield_now();
                            }
                        }
                        let n = 1 + r.below(16) as usize;
                        let mut bufs: Vec<Vec<u8>> = Vec::new();
                        let mut reqs = Vec::new();
                        for _ in 0..n {
                            let k = r.below(100);
                            let len = common::random_len(&mut r, 256 << 10);
                            let off = r.below(((512 << 10) - len as u64) / 512 + 1) * 512;
                            let (op, len) = match k {
                                0..1 => (Op::Flush, 0),
                                8..55 => (Op::Write, len),
                                _ => (Op::Read, len),
                            };
                            let mut b = vec![0u8; len as usize];
                            if op == Op::Write {
                                r.fill(&mut b);
                            }
                            bufs.push(b);
                            reqs.push(Req {
                                op,
                                offset: if op == Op::Flush { 0 } else { off },
                                len,
                                fua: op == Op::Write && r.chance(5),
                            });
                        }
                        for (tag, (req, b)) in reqs.iter().zip(bufs.iter_mut()).enumerate() {
                            if let Some(res) = q.start(tag as u16, req, b) {
                                res.unwrap();
                            }
                        }
                        // Nothing fails, token flushes across the restart included: the
                        // replay buffer sends what the dead incarnation lost again.
                        q.finish(&mut |tag, res, _| {
                            let req = reqs[tag as usize];
                            assert!(res.is_ok(), "q{qi} round {round}: {req:?}: {res:?}");
                        });
                    }
                });
            }
        });
        // The restart lost completed, unconfirmed writes: without the crash point the
        // reads after it would not be explained (checked by hand: `not-linearizable`).
        let st = disk.stats();
        let lost: u64 = st
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix("tokens_lost="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        assert!(lost > 0, "the restart lost nothing: {st}");
        disk.shutdown();
    });
    log.flush().unwrap();
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    let h = history::parse(&text).unwrap_or_else(|e| panic!("the history does not parse: {e}"));
    assert_eq!(h.crashes.len(), 1, "one crash point (the re-attach)");
    assert!(
        h.ops
            .iter()
            .any(|o| o.chan >= host::linux::cbd_disk::FLUSH_CHANNEL)
    );
    assert!(!h.watermarks.is_empty());
    match history::check(&h) {
        Ok(s) => eprintln!("cbd-disk history: accepted, {s}"),
        Err(e) => panic!("cbd-disk history rejected: {e}"),
    }
}
