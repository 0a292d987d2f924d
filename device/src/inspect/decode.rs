//! The walk: transport info → records → channel segments, every read through
//! [`Shm`] (bounds-checked) and decoded by the project's codecs.

use std::collections::BTreeMap;

use super::*;
use crate::channel::{
    ChannelGeom, DevLine, DurDevLine, DurHostLine, HostLine, copy_from_data, payload_crc,
    read_dur_dev, read_dur_host,
};
use crate::layout::*;
use crate::meta;
use crate::transport::is_alive;

/// At most this many SEs are listed per channel (a host keeps ≤ 128 in flight).
pub const MAX_LISTED_SES: u32 = 4096;

fn finding(
    f: &mut Vec<Finding>,
    severity: Severity,
    at: String,
    offset: Option<u64>,
    what: String,
) {
    f.push(Finding {
        severity,
        at,
        offset,
        what,
    });
}

pub(super) fn state_name(s: u8) -> &'static str {
    match s {
        STATE_NONE => "none",
        STATE_RUNNING => "running",
        STATE_STOPPING => "stopping",
        _ => "unknown",
    }
}
fn seg_type_name(t: u8) -> &'static str {
    match t {
        SEG_TYPE_NONE => "none",
        SEG_TYPE_CHANNEL => "channel",
        SEG_TYPE_CACHE => "cache",
        _ => "unknown",
    }
}
pub(super) fn feature_names(f: u64) -> Vec<&'static str> {
    let mut v = Vec::new();
    for (bit, name) in [
        (features::NONCOHERENT, "noncoherent"),
        (features::DURABLE_TOKENS, "durable_tokens"),
        (features::DISCARD_WZ, "discard_wz"),
        (features::VOLATILE_MEDIA, "volatile_media"),
    ] {
        if f & bit != 0 {
            v.push(name);
        }
    }
    let known = features::NONCOHERENT
        | features::DURABLE_TOKENS
        | features::DISCARD_WZ
        | features::VOLATILE_MEDIA;
    if f & !known != 0 {
        v.push("unknown");
    }
    v
}
fn tflag_names(f: u16) -> Vec<&'static str> {
    let mut v = Vec::new();
    for (bit, name) in [
        (tflags::BIGENDIAN, "bigendian"),
        (tflags::CHANNEL_CRC, "channel_crc"),
        (tflags::CHANNEL_DATA_CRC, "channel_data_crc"),
        (tflags::CACHE_DATA_CRC, "cache_data_crc"),
        (tflags::MULTIHOST, "multihost"),
    ] {
        if f & bit != 0 {
            v.push(name);
        }
    }
    if f & !tflags::KNOWN != 0 {
        v.push("unknown");
    }
    v
}
pub(super) fn op_name(o: u32) -> &'static str {
    match o {
        op::WRITE => "write",
        op::READ => "read",
        op::FLUSH => "flush",
        op::DISCARD => "discard",
        op::WRITE_ZEROES => "write_zeroes",
        _ => "unknown",
    }
}
fn se_flag_names(f: u32) -> Vec<&'static str> {
    let mut v = Vec::new();
    for (bit, name) in [
        (SE_FLAG_DONE, "done"),
        (SE_FLAG_EPHEMERAL, "ephemeral"),
        (SE_FLAG_CRITICAL, "critical"),
    ] {
        if f & bit != 0 {
            v.push(name);
        }
    }
    v
}
fn errno_name(r: i32) -> &'static str {
    match r {
        0 => "ok",
        errno::EIO => "EIO",
        errno::EINVAL => "EINVAL",
        errno::ENOSPC => "ENOSPC",
        errno::EOPNOTSUPP => "EOPNOTSUPP",
        errno::EBADMSG => "EBADMSG",
        _ => "error",
    }
}
fn cstr(b: &[u8]) -> String {
    let n = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..n]).into_owned()
}

/// Both copies of a record at `base`, decoded by `meta`.
struct Copies<R> {
    views: [CopyView; 2],
    latest: Option<usize>,
    rec: Option<R>,
}

