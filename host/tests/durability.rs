//! Durability tokens: crash tests over a media that loses everything not
//! yet flushed (`native::CrashMedia`), on coherent memory and on the adversarial
//! non-coherent memory, plus the semantics of intents / watermark / plain v3 FLUSH.
//!
//! Each schedule runs a random 2-queue write workload (STANDARD / EPHEMERAL /
//! CRITICAL writes of 1–4 blocks, periodic FLUSH, 0 / 16 / 64 KiB staging, tokens
//! accepted or plain v3; every other schedule the media completes the write-back's
//! writes asynchronously, in random order, across polls) with host and device steps
//! interleaved. Crash points:
//! * media images taken at random media calls *inside* device steps (between the
//!   writes of a write-back, before/after a flush), each checked right away;
//! * real crashes: the backend dies (staging lost; adversary: its cache lost),
//!   the media loses unflushed blocks, the backend re-attaches on the same media
//!   and shared memory and the workload goes on.
//!
//! Invariants at every crash point, per 4 KiB block: the content is exactly one
//! version ever written there (never mixed), and not older than the newest
//! version whose durability the host saw confirmed (DURABLE CE, watermark, FLUSH).
//! A FLUSH vouches for every write completed before it was submitted, including
//! those a crash may have lost, unless the host had been told of that crash first
//! (it consumed a failed FLUSH on that queue since): docs/durability.md, "After a
//! device crash". `DURABILITY_CRASH_LONG=1` multiplies the schedules by 10,
//! `DURABILITY_CRASH_SCHEDULES=N` by N; schedules that once failed always run.
//! The last tests walk through which FLUSHes fail after a re-attach, step by step.

mod common;
use common::{Memory, Rng};
use device::backend::{Backend, BackendConfig};
use device::durable::{DurableConfig, Intent};
use device::layout::*;
use device::native::{CRASH_BLOCK, CrashMedia, HeapMem};
use device::shm::{SharedMem, Shm};
use device::trace::NoTrace;
use device::transport::{Transport, format_flags};
use host::engine::{Blkdev, Host, HostConfig, HostError, Request};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

const DISK: usize = 256 << 10;
const BLOCKS: usize = DISK / CRASH_BLOCK;
const T0: u64 = 1_700_000_000_000_000_000;
const SEC: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;
const FLAGS: u16 = format_flags(true);

fn bcfg(nc: bool) -> BackendConfig<'static> {
    BackendConfig {
        n_handlers: 2,
        noncoherent: nc,
        batch: 4,
        nc_retries: 256,
        durable: DurableConfig {
            offer: true,
            standard_bound_ns: 10 * MS,
            ephemeral_bound_ns: 40 * MS,
        },
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
            let b =
                Backend::start(shm, bcfg(nc), CrashMedia::new(DISK, 0), &mut scratch, T0).unwrap();
            assert_ne!(b.features() & features::DURABLE_TOKENS, 0);
            drop(b);
            Arc::new(mem.to_vec())
        })
        .clone()
}

fn word(v: u64, b: usize, i: usize) -> u64 {
    let mut r = Rng(v ^ ((b as u64) << 40) ^ ((i as u64) << 52));
    r.next()
}
fn fill_block(v: u64, b: usize, out: &mut [u8]) {
    out[..8].copy_from_slice(&v.to_le_bytes());
    out[8..16].copy_from_slice(&(b as u64).to_le_bytes());
    for (i, c) in out[16..].chunks_mut(8).enumerate() {
        c.copy_from_slice(&word(v, b, i).to_le_bytes());
    }
}
/// The version a block holds, or None if it is not exactly one version (mixed).
fn block_version(b: usize, data: &[u8]) -> Option<u64> {
    if data.iter().all(|&x| x == 0) {
        return Some(0);
    }
    let v = u64::from_le_bytes(data[..8].try_into().unwrap());
    let mut want = vec![0u8; CRASH_BLOCK];
    fill_block(v, b, &mut want);
    (want == data).then_some(v)
}

