//! Registration, dev-start (RESET on every queue) and the started blkdev's record.

use device::channel::ChannelGeom;
use device::layout::*;
use device::shm::{SharedMem, Shm};
use device::trace::{RecordKind, TraceEvent};
use device::transport::{SlotKind, Transport, is_alive};

use super::{HostConfig, HostError, HostQueue, MAX_QUEUES};

/// A registered host on the transport.
pub struct Host<'a, M: SharedMem + ?Sized> {
    pub tp: Transport<'a, M>,
    pub cfg: HostConfig<'a>,
    pub host_id: u32,
}

impl<'a, M: SharedMem + ?Sized> Host<'a, M> {
    /// Open the transport and register (or re-register) this host.
    pub fn register(shm: Shm<'a, M>, cfg: HostConfig<'a>, now_ns: u64) -> Result<Self, HostError> {
        let tp = Transport::open(shm, cfg.noncoherent)?;
        let host_id = tp.register_host(cfg.hostname, now_ns)?;
        Ok(Self { tp, cfg, host_id })
    }

    /// Clean stop of the host: clear its record (unless a running, alive blkdev still
    /// names it), so the same hostname registers again at once instead of being refused
    /// for the 30 s heartbeat window. Returns whether the record was cleared.
    pub fn unregister(&self, now_ns: u64) -> Result<bool, HostError> {
        unregister(&self.tp, self.host_id, self.cfg.hostname, now_ns)
    }

    /// First RUNNING, alive backend (offering non-coherent mode if we need it).
    pub fn find_backend(&self, now_ns: u64) -> Result<u32, HostError> {
        for id in 0..self.tp.info.backend_num {
            if let Some(b) = self.tp.backend(id)?
                && b.rec.state == STATE_RUNNING
                && is_alive(b.rec.alive_ts, now_ns)
                && (!self.cfg.noncoherent || b.rec.features & features::NONCOHERENT != 0)
            {
                return Ok(id);
            }
        }
        Err(HostError::NoBackend)
    }

    /// dev-start: check the backend, RESET every queue, write the blkdev record.
    /// Queues become usable once [`Blkdev::poll_ready`] returns true.
    pub fn dev_start(
        &self,
        backend_id: u32,
        queues: u32,
        now_ns: u64,
    ) -> Result<Blkdev<'a, M>, HostError> {
        let tp = &self.tp;
        let b = tp.backend(backend_id)?.ok_or(HostError::NoBackend)?.rec;
        if b.state != STATE_RUNNING || !is_alive(b.alive_ts, now_ns) {
            return Err(HostError::NoBackend);
        }
        let crcs = tflags::CHANNEL_CRC | tflags::CHANNEL_DATA_CRC;
        if self.cfg.noncoherent
            && (b.features & features::NONCOHERENT == 0 || tp.info.flags & crcs != crcs)
        {
            return Err(HostError::Unsupported);
        }
        let queues = if queues == 0 { b.n_handlers } else { queues };
        if queues > b.n_handlers
            || queues as usize > MAX_QUEUES
            || b.n_handlers as usize > backend_rec::MAX_HANDLERS
        {
            return Err(HostError::Invalid);
        }
        // Untrusted: a record naming one channel for two queues is refused (each queue
        // would take the other's CEs and publish over its host line).
        let chans = &b.handler_channels[..queues as usize];
        if (1..chans.len()).any(|i| chans[..i].contains(&chans[i])) {
            return Err(HostError::Invalid);
        }
        for id in 0..tp.info.blkdev_num {
            if let Some(d) = tp.blkdev(id)?
                && d.rec.state == STATE_RUNNING
                && d.rec.backend_id == backend_id
                && is_alive(d.rec.alive_ts, now_ns)
            {
                return Err(HostError::InUse);
            }
        }
        let blkdev_id = tp.find_free(SlotKind::Blkdev, 0)?;
        let durable = self.cfg.durable_tokens && b.features & features::DURABLE_TOKENS != 0;
        let mut features = if self.cfg.noncoherent {
            features::NONCOHERENT
        } else {
            0
        };
        if durable {
            features |= features::DURABLE_TOKENS;
        }
        // The record (with the accepted features) goes first: a v3-mode backend
        // reads the acceptance when it answers the RESET.
        let rec = BlkdevInfo {
            state: STATE_RUNNING,
            alive_ts: now_ns,
            backend_id,
            host_id: self.host_id,
            mapped_id: blkdev_id,
            features,
        };
        tp.write_blkdev(blkdev_id, &rec)?;
        let mut qs = heapless::Vec::new();
        if let Err(e) = self.start_queues(&b, backend_id, queues, durable, now_ns, &mut qs) {
            let _ = tp.clear(SlotKind::Blkdev, blkdev_id);
            return Err(e);
        }
        Ok(Blkdev {
            tp: tp.clone(),
            hostname: self.cfg.hostname,
            host_id: self.host_id,
            blkdev_id,
            backend_id,
            queues: qs,
            rec,
            last_hb: now_ns,
        })
    }

    fn start_queues(
        &self,
        b: &BackendInfo,
        backend_id: u32,
        queues: u32,
        durable: bool,
        now_ns: u64,
        qs: &mut heapless::Vec<HostQueue<'a, M>, MAX_QUEUES>,
    ) -> Result<(), HostError> {
        let tp = &self.tp;
        for q in 0..queues {
            let seg_id = b.handler_channels[q as usize];
            let seg = tp.segment(seg_id)?.ok_or(HostError::NoBackend)?.rec;
            if seg.seg_type != SEG_TYPE_CHANNEL || seg.backend_id != backend_id {
                return Err(HostError::NoBackend);
            }
            let g = ChannelGeom::new(
                tp.channel_base(seg_id)?,
                tp.info.flags,
                self.cfg.shared_ctrl_line(),
            );
            let mut hq = HostQueue::new(tp.shm, q, g, self.cfg.noncoherent, self.cfg);
            hq.durable = durable;
            hq.now_ns = now_ns;
            if durable {
                hq.set_power_window_us(0)?;
            }
            hq.start_reset(now_ns)?;
            let _ = qs.push(hq);
        }
        Ok(())
    }
}

