//! The model disk of the adversarial lessons (the same idea as host/tests/common: new
//! requests never overlap one in flight, so every request's expected result is exact).

use device::layout::op;
use device::rng::SplitMix64 as Rng;
use host::engine::{Completion, Request};
use host::harness::adversarial;
use std::collections::HashMap;

/// Random request sizes 512 B ..= `max` (sector multiples), mostly small.
fn random_len(r: &mut Rng, max: u32) -> u32 {
    let sectors = match r.below(100) {
        0..80 => 1 + r.below(8),   // 512 B .. 4 KiB
        80..95 => 9 + r.below(24), // .. 16 KiB
        _ => 33 + r.below(96),     // .. 64 KiB
    } as u32;
    (sectors * 512).min(max)
}

pub struct Model {
    pub disk: Vec<u8>,
    /// Per 512-byte sector: the last WRITE submitted there, (queue, req_tid).
    pub writer: Vec<Option<(u32, u64)>>,
    pub inflight: HashMap<(usize, u64), (Request, Vec<u8>)>,
    pub counts: Counts,
}

/// What completed, by kind.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    pub writes: u64,
    pub reads: u64,
    pub flushes: u64,
}

impl Model {
    pub fn new(size: usize) -> Self {
        Self {
            disk: vec![0; size],
            writer: vec![None; size / 512],
            inflight: HashMap::new(),
            counts: Counts::default(),
        }
    }

    fn overlaps(&self, off: u64, len: u32) -> bool {
        self.inflight
            .values()
            .any(|(q, _)| q.len > 0 && off < q.offset + q.len as u64 && q.offset < off + len as u64)
    }
}

impl adversarial::Model for Model {
    /// A random WRITE, READ or FLUSH that overlaps nothing in flight; READs favour
    /// what was written (so a wrong payload shows).
    fn random_request(&self, r: &mut Rng, max_len: u32, payload: &mut Vec<u8>) -> Request {
        let k = r.below(100);
        let flush = Request {
            op: op::FLUSH,
            offset: 0,
            len: 0,
        };
        if k < 8 {
            return flush;
        }
        let len = random_len(r, max_len);
        // Most requests fall in the first 64 KiB: reads see the writes.
        let span = (64u64 << 10).max(len as u64);
        for _ in 0..8 {
            let off = r.below((span - len as u64) / 512 + 1) * 512;
            if !self.overlaps(off, len) {
                let opc = if k < 55 { op::WRITE } else { op::READ };
                if opc == op::WRITE {
                    payload.resize(len as usize, 0);
                    r.fill(payload);
                }
                return Request {
                    op: opc,
                    offset: off,
                    len,
                };
            }
        }
        flush
    }

    /// The model applies writes at submission.
    fn submitted(&mut self, q: usize, tid: u64, req: Request, payload: &[u8]) {
        let mut data = Vec::new();
        if req.op == op::WRITE {
            self.disk[req.offset as usize..][..req.len as usize].copy_from_slice(payload);
            let s = req.offset as usize / 512;
            for w in &mut self.writer[s..s + req.len as usize / 512] {
                *w = Some((q as u32, tid));
            }
        } else if req.op == op::READ {
            data = self.disk[req.offset as usize..][..req.len as usize].to_vec();
        }
        self.inflight.insert((q, tid), (req, data));
    }

    /// Check a completion: known, successful, READ data exact. A wrong READ also names
    /// the WRITE whose data it should have returned.
    fn completed(
        &mut self,
        q: usize,
        c: &Completion,
        read_buf: &[u8],
    ) -> Result<(), (String, Vec<(u32, u64)>)> {
        let tid = crate::trace::tid(c.req_tid);
        let Some((req, expect)) = self.inflight.remove(&(q, c.req_tid)) else {
            return Err((
                format!("q{q}: completion for unknown tid {tid}"),
                Vec::new(),
            ));
        };
        if c.result != 0 {
            return Err((
                format!(
                    "q{q}: tid {tid} {} {:#x} +{} failed with {}",
                    name(req.op),
                    req.offset,
                    req.len,
                    c.result
                ),
                Vec::new(),
            ));
        }
        match req.op {
            op::WRITE => self.counts.writes += 1,
            op::READ => self.counts.reads += 1,
            _ => self.counts.flushes += 1,
        }
        if req.op == op::READ && read_buf[..req.len as usize] != expect[..] {
            let first = read_buf
                .iter()
                .zip(&expect)
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            let writer = self.writer_of(req.offset + first as u64);
            let by = match writer {
                Some((wq, wt)) => format!(" (written by tid {} on q{wq})", crate::trace::tid(wt)),
                None => String::new(),
            };
            return Err((
                format!(
                    "q{q}: tid {tid} READ {:#x} +{} returned wrong data at +{first}{by}",
                    req.offset, req.len
                ),
                writer.into_iter().collect(),
            ));
        }
        Ok(())
    }
    fn in_flight(&self) -> usize {
        self.inflight.len()
    }
}

impl Model {
    /// The last WRITE submitted over byte `off`.
    pub fn writer_of(&self, off: u64) -> Option<(u32, u64)> {
        self.writer.get(off as usize / 512).copied().flatten()
    }
}

pub fn name(opc: u32) -> &'static str {
    match opc {
        op::WRITE => "WRITE",
        op::READ => "READ",
        op::FLUSH => "FLUSH",
        _ => "op",
    }
}
