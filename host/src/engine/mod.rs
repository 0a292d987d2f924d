//! The host (blkdev) role of the protocol: what the Linux CBD driver does, native so
//! that it is tested against the `device` crate's backend engine and the Linux host
//! program (`crate::linux`) reuses it.
//!
//! Non-blocking like the backend: [`HostQueue::submit`] and [`HostQueue::poll`]
//! return immediately (`Busy` / `None` when there is nothing to do).
//!
//! This file holds the types and each queue's state; the work is split by concern:
//! `blkdev` (register, dev-start, the blkdev record), `reset` (RESET of a queue),
//! `submit`, `complete`, `tokens` (durability tokens) and `sabotage` (rules a negative test
//! may switch off, with the cargo feature `sabotage` only).

mod blkdev;
mod complete;
mod reset;
mod sabotage;
mod submit;
mod tokens;

pub use blkdev::{Blkdev, Host};
#[cfg(feature = "sabotage")]
pub use sabotage::HostSabotage;
pub use tokens::{DurableUpdate, TokenStats};

pub use device::durable::Intent;

use device::channel::ChannelGeom;
use device::shm::{OutOfBounds, SharedMem, Shm};
use device::transport::TransportError;

/// Most queues (channels) per blkdev and most requests in flight per queue.
pub const MAX_QUEUES: usize = 16;
pub const MAX_DEPTH: usize = 128;
/// Completed, not yet confirmed durable write tokens tracked one by one per queue
/// (older ones are still counted, without their latency).
pub const MAX_TOKENS: usize = 256;
/// v3 waits 30 s for a RESET answer.
pub const RESET_TIMEOUT_NS: u64 = 30_000_000_000;

#[derive(Clone, Copy, Debug)]
pub struct HostConfig<'a> {
    pub hostname: &'a str,
    /// Require the non-coherent mode (the backend must advertise it).
    pub noncoherent: bool,
    pub queue_depth: usize,
    /// Non-coherent mode: re-reads of a stale CE/payload before giving up.
    pub nc_retries: u32,
    /// Accept durability tokens when the backend offers them.
    pub durable_tokens: bool,
    /// Deliberate protocol violations for negative tests (feature `sabotage` only).
    #[cfg(feature = "sabotage")]
    pub sabotage: HostSabotage,
}
impl Default for HostConfig<'_> {
    fn default() -> Self {
        Self {
            hostname: "host",
            noncoherent: false,
            queue_depth: MAX_DEPTH,
            nc_retries: 512,
            durable_tokens: true,
            #[cfg(feature = "sabotage")]
            sabotage: HostSabotage::default(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostError {
    Transport(TransportError),
    Shm(OutOfBounds),
    /// No live backend / backend not alive / wrong state.
    NoBackend,
    /// Backend does not offer a required feature (non-coherent mode).
    Unsupported,
    /// Another running blkdev already uses the backend.
    InUse,
    /// Queue not ready (RESET not answered yet).
    NotReady,
    /// Ring, data area or depth full; poll completions and retry.
    Busy,
    /// Request malformed (length, alignment, payload size).
    Invalid,
    /// Previous management command not completed, or RESET answered with EIO.
    ResetFailed,
    /// RESET not answered within 30 s.
    Timeout,
    /// The device published a pointer outside its ring.
    BadPointer,
    /// A CE failed validation (coherent mode; it was skipped).
    BadCompletion {
        req_tid: u64,
    },
    /// Non-coherent mode: a CE never became valid within the re-read bound.
    Stale,
}
impl From<TransportError> for HostError {
    fn from(e: TransportError) -> Self {
        Self::Transport(e)
    }
}
impl From<OutOfBounds> for HostError {
    fn from(e: OutOfBounds) -> Self {
        Self::Shm(e)
    }
}

/// One block request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    pub op: u32,
    /// Byte offset on the backend device (512-aligned).
    pub offset: u64,
    /// Byte length (512-aligned, ≤ 1 MiB; 0 for FLUSH).
    pub len: u32,
}

/// A finished request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    pub req_tid: u64,
    pub req: Request,
    /// 0 or a negative errno.
    pub result: i32,
    /// Already durable at completion (CE flag DURABLE, or covered by the watermark).
    pub durable: bool,
}

#[derive(Clone, Debug, Default)]
struct Tokens {
    /// (req_tid, completed at) of completed, unconfirmed tokens, in tid order.
    q: heapless::Deque<(u64, u64), MAX_TOKENS>,
    /// Tokens evicted from `q` (a prefix): how many and the largest tid.
    evicted: u64,
    evicted_max: u64,
    incarnation: Option<u32>,
    /// After a new incarnation: tids below this may have been completed by the old
    /// one (staging lost), so they are never confirmed.
    lost_below: u64,
    /// Incarnation changes seen.
    restarts: u64,
}

#[derive(Clone, Copy, Debug)]
struct InFlight {
    tid: u64,
    pos: u32,
    req: Request,
    data_off: u32,
    data_span: u32,
    done: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum QState {
    Resetting { since_ns: u64, cmd_seq: u8 },
    Ready,
    Failed,
}

/// One queue = one channel.
pub struct HostQueue<'a, M: SharedMem + ?Sized> {
    shm: Shm<'a, M>,
    pub idx: u32,
    g: ChannelGeom,
    nc: bool,
    cfg: HostConfig<'a>,
    state: QState,
    submr_head: u32,
    submr_tail: u32,
    compr_tail: u32,
    next_tid: u64,
    epoch: u32,
    base_tid: u64,
    data_head: u64,
    data_tail: u64,
    inflight: heapless::Deque<InFlight, MAX_DEPTH>,
    /// A payload write-back the `sabotage` switch held back (always `None` otherwise).
    deferred_wb: Option<(u32, u32)>,
    pub stats: QueueStats,
    /// Durability tokens negotiated for this queue.
    durable: bool,
    tok: Tokens,
    pub tokens: TokenStats,
    power_window_us: u64,
    now_ns: u64,
}

/// Counters of one queue (tests use them to prove wrap-around happened).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub submitted: u64,
    pub completed: u64,
    /// Submission ring wrapped to offset 0.
    pub se_wraps: u64,
    /// A payload extent wrapped from the end of the data area to its start.
    pub data_wraps: u64,
    pub resets: u64,
}

impl<'a, M: SharedMem + ?Sized> HostQueue<'a, M> {
    fn new(shm: Shm<'a, M>, idx: u32, g: ChannelGeom, nc: bool, cfg: HostConfig<'a>) -> Self {
        Self {
            shm,
            idx,
            g,
            nc,
            cfg,
            state: QState::Failed,
            submr_head: 0,
            submr_tail: 0,
            compr_tail: 0,
            next_tid: 0,
            epoch: 0,
            base_tid: 0,
            data_head: 0,
            data_tail: 0,
            inflight: heapless::Deque::new(),
            deferred_wb: None,
            stats: QueueStats::default(),
            durable: false,
            tok: Tokens::default(),
            tokens: TokenStats::default(),
            power_window_us: 0,
            now_ns: 0,
        }
    }

    pub fn is_ready(&self) -> bool {
        self.state == QState::Ready
    }
    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }
    pub fn noncoherent(&self) -> bool {
        self.nc
    }
}
