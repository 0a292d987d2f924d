//! Transport-level operations shared by both roles: format, open (parse +
//! validate the transport info), typed record access by id, free-slot scan,
//! liveness.

use crate::layout::*;
use crate::meta::{self, Latest};
use crate::shm::{OutOfBounds, SharedMem, Shm};
use crate::trace::{RecordKind, TraceEvent};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportError {
    /// Shared access outside the region (hostile header values are caught earlier;
    /// this means a bug or a shrunken region).
    Shm(OutOfBounds),
    /// Transport info failed validation.
    Invalid(&'static str),
    /// Region too small for even one segment.
    TooSmall,
    /// `format` found an existing transport and `force` was not given.
    Exists,
    /// `format` found a live host.
    Busy,
    /// No free slot of the requested kind.
    NoSpace,
    /// The record is not present / not in the expected state.
    NotFound,
    /// The object is alive (heartbeat within 30 s) and may not be taken over.
    Alive,
    /// Id out of range.
    BadId,
}
impl From<OutOfBounds> for TransportError {
    fn from(e: OutOfBounds) -> Self {
        Self::Shm(e)
    }
}

/// Transport flags a formatter (device or host) chooses: MULTIHOST always, plus the
/// entry and payload CRCs when the non-coherent mode is wanted — that mode relies on
/// them (a reader tells a stale or torn entry or payload by its CRC), and a backend
/// offers it only on a transport that has both.
pub const fn format_flags(noncoherent: bool) -> u16 {
    if noncoherent {
        tflags::MULTIHOST | tflags::CHANNEL_CRC | tflags::CHANNEL_DATA_CRC
    } else {
        tflags::MULTIHOST
    }
}

/// Whether a heartbeat timestamp counts as alive at `now_ns` (30 s timeout).
pub fn is_alive(alive_ts: u64, now_ns: u64) -> bool {
    alive_ts > now_ns.saturating_sub(HB_TIMEOUT_NS)
}

/// A hostname as the host record stores it: NUL-padded, truncated to leave one NUL.
pub fn host_name(hostname: &str) -> [u8; host_rec::HOSTNAME_LEN] {
    let mut name = [0u8; host_rec::HOSTNAME_LEN];
    let n = hostname.len().min(host_rec::HOSTNAME_LEN - 1);
    name[..n].copy_from_slice(&hostname.as_bytes()[..n]);
    name
}

/// Kind of object slot for [`Transport::find_free`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotKind {
    Host,
    Backend,
    Blkdev,
    Segment,
}

/// An opened (validated) transport.
pub struct Transport<'a, M: SharedMem + ?Sized> {
    pub shm: Shm<'a, M>,
    pub info: TransportInfo,
    /// Write back records after writing and invalidate before reading them.
    pub noncoherent: bool,
}

impl<M: SharedMem + ?Sized> Clone for Transport<'_, M> {
    fn clone(&self) -> Self {
        Self {
            shm: self.shm,
            info: self.info,
            noncoherent: self.noncoherent,
        }
    }
}

