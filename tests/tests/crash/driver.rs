//! The driver: the host's write workload on the blkdev, polling completions and the
//! durability line into the model.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use history::{OpId, OpKind, Outcome, Recorder};

use device::durable::Intent;
use device::layout::op;
use device::native::MmapMem;
use host::engine::{Blkdev, HostError, Request};
use qemu::Vm;

use crate::common::{Rng, now_ns};
use crate::model::{Model, Pending};
use crate::verifier::{BLOCK, block_content};
use crate::{NBLOCKS, QD};

pub type Dev<'a> = Blkdev<'a, MmapMem>;

pub struct Driver<'a> {
    pub blk: Dev<'a>,
    pub m: Model,
    pub read_buf: Vec<u8>,
    /// The history of every request, watermark and crash (checked at the end).
    pub rec: Recorder,
    /// Per queue: the history op of each tid in flight.
    pub ids: [HashMap<u64, OpId>; 2],
    /// Per queue: the last watermark recorded and its backend incarnation.
    pub marks: [(u32, u64); 2],
    /// Overlapping writes allowed (and reads mixed in): the history checker judges them,
    /// the per-version model cannot.
    pub overlap: bool,
}

fn kind(code: u32) -> OpKind {
    match code {
        op::WRITE => OpKind::Write,
        op::READ => OpKind::Read,
        _ => OpKind::Flush,
    }
}

impl<'a> Driver<'a> {
    /// Poll every queue once: completions and the durability line.
    pub fn poll_once(&mut self) {
        let now = now_ns();
        let _ = self.blk.heartbeat(now);
        for q in 0..2 {
            while let Some(c) = self.blk.queues[q]
                .poll_at(&mut self.read_buf, now)
                .expect("poll")
            {
                if let Some(id) = self.ids[q].remove(&c.req_tid) {
                    let ok = c.result == 0;
                    let outcome = if ok {
                        Outcome::Ok
                    } else {
                        Outcome::Err(-c.result)
                    };
                    let data =
                        (ok && c.req.op == op::READ).then(|| &self.read_buf[..c.req.len as usize]);
                    self.rec.complete(id, outcome, data, ok && c.durable);
                }
                self.m.on_complete(q, c, &self.read_buf);
            }
            self.blk.queues[q].poll_durable(now).expect("poll_durable");
            let t = self.blk.queues[q].tokens;
            if self.marks[q].0 != t.incarnation {
                self.marks[q] = (t.incarnation, 0);
            }
            if t.watermark > self.marks[q].1 {
                self.marks[q].1 = t.watermark;
                self.rec.watermark(q as u16, t.watermark);
            }
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
    pub fn submit(
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
            // Stamped before the device (running on its own) can see the request.
            let at = self.rec.tick();
            match self.blk.queues[q].submit_intent(req, payload, intent) {
                Ok(tid) => {
                    let written = match req.op {
                        op::WRITE => history::digests(payload),
                        _ => Vec::new(),
                    };
                    let (k, off, len) = (kind(req.op), req.offset, req.len);
                    let id = self.rec.invoke_at(at, q as u16, tid, k, off, len, written);
                    self.ids[q].insert(tid, id);
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
    pub fn workload(&mut self, rng: &mut Rng, flush_every: u64, stop: &dyn Fn() -> bool) {
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
            // Overlap: most requests in the first 64 blocks, reads racing the writes.
            let span = if self.overlap { 64 } else { NBLOCKS };
            let b0 = rng.below((span - k + 1) as u64) as usize;
            if self.overlap && rng.below(4) == 0 {
                let req = Request {
                    op: op::READ,
                    offset: (b0 * BLOCK) as u64,
                    len: (k * BLOCK) as u32,
                };
                let p = Pending::Read(b0 * BLOCK);
                if self
                    .submit(q, req, &[], Intent::Standard, p, stop)
                    .is_none()
                {
                    return;
                }
                continue;
            }
            // No overlapping writes in flight: wait for the older one.
            while !self.overlap && self.m.busy[b0..b0 + k].iter().any(|&n| n > 0) {
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
    pub fn drain(&mut self, what: &str, dev: &Vm) {
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

    pub fn run_one(&mut self, q: usize, req: Request, p: Pending, dev: &Vm) {
        assert!(
            self.submit(q, req, &[], Intent::Standard, p, &|| false)
                .is_some()
        );
        self.drain("request", dev);
    }
}