fn read_copies<R: Record, M: SharedMem + ?Sized>(
    shm: Shm<'_, M>,
    base: u64,
    at: &str,
    f: &mut Vec<Finding>,
) -> Option<Copies<R>> {
    let mut buf = vec![0u8; R::COPY_SIZE];
    let mut views = Vec::with_capacity(2);
    let mut decoded: [Option<(u8, R)>; 2] = [None, None];
    for (i, d) in decoded.iter_mut().enumerate() {
        let off = base.checked_add((i * R::COPY_SIZE) as u64)?;
        if shm.read(off, &mut buf).is_err() {
            finding(
                f,
                Severity::Error,
                format!("{at} copy {i}"),
                Some(off),
                "outside the region".into(),
            );
            return None;
        }
        *d = meta::decode_copy::<R>(&buf);
        views.push(CopyView {
            offset: off,
            crc_ok: d.is_some(),
            zero: buf.iter().all(|&b| b == 0),
            seq: buf[crate::layout::meta::SEQ],
        });
    }
    let latest = meta::pick_latest([
        decoded[0].as_ref().map(|d| d.0),
        decoded[1].as_ref().map(|d| d.0),
    ]);
    for (i, v) in views.iter().enumerate() {
        if !v.crc_ok {
            let what = match latest {
                Some(l) if views[l].zero => format!(
                    "bad CRC (torn write or corruption); readers use copy {l}, which is all \
                     zero: the record reads as a free slot"
                ),
                Some(l) => format!(
                    "bad CRC (torn write or corruption); readers use copy {l} (seq {})",
                    views[l].seq
                ),
                None => "bad CRC".into(),
            };
            let sev = match latest {
                Some(l) if !views[l].zero => Severity::Warning,
                _ => Severity::Error,
            };
            finding(f, sev, format!("{at} copy {i}"), Some(v.offset), what);
        }
    }
    if latest.is_none() {
        finding(
            f,
            Severity::Error,
            at.to_string(),
            Some(base),
            "no copy has a valid CRC: the record reads as absent".into(),
        );
    }
    let rec = latest.and_then(|l| decoded[l].take()).map(|d| d.1);
    let views = [views[0].clone(), views[1].clone()];
    Some(Copies { views, latest, rec })
}

fn liveness(
    f: &mut Vec<Finding>,
    at: &str,
    state: u8,
    alive_ts: u64,
    now: u64,
) -> (Option<i64>, Option<bool>) {
    let age = (now as i128 - alive_ts as i128).clamp(i64::MIN as i128, i64::MAX as i128) as i64;
    let alive = is_alive(alive_ts, now);
    if state == STATE_RUNNING && !alive {
        finding(
            f,
            Severity::Warning,
            at.to_string(),
            None,
            format!(
                "running but dead: last heartbeat {} ago (timeout {} s)",
                fmt_age(age),
                HB_TIMEOUT_NS / 1_000_000_000
            ),
        );
    }
    if state != STATE_NONE && age < -(HB_TIMEOUT_NS as i64) {
        finding(
            f,
            Severity::Warning,
            at.to_string(),
            None,
            format!(
                "heartbeat {} in the future (clock skew, or pass --now)",
                fmt_age(-age)
            ),
        );
    }
    (Some(age), Some(alive))
}

/// `12.3 s`, `4 min`, `3 d`.
pub(super) fn fmt_age(ns: i64) -> String {
    let s = ns as f64 / 1e9;
    if s.abs() < 120.0 {
        format!("{s:.1} s")
    } else if s.abs() < 7200.0 {
        format!("{:.0} min", s / 60.0)
    } else if s.abs() < 172_800.0 {
        format!("{:.0} h", s / 3600.0)
    } else {
        format!("{:.0} d", s / 86400.0)
    }
}

fn transport_view(i: &TransportInfo, invalid: Option<&'static str>) -> TransportView {
    TransportView {
        magic: i.magic,
        version: i.version,
        flags: i.flags,
        flag_names: tflag_names(i.flags),
        host_area_off: i.host_area_off,
        host_num: i.host_num,
        backend_area_off: i.backend_area_off,
        backend_num: i.backend_num,
        blkdev_area_off: i.blkdev_area_off,
        blkdev_num: i.blkdev_num,
        segment_area_off: i.segment_area_off,
        segment_size: i.segment_size,
        segment_num: i.segment_num,
        invalid,
    }
}

