//! `cbd-host --history PATH`: the history of what this host submitted on its CBD channels
//! and what completed, in the `history` crate's text format (`docs/consistency.md`), for
//! `history check PATH` or a test to check against the consistency model.
//!
//! Recorded at the CBD ring (`level=cbd`: per channel, submission order is promised):
//!
//! * every CBD request: its invocation stamped *before* `submit` (the backend may run it
//!   at once), written after with the tid it got; a WRITE's sector digests;
//! * its completion when the queue consumed the CE (DURABLE flag; a READ's digests), while
//!   the channel is held, so that a token flush's snapshot taken after the stamp sees it;
//! * a ublk flush answered from the watermarks (no CBD command, durability tokens on) as a
//!   FLUSH on the pseudo-channel [`FLUSH_CHANNEL`] + queue (one per queue, in order);
//! * every durable watermark the host reads (each channel, when it rises);
//! * a `crash` when a durability line shows a new backend incarnation, recorded before any
//!   completion consumed after that line could be read: before each completion is
//!   recorded, the channel's line is read again (the new incarnation publishes its lines
//!   before it runs anything, so a CE it posted implies a line showing it).
//!
//! Requests this host fails itself (dead backend, broken channel: `EIO` to ublk) get no
//! completion: their SE is still in the ring and a later incarnation may run it; if its CE
//! comes, that completion is recorded. Initial content is unknown (`initial=unknown`).
//! Without durability tokens (`--plain-v3`) the protocol shows no incarnation, so a history
//! across a backend restart has no crash point and is not meaningful.

use std::io::Write;
use std::sync::Mutex;

use device::layout::op;
use history::{Digest, Header, Initial, Level, OpKind};

use super::Chan;

/// The history sink: a buffered file (or any writer) behind the text format.
pub type HistoryLog = history::Log<Box<dyn Write + Send>>;

/// Token flushes of queue `q` are recorded as FLUSHes on channel `FLUSH_CHANNEL + q`.
pub const FLUSH_CHANNEL: u16 = 1000;

/// The header cbd-host writes: the CBD level, content before the run unknown, DISCARD
/// leaves zeroes (the cbdfw media).
pub fn header() -> Header {
    Header {
        level: Level::Cbd,
        initial: Initial::Unknown,
        ..Header::default()
    }
}

/// The history log and what it needs across channels.
pub(super) struct Recording {
    pub log: std::sync::Arc<HistoryLog>,
    /// The newest backend incarnation any channel showed (0: none yet).
    incarnation: Mutex<u32>,
}

/// Per channel: the last watermark recorded and its incarnation.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct ChanMarks {
    watermark: u64,
    incarnation: u32,
}

pub(super) fn kind_of(code: u32) -> OpKind {
    match code {
        op::WRITE => OpKind::Write,
        op::READ => OpKind::Read,
        op::DISCARD => OpKind::Discard,
        op::WRITE_ZEROES => OpKind::WriteZeroes,
        _ => OpKind::Flush,
    }
}

impl Recording {
    pub fn new(log: std::sync::Arc<HistoryLog>) -> Self {
        Recording {
            log,
            incarnation: Mutex::new(0),
        }
    }

    /// After `poll_durable` on `c` (channel `idx`): a new incarnation is a crash; a
    /// higher watermark is recorded.
    pub fn durable_seen(&self, idx: u16, c: &mut Chan) {
        let t = c.q.tokens;
        if t.incarnation == 0 {
            return;
        }
        {
            let mut seen = self.incarnation.lock().unwrap_or_else(|p| p.into_inner());
            if t.incarnation > *seen {
                if *seen != 0 {
                    log::info!(
                        "history: backend incarnation {} -> {}: crash point",
                        *seen,
                        t.incarnation
                    );
                    self.log.crash(&[]);
                }
                *seen = t.incarnation;
            }
        }
        if c.marks.incarnation != t.incarnation {
            c.marks = ChanMarks {
                watermark: 0,
                incarnation: t.incarnation,
            };
        }
        if t.watermark > c.marks.watermark {
            c.marks.watermark = t.watermark;
            self.log.watermark(idx, t.watermark);
        }
    }
}

/// Sector digests of a payload (empty when not recording).
pub(super) fn digests_if(rec: Option<&Recording>, data: &[u8]) -> Vec<Digest> {
    match rec {
        Some(_) if !data.is_empty() => history::digests(data),
        _ => Vec::new(),
    }
}
