//! The layout picture: an SVG of the transport and of one channel segment, drawn from
//! the layout code (`layout::TABLES`, `chan`, `ctrl`, [`EntryLayout`],
//! [`TransportInfo`]), with the live pointers of a [`ChannelView`] drawn in.
//!
//! Areas differ by up to eight orders of magnitude (an 8-byte field, a 1 GiB segment
//! area), so box heights are **log-scaled** by size (the scale is printed); field
//! zooms use one row per field. Positions *inside* a ring or the data area (pointers,
//! extents) are linear in that box.
//!
//! Every box and row carries `data-name` and `data-offset` attributes (hex) and a
//! text `NAME @ 0xOFF`, so a test can check the picture against the layout
//! (`host/tests/inspect.rs`). Transport boxes have region offsets; segment boxes,
//! control-page fields and lines have offsets from the segment's start; entry fields
//! from the entry's start.

use std::fmt::Write;

use super::{ChannelView, Report};
use crate::layout::*;

const W: u32 = 1180;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn human(n: u64) -> String {
    const K: u64 = 1024;
    if n >= K * K * K {
        format!("{:.1} GiB", n as f64 / (K * K * K) as f64)
    } else if n >= K * K {
        format!("{:.1} MiB", n as f64 / (K * K) as f64)
    } else if n >= K {
        format!("{:.1} KiB", n as f64 / K as f64)
    } else {
        format!("{n} B")
    }
}

/// Log-scaled box height for `size` bytes.
fn height(size: u64) -> f64 {
    22.0 + 9.0 * ((size as f64 / 4096.0) + 1.0).log2()
}

struct Svg {
    out: String,
}

impl Svg {
    #[allow(clippy::too_many_arguments)]
    fn boxed(
        &mut self,
        x: f64,
        y: f64,
        w: f64,
        h: f64,
        name: &str,
        offset: u64,
        size: u64,
        fill: &str,
        label: &str,
    ) {
        let _ = writeln!(
            self.out,
            r##"<g data-name="{n}" data-offset="{offset:#x}" data-size="{size}"><rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="{fill}" stroke="#333"/><text x="{tx:.1}" y="{ty:.1}" font-size="11">{l} @ {offset:#x} ({sz})</text></g>"##,
            n = esc(name),
            tx = x + 5.0,
            ty = y + h / 2.0 + 4.0,
            l = esc(label),
            sz = human(size),
        );
    }
    fn text(&mut self, x: f64, y: f64, size: u32, s: &str) {
        let _ = writeln!(
            self.out,
            r#"<text x="{x:.1}" y="{y:.1}" font-size="{size}">{}</text>"#,
            esc(s)
        );
    }
    /// Rows of a layout table: one per field.
    fn rows(&mut self, x: f64, y: f64, w: f64, t: &Table, base: u64, prefix: &str) -> f64 {
        let mut y = y;
        for f in t.fields {
            let name = format!("{}.{}", t.name, f.name);
            let _ = writeln!(
                self.out,
                r##"<g data-name="{name}" data-offset="{o:#x}" data-size="{s}"><rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="15" fill="#fff" stroke="#999"/><text x="{tx:.1}" y="{ty:.1}" font-size="10">{prefix}{fname} @ {o:#x} ({s} B)</text></g>"##,
                o = base + f.offset as u64,
                s = f.size,
                tx = x + 4.0,
                ty = y + 11.0,
                fname = f.name,
            );
            y += 15.0;
        }
        y
    }
}

fn table(name: &str) -> Option<&'static Table> {
    TABLES.iter().find(|t| t.name == name)
}

/// The SE and CE tables of an entry layout.
fn entry_tables(el: &EntryLayout) -> (&'static Table, &'static Table) {
    let (se, ce) = match (el.se_crc, el.data_crc) {
        (false, false) => (se_plain::TABLE, ce_plain::TABLE),
        (true, false) => (se_crc::TABLE, ce_crc::TABLE),
        (false, true) => (se_data_crc::TABLE, ce_data_crc::TABLE),
        (true, true) => (se_both_crc::TABLE, ce_both_crc::TABLE),
    };
    (
        table(se.name).unwrap_or(&se_plain::TABLE),
        table(ce.name).unwrap_or(&ce_plain::TABLE),
    )
}

