//! The protocol in non-coherent mode against the adversarial memory: random
//! schedules of host and device steps, random early/late/out-of-order write-backs,
//! RESETs and backend crashes. With every rule followed there must be no
//! violation; with any one write-back, invalidate or CRC check removed (or host
//! and device sharing a line) the adversary must catch it.

mod common;
use common::{Model, Rng};
use device::adversary::{AdvConfig, Adversary, StaleWitness};
use device::backend::BackendError;
use device::backend::{Backend, BackendConfig, Sabotage};
use device::layout::*;
use device::native::{HeapMem, VecMedia};
use device::shm::{SharedMem, Shm};
use device::trace::NoTrace;
use device::transport::{SlotKind, Transport, format_flags};
use host::engine::{Completion, HostConfig, HostError, HostSabotage, Request};
use host::harness::adversarial::{self, Device, Shape};
use std::sync::{Arc, OnceLock};

const DISK: usize = 1 << 20;
const T0: u64 = 1_700_000_000_000_000_000;
const SEC: u64 = 1_000_000_000;
const FLAGS: u16 = format_flags(true);

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

/// A formatted transport with a provisioned 2-channel backend (built once,
/// coherently), shared copy-on-write by every schedule.
fn base() -> Arc<Vec<u8>> {
    static BASE: OnceLock<Arc<Vec<u8>>> = OnceLock::new();
    BASE.get_or_init(|| {
        let mem = HeapMem::new(TransportInfo::region_for(2) as usize);
        let shm = Shm::new(&mem, &NoTrace);
        Transport::format(shm, FLAGS, false, T0).unwrap();
        let mut scratch = vec![0u8; chan::MAX_IO as usize];
        let b = Backend::start(
            shm,
            bcfg(Sabotage::default()),
            VecMedia::new(DISK),
            &mut scratch,
            T0,
        )
        .unwrap();
        assert_eq!(b.features() & features::NONCOHERENT, features::NONCOHERENT);
        drop(b);
        Arc::new(mem.to_vec())
    })
    .clone()
}

#[derive(Default, Clone, Copy)]
struct Faults {
    dev: Sabotage,
    host: HostSabotage,
}

/// How a schedule starts.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Start {
    /// Re-attach to the provisioned backend of the base image (caches empty).
    Reattach,
    /// From an unformatted region: the host looked at it first (its cache holds the
    /// pre-format lines), then the device formats and provisions, the host opens,
    /// registers and dev-starts — all on the adversarial memory.
    Fresh,
}

/// Why the give-ups of an agent's engine happened (the adversary's explanations).
fn why(w: &StaleWitness<'_>) -> String {
    let v = w.take();
    if v.is_empty() {
        "no give-up recorded".into()
    } else {
        v.join(" | ")
    }
}

/// The schedules' failures explained by the adversary (each engine's give-ups, and
/// both agents' last stale reads when the schedule stalls).
struct Explain<'a> {
    adv: &'a Adversary,
    dwit: &'a StaleWitness<'a>,
    hwit: &'a StaleWitness<'a>,
}

impl adversarial::Hooks for Explain<'_> {
    fn device_error(&self, e: &BackendError) -> String {
        format!("device: {e:?}: {}", why(self.dwit))
    }
    fn host_poll_error(&self, q: usize, e: &HostError) -> String {
        format!("host poll q{q}: {e:?}: {}", why(self.hwit))
    }
    // A payload the device gave up on completes with -EIO.
    fn completion_error(&self, e: String) -> String {
        format!("{e}: device: {}", why(self.dwit))
    }
    fn stall(&self, s: &adversarial::State) -> String {
        format!(
            "stall: submitted {}/{}, in flight {}, ready {}, resetting {}; device's last stale read: {:?}; host's: {:?}",
            s.submitted,
            s.requests,
            s.in_flight,
            s.ready,
            s.resetting,
            self.adv.last_stale(0).map(|s| s.to_string()),
            self.adv.last_stale(1).map(|s| s.to_string()),
        )
    }
}

impl adversarial::Model for Model {
    fn random_request(&self, r: &mut Rng, max_len: u32, payload: &mut Vec<u8>) -> Request {
        Model::random_request(self, r, max_len, payload)
    }
    fn submitted(&mut self, q: usize, tid: u64, req: Request, payload: &[u8]) {
        Model::submitted(self, q, tid, req, payload)
    }
    fn completed(
        &mut self,
        q: usize,
        c: &Completion,
        read_buf: &[u8],
    ) -> Result<(), (String, Vec<(u32, u64)>)> {
        Model::completed(self, q, c, read_buf).map_err(|e| (e, Vec::new()))
    }
    fn in_flight(&self) -> usize {
        self.inflight.len()
    }
    fn crashed(&mut self) {
        self.flush_eio_ok = true;
    }
}

