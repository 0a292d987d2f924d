//! Crash tests (issue 6 item 5): the device kernel, booted in QEMU in backend mode
//! with a virtio-blk disk image as its media and RAM staging, serves a native host
//! (`host::engine`, in this process) over the ivshmem shared file. The host runs a
//! write workload of 1–4 block writes whose every 512-byte sector names (block,
//! version), STANDARD intent (1 in 16 CRITICAL), with a FLUSH or a watermark wait
//! every N writes. A killer thread SIGKILLs QEMU at a random moment of it.
//!
//! Per crash point:
//! 1. the media *image file* is checked: per 4 KiB block, one whole version (every
//!    sector of the same (block, version)), never older than the newest version
//!    the host saw confirmed durable (watermark, DURABLE CE, completed FLUSH), never
//!    newer than the newest submitted;
//! 2. the verifier is fed a copy of that image with one torn block and one block
//!    rolled back behind its confirmed version, and must report both;
//! 3. the device is restarted on the same image and shared file: it re-attaches
//!    to its backend slot (same backend id; `takeover=on` lets it take its own
//!    records over while the dead incarnation's heartbeat still looks alive — the
//!    first 50-point version waited that out by ageing the records from the test;
//!    the engine now does it properly). The requests in flight at the kill
//!    complete; each channel's first FLUSH after the re-attach fails with EIO
//!    (exactly once), the next succeeds;
//! 4. the whole disk is read back through the protocol and checked like the image,
//!    and the image file (after that FLUSH) must equal it byte for byte. What was
//!    read becomes the new confirmed baseline, and the workload goes on.
//!
//! `CBDFW_CRASH_POINTS` (default 50) sets the number of crash points,
//! `CBDFW_CRASH_SEED` the seed. Kill-on-drop for every VM.

// The helpers the kernel-driving tests in boot/tests share.
#[path = "../../boot/tests/common/mod.rs"]
mod common;
use common::{Rng, now_ns};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use boot::device_vm::DeviceVm;
use boot::qemu::{Echo, Firmware, Input, Vm};
use boot::status::KernelStatus;
use boot::topology::{self, SharedFile};
use device::durable::Intent;
use device::layout::{errno, op};
use device::native::MmapMem;
use device::shm::Shm;
use device::trace::NoTrace;
use host::engine::{Blkdev, Completion, Host, HostConfig, HostError, Request};

const BLOCK: usize = 4096;
const SECT: usize = 512;
const MAGIC: u32 = 0xC4A5_B10C;
/// Media image: 2 MiB = 512 blocks (small, so blocks are rewritten often).
const MEDIA_MIB: u64 = 2;
const NBLOCKS: usize = (MEDIA_MIB as usize) << 20 >> 12;
const QD: usize = 8;

// ---------------------------------------------------------------- pattern + verifier