/// Decode everything (see the module documentation). Never writes, never panics.
pub fn inspect<M: SharedMem + ?Sized>(shm: Shm<'_, M>, now_ns: u64) -> Report {
    let mut r = Report {
        region_size: shm.size(),
        now_ns,
        transport: None,
        hosts: Vec::new(),
        backends: Vec::new(),
        blkdevs: Vec::new(),
        segments: Vec::new(),
        free: [0; 4],
        findings: Vec::new(),
    };
    let f = &mut r.findings;
    let mut hdr = [0u8; tinfo::SIZE];
    if shm.read(0, &mut hdr).is_err() {
        finding(
            f,
            Severity::Error,
            "transport info".into(),
            Some(0),
            format!(
                "region of {} bytes is smaller than the transport info ({} B)",
                shm.size(),
                tinfo::SIZE
            ),
        );
        return r;
    }
    let Some(info) = TransportInfo::decode(&hdr) else {
        return r;
    };
    let invalid = info.validate(shm.size()).err();
    r.transport = Some(transport_view(&info, invalid));
    if let Some(why) = invalid {
        finding(
            &mut r.findings,
            Severity::Error,
            "transport info".into(),
            Some(0),
            format!("invalid: {why}; nothing else is decoded"),
        );
        return r;
    }
    let f = &mut r.findings;

    // ---- hosts
    for id in 0..info.host_num {
        let at = format!("host {id}");
        let base = info.host_slot(id);
        let Some(c) = read_copies::<HostInfo, M>(shm, base, &at, f) else {
            continue;
        };
        let in_use = c.rec.as_ref().is_some_and(|h| h.state != STATE_NONE)
            || c.views.iter().any(|v| !v.crc_ok);
        if !in_use {
            r.free[0] += 1;
            continue;
        }
        let (age_ns, alive) = match &c.rec {
            Some(h) => liveness(f, &at, h.state, h.alive_ts, now_ns),
            None => (None, None),
        };
        r.hosts.push(RecordView {
            id,
            offset: base,
            copies: c.views,
            latest: c.latest,
            rec: c.rec.map(|h| HostView {
                state: state_name(h.state),
                alive_ts: h.alive_ts,
                hostname: cstr(&h.hostname),
            }),
            age_ns,
            alive,
        });
    }
    let host_alive = |id: u32, hosts: &[RecordView<HostView>]| -> Option<bool> {
        hosts.iter().find(|h| h.id == id).and_then(|h| h.alive)
    };

    // ---- backends
    let mut listed: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    let mut backend_state: BTreeMap<u32, (u8, bool, u64)> = BTreeMap::new();
    for id in 0..info.backend_num {
        let at = format!("backend {id}");
        let base = info.backend_slot(id);
        let Some(c) = read_copies::<BackendInfo, M>(shm, base, &at, f) else {
            continue;
        };
        let in_use = c.rec.as_ref().is_some_and(|b| b.state != STATE_NONE)
            || c.views.iter().any(|v| !v.crc_ok);
        if !in_use {
            r.free[1] += 1;
            continue;
        }
        let (age_ns, alive) = match &c.rec {
            Some(b) => liveness(f, &at, b.state, b.alive_ts, now_ns),
            None => (None, None),
        };
        let rec = c.rec.map(|b| {
            let n = b.n_handlers as usize;
            if n > backend_rec::MAX_HANDLERS {
                finding(
                    f,
                    Severity::Error,
                    format!("{at} N_HANDLERS"),
                    Some(base + backend_rec::N_HANDLERS as u64),
                    format!(
                        "n_handlers {n} exceeds the {} handler slots",
                        backend_rec::MAX_HANDLERS
                    ),
                );
            }
            let chans: Vec<u32> = b.handler_channels[..n.min(backend_rec::MAX_HANDLERS)].to_vec();
            if b.state != STATE_NONE {
                for (i, &s) in chans.iter().enumerate() {
                    if s >= info.segment_num {
                        finding(
                            f,
                            Severity::Error,
                            format!("{at} HANDLER_CHANNELS[{i}]"),
                            Some(base + (backend_rec::HANDLER_CHANNELS + 4 * i) as u64),
                            format!(
                                "segment id {s} out of range ({} segments)",
                                info.segment_num
                            ),
                        );
                    } else {
                        let l = listed.entry(s).or_default();
                        if l.contains(&id) {
                            finding(
                                f,
                                Severity::Error,
                                format!("{at} HANDLER_CHANNELS[{i}]"),
                                Some(base + (backend_rec::HANDLER_CHANNELS + 4 * i) as u64),
                                format!("segment {s} listed twice by this backend"),
                            );
                        } else {
                            l.push(id);
                        }
                    }
                }
                if b.host_id >= info.host_num {
                    finding(
                        f,
                        Severity::Error,
                        format!("{at} HOST_ID"),
                        Some(base + backend_rec::HOST_ID as u64),
                        format!("host id {} out of range", b.host_id),
                    );
                } else if b.state == STATE_RUNNING
                    && alive == Some(true)
                    && host_alive(b.host_id, &r.hosts) != Some(true)
                {
                    finding(
                        f,
                        Severity::Warning,
                        at.clone(),
                        None,
                        format!("alive, but its host {} is absent or dead", b.host_id),
                    );
                }
                backend_state.insert(id, (b.state, alive == Some(true), b.features));
            }
            BackendView {
                state: state_name(b.state),
                host_id: b.host_id,
                alive_ts: b.alive_ts,
                dev_size_sectors: b.dev_size,
                path: cstr(&b.path),
                n_handlers: b.n_handlers,
                handler_channels: chans,
                features: feature_names(b.features),
            }
        });
        r.backends.push(RecordView {
            id,
            offset: base,
            copies: c.views,
            latest: c.latest,
            rec,
            age_ns,
            alive,
        });
    }
    for (seg, by) in &listed {
        if by.len() > 1 {
            finding(
                f,
                Severity::Error,
                format!("segment {seg}"),
                Some(info.segment_off(*seg)),
                format!("listed by {} backends: {by:?}", by.len()),
            );
        }
    }

    // ---- blkdevs
    let mut blkdevs_of: BTreeMap<u32, Vec<(u32, u64)>> = BTreeMap::new();
    for id in 0..info.blkdev_num {
        let at = format!("blkdev {id}");
        let base = info.blkdev_slot(id);
        let Some(c) = read_copies::<BlkdevInfo, M>(shm, base, &at, f) else {
            continue;
        };
        let in_use = c.rec.as_ref().is_some_and(|b| b.state != STATE_NONE)
            || c.views.iter().any(|v| !v.crc_ok);
        if !in_use {
            r.free[2] += 1;
            continue;
        }
        let (age_ns, alive) = match &c.rec {
            Some(b) => liveness(f, &at, b.state, b.alive_ts, now_ns),
            None => (None, None),
        };
        if let Some(b) = &c.rec {
            if b.backend_id >= info.backend_num {
                finding(
                    f,
                    Severity::Error,
                    format!("{at} BACKEND_ID"),
                    Some(base + blkdev_rec::BACKEND_ID as u64),
                    format!("backend id {} out of range", b.backend_id),
                );
            } else {
                blkdevs_of
                    .entry(b.backend_id)
                    .or_default()
                    .push((id, b.features));
                let running = backend_state
                    .get(&b.backend_id)
                    .is_some_and(|s| s.0 == STATE_RUNNING && s.1);
                if b.state == STATE_RUNNING && alive == Some(true) && !running {
                    finding(
                        f,
                        Severity::Warning,
                        at.clone(),
                        None,
                        format!(
                            "alive, but its backend {} is not running or dead",
                            b.backend_id
                        ),
                    );
                }
            }
            if b.host_id >= info.host_num {
                finding(
                    f,
                    Severity::Error,
                    format!("{at} HOST_ID"),
                    Some(base + blkdev_rec::HOST_ID as u64),
                    format!("host id {} out of range", b.host_id),
                );
            }
        }
        r.blkdevs.push(RecordView {
            id,
            offset: base,
            copies: c.views,
            latest: c.latest,
            rec: c.rec.map(|b| BlkdevView {
                state: state_name(b.state),
                alive_ts: b.alive_ts,
                backend_id: b.backend_id,
                host_id: b.host_id,
                mapped_id: b.mapped_id,
                features: feature_names(b.features),
            }),
            age_ns,
            alive,
        });
    }

    // ---- segments
    for id in 0..info.segment_num {
        let at = format!("segment {id}");
        let base = info.segment_off(id);
        let Some(c) = read_copies::<SegmentInfo, M>(shm, base, &at, f) else {
            continue;
        };
        let by = listed.get(&id).cloned().unwrap_or_default();
        let in_use = c.rec.as_ref().is_some_and(|s| s.seg_type != SEG_TYPE_NONE)
            || c.views.iter().any(|v| !v.crc_ok)
            || !by.is_empty();
        if !in_use {
            r.free[3] += 1;
            continue;
        }
        if let Some(s) = &c.rec {
            for b in &by {
                if s.seg_type != SEG_TYPE_CHANNEL || s.backend_id != *b {
                    finding(
                        f,
                        Severity::Error,
                        at.clone(),
                        Some(base),
                        format!(
                            "listed by backend {b}, but its record says type {} of backend {}",
                            seg_type_name(s.seg_type),
                            s.backend_id
                        ),
                    );
                }
            }
            if s.seg_type == SEG_TYPE_CHANNEL && s.state != STATE_NONE && by.is_empty() {
                finding(
                    f,
                    Severity::Warning,
                    at.clone(),
                    Some(base),
                    format!(
                        "a channel of backend {} that no backend lists (leaked)",
                        s.backend_id
                    ),
                );
            }
        }
        let blk: Vec<(u32, u64)> = by
            .iter()
            .flat_map(|b| blkdevs_of.get(b).cloned().unwrap_or_default())
            .collect();
        let is_channel = c
            .rec
            .as_ref()
            .is_some_and(|s| s.seg_type == SEG_TYPE_CHANNEL)
            || !by.is_empty();
        let channel = if is_channel {
            let nc_accepted = blk.iter().any(|(_, ft)| ft & features::NONCOHERENT != 0);
            channel_view(shm, &info, id, nc_accepted, f)
        } else {
            None
        };
        r.segments.push(SegmentReport {
            id,
            record: RecordView {
                id,
                offset: base,
                copies: c.views,
                latest: c.latest,
                rec: c.rec.map(|s| SegmentView {
                    seg_type: seg_type_name(s.seg_type),
                    state: state_name(s.state),
                    flags: s.flags,
                    next_seg: s.next_seg,
                    backend_id: s.backend_id,
                }),
                age_ns: None,
                alive: None,
            },
            listed_by: by,
            blkdevs: blk.iter().map(|b| b.0).collect(),
            channel,
        });
    }
    r
}

