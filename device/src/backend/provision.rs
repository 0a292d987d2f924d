//! Provisioning and re-attach: `Backend::start` registers the host and either
//! re-attaches to this host's existing backend (same path) or provisions fresh channel
//! segments; `Backend::stop` releases them.

use super::*;

impl<'a, M: SharedMem + ?Sized, D: Media> Backend<'a, M, D> {
    /// backend-start: register the host, then either re-attach to this host's
    /// existing backend with the same path (it must no longer be alive), or take a
    /// free backend slot and provision `n_handlers` fresh channel segments.
    /// `scratch` must hold at least `chan::MAX_IO` bytes (the private bounce buffer).
    pub fn start(
        shm: Shm<'a, M>,
        cfg: BackendConfig<'a>,
        mut media: D,
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
        let host_id = tp.register_host_as(cfg.hostname, now_ns, cfg.takeover || cfg.join_host)?;
        let path = path_field(cfg.path);
        let existing = Self::find_own_backend(&tp, host_id, &path)?;
        let volatile = media.volatile_bytes().is_some();
        let features = Self::offered_features(&cfg, tp.info.flags, volatile);
        let dev_sectors = media.size() / SECTOR;
        let mut me = Self {
            tp,
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
            rereads: Default::default(),
            #[cfg(feature = "sabotage")]
            torn_prev: None,
            #[cfg(feature = "sabotage")]
            deferred_read_wb: heapless::Vec::new(),
        };
        match existing {
            Some((id, rec)) => me.reattach(id, rec, dev_sectors, features, now_ns)?,
            None => me.provision(path, dev_sectors, features, now_ns)?,
        }
        me.tp.write_backend(me.backend_id, &me.rec)?;
        if cfg.durable.offer {
            me.start_durability()?;
        }
        shm.tracer.event(&TraceEvent::Heartbeat {
            kind: RecordKind::Backend,
            id: me.backend_id,
            alive_ts: now_ns,
        });
        Ok(me)
    }

    /// The feature bits this backend advertises on a transport with `flags`, over
    /// media that is `volatile` RAM or not.
    fn offered_features(cfg: &BackendConfig<'_>, flags: u16, volatile: bool) -> u64 {
        // Non-coherent mode relies on entry and payload CRCs: only offer it with both.
        let crcs = tflags::CHANNEL_CRC | tflags::CHANNEL_DATA_CRC;
        let mut f = 0;
        if cfg.noncoherent && flags & crcs == crcs {
            f |= features::NONCOHERENT;
        }
        if cfg.discard_wz {
            f |= features::DISCARD_WZ;
        }
        if cfg.durable.offer {
            f |= features::DURABLE_TOKENS;
        }
        if volatile {
            f |= features::VOLATILE_MEDIA;
        }
        f
    }

    /// This host's backend record with the same path, if one is in use.
    fn find_own_backend(
        tp: &Transport<'a, M>,
        host_id: u32,
        path: &[u8; backend_rec::PATH_LEN],
    ) -> Result<Option<(u32, BackendInfo)>, BackendError> {
        for id in 0..tp.info.backend_num {
            if let Some(b) = tp.backend(id)?
                && b.rec.state != STATE_NONE
                && b.rec.host_id == host_id
                && b.rec.path == *path
            {
                return Ok(Some((id, b.rec)));
            }
        }
        Ok(None)
    }

    /// Take over the dead (or, with `takeover`, our own previous) backend record `id`
    /// and re-attach each of its channels.
    fn reattach(
        &mut self,
        id: u32,
        rec: BackendInfo,
        dev_sectors: u64,
        features: u64,
        now_ns: u64,
    ) -> Result<(), BackendError> {
        if is_alive(rec.alive_ts, now_ns) && !self.cfg.takeover {
            return Err(TransportError::Alive.into());
        }
        if rec.dev_size != dev_sectors
            || rec.n_handlers == 0
            || rec.n_handlers as usize > MAX_CHANNELS
        {
            return Err(BackendError::Mismatch);
        }
        self.backend_id = id;
        let tp = self.tp.clone();
        for i in 0..rec.n_handlers {
            let seg_id = rec.handler_channels[i as usize];
            let seg = tp.segment(seg_id)?.ok_or(BackendError::Mismatch)?;
            if seg.rec.seg_type != SEG_TYPE_CHANNEL || seg.rec.backend_id != id {
                return Err(BackendError::Mismatch);
            }
            // Both records are untrusted bytes: also refuse a segment our record lists
            // twice or another backend record lists (it may be that backend's channel).
            if rec.handler_channels[..i as usize].contains(&seg_id)
                || Self::listed_by_other(&tp, seg_id, id)?
            {
                return Err(BackendError::Mismatch);
            }
            let g = ChannelGeom::new(
                tp.channel_base(seg_id)?,
                tp.info.flags,
                self.cfg.sabotage().shared_ctrl_line,
            );
            let ch = self.reattach_channel(i, seg_id, g)?;
            let _ = self.chans.push(ch);
        }
        self.rec = BackendInfo {
            features,
            alive_ts: now_ns,
            state: STATE_RUNNING,
            ..rec
        };
        Ok(())
    }

