//! A recorded run, checked against the consistency model (`history::check`), as
//! host/tests/histories.rs runs them: both engines on the adversarial memory, a media
//! that loses what was not flushed (`native::CrashMedia`), an overlapping workload on
//! two channels (reads race writes, FLUSHes mixed in, durability tokens on), maybe a
//! backend crash and re-attach, maybe a final read-back of the hot region (so that one
//! read sees each block whole). Every request is recorded (invoked before its
//! submission could take effect, completed after its CE was consumed) with the DURABLE
//! flags and the watermarks the host saw; the crash records the media read back.

use crate::adversarial::T0;
use crate::model::name;
use crate::setup::{Base, Sides, attach, provision};
use crate::trace::{RegionMap, TraceLog, tid};
use device::adversary::{AdvConfig, Adversary};
use device::backend::{Backend, BackendConfig, Sabotage};
use device::durable::DurableConfig;
use device::layout::*;
use device::native::CrashMedia;
use device::rng::SplitMix64 as Rng;
use device::shm::Shm;
use history::{Header, OpId, OpKind, Outcome, Recorder};
use host::engine::{Host, HostConfig, HostError, Request};
use std::collections::HashMap;
use std::sync::OnceLock;

pub const DISK: usize = 2 << 20;
/// Most requests land here, so they overlap.
const HOT: u64 = 64 << 10;
const SEC: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;

/// The shape of a recorded lesson's run.
#[derive(Clone, Copy, Debug)]
pub struct Scenario {
    pub requests: u64,
    pub queue_depth: usize,
    /// Crash the backend (and re-attach) after this many submissions.
    pub crash_at: Option<u64>,
    /// Largest request (bytes).
    pub max_len: u32,
    /// After the workload, read the hot region back (16 KiB reads alternating between
    /// the channels, racing the last writes), so that what the last overlapping writes
    /// left in each block is seen whole by one read.
    pub read_back: bool,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            requests: 120,
            queue_depth: 16,
            crash_at: None,
            max_len: 64 << 10,
            read_back: false,
        }
    }
}

/// A recorded run.
pub struct Run {
    pub history: history::History,
    /// Each recorded operation: (channel, req_tid).
    pub ops: HashMap<OpId, (u16, u64)>,
}

fn bcfg(sabotage: Sabotage) -> BackendConfig<'static> {
    BackendConfig {
        n_handlers: 2,
        noncoherent: true,
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

fn base() -> &'static Base {
    static B: OnceLock<Base> = OnceLock::new();
    B.get_or_init(|| provision(bcfg(Sabotage::NONE), CrashMedia::new(DISK, 0)))
}

pub fn region_map() -> RegionMap {
    base().map.clone()
}

fn random_request(r: &mut Rng, max_len: u32, payload: &mut Vec<u8>) -> Request {
    let k = r.below(100);
    if k < 6 {
        return Request {
            op: op::FLUSH,
            offset: 0,
            len: 0,
        };
    }
    let sectors = match r.below(100) {
        0..75 => 1 + r.below(16),
        _ => 17 + r.below(112),
    } as u32;
    let len = (sectors * 512).min(max_len);
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
    const CHUNK: u32 = 16 << 10;
    let read = |offset| Request {
        op: op::READ,
        offset,
        len: CHUNK,
    };
    (0..HOT / CHUNK as u64)
        .map(|k| ((k % 2) as usize, read(k * CHUNK as u64)))
        .collect()
}

fn kind(opc: u32) -> OpKind {
    match opc {
        op::WRITE => OpKind::Write,
        op::READ => OpKind::Read,
        _ => OpKind::Flush,
    }
}