#[derive(Default)]
struct Oracle {
    /// Versions written to each block, in order (= version order).
    hist: Vec<Vec<u64>>,
    /// Newest version of each block whose durability was confirmed.
    floor: Vec<u64>,
    why: Vec<String>,
    points: u64,
}
impl Oracle {
    fn new() -> Self {
        Self {
            hist: vec![vec![0]; BLOCKS],
            floor: vec![0; BLOCKS],
            why: vec![String::new(); BLOCKS],
            points: 0,
        }
    }
    fn check(&mut self, img: &[u8], what: &str) -> Result<(), String> {
        self.points += 1;
        for b in 0..BLOCKS {
            let data = &img[b * CRASH_BLOCK..][..CRASH_BLOCK];
            let Some(v) = block_version(b, data) else {
                return Err(format!("{what}: block {b} mixes versions"));
            };
            if !self.hist[b].contains(&v) {
                return Err(format!("{what}: block {b} holds unknown version {v}"));
            }
            if v < self.floor[b] {
                return Err(format!(
                    "{what}: block {b} holds version {v}, older than confirmed durable {} ({})",
                    self.floor[b], self.why[b]
                ));
            }
        }
        Ok(())
    }
}

struct WriteRec {
    blocks: Vec<(usize, u64)>,
}

enum Req {
    Write(usize),
    /// READ of `n` blocks from `first`: each must hold a version ever written there,
    /// not older than confirmed durable, and the newest one unless a crash came since.
    Read {
        first: usize,
        n: usize,
    },
    /// FLUSH: confirms these writes (completed before it was submitted).
    Flush(Vec<usize>),
}

