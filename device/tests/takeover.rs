//! Restart after a crash: a backend whose previous incarnation died less than 30 s
//! ago is refused (its heartbeat still looks alive) unless it asks to take over its
//! own records; with `takeover` it re-attaches to the same backend slot at once.

use device::backend::{Backend, BackendConfig, BackendError};
use device::layout::*;
use device::native::{HeapMem, VecMedia};
use device::shm::Shm;
use device::trace::NoTrace;
use device::transport::{Transport, TransportError};

const T0: u64 = 1_700_000_000_000_000_000;
const SEC_NS: u64 = 1_000_000_000;

#[test]
fn restart_within_heartbeat_timeout_needs_takeover() {
    let mem = HeapMem::new(TransportInfo::region_for(2) as usize);
    let shm = Shm::new(&mem, &NoTrace);
    Transport::format(shm, tflags::MULTIHOST, false, T0).unwrap();
    let mut scratch = vec![0u8; chan::MAX_IO as usize];
    let cfg = BackendConfig {
        n_handlers: 1,
        ..BackendConfig::default()
    };
    let first = Backend::start(shm, cfg, VecMedia::new(1 << 20), &mut scratch, T0).unwrap();
    let id = first.backend_id;
    // The device "dies": its records stay, with a heartbeat from T0.
    std::mem::forget(first);
    let later = T0 + 5_000_000_000; // 5 s: still alive by the 30 s rule
    let mut scratch2 = vec![0u8; chan::MAX_IO as usize];
    let refused = Backend::start(shm, cfg, VecMedia::new(1 << 20), &mut scratch2, later);
    assert!(
        matches!(refused, Err(BackendError::Transport(TransportError::Alive))),
        "{:?}",
        refused.err()
    );
    let mut scratch3 = vec![0u8; chan::MAX_IO as usize];
    let cfg2 = BackendConfig {
        takeover: true,
        ..cfg
    };
    let again =
        Backend::start(shm, cfg2, VecMedia::new(1 << 20), &mut scratch3, later).expect("takeover");
    assert_eq!(again.backend_id, id, "re-attached to its own backend slot");
    // Another device name may not take over this one's records.
    let mut scratch4 = vec![0u8; chan::MAX_IO as usize];
    let other = BackendConfig {
        hostname: "other",
        takeover: true,
        ..cfg
    };
    let o = Backend::start(shm, other, VecMedia::new(1 << 20), &mut scratch4, later)
        .expect("a second device");
    assert_ne!(o.backend_id, id);
}

