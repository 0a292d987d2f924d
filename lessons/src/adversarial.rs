//! A short seeded scenario of both engines on the adversarial non-coherent memory
//! (`device::adversary`), in the loop host/tests/adversary.rs runs them in
//! (`host::harness::adversarial`): the provisioned
//! 2-channel backend re-attaches, the host registers and dev-starts both queues in
//! non-coherent mode, then a handful of READ/WRITE/FLUSH requests run with host and
//! device steps interleaved in seeded bursts. Every protocol step is traced.
//!
//! The run stops at the first thing that goes wrong: an engine error, a failed or
//! wrong completion, a violation the memory itself sees (two writers in one line, a
//! lost update), media that differs from the model disk at the end, or no progress.

use crate::model::{Counts, Model, name};
use crate::setup::{Base, Sides, provision};
use crate::trace::{RegionMap, TraceLog, tid};
use device::adversary::{AdvConfig, AdvStats, Adversary};
use device::backend::{Backend, BackendConfig, Sabotage};
use device::layout::*;
use device::native::VecMedia;
use device::rng::SplitMix64 as Rng;
use device::shm::Shm;
use device::transport::format_flags;
use host::engine::{Host, HostConfig, HostSabotage, Request};
use host::harness::adversarial::{self, Device, Hooks as _, Shape};
use host::harness::attach;
use std::sync::OnceLock;

pub const DISK: usize = 1 << 20;
pub const T0: u64 = 1_700_000_000_000_000_000;
const SEC: u64 = 1_000_000_000;
pub const FLAGS: u16 = format_flags(true);

/// The rules one run breaks: device-side and host-side switches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    pub dev: Sabotage,
    pub host: HostSabotage,
}

impl Faults {
    pub fn any(&self) -> bool {
        *self != Faults::default()
    }
}

/// The shape of an adversarial lesson's scenario.
#[derive(Clone, Copy, Debug)]
pub struct Scenario {
    /// Requests submitted in all.
    pub requests: u64,
    /// Largest request (bytes).
    pub max_len: u32,
    /// Chance (‰) that a burst is long (up to 300 steps of one side): a device that
    /// polls on while the host is away, or the other way round.
    pub long_bursts: u64,
    /// Tune the memory (e.g. its eviction rate) after the seed drew it.
    pub memory: fn(&mut AdvConfig),
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            requests: 12,
            max_len: 16 << 10,
            long_bursts: 150,
            memory: |_| {},
        }
    }
}

/// What one run did.
#[derive(Clone, Debug)]
pub struct Run {
    /// The first thing that went wrong (`None`: the run passed).
    pub failure: Option<String>,
    /// Requests completed, by kind.
    pub counts: Counts,
    pub submitted: u64,
    /// Host and device steps taken.
    pub steps: u64,
    pub memory: AdvConfig,
    pub stats: AdvStats,
    /// The requests the failure concerns, (queue, req_tid): the one whose completion
    /// showed it, and for a wrong READ the WRITE it should have seen.
    pub requests: Vec<(u32, u64)>,
}

fn bcfg(sab: Sabotage) -> BackendConfig<'static> {
    BackendConfig {
        n_handlers: 2,
        noncoherent: true,
        batch: 4,
        nc_retries: 256,
        sabotage: sab,
        ..BackendConfig::default()
    }
}

fn base() -> &'static Base {
    static BASE: OnceLock<Base> = OnceLock::new();
    BASE.get_or_init(|| provision(bcfg(Sabotage::NONE), VecMedia::new(DISK)))
}

/// The names of the channels' pieces in the lessons' transport.
pub fn region_map() -> RegionMap {
    base().map.clone()
}