impl<'a, M: SharedMem + ?Sized> Transport<'a, M> {
    /// Format the whole region as a CBD v3 transport (`format=1`).
    pub fn format(
        shm: Shm<'a, M>,
        flags: u16,
        force: bool,
        now_ns: u64,
    ) -> Result<Self, TransportError> {
        let info = TransportInfo::for_size(shm.size(), flags).ok_or(TransportError::TooSmall)?;
        info.validate(shm.size()).map_err(TransportError::Invalid)?;
        let mut hdr = [0u8; tinfo::SIZE];
        shm.read(0, &mut hdr)?;
        if let Some(old) = TransportInfo::decode(&hdr).filter(|o| o.magic == TRANSPORT_MAGIC) {
            if !force {
                return Err(TransportError::Exists);
            }
            if old.validate(shm.size()).is_ok() {
                let t = Self {
                    shm,
                    info: old,
                    noncoherent: true,
                };
                for id in 0..old.host_num {
                    if let Some(h) = t.host(id)?
                        && h.rec.state == STATE_RUNNING
                        && is_alive(h.rec.alive_ts, now_ns)
                    {
                        return Err(TransportError::Busy);
                    }
                }
            }
        }
        // The magic goes in last: a peer that scans for it (a device waiting for a
        // host to format) must never find it over a header or metadata still being
        // written. Everything else is written, written back and fenced first. No
        // fence after the magic: what the formatter writes next (records) is ordered
        // by the full fence of its own reads, and a peer reads nothing before the
        // magic anyway.
        shm.fill(0, HOST_AREA_OFF, 0)?;
        info.encode(&mut hdr);
        hdr[tinfo::MAGIC..tinfo::MAGIC + 8].fill(0);
        shm.write(0, &hdr)?;
        let meta_end = info.segment_area_off;
        shm.fill(info.host_area_off, meta_end - info.host_area_off, 0)?;
        shm.write_back(0, meta_end)?;
        for s in 0..info.segment_num {
            let off = info.segment_off(s);
            shm.fill(off, 2 * PAGE as u64, 0)?;
            shm.write_back(off, 2 * PAGE as u64)?;
        }
        shm.store_fence();
        shm.write(tinfo::MAGIC as u64, &TRANSPORT_MAGIC.to_le_bytes())?;
        shm.write_back(tinfo::MAGIC as u64, 8)?;
        shm.tracer.event(&TraceEvent::RecordWritten {
            kind: RecordKind::Transport,
            id: 0,
            copy: 0,
            seq: 0,
        });
        Ok(Self {
            shm,
            info,
            noncoherent: true,
        })
    }

    /// Parse and validate the transport info of an existing transport.
    pub fn open(shm: Shm<'a, M>, noncoherent: bool) -> Result<Self, TransportError> {
        let mut hdr = [0u8; tinfo::SIZE];
        if noncoherent {
            shm.invalidate(0, tinfo::SIZE as u64)?;
            shm.full_fence();
        }
        shm.read(0, &mut hdr)?;
        let info = TransportInfo::decode(&hdr).ok_or(TransportError::Invalid("short"))?;
        info.validate(shm.size()).map_err(TransportError::Invalid)?;
        Ok(Self {
            shm,
            info,
            noncoherent,
        })
    }

    fn num(&self, k: SlotKind) -> u32 {
        match k {
            SlotKind::Host => self.info.host_num,
            SlotKind::Backend => self.info.backend_num,
            SlotKind::Blkdev => self.info.blkdev_num,
            SlotKind::Segment => self.info.segment_num,
        }
    }
    fn base(&self, k: SlotKind, id: u32) -> Result<u64, TransportError> {
        if id >= self.num(k) {
            return Err(TransportError::BadId);
        }
        Ok(match k {
            SlotKind::Host => self.info.host_slot(id),
            SlotKind::Backend => self.info.backend_slot(id),
            SlotKind::Blkdev => self.info.blkdev_slot(id),
            SlotKind::Segment => self.info.segment_off(id),
        })
    }

    fn read<R: Record>(&self, k: SlotKind, id: u32) -> Result<Option<Latest<R>>, TransportError> {
        Ok(meta::read_latest::<R, M>(
            self.shm,
            self.base(k, id)?,
            self.noncoherent,
        )?)
    }
    fn write<R: Record>(
        &self,
        k: SlotKind,
        id: u32,
        rec: &R,
        kind: RecordKind,
    ) -> Result<u8, TransportError> {
        let (_, seq) =
            meta::write_record(self.shm, self.base(k, id)?, rec, kind, id, self.noncoherent)?;
        Ok(seq)
    }