/// The records a restart re-attaches by are untrusted bytes: a host that forges the
/// dead device's backend record to list another backend's segment (and that
/// segment's record to name the dead device's backend) must not lead the restarted
/// device into that segment.
#[test]
fn reattach_refuses_a_segment_another_backend_lists() {
    let mem = HeapMem::new(TransportInfo::region_for(3) as usize);
    let shm = Shm::new(&mem, &NoTrace);
    Transport::format(shm, tflags::MULTIHOST, false, T0).unwrap();
    let tp = Transport::open(shm, false).unwrap();
    let a_cfg = BackendConfig {
        hostname: "dev-a",
        path: "/dev/a",
        ..BackendConfig::default()
    };
    let b_cfg = BackendConfig {
        hostname: "dev-b",
        path: "/dev/b",
        ..BackendConfig::default()
    };
    let (mut sa, mut sb, mut sa2) = (
        vec![0u8; chan::MAX_IO as usize],
        vec![0u8; chan::MAX_IO as usize],
        vec![0u8; chan::MAX_IO as usize],
    );
    let a = Backend::start(shm, a_cfg, VecMedia::new(1 << 20), &mut sa, T0).unwrap();
    let b = Backend::start(shm, b_cfg, VecMedia::new(1 << 20), &mut sb, T0).unwrap();
    let (a_id, a_seg) = (a.backend_id, a.channel_segments().next().unwrap());
    let b_seg = b.channel_segments().next().unwrap();
    assert_ne!(a_seg, b_seg);
    drop(a); // device A dies; B stays alive
    // The forgery: A's record lists B's segment, B's segment record names A.
    let mut rec = tp.backend(a_id).unwrap().unwrap().rec;
    rec.handler_channels[0] = b_seg;
    tp.write_backend(a_id, &rec).unwrap();
    let mut si = tp.segment(b_seg).unwrap().unwrap().rec;
    si.backend_id = a_id;
    tp.write_segment(b_seg, &si).unwrap();
    let base = tp.channel_base(b_seg).unwrap();
    let before =
        mem.to_vec()[base as usize + 2 * PAGE..][..SEGMENT_SIZE as usize - 2 * PAGE].to_vec();
    let cfg = BackendConfig {
        takeover: true,
        ..a_cfg
    };
    let r = Backend::start(shm, cfg, VecMedia::new(1 << 20), &mut sa2, T0 + SEC_NS);
    assert!(
        matches!(r, Err(BackendError::Mismatch)),
        "re-attached to another backend's segment: {:?}",
        r.as_ref().map(|x| x.channel_segments().collect::<Vec<_>>())
    );
    drop(r);
    let after =
        mem.to_vec()[base as usize + 2 * PAGE..][..SEGMENT_SIZE as usize - 2 * PAGE].to_vec();
    assert!(
        before == after,
        "B's channel (below its segment info) was written"
    );
    drop(b);
}

/// A clean stop leaves neither a host nor a backend record RUNNING: the device can
/// start again at once, without `takeover` and without waiting for the heartbeat
/// timeout.
#[test]
fn clean_stop_clears_own_records_and_restart_needs_no_takeover() {
    let mem = HeapMem::new(TransportInfo::region_for(2) as usize);
    let shm = Shm::new(&mem, &NoTrace);
    Transport::format(shm, tflags::MULTIHOST, false, T0).unwrap();
    let tp = Transport::open(shm, false).unwrap();
    let mut scratch = vec![0u8; chan::MAX_IO as usize];
    let cfg = BackendConfig::default();
    let b = Backend::start(shm, cfg, VecMedia::new(1 << 20), &mut scratch, T0).unwrap();
    let (host_id, backend_id) = (b.host_id, b.backend_id);
    let media = b.stop(T0 + SEC_NS).map_err(|(_, e)| e).expect("clean stop");
    let state = |s: Option<u8>| s.unwrap_or(STATE_NONE);
    assert_eq!(
        state(tp.host(host_id).unwrap().map(|l| l.rec.state)),
        STATE_NONE,
        "host record left behind"
    );
    assert_eq!(
        state(tp.backend(backend_id).unwrap().map(|l| l.rec.state)),
        STATE_NONE,
        "backend record left behind"
    );
    let mut scratch2 = vec![0u8; chan::MAX_IO as usize];
    let again = Backend::start(shm, cfg, media, &mut scratch2, T0 + 2 * SEC_NS);
    assert!(
        again.is_ok(),
        "restart after a clean stop: {:?}",
        again.err()
    );
}

/// `three_slots_one_backend!(tp, be)`: a transport with three slots of each kind and a
/// one-channel backend started at `T0` on it.
macro_rules! three_slots_one_backend {
    ($tp:ident, $be:ident) => {
        let mem = HeapMem::new(TransportInfo::region_for(3) as usize);
        let shm = Shm::new(&mem, &NoTrace);
        Transport::format(shm, tflags::MULTIHOST, false, T0).unwrap();
        let $tp = Transport::open(shm, false).unwrap();
        let mut scratch = vec![0u8; chan::MAX_IO as usize];
        let cfg = BackendConfig {
            n_handlers: 1,
            ..BackendConfig::default()
        };
        let mut $be = Backend::start(shm, cfg, VecMedia::new(1 << 20), &mut scratch, T0).unwrap();
    };
}