/// One schedule. Returns (crash points checked, violation).
fn schedule(seed: u64, nc: bool) -> (u64, Option<String>) {
    let mut r = Rng(seed.wrapping_mul(0x2545F4914F6CDD1D) ^ 0x5EED);
    let tokens = !r.chance(250);
    let staging_len = [0usize, 16 << 10, 64 << 10][r.below(3) as usize];
    let snap = [50, 200, 500][r.below(3) as usize];
    let mem = Memory::new(nc, base(nc), &mut r);
    let views = mem.views();
    let (dshm, hshm) = (
        Shm::new(views.device(), &NoTrace),
        Shm::new(views.host(), &NoTrace),
    );
    let mut now = T0 + 31 * SEC;
    let mut scratch = vec![0u8; chan::MAX_IO as usize];
    let mut staging = vec![0u8; staging_len];
    let mut media = CrashMedia::new(DISK, r.next());
    media.snapshot_per_mille = snap;
    // Every other schedule: the write-back's media writes stay in flight across polls
    // and complete in random order (not drawn from `r`: the regressions keep their
    // schedules).
    media.async_writes = seed % 2 == 1;
    let mut backend =
        Some(Backend::start(dshm, bcfg(nc), media, &mut scratch, now).expect("re-attach"));
    backend.as_mut().unwrap().set_staging(&mut staging).unwrap();
    let hc = HostConfig {
        hostname: "hostA",
        noncoherent: nc,
        queue_depth: 6,
        nc_retries: 256,
        durable_tokens: tokens,
        ..HostConfig::default()
    };
    let host = Host::register(hshm, hc, now).expect("host register");
    let mut bid = None;
    for _ in 0..1000 {
        if let Ok(id) = host.find_backend(now) {
            bid = Some(id);
            break;
        }
        backend.as_mut().unwrap().poll(now).expect("device poll");
    }
    let mut dev: Blkdev<'_, dyn SharedMem> = host
        .dev_start(bid.expect("backend record"), 2, now)
        .expect("dev-start");
    let mut orc = Oracle::new();
    let mut writes: Vec<WriteRec> = Vec::new();
    // (queue, tid) -> request; completed unconfirmed writes per queue (tid, write).
    let mut inflight: HashMap<(usize, u64), Req> = HashMap::new();
    let mut unconfirmed: [Vec<(u64, usize)>; 2] = [Vec::new(), Vec::new()];
    let mut busy = [false; BLOCKS];
    // Blocks whose newest write a crash may have lost (no write submitted since).
    let mut crashed_since = [false; BLOCKS];
    // Writes the crashed incarnation may have completed: they may be lost. A FLUSH on
    // queue q vouches for them too unless, when it was submitted, the host had
    // already consumed a failed FLUSH on q since the last crash (`told[q]`): the
    // device tells of the loss by failing FLUSHes, and every FLUSH submitted before
    // the host was told must fail (docs/durability.md, "After a device crash").
    let mut tainted = std::collections::HashSet::new();
    let mut told = [false; 2];
    let mut version = 0u64;
    let total = 30 + r.below(50);
    let crashes: Vec<u64> = (0..r.below(3)).map(|_| r.below(total)).collect();
    let (mut submitted, mut ready, mut crashed) = (0u64, false, 0usize);
    let (mut who, mut burst, mut steps) = (0u64, 0u64, 0u64);
    let mut read_buf = vec![0u8; chan::MAX_IO as usize];
    let mut payload = vec![0u8; 4 * CRASH_BLOCK];

    let confirm = |orc: &mut Oracle, w: &WriteRec, why: String| {
        for &(b, v) in &w.blocks {
            if v > orc.floor[b] {
                orc.floor[b] = v;
                orc.why[b] = why.clone();
            }
        }
    };
    let fail = |orc: &Oracle, e: String| (orc.points, Some(e));
    loop {
        if submitted == total && inflight.is_empty() {
            break;
        }
        steps += 1;
        if steps > 300_000 {
            return fail(&orc, format!("no progress: {submitted}/{total}"));
        }
        if burst == 0 {
            who = r.below(2);
            let max = if r.chance(100) { 200 } else { 6 };
            burst = 1 + r.below(max);
        }
        burst -= 1;
        now += MS;
        if who == 0 {
            let b = backend.as_mut().unwrap();
            if let Err(e) = b.poll(now) {
                return fail(&orc, format!("device: {e:?}"));
            }
            // Crash points inside this device step.
            for img in std::mem::take(&mut b.media().snapshots) {
                if let Err(e) = orc.check(&img, "crash point in a device step") {
                    return fail(&orc, e);
                }
            }
            continue;
        }
        // ---- host step
        let _ = dev.heartbeat(now);
        if !ready {
            match dev.poll_ready(now) {
                Ok(x) => ready = x,
                Err(e) => return fail(&orc, format!("host reset: {e:?}")),
            }
            continue;
        }
        if crashed < crashes.len() && crashes[crashed] <= submitted {
            crashed += 1;
            told = [false; 2];
            crashed_since = [true; BLOCKS];
            tainted.extend(unconfirmed.iter().flatten().map(|&(_, w)| w));
            tainted.extend(inflight.values().filter_map(|q| match q {
                Req::Write(w) => Some(*w),
                _ => None,
            }));
            if std::env::var_os("DDBG").is_some() {
                eprintln!("CRASH");
            }
            // Real crash: staging and (adversary) the device cache are lost, the
            // media loses unflushed blocks; re-attach on the same media + memory.
            let (mut m, sc, stg) = backend.take().unwrap().into_parts_staged();
            let img = m.crash();
            if let Err(e) = orc.check(&img, "real crash") {
                return fail(&orc, e);
            }
            mem.crash_device();
            now += 31 * SEC;
            match Backend::start(dshm, bcfg(nc), m, sc, now) {
                Ok(mut b) => {
                    b.set_staging(stg).unwrap();
                    backend = Some(b);
                }
                Err(e) => return fail(&orc, format!("re-attach: {e:?}")),
            }
        }
        // Completions.
        #[allow(clippy::needless_range_loop)]
        for qi in 0..2 {
            loop {
                let c = match dev.queues[qi].poll_at(&mut read_buf, now) {
                    Ok(Some(c)) => c,
                    Ok(None) => break,
                    Err(e) => return fail(&orc, format!("q{qi} poll: {e:?}")),
                };
                if std::env::var_os("DDBG").is_some() {
                    eprintln!(
                        "done q{qi} {:?} durable={} res={}",
                        c.req_tid, c.durable, c.result
                    );
                }
                let Some(req) = inflight.remove(&(qi, c.req_tid)) else {
                    return fail(&orc, format!("q{qi}: unknown completion {}", c.req_tid));
                };
                let flush_eio = c.result == errno::EIO && matches!(req, Req::Flush(_));
                if c.result != 0 && !(flush_eio && crashed > 0) {
                    return fail(
                        &orc,
                        format!("q{qi}: tid {} failed {}", c.req_tid, c.result),
                    );
                }
                if flush_eio && crashed > 0 {
                    told[qi] = true;
                }
                match req {
                    Req::Read { first, n } => {
                        for b in first..first + n {
                            busy[b] = false;
                            let got = block_version(
                                b,
                                &read_buf[(b - first) * CRASH_BLOCK..][..CRASH_BLOCK],
                            );
                            let newest = *orc.hist[b].last().unwrap();
                            let ok = match got {
                                Some(v) if crashed_since[b] => {
                                    orc.hist[b].contains(&v) && v >= orc.floor[b]
                                }
                                Some(v) => v == newest,
                                None => false,
                            };
                            if !ok {
                                return fail(
                                    &orc,
                                    format!(
                                        "q{qi}: READ tid {} of block {b} returned {got:?}, newest written {newest}, confirmed durable {} (crash since: {})",
                                        c.req_tid, orc.floor[b], crashed_since[b]
                                    ),
                                );
                            }
                        }
                    }
                    Req::Write(w) => {
                        for &(b, _) in &writes[w].blocks {
                            busy[b] = false;
                        }
                        if c.durable {
                            confirm(&mut orc, &writes[w], format!("q{qi} CE tid {}", c.req_tid));
                        } else {
                            unconfirmed[qi].push((c.req_tid, w));
                        }
                    }
                    Req::Flush(_) if c.result != 0 => {}
                    Req::Flush(ws) => {
                        for w in ws {
                            confirm(
                                &mut orc,
                                &writes[w],
                                format!("FLUSH q{qi} tid {}", c.req_tid),
                            );
                        }
                    }
                }
            }
            // Watermark: a loss (new incarnation) drops the unconfirmed; otherwise
            // everything below the first token the queue still waits for is durable.
            let q = &mut dev.queues[qi];
            let up = match q.poll_durable(now) {
                Ok(u) => u,
                Err(e) => return fail(&orc, format!("q{qi} poll_durable: {e:?}")),
            };
            if up.lost > 0 {
                unconfirmed[qi].clear();
            } else if q.durable_tokens() {
                let keep: Vec<_> = unconfirmed[qi]
                    .iter()
                    .copied()
                    .filter(|&(tid, _)| !q.is_durable(tid))
                    .collect();
                for &(tid, w) in &unconfirmed[qi] {
                    if q.is_durable(tid) {
                        let why = format!("q{qi} tid {tid} watermark {:?}", q.tokens);
                        confirm(&mut orc, &writes[w], why);
                    }
                }
                unconfirmed[qi] = keep;
            }
        }
        // Crash point after the host learnt what it learnt in this step.
        if r.chance(300) {
            let img = backend.as_mut().unwrap().media().crash_image();
            if let Err(e) = orc.check(&img, "crash point after a host step") {
                return fail(&orc, e);
            }
        }
        // Submit.
        if submitted < total && r.chance(600) {
            let qi = r.below(2) as usize;
            let q = &mut dev.queues[qi];
            if r.chance(80) {
                let all: Vec<usize> = unconfirmed
                    .iter()
                    .flatten()
                    .map(|&(_, w)| w)
                    .filter(|w| !(told[qi] && tainted.contains(w)))
                    .collect();
                let req = Request {
                    op: op::FLUSH,
                    offset: 0,
                    len: 0,
                };
                match q.submit(req, &[]) {
                    Ok(tid) => {
                        if std::env::var_os("DDBG").is_some() {
                            eprintln!("flush q{qi} tid {tid} covers {all:?}");
                        }
                        inflight.insert((qi, tid), Req::Flush(all));
                        submitted += 1;
                    }
                    Err(HostError::Busy) => {}
                    Err(e) => return fail(&orc, format!("submit flush: {e:?}")),
                }
                continue;
            }
            let n = 1 + r.below(4) as usize;
            let first = r.below((BLOCKS - n + 1) as u64) as usize;
            if busy[first..first + n].iter().any(|&b| b) {
                continue;
            }
            if r.chance(READ_PER_MILLE) {
                let req = Request {
                    op: op::READ,
                    offset: (first * CRASH_BLOCK) as u64,
                    len: (n * CRASH_BLOCK) as u32,
                };
                match q.submit(req, &[]) {
                    Ok(tid) => {
                        busy[first..first + n].iter_mut().for_each(|b| *b = true);
                        inflight.insert((qi, tid), Req::Read { first, n });
                        submitted += 1;
                    }
                    Err(HostError::Busy) => {}
                    Err(e) => return fail(&orc, format!("submit read: {e:?}")),
                }
                continue;
            }
            let intent = match r.below(10) {
                0..2 if q.durable_tokens() => Intent::Critical,
                2 => Intent::Ephemeral,
                _ => Intent::Standard,
            };
            version += 1;
            let blocks: Vec<(usize, u64)> = (first..first + n).map(|b| (b, version)).collect();
            for (i, &(b, v)) in blocks.iter().enumerate() {
                fill_block(v, b, &mut payload[i * CRASH_BLOCK..][..CRASH_BLOCK]);
            }
            let req = Request {
                op: op::WRITE,
                offset: (first * CRASH_BLOCK) as u64,
                len: (n * CRASH_BLOCK) as u32,
            };
            match q.submit_intent(req, &payload[..n * CRASH_BLOCK], intent) {
                Ok(tid) => {
                    if std::env::var_os("DDBG").is_some() {
                        eprintln!("submit q{qi} tid {tid} {intent:?} {blocks:?}");
                    }
                    for &(b, v) in &blocks {
                        busy[b] = true;
                        crashed_since[b] = false;
                        orc.hist[b].push(v);
                    }
                    writes.push(WriteRec { blocks });
                    inflight.insert((qi, tid), Req::Write(writes.len() - 1));
                    submitted += 1;
                }
                Err(HostError::Busy) => version -= 1,
                Err(e) => return fail(&orc, format!("submit: {e:?}")),
            }
        }
    }
    // Final crash point: power loss at the very end.
    let (mut m, _, _) = backend.take().unwrap().into_parts_staged();
    let img = m.crash();
    if let Err(e) = orc.check(&img, "final crash") {
        return fail(&orc, e);
    }
    if let Some(v) = mem
        .adversary()
        .and_then(|a| a.violations().first().cloned())
    {
        return fail(&orc, format!("adversary: {v}"));
    }
    (orc.points, None)
}