    pub fn host(&self, id: u32) -> Result<Option<Latest<HostInfo>>, TransportError> {
        self.read(SlotKind::Host, id)
    }
    pub fn backend(&self, id: u32) -> Result<Option<Latest<BackendInfo>>, TransportError> {
        self.read(SlotKind::Backend, id)
    }
    pub fn blkdev(&self, id: u32) -> Result<Option<Latest<BlkdevInfo>>, TransportError> {
        self.read(SlotKind::Blkdev, id)
    }
    pub fn segment(&self, id: u32) -> Result<Option<Latest<SegmentInfo>>, TransportError> {
        self.read(SlotKind::Segment, id)
    }
    pub fn write_host(&self, id: u32, r: &HostInfo) -> Result<u8, TransportError> {
        self.write(SlotKind::Host, id, r, RecordKind::Host)
    }
    pub fn write_backend(&self, id: u32, r: &BackendInfo) -> Result<u8, TransportError> {
        self.write(SlotKind::Backend, id, r, RecordKind::Backend)
    }
    pub fn write_blkdev(&self, id: u32, r: &BlkdevInfo) -> Result<u8, TransportError> {
        self.write(SlotKind::Blkdev, id, r, RecordKind::Blkdev)
    }
    pub fn write_segment(&self, id: u32, r: &SegmentInfo) -> Result<u8, TransportError> {
        self.write(SlotKind::Segment, id, r, RecordKind::Segment)
    }
    pub fn clear(&self, k: SlotKind, id: u32) -> Result<(), TransportError> {
        let kind = match k {
            SlotKind::Host => RecordKind::Host,
            SlotKind::Backend => RecordKind::Backend,
            SlotKind::Blkdev => RecordKind::Blkdev,
            SlotKind::Segment => RecordKind::Segment,
        };
        Ok(meta::clear_record(
            self.shm,
            self.base(k, id)?,
            PAGE,
            kind,
            id,
        )?)
    }

    /// State of the latest copy (absent/corrupt = NONE).
    fn state_of(&self, k: SlotKind, id: u32) -> Result<u8, TransportError> {
        Ok(match k {
            SlotKind::Host => self.host(id)?.map_or(STATE_NONE, |l| l.rec.state),
            SlotKind::Backend => self.backend(id)?.map_or(STATE_NONE, |l| l.rec.state),
            SlotKind::Blkdev => self.blkdev(id)?.map_or(STATE_NONE, |l| l.rec.state),
            SlotKind::Segment => self.segment(id)?.map_or(STATE_NONE, |l| l.rec.state),
        })
    }

    /// Free-slot scan from `hint`, wrapping: a slot is free if no copy is valid or
    /// the latest copy has state NONE.
    pub fn find_free(&self, k: SlotKind, hint: u32) -> Result<u32, TransportError> {
        let n = self.num(k);
        for i in 0..n {
            let id = (hint % n + i) % n;
            if self.state_of(k, id)? == STATE_NONE {
                return Ok(id);
            }
        }
        Err(TransportError::NoSpace)
    }

    /// Shared-memory offset of a channel segment (segment id checked).
    pub fn channel_base(&self, seg_id: u32) -> Result<u64, TransportError> {
        self.base(SlotKind::Segment, seg_id)
    }

    /// Register a host (v3 `transport_register`): by hostname, else id 0 on a
    /// single-host transport, else the first free slot; refuses if that id is alive.
    pub fn register_host(&self, hostname: &str, now_ns: u64) -> Result<u32, TransportError> {
        self.register_host_as(hostname, now_ns, false)
    }

    /// [`Self::register_host`]; with `takeover`, a record of the same hostname is
    /// taken over even while its heartbeat still looks alive. Only for a device that
    /// knows it is the sole owner of that name and is restarting after a crash (the
    /// heartbeat of its dead incarnation would otherwise block it for 30 s).
    pub fn register_host_as(
        &self,
        hostname: &str,
        now_ns: u64,
        takeover: bool,
    ) -> Result<u32, TransportError> {
        let name = host_name(hostname);
        let mut id = None;
        for i in 0..self.info.host_num {
            if let Some(h) = self.host(i)?
                && h.rec.hostname == name
                && h.rec.state != STATE_NONE
            {
                id = Some(i);
                break;
            }
        }
        let id = match id {
            Some(i) => i,
            None if self.info.flags & tflags::MULTIHOST == 0 => 0,
            None => self.find_free(SlotKind::Host, 0)?,
        };
        if let Some(h) = self.host(id)?
            && h.rec.state == STATE_RUNNING
            && is_alive(h.rec.alive_ts, now_ns)
            && !(takeover && h.rec.hostname == name)
        {
            return Err(TransportError::Alive);
        }
        let rec = HostInfo {
            state: STATE_RUNNING,
            alive_ts: now_ns,
            hostname: name,
        };
        self.write_host(id, &rec)?;
        self.shm.tracer.event(&TraceEvent::Heartbeat {
            kind: RecordKind::Host,
            id,
            alive_ts: now_ns,
        });
        Ok(id)
    }
}
