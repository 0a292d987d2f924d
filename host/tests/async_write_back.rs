//! The asynchronous write-back (docs/durability.md, "The write-back path"): over a
//! media whose writes and flushes stay in flight until the test completes them
//! (`native::HeldMedia`), a due group commit does not stop the serve loop — the other
//! queue's READs and WRITEs are served and completed meanwhile — and the watermark
//! moves only once the writes *and* the flush after them completed; a failed write
//! declares nothing durable, is counted, and the write-back is retried.

use device::backend::{Backend, BackendConfig};
use device::durable::DurableConfig;
use device::layout::*;
use device::native::{HeapMem, HeldMedia};
use device::shm::Shm;
use device::trace::NoTrace;
use device::transport::{Transport, format_flags};
use host::engine::{Blkdev, Host, HostConfig, Request};

const DISK: usize = 256 << 10;
const BLOCK: usize = 4096;
const T0: u64 = 1_700_000_000_000_000_000;
const MS: u64 = 1_000_000;

fn bcfg() -> BackendConfig<'static> {
    BackendConfig {
        n_handlers: 2,
        durable: DurableConfig {
            offer: true,
            standard_bound_ns: 10 * MS,
            ephemeral_bound_ns: 40 * MS,
        },
        ..BackendConfig::default()
    }
}

struct Rig<'a> {
    now: u64,
    b: Backend<'a, HeapMem, HeldMedia>,
    dev: Blkdev<'a, HeapMem>,
    buf: Vec<u8>,
}