/// A started blkdev (/dev/cbdN on Linux).
pub struct Blkdev<'a, M: SharedMem + ?Sized> {
    tp: Transport<'a, M>,
    hostname: &'a str,
    pub host_id: u32,
    pub blkdev_id: u32,
    pub backend_id: u32,
    pub queues: heapless::Vec<HostQueue<'a, M>, MAX_QUEUES>,
    rec: BlkdevInfo,
    last_hb: u64,
}

impl<'a, M: SharedMem + ?Sized> Blkdev<'a, M> {
    /// Drive pending RESETs; true when every queue is ready.
    pub fn poll_ready(&mut self, now_ns: u64) -> Result<bool, HostError> {
        let mut all = true;
        for q in self.queues.iter_mut() {
            all &= q.poll_reset(now_ns)?;
        }
        Ok(all)
    }

    /// Rewrite the blkdev and host records if 5 s have passed.
    pub fn heartbeat(&mut self, now_ns: u64) -> Result<bool, HostError> {
        if now_ns.saturating_sub(self.last_hb) < HB_INTERVAL_NS - HB_INTERVAL_NS / 10 {
            return Ok(false);
        }
        self.last_hb = now_ns;
        self.rec.alive_ts = now_ns;
        self.tp.write_blkdev(self.blkdev_id, &self.rec)?;
        if let Some(mut h) = self.tp.host(self.host_id)?.map(|l| l.rec) {
            h.alive_ts = now_ns;
            self.tp.write_host(self.host_id, &h)?;
        }
        self.tp.shm.tracer.event(&TraceEvent::Heartbeat {
            kind: RecordKind::Blkdev,
            id: self.blkdev_id,
            alive_ts: now_ns,
        });
        Ok(true)
    }

    /// dev-stop: refuse while requests are in flight, then clear the blkdev record.
    pub fn stop(&mut self) -> Result<(), HostError> {
        if self.queues.iter().any(|q| q.in_flight() > 0) {
            return Err(HostError::Busy);
        }
        self.tp.clear(SlotKind::Blkdev, self.blkdev_id)?;
        Ok(())
    }

    /// After [`Blkdev::stop`]: [`Host::unregister`] (clean stop of the whole host).
    pub fn unregister_host(&self, now_ns: u64) -> Result<bool, HostError> {
        unregister(&self.tp, self.host_id, self.hostname, now_ns)
    }
}

/// Clear host record `host_id` if it is still ours (`hostname`) and no running, alive
/// blkdev names it.
fn unregister<M: SharedMem + ?Sized>(
    tp: &Transport<'_, M>,
    host_id: u32,
    hostname: &str,
    now_ns: u64,
) -> Result<bool, HostError> {
    let Some(h) = tp.host(host_id)? else {
        return Ok(false);
    };
    let name = &h.rec.hostname;
    let n = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    let ours = name[..n] == hostname.as_bytes()[..hostname.len().min(name.len() - 1)];
    if h.rec.state == STATE_NONE || !ours {
        return Ok(false);
    }
    for id in 0..tp.info.blkdev_num {
        if let Some(d) = tp.blkdev(id)?
            && d.rec.state == STATE_RUNNING
            && d.rec.host_id == host_id
            && is_alive(d.rec.alive_ts, now_ns)
        {
            return Ok(false);
        }
    }
    tp.clear(SlotKind::Host, host_id)?;
    Ok(true)
}
