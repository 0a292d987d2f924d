//! The host-side model: what was submitted, completed and confirmed durable per
//! block, what is in flight, and the counters the test reports.

use std::collections::BTreeMap;

use device::layout::{errno, op};
use host::engine::Completion;

use crate::NBLOCKS;
use crate::verifier::{BLOCK, Violation, verify};

pub enum Pending {
    /// (block, version) per 4 KiB block of the write.
    Write(Vec<(usize, u64)>),
    /// FLUSH: the completed-unconfirmed writes (queue, tid) it covers.
    Flush(Vec<(usize, u64)>),
    Read(usize),
    /// In flight at a kill: its completion proves nothing (either incarnation).
    Orphan(u32, Vec<(usize, u64)>),
}

#[derive(Default, Debug, Clone, Copy)]
pub struct Counts {
    pub writes: u64,
    pub blocks_written: u64,
    pub critical: u64,
    pub flushes: u64,
    pub watermark_waits: u64,
    pub confirmed_by_watermark: u64,
    pub confirmed_by_flush: u64,
    pub confirmed_by_ce: u64,
    /// Blocks found (image) older than their newest completed version: completed,
    /// unconfirmed writes lost in the crash (staging at work).
    pub lost_completed_blocks: u64,
    /// Blocks found newer than their newest completed version (in flight at the kill).
    pub inflight_landed_blocks: u64,
    /// Blocks found newer than confirmed (completed or in flight, survived).
    pub unconfirmed_survived_blocks: u64,
    pub blocks_checked: u64,
    pub violations: u64,
}

pub struct Model {
    /// Newest version submitted per block.
    pub last: Vec<u64>,
    /// Newest version confirmed durable per block.
    pub floor: Vec<u64>,
    /// Newest version completed per block.
    pub completed: Vec<u64>,
    pub pending: [BTreeMap<u64, Pending>; 2],
    /// Completed, not yet confirmed writes per queue.
    pub unconfirmed: [BTreeMap<u64, Vec<(usize, u64)>>; 2],
    /// FLUSH results since the last kill, per queue: EIO count.
    pub flush_eio: [u32; 2],
    /// Writes in flight per block: the workload never has two overlapping writes
    /// in flight (their order would be undefined, as for any block device).
    pub busy: Vec<u32>,
    /// What happened to each block since the last baseline (for failure reports).
    pub hist: Vec<Vec<String>>,
    pub readback: Vec<u8>,
    pub n: Counts,
}

impl Model {
    pub fn new() -> Self {
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

    pub fn confirm(&mut self, blocks: &[(usize, u64)], how: &str) {
        for &(b, v) in blocks {
            self.floor[b] = self.floor[b].max(v);
            self.hist[b].push(format!("v{v} confirmed ({how})"));
        }
    }

    pub fn note(&mut self, blocks: &[(usize, u64)], what: &str) {
        for &(b, v) in blocks {
            self.hist[b].push(format!("v{v} {what}"));
        }
    }

    /// Checks a whole disk (the image file, or what was read back) against the
    /// model, counts it, and panics with the blocks' histories on a violation.
    /// Returns the version found in each block.
    pub fn check(&mut self, disk: &[u8], what: &str) -> Vec<u64> {
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
    pub fn report(&self, bad: &[Violation]) -> String {
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
    pub fn rebase(&mut self, vers: Vec<u64>) {
        for (b, &v) in vers.iter().enumerate() {
            self.hist[b] = vec![format!("baseline v{v}")];
        }
        self.floor = vers.clone();
        self.completed = vers;
    }

    pub fn on_complete(&mut self, q: usize, c: Completion, read_buf: &[u8]) {
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
    pub fn on_kill(&mut self) {
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