/// The content of `block` at `version` (version 0 = the zeroed fresh image). Every
/// 512-byte sector starts with (magic, block, version, sector) and is filled from a
/// generator seeded by all three, so a mix of versions never equals any version.
fn block_content(block: u64, version: u64) -> Vec<u8> {
    let mut b = vec![0u8; BLOCK];
    if version == 0 {
        return b;
    }
    for (s, sect) in b.chunks_mut(SECT).enumerate() {
        sect[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        sect[4..8].copy_from_slice(&(block as u32).to_le_bytes());
        sect[8..16].copy_from_slice(&version.to_le_bytes());
        sect[16..20].copy_from_slice(&(s as u32).to_le_bytes());
        let mut r = Rng((block << 40) ^ (version << 8) ^ s as u64 ^ 0x9E37_79B9_7F4A_7C15 | 1);
        for c in sect[20..].chunks_mut(8) {
            let v = r.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
    b
}

/// (block, version) a sector claims to be, `Some((_, 0))` if all zero.
fn sector_id(sect: &[u8]) -> Option<(u64, u64)> {
    if sect.iter().all(|&x| x == 0) {
        return Some((0, 0));
    }
    if u32::from_le_bytes(sect[0..4].try_into().unwrap()) != MAGIC {
        return None;
    }
    Some((
        u32::from_le_bytes(sect[4..8].try_into().unwrap()) as u64,
        u64::from_le_bytes(sect[8..16].try_into().unwrap()),
    ))
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Violation {
    /// Not one whole version: the sectors' (block, version), None = garbage.
    Torn {
        block: u64,
        sectors: Vec<Option<(u64, u64)>>,
    },
    /// A whole version, but of another block.
    Misplaced { block: u64, found: u64 },
    /// Older than the newest version confirmed durable.
    Older {
        block: u64,
        found: u64,
        confirmed: u64,
    },
    /// Newer than anything submitted.
    Unknown {
        block: u64,
        found: u64,
        submitted: u64,
    },
}

/// Check one block: `Ok(version)` if it is one whole version in `floor..=last`.
fn check_block(block: u64, data: &[u8], floor: u64, last: u64) -> Result<u64, Violation> {
    let first = sector_id(&data[..SECT]);
    let whole = match first {
        Some((b, v)) if v == 0 || b == block => {
            (data == block_content(block, v).as_slice()).then_some(v)
        }
        Some((b, v)) => {
            if data == block_content(b, v).as_slice() {
                return Err(Violation::Misplaced { block, found: b });
            }
            None
        }
        None => None,
    };
    let Some(v) = whole else {
        return Err(Violation::Torn {
            block,
            sectors: data.chunks(SECT).map(sector_id).collect(),
        });
    };
    if v < floor {
        return Err(Violation::Older {
            block,
            found: v,
            confirmed: floor,
        });
    }
    if v > last {
        return Err(Violation::Unknown {
            block,
            found: v,
            submitted: last,
        });
    }
    Ok(v)
}

/// Check a whole disk: the version of every block, and every violation.
fn verify(disk: &[u8], floor: &[u64], last: &[u64]) -> (Vec<u64>, Vec<Violation>) {
    let mut vers = Vec::with_capacity(floor.len());
    let mut bad = Vec::new();
    for (i, data) in disk.chunks(BLOCK).enumerate() {
        match check_block(i as u64, data, floor[i], last[i]) {
            Ok(v) => vers.push(v),
            Err(e) => {
                vers.push(u64::MAX);
                bad.push(e);
            }
        }
    }
    (vers, bad)
}

/// The verifier must see a torn block and a roll-back behind the confirmed version
/// in a copy of `disk` (a valid image under `floor`/`last`).
fn assert_verifier_catches(disk: &[u8], floor: &[u64], last: &[u64], rng: &mut Rng) {
    let mut bad = disk.to_vec();
    // Torn: sector 1..8 of a random block from another version of it.
    let b = rng.below(NBLOCKS as u64) as usize;
    let s = 1 + rng.below(7) as usize;
    let cur = sector_id(&disk[b * BLOCK..][..SECT]).map_or(0, |x| x.1);
    let other = block_content(b as u64, cur + 1);
    bad[b * BLOCK + s * SECT..][..SECT].copy_from_slice(&other[s * SECT..][..SECT]);
    // Rolled back: a block with a confirmed version > 0 holds the version before.
    let rb = (0..NBLOCKS)
        .map(|i| (i + rng.below(NBLOCKS as u64) as usize) % NBLOCKS)
        .find(|&i| i != b && floor[i] > 0);
    if let Some(r) = rb {
        bad[r * BLOCK..][..BLOCK].copy_from_slice(&block_content(r as u64, floor[r] - 1));
    }
    let (_, v) = verify(&bad, floor, last);
    assert!(
        v.iter()
            .any(|x| matches!(x, Violation::Torn { block, .. } if *block == b as u64)),
        "verifier missed a torn block {b} (sector {s}): {v:?}"
    );
    if let Some(r) = rb {
        assert!(
            v.iter()
                .any(|x| matches!(x, Violation::Older { block, .. } if *block == r as u64)),
            "verifier missed block {r} rolled back behind its confirmed version: {v:?}"
        );
    }
    assert_eq!(v.len(), 1 + rb.is_some() as usize, "{v:?}");
}

/// The verifier on its own (no VM): it accepts valid images and reports torn,
/// misplaced, rolled-back and unknown blocks.
#[test]
fn crash_verifier_reports_violations() {
    let n = 16;
    let floor: Vec<u64> = (0..n).map(|i| (i % 3) as u64).collect();
    let last: Vec<u64> = (0..n).map(|i| (i % 3) as u64 + 2).collect();
    let mut disk = Vec::new();
    for (i, f) in floor.iter().enumerate() {
        disk.extend(block_content(i as u64, f + (i % 2) as u64));
    }
    let (vers, v) = verify(&disk, &floor, &last);
    assert!(v.is_empty(), "{v:?}");
    assert_eq!(vers[5], floor[5] + 1);
    // Two versions mixed inside one block, at every sector boundary.
    for s in 1..8 {
        let mut d = disk.clone();
        d[3 * BLOCK + s * SECT..4 * BLOCK].copy_from_slice(&block_content(3, 3)[s * SECT..]);
        let (_, v) = verify(&d, &floor, &last);
        assert!(
            matches!(&v[..], [Violation::Torn { block: 3, .. }]),
            "{v:?}"
        );
    }
    // Half old zeroes, half new data.
    let mut d = disk.clone();
    d[2 * BLOCK..2 * BLOCK + 2048].fill(0);
    let (_, v) = verify(&d, &floor, &last);
    assert!(
        matches!(&v[..], [Violation::Torn { block: 2, .. }]),
        "{v:?}"
    );
    // One flipped byte.
    let mut d = disk.clone();
    d[7 * BLOCK + 1000] ^= 1;
    let (_, v) = verify(&d, &floor, &last);
    assert!(
        matches!(&v[..], [Violation::Torn { block: 7, .. }]),
        "{v:?}"
    );
    // Another block's content.
    let mut d = disk.clone();
    d[4 * BLOCK..5 * BLOCK].copy_from_slice(&block_content(9, 1));
    let (_, v) = verify(&d, &floor, &last);
    assert!(
        matches!(&v[..], [Violation::Misplaced { block: 4, found: 9 }]),
        "{v:?}"
    );
    // Older than confirmed (block 2: confirmed 2, holds 1) and never submitted.
    let mut d = disk.clone();
    d[2 * BLOCK..3 * BLOCK].copy_from_slice(&block_content(2, 1));
    d[5 * BLOCK..6 * BLOCK].copy_from_slice(&block_content(5, 9));
    let (_, v) = verify(&d, &floor, &last);
    assert_eq!(
        v,
        vec![
            Violation::Older {
                block: 2,
                found: 1,
                confirmed: 2
            },
            Violation::Unknown {
                block: 5,
                found: 9,
                submitted: 4
            }
        ]
    );
    let mut rng = Rng(7);
    for _ in 0..20 {
        // NBLOCKS-sized image for the in-run self-check.
        let floor: Vec<u64> = (0..NBLOCKS).map(|i| (i % 4) as u64).collect();
        let last: Vec<u64> = floor.iter().map(|f| f + 1).collect();
        let disk: Vec<u8> = (0..NBLOCKS)
            .flat_map(|i| block_content(i as u64, floor[i]))
            .collect();
        assert!(verify(&disk, &floor, &last).1.is_empty());
        assert_verifier_catches(&disk, &floor, &last, &mut rng);
    }
}

// ---------------------------------------------------------------- host-side model

enum Pending {
    /// (block, version) per 4 KiB block of the write.
    Write(Vec<(usize, u64)>),
    /// FLUSH: the completed-unconfirmed writes (queue, tid) it covers.
    Flush(Vec<(usize, u64)>),
    Read(usize),
    /// In flight at a kill: its completion proves nothing (either incarnation).
    Orphan(u32, Vec<(usize, u64)>),
}

#[derive(Default, Debug, Clone, Copy)]
struct Counts {
    writes: u64,
    blocks_written: u64,
    critical: u64,
    flushes: u64,
    watermark_waits: u64,
    confirmed_by_watermark: u64,
    confirmed_by_flush: u64,
    confirmed_by_ce: u64,
    /// Blocks found (image) older than their newest completed version: completed,
    /// unconfirmed writes lost in the crash (staging at work).
    lost_completed_blocks: u64,
    /// Blocks found newer than their newest completed version (in flight at the kill).
    inflight_landed_blocks: u64,
    /// Blocks found newer than confirmed (completed or in flight, survived).
    unconfirmed_survived_blocks: u64,
    blocks_checked: u64,
    violations: u64,
}

struct Model {
    /// Newest version submitted per block.
    last: Vec<u64>,
    /// Newest version confirmed durable per block.
    floor: Vec<u64>,
    /// Newest version completed per block.
    completed: Vec<u64>,
    pending: [BTreeMap<u64, Pending>; 2],
    /// Completed, not yet confirmed writes per queue.
    unconfirmed: [BTreeMap<u64, Vec<(usize, u64)>>; 2],
    /// FLUSH results since the last kill, per queue: EIO count.
    flush_eio: [u32; 2],
    /// Writes in flight per block: the workload never has two overlapping writes
    /// in flight (their order would be undefined, as for any block device).
    busy: Vec<u32>,
    /// What happened to each block since the last baseline (for failure reports).
    hist: Vec<Vec<String>>,
    readback: Vec<u8>,
    n: Counts,
}

impl Model {
    fn new() -> Self {
        Model {
            last: vec![0; NBLOCKS],
            floor: vec![0; NBLOCKS],
            completed: vec![0; NBLOCKS],
            pending: Default::default(),
            unconfirmed: Default::default(),
            flush_eio: [0; 2],
            busy: vec![0; NBLOCKS],
            hist: vec![Vec::new(); NBLOCKS],
            readback: vec![0; NBLOCKS * BLOCK],
            n: Counts::default(),
        }
    }

    fn confirm(&mut self, blocks: &[(usize, u64)], how: &str) {
        for &(b, v) in blocks {
            self.floor[b] = self.floor[b].max(v);
            self.hist[b].push(format!("v{v} confirmed ({how})"));
        }
    }

    fn note(&mut self, blocks: &[(usize, u64)], what: &str) {
        for &(b, v) in blocks {
            self.hist[b].push(format!("v{v} {what}"));
        }
    }

    /// Checks a whole disk (the image file, or what was read back) against the
    /// model, counts it, and panics with the blocks' histories on a violation.
    /// Returns the version found in each block.
    fn check(&mut self, disk: &[u8], what: &str) -> Vec<u64> {
        let (vers, bad) = verify(disk, &self.floor, &self.last);
        self.n.blocks_checked += NBLOCKS as u64;
        self.n.violations += bad.len() as u64;
        assert!(
            bad.is_empty(),
            "{what} violates durability: {}",
            self.report(&bad)
        );
        vers
    }

    /// The history of every block named in `bad`.
    fn report(&self, bad: &[Violation]) -> String {
        let mut s = String::new();
        for v in bad {
            let b = match v {
                Violation::Torn { block, .. }
                | Violation::Misplaced { block, .. }
                | Violation::Older { block, .. }
                | Violation::Unknown { block, .. } => *block as usize,
            };
            s += &format!("\n{v:?}\n  block {b} history: {:?}", self.hist[b]);
        }
        s
    }

    /// The device holds `vers` durably: the new baseline.
    fn rebase(&mut self, vers: Vec<u64>) {
        for (b, &v) in vers.iter().enumerate() {
            self.hist[b] = vec![format!("baseline v{v}")];
        }
        self.floor = vers.clone();
        self.completed = vers;
    }

    fn on_complete(&mut self, q: usize, c: Completion, read_buf: &[u8]) {
        let p = self.pending[q]
            .remove(&c.req_tid)
            .unwrap_or_else(|| panic!("completion of unknown tid {} on {q}", c.req_tid));
        match p {
            Pending::Write(blocks) => {
                assert_eq!(c.result, 0, "WRITE {blocks:?} failed");
                for &(b, v) in &blocks {
                    self.completed[b] = self.completed[b].max(v);
                    self.busy[b] -= 1;
                }
                self.note(&blocks, &format!("completed q{q} tid {}", c.req_tid));
                if c.durable {
                    self.n.confirmed_by_ce += 1;
                    self.confirm(&blocks, "DURABLE CE");
                } else {
                    self.unconfirmed[q].insert(c.req_tid, blocks);
                }
            }
            Pending::Flush(covered) => match c.result {
                0 => {
                    self.n.flushes += 1;
                    for (q2, tid) in covered {
                        if let Some(bl) = self.unconfirmed[q2].remove(&tid) {
                            self.n.confirmed_by_flush += 1;
                            self.confirm(&bl, &format!("FLUSH q{q} tid {}", c.req_tid));
                        }
                    }
                }
                errno::EIO => self.flush_eio[q] += 1,
                r => panic!("FLUSH on queue {q} failed with {r}"),
            },
            Pending::Read(off) => {
                assert_eq!(c.result, 0, "READ at {off:#x} failed");
                let len = c.req.len as usize;
                self.readback[off..off + len].copy_from_slice(&read_buf[..len]);
            }
            Pending::Orphan(o, blocks) => {
                for &(b, _) in &blocks {
                    self.busy[b] -= 1;
                }
                self.note(&blocks, &format!("orphan completed q{q} tid {}", c.req_tid));
                if o == op::FLUSH && c.result == errno::EIO {
                    self.flush_eio[q] += 1;
                } else {
                    assert!(c.result == 0, "orphan op {o} failed with {}", c.result);
                }
            }
        }
    }

    /// The device died: what was completed but not confirmed may be lost (the host
    /// engine counts it lost too), and what is in flight proves nothing.
    fn on_kill(&mut self) {
        for q in 0..2 {
            self.unconfirmed[q].clear();
            for p in self.pending[q].values_mut() {
                // A write in flight may still land (it is within `last`), but its
                // completion will not confirm it.
                let o = match p {
                    Pending::Write(bl) => Pending::Orphan(op::WRITE, std::mem::take(bl)),
                    Pending::Flush(_) => Pending::Orphan(op::FLUSH, Vec::new()),
                    Pending::Read(_) => Pending::Orphan(op::READ, Vec::new()),
                    Pending::Orphan(o, bl) => Pending::Orphan(*o, std::mem::take(bl)),
                };
                *p = o;
            }
        }
        self.flush_eio = [0; 2];
    }
}

type Dev<'a> = Blkdev<'a, MmapMem>;

struct Driver<'a> {
    blk: Dev<'a>,
    m: Model,
    read_buf: Vec<u8>,
}

impl<'a> Driver<'a> {
    /// Poll every queue once: completions and the durability line.
    fn poll_once(&mut self) {
        let now = now_ns();
        let _ = self.blk.heartbeat(now);
        for q in 0..2 {
            while let Some(c) = self.blk.queues[q]
                .poll_at(&mut self.read_buf, now)
                .expect("poll")
            {
                self.m.on_complete(q, c, &self.read_buf);
            }
            self.blk.queues[q].poll_durable(now).expect("poll_durable");
            let hq = &self.blk.queues[q];
            let done: Vec<u64> = self.m.unconfirmed[q]
                .keys()
                .copied()
                .filter(|&t| hq.is_durable(t))
                .collect();
            for t in done {
                let bl = self.m.unconfirmed[q].remove(&t).unwrap();
                self.m.n.confirmed_by_watermark += 1;
                self.m.confirm(&bl, &format!("watermark q{q} tid {t}"));
            }
        }
    }

    /// Submit, polling while the queue is full; false if `stop` became true first.
    fn submit(
        &mut self,
        q: usize,
        req: Request,
        payload: &[u8],
        intent: Intent,
        p: Pending,
        stop: &dyn Fn() -> bool,
    ) -> Option<u64> {
        loop {
            if stop() {
                return None;
            }
            if self.blk.queues[q].in_flight() >= QD {
                self.poll_once();
                std::thread::yield_now();
                continue;
            }
            match self.blk.queues[q].submit_intent(req, payload, intent) {
                Ok(tid) => {
                    self.m.pending[q].insert(tid, p);
                    return Some(tid);
                }
                Err(HostError::Busy) => {
                    self.poll_once();
                    std::thread::yield_now();
                }
                Err(e) => panic!("submit {req:?}: {e:?}"),
            }
        }
    }

    /// The write workload until `stop()` (the kill) or `max_ops` operations.
    fn workload(&mut self, rng: &mut Rng, flush_every: u64, stop: &dyn Fn() -> bool) {
        let mut since_sync = 0u64;
        let mut sync_kind = rng.below(2);
        while !stop() {
            self.poll_once();
            let q = rng.below(2) as usize;
            if since_sync >= flush_every {
                since_sync = 0;
                sync_kind ^= 1;
                if sync_kind == 0 {
                    // FLUSH: covers every write completed before it (any queue).
                    let covered: Vec<(usize, u64)> = (0..2)
                        .flat_map(|qq| self.m.unconfirmed[qq].keys().map(move |&t| (qq, t)))
                        .collect();
                    let req = Request {
                        op: op::FLUSH,
                        offset: 0,
                        len: 0,
                    };
                    if self
                        .submit(q, req, &[], Intent::Standard, Pending::Flush(covered), stop)
                        .is_none()
                    {
                        return;
                    }
                } else {
                    // Watermark wait: until every completed write is confirmed.
                    self.m.n.watermark_waits += 1;
                    let t0 = Instant::now();
                    while !stop()
                        && (self.m.pending.iter().any(|p| !p.is_empty())
                            || self.m.unconfirmed.iter().any(|u| !u.is_empty()))
                    {
                        self.poll_once();
                        std::thread::yield_now();
                        assert!(
                            t0.elapsed() < Duration::from_secs(120),
                            "the watermark never covered the completed writes"
                        );
                    }
                }
                continue;
            }
            let k = 1 + rng.below(4) as usize;
            let b0 = rng.below((NBLOCKS - k + 1) as u64) as usize;
            // No overlapping writes in flight: wait for the older one.
            while self.m.busy[b0..b0 + k].iter().any(|&n| n > 0) {
                if stop() {
                    return;
                }
                self.poll_once();
                std::thread::yield_now();
            }
            let mut blocks = Vec::with_capacity(k);
            let mut payload = Vec::with_capacity(k * BLOCK);
            for b in b0..b0 + k {
                self.m.last[b] += 1;
                blocks.push((b, self.m.last[b]));
                payload.extend(block_content(b as u64, self.m.last[b]));
            }
            let intent = if rng.below(16) == 0 {
                self.m.n.critical += 1;
                Intent::Critical
            } else {
                Intent::Standard
            };
            let req = Request {
                op: op::WRITE,
                offset: (b0 * BLOCK) as u64,
                len: (k * BLOCK) as u32,
            };
            let Some(tid) = self.submit(
                q,
                req,
                &payload,
                intent,
                Pending::Write(blocks.clone()),
                stop,
            ) else {
                // Not submitted: the version was never written anywhere; keep `last`
                // (a gap in the versions is harmless).
                return;
            };
            for &(b, _) in &blocks {
                self.m.busy[b] += 1;
            }
            self.m
                .note(&blocks, &format!("submitted q{q} tid {tid} {intent:?}"));
            self.m.n.writes += 1;
            self.m.n.blocks_written += k as u64;
            since_sync += 1;
        }
    }

    /// Poll until nothing is in flight (after a restart).
    fn drain(&mut self, what: &str, dev: &Vm) {
        let t0 = Instant::now();
        while self.m.pending.iter().any(|p| !p.is_empty()) {
            self.poll_once();
            std::thread::yield_now();
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "{what}: requests never completed: {:?}\n{}",
                self.m.pending.iter().map(|p| p.len()).collect::<Vec<_>>(),
                dev.output()
            );
        }
    }

    fn run_one(&mut self, q: usize, req: Request, p: Pending, dev: &Vm) {
        assert!(
            self.submit(q, req, &[], Intent::Standard, p, &|| false)
                .is_some()
        );
        self.drain("request", dev);
    }
}

// ---------------------------------------------------------------- VM plumbing

struct Setup {
    shm_path: String,
    img: std::path::PathBuf,
    kernel: std::path::PathBuf,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.shm_path);
        let _ = std::fs::remove_file(&self.img);
    }
}