/// A Linux host that stopped its heartbeat (cbd-host killed, never restarted): at its
/// first heartbeat after the 30 s timeout the device frees that host's blkdev record and
/// the dead host record; a blkdev whose host still beats is left alone.
#[test]
fn a_dead_hosts_blkdev_is_freed_after_the_timeout() {
    three_slots_one_backend!(tp, be);
    let dead = tp.register_host("killed", T0).unwrap();
    let live = tp.register_host("beating", T0).unwrap();
    let backend_id = be.backend_id;
    let blkdev = |host_id, alive_ts| BlkdevInfo {
        state: STATE_RUNNING,
        alive_ts,
        backend_id,
        host_id,
        mapped_id: 0,
        features: 0,
    };
    tp.write_blkdev(0, &blkdev(dead, T0)).unwrap();
    tp.write_blkdev(1, &blkdev(live, T0)).unwrap();
    let state = |k: &str, id| match k {
        "host" => tp.host(id).unwrap().map_or(0, |h| h.rec.state),
        _ => tp.blkdev(id).unwrap().map_or(0, |d| d.rec.state),
    };
    // 29 s: both still alive by the 30 s rule.
    assert_eq!(be.reap_dead_blkdevs(T0 + 29 * SEC_NS).unwrap(), 0);
    assert_eq!(
        (state("blkdev", 0), state("host", dead)),
        (STATE_RUNNING, STATE_RUNNING)
    );
    // The live host beats at 20 s; at 31 s only the silent one is freed, by the heartbeat.
    let mut h = tp.host(live).unwrap().unwrap().rec;
    h.alive_ts = T0 + 20 * SEC_NS;
    tp.write_host(live, &h).unwrap();
    tp.write_blkdev(1, &blkdev(live, T0 + 20 * SEC_NS)).unwrap();
    be.heartbeat(T0 + 31 * SEC_NS).unwrap();
    assert_eq!(state("blkdev", 0), STATE_NONE, "dead host's blkdev freed");
    assert_eq!(state("host", dead), STATE_NONE, "dead host's record freed");
    assert_eq!(
        state("blkdev", 1),
        STATE_RUNNING,
        "a beating host's blkdev stays"
    );
    assert_eq!(state("host", live), STATE_RUNNING);
    // The device's own host record is never reaped.
    assert_eq!(state("host", be.host_id), STATE_RUNNING);
}

/// A dead host's record is freed only when no blkdev names it any more: its blkdev on
/// this backend is freed, but one on another backend (which that backend reaps, not
/// this one) still names the host, so the host record stays.
#[test]
fn a_dead_host_still_named_by_another_backends_blkdev_keeps_its_record() {
    three_slots_one_backend!(tp, be);
    let dead = tp.register_host("killed", T0).unwrap();
    let blkdev = |backend_id| BlkdevInfo {
        state: STATE_RUNNING,
        alive_ts: T0,
        backend_id,
        host_id: dead,
        mapped_id: 0,
        features: 0,
    };
    tp.write_blkdev(0, &blkdev(be.backend_id)).unwrap();
    tp.write_blkdev(2, &blkdev(be.backend_id + 1)).unwrap();
    assert_eq!(be.reap_dead_blkdevs(T0 + 31 * SEC_NS).unwrap(), 1);
    let blkdev_state = |id| tp.blkdev(id).unwrap().map_or(STATE_NONE, |d| d.rec.state);
    assert_eq!(blkdev_state(0), STATE_NONE, "our dead blkdev freed");
    assert_eq!(
        blkdev_state(2),
        STATE_RUNNING,
        "another backend's blkdev is not ours to free"
    );
    assert_eq!(
        tp.host(dead).unwrap().map(|h| h.rec.state),
        Some(STATE_RUNNING),
        "the host record was freed while a blkdev still names it"
    );
}
