//! The backend device engine (the role cbdfw plays on the transport).
//!
//! Non-blocking: [`Backend::poll`] does a bounded amount of work (heartbeat,
//! management plane, up to `batch` SEs per channel) and returns, so the kernel
//! can call it from its busy-poll loop and tests can interleave it with a host.

use crate::channel::*;
use crate::durable::{DurableConfig, Intent, Stager, StagerStats};
use crate::layout::*;
use crate::media::Media;
use crate::meta;
use crate::shm::{OutOfBounds, SharedMem, Shm};
use crate::trace::{CopyDir, Pointer, RecordKind, Reject, TraceEvent};
use crate::transport::{SlotKind, Transport, TransportError, is_alive};

/// Most handler channels one engine serves.
pub const MAX_CHANNELS: usize = 16;

/// Deliberate protocol violations, **only** for the adversary's negative tests.
/// Every field must stay `false` in production.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sabotage {
    /// Do not write back CEs after posting them.
    pub skip_ce_write_back: bool,
    /// Do not invalidate SE lines before (re-)reading them.
    pub skip_se_invalidate: bool,
    /// Accept SEs and payloads without checking se_crc / data_crc.
    pub skip_crc_check: bool,
    /// Keep the device line inside the host's cache line.
    pub shared_ctrl_line: bool,
}

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
    pub sabotage: Sabotage,
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
            sabotage: Sabotage::default(),
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
    /// may have been lost with its staging RAM, so this channel's next FLUSH
    /// reports -EIO (once), like a disk that lost its write cache.
    flush_eio: bool,
}

impl Chan {
    /// A channel in its initial (v3, pre-RESET) state. `flush_eio` marks a channel
    /// re-attached after an unclean stop.
    fn new(idx: u32, seg_id: u32, g: ChannelGeom, flush_eio: bool) -> Self {
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
            flush_eio,
        }
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
}

fn path_field(p: &str) -> [u8; 128] {
    let mut a = [0u8; 128];
    let n = p.len().min(127);
    a[..n].copy_from_slice(&p.as_bytes()[..n]);
    a
}