/// "line 0x1010100" in a message of the memory, with the line's name appended.
fn name_lines(msg: &str, map: &RegionMap) -> String {
    let mut out = String::new();
    let mut rest = msg;
    while let Some(i) = rest.find("line 0x") {
        let (head, tail) = rest.split_at(i + "line ".len());
        out.push_str(head);
        let end = tail[2..]
            .find(|c: char| !c.is_ascii_hexdigit())
            .map_or(tail.len(), |e| e + 2);
        let (hex, after) = tail.split_at(end);
        out.push_str(hex);
        if let Ok(off) = u64::from_str_radix(&hex[2..], 16) {
            out.push_str(&format!(" ({})", map.name(off, 64)));
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// The loop's words in the lesson's trace, and the memory's own violations as failures.
struct Narrate<'a> {
    adv: &'a Adversary,
    log: &'a TraceLog,
}

impl adversarial::Hooks for Narrate<'_> {
    fn after_step(&self) -> Option<String> {
        let v = self.adv.violations();
        v.first()
            .map(|v| format!("memory: {}", name_lines(v, &base().map)))
    }
    fn failed(&self, what: &str) {
        self.log.failure(what);
    }
    fn ready(&self) {
        self.log.note("both queues are ready");
    }
    fn submitted(&self, q: usize, req: &Request, t: u64) {
        self.log.note(format!(
            "host submitted {} {:#x} +{} on q{q} as tid {}",
            name(req.op),
            req.offset,
            req.len,
            tid(t)
        ));
    }
}

/// One seeded run with `faults` on; every step traced into `log`.
pub fn run(sc: &Scenario, faults: Faults, seed: u64, log: &TraceLog) -> Run {
    let mut r = Rng(seed.wrapping_mul(0x2545F4914F6CDD1D) ^ 0x1E55);
    // Over the defaults: knobs the memory gains later keep their default.
    #[allow(clippy::needless_update)]
    let mut memory = AdvConfig {
        seed: r.next(),
        evict_per_mille: [0, 5, 30, 200][r.below(4) as usize],
        max_delay: 48,
        ..AdvConfig::default()
    };
    (sc.memory)(&mut memory);
    let adv = Adversary::new(base().image.clone(), 2, memory);
    let sides = Sides::new(&adv, log);
    let (dshm, hshm) = (
        Shm::new(&sides.dmem, &sides.dtap),
        Shm::new(&sides.hmem, &sides.htap),
    );
    let mut out = Run {
        failure: None,
        counts: Counts::default(),
        submitted: 0,
        steps: 0,
        memory,
        stats: AdvStats::default(),
        requests: Vec::new(),
    };
    let fail = |out: &mut Run, what: String| {
        if out.failure.is_none() {
            log.failure(&what);
            out.failure = Some(what);
        }
    };
    let now = T0 + 31 * SEC;
    let mut scratch = vec![0u8; chan::MAX_IO as usize];
    let mut bc = bcfg(faults.dev);
    let shared = faults.dev.shared_ctrl_line || faults.host.shared_ctrl_line;
    bc.sabotage.shared_ctrl_line = shared;
    log.note("the backend re-attaches to its 2 channels (non-coherent mode)");
    let mut backend = match Backend::start(dshm, bc, VecMedia::new(DISK), &mut scratch, now) {
        Ok(b) => b,
        Err(e) => {
            fail(&mut out, format!("re-attach: {e:?}"));
            return out;
        }
    };
    #[allow(clippy::needless_update)]
    let hc = HostConfig {
        hostname: "hostA",
        noncoherent: true,
        queue_depth: 6,
        nc_retries: 256,
        durable_tokens: true,
        sabotage: HostSabotage {
            shared_ctrl_line: shared,
            ..faults.host
        },
        ..HostConfig::default()
    };
    log.note("the host registers, finds the backend, dev-starts 2 queues (epoch RESET)");
    let host = match Host::register(hshm, hc, now) {
        Ok(h) => h,
        Err(e) => {
            fail(&mut out, format!("host register: {e:?}"));
            return out;
        }
    };
    let mut dev = match attach(&host, &mut backend, now) {
        Ok(d) => d,
        Err(e) => {
            fail(&mut out, e);
            return out;
        }
    };

    let mut model = Model::new(DISK);
    let shape = Shape {
        requests: sc.requests,
        max_len: sc.max_len,
        long_bursts: sc.long_bursts,
        max_steps: 60_000,
        reset_at: None,
        crash_at: None,
        warm_crash: false,
    };
    let mut device = Device {
        adv: &adv,
        dshm,
        cfg: bc,
        backend: Some(backend),
    };
    let hooks = Narrate { adv: &adv, log };
    let o = adversarial::run(
        &mut r,
        &shape,
        &mut device,
        &mut dev,
        &mut model,
        &hooks,
        now,
    );
    out.submitted = o.submitted;
    out.steps = o.steps;
    out.requests = o.requests;
    // Logged by `Narrate::failed` where it happened.
    out.failure = o.failures.into_iter().next();
    let backend = device.backend.expect("no crash in a lesson");
    out.counts = model.counts;
    if out.failure.is_none() {
        let media = backend.into_media();
        if let Some(at) = media.data.iter().zip(&model.disk).position(|(a, b)| a != b) {
            out.requests.extend(model.writer_of(at as u64));
            fail(
                &mut out,
                format!("media differs from the model disk at byte {at:#x}"),
            );
        }
    }
    if let Some(v) = hooks.after_step() {
        fail(&mut out, v);
    }
    out.stats = adv.stats();
    out
}
