//! The backend device engine (the role cbdfw plays on the transport).
//!
//! Non-blocking: [`Backend::poll`] does a bounded amount of work (heartbeat,
//! management plane, up to `batch` SEs per channel) and returns, so the kernel
//! can call it from its busy-poll loop and tests can interleave it with a host.
//!
//! Rooms: this file (configuration, errors, per-channel state, accessors),
//! `provision.rs` (start: provision or re-attach; stop), `serve.rs` (the poll
//! loop and data plane: fetch SE, post CE, publish `compr_head`), `mgmt.rs`
//! (v3 RESET and the non-coherent epoch bump), `ops.rs` (one handler per op),
//! `durability.rs` (durability-token negotiation and watermarks), `sabotage.rs`
//! (test-only rule breaking, feature `sabotage`).

use crate::channel::*;
use crate::durable::{DurableConfig, Intent, Reservation, Stager, StagerStats};
use crate::layout::*;
use crate::media::Media;
use crate::meta;
use crate::shm::{OutOfBounds, SharedMem, Shm};
use crate::trace::{CopyDir, Pointer, RecordKind, Reject, TraceEvent};
use crate::transport::{SlotKind, Transport, TransportError, is_alive};

mod durability;
mod mgmt;
mod ops;
mod provision;
mod sabotage;
mod serve;

/// Most handler channels one engine serves.
pub const MAX_CHANNELS: usize = 16;

#[cfg(feature = "sabotage")]
pub use sabotage::Sabotage;
#[cfg(not(feature = "sabotage"))]
use sabotage::Sabotage;

#[derive(Clone, Copy, Debug)]
pub struct BackendConfig<'a> {
    /// Name of the host record the device registers as.
    pub hostname: &'a str,
    /// Backend path (unique per host; re-attach is by host id + path).
    pub path: &'a str,
    pub n_handlers: u32,
    /// Offer and serve the non-coherent mode (extensions §1).
    pub noncoherent: bool,
    /// Offer DISCARD / WRITE_ZEROES (ops 3 and 4).
    pub discard_wz: bool,
    /// Max SEs handled per channel per `poll`.
    pub batch: u32,
    /// Non-coherent mode: re-reads of a stale entry/payload before giving up.
    pub nc_retries: u32,
    /// Durability tokens: offer, and the staging / write-back policy.
    pub durable: DurableConfig,
    /// Restart after a crash: take over this device's own host and backend records
    /// (same hostname and path) without waiting for the dead incarnation's heartbeat
    /// to time out. Only correct when no other live instance uses the same name.
    pub takeover: bool,
    /// Another backend of this same device (same `hostname`, another `path`) has already
    /// registered the host record: join that record instead of refusing it as alive.
    /// A device exporting several disks starts one engine per disk, the first without,
    /// the others with this flag.
    pub join_host: bool,
    /// Deliberate protocol violations for negative tests (feature `sabotage` only;
    /// the firmware is built without it).
    #[cfg(feature = "sabotage")]
    pub sabotage: Sabotage,
}

impl BackendConfig<'_> {
    /// The sabotage switches in force: all off unless the `sabotage` feature is on and
    /// a test set one (without the feature this is a constant the optimiser folds).
    #[inline]
    pub(crate) fn sabotage(&self) -> Sabotage {
        #[cfg(feature = "sabotage")]
        return self.sabotage;
        #[cfg(not(feature = "sabotage"))]
        return Sabotage::NONE;
    }
}