/// Share (‰) of the non-FLUSH requests that are READs (checked block by block).
const READ_PER_MILLE: u64 = 250;

/// Schedules that once failed, run in every mode: two FLUSHes in flight on one channel
/// when the backend crashed with completed STANDARD writes staged; after the re-attach
/// the first failed, the second completed 0 and vouched for the lost writes.
const REGRESSIONS_COHERENT: &[u64] = &[86];
const REGRESSIONS_ADVERSARIAL: &[u64] = &[368];

/// `DURABILITY_CRASH_LONG=1`: ×10 schedules; `DURABILITY_CRASH_SCHEDULES=N`: N× instead
/// (CI runs a slice of the long mode this way). The regression schedules always run.
fn run(nc: bool, schedules: u64, min_points: u64, regressions: &[u64]) {
    let long = std::env::var_os("DURABILITY_CRASH_LONG").is_some();
    let times = std::env::var("DURABILITY_CRASH_SCHEDULES")
        .ok()
        .and_then(|x| x.parse::<u64>().ok())
        .unwrap_or(if long { 10 } else { 1 });
    let n = schedules * times.max(1);
    let mut points = 0;
    let only: Option<u64> = std::env::var("DDBG").ok().and_then(|x| x.parse().ok());
    let extra: Vec<u64> = regressions.iter().copied().filter(|&s| s >= n).collect();
    for s in (0..n).chain(extra.iter().copied()) {
        if only.is_some_and(|o| o != s) {
            continue;
        }
        let (p, v) = schedule(s, nc);
        points += p;
        if let Some(v) = v {
            panic!("schedule {s} (nc={nc}): {v}");
        }
    }
    eprintln!(
        "durability crash test (nc={nc}): {n} schedules + {} regression, {points} crash points",
        extra.len()
    );
    assert!(
        only.is_some() || points >= min_points,
        "only {points} crash points"
    );
}

