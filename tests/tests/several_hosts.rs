//! Several hosts on one device, natively: one transport, the device's two backend engines
//! (two disks, `/dev/cbdfw0` and `/dev/cbdfw1`, one host record) and two host engines, each
//! dev-started against its own backend, all stepped in one thread with a test clock. The
//! VM version (one device VM and two Linux VMs) is `paired.rs`'s `several_hosts_*`.
//!
//! * A hostile host writes garbage into its own channel segments (segment infos, control
//!   page, rings, data area) and into the shared records it may touch (its host and blkdev
//!   records, its backend's record, free slots) while the other host does verified I/O:
//!   every request of the other host completes with the data it wrote, and its disk holds
//!   exactly that.
//! * A dead blkdev record naming another host's backend (left over, or forged) does not
//!   decide that host's feature negotiation.
//! * A third host's dev-start against a backend in use is refused (`InUse`) and leaves no
//!   record; the first host's I/O goes on.

use device::backend::{Backend, BackendConfig, BackendError};
use device::channel::ChannelGeom;
use device::layout::*;
use device::native::{HeapMem, VecMedia};
use device::rng::SplitMix64;
use device::shm::Shm;
use device::trace::{NoTrace, TraceEvent, Tracer};
use device::transport::{Transport, format_flags, is_alive};
use host::engine::{Blkdev, Host, HostConfig, HostError, Request};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

const DISK: usize = 1 << 20;
const T0: u64 = 1_700_000_000_000_000_000;
const MS: u64 = 1_000_000;
const SEC: u64 = 1_000 * MS;

/// Counts the error completions and rejections the device reports (on one view).
#[derive(Default)]
struct Counts {
    error_ces: AtomicU64,
    rejected: AtomicU64,
}
impl Tracer for Counts {
    fn event(&self, ev: &TraceEvent) {
        match ev {
            TraceEvent::CePosted { result, .. } if *result != 0 => {
                self.error_ces.fetch_add(1, Relaxed);
            }
            TraceEvent::Rejected { .. } => {
                self.rejected.fetch_add(1, Relaxed);
            }
            _ => {}
        }
    }
}

fn bcfg(path: &'static str, join_host: bool, noncoherent: bool) -> BackendConfig<'static> {
    BackendConfig {
        path,
        noncoherent,
        n_handlers: 2,
        batch: 8,
        join_host,
        ..BackendConfig::default()
    }
}

type Engine<'a> = Backend<'a, HeapMem, VecMedia>;

/// A formatted 4-segment transport (CRC entries) and the device's two backends on it,
/// started as the kernel starts them (the second joins the first's host record).
fn device<'a>(
    mem: &'a HeapMem,
    tracer_a: &'a dyn Tracer,
    tracer_b: &'a dyn Tracer,
    scratch: &'a mut [Vec<u8>; 2],
    nc: bool,
) -> (Engine<'a>, Engine<'a>) {
    Transport::format(Shm::new(mem, &NoTrace), format_flags(true), false, T0).unwrap();
    let [sa, sb] = scratch;
    let start = |tracer, path, join, scratch| {
        Backend::start(
            Shm::new(mem, tracer),
            bcfg(path, join, nc),
            VecMedia::new(DISK),
            scratch,
            T0,
        )
    };
    let a = start(tracer_a, "/dev/cbdfw0", false, sa).expect("backend 0");
    let b = start(tracer_b, "/dev/cbdfw1", true, sb).expect("backend 1 joins the host record");
    assert_eq!(a.host_id, b.host_id, "one device, one host record");
    assert_ne!(a.backend_id, b.backend_id);
    let (ca, cb): (Vec<u32>, Vec<u32>) = (
        a.channel_segments().collect(),
        b.channel_segments().collect(),
    );
    assert!(
        ca.iter().all(|s| !cb.contains(s)),
        "channels {ca:?} and {cb:?} overlap"
    );
    (a, b)
}

fn new_mem() -> HeapMem {
    HeapMem::new(TransportInfo::region_for(4) as usize)
}

fn scratch() -> [Vec<u8>; 2] {
    [
        vec![0; chan::MAX_IO as usize],
        vec![0; chan::MAX_IO as usize],
    ]
}

