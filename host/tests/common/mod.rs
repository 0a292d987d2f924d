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

/// One transport image as the two engines see it: a coherent heap both share, or the
/// adversarial non-coherent memory with agent 0 for the device and agent 1 for the host.
pub enum Memory {
    Heap(device::native::HeapMem),
    Adv(Box<device::adversary::Adversary>),
}

impl Memory {
    /// Coherent memory (`nc` false) or adversarial memory over `image`; the
    /// adversary's seed and eviction rate are drawn from `r`, in that order.
    pub fn new(nc: bool, image: std::sync::Arc<Vec<u8>>, r: &mut Rng) -> Self {
        if nc {
            let cfg = device::adversary::AdvConfig {
                seed: r.next(),
                evict_per_mille: [0, 30, 200][r.below(3) as usize],
                max_delay: 32,
                ..device::adversary::AdvConfig::default()
            };
            Memory::Adv(Box::new(device::adversary::Adversary::new(image, 2, cfg)))
        } else {
            Memory::Heap(device::native::HeapMem::from_bytes(&image))
        }
    }

    /// The adversary, in non-coherent mode (its violations, crashes).
    pub fn adversary(&self) -> Option<&device::adversary::Adversary> {
        match self {
            Memory::Adv(a) => Some(a),
            Memory::Heap(_) => None,
        }
    }

    /// The device's and the host's views.
    pub fn views(&self) -> Views<'_> {
        match self {
            Memory::Heap(h) => Views::Heap(h),
            Memory::Adv(a) => Views::Adv(a.agent(0), a.agent(1)),
        }
    }

    /// The device crashed: in non-coherent mode, what its agent had not written back
    /// is lost and the lines in flight settle.
    pub fn crash_device(&self) {
        if let Memory::Adv(a) = self {
            a.crash(0);
            a.drain();
        }
    }
}

/// The two engines' views of a [`Memory`].
pub enum Views<'a> {
    Heap(&'a device::native::HeapMem),
    Adv(
        device::adversary::AgentMem<'a>,
        device::adversary::AgentMem<'a>,
    ),
}

impl Views<'_> {
    pub fn device(&self) -> &dyn device::shm::SharedMem {
        match self {
            Views::Heap(h) => *h,
            Views::Adv(d, _) => d,
        }
    }
    pub fn host(&self) -> &dyn device::shm::SharedMem {
        match self {
            Views::Heap(h) => *h,
            Views::Adv(_, h) => h,
        }
    }
}