/// The transport a layout-only picture shows: the golden image's 1022 MiB region
/// formatted for the non-coherent mode.
pub fn example_info() -> TransportInfo {
    let flags = tflags::MULTIHOST | tflags::CHANNEL_CRC | tflags::CHANNEL_DATA_CRC;
    TransportInfo::for_size(1022 << 20, flags).unwrap_or(TransportInfo {
        magic: TRANSPORT_MAGIC,
        version: TRANSPORT_VERSION,
        flags,
        host_area_off: HOST_AREA_OFF,
        host_info_size: PAGE as u32,
        host_num: 1,
        backend_area_off: HOST_AREA_OFF + OBJ_SLOT,
        backend_info_size: PAGE as u32,
        backend_num: 1,
        blkdev_area_off: HOST_AREA_OFF + 2 * OBJ_SLOT,
        blkdev_info_size: PAGE as u32,
        blkdev_num: 1,
        segment_area_off: HOST_AREA_OFF + 3 * OBJ_SLOT,
        segment_size: SEGMENT_SIZE as u32,
        segment_num: 1,
    })
}

impl Report {
    /// The transport info, when it was valid.
    pub fn info(&self) -> Option<TransportInfo> {
        let t = self.transport.as_ref().filter(|t| t.invalid.is_none())?;
        Some(TransportInfo {
            magic: t.magic,
            version: t.version,
            flags: t.flags,
            host_area_off: t.host_area_off,
            host_info_size: PAGE as u32,
            host_num: t.host_num,
            backend_area_off: t.backend_area_off,
            backend_info_size: PAGE as u32,
            backend_num: t.backend_num,
            blkdev_area_off: t.blkdev_area_off,
            blkdev_info_size: PAGE as u32,
            blkdev_num: t.blkdev_num,
            segment_area_off: t.segment_area_off,
            segment_size: t.segment_size,
            segment_num: t.segment_num,
        })
    }

    /// The picture of this report's transport and of channel `segment` (default: the
    /// first channel in use), live pointers drawn in. An invalid transport gives the
    /// layout-only picture.
    pub fn svg(&self, segment: Option<u32>) -> String {
        let Some(info) = self.info() else {
            return layout_svg(&example_info(), None, None);
        };
        let seg = self
            .segments
            .iter()
            .filter(|s| s.channel.is_some())
            .find(|s| segment.is_none_or(|id| s.id == id));
        layout_svg(
            &info,
            seg.map(|s| s.id),
            seg.and_then(|s| s.channel.as_ref()),
        )
    }
}