impl<'a, M: SharedMem + ?Sized, D: Media> Backend<'a, M, D> {
    /// backend-start: register the host, then either re-attach to this host's
    /// existing backend with the same path (it must no longer be alive), or take a
    /// free backend slot and provision `n_handlers` fresh channel segments.
    /// `scratch` must hold at least `chan::MAX_IO` bytes (the private bounce buffer).
    pub fn start(
        shm: Shm<'a, M>,
        cfg: BackendConfig<'a>,
        media: D,
        scratch: &'a mut [u8],
        now_ns: u64,
    ) -> Result<Self, BackendError> {
        if scratch.len() < chan::MAX_IO as usize {
            return Err(BackendError::Scratch);
        }
        if cfg.n_handlers == 0 || cfg.n_handlers as usize > MAX_CHANNELS || cfg.batch == 0 {
            return Err(BackendError::BadConfig);
        }
        let tp = Transport::open(shm, cfg.noncoherent)?;
        let host_id = tp.register_host_as(cfg.hostname, now_ns, cfg.takeover)?;
        let path = path_field(cfg.path);
        let dev_sectors = media.size() / 512;
        // Non-coherent mode relies on entry and payload CRCs: only offer it with both.
        let crcs = tflags::CHANNEL_CRC | tflags::CHANNEL_DATA_CRC;
        let mut features = if cfg.noncoherent && tp.info.flags & crcs == crcs {
            features::NONCOHERENT
        } else {
            0
        };
        if cfg.discard_wz {
            features |= features::DISCARD_WZ;
        }
        let mut existing = None;
        for id in 0..tp.info.backend_num {
            if let Some(b) = tp.backend(id)?
                && b.rec.state != STATE_NONE
                && b.rec.host_id == host_id
                && b.rec.path == path
            {
                existing = Some((id, b.rec));
                break;
            }
        }
        if cfg.durable.offer {
            features |= features::DURABLE_TOKENS;
        }
        let mut me = Self {
            tp: tp.clone(),
            cfg,
            host_id,
            backend_id: 0,
            st: Stager::new(media, &mut []),
            scratch,
            incarnation: 1,
            now: now_ns,
            chans: heapless::Vec::new(),
            last_hb: now_ns,
            rec: BackendInfo::default(),
        };
        let flags = tp.info.flags;
        if let Some((id, rec)) = existing {
            if is_alive(rec.alive_ts, now_ns) && !cfg.takeover {
                return Err(TransportError::Alive.into());
            }
            if rec.dev_size != dev_sectors
                || rec.n_handlers == 0
                || rec.n_handlers as usize > MAX_CHANNELS
            {
                return Err(BackendError::Mismatch);
            }
            me.backend_id = id;
            for i in 0..rec.n_handlers {
                let seg_id = rec.handler_channels[i as usize];
                let seg = tp.segment(seg_id)?.ok_or(BackendError::Mismatch)?;
                if seg.rec.seg_type != SEG_TYPE_CHANNEL || seg.rec.backend_id != id {
                    return Err(BackendError::Mismatch);
                }
                let g = ChannelGeom::new(
                    tp.channel_base(seg_id)?,
                    flags,
                    cfg.sabotage.shared_ctrl_line,
                );
                let ch = me.reattach_channel(i, seg_id, g)?;
                let _ = me.chans.push(ch);
            }
            me.rec = BackendInfo {
                features,
                alive_ts: now_ns,
                state: STATE_RUNNING,
                ..rec
            };
        } else {
            me.backend_id = tp.find_free(SlotKind::Backend, 0)?;
            let mut hc = [0u32; 128];
            let mut hint = 0;
            for i in 0..cfg.n_handlers {
                let seg_id = tp.find_free(SlotKind::Segment, hint)?;
                hint = seg_id + 1;
                let base = tp.channel_base(seg_id)?;
                // v3: zero the whole segment, then write the segment info.
                shm.fill(base, SEGMENT_SIZE, 0)?;
                if cfg.noncoherent {
                    shm.write_back(base, SEGMENT_SIZE)?;
                    shm.store_fence();
                }
                let si = SegmentInfo {
                    seg_type: SEG_TYPE_CHANNEL,
                    state: STATE_RUNNING,
                    flags: 0,
                    next_seg: 0,
                    backend_id: me.backend_id,
                };
                tp.write_segment(seg_id, &si)?;
                hc[i as usize] = seg_id;
                let g = ChannelGeom::new(base, flags, cfg.sabotage.shared_ctrl_line);
                let _ = me.chans.push(Chan::new(i, seg_id, g, false));
                shm.tracer
                    .event(&TraceEvent::ChannelProvisioned { chan: i, seg_id });
            }
            me.rec = BackendInfo {
                state: STATE_RUNNING,
                host_id,
                alive_ts: now_ns,
                dev_size: dev_sectors,
                path,
                n_handlers: cfg.n_handlers,
                handler_channels: hc,
                features,
                ..BackendInfo::default()
            };
        }
        tp.write_backend(me.backend_id, &me.rec)?;
        // Durability lines: a new incarnation (hosts learn that staged writes of
        // the previous one may be lost); re-attached channels keep their watermark.
        if cfg.durable.offer {
            for i in 0..me.chans.len() {
                let mut ch = me.chans[i];
                if let Some(l) = read_dur_dev(shm, &ch.g, cfg.noncoherent)? {
                    me.incarnation = me.incarnation.max(l.incarnation.wrapping_add(1)).max(1);
                    ch.dur_pub = l.durable_tid;
                }
                me.chans[i] = ch;
            }
            for i in 0..me.chans.len() {
                let mut ch = me.chans[i];
                me.refresh_durable(&mut ch)?;
                me.chans[i] = ch;
            }
        }
        shm.tracer.event(&TraceEvent::Heartbeat {
            kind: RecordKind::Backend,
            id: me.backend_id,
            alive_ts: now_ns,
        });
        Ok(me)
    }