/// Read `n` bytes at `off`: `None` (and a finding) when outside the region.
fn read_bytes<M: SharedMem + ?Sized>(
    shm: Shm<'_, M>,
    off: u64,
    n: usize,
    at: &str,
    f: &mut Vec<Finding>,
) -> Option<Vec<u8>> {
    let mut b = vec![0u8; n];
    match shm.read(off, &mut b) {
        Ok(()) => Some(b),
        Err(_) => {
            finding(
                f,
                Severity::Error,
                at.to_string(),
                Some(off),
                "outside the region".into(),
            );
            None
        }
    }
}

fn line<T>(offset: u64, bytes: &[u8], decoded: Option<T>) -> LineView<T> {
    // An all-zero line verifies (crc32 of zeros is 0) and decodes as zeros.
    let status = match &decoded {
        Some(_) if bytes.iter().all(|&b| b == 0) => "zero",
        Some(_) => "ok",
        None => "bad crc",
    };
    LineView {
        offset,
        status,
        value: decoded,
    }
}

fn mgmt<R: Record, M: SharedMem + ?Sized>(
    shm: Shm<'_, M>,
    off: u64,
    value: impl Fn(&R) -> (u8, u8),
) -> Option<MgmtView> {
    let l = meta::read_latest::<R, M>(shm, off, false).ok()??;
    let (cmd_seq, v) = value(&l.rec);
    Some(MgmtView {
        copy: l.copy,
        seq: l.seq,
        cmd_seq,
        value: v,
    })
}