impl Default for BackendConfig<'_> {
    fn default() -> Self {
        Self {
            hostname: "cbdfw",
            path: "/dev/cbdfw0",
            n_handlers: 1,
            noncoherent: false,
            discard_wz: true,
            batch: 64,
            nc_retries: 512,
            durable: DurableConfig::default(),
            takeover: false,
            join_host: false,
            #[cfg(feature = "sabotage")]
            sabotage: Sabotage::NONE,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendError {
    Transport(TransportError),
    Shm(OutOfBounds),
    /// Scratch buffer smaller than `chan::MAX_IO`.
    Scratch,
    BadConfig,
    /// Re-attach found a record that does not match (host, size, channels).
    Mismatch,
    /// Stop refused: a running blkdev uses this backend.
    Busy,
    /// Non-coherent mode: an entry never became valid within the re-read bound.
    /// The channel keeps its cursor and retries on the next poll.
    Stale {
        chan: u32,
    },
    /// A peer pointer in shared memory is out of range (channel not served this poll).
    BadPointer {
        chan: u32,
    },
    /// The media failed a write-back or flush: nothing new is declared durable
    /// (writes stay pending and are retried at the next deadline, FLUSH, CRITICAL).
    Media,
}
impl From<TransportError> for BackendError {
    fn from(e: TransportError) -> Self {
        Self::Transport(e)
    }
}
impl From<OutOfBounds> for BackendError {
    fn from(e: OutOfBounds) -> Self {
        Self::Shm(e)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// CBD v3 control page, acquire/release pointers.
    V3,
    /// Our non-coherent mode (own lines, write-back/invalidate, CRCs).
    Nc,
}

#[derive(Clone, Copy, Debug)]
struct Chan {
    idx: u32,
    seg_id: u32,
    g: ChannelGeom,
    mode: Mode,
    cursor: u32,
    expect_tid: Option<u64>,
    compr_head: u32,
    epoch: u32,
    /// Re-attach: SEs with tid <= this were already completed (CE published).
    skip_upto: Option<u64>,
    /// The blkdev accepted DURABLE_TOKENS for this channel (else plain v3).
    durable: bool,
    /// Watermark last published in the durability line (exclusive).
    dur_pub: u64,
    /// Host's power window (µs, 0 = none), read from its durability line.
    power_us: u64,
    /// Re-attached after an unclean stop: writes the previous incarnation completed
    /// may have been lost with its staging RAM; which FLUSHes must fail until the
    /// host has been told (see [`Loss`]).
    loss: Loss,
    /// Re-attach: completions of the dead incarnation on this channel the host had not
    /// consumed yet (`None` once all are).
    stale: Option<Stale>,
}

/// What a channel still owes the host after an unclean re-attach. The dead
/// incarnation may have lost writes it had completed (staged in its RAM), so a FLUSH
/// may only succeed if, before it was submitted, the host had been told by a failed
/// FLUSH on this channel, and had seen no completion of the dead incarnation (on any
/// channel) since. docs/durability.md, "After a device crash", argues why this covers
/// every lost write. Ring positions come from the device's own cursor / `compr_head`
/// and from validated host pointers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Loss {
    /// Nothing to report (provisioned fresh, RESET since, or reported).
    None,
    /// Every FLUSH fails. `report`: CE position of the first failure posted since the
    /// state began (the one that tells the host).
    Failing { report: Option<u32> },
    /// The host consumed the report; the next `left` SEs run were in the ring when the
    /// device saw that (they may predate it): FLUSHes among them fail too.
    Draining { left: u32 },
}

/// Dead-incarnation CEs of a channel not consumed by the host at the last look:
/// they lie before ring position `end` (`compr_head` at re-attach); `left` of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stale {
    end: u32,
    left: u32,
}

/// Bytes from ring position `from` forward to `to` (both `< size`, validated).
fn ring_dist(from: u32, to: u32, size: u32) -> u32 {
    ((to as u64 + size as u64 - from as u64) % size as u64) as u32
}

impl Chan {
    /// A channel in its initial (v3, pre-RESET) state. `lossy` marks a channel
    /// re-attached after an unclean stop (its rings then set by [`Chan::after_crash`]).
    fn new(idx: u32, seg_id: u32, g: ChannelGeom, lossy: bool) -> Self {
        Chan {
            idx,
            seg_id,
            g,
            mode: Mode::V3,
            cursor: 0,
            expect_tid: None,
            compr_head: 0,
            epoch: 0,
            skip_upto: None,
            durable: false,
            dur_pub: 0,
            power_us: 0,
            loss: if lossy {
                Loss::Failing { report: None }
            } else {
                Loss::None
            },
            stale: None,
        }
    }

    /// Re-attach after an unclean stop, with `compr_head` already set and the host's
    /// `compr_tail` (validated): every FLUSH fails until reported; the CEs between
    /// the two are the dead incarnation's, not yet consumed.
    fn after_crash(&mut self, compr_tail: u32) {
        self.loss = Loss::Failing { report: None };
        let left = ring_dist(compr_tail, self.compr_head, self.g.compr_size()) / self.g.el.ce_size;
        self.stale = (left > 0).then_some(Stale {
            end: self.compr_head,
            left,
        });
    }
}

/// Work done by one `poll`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PollStats {
    pub ses: u32,
    pub resets: u32,
    pub heartbeats: u32,
}

