//! Shared test helpers: a small PRNG, the random workload and the model disk.
#![allow(dead_code)]

use device::layout::op;
use host::engine::Request;

/// The project's one deterministic PRNG (SplitMix64), named as the tests call it.
pub use device::rng::SplitMix64 as Rng;

/// Random request sizes 512 B ..= 1 MiB, mostly small (sector multiples).
pub fn random_len(r: &mut Rng, max: u32) -> u32 {
    let sectors = match r.below(100) {
        0..70 => 1 + r.below(32),       // 512 B .. 16 KiB
        70..97 => 33 + r.below(224),    // .. 128 KiB
        _ => 257 + r.below(2048 - 256), // .. 1 MiB
    } as u32;
    (sectors * 512).min(max)
}

/// The model disk plus the set of in-flight ranges (new requests never overlap
/// an in-flight one, so the expected result of every request is exact).
pub struct Model {
    pub disk: Vec<u8>,
    pub inflight: std::collections::HashMap<(usize, u64), (Request, Vec<u8>)>,
    /// After a backend crash + re-attach, a FLUSH may report -EIO (writes the dead
    /// incarnation had staged may be lost): accept that.
    pub flush_eio_ok: bool,
}

impl Model {
    pub fn new(size: usize) -> Self {
        Self {
            disk: vec![0; size],
            inflight: Default::default(),
            flush_eio_ok: false,
        }
    }
    fn overlaps(&self, off: u64, len: u32) -> bool {
        self.inflight
            .values()
            .any(|(q, _)| q.len > 0 && off < q.offset + q.len as u64 && q.offset < off + len as u64)
    }
    /// A random request that does not overlap anything in flight (FLUSH otherwise).
    pub fn random_request(&self, r: &mut Rng, max_len: u32, payload: &mut Vec<u8>) -> Request {
        let k = r.below(100);
        if k < 8 {
            return Request {
                op: op::FLUSH,
                offset: 0,
                len: 0,
            };
        }
        let len = random_len(r, max_len);
        for _ in 0..8 {
            let off = r.below((self.disk.len() as u64 - len as u64) / 512 + 1) * 512;
            if !self.overlaps(off, len) {
                let opc = if k < 54 { op::WRITE } else { op::READ };
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
        Request {
            op: op::FLUSH,
            offset: 0,
            len: 0,
        }
    }
    /// Record a submitted request (the model applies writes at submission).
    pub fn submitted(&mut self, q: usize, tid: u64, req: Request, payload: &[u8]) {
        let mut data = Vec::new();
        if req.op == op::WRITE {
            self.disk[req.offset as usize..][..req.len as usize].copy_from_slice(payload);
        } else if req.op == op::READ {
            data = self.disk[req.offset as usize..][..req.len as usize].to_vec();
        }
        assert!(
            self.inflight.insert((q, tid), (req, data)).is_none(),
            "tid reused"
        );
    }
    /// Check a completion: known, not duplicated, successful, READ data exact.
    pub fn completed(
        &mut self,
        q: usize,
        c: &host::engine::Completion,
        read_buf: &[u8],
    ) -> Result<(), String> {
        let Some((req, expect)) = self.inflight.remove(&(q, c.req_tid)) else {
            return Err(format!(
                "q{q}: completion for unknown or already completed tid {}",
                c.req_tid
            ));
        };
        if req != c.req {
            return Err(format!(
                "q{q}: tid {} completed as {:?}, submitted as {:?}",
                c.req_tid, c.req, req
            ));
        }
        let eio_flush = req.op == op::FLUSH && c.result == -5 && self.flush_eio_ok;
        if c.result != 0 && !eio_flush {
            return Err(format!(
                "q{q}: tid {} {:?} failed with {}",
                c.req_tid, req, c.result
            ));
        }
        if req.op == op::READ && read_buf[..req.len as usize] != expect[..] {
            let first = read_buf
                .iter()
                .zip(&expect)
                .position(|(a, b)| a != b)
                .unwrap();
            return Err(format!(
                "q{q}: tid {} READ {:?} returned wrong data at +{first}",
                c.req_tid, req
            ));
        }
        Ok(())
    }
}