fn hcfg(name: &'static str, noncoherent: bool) -> HostConfig<'static> {
    HostConfig {
        hostname: name,
        noncoherent,
        ..HostConfig::default()
    }
}

/// dev-start `host` against `backend_id` and drive the RESETs (polling the device) until
/// every queue is ready.
fn attach<'a>(
    host: &Host<'a, HeapMem>,
    backend_id: u32,
    engines: &mut [&mut Engine<'_>],
    now: &mut u64,
) -> Blkdev<'a, HeapMem> {
    let mut bd = host.dev_start(backend_id, 0, *now).expect("dev-start");
    for _ in 0..1000 {
        for e in engines.iter_mut() {
            let _ = e.poll(*now);
        }
        if bd.poll_ready(*now).expect("poll_ready") {
            return bd;
        }
        *now += MS;
    }
    panic!("RESET not answered");
}

/// The well-behaved host's side: random writes and read-backs checked against a model.
struct Verified<'a, 'h> {
    bd: &'h mut Blkdev<'a, HeapMem>,
    model: Vec<u8>,
    rng: SplitMix64,
    buf: Vec<u8>,
    requests: u64,
}

impl Verified<'_, '_> {
    /// One request on queue `q`, polled to its completion while `step` moves the rest of
    /// the world (the device, the hostile host) and the clock.
    fn one(&mut self, step: &mut dyn FnMut()) -> Result<(), String> {
        let q = (self.requests % self.bd.queues.len() as u64) as usize;
        let blocks = 1 + self.rng.below(16) as usize;
        let len = blocks * 4096;
        let offset = self.rng.below(((DISK - len) / 4096) as u64 + 1) as usize * 4096;
        let write = self.rng.chance(500);
        let mut payload = vec![0u8; len];
        if write {
            let seed = self.rng.next();
            let mut r = SplitMix64::new(seed);
            payload.iter_mut().for_each(|b| *b = r.next() as u8);
        }
        let op = if write { op::WRITE } else { op::READ };
        let req = Request {
            op,
            offset: offset as u64,
            len: len as u32,
        };
        let tid = loop {
            match self.bd.queues[q].submit(req, if write { &payload } else { &[] }) {
                Ok(t) => break t,
                Err(HostError::Busy) => step(),
                Err(e) => return Err(format!("submit {req:?}: {e:?}")),
            }
        };
        self.requests += 1;
        for _ in 0..100_000 {
            step();
            match self.bd.queues[q].poll(&mut self.buf) {
                Ok(Some(c)) => {
                    if c.req_tid != tid || c.result != 0 {
                        return Err(format!("{req:?}: completion {c:?} (tid {tid})"));
                    }
                    if write {
                        self.model[offset..offset + len].copy_from_slice(&payload);
                    } else if self.buf[..len] != self.model[offset..offset + len] {
                        return Err(format!("{req:?}: read back other data than was written"));
                    }
                    return Ok(());
                }
                Ok(None) => {}
                Err(e) => return Err(format!("{req:?}: poll: {e:?}")),
            }
        }
        Err(format!("{req:?}: no completion"))
    }
}

/// One act of the hostile host: garbage into its own channel segments, its own records,
/// its backend's record or a free slot.
fn vandalize(shm: Shm<'_, HeapMem>, info: &TransportInfo, own: &Own, r: &mut SplitMix64) {
    let mut junk = vec![0u8; 1 + r.below(4096) as usize];
    junk.iter_mut().for_each(|b| *b = r.next() as u8);
    let seg = own.segs[r.below(own.segs.len() as u64) as usize];
    let base = info.segment_off(seg);
    if r.chance(300) {
        forge_request(shm, info, base, r);
        return;
    }
    // The area hit (start, length): never beyond what the hostile host may touch.
    let (start, area) = match r.below(10) {
        // Segment infos, control page, CE ring and the start of the SE ring: the
        // words the device reads every poll.
        0..=3 => (base, 0x9000),
        // One 32-bit word of the control page (ring pointers, mgmt command).
        4 | 5 => {
            junk.truncate(4);
            (base + 0x2000 + 4 * r.below(32), 4)
        }
        // Anywhere in its segments (SE ring, data area).
        6 => (base, SEGMENT_SIZE),
        // Its host record, its blkdev record, its backend's record.
        7 => (info.host_slot(own.host_id), OBJ_SLOT),
        8 => (info.blkdev_slot(own.blkdev_id), OBJ_SLOT),
        _ if r.chance(500) => (info.backend_slot(own.backend_id), OBJ_SLOT),
        // The last slot of a record area (free in this test).
        _ => match r.below(3) {
            0 => (info.host_slot(info.host_num - 1), OBJ_SLOT),
            1 => (info.blkdev_slot(info.blkdev_num - 1), OBJ_SLOT),
            _ => (info.backend_slot(info.backend_num - 1), OBJ_SLOT),
        },
    };
    let off = r.below(area);
    let len = junk.len().min((area - off) as usize);
    shm.write(start + off, &junk[..len]).expect("in the region");
}

