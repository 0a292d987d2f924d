//! The report as text, for a person at a terminal.

use std::fmt::Write;

use super::decode::fmt_age;
use super::*;

fn bytes(n: u64) -> String {
    const K: u64 = 1024;
    if n >= K * K * K && n.is_multiple_of(K * K * K) {
        format!("{} GiB", n / (K * K * K))
    } else if n >= K * K && n.is_multiple_of(K * K) {
        format!("{} MiB", n / (K * K))
    } else if n >= K && n.is_multiple_of(K) {
        format!("{} KiB", n / K)
    } else {
        format!("{n} B")
    }
}

fn copies(c: &[CopyView; 2], latest: Option<usize>) -> String {
    let one = |i: usize| {
        let v = &c[i];
        let st = if !v.crc_ok {
            "BAD CRC"
        } else if v.zero {
            "zero"
        } else {
            "ok"
        };
        let mark = if latest == Some(i) { " (newest)" } else { "" };
        format!("{i}: seq {} {st}{mark}", v.seq)
    };
    format!("copies [{}; {}]", one(0), one(1))
}

fn heartbeat(age: Option<i64>, alive: Option<bool>) -> String {
    match (age, alive) {
        (Some(a), Some(al)) if a >= 0 => format!(
            "heartbeat {} ago ({})",
            fmt_age(a),
            if al { "alive" } else { "dead" }
        ),
        (Some(a), _) => format!("heartbeat {} in the future", fmt_age(-a)),
        _ => "no valid copy".into(),
    }
}

fn list(v: &[&str]) -> String {
    format!("[{}]", v.join(" "))
}

impl Report {
    /// The report as text (what `inspect PATH` prints).
    pub fn text(&self) -> String {
        let mut o = String::new();
        let _ = self.write_text(&mut o);
        o
    }

    fn write_text(&self, o: &mut String) -> std::fmt::Result {
        writeln!(
            o,
            "region: {} bytes ({}), judged at {:.3} s (CLOCK_REALTIME)",
            self.region_size,
            bytes(self.region_size),
            self.now_ns as f64 / 1e9
        )?;
        let Some(t) = &self.transport else {
            writeln!(o, "no transport info")?;
            return self.write_findings(o);
        };
        writeln!(
            o,
            "transport: magic {:#018x}  version {}  flags {:#06x} {}",
            t.magic,
            t.version,
            t.flags,
            list(&t.flag_names)
        )?;
        writeln!(
            o,
            "  areas: hosts @ {:#x} x{}, backends @ {:#x} x{}, blkdevs @ {:#x} x{}, segments @ {:#x} x{} of {}",
            t.host_area_off,
            t.host_num,
            t.backend_area_off,
            t.backend_num,
            t.blkdev_area_off,
            t.blkdev_num,
            t.segment_area_off,
            t.segment_num,
            bytes(t.segment_size as u64)
        )?;
        if let Some(why) = t.invalid {
            writeln!(o, "  INVALID: {why}")?;
            return self.write_findings(o);
        }
        writeln!(
            o,
            "hosts: {} in use, {} free",
            self.hosts.len(),
            self.free[0]
        )?;
        for h in &self.hosts {
            let body = h
                .rec
                .as_ref()
                .map_or(String::new(), |r| format!("{} {:?}  ", r.state, r.hostname));
            writeln!(
                o,
                "  host {} @ {:#x}: {body}{}  {}",
                h.id,
                h.offset,
                heartbeat(h.age_ns, h.alive),
                copies(&h.copies, h.latest)
            )?;
        }
        writeln!(
            o,
            "backends: {} in use, {} free",
            self.backends.len(),
            self.free[1]
        )?;
        for b in &self.backends {
            let body = b.rec.as_ref().map_or(String::new(), |r| {
                format!(
                    "{} host {} {:?} {} sectors ({}), channels {:?}, features {}  ",
                    r.state,
                    r.host_id,
                    r.path,
                    r.dev_size_sectors,
                    bytes(r.dev_size_sectors.saturating_mul(crate::layout::SECTOR)),
                    r.handler_channels,
                    list(&r.features)
                )
            });
            writeln!(
                o,
                "  backend {} @ {:#x}: {body}{}  {}",
                b.id,
                b.offset,
                heartbeat(b.age_ns, b.alive),
                copies(&b.copies, b.latest)
            )?;
        }
        writeln!(
            o,
            "blkdevs: {} in use, {} free",
            self.blkdevs.len(),
            self.free[2]
        )?;
        for b in &self.blkdevs {
            let body = b.rec.as_ref().map_or(String::new(), |r| {
                format!(
                    "{} backend {} host {} mapped {}, features {}  ",
                    r.state,
                    r.backend_id,
                    r.host_id,
                    r.mapped_id,
                    list(&r.features)
                )
            });
            writeln!(
                o,
                "  blkdev {} @ {:#x}: {body}{}  {}",
                b.id,
                b.offset,
                heartbeat(b.age_ns, b.alive),
                copies(&b.copies, b.latest)
            )?;
        }
        writeln!(
            o,
            "segments: {} in use, {} free",
            self.segments.len(),
            self.free[3]
        )?;
        for s in &self.segments {
            self.write_segment(o, s)?;
        }
        self.write_findings(o)
    }