/// One random schedule; returns every violation found (empty = correct).
fn schedule(seed: u64, f: Faults) -> Vec<String> {
    let mut r = Rng(seed.wrapping_mul(0x2545F4914F6CDD1D) ^ 0xA5A5);
    let evict = [0, 5, 30, 200][r.below(4) as usize];
    let cfg = AdvConfig {
        seed: r.next(),
        evict_per_mille: evict,
        max_delay: 48,
        slow_per_mille: [0, 10, 40][r.below(3) as usize],
        slow_delay: 3000,
        unfenced_load_per_mille: [500, 1000][r.below(2) as usize],
    };
    let start = if r.chance(START_FRESH_PER_MILLE) {
        Start::Fresh
    } else {
        Start::Reattach
    };
    let adv = match start {
        Start::Reattach => Adversary::new(base(), 2, cfg),
        Start::Fresh => {
            Adversary::with_len(Arc::new(Vec::new()), TransportInfo::region_for(2), 2, cfg)
        }
    };
    let (dmem, hmem) = (adv.agent(0), adv.agent(1));
    let (dwit, hwit) = (StaleWitness::new(&adv, 0), StaleWitness::new(&adv, 1));
    let (dshm, hshm) = (Shm::new(&dmem, &dwit), Shm::new(&hmem, &hwit));
    let mut v: Vec<String> = Vec::new();
    let now = T0 + 31 * SEC;
    let mut scratch_buf = vec![0u8; chan::MAX_IO as usize];
    let mut bc = bcfg(f.dev);
    bc.sabotage.shared_ctrl_line = f.dev.shared_ctrl_line || f.host.shared_ctrl_line;
    if start == Start::Fresh {
        // The host mapped the region and read its head before the device formatted it.
        let mut b = vec![0u8; HOST_AREA_OFF as usize];
        hmem.read(0, &mut b);
        if let Err(e) = Transport::format(dshm, FLAGS, false, now) {
            return vec![format!("device format: {e:?}")];
        }
    }
    let mut backend = match Backend::start(dshm, bc, VecMedia::new(DISK), &mut scratch_buf, now) {
        Ok(b) => Some(b),
        Err(e) => return vec![format!("backend start ({start:?}): {e:?}")],
    };
    let hc = HostConfig {
        hostname: "hostA",
        noncoherent: true,
        queue_depth: 6,
        nc_retries: 256,
        durable_tokens: true,
        sabotage: HostSabotage {
            shared_ctrl_line: bc.sabotage.shared_ctrl_line,
            ..f.host
        },
    };
    // The device's format and records land some time after their write-back: the
    // host retries (its reads invalidate and fence, so it sees them once landed).
    let mut host = None;
    let mut last = None;
    for _ in 0..PATIENCE {
        match host::engine::Host::register(hshm, hc, now) {
            Ok(h) => {
                host = Some(h);
                break;
            }
            Err(e) => last = Some(e),
        }
        backend.as_mut().unwrap().poll(now).ok();
    }
    let Some(host) = host else {
        return vec![format!(
            "host register ({start:?}) never succeeded: {last:?}; host's last stale read: {:?}",
            adv.last_stale(1).map(|s| s.to_string())
        )];
    };
    let mut bid = None;
    for _ in 0..PATIENCE {
        if let Ok(id) = host.find_backend(now) {
            bid = Some(id);
            break;
        }
        backend.as_mut().unwrap().poll(now).ok();
    }
    let Some(bid) = bid else {
        return vec![format!(
            "backend record ({start:?}) never became visible; host's last stale read: {:?}",
            adv.last_stale(1).map(|s| s.to_string())
        )];
    };
    let mut dev = match host.dev_start(bid, 2, now) {
        Ok(d) => d,
        Err(e) => {
            return vec![format!(
                "dev-start ({start:?}): {e:?}; host's last stale read: {:?}",
                adv.last_stale(1).map(|s| s.to_string())
            )];
        }
    };

    let total = 16 + r.below(24);
    let reset_at = if r.chance(500) {
        Some(r.below(total))
    } else {
        None
    };
    let crash_at = if r.chance(500) {
        Some(r.below(total))
    } else {
        None
    };
    let shape = Shape {
        requests: total,
        max_len: 64 << 10,
        long_bursts: 150,
        max_steps: 200_000,
        reset_at,
        crash_at,
        warm_crash: r.chance(500),
    };
    let mut model = Model::new(DISK);
    let mut device = Device {
        adv: &adv,
        dshm,
        cfg: bc,
        backend,
    };
    let hooks = Explain {
        adv: &adv,
        dwit: &dwit,
        hwit: &hwit,
    };
    let out = adversarial::run(
        &mut r,
        &shape,
        &mut device,
        &mut dev,
        &mut model,
        &hooks,
        now,
    );
    v.extend(out.failures);
    let Some(backend) = device.backend else {
        return v;
    };
    let media = backend.into_media();
    if v.is_empty() && media.data != model.disk {
        let at = media
            .data
            .iter()
            .zip(&model.disk)
            .position(|(a, b)| a != b)
            .unwrap();
        v.push(format!("media differs from the model disk at byte {at:#x}"));
    }
    // What the memory saw (two writers in a line) is the cause of whatever followed.
    let mut out = adv.violations();
    out.extend(v);
    out
}

/// Schedules that start from an unformatted region (‰).
const START_FRESH_PER_MILLE: u64 = 5;
/// Attempts of the host's start-up steps (each with a device poll between): enough
/// for every write-back in flight, slow ones included, to land.
const PATIENCE: usize = 4000;

/// `ADVERSARY_LONG=1`: 10 000 schedules instead of 1000.
fn schedules() -> u64 {
    if std::env::var_os("ADVERSARY_LONG").is_some() {
        10_000
    } else {
        1000
    }
}