/// A well-formed (CRC-sealed) SE with random fields at a random ring position,
/// `submr_head` moved past it and legal tails: the device runs what lies between its
/// cursor and there.
fn forge_request(shm: Shm<'_, HeapMem>, info: &TransportInfo, base: u64, r: &mut SplitMix64) {
    let g = ChannelGeom::new(base, info.flags, false);
    let n = (g.submr_size() / g.el.se_size) as u64;
    let pos = r.below(n) as u32 * g.el.se_size;
    let se = Se {
        op: r.below(6) as u32,
        flags: r.next() as u32 & 7,
        req_tid: r.below(64),
        offset: r.below(2 * DISK as u64) & !511,
        len: (1 + r.below(256) as u32) * 512,
        data_off: (r.next() as u32) & !511,
        data_len: (1 + r.below(256) as u32) * 512,
        data_crc: r.next() as u32,
        ..Se::default()
    };
    let mut b = [0u8; MAX_SE_SIZE];
    g.el.encode_se(&se, &mut b);
    g.el.seal_se(&mut b);
    shm.write(g.se(pos), &b[..g.el.se_size as usize]).unwrap();
    shm.store_u32(g.ctrl(ctrl::SUBMR_HEAD), g.next_se(pos))
        .unwrap();
    // Legal values for the other host pointers, so that the device gets past its
    // pointer checks and runs (or refuses) the entries.
    let tail = r.below(n) as u32 * g.el.se_size;
    shm.store_u32(g.ctrl(ctrl::SUBMR_TAIL), tail).unwrap();
    let ces = (g.compr_size() / g.el.ce_size) as u64;
    let ct = r.below(ces) as u32 * g.el.ce_size;
    shm.store_u32(g.ctrl(ctrl::COMPR_TAIL), ct).unwrap();
}

/// What the hostile host owns.
struct Own {
    host_id: u32,
    blkdev_id: u32,
    backend_id: u32,
    segs: Vec<u32>,
}

#[test]
fn a_hostile_host_cannot_change_what_another_host_reads() {
    hostile_neighbour(false);
}

/// The same with both hosts in the non-coherent mode (own lines, epochs, entry and
/// payload CRCs; the memory itself is coherent here).
#[test]
fn a_hostile_host_cannot_change_what_another_host_reads_noncoherent() {
    hostile_neighbour(true);
}

