//! A recorded run, checked against the consistency model (`history::check`): the
//! schedule of host/tests/histories.rs (`host::harness::recorded`), traced, with the
//! lessons' memory and workload: both engines on the adversarial memory, a media
//! that loses what was not flushed (`native::CrashMedia`), an overlapping workload on
//! two channels (reads race writes, FLUSHes mixed in, durability tokens on), maybe a
//! backend crash and re-attach, maybe a final read-back of the hot region (so that one
//! read sees each block whole). Every request is recorded (invoked before its
//! submission could take effect, completed after its CE was consumed) with the DURABLE
//! flags and the watermarks the host saw; the crash records the media read back.

use crate::model::name;
use crate::setup::{Base, Sides, provision};
use crate::trace::{RegionMap, TraceLog, tid};
use device::adversary::{AdvConfig, Adversary};
use device::backend::{BackendConfig, Sabotage};
use device::durable::DurableConfig;
use device::layout::*;
use device::native::CrashMedia;
use device::rng::SplitMix64 as Rng;
use device::shm::Shm;
use history::OpId;
use host::engine::{HostConfig, Request};
use host::harness::recorded::{self, Workload};
use std::collections::HashMap;
use std::sync::OnceLock;

pub const DISK: usize = 2 << 20;
/// Most requests land here, so they overlap.
const HOT: u64 = 64 << 10;
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

/// What the schedule tells, in the lesson's words.
struct Narrate<'a>(&'a TraceLog);

impl recorded::Notes for Narrate<'_> {
    fn crashed(&self, unflushed: usize) {
        self.0.note(format!(
            "CRASH: the backend dies; its staging and cache are lost, the media keeps one \
             possible image ({unflushed} unflushed writes could go either way); it re-attaches"
        ));
    }
    fn watermark(&self, q: usize, watermark: u64) {
        self.0.note(format!(
            "host learnt: q{q}'s durable watermark is now {} (writes below it are on media)",
            tid(watermark)
        ));
    }
    fn submitted(&self, q: usize, req: &Request, t: u64, id: OpId) {
        self.0.note(format!(
            "host submitted {} {:#x} +{} on q{q} as tid {} (op {id})",
            name(req.op),
            req.offset,
            req.len,
            tid(t)
        ));
    }
    fn tid(&self, t: u64) -> String {
        tid(t)
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
    let crash = || {
        adv.crash(0);
        adv.drain();
    };
    let shms = recorded::Sides {
        dshm: Shm::new(&sides.dmem, &sides.dtap),
        hshm: Shm::new(&sides.hmem, &sides.htap),
        crash_device: &crash,
    };
    let media = CrashMedia::new(DISK, r.next());
    log.note("the backend re-attaches to its 2 channels (non-coherent mode, CrashMedia)");
    let hc = HostConfig {
        hostname: "hostA",
        noncoherent: true,
        queue_depth: sc.queue_depth,
        nc_retries: 256,
        durable_tokens: true,
        ..HostConfig::default()
    };
    let max_len = sc.max_len;
    let w = Workload {
        requests: sc.requests,
        max_steps: 1_000_000,
        crash_at: sc.crash_at,
        finals: if sc.read_back {
            read_back()
        } else {
            Vec::new()
        },
        request: &|r, payload| random_request(r, max_len, payload),
    };
    let rec = recorded::run(&mut r, &shms, bcfg(sabotage), hc, media, w, &Narrate(log))?;
    if let Some(v) = adv.violations().first() {
        return Err(format!("memory: {v}"));
    }
    Ok(Run {
        history: rec.history,
        ops: rec.ops,
    })
}