#[test]
fn noncoherent_mode_survives_1000_adversarial_schedules() {
    let mut failures = Vec::new();
    let n = schedules();
    for seed in 0..n {
        let v = schedule(seed, Faults::default());
        if !v.is_empty() {
            failures.push((seed, v));
            // The cache-deletion sweep (.ci/cache-deletions) needs only the first.
            if std::env::var_os("ADVERSARY_FAIL_FAST").is_some() {
                break;
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {n} schedules failed, first: {:?}",
        failures.len(),
        failures.first()
    );
}

/// Seeds a negative test runs at most.
const NEGATIVE_SEEDS: u64 = 400;

/// Run schedules with one rule removed until the adversary catches it. Every failing
/// schedule must fail for the named reason: its first violation contains each of
/// `expect` (the symptom and the adversary's explanation); any other failure panics.
fn caught(f: Faults, expect: &[&str]) -> String {
    caught_among(f, &[expect], &[])
}

/// [`caught`] for two rules removed at once: the first violation must contain each
/// of one of the `expect` lists (a rule may show in more than one way); failures that
/// contain `tolerated` (the other rule's own symptom) are passed over.
fn caught_among(f: Faults, expect: &[&[&str]], tolerated: &[&str]) -> String {
    for seed in 0..NEGATIVE_SEEDS {
        let v = schedule(seed, f);
        let Some(first) = v.first() else { continue };
        if expect.iter().any(|x| x.iter().all(|e| first.contains(e))) {
            return format!("seed {seed}: {first}");
        }
        assert!(
            !tolerated.is_empty() && tolerated.iter().all(|e| first.contains(e)),
            "seed {seed}: failure of another kind than {expect:?}: {v:?}"
        );
    }
    panic!("the adversary did not catch the removed rule in {NEGATIVE_SEEDS} schedules");
}

fn dev(s: Sabotage) -> Faults {
    Faults {
        dev: s,
        ..Faults::default()
    }
}
fn host_(s: HostSabotage) -> Faults {
    Faults {
        host: s,
        ..Faults::default()
    }
}

#[test]
fn catches_missing_ce_write_back() {
    let f = dev(Sabotage {
        skip_ce_write_back: true,
        ..Sabotage::default()
    });
    let m = caught(f, &["host poll", "Stale", "NotWrittenBack"]);
    println!("missing CE write-back caught: {m}");
}

#[test]
fn catches_missing_se_write_back() {
    let f = host_(HostSabotage {
        skip_se_write_back: true,
        ..HostSabotage::default()
    });
    let m = caught(f, &["device: Stale", "NotWrittenBack"]);
    println!("missing SE write-back caught: {m}");
}

#[test]
fn catches_missing_se_invalidate() {
    let f = dev(Sabotage {
        skip_se_invalidate: true,
        ..Sabotage::default()
    });
    let m = caught(f, &["device: Stale", "NotInvalidated"]);
    println!("missing SE invalidate caught: {m}");
}

#[test]
fn catches_missing_ce_invalidate() {
    let f = host_(HostSabotage {
        skip_ce_invalidate: true,
        ..HostSabotage::default()
    });
    let m = caught(f, &["host poll", "Stale", "NotInvalidated"]);
    println!("missing CE invalidate caught: {m}");
}

#[test]
fn catches_missing_full_fence_after_ce_invalidate() {
    let f = host_(HostSabotage {
        skip_ce_full_fence: true,
        ..HostSabotage::default()
    });
    let m = caught(f, &["host poll", "Stale", "InvalidateNotFenced"]);
    println!("missing full fence after CE invalidate caught: {m}");
}

#[test]
fn catches_missing_store_fence_before_compr_head() {
    let f = dev(Sabotage {
        skip_compr_head_fence: true,
        ..Sabotage::default()
    });
    let m = caught(f, &["host poll", "Stale", "Overtaken"]);
    println!("missing store fence before compr_head caught: {m}");
}

#[test]
fn catches_missing_store_fence_before_submr_head() {
    let f = host_(HostSabotage {
        skip_submr_head_fence: true,
        ..HostSabotage::default()
    });
    let m = caught(f, &["device", "Overtaken"]);
    println!("missing store fence before submr_head caught: {m}");
}

/// The CRC checks are the second line of defence: with the writer's ordering kept, an
/// entry or payload always lands before its index and no check ever fails. With the
/// writer's fence gone the reader still only re-reads and reports `Stale` (the tests
/// above); without its CRC check as well it takes the stale bytes for data.
#[test]
fn catches_skipped_crc_check() {
    let f = Faults {
        dev: Sabotage {
            skip_crc_check: true,
            ..Sabotage::default()
        },
        host: HostSabotage {
            skip_submr_head_fence: true,
            ..HostSabotage::default()
        },
    };
    // The device takes an overtaken WRITE payload for data: a READ of it returns it,
    // or, when no READ comes before the end, the media differ from the model disk.
    let m = caught_among(
        f,
        &[&["wrong data"], &["media differs from the model disk"]],
        &["device: Stale", "Overtaken"],
    );
    println!("device skipping the CRC check caught: {m}");
}

#[test]
fn catches_host_skipping_crc_check() {
    let f = Faults {
        dev: Sabotage {
            skip_compr_head_fence: true,
            ..Sabotage::default()
        },
        host: HostSabotage {
            skip_crc_check: true,
            ..HostSabotage::default()
        },
    };
    let m = caught_among(f, &[&["wrong data"]], &["host poll", "Stale", "Overtaken"]);
    println!("host skipping the CRC check caught: {m}");
}

#[test]
fn catches_host_and_device_sharing_a_line() {
    let f = dev(Sabotage {
        shared_ctrl_line: true,
        ..Sabotage::default()
    });
    let m = caught(f, &["two writers share the line"]);
    println!("shared line caught: {m}");
}

#[test]
fn catches_index_published_before_payload_write_back() {
    let f = host_(HostSabotage {
        publish_before_payload_write_back: true,
        ..HostSabotage::default()
    });
    // The device meets the payload either before its deferred write-back was issued
    // (`NotWrittenBack`) or while it is in flight after the index (`WrittenBackAfterIndex`):
    // both are this rule, and only these two `Why`s contain "WrittenBack".
    let m = caught(f, &["failed with -5", "WrittenBack"]);
    println!("submr_head published before the payload's write-back caught: {m}");
}

#[test]
fn catches_compr_head_published_before_read_payload_write_back() {
    let f = dev(Sabotage {
        publish_before_read_payload_write_back: true,
        ..Sabotage::default()
    });
    let m = caught(f, &["host poll", "Stale", "WrittenBackAfterIndex"]);
    println!("compr_head published before the READ payload's write-back caught: {m}");
}

/// The host's CE CRC check, deterministically: the device completes a WRITE, then
/// one bit of that CE's `result` flips in shared memory (the CE's CRC no longer
/// verifies). The host must not accept it — non-coherent mode re-reads and reports
/// `Stale`, v3 mode skips it as `BadCompletion` — and, in non-coherent mode, accepts
/// the intact CE once it is restored.
#[test]
fn host_rejects_a_ce_whose_crc_does_not_verify() {
    for noncoherent in [true, false] {
        let mem = HeapMem::new(TransportInfo::region_for(2) as usize);
        let shm = Shm::new(&mem, &NoTrace);
        Transport::format(shm, FLAGS, false, T0).unwrap();
        let mut scratch = vec![0u8; chan::MAX_IO as usize];
        let bc = BackendConfig {
            noncoherent,
            ..BackendConfig::default()
        };
        let mut backend = Backend::start(shm, bc, VecMedia::new(DISK), &mut scratch, T0).unwrap();
        let seg = backend.channel_segments().next().unwrap();
        let g = device::channel::ChannelGeom::new(
            Transport::open(shm, false)
                .unwrap()
                .channel_base(seg)
                .unwrap(),
            FLAGS,
            false,
        );
        let hc = HostConfig {
            hostname: "hostA",
            noncoherent,
            nc_retries: 16,
            durable_tokens: false,
            ..HostConfig::default()
        };
        let host = host::engine::Host::register(shm, hc, T0).unwrap();
        let bid = host.find_backend(T0).unwrap();
        let mut dev = host.dev_start(bid, 1, T0).unwrap();
        let mut now = T0;
        while !dev.poll_ready(now).unwrap() {
            now += 1_000_000;
            backend.poll(now).unwrap();
        }
        let q = &mut dev.queues[0];
        let req = host::engine::Request {
            op: op::WRITE,
            offset: 4096,
            len: 4096,
        };
        let tid = q.submit(req, &[0x3C; 4096]).unwrap();
        backend.poll(now + 1).unwrap();
        // The CE is at the completion ring's first slot; its `result` is at byte 16 of
        // the 24-byte CE of this format (crc, data_crc, req_tid, result, flags).
        assert_eq!(g.el.ce_size, 24);
        let at = g.ce(0) + 16;
        let mut byte = [0u8; 1];
        mem.read(at, &mut byte);
        mem.write(at, &[byte[0] ^ 0x01]);
        let mut read_buf = vec![0u8; chan::MAX_IO as usize];
        let got = q.poll(&mut read_buf);
        let mode = if noncoherent { "non-coherent" } else { "v3" };
        match (noncoherent, got) {
            (true, Err(HostError::Stale)) => {}
            (false, Err(HostError::BadCompletion { req_tid })) => assert_eq!(req_tid, tid),
            (_, other) => panic!("{mode}: a CE whose CRC fails was not rejected: {other:?}"),
        }
        if noncoherent {
            mem.write(at, &byte);
            let c = q.poll(&mut read_buf).unwrap().expect("the intact CE");
            assert_eq!((c.req_tid, c.result), (tid, 0), "{mode}");
        }
    }
}

/// Focused tests for the cache-maintenance calls no random schedule needs
/// (`.ci/cache-deletions`): each drives host and device by hand on the adversarial
/// memory made deterministic (no early evictions, no slow write-backs, a load after
/// an unfenced invalidate always returns the old copy) and names, when it fails, the
/// adversary's explanation of the reader's last stale read.
mod maintenance {
    use super::*;
    use device::adversary::AgentMem;
    use host::engine::{Blkdev, Host, HostQueue, Intent, Request};

    const MS: u64 = 1_000_000;

    type Dev<'a> = Backend<'a, AgentMem<'a>, VecMedia>;
    type Queue<'a> = HostQueue<'a, AgentMem<'a>>;

    /// `ready!(adv, agents => b, host, dev, now)`: the adversarial memory with `agents`
    /// caches, the provisioned backend of [`base`] re-attached by agent 0 and a host
    /// (agent 1) with one ready queue on each channel, durable tokens on; everything
    /// landed.
    macro_rules! ready {
        ($adv:ident, $agents:expr => $b:ident, $host:ident, $dev:ident, $now:ident) => {
            let $adv = Adversary::new(base(), $agents, quiet());
            let (dmem, hmem) = ($adv.agent(0), $adv.agent(1));
            let mut scratch = vec![0u8; chan::MAX_IO as usize];
            #[allow(unused_mut, unused_variables)]
            let (mut $b, $host, mut $dev, mut $now) = ready(&$adv, &dmem, &hmem, &mut scratch);
        };
    }

    fn quiet() -> AdvConfig {
        AdvConfig {
            seed: 7,
            evict_per_mille: 0,
            max_delay: 48,
            slow_per_mille: 0,
            slow_delay: 3000,
            unfenced_load_per_mille: 1000,
        }
    }

    fn ready<'a>(
        adv: &Adversary,
        dmem: &'a AgentMem<'a>,
        hmem: &'a AgentMem<'a>,
        scratch: &'a mut [u8],
    ) -> (
        Dev<'a>,
        Host<'a, AgentMem<'a>>,
        Blkdev<'a, AgentMem<'a>>,
        u64,
    ) {
        ready_with(adv, dmem, hmem, scratch, Sabotage::default(), 256)
    }

    /// [`ready`] with the device's `sab` and the host's `nc_retries`.
    fn ready_with<'a>(
        adv: &Adversary,
        dmem: &'a AgentMem<'a>,
        hmem: &'a AgentMem<'a>,
        scratch: &'a mut [u8],
        sab: Sabotage,
        nc_retries: u32,
    ) -> (
        Dev<'a>,
        Host<'a, AgentMem<'a>>,
        Blkdev<'a, AgentMem<'a>>,
        u64,
    ) {
        let now = T0 + 31 * SEC;
        let (dshm, hshm) = (Shm::new(dmem, &NoTrace), Shm::new(hmem, &NoTrace));
        let media = VecMedia::new(DISK);
        let mut b = Backend::start(dshm, bcfg(sab), media, scratch, now).expect("re-attach");
        adv.drain();
        let hc = HostConfig {
            hostname: "hostA",
            noncoherent: true,
            nc_retries,
            durable_tokens: true,
            ..HostConfig::default()
        };
        let host = Host::register(hshm, hc, now).expect("register");
        adv.drain();
        let bid = host.find_backend(now).expect("backend record");
        let mut dev = host.dev_start(bid, 2, now).expect("dev-start");
        let mut now = now;
        for _ in 0..100 {
            adv.drain();
            if dev.poll_ready(now).expect("poll_ready") {
                assert!(dev.queues[0].durable_tokens(), "durable tokens accepted");
                adv.drain();
                return (b, host, dev, now);
            }
            now += MS;
            b.poll(now).expect("device poll");
        }
        panic!("the queues never became ready");
    }

    /// Everything in flight lands, `dt` passes, the device polls once.
    fn device_poll(adv: &Adversary, b: &mut Dev<'_>, now: &mut u64, dt: u64) {
        adv.drain();
        *now += dt;
        b.poll(*now).expect("device poll");
    }

    /// A STANDARD 4 KiB write of `byte`s at `offset`; returns its tid.
    fn write(q: &mut Queue<'_>, offset: u64, byte: u8) -> u64 {
        let req = Request {
            op: op::WRITE,
            offset,
            len: 4096,
        };
        q.submit_intent(req, &[byte; 4096], Intent::Standard)
            .expect("submit")
    }

    /// The host consumes the completion of `tid` (everything in flight landed first);
    /// returns whether it came durable.
    fn complete(adv: &Adversary, q: &mut Queue<'_>, tid: u64, what: &str) -> bool {
        adv.drain();
        let mut buf = vec![0u8; 4096];
        match q.poll(&mut buf) {
            Ok(Some(c)) => {
                assert_eq!((c.req_tid, c.result), (tid, 0), "{what}");
                c.durable
            }
            other => panic!(
                "{what}: the host got {other:?} instead of the completion of tid {tid}; device's last stale read: {}; host's: {}; the memory's violations: {:?}",
                stale(adv, 0),
                stale(adv, 1),
                adv.violations()
            ),
        }
    }

    fn stale(adv: &Adversary, agent: usize) -> String {
        adv.last_stale(agent)
            .map_or("none".into(), |s| s.to_string())
    }

    /// Rule 3 at the device's host line: a submission whose publication has landed is
    /// served at the device's next poll — its read of the host line is ordered after
    /// the invalidate by a full fence (without it the load may keep returning the copy
    /// cached at the previous poll, for as long as nothing else fences).
    #[test]
    fn the_device_serves_a_landed_submission_at_its_next_poll() {
        ready!(adv, 2 => b, host, dev, now);
        for _ in 0..3 {
            device_poll(&adv, &mut b, &mut now, MS);
        }
        let tid = write(&mut dev.queues[0], 0, 0x5A);
        device_poll(&adv, &mut b, &mut now, MS);
        complete(
            &adv,
            &mut dev.queues[0],
            tid,
            "one device poll after the host line landed",
        );
    }

    /// Rule 3 at the host's CE span: a batch takes every CE whose head landed at its
    /// first read (the host here reads each CE once: `nc_retries` 1). The host invalidates
    /// the span from its tail to the head it just read, across the ring's end in two
    /// ranges, and fences once; without that it reads the copies of those lines it cached
    /// when it took the CEs before them, a lap ago past the ring's end (`NotInvalidated`,
    /// `InvalidateNotFenced`). Batches of 1–7 CEs, over more than a lap of the ring.
    #[test]
    fn a_batch_takes_every_landed_ce_at_its_first_read() {
        let adv = Adversary::new(base(), 2, quiet());
        let (dmem, hmem) = (adv.agent(0), adv.agent(1));
        let mut scratch = vec![0u8; chan::MAX_IO as usize];
        let (mut b, _host, mut dev, mut now) =
            ready_with(&adv, &dmem, &hmem, &mut scratch, Sabotage::default(), 1);
        let q = &mut dev.queues[0];
        let slots = chan::COMPR_ENTRIES;
        let (mut taken, mut wrapped) = (0u64, 0);
        let mut buf = vec![0u8; 4096];
        for round in 0u64.. {
            if taken > slots + 16 && wrapped > 0 {
                break;
            }
            let k = 1 + round % 7;
            let tids: Vec<u64> = (0..k).map(|i| write(q, (i % 64) * 4096, i as u8)).collect();
            // The device serves 4 SEs a poll (`bcfg`).
            device_poll(&adv, &mut b, &mut now, MS);
            device_poll(&adv, &mut b, &mut now, MS);
            adv.drain();
            let mut got = Vec::new();
            let r = q.poll_batch_at(&mut buf, now, &mut |c, _| got.push((c.req_tid, c.result)));
            let want: Vec<(u64, i32)> = tids.iter().map(|&t| (t, 0)).collect();
            assert!(
                matches!(r, Ok(n) if n == tids.len()) && got == want,
                "round {round}: a batch of {k} CEs at slot {} took {r:?}: {got:?}; host's last stale read: {}",
                taken % slots,
                stale(&adv, 1)
            );
            wrapped += (taken % slots + k > slots) as u32;
            taken += k;
        }
        adv.drain();
        assert!(matches!(
            q.poll_batch_at(&mut buf, now, &mut |_, _| {}),
            Ok(0)
        ));
    }

    /// Rule 3 at a re-read of a CE: a device that publishes `compr_head` with no fence
    /// after the CE's write-back (out of spec) lets the head land first; the host, having
    /// read the head, reads the old CE, and takes the new one at a re-read once it has
    /// landed. Each re-read is invalidated and fenced (without: the host keeps loading the
    /// copy its first read cached, and gives up with `Stale`, `NotInvalidated` or
    /// `InvalidateNotFenced`). The host polls right after the device, nothing drained.
    #[test]
    fn a_ce_landing_after_its_head_is_taken_at_a_re_read() {
        let adv = Adversary::new(base(), 2, quiet());
        let (dmem, hmem) = (adv.agent(0), adv.agent(1));
        let mut scratch = vec![0u8; chan::MAX_IO as usize];
        let sab = Sabotage {
            skip_compr_head_fence: true,
            ..Sabotage::default()
        };
        let (mut b, _host, mut dev, mut now) =
            ready_with(&adv, &dmem, &hmem, &mut scratch, sab, 256);
        let q = &mut dev.queues[0];
        let mut buf = vec![0u8; 4096];
        for round in 0..64u64 {
            let tid = write(q, (round % 64) * 4096, round as u8);
            device_poll(&adv, &mut b, &mut now, MS);
            let mut got = None;
            for _ in 0..1000 {
                match q.poll_batch_at(&mut buf, now, &mut |c, _| got = Some(c.req_tid)) {
                    Ok(0) => {}
                    Ok(_) => break,
                    Err(e) => panic!(
                        "round {round}: {e:?}; host's last stale read: {}",
                        stale(&adv, 1)
                    ),
                }
            }
            assert_eq!(got, Some(tid), "round {round}");
        }
    }

    /// Rule 3 at the host's read of the durability line: a watermark the device
    /// published (and that landed) confirms the host's token at its next look.
    #[test]
    fn the_host_sees_a_landed_durable_watermark() {
        ready!(adv, 2 => b, host, dev, now);
        let q = &mut dev.queues[0];
        let tid = write(q, 0, 0x11);
        device_poll(&adv, &mut b, &mut now, MS);
        assert!(
            !complete(&adv, q, tid, "the write"),
            "completed durable before any flush"
        );
        // Past the STANDARD bound: the device writes back, flushes, publishes the watermark.
        device_poll(&adv, &mut b, &mut now, 20 * MS);
        assert_eq!(b.pending_writes(), 0, "the device flushed");
        adv.drain();
        let up = q.poll_durable(now).expect("poll_durable");
        assert!(
            q.is_durable(tid),
            "the host did not see the landed watermark ({up:?}); host's last stale read: {}",
            stale(&adv, 1)
        );
    }

    /// Rule 3 at the device's read of the host's durability line: a STANDARD write
    /// starts its write-back within half the power window the host advertised
    /// (docs/durability.md), so a window published (and landed) before the write is
    /// the one the device honours.
    #[test]
    fn the_device_honours_a_landed_power_window() {
        ready!(adv, 2 => b, host, dev, now);
        let q = &mut dev.queues[0];
        // A first write: the device reads (and caches) the host's line, no window yet.
        let t1 = write(q, 0, 0x21);
        device_poll(&adv, &mut b, &mut now, MS);
        complete(&adv, q, t1, "the first write");
        device_poll(&adv, &mut b, &mut now, 20 * MS);
        assert_eq!(b.pending_writes(), 0, "the first write flushed");
        // A 1 ms window: a STANDARD write's write-back is due 0.5 ms after it (not the
        // 5 ms of the 10 ms standard bound).
        q.set_power_window_us(1000).expect("power window");
        let t2 = write(q, 4096, 0x22);
        device_poll(&adv, &mut b, &mut now, MS);
        complete(&adv, q, t2, "the second write");
        device_poll(&adv, &mut b, &mut now, 2 * MS);
        assert_eq!(
            b.pending_writes(),
            0,
            "a STANDARD write not written back 2 ms after completion under a 1 ms power window; device's last stale read: {}",
            stale(&adv, 0)
        );
    }

    /// Rule 3 at re-attach: the backend restarts on a CPU whose cache still holds the
    /// completion ring as an incarnation before the last one left it (clean copies
    /// survive a restart; `crash_warm`). It must read the last published CE from
    /// memory: that CE's SE has run and must not run again — run twice, the host gets
    /// two CEs for one request.
    #[test]
    fn a_restarted_backend_reads_the_last_ce_from_memory() {
        // Agent 0: the backend, first and third incarnation (same CPU); agent 1: the
        // host; agent 2: the second incarnation, on another CPU.
        ready!(adv, 3 => b, host, dev, now);
        // First incarnation: a write completes and is consumed (CE slot 0 cached clean).
        let t1 = write(&mut dev.queues[0], 0, 0x31);
        device_poll(&adv, &mut b, &mut now, MS);
        complete(&adv, &mut dev.queues[0], t1, "the first write");
        let mut parts = Some(b.into_parts());
        adv.crash_warm(0);
        // Second incarnation on agent 2: a write completes, its CE (slot 1, in the
        // line of slot 0) is published but not consumed. Third, back on agent 0.
        let (dmem, dmem2) = (adv.agent(0), adv.agent(2));
        let mut t2 = 0;
        for (i, mem) in [&dmem2, &dmem].into_iter().enumerate() {
            adv.drain();
            now += 31 * SEC;
            dev.heartbeat(now).expect("host heartbeat");
            let (media, scratch) = parts.take().unwrap();
            let shm = Shm::new(mem, &NoTrace);
            let mut bi = Backend::start(shm, bcfg(Sabotage::default()), media, scratch, now)
                .expect("re-attach");
            if i == 0 {
                t2 = write(&mut dev.queues[0], 4096, 0x32);
                device_poll(&adv, &mut bi, &mut now, MS);
                parts = Some(bi.into_parts());
                adv.crash(2);
                continue;
            }
            for _ in 0..4 {
                device_poll(&adv, &mut bi, &mut now, MS);
            }
        }
        complete(&adv, &mut dev.queues[0], t2, "the second write");
        adv.drain();
        let again = dev.queues[0].poll(&mut [0u8; 4096]);
        assert!(
            matches!(again, Ok(None)),
            "a second completion after t2's ({again:?}): the re-attached backend ran t2's SE again; device's last stale read: {}",
            stale(&adv, 0)
        );
    }

    /// Rule 2 between two publications: the device answers the RESET (its line's
    /// `ack_epoch`) only after its durability line, fenced in between, because the host
    /// learns the backend's incarnation when the queue becomes ready. If the answer
    /// overtook the line, the host would learn the incarnation of whatever the line held
    /// before — and at its next look take the new one for a restart and declare the
    /// writes completed since lost. Without the fence the landing order is random:
    /// several schedules, half the write-backs slow.
    #[test]
    fn the_host_learns_the_incarnation_with_the_reset_answer() {
        for seed in 0..64 {
            let slow = AdvConfig {
                seed,
                slow_per_mille: 500,
                ..quiet()
            };
            let adv = Adversary::new(base(), 2, slow);
            let (dmem, hmem) = (adv.agent(0), adv.agent(1));
            let (dshm, hshm) = (Shm::new(&dmem, &NoTrace), Shm::new(&hmem, &NoTrace));
            let mut now = T0 + 31 * SEC;
            let mut scratch = vec![0u8; chan::MAX_IO as usize];
            let cfg = bcfg(Sabotage::default());
            let mut b = Backend::start(dshm, cfg, VecMedia::new(DISK), &mut scratch, now)
                .expect("re-attach");
            adv.drain();
            let hc = HostConfig {
                hostname: "hostA",
                noncoherent: true,
                ..HostConfig::default()
            };
            let host = Host::register(hshm, hc, now).expect("register");
            adv.drain();
            let bid = host.find_backend(now).expect("backend record");
            let mut dev = host.dev_start(bid, 1, now).expect("dev-start");
            // No drain from here to the answer: the lines land as they land.
            let mut at_ready = None;
            for _ in 0..10_000 {
                if dev.poll_ready(now).expect("poll_ready") {
                    at_ready = Some(stale(&adv, 1));
                    break;
                }
                now += MS;
                b.poll(now).expect("device poll");
            }
            let at_ready = at_ready.expect("the queue never became ready");
            let q = &mut dev.queues[0];
            let tid = write(q, 0, 0x41);
            device_poll(&adv, &mut b, &mut now, MS);
            complete(&adv, q, tid, "the write");
            let up = q.poll_durable(now).expect("poll_durable");
            assert_eq!(
                up.lost, 0,
                "seed {seed}: the host declared a write lost though the backend never restarted ({up:?}); its last stale read when the queue became ready: {at_ready}"
            );
        }
    }

    /// Rule 2 between clears: a stopping backend clears its segment records, then its
    /// backend record, each clear fenced, so whoever sees the backend record cleared
    /// sees its segments free (a backend provisioning then can have them: this region
    /// has exactly two). Without the fence the clears land in any order: several
    /// schedules, half the write-backs slow; agent 2 is the observer.
    #[test]
    fn a_stopped_backends_records_are_cleared_in_order() {
        for seed in 0..16 {
            let slow = AdvConfig {
                seed,
                slow_per_mille: 500,
                ..quiet()
            };
            let adv = Adversary::new(base(), 3, slow);
            let (dmem, cmem) = (adv.agent(0), adv.agent(2));
            let (dshm, cshm) = (Shm::new(&dmem, &NoTrace), Shm::new(&cmem, &NoTrace));
            let now = T0 + 31 * SEC;
            let mut scratch = vec![0u8; chan::MAX_IO as usize];
            let b = Backend::start(
                dshm,
                bcfg(Sabotage::default()),
                VecMedia::new(DISK),
                &mut scratch,
                now,
            )
            .expect("re-attach");
            adv.drain();
            let tp = Transport::open(cshm, true).expect("open");
            let used = |k: SlotKind| {
                let n = match k {
                    SlotKind::Host => tp.info.host_num,
                    SlotKind::Backend => tp.info.backend_num,
                    _ => tp.info.segment_num,
                };
                (0..n)
                    .filter(|&id| {
                        let state = match k {
                            SlotKind::Host => tp.host(id).expect("read").map(|l| l.rec.state),
                            SlotKind::Backend => tp.backend(id).expect("read").map(|l| l.rec.state),
                            _ => tp.segment(id).expect("read").map(|l| l.rec.state),
                        };
                        state.is_some_and(|s| s != STATE_NONE)
                    })
                    .count()
            };
            assert!(
                used(SlotKind::Host) >= 1 && used(SlotKind::Segment) == 2,
                "seed {seed}: the provisioned backend's records"
            );
            if let Err((_, e)) = b.stop(now) {
                panic!("seed {seed}: stop: {e:?}");
            }
            // No drain from here: the clears land as they land.
            let cleared = (0..100_000).any(|_| used(SlotKind::Backend) == 0);
            assert!(
                cleared,
                "seed {seed}: the stopped backend's record never read cleared"
            );
            let segments = used(SlotKind::Segment);
            assert_eq!(
                segments,
                0,
                "seed {seed}: segment records still in use after the backend record read cleared; observer's last stale read: {}",
                stale(&adv, 2)
            );
        }
    }

    /// The formatter's memory with an observer's look after each of its operations:
    /// the observer runs concurrently with the format, as fast as it likes.
    struct Watched<'a> {
        mem: AgentMem<'a>,
        look: &'a dyn Fn(),
    }

    impl SharedMem for Watched<'_> {
        fn size(&self) -> u64 {
            self.mem.size()
        }
        fn read(&self, off: u64, buf: &mut [u8]) {
            self.mem.read(off, buf);
            (self.look)()
        }
        fn write(&self, off: u64, data: &[u8]) {
            self.mem.write(off, data);
            (self.look)()
        }
        fn fill(&self, off: u64, len: u64, byte: u8) {
            self.mem.fill(off, len, byte);
            (self.look)()
        }
        fn load_u32(&self, off: u64) -> u32 {
            let v = self.mem.load_u32(off);
            (self.look)();
            v
        }
        fn store_u32(&self, off: u64, v: u32) {
            self.mem.store_u32(off, v);
            (self.look)()
        }
        fn load_u64(&self, off: u64) -> u64 {
            let v = self.mem.load_u64(off);
            (self.look)();
            v
        }
        fn store_u64(&self, off: u64, v: u64) {
            self.mem.store_u64(off, v);
            (self.look)()
        }
        fn write_back(&self, off: u64, len: u64) {
            self.mem.write_back(off, len);
            (self.look)()
        }
        fn invalidate(&self, off: u64, len: u64) {
            self.mem.invalidate(off, len);
            (self.look)()
        }
        fn store_fence(&self) {
            self.mem.store_fence();
            (self.look)()
        }
        fn full_fence(&self) {
            self.mem.full_fence();
            (self.look)()
        }
    }

    /// A region another run left behind: the provisioned transport of [`base`] with its
    /// magic word zero and the rest of its header garbage (a transport wiped, or a
    /// format that never finished). Its host, backend and segment records still verify.
    fn leftovers() -> Arc<Vec<u8>> {
        let mut m = base().to_vec();
        m[..tinfo::SIZE].fill(0xEE);
        m[tinfo::MAGIC..tinfo::MAGIC + 8].fill(0);
        Arc::new(m)
    }

    /// What lives at `off` of the metadata area of `info`.
    fn meta_slot(info: &TransportInfo, off: u64) -> String {
        let slot = |area: u64| (off - area) / OBJ_SLOT;
        if off < info.host_area_off {
            format!("the header page (byte {off:#x})")
        } else if off < info.backend_area_off {
            format!("host record {}", slot(info.host_area_off))
        } else if off < info.blkdev_area_off {
            format!("backend record {}", slot(info.backend_area_off))
        } else {
            format!("blkdev record {}", slot(info.blkdev_area_off))
        }
    }

    /// One look of an observer scanning for the transport (as a device waiting for a
    /// host to format does): `None` while memory holds no magic; once it does, whether
    /// memory also holds everything the magic stands for — the formatter's header,
    /// and zero host, backend, blkdev and segment records.
    fn look_for_transport(obs: &AgentMem<'_>, info: &TransportInfo) -> Option<Result<(), String>> {
        let seg_len = 2 * PAGE as u64;
        let meta_end = info.segment_area_off;
        for s in 0..info.segment_num {
            obs.invalidate(info.segment_off(s), seg_len);
        }
        obs.invalidate(0, meta_end);
        obs.full_fence();
        // The segment records are read before the head: with the format's fence they
        // land before the magic can, so a later read of the magic can only find more.
        let mut segs = vec![vec![0u8; seg_len as usize]; info.segment_num as usize];
        for (s, b) in segs.iter_mut().enumerate() {
            obs.read(info.segment_off(s as u32), b);
        }
        let mut head = vec![0u8; meta_end as usize];
        obs.read(0, &mut head);
        let magic = u64::from_le_bytes(head[tinfo::MAGIC..tinfo::MAGIC + 8].try_into().unwrap());
        if magic != TRANSPORT_MAGIC {
            return None;
        }
        let rule = "everything the magic stands for is written back, then fenced, before the magic";
        let why = || stale_of(obs);
        let found = TransportInfo::decode(&head[..tinfo::SIZE]);
        if found.as_ref() != Some(info) {
            let valid = found.map(|f| f.validate(obs.size()));
            return Some(Err(format!(
                "the magic is visible over a header that is not the formatter's (validate: {valid:?}; {rule}); observer's last stale read: {}",
                why()
            )));
        }
        if let Some(at) = head[tinfo::SIZE..].iter().position(|&b| b != 0) {
            let off = (tinfo::SIZE + at) as u64;
            return Some(Err(format!(
                "the magic is visible while {} is not yet zero (byte {off:#x}; {rule}); observer's last stale read: {}",
                meta_slot(info, off),
                why()
            )));
        }
        for (s, b) in segs.iter().enumerate() {
            if let Some(at) = b.iter().position(|&x| x != 0) {
                return Some(Err(format!(
                    "the magic is visible while segment record {s} is not yet zero (byte {at:#x} of its slot; {rule}); observer's last stale read: {}",
                    why()
                )));
            }
        }
        Some(Ok(()))
    }

    fn stale_of(m: &AgentMem<'_>) -> String {
        m.last_stale().map_or("none".into(), |s| s.to_string())
    }

    /// Rule 2 for the transport itself: its magic is its index. A peer scanning for it
    /// (a device waiting for a host to format) must never find it over a header or
    /// records still being written — else it opens another run's header or takes
    /// another run's records for live ones — and must find it once the format is
    /// done. The region holds a wiped transport's leftovers; agent 1 looks after each
    /// operation of the formatter (agent 0) and on after it returned. Without the fence
    /// the landing order is random: several schedules, half the write-backs slow.
    #[test]
    fn the_transport_magic_is_found_only_over_a_complete_format() {
        let old = leftovers();
        for seed in 0..32 {
            let slow = AdvConfig {
                seed,
                slow_per_mille: 500,
                ..quiet()
            };
            let adv = Adversary::new(old.clone(), 3, slow);
            let obs = adv.agent(1);
            let info = TransportInfo::for_size(adv.agent(0).size(), FLAGS).expect("geometry");
            let seen = std::cell::RefCell::new(None);
            let look = || {
                if seen.borrow().is_none() {
                    *seen.borrow_mut() = look_for_transport(&obs, &info);
                }
            };
            let fmem = Watched {
                mem: adv.agent(0),
                look: &look,
            };
            let tp = Transport::format(Shm::new(&fmem, &NoTrace), FLAGS, false, T0 + 31 * SEC)
                .expect("format");
            assert_eq!(tp.info, info, "seed {seed}: the formatted geometry");
            for _ in 0..10_000 {
                look();
                if seen.borrow().is_some() {
                    break;
                }
            }
            match seen.into_inner() {
                None => panic!(
                    "seed {seed}: the observer never found the transport: the formatter did not write its magic back; observer's last stale read: {}",
                    stale_of(&obs)
                ),
                Some(Err(e)) => panic!("seed {seed}: {e}"),
                Some(Ok(())) => {}
            }
        }
    }

    /// Rule 3 for a record's writer: `write_record` takes the copy to overwrite and the
    /// next seq from memory, not from its cache — which may hold copies an earlier
    /// incarnation of the writer left there (clean copies survive a restart on the
    /// same CPU, `crash_warm`). Agent 0 writes a blkdev record twice and restarts;
    /// agent 2 (another CPU) writes it twice more; agent 0 writes it again, straight
    /// away: its write must be the one readers take (a stale pick overwrites the
    /// older copy in memory with a seq below the other's, and readers keep the
    /// previous record).
    #[test]
    fn a_record_written_over_an_older_incarnations_copies_is_the_latest() {
        let adv = Adversary::new(base(), 3, quiet());
        let rec = |n: u64| BlkdevInfo {
            state: STATE_RUNNING,
            alive_ts: T0 + n * SEC,
            backend_id: 0,
            host_id: 0,
            mapped_id: 0,
            features: 0,
        };
        let (m0, m1, m2) = (adv.agent(0), adv.agent(1), adv.agent(2));
        let open = |m| Transport::open(Shm::new(m, &NoTrace), true).expect("open");
        let first = open(&m0);
        first.write_blkdev(0, &rec(1)).expect("write");
        first.write_blkdev(0, &rec(2)).expect("write");
        adv.drain();
        adv.crash_warm(0);
        let second = open(&m2);
        second.write_blkdev(0, &rec(3)).expect("write");
        second.write_blkdev(0, &rec(4)).expect("write");
        adv.drain();
        adv.crash(2);
        let third = open(&m0);
        third.write_blkdev(0, &rec(5)).expect("write");
        adv.drain();
        let got = open(&m1).blkdev(0).expect("read").map(|l| l.rec);
        assert_eq!(
            got,
            Some(rec(5)),
            "readers take another record than the last one written; the writer's last stale read: {}",
            stale_of(&m0)
        );
    }

    /// A cleared record is written back: the peer sees the slot free. The host's
    /// dev-stop clears its blkdev record, which the device's stop must see (else it
    /// refuses: a running blkdev uses it); the device's stop clears its backend record,
    /// which the host must see (else it would dev-start a stopped backend).
    #[test]
    fn a_cleared_record_is_seen_cleared() {
        ready!(adv, 2 => b, host, dev, now);
        dev.stop().expect("dev-stop");
        adv.drain();
        if let Err((_, e)) = b.stop(now) {
            panic!(
                "the device's stop after the host's dev-stop: {e:?}; device's last stale read: {}",
                stale(&adv, 0)
            );
        }
        adv.drain();
        let found = host.find_backend(now);
        assert!(
            found.is_err(),
            "the host still finds the stopped backend ({found:?}); host's last stale read: {}",
            stale(&adv, 1)
        );
    }
}

/// `ADVERSARY_SEEDS=a..b cargo test -p host --test adversary replay -- --ignored --nocapture`:
/// run those schedules with every rule kept and print each one's outcome and time.
#[test]
#[ignore]
fn replay() {
    let s = std::env::var("ADVERSARY_SEEDS").unwrap_or_else(|_| "0..10".into());
    let (a, b) = s.split_once("..").expect("a..b");
    for seed in a.parse::<u64>().unwrap()..b.parse::<u64>().unwrap() {
        let t = std::time::Instant::now();
        let v = schedule(seed, Faults::default());
        println!("seed {seed}: {:?} {:?}", t.elapsed(), v.first());
    }
}