    fn shm(&self) -> Shm<'a, M> {
        self.tp.shm
    }

    /// Re-attach: resume at `submr_tail`, skip what is DONE or already completed.
    fn reattach_channel(
        &self,
        idx: u32,
        seg_id: u32,
        g: ChannelGeom,
    ) -> Result<Chan, BackendError> {
        let shm = self.shm();
        let mut ch = Chan::new(idx, seg_id, g, true);
        let nc_line = if self.cfg.noncoherent {
            read_host_line(shm, &g, true)?
        } else {
            None
        };
        let (tail, compr_head, compr_tail) = match nc_line {
            Some(h) if h.epoch != 0 => {
                ch.mode = Mode::Nc;
                // Our epoch is the one we acknowledged; if the host has moved on (a
                // RESET we never answered) the next poll performs that reset.
                let d = read_dev_line(shm, &g, true)?.unwrap_or_default();
                ch.epoch = d.ack_epoch;
                if d.ack_epoch != h.epoch {
                    shm.tracer.event(&TraceEvent::Reattached {
                        chan: idx,
                        cursor: 0,
                    });
                    return Ok(ch);
                }
                // Non-coherent mode never accepts an arbitrary first tid: a stale or
                // not-yet-landed SE (even an all-zero one, whose CRC is 0) must not run.
                ch.expect_tid = Some(h.tail_tid);
                (h.submr_tail, d.compr_head, h.compr_tail)
            }
            _ => {
                let ct = shm.load_u32(g.ctrl(ctrl::COMPR_TAIL))?;
                (
                    shm.load_u32(g.ctrl(ctrl::SUBMR_TAIL))?,
                    shm.load_u32(g.ctrl(ctrl::COMPR_HEAD))?,
                    ct,
                )
            }
        };
        if !g.valid_se_pos(tail) || !g.valid_ce_pos(compr_head) || !g.valid_ce_pos(compr_tail) {
            return Err(BackendError::BadPointer { chan: idx });
        }
        ch.cursor = tail;
        ch.compr_head = compr_head;
        if compr_head != compr_tail {
            // Published CEs not yet consumed: their SEs must not run again.
            let last = if compr_head == 0 {
                g.compr_size() - g.el.ce_size
            } else {
                compr_head - g.el.ce_size
            };
            let mut b = [0u8; MAX_CE_SIZE];
            let n = g.el.ce_size as usize;
            if ch.mode == Mode::Nc {
                shm.invalidate(g.ce(last), n as u64)?;
            }
            shm.read(g.ce(last), &mut b[..n])?;
            if g.el.entry_crc_ok(&b, g.el.ce_size)
                && let Some(ce) = g.el.decode_ce(&b[..n])
            {
                ch.skip_upto = Some(ce.req_tid);
            }
        }
        shm.tracer.event(&TraceEvent::Reattached {
            chan: idx,
            cursor: tail,
        });
        Ok(ch)
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
    /// Writes completed but not yet durable.
    pub fn pending_writes(&self) -> usize {
        self.st.pending()
    }
    /// Write everything back, flush the media, publish the watermarks.
    pub fn sync(&mut self) -> Result<(), BackendError> {
        self.st.sync().map_err(|_| BackendError::Media)?;
        self.publish_watermarks()
    }

    /// One round: heartbeat if due (≤ 5 s), management plane, data plane.
    pub fn poll(&mut self, now_ns: u64) -> Result<PollStats, BackendError> {
        let mut st = PollStats::default();
        if now_ns.saturating_sub(self.last_hb) >= HB_INTERVAL_NS - HB_INTERVAL_NS / 10 {
            self.heartbeat(now_ns)?;
            st.heartbeats += 1;
        }
        self.now = now_ns;
        let mut first_err = None;
        for i in 0..self.chans.len() {
            let mut ch = self.chans[i];
            let r = self.poll_channel(&mut ch, &mut st);
            self.chans[i] = ch;
            if let Err(e) = r {
                // Debug only: a peer's bad pointer persists across polls, and the
                // caller reports the returned error (deduplicated) instead.
                log::debug!("cbd backend: channel {}: {:?}", ch.idx, e);
                first_err.get_or_insert(e);
            }
        }
        // ---- durability: write back + flush once a deadline passed, then publish
        // the watermarks (after every compr_head of this poll: a watermark never
        // runs ahead of the CE it covers).
        if self.st.due(now_ns)
            && let Err(e) = self.st.sync()
        {
            log::warn!("cbd backend: write-back/flush failed: {e:?}");
            first_err.get_or_insert(BackendError::Media);
        }
        if let Err(e) = self.publish_watermarks() {
            first_err.get_or_insert(e);
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(st),
        }
    }

    /// Rewrite the host and backend records with a fresh `alive_ts`.
    pub fn heartbeat(&mut self, now_ns: u64) -> Result<(), BackendError> {
        self.last_hb = now_ns;
        self.rec.alive_ts = now_ns;
        self.tp.write_backend(self.backend_id, &self.rec)?;
        if let Some(mut h) = self.tp.host(self.host_id)?.map(|l| l.rec) {
            h.alive_ts = now_ns;
            self.tp.write_host(self.host_id, &h)?;
        }
        let ev = TraceEvent::Heartbeat {
            kind: RecordKind::Backend,
            id: self.backend_id,
            alive_ts: now_ns,
        };
        self.shm().tracer.event(&ev);
        Ok(())
    }

    /// Does the blkdev using this backend accept DURABLE_TOKENS on `ch`? Non-coherent
    /// mode: the host line says so (it travels with the epoch); v3 mode: the blkdev
    /// record (written before the RESET, ordered in coherent memory).
    fn accepts_durable(&self, ch: &Chan) -> Result<bool, BackendError> {
        if !self.cfg.durable.offer {
            return Ok(false);
        }
        let bit = features::DURABLE_TOKENS;
        if ch.mode == Mode::Nc {
            let h = read_host_line(self.shm(), &ch.g, true)?;
            return Ok(h.is_some_and(|h| h.features as u64 & bit != 0));
        }
        for id in 0..self.tp.info.blkdev_num {
            if let Some(b) = self.tp.blkdev(id)?
                && b.rec.state == STATE_RUNNING
                && b.rec.backend_id == self.backend_id
            {
                return Ok(b.rec.features & bit != 0);
            }
        }
        Ok(false)
    }

    /// Re-read the negotiation for `ch` and (if on) publish its durability line.
    fn refresh_durable(&mut self, ch: &mut Chan) -> Result<(), BackendError> {
        ch.durable = self.accepts_durable(ch)?;
        ch.power_us = 0;
        if ch.durable {
            self.publish_dur_line(ch)?;
        }
        Ok(())
    }

    fn publish_dur_line(&self, ch: &Chan) -> Result<(), BackendError> {
        let line = DurDevLine {
            incarnation: self.incarnation,
            durable_tid: ch.dur_pub,
        }
        .encode();
        publish_line(
            self.shm(),
            ch.g.ctrl(ctrl::DUR_DEV_LINE),
            &line,
            self.cfg.noncoherent,
        )?;
        Ok(())
    }

    /// Publish every durable channel's watermark that moved.
    fn publish_watermarks(&mut self) -> Result<(), BackendError> {
        for i in 0..self.chans.len() {
            let mut ch = self.chans[i];
            if !ch.durable {
                continue;
            }
            let Some(next) = ch.expect_tid else { continue };
            let w = self.st.watermark(ch.idx as u8, next);
            if w > ch.dur_pub {
                ch.dur_pub = w;
                self.publish_dur_line(&ch)?;
                self.chans[i] = ch;
            }
        }
        Ok(())
    }

    /// Before a RESET is answered: every write completed so far becomes durable.
    fn sync_for_reset(&mut self, ch: &Chan) {
        if self.st.sync().is_err() {
            log::warn!("cbd backend: channel {}: flush before RESET failed", ch.idx);
            self.st.forget_chan(ch.idx as u8);
        }
    }

    fn poll_channel(&mut self, ch: &mut Chan, st: &mut PollStats) -> Result<(), BackendError> {
        let shm = self.shm();
        let g = ch.g;
        // ---- management plane
        let mut host_line = None;
        if self.cfg.noncoherent
            && let Some(h) = read_host_line(shm, &g, true)?
            && h.epoch != 0
        {
            if h.epoch != ch.epoch || ch.mode != Mode::Nc {
                self.nc_reset(ch, &h)?;
                st.resets += 1;
            }
            host_line = Some(h);
        }
        if host_line.is_none() {
            if self.v3_mgmt(ch)? {
                st.resets += 1;
            }
            if ch.mode != Mode::V3 {
                return Ok(());
            }
        }
        // ---- data plane
        let (head, compr_tail) = match host_line {
            Some(h) => (h.submr_head, h.compr_tail),
            None => (
                shm.load_u32(g.ctrl(ctrl::SUBMR_HEAD))?,
                shm.load_u32(g.ctrl(ctrl::COMPR_TAIL))?,
            ),
        };
        if !g.valid_se_pos(head) || !g.valid_ce_pos(compr_tail) {
            return Err(BackendError::BadPointer { chan: ch.idx });
        }
        if ch.durable && ch.cursor != head {
            ch.power_us =
                read_dur_host(shm, &g, self.cfg.noncoherent)?.map_or(0, |l| l.power_window_us);
        }
        let mut done = 0;
        let mut result = Ok(());
        while ch.cursor != head && done < self.cfg.batch {
            // Never overrun compr_tail: keep one CE slot empty.
            if g.next_ce(ch.compr_head) == compr_tail {
                break;
            }
            match self.handle_se(ch) {
                Ok(()) => {}
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
            done += 1;
        }
        if done > 0 {
            st.ses += done;
            self.publish_compr_head(ch)?;
        }
        result
    }

    fn publish_compr_head(&mut self, ch: &Chan) -> Result<(), BackendError> {
        let shm = self.shm();
        let g = ch.g;
        shm.store_fence();
        match ch.mode {
            Mode::V3 => shm.store_u32(g.ctrl(ctrl::COMPR_HEAD), ch.compr_head)?,
            Mode::Nc => {
                let line = DevLine {
                    ack_epoch: ch.epoch,
                    compr_head: ch.compr_head,
                }
                .encode();
                publish_line(shm, g.dev_line, &line, true)?;
            }
        }
        shm.tracer.event(&TraceEvent::PointerPublished {
            chan: ch.idx,
            which: Pointer::ComprHead,
            value: ch.compr_head,
        });
        Ok(())
    }

    /// v3 management plane: answer a pending command. Returns true if a RESET ran.
    fn v3_mgmt(&mut self, ch: &mut Chan) -> Result<bool, BackendError> {
        let shm = self.shm();
        let g = ch.g;
        let nc = self.cfg.noncoherent;
        let cmd = meta::read_latest::<MgmtCmd, M>(shm, g.ctrl(ctrl::MGMT_CMD), nc)?;
        let Some(cmd) = cmd else { return Ok(false) };
        let ret_seq = meta::read_latest::<MgmtRet, M>(shm, g.ctrl(ctrl::MGMT_RET), nc)?
            .map_or(0, |r| r.rec.cmd_seq);
        if cmd.rec.cmd_seq == ret_seq {
            return Ok(false);
        }
        shm.tracer.event(&TraceEvent::MgmtCommand {
            chan: ch.idx,
            cmd_seq: cmd.rec.cmd_seq as u32,
            op: cmd.rec.cmd_op,
        });
        let ret = if cmd.rec.cmd_op == MGMT_OP_RESET {
            // Our handler is synchronous: nothing is ever in flight between polls.
            // Completed-but-staged writes become durable before the RESET is
            // answered; v3 tids restart at 0, so the watermark restarts too.
            self.sync_for_reset(ch);
            self.st.forget_chan(ch.idx as u8);
            ch.dur_pub = 0;
            ch.flush_eio = false;
            ch.cursor = 0;
            ch.expect_tid = None;
            ch.skip_upto = None;
            ch.compr_head = 0;
            ch.mode = Mode::V3;
            ch.epoch = 0;
            for p in [
                ctrl::SUBMR_HEAD,
                ctrl::SUBMR_TAIL,
                ctrl::COMPR_HEAD,
                ctrl::COMPR_TAIL,
            ] {
                shm.store_u32(g.ctrl(p), 0)?;
            }
            shm.fill(g.ce(0), g.el.compr_size() + g.el.submr_size(), 0)?;
            shm.write_back(g.ce(0), g.el.compr_size() + g.el.submr_size())?;
            shm.full_fence();
            self.refresh_durable(ch)?;
            MGMT_RET_OK
        } else {
            MGMT_RET_EIO
        };
        let r = MgmtRet {
            cmd_seq: cmd.rec.cmd_seq,
            cmd_ret: ret,
        };
        meta::write_record(
            shm,
            g.ctrl(ctrl::MGMT_RET),
            &r,
            RecordKind::MgmtRet,
            ch.idx,
            nc,
        )?;
        shm.tracer.event(&TraceEvent::MgmtAnswered {
            chan: ch.idx,
            cmd_seq: cmd.rec.cmd_seq as u32,
            ret,
        });
        Ok(ret == MGMT_RET_OK)
    }

    /// Non-coherent reset: the host bumped its epoch (with all its pointers at 0).
    fn nc_reset(&mut self, ch: &mut Chan, h: &HostLine) -> Result<(), BackendError> {
        let shm = self.shm();
        let g = ch.g;
        shm.tracer.event(&TraceEvent::MgmtCommand {
            chan: ch.idx,
            cmd_seq: h.epoch,
            op: MGMT_OP_RESET,
        });
        // Tids are monotonic across epochs: the watermark carries over.
        self.sync_for_reset(ch);
        ch.flush_eio = false;
        ch.mode = Mode::Nc;
        ch.epoch = h.epoch;
        ch.cursor = 0;
        ch.compr_head = 0;
        ch.expect_tid = Some(h.base_tid);
        ch.skip_upto = None;
        ch.durable = self.cfg.durable.offer && h.features as u64 & features::DURABLE_TOKENS != 0;
        ch.power_us = 0;
        if ch.durable {
            ch.dur_pub = ch.dur_pub.max(self.st.watermark(ch.idx as u8, h.base_tid));
            self.publish_dur_line(ch)?;
        }
        // The CE ring is device-owned: zero it and write it back. The SE ring is
        // host-owned and never touched (stale SEs are rejected by tid + CRC).
        shm.fill(g.ce(0), g.el.compr_size(), 0)?;
        shm.write_back(g.ce(0), g.el.compr_size())?;
        shm.store_fence();
        let line = DevLine {
            ack_epoch: h.epoch,
            compr_head: 0,
        }
        .encode();
        publish_line(shm, g.dev_line, &line, true)?;
        shm.tracer.event(&TraceEvent::MgmtAnswered {
            chan: ch.idx,
            cmd_seq: h.epoch,
            ret: MGMT_RET_OK,
        });
        Ok(())
    }

    /// Read (copy) the SE at the cursor. Non-coherent mode: invalidate first and
    /// re-read a bounded number of times until CRC and tid are right.
    fn fetch_se(&self, ch: &Chan) -> Result<Option<(Se, bool)>, BackendError> {
        let shm = self.shm();
        let g = ch.g;
        let n = g.el.se_size as usize;
        let mut b = [0u8; MAX_SE_SIZE];
        let tries = if ch.mode == Mode::Nc {
            self.cfg.nc_retries.max(1)
        } else {
            1
        };
        let sab = self.cfg.sabotage;
        for attempt in 0..tries {
            if ch.mode == Mode::Nc && !sab.skip_se_invalidate {
                shm.invalidate(g.se(ch.cursor), n as u64)?;
            }
            shm.read(g.se(ch.cursor), &mut b[..n])?;
            let Some(se) = g.el.decode_se(&b[..n]) else {
                return Ok(None);
            };
            let crc_ok = sab.skip_crc_check || g.el.entry_crc_ok(&b, g.el.se_size);
            if ch.mode == Mode::V3 {
                return Ok(Some((se, crc_ok)));
            }
            let tid_ok = ch.expect_tid.is_none_or(|t| t == se.req_tid);
            if crc_ok && tid_ok {
                return Ok(Some((se, true)));
            }
            if attempt == 0 {
                let why = if crc_ok { Reject::Tid } else { Reject::SeCrc };
                shm.tracer.event(&TraceEvent::Rejected {
                    chan: ch.idx,
                    pos: ch.cursor,
                    why,
                });
            }
        }
        shm.tracer.event(&TraceEvent::Rejected {
            chan: ch.idx,
            pos: ch.cursor,
            why: Reject::StaleAfterRetries,
        });
        Ok(None)
    }

    fn handle_se(&mut self, ch: &mut Chan) -> Result<(), BackendError> {
        let shm = self.shm();
        let g = ch.g;
        let Some((se, crc_ok)) = self.fetch_se(ch)? else {
            return Err(BackendError::Stale { chan: ch.idx });
        };
        shm.tracer.event(&TraceEvent::SeSeen {
            chan: ch.idx,
            pos: ch.cursor,
            req_tid: se.req_tid,
            op: se.op,
            flags: se.flags,
        });
        let pos = ch.cursor;
        let done_already = crc_ok
            && (se.flags & SE_FLAG_DONE != 0 || ch.skip_upto.is_some_and(|t| se.req_tid <= t));
        if done_already {
            shm.tracer.event(&TraceEvent::SeSkipped {
                chan: ch.idx,
                pos,
                req_tid: se.req_tid,
            });
            ch.cursor = g.next_se(pos);
            ch.expect_tid = Some(se.req_tid.wrapping_add(1));
            return Ok(());
        }
        ch.skip_upto = None;
        let mut ce = Ce {
            req_tid: se.req_tid,
            ..Ce::default()
        };
        if !crc_ok {
            // v3 mode: entry CRC failed. Answer with an error and keep serving.
            shm.tracer.event(&TraceEvent::Rejected {
                chan: ch.idx,
                pos,
                why: Reject::SeCrc,
            });
            ce.result = errno::EBADMSG;
        } else if ch.expect_tid.is_some_and(|t| t != se.req_tid) {
            shm.tracer.event(&TraceEvent::Rejected {
                chan: ch.idx,
                pos,
                why: Reject::Tid,
            });
            ce.result = errno::EINVAL;
        } else {
            ce.result = self.execute(ch, &se, &mut ce)?;
        }
        ch.expect_tid = Some(se.req_tid.wrapping_add(1));
        self.post_ce(ch, &mut ce)?;
        ch.cursor = g.next_se(pos);
        Ok(())
    }

    /// Validate the SE's op and ranges, then run it against the media.
    fn execute(&mut self, ch: &mut Chan, se: &Se, ce: &mut Ce) -> Result<i32, BackendError> {
        let shm = self.shm();
        let g = ch.g;
        let reject = |why| {
            shm.tracer.event(&TraceEvent::Rejected {
                chan: ch.idx,
                pos: ch.cursor,
                why,
            });
        };
        let size = self.st.size();
        // Intent bits count only when durability tokens were negotiated.
        let intent = if ch.durable {
            Intent::from_se_flags(se.flags)
        } else {
            Intent::Standard
        };
        let due = self.cfg.durable.due(intent, ch.power_us, self.now);
        let (chan, tid) = (ch.idx as u8, se.req_tid);
        let durable_flag = if ch.durable { CE_FLAG_DURABLE } else { 0 };
        let range_ok = |off: u64, len: u64| {
            off.is_multiple_of(512)
                && len.is_multiple_of(512)
                && off.checked_add(len).is_some_and(|e| e <= size)
        };
        let media_op =
            |r: Result<(), crate::media::MediaError>| if r.is_ok() { 0 } else { errno::EIO };
        let res = match se.op {
            // v3 FLUSH: every previously completed write is durable when it completes.
            op::FLUSH => {
                let mut r = media_op(self.st.sync());
                if ch.flush_eio {
                    ch.flush_eio = false;
                    r = errno::EIO;
                }
                if r == 0 {
                    ce.flags |= durable_flag;
                }
                r
            }
            op::DISCARD | op::WRITE_ZEROES if self.cfg.discard_wz => {
                if !range_ok(se.offset, se.len as u64) {
                    reject(Reject::BadRange);
                    return Ok(errno::EINVAL);
                }
                let discard = se.op == op::DISCARD;
                let mut r =
                    media_op(
                        self.st
                            .zero(chan, tid, se.offset, se.len as u64, discard, due),
                    );
                if r == 0 && intent == Intent::Critical {
                    r = media_op(self.st.sync());
                    ce.flags |= durable_flag;
                }
                r
            }
            op::READ | op::WRITE => {
                if se.len == 0 || se.len > chan::MAX_IO || !range_ok(se.offset, se.len as u64) {
                    reject(Reject::BadRange);
                    return Ok(errno::EINVAL);
                }
                if se.data_off as u64 >= chan::DATA_SIZE
                    || se.data_len < se.len
                    || se.data_len > chan::MAX_IO
                {
                    reject(Reject::BadDataArea);
                    return Ok(errno::EINVAL);
                }
                let len = se.len as usize;
                if se.op == op::WRITE {
                    if !self.fetch_payload(ch, se)? {
                        return Ok(errno::EIO);
                    }
                    let mut r =
                        media_op(
                            self.st
                                .write(chan, tid, se.offset, &self.scratch[..len], due),
                        );
                    if r == 0 && intent == Intent::Critical {
                        r = media_op(self.st.sync());
                        if r == 0 {
                            ce.flags |= durable_flag;
                        }
                    }
                    r
                } else {
                    let r = media_op(self.st.read(se.offset, &mut self.scratch[..len]));
                    if r == 0 {
                        copy_to_data(shm, &g, se.data_off, &self.scratch[..len])?;
                        if g.el.data_crc {
                            ce.data_crc = payload_crc(&self.scratch[..len]);
                        }
                        if ch.mode == Mode::Nc {
                            data_cache_op(shm, &g, se.data_off, se.len, true)?;
                        }
                        let ev = TraceEvent::DataCopied {
                            chan: ch.idx,
                            dir: CopyDir::ToShared,
                            data_off: se.data_off,
                            len: se.len,
                        };
                        shm.tracer.event(&ev);
                    }
                    r
                }
            }
            _ => {
                reject(Reject::BadOp);
                return Ok(errno::EOPNOTSUPP);
            }
        };
        let ev = TraceEvent::MediaOp {
            chan: ch.idx,
            op: se.op,
            offset: se.offset,
            len: se.len,
            result: res,
        };
        shm.tracer.event(&ev);
        Ok(res)
    }

    /// Copy a WRITE payload into scratch and check its CRC (bounded re-read in
    /// non-coherent mode). Returns false if it never verified.
    fn fetch_payload(&mut self, ch: &Chan, se: &Se) -> Result<bool, BackendError> {
        let shm = self.shm();
        let g = ch.g;
        let len = se.len as usize;
        let check = g.el.data_crc && !self.cfg.sabotage.skip_crc_check;
        let tries = if ch.mode == Mode::Nc {
            self.cfg.nc_retries.max(1)
        } else {
            1
        };
        for _ in 0..tries {
            if ch.mode == Mode::Nc {
                data_cache_op(shm, &g, se.data_off, se.len, false)?;
            }
            copy_from_data(shm, &g, se.data_off, &mut self.scratch[..len])?;
            shm.tracer.event(&TraceEvent::DataCopied {
                chan: ch.idx,
                dir: CopyDir::FromShared,
                data_off: se.data_off,
                len: se.len,
            });
            if !check || payload_crc(&self.scratch[..len]) == se.data_crc {
                return Ok(true);
            }
        }
        let why = if ch.mode == Mode::Nc {
            Reject::StaleAfterRetries
        } else {
            Reject::DataCrc
        };
        shm.tracer.event(&TraceEvent::Rejected {
            chan: ch.idx,
            pos: ch.cursor,
            why,
        });
        Ok(false)
    }

    fn post_ce(&mut self, ch: &mut Chan, ce: &mut Ce) -> Result<(), BackendError> {
        let shm = self.shm();
        let g = ch.g;
        let n = g.el.ce_size;
        let mut b = [0u8; MAX_CE_SIZE];
        g.el.encode_ce(ce, &mut b);
        g.el.seal_ce(&mut b);
        let off = g.ce(ch.compr_head);
        shm.write(off, &b[..n as usize])?;
        if ch.mode == Mode::Nc && !self.cfg.sabotage.skip_ce_write_back {
            shm.write_back(off, n as u64)?;
        }
        shm.tracer.event(&TraceEvent::CePosted {
            chan: ch.idx,
            pos: ch.compr_head,
            req_tid: ce.req_tid,
            result: ce.result,
        });
        ch.compr_head = g.next_ce(ch.compr_head);
        Ok(())
    }

    /// Clean stop (backend-stop): refuse while a running, alive blkdev references
    /// this backend; then clear the channel segment infos and the backend record.
    #[allow(clippy::result_large_err)]
    pub fn stop(mut self, now_ns: u64) -> Result<D, (Self, BackendError)> {
        match self.try_stop(now_ns) {
            Ok(()) => Ok(self.st.into_parts().0),
            Err(e) => Err((self, e)),
        }
    }

    fn try_stop(&mut self, now_ns: u64) -> Result<(), BackendError> {
        for id in 0..self.tp.info.blkdev_num {
            if let Some(b) = self.tp.blkdev(id)?
                && b.rec.state == STATE_RUNNING
                && b.rec.backend_id == self.backend_id
                && is_alive(b.rec.alive_ts, now_ns)
            {
                return Err(BackendError::Busy);
            }
        }
        for c in self.chans.iter() {
            self.tp.clear(SlotKind::Segment, c.seg_id)?;
        }
        self.tp.clear(SlotKind::Backend, self.backend_id)?;
        Ok(())
    }
}