#[test]
fn crash_points_coherent() {
    run(false, 80, 8_000, REGRESSIONS_COHERENT);
}

#[test]
fn crash_points_adversarial() {
    run(true, 40, 2_500, REGRESSIONS_ADVERSARIAL);
}

#[test]
fn regression_two_flushes_in_the_ring_at_reattach() {
    for (nc, s) in [
        (false, REGRESSIONS_COHERENT),
        (true, REGRESSIONS_ADVERSARIAL),
    ] {
        for &seed in s {
            if let (_, Some(v)) = schedule(seed, nc) {
                panic!("schedule {seed} (nc={nc}): {v}");
            }
        }
    }
}

// ---- Which FLUSHes fail after a re-attach: deterministic scenarios.

/// One backend over CrashMedia with 64 KiB staging and one host with two queues, plain
/// v3 (no tokens: FLUSH is the only durability signal), driven step by step.
struct Rig<'a> {
    shm: Shm<'a, HeapMem>,
    nc: bool,
    now: u64,
    backend: Option<Backend<'a, HeapMem, CrashMedia>>,
    dev: Blkdev<'a, HeapMem>,
    buf: Vec<u8>,
}

impl<'a> Rig<'a> {
    fn new(heap: &'a HeapMem, nc: bool, scratch: &'a mut [u8], staging: &'a mut [u8]) -> Rig<'a> {
        let shm = Shm::new(heap, &NoTrace);
        let now = T0 + 31 * SEC;
        let mut b = Backend::start(shm, bcfg(nc), CrashMedia::new(DISK, 1), scratch, now)
            .expect("re-attach");
        b.set_staging(staging).unwrap();
        let hc = HostConfig {
            hostname: "hostA",
            noncoherent: nc,
            queue_depth: 8,
            durable_tokens: false,
            ..HostConfig::default()
        };
        let host = Host::register(shm, hc, now).unwrap();
        let mut dev = host.dev_start(b.backend_id, 2, now).unwrap();
        while !dev.poll_ready(now).unwrap() {
            b.poll(now).unwrap();
        }
        Rig {
            shm,
            nc,
            now,
            backend: Some(b),
            dev,
            buf: vec![0; chan::MAX_IO as usize],
        }
    }
    fn submit(&mut self, q: usize, req: Request, payload: &[u8]) -> u64 {
        self.dev.queues[q].submit(req, payload).expect("submit")
    }
    fn write(&mut self, q: usize, block: usize, v: u64) -> u64 {
        let mut p = vec![0u8; CRASH_BLOCK];
        fill_block(v, block, &mut p);
        let req = Request {
            op: op::WRITE,
            offset: (block * CRASH_BLOCK) as u64,
            len: CRASH_BLOCK as u32,
        };
        self.submit(q, req, &p)
    }
    fn flush(&mut self, q: usize) -> u64 {
        let req = Request {
            op: op::FLUSH,
            offset: 0,
            len: 0,
        };
        self.submit(q, req, &[])
    }
    /// The device runs everything submitted (time stands still: nothing falls due).
    fn device(&mut self) {
        self.backend.as_mut().unwrap().poll(self.now).unwrap();
    }
    /// The host consumes the next completion of `q`: (tid, result).
    fn complete(&mut self, q: usize) -> (u64, i32) {
        let c = self.dev.queues[q]
            .poll_at(&mut self.buf, self.now)
            .unwrap()
            .expect("a completion");
        (c.req_tid, c.result)
    }
    /// Write, run, consume: a completed (staged) write.
    fn completed_write(&mut self, q: usize, block: usize, v: u64) {
        let t = self.write(q, block, v);
        self.device();
        assert_eq!(self.complete(q), (t, 0));
    }
    /// FLUSH, run, consume: its result.
    fn flush_result(&mut self, q: usize) -> i32 {
        let t = self.flush(q);
        self.device();
        let (tid, r) = self.complete(q);
        assert_eq!(tid, t);
        r
    }
    /// The backend dies (staging lost, the media loses unflushed blocks) and re-attaches
    /// 31 s later on the same media and memory.
    fn crash(&mut self) {
        let (mut m, sc, stg) = self.backend.take().unwrap().into_parts_staged();
        m.crash();
        self.now += 31 * SEC;
        let mut b = Backend::start(self.shm, bcfg(self.nc), m, sc, self.now).expect("re-attach");
        b.set_staging(stg).unwrap();
        self.backend = Some(b);
    }
    /// Version of `block` on the media if the power failed now.
    fn on_media(&mut self, block: usize) -> Option<u64> {
        let img = self.backend.as_mut().unwrap().media().crash_image();
        block_version(block, &img[block * CRASH_BLOCK..][..CRASH_BLOCK])
    }
}

/// Every FLUSH submitted before the host consumed a failed one fails: the two in the
/// ring at re-attach, and one submitted after the re-attach while the first failure
/// was posted but not yet consumed. Once told, FLUSH means again what it says.
#[test]
fn flushes_fail_until_the_host_was_told() {
    for nc in [false, true] {
        let heap = HeapMem::from_bytes(&base(nc));
        let (mut scratch, mut staging) = (vec![0u8; chan::MAX_IO as usize], vec![0u8; 64 << 10]);
        let mut rig = Rig::new(&heap, nc, &mut scratch, &mut staging);
        rig.completed_write(0, 0, 1); // staged, lost in the crash
        let (f1, f2) = (rig.flush(0), rig.flush(0));
        rig.crash();
        rig.device();
        let f3 = rig.flush(0); // after the re-attach, before the host saw a failure
        rig.device();
        for f in [f1, f2, f3] {
            assert_eq!(rig.complete(0), (f, errno::EIO), "nc={nc}: FLUSH tid {f}");
        }
        // Told. A write runs (the device sees the host consumed the failure), then a
        // FLUSH submitted afterwards succeeds and covers that write.
        rig.completed_write(0, 1, 2);
        assert_eq!(rig.flush_result(0), 0, "nc={nc}");
        assert_eq!(rig.on_media(1), Some(2), "nc={nc}");
    }
}

/// A completion of the dead incarnation that the host consumes only after it was told
/// (here on the other queue) is a write the earlier failure did not cover: FLUSHes fail
/// again, on every queue, until the host is told anew.
#[test]
fn a_late_dead_completion_on_another_queue_fails_flushes_again() {
    for nc in [false, true] {
        let heap = HeapMem::from_bytes(&base(nc));
        let (mut scratch, mut staging) = (vec![0u8; chan::MAX_IO as usize], vec![0u8; 64 << 10]);
        let mut rig = Rig::new(&heap, nc, &mut scratch, &mut staging);
        rig.completed_write(0, 0, 1);
        let x = rig.write(1, 2, 2);
        rig.device(); // q1's write completes on the device; the host does not look yet
        rig.crash();
        assert_eq!(rig.flush_result(0), errno::EIO, "nc={nc}: first FLUSH");
        rig.completed_write(0, 3, 3);
        assert_eq!(rig.flush_result(0), 0, "nc={nc}: told, q1's write unseen");
        assert_eq!(
            rig.complete(1),
            (x, 0),
            "nc={nc}: the dead incarnation's CE"
        );
        assert_eq!(
            rig.flush_result(0),
            errno::EIO,
            "nc={nc}: would vouch for q1's write"
        );
        rig.completed_write(0, 3, 4);
        assert_eq!(rig.flush_result(0), 0, "nc={nc}: told again");
        assert_eq!(rig.flush_result(1), errno::EIO, "nc={nc}: q1 is told on q1");
        rig.completed_write(1, 4, 5);
        assert_eq!(rig.flush_result(1), 0, "nc={nc}");
        assert_eq!(rig.on_media(4), Some(5), "nc={nc}");
    }
}
