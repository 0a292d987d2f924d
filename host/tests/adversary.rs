//! The protocol in non-coherent mode against the adversarial memory: random
//! schedules of host and device steps, random early/late/out-of-order write-backs,
//! RESETs and backend crashes. With every rule followed there must be no
//! violation; with any one write-back, invalidate or CRC check removed (or host
//! and device sharing a line) the adversary must catch it.

mod common;
use common::{Model, Rng};
use device::adversary::{AdvConfig, Adversary};
use device::backend::{Backend, BackendConfig, Sabotage};
use device::layout::*;
use device::native::{HeapMem, VecMedia};
use device::shm::{SharedMem, Shm};
use device::trace::NoTrace;
use device::transport::{Transport, format_flags};
use host::engine::{HostConfig, HostError, HostSabotage};
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

/// One random schedule; returns every violation found (empty = correct).
fn schedule(seed: u64, f: Faults) -> Vec<String> {
    let mut r = Rng(seed.wrapping_mul(0x2545F4914F6CDD1D) ^ 0xA5A5);
    let evict = [0, 5, 30, 200][r.below(4) as usize];
    let adv = Adversary::new(
        base(),
        2,
        AdvConfig {
            seed: r.next(),
            evict_per_mille: evict,
            max_delay: 48,
        },
    );
    let (dmem, hmem) = (adv.agent(0), adv.agent(1));
    let (dshm, hshm) = (Shm::new(&dmem, &NoTrace), Shm::new(&hmem, &NoTrace));
    let mut v: Vec<String> = Vec::new();
    let mut now = T0 + 31 * SEC;
    let mut scratch_buf = vec![0u8; chan::MAX_IO as usize];
    let mut bc = bcfg(f.dev);
    bc.sabotage.shared_ctrl_line = f.dev.shared_ctrl_line || f.host.shared_ctrl_line;
    let mut backend = Some(
        Backend::start(dshm, bc, VecMedia::new(DISK), &mut scratch_buf, now).expect("re-attach"),
    );
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
    let host = host::engine::Host::register(hshm, hc, now).expect("host register");
    // The backend's record write lands some time after it was written back: retry.
    let mut bid = None;
    for _ in 0..1000 {
        if let Ok(id) = host.find_backend(now) {
            bid = Some(id);
            break;
        }
        backend.as_mut().unwrap().poll(now).expect("device poll");
    }
    let bid = bid.expect("backend record never became visible");
    let mut dev = host.dev_start(bid, 2, now).expect("dev-start");

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
    let mut model = Model::new(DISK);
    let mut payload = Vec::new();
    let mut read_buf = vec![0u8; chan::MAX_IO as usize];
    let (mut submitted, mut ready, mut resetting, mut crashed) = (0u64, false, false, false);
    let (mut who, mut burst, mut steps) = (0u64, 0u64, 0u64);
    while v.is_empty() {
        if submitted == total && model.inflight.is_empty() && !resetting {
            break;
        }
        steps += 1;
        if steps > 200_000 {
            v.push(format!(
                "no progress: submitted {submitted}/{total}, in flight {}",
                model.inflight.len()
            ));
            break;
        }
        if burst == 0 {
            who = r.below(2);
            burst = 1 + if r.chance(150) {
                r.below(300)
            } else {
                r.below(6)
            };
        }
        burst -= 1;
        now += 10_000_000;
        if who == 0 {
            if let Some(b) = backend.as_mut()
                && let Err(e) = b.poll(now)
            {
                v.push(format!("device: {e:?}"));
            }
            continue;
        }
        // ---- host step
        if let Err(e) = dev.heartbeat(now) {
            v.push(format!("host heartbeat: {e:?}"));
        }
        if !ready {
            match dev.poll_ready(now) {
                Ok(x) => ready = x,
                Err(e) => v.push(format!("host reset: {e:?}")),
            }
            continue;
        }
        if resetting {
            match dev.queues[1].poll_reset(now) {
                Ok(done) => resetting = !done,
                Err(e) => v.push(format!("host reset q1: {e:?}")),
            }
        } else if reset_at == Some(submitted) && dev.queues[1].in_flight() == 0 {
            dev.queues[1].start_reset(now).unwrap();
            resetting = true;
        }
        // (Not while a RESET is pending: the host gives a RESET 30 s, a re-attach
        // needs the backend dead for 30 s, so the RESET would rightly time out.)
        if crash_at == Some(submitted) && !crashed && !resetting {
            // Backend dies: its cache (dirty lines never written back) is lost; after
            // the 30 s liveness timeout everything in flight has landed; re-attach.
            crashed = true;
            model.flush_eio_ok = true;
            let (media, scratch) = backend.take().unwrap().into_parts();
            adv.crash(0);
            adv.drain();
            now += 31 * SEC;
            match Backend::start(dshm, bc, media, scratch, now) {
                Ok(b) => backend = Some(b),
                Err(e) => {
                    v.push(format!("re-attach: {e:?}"));
                    break;
                }
            }
        }
        if submitted < total && r.chance(600) {
            let q = r.below(2) as usize;
            if !(q == 1 && (resetting || reset_at == Some(submitted))) {
                let req = model.random_request(&mut r, 64 << 10, &mut payload);
                match dev.queues[q].submit(req, &payload) {
                    Ok(tid) => {
                        model.submitted(q, tid, req, &payload);
                        submitted += 1;
                    }
                    Err(HostError::Busy) => {}
                    Err(e) => v.push(format!("submit: {e:?}")),
                }
            }
        }
        for (qi, q) in dev.queues.iter_mut().enumerate() {
            match q.poll(&mut read_buf) {
                Ok(Some(c)) => {
                    if let Err(e) = model.completed(qi, &c, &read_buf) {
                        v.push(e);
                    }
                }
                Ok(None) => {}
                Err(e) => v.push(format!("host poll q{qi}: {e:?}")),
            }
        }
    }
    let Some(backend) = backend else { return v };
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
    v.extend(adv.violations());
    v
}