const SHM_MIB: u64 = 512;

fn spawn_device(s: &Setup, standard_bound_us: u64, name: &str) -> Vm {
    let t = topology::load(
        "ivshmem",
        &SharedFile {
            path: s.shm_path.clone().into(),
            size_mib: SHM_MIB,
        },
    )
    .unwrap();
    t.prepare_files().unwrap();
    let mut vm = DeviceVm::default()
        .option("mode", "backend")
        .option("channels", "2")
        .option("media", "virtio")
        .option("staging-mib", "8")
        .option("standard-bound-us", &standard_bound_us.to_string())
        .option("takeover", "on")
        .topology(t);
    vm.media = Some(s.img.clone());
    Vm::spawn_with_input(name, &vm.command(&s.kernel), Echo::Quiet, Input::Piped).unwrap()
}

/// Wait for the device to serve, heartbeating the blkdev meanwhile; its backend id.
fn wait_served(dev: &mut Vm, blk: Option<&mut Dev<'_>>) -> u32 {
    let t0 = Instant::now();
    let mut blk = blk;
    loop {
        if dev.wait_for("serve: backend", Duration::from_millis(200)) {
            break;
        }
        if let Some(b) = blk.as_deref_mut() {
            b.heartbeat(now_ns()).unwrap();
        }
        let out = dev.output();
        assert!(
            !out.contains("backend-start failed") && t0.elapsed() < Duration::from_secs(300),
            "device never served:\n{out}"
        );
    }
    let out = dev.output();
    let line = out.lines().find(|l| l.contains("serve: backend")).unwrap();
    line.split("serve: backend ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn env_u64(k: &str, d: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(d)
}

#[test]
fn device_vm_crash_points_keep_confirmed_writes() {
    let points = env_u64("CBDFW_CRASH_POINTS", 50);
    let seed = env_u64("CBDFW_CRASH_SEED", now_ns() | 1);
    eprintln!("crash: {points} crash points, CBDFW_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let pid = std::process::id();
    let s = Setup {
        shm_path: format!("/dev/shm/cbdfw-test-crash-{pid}.raw"),
        img: std::env::temp_dir().join(format!("cbdfw-test-crash-{pid}.img")),
        kernel: boot::image::kernel_image_for_tests(Firmware::Bios).expect("kernel image"),
    };
    let _ = std::fs::remove_file(&s.shm_path);
    let _ = std::fs::remove_file(&s.img);
    topology::ensure_file(&s.img, MEDIA_MIB << 20).unwrap();
    let bounds = [1_000u64, 10_000, 100_000, 1_000_000];
    let started = Instant::now();

    let mut dev = spawn_device(&s, bounds[rng.below(4) as usize], "device-0");
    let backend_id = wait_served(&mut dev, None);
    let mem = MmapMem::create(s.shm_path.as_ref(), SHM_MIB << 20).unwrap();
    let shm = Shm::new(&mem, &NoTrace);
    let host = Host::register(
        shm,
        HostConfig {
            hostname: "crash-host",
            ..Default::default()
        },
        now_ns(),
    )
    .unwrap();
    assert_eq!(host.find_backend(now_ns()).unwrap(), backend_id);
    let mut blk = host.dev_start(backend_id, 0, now_ns()).expect("dev-start");
    assert_eq!(blk.queues.len(), 2);
    let t0 = Instant::now();
    while !blk.poll_ready(now_ns()).expect("RESET handshake") {
        assert!(t0.elapsed() < Duration::from_secs(60), "RESET not answered");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        blk.queues.iter().all(|q| q.durable_tokens()),
        "the device did not offer durability tokens"
    );
    let mut d = Driver {
        blk,
        m: Model::new(),
        read_buf: vec![0u8; 1 << 20],
    };
    let mut max_lost_tokens = 0u64;

    for point in 0..points {
        // Run the workload; a killer thread SIGKILLs QEMU after a random delay.
        let delay = Duration::from_micros(match rng.below(4) {
            0 => rng.below(50_000),
            1 => 50_000 + rng.below(250_000),
            _ => 300_000 + rng.below(1_200_000),
        });
        let killed = Arc::new(AtomicBool::new(false));
        let k2 = killed.clone();
        let killer = std::thread::spawn(move || {
            std::thread::sleep(delay);
            dev.kill();
            k2.store(true, Ordering::SeqCst);
            dev
        });
        let flush_every = 2 + rng.below(31);
        let stop = || killed.load(Ordering::SeqCst);
        d.workload(&mut rng, flush_every, &stop);
        drop(killer.join().unwrap()); // reaped (SIGKILL + wait)
        // CEs and durability lines the device published before it died are facts.
        d.poll_once();
        d.m.on_kill();

        // 1. The media image as the crash left it.
        let image = std::fs::read(&s.img).unwrap();
        assert_eq!(image.len(), NBLOCKS * BLOCK);
        let vers = d.m.check(
            &image,
            &format!("crash point {point} (seed {seed}, delay {delay:?}): the image"),
        );
        for (b, &v) in vers.iter().enumerate() {
            d.m.n.lost_completed_blocks += (v < d.m.completed[b]) as u64;
            d.m.n.inflight_landed_blocks += (v > d.m.completed[b]) as u64;
            d.m.n.unconfirmed_survived_blocks += (v > d.m.floor[b]) as u64;
        }
        // 2. The verifier catches a torn and a rolled-back block in this image.
        assert_verifier_catches(&image, &d.m.floor, &d.m.last, &mut rng);

        // 3. Restart on the same image and shared file: re-attach.
        // The dead incarnation's heartbeat is < 30 s old; the device restarts with
        // `takeover=on` and takes its own records over at once.
        let bound = bounds[rng.below(4) as usize];
        dev = spawn_device(&s, bound, &format!("device-{}", point + 1));
        let id = wait_served(&mut dev, Some(&mut d.blk));
        assert_eq!(
            id, backend_id,
            "the device did not re-attach to its backend"
        );
        d.drain("in flight at the kill", &dev);
        for q in 0..2 {
            for _ in 0..3 {
                let before = d.m.n.flushes;
                d.run_one(
                    q,
                    Request {
                        op: op::FLUSH,
                        offset: 0,
                        len: 0,
                    },
                    Pending::Flush(Vec::new()),
                    &dev,
                );
                if d.m.n.flushes > before {
                    break;
                }
            }
            assert_eq!(
                d.m.flush_eio[q], 1,
                "crash point {point}: queue {q}: FLUSHes failing with EIO after the re-attach"
            );
        }
        max_lost_tokens = max_lost_tokens.max(d.blk.queues.iter().map(|q| q.tokens.lost).sum());
        assert!(
            d.blk
                .queues
                .iter()
                .all(|q| q.tokens.incarnation as u64 == point + 2),
            "incarnation not bumped at re-attach {}: {:?}",
            point + 1,
            d.blk
                .queues
                .iter()
                .map(|q| q.tokens.incarnation)
                .collect::<Vec<_>>()
        );
        // 4. Read everything back through the protocol.
        let chunk = 64 * 1024;
        for off in (0..NBLOCKS * BLOCK).step_by(chunk) {
            let q = (off / chunk) % 2;
            assert!(
                d.submit(
                    q,
                    Request {
                        op: op::READ,
                        offset: off as u64,
                        len: chunk as u32,
                    },
                    &[],
                    Intent::Standard,
                    Pending::Read(off),
                    &|| false,
                )
                .is_some()
            );
        }
        d.drain("read-back", &dev);
        let readback = std::mem::take(&mut d.m.readback);
        let rvers = d.m.check(
            &readback,
            &format!("crash point {point} (seed {seed}): read-back after re-attach"),
        );
        d.m.readback = readback;
        let image = std::fs::read(&s.img).unwrap();
        assert!(
            image == d.m.readback,
            "crash point {point}: after a FLUSH, the image differs from what the device reads"
        );
        // What the device holds now is durable: the new baseline.
        d.m.rebase(rvers);
        eprintln!(
            "crash point {}/{points}: kill after {delay:?}, bound {bound} us, {:?} elapsed",
            point + 1,
            started.elapsed()
        );
    }

    d.blk.stop().expect("blkdev stop");
    dev.send_line("stop").unwrap();
    let out = dev.wait(Duration::from_secs(120));
    assert_eq!(
        out.status,
        KernelStatus::Success,
        "{}\n{}",
        out.status.describe(),
        out.output
    );
    let n = d.m.n;
    eprintln!(
        "crash: {points} crash points in {:?}: {n:?}, tokens lost at re-attach (max cumulative) {max_lost_tokens}",
        started.elapsed()
    );
    assert_eq!(n.violations, 0);
    assert!(n.writes > 0 && n.flushes > 0);
}