fn hostile_neighbour(nc: bool) {
    let mem = new_mem();
    let (ta, tb) = (Counts::default(), Counts::default());
    let mut sc = scratch();
    let (mut dev_a, mut dev_b) = device(&mem, &ta, &tb, &mut sc, nc);
    let info = Transport::open(Shm::new(&mem, &NoTrace), false)
        .unwrap()
        .info;
    let mut now = T0;

    // Both hosts register and dev-start, the hostile one first (it may take low slots).
    let hshm = Shm::new(&mem, &NoTrace);
    let hostile = Host::register(hshm, hcfg("hostile", nc), now).unwrap();
    let bd_b = attach(
        &hostile,
        dev_b.backend_id,
        &mut [&mut dev_a, &mut dev_b],
        &mut now,
    );
    let good = Host::register(hshm, hcfg("good", nc), now).unwrap();
    let mut bd_a = attach(
        &good,
        dev_a.backend_id,
        &mut [&mut dev_a, &mut dev_b],
        &mut now,
    );
    let own = Own {
        host_id: hostile.host_id,
        blkdev_id: bd_b.blkdev_id,
        backend_id: dev_b.backend_id,
        segs: dev_b.channel_segments().collect(),
    };
    drop(bd_b); // from here on the hostile host only scribbles

    let mut rng = SplitMix64::new(0x5eed_0001);
    let mut hr = SplitMix64::new(0x5eed_0002);
    let mut a_errors: Vec<BackendError> = Vec::new();
    let mut b_errors = 0u64;
    let mut acts = 0u64;
    let mut v = Verified {
        bd: &mut bd_a,
        model: vec![0; DISK],
        rng: SplitMix64::new(rng.next()),
        buf: vec![0; chan::MAX_IO as usize],
        requests: 0,
    };
    let clock = std::cell::Cell::new(now);
    let mut step = || {
        // 10 ms a step: the device's and the hosts' heartbeats come round (4.5 s / 200 ms).
        let now = clock.get() + 10 * MS;
        clock.set(now);
        if hr.chance(500) {
            vandalize(hshm, &info, &own, &mut hr);
            acts += 1;
        }
        if let Err(e) = dev_a.poll(now) {
            a_errors.push(e);
        }
        if dev_b.poll(now).is_err() {
            b_errors += 1;
        }
    };
    for _ in 0..3000 {
        if let Err(e) = v.one(&mut step) {
            panic!("the good host after {} requests: {e}", v.requests);
        }
        let now = clock.get();
        v.bd.heartbeat(now).unwrap();
    }
    let model = std::mem::take(&mut v.model);
    let requests = v.requests;
    assert!(
        bd_a.queues.iter().all(|q| q.noncoherent() == nc),
        "the good host's queues are not in the mode asked for"
    );
    let now = clock.get();
    assert!(
        a_errors.is_empty(),
        "the good host's backend reported {a_errors:?}"
    );
    assert!(
        now - T0 > 10 * SEC,
        "the run covers several device heartbeats ({} ms)",
        (now - T0) / MS
    );
    // Coherent mode: the garbage reached the device, which answered with error
    // completions or rejections on the hostile host's channels (else this run would
    // prove nothing). In the non-coherent mode the device takes a host line or entry
    // whose CRC fails for one not yet landed and waits for it, so there is nothing to
    // count; what that run checks is the good host's side alone.
    let b_seen = tb.error_ces.load(Relaxed) + tb.rejected.load(Relaxed) + b_errors;
    assert!(acts > 1000, "{acts} acts");
    assert!(nc || b_seen > 0, "{acts} acts, {b_seen} reactions");
    assert_eq!(
        ta.error_ces.load(Relaxed),
        0,
        "error completions to the good host"
    );
    assert_eq!(
        ta.rejected.load(Relaxed),
        0,
        "rejections on the good host's channels"
    );
    // Its backend record is still alive and its own: the good host's liveness checks pass.
    let rec = Transport::open(hshm, false)
        .unwrap()
        .backend(dev_a.backend_id)
        .unwrap()
        .expect("backend record")
        .rec;
    assert!(rec.state == STATE_RUNNING && is_alive(rec.alive_ts, now));
    // The disk holds exactly what the good host wrote.
    dev_a.sync().unwrap();
    let disk = dev_a.into_media();
    assert!(
        disk.data == model,
        "the good host's disk differs from its writes"
    );
    eprintln!(
        "good host (noncoherent {nc}): {requests} verified requests; hostile host: {acts} acts, device answered {} error CEs, {} rejections, {b_errors} failed polls",
        tb.error_ces.load(Relaxed),
        tb.rejected.load(Relaxed)
    );
}

#[test]
fn a_dead_blkdev_record_naming_the_backend_does_not_decide_the_negotiation() {
    let mem = new_mem();
    let mut sc = scratch();
    let (mut dev_a, mut dev_b) = device(&mem, &NoTrace, &NoTrace, &mut sc, false);
    let shm = Shm::new(&mem, &NoTrace);
    let tp = Transport::open(shm, false).unwrap();
    let mut now = T0;
    // A RUNNING blkdev record naming backend 0 whose heartbeat is long gone (a host that
    // died, or one that wrote it on purpose), with no features accepted, in slot 0.
    let forged = BlkdevInfo {
        state: STATE_RUNNING,
        alive_ts: T0 - 120 * SEC,
        backend_id: dev_a.backend_id,
        host_id: 7,
        mapped_id: 0,
        features: 0,
    };
    tp.write_blkdev(0, &forged).unwrap();
    // dev-start ignores dead records: the good host gets the disk, and accepts tokens.
    let good = Host::register(shm, hcfg("good", false), now).unwrap();
    let mut bd = attach(
        &good,
        dev_a.backend_id,
        &mut [&mut dev_a, &mut dev_b],
        &mut now,
    );
    assert_ne!(bd.blkdev_id, 0);
    assert!(bd.queues.iter().all(|q| q.durable_tokens()));
    // A CRITICAL write completes durable: the device runs the negotiation the live
    // record says (tokens), not the dead one's (none).
    let q = &mut bd.queues[0];
    let payload = vec![0x5a; 4096];
    let req = Request {
        op: op::WRITE,
        offset: 0,
        len: 4096,
    };
    let tid = q
        .submit_intent(req, &payload, device::durable::Intent::Critical)
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let mut done = None;
    for _ in 0..1000 {
        now += MS;
        dev_a.poll(now).unwrap();
        if let Some(c) = q.poll(&mut buf).unwrap() {
            done = Some(c);
            break;
        }
    }
    let c = done.expect("the CRITICAL write completes");
    assert_eq!((c.req_tid, c.result), (tid, 0));
    assert!(
        c.durable,
        "the device negotiated from the dead record: a CRITICAL write completed not durable"
    );
}