#[test]
fn noncoherent_mode_survives_1000_adversarial_schedules() {
    let mut failures = Vec::new();
    for seed in 0..1000 {
        let v = schedule(seed, Faults::default());
        if !v.is_empty() {
            failures.push((seed, v));
        }
    }
    assert!(
        failures.is_empty(),
        "{} schedules failed, first: {:?}",
        failures.len(),
        failures.first()
    );
}

/// Run schedules with one rule removed until the adversary catches it.
fn caught(f: Faults, expect: &[&str]) -> String {
    for seed in 0..400 {
        let v = schedule(seed, f);
        if let Some(m) = v.iter().find(|m| expect.iter().any(|e| m.contains(e))) {
            return format!("seed {seed}: {m}");
        }
        assert!(
            v.is_empty() || seed < 400,
            "unexpected kind of failure: {v:?}"
        );
    }
    panic!("the adversary did not catch the removed rule in 400 schedules");
}

#[test]
fn catches_missing_ce_write_back() {
    let f = Faults {
        dev: Sabotage {
            skip_ce_write_back: true,
            ..Sabotage::default()
        },
        ..Faults::default()
    };
    let m = caught(f, &["Stale", "no progress"]);
    println!("missing write-back caught: {m}");
}

#[test]
fn catches_missing_se_invalidate() {
    let f = Faults {
        dev: Sabotage {
            skip_se_invalidate: true,
            ..Sabotage::default()
        },
        ..Faults::default()
    };
    let m = caught(f, &["Stale", "no progress"]);
    println!("missing invalidate caught: {m}");
}

#[test]
fn catches_skipped_crc_check() {
    let f = Faults {
        dev: Sabotage {
            skip_crc_check: true,
            ..Sabotage::default()
        },
        ..Faults::default()
    };
    let m = caught(f, &["wrong data", "media differs"]);
    println!("skipped CRC check caught: {m}");
}

#[test]
fn catches_host_and_device_sharing_a_line() {
    let f = Faults {
        dev: Sabotage {
            shared_ctrl_line: true,
            ..Sabotage::default()
        },
        ..Faults::default()
    };
    let m = caught(f, &["both have dirty data", "lost update"]);
    println!("shared line caught: {m}");
}

#[test]
fn catches_index_published_before_payload_write_back() {
    let f = Faults {
        host: HostSabotage {
            publish_before_payload_write_back: true,
            ..HostSabotage::default()
        },
        ..Faults::default()
    };
    let m = caught(f, &["failed with -5", "wrong data", "media differs"]);
    println!("early publish caught: {m}");
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