/// Run one seeded schedule with `sabotage` on and return its recorded history (or
/// what went wrong before there was one to check).
pub fn run(sc: &Scenario, sabotage: Sabotage, seed: u64, log: &TraceLog) -> Result<Run, String> {
    let mut r = Rng(seed.wrapping_mul(0x2545F4914F6CDD1D) ^ 0x415);
    #[allow(clippy::needless_update)]
    let cfg = AdvConfig {
        seed: r.next(),
        evict_per_mille: [0, 30, 200][r.below(3) as usize],
        max_delay: 32,
        // The consistency lessons are about the device's promises, not slow write buffers.
        slow_per_mille: 0,
        ..AdvConfig::default()
    };
    let adv = Adversary::new(base().image.clone(), 2, cfg);
    let sides = Sides::new(&adv, log);
    let (dshm, hshm) = (
        Shm::new(&sides.dmem, &sides.dtap),
        Shm::new(&sides.hmem, &sides.htap),
    );
    let mut now = T0 + 31 * SEC;
    let mut scratch = vec![0u8; chan::MAX_IO as usize];
    let media = CrashMedia::new(DISK, r.next());
    let cfg = bcfg(sabotage);
    log.note("the backend re-attaches to its 2 channels (non-coherent mode, CrashMedia)");
    let mut backend = Some(
        Backend::start(dshm, cfg, media, &mut scratch, now).map_err(|e| format!("start: {e:?}"))?,
    );
    let hc = HostConfig {
        hostname: "hostA",
        noncoherent: true,
        queue_depth: sc.queue_depth,
        nc_retries: 256,
        durable_tokens: true,
        ..HostConfig::default()
    };
    let host = Host::register(hshm, hc, now).map_err(|e| format!("register: {e:?}"))?;
    let mut dev = attach(&host, backend.as_mut().unwrap(), now)?;

    let rec = Recorder::new(Header::default());
    let mut ops = HashMap::new();
    let mut inflight: HashMap<(usize, u64), OpId> = HashMap::new();
    let mut watermark = [0u64; 2];
    let (mut submitted, mut ready, mut crashed) = (0u64, false, false);
    let (mut who, mut burst, mut steps) = (0u64, 0u64, 0u64);
    let mut read_buf = vec![0u8; chan::MAX_IO as usize];
    let mut payload = Vec::new();
    // The read-back, taken from the end: (channel, READ).
    let mut finals = if sc.read_back {
        read_back()
    } else {
        Vec::new()
    };
    loop {
        if submitted >= sc.requests && finals.is_empty() && inflight.is_empty() {
            break;
        }
        steps += 1;
        if steps > 1_000_000 {
            return Err(format!("no progress: {submitted}/{}", sc.requests));
        }
        if burst == 0 {
            who = r.below(2);
            let max = if r.chance(100) { 100 } else { 6 };
            burst = 1 + r.below(max);
        }
        burst -= 1;
        now += MS;
        if who == 0 {
            backend
                .as_mut()
                .unwrap()
                .poll(now)
                .map_err(|e| format!("device: {e:?}"))?;
            continue;
        }
        // ---- host step
        let _ = dev.heartbeat(now);
        if !ready {
            ready = dev
                .poll_ready(now)
                .map_err(|e| format!("host reset: {e:?}"))?;
            continue;
        }
        if !crashed && sc.crash_at.is_some_and(|c| c <= submitted) {
            crashed = true;
            // The backend dies (staging and the device's cache lost), the media keeps
            // one possible crash image; record it, then re-attach.
            let (mut m, sc2, _) = backend.take().unwrap().into_parts_staged();
            let unflushed = m.unflushed();
            let img = m.crash();
            rec.crash();
            rec.media(0, &img);
            log.note(format!(
                "CRASH: the backend dies; its staging and cache are lost, the media keeps one \
                 possible image ({unflushed} unflushed writes could go either way); it re-attaches"
            ));
            adv.crash(0);
            adv.drain();
            now += 31 * SEC;
            backend = Some(
                Backend::start(dshm, cfg, m, sc2, now).map_err(|e| format!("re-attach: {e:?}"))?,
            );
        }
        #[allow(clippy::needless_range_loop)]
        for qi in 0..2 {
            loop {
                let c = match dev.queues[qi].poll_at(&mut read_buf, now) {
                    Ok(Some(c)) => c,
                    Ok(None) => break,
                    Err(e) => return Err(format!("q{qi} poll: {e:?}")),
                };
                let Some(id) = inflight.remove(&(qi, c.req_tid)) else {
                    return Err(format!("q{qi}: unknown completion {}", tid(c.req_tid)));
                };
                let outcome = if c.result == 0 {
                    Outcome::Ok
                } else {
                    Outcome::Err(-c.result)
                };
                let data = (c.req.op == op::READ).then(|| &read_buf[..c.req.len as usize]);
                rec.complete(id, outcome, data, c.durable);
            }
            let q = &mut dev.queues[qi];
            let up = q
                .poll_durable(now)
                .map_err(|e| format!("q{qi} poll_durable: {e:?}"))?;
            if !crashed && up.lost == 0 && up.watermark > watermark[qi] {
                watermark[qi] = up.watermark;
                rec.watermark(qi as u16, up.watermark);
                log.note(format!(
                    "host learnt: q{qi}'s durable watermark is now {} (writes below it are on media)",
                    tid(up.watermark)
                ));
            }
        }
        for _ in 0..r.below(4) {
            let (qi, req) = if submitted < sc.requests {
                let qi = r.below(2) as usize;
                (qi, random_request(&mut r, sc.max_len, &mut payload))
            } else if let Some(&f) = finals.last() {
                f
            } else {
                break;
            };
            let data = (req.op == op::WRITE).then_some(&payload[..]);
            match dev.queues[qi].submit(req, data.unwrap_or(&[])) {
                Ok(t) => {
                    let id = rec.invoke(qi as u16, t, kind(req.op), req.offset, req.len, data);
                    ops.insert(id, (qi as u16, t));
                    log.note(format!(
                        "host submitted {} {:#x} +{} on q{qi} as tid {} (op {id})",
                        name(req.op),
                        req.offset,
                        req.len,
                        tid(t)
                    ));
                    inflight.insert((qi, t), id);
                    if submitted < sc.requests {
                        submitted += 1;
                    } else {
                        finals.pop();
                    }
                }
                Err(HostError::Busy) => {}
                Err(e) => return Err(format!("submit: {e:?}")),
            }
        }
    }
    if let Some(v) = adv.violations().first() {
        return Err(format!("memory: {v}"));
    }
    Ok(Run {
        history: rec.into_history(),
        ops,
    })
}