/// Draw `info` and one channel segment (`seg`, whose live state `live` is drawn in).
pub fn layout_svg(info: &TransportInfo, seg: Option<u32>, live: Option<&ChannelView>) -> String {
    let el = info.entry_layout();
    let mut s = Svg { out: String::new() };
    // ---- transport column
    let (x0, w0) = (20.0, 330.0);
    s.text(
        x0,
        30.0,
        15,
        "Transport (region offsets; box height log-scaled by size)",
    );
    let areas: [(&str, String, u64, u64); 6] = [
        ("tinfo", "transport info".into(), 0, tinfo::SIZE as u64),
        (
            "reserved",
            "reserved".into(),
            tinfo::SIZE as u64,
            info.host_area_off - tinfo::SIZE as u64,
        ),
        (
            "HOST_AREA_OFF",
            format!("host area x{}", info.host_num),
            info.host_area_off,
            OBJ_SLOT * info.host_num as u64,
        ),
        (
            "BACKEND_AREA_OFF",
            format!("backend area x{}", info.backend_num),
            info.backend_area_off,
            OBJ_SLOT * info.backend_num as u64,
        ),
        (
            "BLKDEV_AREA_OFF",
            format!("blkdev area x{}", info.blkdev_num),
            info.blkdev_area_off,
            OBJ_SLOT * info.blkdev_num as u64,
        ),
        (
            "SEGMENT_AREA_OFF",
            format!("segment area x{} of 16 MiB", info.segment_num),
            info.segment_area_off,
            SEGMENT_SIZE * info.segment_num as u64,
        ),
    ];
    let mut y = 45.0;
    for (i, (name, label, off, size)) in areas.iter().enumerate() {
        let h = height(*size);
        let fill = [
            "#fde2b8", "#eee", "#cfe8ff", "#d7f5d0", "#f5d0e8", "#e4dcff",
        ][i];
        s.boxed(x0, y, w0, h, name, *off, *size, fill, label);
        y += h;
    }
    s.text(x0, y + 22.0, 12, "tinfo (80 B, one row per field)");
    let yt = s.rows(x0, y + 30.0, w0, &tinfo::TABLE, 0, "");
    s.text(
        x0,
        yt + 22.0,
        12,
        "Each record slot: 2 copies x 4 KiB (meta header first)",
    );
    let ym = s.rows(x0, yt + 30.0, w0, &meta::TABLE, 0, "");

    // ---- segment column
    let (x1, w1) = (400.0, 360.0);
    let title = match seg {
        Some(id) => format!(
            "Channel segment {id} @ {:#x} (offsets from its start)",
            info.segment_off(id)
        ),
        None => "Channel segment (offsets from its start)".to_string(),
    };
    s.text(x1, 30.0, 15, &title);
    let submr_off = el.submr_off();
    let pieces: [(&str, &str, u64, u64, &str); 8] = [
        (
            "SEG_INFO0",
            "segment info copy 0",
            chan::SEG_INFO0,
            PAGE as u64,
            "#eee",
        ),
        (
            "SEG_INFO1",
            "segment info copy 1",
            chan::SEG_INFO1,
            PAGE as u64,
            "#eee",
        ),
        (
            "CTRL_OFF",
            "control page",
            chan::CTRL_OFF,
            PAGE as u64,
            "#fde2b8",
        ),
        (
            "COMPR_OFF",
            "CE ring (1024 CEs)",
            chan::COMPR_OFF,
            el.compr_size(),
            "#d7f5d0",
        ),
        (
            "compr_end",
            "unused",
            chan::COMPR_OFF + el.compr_size(),
            submr_off - chan::COMPR_OFF - el.compr_size(),
            "#fafafa",
        ),
        (
            "SUBMR_OFF",
            "SE ring",
            submr_off,
            el.submr_size(),
            "#cfe8ff",
        ),
        (
            "submr_end",
            "unused",
            submr_off + el.submr_size(),
            chan::DATA_OFF - submr_off - el.submr_size(),
            "#fafafa",
        ),
        (
            "DATA_OFF",
            "data area",
            chan::DATA_OFF,
            chan::DATA_SIZE,
            "#f5d0e8",
        ),
    ];
    let mut y = 45.0;
    let mut spans = [(0.0, 0.0); 8];
    for (i, (name, label, off, size, fill)) in pieces.iter().enumerate() {
        let h = if *size < 4096 { 18.0 } else { height(*size) };
        s.boxed(x1, y, w1, h, name, *off, *size, fill, label);
        spans[i] = (y, h);
        y += h;
    }
    let yseg = y;
    if let Some(c) = live {
        let mark = |s: &mut Svg, span: (f64, f64), ring: u64, pos: u32, name: &str, left: bool| {
            let py = span.0 + span.1 * (pos as f64 / ring.max(1) as f64);
            let (xa, xb, tx, anchor) = if left {
                (x1 - 30.0, x1, x1 - 32.0, "end")
            } else {
                (x1 + w1, x1 + w1 + 30.0, x1 + w1 + 32.0, "start")
            };
            let _ = writeln!(
                s.out,
                r##"<g data-pointer="{name}" data-pos="{pos:#x}"><line x1="{xa:.1}" y1="{py:.1}" x2="{xb:.1}" y2="{py:.1}" stroke="#c00" stroke-width="2"/><text x="{tx:.1}" y="{ty:.1}" font-size="10" fill="#c00" text-anchor="{anchor}">{name} {pos:#x}</text></g>"##,
                ty = py + 3.0
            );
        };
        let p = &c.pointers;
        mark(
            &mut s,
            spans[5],
            el.submr_size(),
            p.submr_head.pos,
            "submr_head",
            false,
        );
        mark(
            &mut s,
            spans[5],
            el.submr_size(),
            p.submr_tail.pos,
            "submr_tail",
            true,
        );
        mark(
            &mut s,
            spans[3],
            el.compr_size(),
            p.compr_head.pos,
            "compr_head",
            false,
        );
        mark(
            &mut s,
            spans[3],
            el.compr_size(),
            p.compr_tail.pos,
            "compr_tail",
            true,
        );
        let (dy, dh) = spans[7];
        for e in &c.extents {
            for &(off, len) in &e.ranges {
                let rel = off.saturating_sub(c.geom.data) as f64 / chan::DATA_SIZE as f64;
                let hh = (len as f64 / chan::DATA_SIZE as f64 * dh).max(1.5);
                let _ = writeln!(
                    s.out,
                    r##"<rect data-extent="{:#x}" x="{:.1}" y="{:.1}" width="40" height="{hh:.1}" fill="#c00" opacity="0.6"/>"##,
                    e.req_tid,
                    x1 + w1 - 45.0,
                    dy + rel * dh
                );
            }
        }
        s.text(
            x1,
            yseg + 18.0,
            11,
            &format!(
                "live: mode {}, {} SE(s) in flight, {} CE(s) not consumed, {} of data in use",
                c.mode,
                c.ses.len(),
                c.ces.len(),
                human(c.data_in_use)
            ),
        );
    }
    // Entry formats under the segment.
    let (se_t, ce_t) = entry_tables(&el);
    s.text(
        x1,
        yseg + 44.0,
        12,
        &format!(
            "SE `{}` ({} B) and CE `{}` ({} B): offsets in the entry",
            se_t.name, se_t.size, ce_t.name, ce_t.size
        ),
    );
    let ye = s.rows(x1, yseg + 52.0, w1 / 2.0 - 5.0, se_t, 0, "");
    let yc = s.rows(
        x1 + w1 / 2.0 + 5.0,
        yseg + 52.0,
        w1 / 2.0 - 5.0,
        ce_t,
        0,
        "",
    );

    // ---- control page zoom
    let (x2, w2) = (820.0, 340.0);
    s.text(x2, 30.0, 15, "Control page (one row per field)");
    let ctrl_base = chan::CTRL_OFF;
    let mut y = s.rows(x2, 45.0, w2, &ctrl::TABLE, ctrl_base, "");
    for (line, t, owner) in [
        (ctrl::NC_HOST_LINE, &nc_host::TABLE, "host"),
        (ctrl::NC_DEV_LINE, &nc_dev::TABLE, "device"),
        (ctrl::DUR_DEV_LINE, &dur_dev::TABLE, "device"),
        (ctrl::DUR_HOST_LINE, &dur_host::TABLE, "host"),
    ] {
        y += 8.0;
        let name = format!("line.{}", t.name);
        s.boxed(
            x2,
            y,
            w2,
            18.0,
            &name,
            ctrl_base + line,
            LINE as u64,
            if owner == "host" {
                "#cfe8ff"
            } else {
                "#d7f5d0"
            },
            &format!("{} line ({owner} only)", t.name),
        );
        y = s.rows(x2 + 12.0, y + 18.0, w2 - 12.0, t, ctrl_base + line, "");
    }
    if let Some(c) = live {
        y += 20.0;
        let lines = [
            format!(
                "ctrl: submr_head {:#x} submr_tail {:#x} compr_head {:#x} compr_tail {:#x}",
                c.ctrl.submr_head, c.ctrl.submr_tail, c.ctrl.compr_head, c.ctrl.compr_tail
            ),
            match &c.nc_host.value {
                Some(h) => format!(
                    "nc_host: epoch {} base_tid {:#x} tail_tid {:#x}",
                    h.epoch, h.base_tid, h.tail_tid
                ),
                None => format!("nc_host: {}", c.nc_host.status),
            },
            match &c.dur_dev.value {
                Some(d) => format!(
                    "dur_dev: gen {} durable_tid {:#x}",
                    d.incarnation, d.durable_tid
                ),
                None => format!("dur_dev: {}", c.dur_dev.status),
            },
        ];
        for l in lines {
            s.text(x2, y, 10, &l);
            y += 14.0;
        }
    }
    let height = ym.max(ye).max(yc).max(y) + 30.0;
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height:.0}" viewBox="0 0 {W} {height:.0}" font-family="monospace">
<!-- Generated by device::inspect::svg from device::layout; do not edit. -->
<rect width="100%" height="100%" fill="#fff"/>
{}</svg>
"##,
        s.out
    )
}