/// The backend engine.
pub struct Backend<'a, M: SharedMem + ?Sized, D: Media> {
    tp: Transport<'a, M>,
    cfg: BackendConfig<'a>,
    pub host_id: u32,
    pub backend_id: u32,
    st: Stager<'a, D>,
    scratch: &'a mut [u8],
    /// Backend incarnation published in the durability lines.
    incarnation: u32,
    now: u64,
    chans: heapless::Vec<Chan, MAX_CHANNELS>,
    last_hb: u64,
    rec: BackendInfo,
    /// Non-coherent mode: re-reads spent on the entry at each channel's cursor.
    rereads: [serve::Reread; MAX_CHANNELS],
    /// Sabotage `torn_block`: the last WRITE executed in this poll (channel, byte range).
    #[cfg(feature = "sabotage")]
    torn_prev: Option<(u32, u64, u64)>,
    /// Sabotage `publish_before_read_payload_write_back`: READ payloads (data_off,
    /// len) whose write-back waits until `compr_head` is published.
    #[cfg(feature = "sabotage")]
    deferred_read_wb: heapless::Vec<(u32, u32), 64>,
}

fn path_field(p: &str) -> [u8; backend_rec::PATH_LEN] {
    let mut a = [0u8; backend_rec::PATH_LEN];
    let n = p.len().min(backend_rec::PATH_LEN - 1);
    a[..n].copy_from_slice(&p.as_bytes()[..n]);
    a
}

impl<'a, M: SharedMem + ?Sized, D: Media> Backend<'a, M, D> {
    pub(super) fn shm(&self) -> Shm<'a, M> {
        self.tp.shm
    }

    /// Features this backend advertises in its record.
    pub fn features(&self) -> u64 {
        self.rec.features
    }

    /// Segment ids of the handler channels.
    pub fn channel_segments(&self) -> impl Iterator<Item = u32> + '_ {
        self.chans.iter().map(|c| c.seg_id)
    }

    pub fn media(&mut self) -> &mut D {
        self.st.media()
    }

    /// Give back the media. Anything still staged is dropped (like a power loss):
    /// call [`Backend::sync`] first for a clean hand-over.
    pub fn into_media(self) -> D {
        self.st.into_parts().0
    }

    /// Give back the media and the scratch buffer (e.g. to re-attach after a crash).
    /// Staged writes are lost, as in a power loss.
    pub fn into_parts(self) -> (D, &'a mut [u8]) {
        (self.st.into_parts().0, self.scratch)
    }

    /// [`Backend::into_parts`] plus the staging buffer.
    pub fn into_parts_staged(self) -> (D, &'a mut [u8], &'a mut [u8]) {
        let (m, s) = self.st.into_parts();
        (m, self.scratch, s)
    }

    /// Give the engine a RAM staging budget (default: none, i.e. write-through to
    /// the media; still durable only after the next media flush). Whatever was
    /// staged in the previous buffer is written back first.
    pub fn set_staging(&mut self, buf: &'a mut [u8]) -> Result<(), BackendError> {
        self.st.set_buffer(buf).map_err(|_| BackendError::Media)
    }

    /// Staging / write-back counters.
    pub fn stager_stats(&self) -> StagerStats {
        self.st.stats
    }

    /// Asynchronous write-back (default: on); off, a due write-back waits for the media
    /// in `poll` (kept to measure the difference: the kernel's `write-back=sync`).
    pub fn set_async_write_back(&mut self, on: bool) {
        self.st.set_asynchronous(on);
    }

    /// Is a media request of the write-back in flight (`Stager::progress`)?
    pub fn write_back_in_flight(&self) -> bool {
        self.st.in_flight()
    }

    /// Writes completed but not yet durable.
    pub fn pending_writes(&self) -> usize {
        self.st.pending()
    }

    /// Write everything back, flush the media, publish the watermarks.
    pub fn sync(&mut self) -> Result<(), BackendError> {
        self.st.sync().map_err(|_| BackendError::Media)?;
        self.publish_watermarks()
    }
}