    /// Does a backend record other than `own` (in any state but NONE) list `seg_id`
    /// among its handler channels?
    fn listed_by_other(tp: &Transport<'a, M>, seg_id: u32, own: u32) -> Result<bool, BackendError> {
        for id in (0..tp.info.backend_num).filter(|&id| id != own) {
            if let Some(b) = tp.backend(id)?
                && b.rec.state != STATE_NONE
            {
                let n = (b.rec.n_handlers as usize).min(backend_rec::MAX_HANDLERS);
                if b.rec.handler_channels[..n].contains(&seg_id) {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Take a free backend slot and `n_handlers` free segments, zero each segment
    /// (v3) and write its segment info.
    fn provision(
        &mut self,
        path: [u8; backend_rec::PATH_LEN],
        dev_sectors: u64,
        features: u64,
        now_ns: u64,
    ) -> Result<(), BackendError> {
        let tp = self.tp.clone();
        let shm = self.shm();
        self.backend_id = tp.find_free(SlotKind::Backend, 0)?;
        let mut hc = [0u32; backend_rec::MAX_HANDLERS];
        let mut hint = 0;
        for i in 0..self.cfg.n_handlers {
            let seg_id = tp.find_free(SlotKind::Segment, hint)?;
            hint = seg_id + 1;
            let base = tp.channel_base(seg_id)?;
            // v3: zero the whole segment, then write the segment info.
            shm.fill(base, SEGMENT_SIZE, 0)?;
            if self.cfg.noncoherent {
                // Written back before the host stores to its lines (rule 1); ordered
                // before the segment record by the full fence of `write_segment`'s reads.
                shm.write_back(base, SEGMENT_SIZE)?;
            }
            let si = SegmentInfo {
                seg_type: SEG_TYPE_CHANNEL,
                state: STATE_RUNNING,
                flags: 0,
                next_seg: 0,
                backend_id: self.backend_id,
            };
            tp.write_segment(seg_id, &si)?;
            hc[i as usize] = seg_id;
            let g = ChannelGeom::new(base, tp.info.flags, self.cfg.sabotage().shared_ctrl_line);
            let _ = self.chans.push(Chan::new(i, seg_id, g, false));
            shm.tracer
                .event(&TraceEvent::ChannelProvisioned { chan: i, seg_id });
        }
        self.rec = BackendInfo {
            state: STATE_RUNNING,
            host_id: self.host_id,
            alive_ts: now_ns,
            dev_size: dev_sectors,
            path,
            n_handlers: self.cfg.n_handlers,
            handler_channels: hc,
            features,
            ..BackendInfo::default()
        };
        Ok(())
    }

    /// Durability lines at start: a new incarnation (hosts learn that staged writes
    /// of the previous one may be lost); re-attached channels keep their watermark.
    fn start_durability(&mut self) -> Result<(), BackendError> {
        let shm = self.shm();
        for i in 0..self.chans.len() {
            let mut ch = self.chans[i];
            if let Some(l) = read_dur_dev(shm, &ch.g, self.cfg.noncoherent)? {
                self.incarnation = self.incarnation.max(l.incarnation.wrapping_add(1)).max(1);
                ch.dur_pub = l.durable_tid;
            }
            self.chans[i] = ch;
        }
        for i in 0..self.chans.len() {
            let mut ch = self.chans[i];
            self.refresh_durable(&mut ch)?;
            self.chans[i] = ch;
        }
        Ok(())
    }

    /// Re-attach: resume at `submr_tail`, skip what is DONE or already completed.
    pub(super) fn reattach_channel(
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
        ch.after_crash(compr_tail);
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
                shm.full_fence();
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

    /// Clean stop (backend-stop): refuse while a running, alive blkdev references
    /// this backend; then clear the channel segment infos, the backend record and
    /// (if no other backend runs under it) the host record.
    #[allow(clippy::result_large_err)]
    pub fn stop(mut self, now_ns: u64) -> Result<D, (Self, BackendError)> {
        match self.try_stop(now_ns) {
            Ok(()) => Ok(self.st.into_parts().0),
            Err(e) => Err((self, e)),
        }
    }

    pub(super) fn try_stop(&mut self, now_ns: u64) -> Result<(), BackendError> {
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
        // Our host record too, unless another backend still runs under it: a stopped
        // device leaves nothing alive, so a restart need not wait for the heartbeat
        // timeout (nor take over).
        let name = crate::transport::host_name(self.cfg.hostname);
        let ours = self
            .tp
            .host(self.host_id)?
            .is_some_and(|h| h.rec.state != STATE_NONE && h.rec.hostname == name);
        let mut shared = false;
        for id in 0..self.tp.info.backend_num {
            if let Some(b) = self.tp.backend(id)?
                && b.rec.state != STATE_NONE
                && b.rec.host_id == self.host_id
            {
                shared = true;
            }
        }
        if ours && !shared {
            self.tp.clear(SlotKind::Host, self.host_id)?;
        }
        Ok(())
    }
}