fn pointer(g: &ChannelGeom, pos: u32, se: bool, from: &'static str) -> PointerView {
    let (ok, size) = if se {
        (g.valid_se_pos(pos), g.el.se_size)
    } else {
        (g.valid_ce_pos(pos), g.el.ce_size)
    };
    PointerView {
        pos,
        index: pos / size.max(1),
        ok,
        from,
    }
}

fn channel_view<M: SharedMem + ?Sized>(
    shm: Shm<'_, M>,
    info: &TransportInfo,
    id: u32,
    nc_accepted: bool,
    f: &mut Vec<Finding>,
) -> Option<ChannelView> {
    let at = format!("segment {id}");
    let g = ChannelGeom::new(info.segment_off(id), info.flags, false);
    let el = g.el;
    let geom = GeomView {
        ctrl: g.ctrl(0),
        compr: g.ce(0),
        compr_size: el.compr_size(),
        submr: g.se(0),
        submr_size: el.submr_size(),
        data: g.base + chan::DATA_OFF,
        data_size: chan::DATA_SIZE,
        se_size: el.se_size,
        ce_size: el.ce_size,
    };
    let ld32 = |o: u64, f: &mut Vec<Finding>| -> Option<u32> {
        shm.load_u32(g.ctrl(o))
            .map_err(|_| {
                finding(
                    f,
                    Severity::Error,
                    format!("{at} ctrl"),
                    Some(g.ctrl(o)),
                    "outside the region".into(),
                )
            })
            .ok()
    };
    let ctrl_view = CtrlView {
        offset: g.ctrl(0),
        flags: shm.load_u64(g.ctrl(ctrl::FLAGS)).unwrap_or(0),
        submr_head: ld32(ctrl::SUBMR_HEAD, f)?,
        submr_tail: ld32(ctrl::SUBMR_TAIL, f)?,
        compr_head: ld32(ctrl::COMPR_HEAD, f)?,
        compr_tail: ld32(ctrl::COMPR_TAIL, f)?,
        mgmt_cmd: mgmt::<MgmtCmd, M>(shm, g.ctrl(ctrl::MGMT_CMD), |c| (c.cmd_seq, c.cmd_op)),
        mgmt_ret: mgmt::<MgmtRet, M>(shm, g.ctrl(ctrl::MGMT_RET), |c| (c.cmd_seq, c.cmd_ret)),
    };
    let hb = read_bytes(shm, g.host_line, nc_host::SIZE, &at, f)?;
    let host_line = HostLine::decode(&hb);
    let nc_host_v = line(
        g.host_line,
        &hb,
        host_line.map(|h| HostLineView {
            epoch: h.epoch,
            submr_head: h.submr_head,
            submr_tail: h.submr_tail,
            compr_tail: h.compr_tail,
            base_tid: h.base_tid,
            tail_tid: h.tail_tid,
            features: h.features,
        }),
    );
    let db = read_bytes(shm, g.dev_line, nc_dev::SIZE, &at, f)?;
    let dev_line = DevLine::decode(&db);
    let nc_dev_v = line(
        g.dev_line,
        &db,
        dev_line.map(|d| DevLineView {
            ack_epoch: d.ack_epoch,
            compr_head: d.compr_head,
        }),
    );
    let ddb = read_bytes(shm, g.ctrl(ctrl::DUR_DEV_LINE), dur_dev::SIZE, &at, f)?;
    let dur_dev_v = line(
        g.ctrl(ctrl::DUR_DEV_LINE),
        &ddb,
        read_dur_dev(shm, &g, false)
            .ok()
            .flatten()
            .map(|d: DurDevLine| DurDevView {
                incarnation: d.incarnation,
                durable_tid: d.durable_tid,
            }),
    );
    let dhb = read_bytes(shm, g.ctrl(ctrl::DUR_HOST_LINE), dur_host::SIZE, &at, f)?;
    let dur_host_v = line(
        g.ctrl(ctrl::DUR_HOST_LINE),
        &dhb,
        read_dur_host(shm, &g, false)
            .ok()
            .flatten()
            .map(|d: DurHostLine| DurHostView {
                power_window_us: d.power_window_us,
            }),
    );
    for (name, l_status, off) in [
        ("nc_host line", nc_host_v.status, nc_host_v.offset),
        ("nc_dev line", nc_dev_v.status, nc_dev_v.offset),
        ("dur_dev line", dur_dev_v.status, dur_dev_v.offset),
        ("dur_host line", dur_host_v.status, dur_host_v.offset),
    ] {
        if l_status == "bad crc" {
            finding(
                f,
                Severity::Error,
                format!("{at} {name}"),
                Some(off),
                "CRC does not verify (torn, stale half, or corrupt)".into(),
            );
        }
    }

    let nc = host_line.is_some_and(|h| h.epoch != 0);
    if nc_accepted && !nc {
        finding(
            f,
            Severity::Warning,
            format!("{at} nc_host line"),
            Some(g.host_line),
            format!(
                "the blkdev accepted the non-coherent mode, but the host line is {}",
                nc_host_v.status
            ),
        );
    }
    let pointers = match host_line.filter(|_| nc) {
        Some(h) => {
            let ch = match dev_line {
                Some(d) => {
                    if d.ack_epoch != h.epoch {
                        finding(
                            f,
                            Severity::Note,
                            format!("{at} nc_dev line"),
                            Some(g.dev_line),
                            format!(
                                "RESET in progress: host epoch {}, device acknowledged {}",
                                h.epoch, d.ack_epoch
                            ),
                        );
                    }
                    d.compr_head
                }
                None => 0,
            };
            Pointers {
                submr_head: pointer(&g, h.submr_head, true, "nc_host.SUBMR_HEAD"),
                submr_tail: pointer(&g, h.submr_tail, true, "nc_host.SUBMR_TAIL"),
                compr_head: pointer(&g, ch, false, "nc_dev.COMPR_HEAD"),
                compr_tail: pointer(&g, h.compr_tail, false, "nc_host.COMPR_TAIL"),
            }
        }
        None => Pointers {
            submr_head: pointer(&g, ctrl_view.submr_head, true, "ctrl.SUBMR_HEAD"),
            submr_tail: pointer(&g, ctrl_view.submr_tail, true, "ctrl.SUBMR_TAIL"),
            compr_head: pointer(&g, ctrl_view.compr_head, false, "ctrl.COMPR_HEAD"),
            compr_tail: pointer(&g, ctrl_view.compr_tail, false, "ctrl.COMPR_TAIL"),
        },
    };
    for (p, se) in [
        (&pointers.submr_head, true),
        (&pointers.submr_tail, true),
        (&pointers.compr_head, false),
        (&pointers.compr_tail, false),
    ] {
        if !p.ok {
            let (ring, entry) = if se {
                (el.submr_size(), el.se_size)
            } else {
                (el.compr_size(), el.ce_size)
            };
            finding(
                f,
                Severity::Error,
                format!("{at} {}", p.from),
                None,
                format!(
                    "pointer {:#x} out of range (ring of {ring:#x} bytes, {entry}-byte entries)",
                    p.pos
                ),
            );
        }
    }

    // ---- CEs not yet consumed: compr_tail .. compr_head
    let mut ces = Vec::new();
    if pointers.compr_head.ok && pointers.compr_tail.ok {
        let mut pos = pointers.compr_tail.pos;
        let mut n = 0;
        while pos != pointers.compr_head.pos && n < chan::COMPR_ENTRIES {
            let off = g.ce(pos);
            let Some(b) = read_bytes(shm, off, el.ce_size as usize, &at, f) else {
                break;
            };
            if let Some(ce) = el.decode_ce(&b) {
                let crc_ok = el.entry_crc_ok(&b, el.ce_size);
                if !crc_ok {
                    finding(
                        f,
                        Severity::Error,
                        format!("{at} CE @ {pos:#x}"),
                        Some(off),
                        format!("entry CRC does not verify (req_tid {:#x})", ce.req_tid),
                    );
                }
                ces.push(CeView {
                    pos,
                    offset: off,
                    req_tid: ce.req_tid,
                    result: ce.result,
                    result_name: errno_name(ce.result),
                    flags: ce.flags,
                    durable: ce.flags & CE_FLAG_DURABLE != 0,
                    data_crc: ce.data_crc,
                    crc_ok,
                });
            }
            pos = g.next_ce(pos);
            n += 1;
        }
    }

    // ---- SEs in flight: submr_tail .. submr_head
    let mut ses = Vec::new();
    let mut extents = Vec::new();
    let mut data_in_use = 0u64;
    if pointers.submr_head.ok && pointers.submr_tail.ok {
        let size = g.submr_size();
        let (h, t) = (pointers.submr_head.pos, pointers.submr_tail.pos);
        let count = ((h as u64 + size as u64 - t as u64) % size as u64) / el.se_size as u64;
        if count > MAX_LISTED_SES as u64 {
            finding(
                f,
                Severity::Warning,
                format!("{at} SE ring"),
                None,
                format!("{count} SEs between tail and head; listing the first {MAX_LISTED_SES}"),
            );
        }
        let mut pos = t;
        let mut prev_tid: Option<u64> = None;
        for _ in 0..count.min(MAX_LISTED_SES as u64) {
            let off = g.se(pos);
            let Some(b) = read_bytes(shm, off, el.se_size as usize, &at, f) else {
                break;
            };
            let Some(se) = el.decode_se(&b) else { break };
            let sat = format!("{at} SE @ {pos:#x}");
            let crc_ok = el.entry_crc_ok(&b, el.se_size);
            if !crc_ok {
                finding(
                    f,
                    Severity::Error,
                    sat.clone(),
                    Some(off),
                    format!("entry CRC does not verify (req_tid {:#x})", se.req_tid),
                );
            }
            if let Some(p) = prev_tid
                && se.req_tid != p.wrapping_add(1)
            {
                finding(
                    f,
                    Severity::Warning,
                    sat.clone(),
                    Some(off),
                    format!("req_tid {:#x} does not follow {p:#x}", se.req_tid),
                );
            }
            if let Some(h) = host_line.filter(|_| nc)
                && se.req_tid < h.base_tid
            {
                finding(
                    f,
                    Severity::Warning,
                    sat.clone(),
                    Some(off),
                    format!(
                        "req_tid {:#x} is older than this epoch's base_tid {:#x}",
                        se.req_tid, h.base_tid
                    ),
                );
            }
            prev_tid = Some(se.req_tid);
            let has_data = matches!(se.op, op::READ | op::WRITE);
            let mut extent_ok = false;
            if op_name(se.op) == "unknown" {
                finding(
                    f,
                    Severity::Error,
                    sat.clone(),
                    Some(off),
                    format!("unknown op {}", se.op),
                );
            } else if has_data {
                let bad = se.len == 0
                    || se.len > chan::MAX_IO
                    || se.data_len != se.len
                    || se.data_off as u64 >= chan::DATA_SIZE
                    || !se.data_off.is_multiple_of(chan::DATA_ALIGN);
                if bad {
                    finding(
                        f,
                        Severity::Error,
                        sat.clone(),
                        Some(off),
                        format!(
                            "data extent {:#x}+{:#x} (len {:#x}) is not a legal place in the {:#x}-byte data area",
                            se.data_off,
                            se.data_len,
                            se.len,
                            chan::DATA_SIZE
                        ),
                    );
                } else {
                    extent_ok = true;
                    let span = se.len.div_ceil(chan::DATA_ALIGN) * chan::DATA_ALIGN;
                    data_in_use += span as u64;
                    extents.push(ExtentView {
                        req_tid: se.req_tid,
                        data_off: se.data_off,
                        span,
                        ranges: g
                            .data_ranges(se.data_off, span)
                            .into_iter()
                            .filter(|r| r.1 > 0)
                            .collect(),
                    });
                }
            }
            let status = if se.flags & SE_FLAG_DONE != 0 {
                "done"
            } else if ces.iter().any(|c| c.req_tid == se.req_tid) {
                "completed"
            } else {
                "waiting"
            };
            // The payload against its data_crc: a WRITE's from the SE, a READ's from its
            // CE (published, not consumed: the data is still in the data area).
            let want = match se.op {
                op::WRITE => Some(se.data_crc),
                _ => ces
                    .iter()
                    .find(|c| c.req_tid == se.req_tid && c.crc_ok && c.result == 0)
                    .map(|c| c.data_crc),
            };
            let mut payload_crc_ok = None;
            if el.data_crc
                && crc_ok
                && extent_ok
                && status != "done"
                && let Some(w) = want
            {
                let mut buf = vec![0u8; se.len as usize];
                if copy_from_data(shm, &g, se.data_off, &mut buf).is_ok() {
                    let ok = payload_crc(&buf) == w;
                    payload_crc_ok = Some(ok);
                    if !ok {
                        finding(
                            f,
                            Severity::Warning,
                            sat.clone(),
                            Some(g.data_ranges(se.data_off, se.len)[0].0),
                            format!(
                                "{} payload {:#x}+{:#x} does not match its data_crc {w:#010x} \
                                 (not written back yet, overwritten, or corrupt)",
                                op_name(se.op),
                                se.data_off,
                                se.len
                            ),
                        );
                    }
                }
            }
            ses.push(SeView {
                pos,
                offset: off,
                op: op_name(se.op),
                flags: se.flags,
                flag_names: se_flag_names(se.flags),
                req_tid: se.req_tid,
                disk_offset: se.offset,
                len: se.len,
                data_off: se.data_off,
                data_len: se.data_len,
                data_crc: se.data_crc,
                crc_ok,
                payload_crc_ok,
                status,
            });
            pos = g.next_se(pos);
        }
        for c in &ces {
            if c.crc_ok && !ses.iter().any(|s| s.req_tid == c.req_tid) {
                finding(
                    f,
                    Severity::Warning,
                    format!("{at} CE @ {:#x}", c.pos),
                    Some(c.offset),
                    format!("completes req_tid {:#x}, which is not in flight", c.req_tid),
                );
            }
        }
    }
    Some(ChannelView {
        mode: if nc { "noncoherent" } else { "v3" },
        geom,
        ctrl: ctrl_view,
        nc_host: nc_host_v,
        nc_dev: nc_dev_v,
        dur_dev: dur_dev_v,
        dur_host: dur_host_v,
        pointers,
        ses,
        ces,
        extents,
        data_in_use,
    })
}