#[test]
fn a_third_hosts_dev_start_against_a_backend_in_use_is_refused() {
    let mem = new_mem();
    let mut sc = scratch();
    let (mut dev_a, mut dev_b) = device(&mem, &NoTrace, &NoTrace, &mut sc, false);
    let shm = Shm::new(&mem, &NoTrace);
    let mut now = T0;
    let first = Host::register(shm, hcfg("first", false), now).unwrap();
    let mut bd1 = attach(
        &first,
        dev_a.backend_id,
        &mut [&mut dev_a, &mut dev_b],
        &mut now,
    );
    let second = Host::register(shm, hcfg("second", false), now).unwrap();
    let _bd2 = attach(
        &second,
        dev_b.backend_id,
        &mut [&mut dev_a, &mut dev_b],
        &mut now,
    );

    let mut v = Verified {
        bd: &mut bd1,
        model: vec![0; DISK],
        rng: SplitMix64::new(3),
        buf: vec![0; chan::MAX_IO as usize],
        requests: 0,
    };
    let (id_a, id_b) = (dev_a.backend_id, dev_b.backend_id);
    let clock = std::cell::Cell::new(now);
    let mut step = || {
        let now = clock.get() + MS;
        clock.set(now);
        dev_a.poll(now).unwrap();
        dev_b.poll(now).unwrap();
    };
    for _ in 0..50 {
        v.one(&mut step).unwrap();
    }

    let third = Host::register(shm, hcfg("third", false), clock.get()).unwrap();
    let tp = &third.tp;
    let count = |backend_id: u32| {
        (0..tp.info.blkdev_num)
            .filter_map(|id| tp.blkdev(id).unwrap())
            .filter(|d| d.rec.state == STATE_RUNNING && d.rec.backend_id == backend_id)
            .count()
    };
    let before = count(id_a);
    for backend in [id_a, id_b] {
        match third.dev_start(backend, 0, clock.get()) {
            Err(HostError::InUse) => {}
            Err(e) => panic!("dev-start on backend {backend}: {e:?}, not InUse"),
            Ok(_) => panic!("dev-start on backend {backend}, in use, was accepted"),
        }
    }
    assert_eq!(
        (before, count(id_a), count(id_b)),
        (1, 1, 1),
        "a refused dev-start left no record"
    );
    assert!(third.unregister(clock.get()).unwrap());

    // The first host's I/O goes on, verified.
    for _ in 0..50 {
        v.one(&mut step).unwrap();
    }
}

#[test]
fn a_second_backend_of_the_device_needs_join_host() {
    let mem = new_mem();
    Transport::format(Shm::new(&mem, &NoTrace), format_flags(true), false, T0).unwrap();
    let [mut sa, mut sb] = scratch();
    let shm = Shm::new(&mem, &NoTrace);
    let _a = Backend::start(
        shm,
        bcfg("/dev/cbdfw0", false, false),
        VecMedia::new(DISK),
        &mut sa,
        T0,
    )
    .unwrap();
    // Same hostname, alive: without join_host the second engine takes the record for
    // another live instance of this device and refuses.
    let e = Backend::start(
        shm,
        bcfg("/dev/cbdfw1", false, false),
        VecMedia::new(DISK),
        &mut sb,
        T0,
    )
    .err()
    .expect("refused");
    assert_eq!(
        e,
        BackendError::Transport(device::transport::TransportError::Alive)
    );
}