    fn write_segment(&self, o: &mut String, s: &SegmentReport) -> std::fmt::Result {
        let rec = s
            .record
            .rec
            .as_ref()
            .map_or("no valid record".to_string(), |r| {
                format!("{} {} of backend {}", r.state, r.seg_type, r.backend_id)
            });
        writeln!(
            o,
            "  segment {} @ {:#x}: {rec}; listed by backends {:?}, blkdevs {:?}  {}",
            s.id,
            s.record.offset,
            s.listed_by,
            s.blkdevs,
            copies(&s.record.copies, s.record.latest)
        )?;
        let Some(c) = &s.channel else { return Ok(()) };
        let g = &c.geom;
        writeln!(
            o,
            "    mode {}; ctrl @ {:#x}; CE ring @ {:#x} ({} x {} B); SE ring @ {:#x} ({} x {} B); data @ {:#x} ({})",
            c.mode,
            g.ctrl,
            g.compr,
            g.compr_size / g.ce_size.max(1) as u64,
            g.ce_size,
            g.submr,
            g.submr_size / g.se_size.max(1) as u64,
            g.se_size,
            g.data,
            bytes(g.data_size)
        )?;
        let m = |v: &Option<MgmtView>| {
            v.as_ref().map_or("none".to_string(), |m| {
                format!("cmd_seq {} value {} (copy {})", m.cmd_seq, m.value, m.copy)
            })
        };
        writeln!(
            o,
            "    ctrl: flags {:#x}  submr_head {:#x}  submr_tail {:#x}  compr_head {:#x}  compr_tail {:#x}  mgmt_cmd {}  mgmt_ret {}",
            c.ctrl.flags,
            c.ctrl.submr_head,
            c.ctrl.submr_tail,
            c.ctrl.compr_head,
            c.ctrl.compr_tail,
            m(&c.ctrl.mgmt_cmd),
            m(&c.ctrl.mgmt_ret)
        )?;
        match c
            .nc_host
            .value
            .as_ref()
            .filter(|_| c.nc_host.status == "ok")
        {
            Some(h) => writeln!(
                o,
                "    nc_host @ {:#x}: epoch {}  submr_head {:#x}  submr_tail {:#x}  compr_tail {:#x}  base_tid {:#x}  tail_tid {:#x}  features {:#x}",
                c.nc_host.offset,
                h.epoch,
                h.submr_head,
                h.submr_tail,
                h.compr_tail,
                h.base_tid,
                h.tail_tid,
                h.features
            )?,
            None => writeln!(
                o,
                "    nc_host @ {:#x}: {}",
                c.nc_host.offset, c.nc_host.status
            )?,
        }
        match c.nc_dev.value.as_ref().filter(|_| c.nc_dev.status == "ok") {
            Some(d) => writeln!(
                o,
                "    nc_dev  @ {:#x}: ack_epoch {}  compr_head {:#x}",
                c.nc_dev.offset, d.ack_epoch, d.compr_head
            )?,
            None => writeln!(
                o,
                "    nc_dev  @ {:#x}: {}",
                c.nc_dev.offset, c.nc_dev.status
            )?,
        }
        let dd = c
            .dur_dev
            .value
            .as_ref()
            .map_or(c.dur_dev.status.to_string(), |d| {
                format!("gen {}  durable_tid {:#x}", d.incarnation, d.durable_tid)
            });
        let dh = c
            .dur_host
            .value
            .as_ref()
            .map_or(c.dur_host.status.to_string(), |d| {
                format!("power_window_us {}", d.power_window_us)
            });
        writeln!(
            o,
            "    durability: dur_dev @ {:#x}: {dd}; dur_host @ {:#x}: {dh}",
            c.dur_dev.offset, c.dur_host.offset
        )?;
        let p = &c.pointers;
        let pv = |v: &PointerView| {
            format!(
                "{} {:#x} [#{}]{}",
                v.from,
                v.pos,
                v.index,
                if v.ok { "" } else { " OUT OF RANGE" }
            )
        };
        writeln!(
            o,
            "    pointers: {} .. {}: {} SE(s) listed; {} .. {}: {} CE(s) not consumed",
            pv(&p.submr_tail),
            pv(&p.submr_head),
            c.ses.len(),
            pv(&p.compr_tail),
            pv(&p.compr_head),
            c.ces.len()
        )?;
        if !c.ses.is_empty() {
            writeln!(
                o,
                "    SEs in flight:  {:>8} {:>18} {:>12} {:>12} {:>8} {:>9} {:>5} status",
                "pos", "req_tid", "op", "disk offset", "len", "data_off", "crc"
            )?;
            for e in &c.ses {
                writeln!(
                    o,
                    "                    {:>#8x} {:>#18x} {:>12} {:>#12x} {:>#8x} {:>#9x} {:>5} {}{}",
                    e.pos,
                    e.req_tid,
                    e.op,
                    e.disk_offset,
                    e.len,
                    e.data_off,
                    if e.crc_ok { "ok" } else { "BAD" },
                    e.status,
                    if e.flag_names.is_empty() {
                        String::new()
                    } else {
                        format!(" {}", list(&e.flag_names))
                    }
                )?;
            }
        }
        if !c.ces.is_empty() {
            writeln!(
                o,
                "    CEs not consumed: {:>6} {:>18} {:>10} {:>8} {:>5}",
                "pos", "req_tid", "result", "durable", "crc"
            )?;
            for e in &c.ces {
                writeln!(
                    o,
                    "                      {:>#6x} {:>#18x} {:>10} {:>8} {:>5}",
                    e.pos,
                    e.req_tid,
                    e.result_name,
                    e.durable,
                    if e.crc_ok { "ok" } else { "BAD" }
                )?;
            }
        }
        if !c.extents.is_empty() {
            let ext: Vec<String> = c
                .extents
                .iter()
                .take(16)
                .map(|e| format!("{:#x}+{:#x}", e.data_off, e.span))
                .collect();
            writeln!(
                o,
                "    data area in use: {} in {} extent(s): {}{}",
                bytes(c.data_in_use),
                c.extents.len(),
                ext.join(" "),
                if c.extents.len() > 16 { " …" } else { "" }
            )?;
        }
        Ok(())
    }

    fn write_findings(&self, o: &mut String) -> std::fmt::Result {
        if self.findings.is_empty() {
            return writeln!(o, "findings: none");
        }
        writeln!(o, "findings: {}", self.findings.len())?;
        for f in &self.findings {
            let sev = match f.severity {
                Severity::Note => "note",
                Severity::Warning => "warning",
                Severity::Error => "ERROR",
            };
            let at = match f.offset {
                Some(off) => format!("{} (@ {off:#x})", f.at),
                None => f.at.clone(),
            };
            writeln!(o, "  {sev:<7} {at}: {}", f.what)?;
        }
        Ok(())
    }
}