impl<'a> Rig<'a> {
    fn new(heap: &'a HeapMem, scratch: &'a mut [u8], staging: &'a mut [u8]) -> Rig<'a> {
        let shm = Shm::new(heap, &NoTrace);
        Transport::format(shm, format_flags(true), false, T0).unwrap();
        let mut b = Backend::start(shm, bcfg(), HeldMedia::new(DISK), scratch, T0).unwrap();
        b.set_staging(staging).unwrap();
        let hc = HostConfig {
            hostname: "hostA",
            queue_depth: 8,
            durable_tokens: true,
            ..HostConfig::default()
        };
        let host = Host::register(shm, hc, T0).unwrap();
        let mut dev = host.dev_start(b.backend_id, 2, T0).unwrap();
        while !dev.poll_ready(T0).unwrap() {
            b.poll(T0).unwrap();
        }
        Rig {
            now: T0,
            b,
            dev,
            buf: vec![0; chan::MAX_IO as usize],
        }
    }
    /// Submit a WRITE of `block` filled with `v` on `q`: its tid.
    fn write(&mut self, q: usize, block: usize, v: u8) -> u64 {
        let req = Request {
            op: op::WRITE,
            offset: (block * BLOCK) as u64,
            len: BLOCK as u32,
        };
        self.dev.queues[q].submit(req, &[v; BLOCK]).unwrap()
    }
    fn read(&mut self, q: usize, block: usize) -> u64 {
        let req = Request {
            op: op::READ,
            offset: (block * BLOCK) as u64,
            len: BLOCK as u32,
        };
        self.dev.queues[q].submit(req, &[]).unwrap()
    }
    /// One device poll at the rig's time.
    fn poll(&mut self) -> Result<(), device::backend::BackendError> {
        self.b.poll(self.now).map(|_| ())
    }
    /// The host takes the next completion of `q`: (tid, result, first payload byte).
    fn complete(&mut self, q: usize) -> (u64, i32, u8) {
        let c = self.dev.queues[q]
            .poll_at(&mut self.buf, self.now)
            .unwrap()
            .expect("a completion");
        (c.req_tid, c.result, self.buf[0])
    }
    fn durable(&mut self, q: usize, tid: u64) -> bool {
        self.dev.queues[q].poll_durable(self.now).unwrap();
        self.dev.queues[q].is_durable(tid)
    }
    fn media(&mut self) -> &mut HeldMedia {
        self.b.media()
    }
}

/// A due write-back is in flight (held by the media) while queue 1's READ and WRITE
/// are served and completed — the serve loop never waits for the media (`HeldMedia`
/// panics if it does) — and queue 0's watermark moves only after the write *and* the
/// flush completed.
#[test]
fn other_queues_are_served_while_the_write_back_is_in_flight() {
    let heap = HeapMem::new(TransportInfo::region_for(2) as usize);
    let (mut scratch, mut staging) = (vec![0u8; chan::MAX_IO as usize], vec![0u8; 64 << 10]);
    let mut rig = Rig::new(&heap, &mut scratch, &mut staging);
    let t0 = rig.write(0, 0, 1);
    rig.poll().unwrap();
    assert_eq!(rig.complete(0), (t0, 0, 0));
    // The write falls due: its write-back starts and stays in flight.
    rig.now += 20 * MS;
    rig.media().forbid_wait = true;
    rig.poll().unwrap();
    let held = rig.media().held_writes();
    assert_eq!(held.len(), 1, "the due write-back did not start");
    // Queue 1 is served meanwhile: a READ of the block in flight (the staged data), a
    // WRITE of another block.
    let (r, w) = (rig.read(1, 0), rig.write(1, 5, 2));
    rig.poll().unwrap();
    assert_eq!(
        rig.complete(1),
        (r, 0, 1),
        "READ while the write-back is in flight"
    );
    assert_eq!(
        rig.complete(1).1,
        0,
        "WRITE while the write-back is in flight"
    );
    assert_eq!(
        rig.media().held_writes(),
        held,
        "the write-back completed by itself"
    );
    assert!(
        !rig.durable(0, t0),
        "durable before its media write completed"
    );
    // The write completes: the flush starts; still not durable until it completed.
    rig.media().complete(held[0].0, true);
    rig.poll().unwrap();
    let f = rig
        .media()
        .held_flush()
        .expect("no flush after the write completed");
    assert_eq!(rig.media().current()[0], 1);
    assert!(!rig.durable(0, t0), "durable before the flush completed");
    rig.poll().unwrap();
    assert!(!rig.durable(0, t0), "durable before the flush completed");
    rig.media().complete(f, true);
    rig.poll().unwrap();
    assert!(
        rig.durable(0, t0),
        "not durable after write and flush completed"
    );
    assert_eq!(rig.media().durable()[0], 1);
    // Queue 1's WRITE was staged after the batch started: not durable yet, and it is
    // the next batch's.
    assert!(!rig.durable(1, w));
    assert_eq!(rig.b.pending_writes(), 1);
}

/// A media error on an asynchronous write: nothing is declared durable, the error is
/// counted and reported once, the queues are still served, and the next write-back
/// retries and succeeds.
#[test]
fn a_failed_write_back_declares_nothing_durable_and_is_retried() {
    let heap = HeapMem::new(TransportInfo::region_for(2) as usize);
    let (mut scratch, mut staging) = (vec![0u8; chan::MAX_IO as usize], vec![0u8; 64 << 10]);
    let mut rig = Rig::new(&heap, &mut scratch, &mut staging);
    // Two writes far apart: two media writes in the batch.
    let (a, b) = (rig.write(0, 0, 7), rig.write(0, 9, 8));
    rig.poll().unwrap();
    assert_eq!(rig.complete(0).1, 0);
    assert_eq!(rig.complete(0).1, 0);
    rig.now += 20 * MS;
    rig.media().forbid_wait = true;
    rig.poll().unwrap();
    let held = rig.media().held_writes();
    assert_eq!(held.len(), 2);
    rig.media().complete(held[1].0, true);
    rig.media().complete(held[0].0, false);
    assert!(
        rig.poll().is_err(),
        "the failed write-back was not reported"
    );
    assert_eq!(rig.b.stager_stats().media_errors, 1);
    assert!(
        rig.media().held_flush().is_none(),
        "flushed after a failed write"
    );
    assert!(!rig.durable(0, a) && !rig.durable(0, b));
    // Still serving: a WRITE on queue 1 completes (and the retry starts: still due).
    let c = rig.write(1, 3, 9);
    rig.poll().unwrap();
    assert_eq!(rig.complete(1), (c, 0, 0));
    // The retry writes the failed block again (and queue 1's new one), not the block
    // that made it.
    let retry = rig.media().held_writes();
    let offsets: Vec<u64> = retry.iter().map(|w| w.1).collect();
    assert_eq!(
        offsets,
        [0, 3 * BLOCK as u64],
        "the failed write was not retried"
    );
    for w in retry {
        rig.media().complete(w.0, true);
    }
    rig.poll().unwrap();
    let f = rig.media().held_flush().expect("flush after the retry");
    rig.media().complete(f, true);
    rig.poll().unwrap();
    assert!(rig.durable(0, a) && rig.durable(0, b) && rig.durable(1, c));
    assert_eq!(
        (rig.media().durable()[0], rig.media().durable()[9 * BLOCK]),
        (7, 8)
    );
}
