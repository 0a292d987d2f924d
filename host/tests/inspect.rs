//! The shared-memory inspector against a live pair: both engines run natively on an
//! mmap'd file, stop mid-flight, and the inspector (reading the file read-only) must
//! show exactly the engines' own state; then copies of the file are corrupted one way
//! at a time and the report must name each corruption. Random bytes and truncated
//! files must give findings, never a panic.

use device::backend::{Backend, BackendConfig};
use device::channel::HostLine;
use device::inspect::{self, Report, Severity};
use device::layout::*;
use device::native::{HeapMem, MmapMem, VecMedia};
use device::rng::SplitMix64;
use device::shm::{SharedMem, Shm};
use device::trace::NoTrace;
use device::transport::{Transport, format_flags};
use host::engine::{Host, HostConfig, Request};

const T0: u64 = 1_700_000_000_000_000_000;
const DISK: usize = 8 << 20;

/// What the engines know about queue 0 when they are stopped mid-flight.
struct Stopped {
    bytes: Vec<u8>,
    report: Report,
    seg: u32,
    tids_in_flight: Vec<u64>,
    submitted: u64,
    completed: u64,
    watermark: u64,
    incarnation: u32,
    backend_channels: Vec<u32>,
    ce_pending: usize,
}

fn run_pair(nc: bool) -> Stopped {
    // One directory per call: tests run in parallel and several start a pair.
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("cbd-inspect-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("transport");
    let _ = std::fs::remove_file(&path);
    let mem = MmapMem::create(&path, TransportInfo::region_for(3)).unwrap();
    let shm = Shm::new(&mem, &NoTrace);
    Transport::format(shm, format_flags(nc), false, T0).unwrap();
    let mut scratch = vec![0u8; chan::MAX_IO as usize];
    let cfg = BackendConfig {
        n_handlers: 2,
        noncoherent: nc,
        batch: 2,
        ..BackendConfig::default()
    };
    let mut backend = Backend::start(shm, cfg, VecMedia::new(DISK), &mut scratch, T0).unwrap();
    let backend_channels: Vec<u32> = backend.channel_segments().collect();
    let host = Host::register(
        shm,
        HostConfig {
            hostname: "hostA",
            noncoherent: nc,
            ..HostConfig::default()
        },
        T0,
    )
    .unwrap();
    let bid = host.find_backend(T0).unwrap();
    let mut dev = host.dev_start(bid, 2, T0).unwrap();
    for _ in 0..100 {
        backend.poll(T0).unwrap();
        if dev.poll_ready(T0).unwrap() {
            break;
        }
    }
    assert!(dev.poll_ready(T0).unwrap());
    let mut buf = vec![0u8; chan::MAX_IO as usize];
    let q = &mut dev.queues[0];
    // Two writes and a FLUSH, all completed: the watermark moves.
    let w = |i: u64| Request {
        op: op::WRITE,
        offset: i * 4096,
        len: 4096,
    };
    let payload = vec![0xA5u8; 4096];
    for i in 0..2 {
        q.submit(w(i), &payload).unwrap();
    }
    q.submit(
        Request {
            op: op::FLUSH,
            offset: 0,
            len: 0,
        },
        &[],
    )
    .unwrap();
    let mut done = 0;
    for _ in 0..100 {
        backend.poll(T0).unwrap();
        while q.poll_at(&mut buf, T0).unwrap().is_some() {
            done += 1;
        }
        if done == 3 {
            break;
        }
    }
    assert_eq!(done, 3);
    q.poll_durable(T0).unwrap();
    // Mid-flight: six more submitted, the backend handles two (batch), the host
    // consumes one completion.
    let mut tids = Vec::new();
    for i in 0..6 {
        let r = if i % 2 == 0 {
            w(10 + i)
        } else {
            Request {
                op: op::READ,
                offset: i * 4096,
                len: 8192,
            }
        };
        let p: &[u8] = if r.op == op::WRITE { &payload } else { &[] };
        tids.push(q.submit(r, p).unwrap());
    }
    backend.poll(T0).unwrap();
    assert!(q.poll_at(&mut buf, T0).unwrap().is_some());
    let q = &dev.queues[0];
    let seg = backend_channels[0];
    let report = inspect::inspect_file(&path, T0 + 1_000_000_000).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    // `CBD_INSPECT_KEEP=DIR` keeps the file (docs/inspect.md's sample output).
    if let Some(keep) = std::env::var_os("CBD_INSPECT_KEEP") {
        let name = if nc { "noncoherent.raw" } else { "v3.raw" };
        std::fs::copy(&path, std::path::Path::new(&keep).join(name)).unwrap();
    }
    std::fs::remove_dir_all(&dir).ok();
    Stopped {
        bytes,
        report,
        seg,
        tids_in_flight: tids[1..].to_vec(),
        submitted: q.stats.submitted,
        completed: q.stats.completed,
        watermark: q.tokens.watermark,
        incarnation: q.tokens.incarnation,
        backend_channels,
        ce_pending: 1,
    }
}

fn errors(r: &Report) -> Vec<String> {
    r.findings_at_least(Severity::Warning)
        .map(|f| format!("{}: {}", f.at, f.what))
        .collect()
}

fn has(r: &Report, at: &str, what: &str) -> bool {
    r.findings
        .iter()
        .any(|f| f.at.contains(at) && f.what.contains(what))
}

fn check_live(s: &Stopped, nc: bool) {
    let r = &s.report;
    assert!(errors(r).is_empty(), "{}", r.text());
    let t = r.transport.as_ref().unwrap();
    assert_eq!((t.magic, t.invalid), (TRANSPORT_MAGIC, None));
    let names: Vec<_> = r
        .hosts
        .iter()
        .map(|h| h.rec.as_ref().unwrap().hostname.clone())
        .collect();
    assert_eq!(names, ["cbdfw", "hostA"], "{}", r.text());
    assert!(r.hosts.iter().all(|h| h.alive == Some(true)));
    assert_eq!(r.backends.len(), 1);
    let b = r.backends[0].rec.as_ref().unwrap();
    assert_eq!(b.handler_channels, s.backend_channels);
    assert_eq!(b.dev_size_sectors, DISK as u64 / SECTOR);
    assert_eq!(r.blkdevs.len(), 1);
    assert_eq!(r.blkdevs[0].rec.as_ref().unwrap().backend_id, 0);
    let seg = r.segments.iter().find(|x| x.id == s.seg).unwrap();
    assert_eq!(seg.listed_by, [0]);
    assert_eq!(seg.blkdevs, [0]);
    let c = seg.channel.as_ref().unwrap();
    assert_eq!(c.mode, if nc { "noncoherent" } else { "v3" });
    let p = &c.pointers;
    // Since the RESET of dev-start, nothing wrapped: indices count entries.
    assert_eq!(p.submr_head.index as u64, s.submitted, "{}", r.text());
    assert_eq!(
        p.submr_tail.index as u64,
        s.submitted - s.tids_in_flight.len() as u64
    );
    assert_eq!(p.compr_tail.index as u64, s.completed);
    assert_eq!(p.compr_head.index as u64, s.completed + s.ce_pending as u64);
    let tids: Vec<u64> = c.ses.iter().map(|e| e.req_tid).collect();
    assert_eq!(tids, s.tids_in_flight);
    let status: Vec<&str> = c.ses.iter().map(|e| e.status).collect();
    assert_eq!(
        status,
        ["completed", "waiting", "waiting", "waiting", "waiting"]
    );
    assert_eq!(c.ces.len(), s.ce_pending);
    assert_eq!(c.ces[0].req_tid, s.tids_in_flight[0]);
    // The SEs in flight (2 writes of 4 KiB, 3 reads of 8 KiB) hold the data area.
    assert_eq!(c.data_in_use, 2 * 4096 + 3 * 8192);
    assert_eq!(c.extents.len(), 5);
    let d = c.dur_dev.value.as_ref().expect("durability line");
    assert!(s.watermark > 0);
    assert_eq!(d.durable_tid, s.watermark);
    assert_eq!(d.incarnation, s.incarnation);
    assert_eq!(c.dur_host.value.as_ref().unwrap().power_window_us, 0);
    if nc {
        let h = c.nc_host.value.as_ref().unwrap();
        assert_eq!(h.base_tid, (h.epoch as u64) << 32);
        assert_eq!(h.tail_tid, s.tids_in_flight[0]);
        assert_eq!(c.nc_dev.value.as_ref().unwrap().ack_epoch, h.epoch);
    } else {
        assert_eq!(c.nc_host.status, "zero");
    }
    // The other channel is idle and free segments are only counted.
    assert_eq!(r.segments.len(), 2);
    assert_eq!(r.free[3], 1);
    // JSON carries the same fields.
    let j: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    let js = j["segments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == s.seg)
        .unwrap();
    assert_eq!(
        js["channel"]["pointers"]["submr_head"]["index"],
        s.submitted
    );
    assert_eq!(
        js["channel"]["dur_dev"]["value"]["durable_tid"],
        s.watermark
    );
}

#[test]
fn a_live_v3_pair_reads_as_its_engines_state() {
    check_live(&run_pair(false), false);
}

#[test]
fn a_live_noncoherent_pair_reads_as_its_engines_state() {
    check_live(&run_pair(true), true);
}

fn reinspect(bytes: &[u8], now: u64) -> Report {
    let mem = HeapMem::from_bytes(bytes);
    inspect::inspect(Shm::new(&mem, &NoTrace), now)
}

fn corrupt(nc: bool) {
    let s = run_pair(nc);
    let now = T0 + 1_000_000_000;
    let clean = reinspect(&s.bytes, now);
    assert!(errors(&clean).is_empty(), "{}", clean.text());
    let seg = clean.segments.iter().find(|x| x.id == s.seg).unwrap();
    let c = seg.channel.as_ref().unwrap();

    // 1. A flipped CRC byte in the newest copy of host 1's record.
    let h = &clean.hosts[1];
    let l = h.latest.unwrap();
    let mut b = s.bytes.clone();
    b[h.copies[l].offset as usize] ^= 0x40;
    let r = reinspect(&b, now);
    assert!(
        has(&r, &format!("host 1 copy {l}"), "bad CRC"),
        "{}",
        r.text()
    );

    // 2. A ring pointer out of range (where this mode keeps it).
    let mut b = s.bytes.clone();
    let bad = c.geom.submr_size as u32 + 8;
    if nc {
        let mut hl = HostLine::decode(&b[c.nc_host.offset as usize..][..nc_host::SIZE]).unwrap();
        hl.submr_head = bad;
        b[c.nc_host.offset as usize..][..nc_host::SIZE].copy_from_slice(&hl.encode());
    } else {
        let off = (c.ctrl.offset + ctrl::SUBMR_HEAD) as usize;
        b[off..off + 4].copy_from_slice(&bad.to_le_bytes());
    }
    let r = reinspect(&b, now);
    let from = if nc {
        "nc_host.SUBMR_HEAD"
    } else {
        "ctrl.SUBMR_HEAD"
    };
    assert!(
        has(&r, &format!("segment {} {from}", s.seg), "out of range"),
        "{}",
        r.text()
    );

    // 3. An aged heartbeat: the backend's record rewritten 60 s old.
    let mem = HeapMem::from_bytes(&s.bytes);
    let tp = Transport::open(Shm::new(&mem, &NoTrace), false).unwrap();
    let mut rec = tp.backend(0).unwrap().unwrap().rec;
    rec.alive_ts = now - 60_000_000_000;
    tp.write_backend(0, &rec).unwrap();
    let r = reinspect(&mem.to_vec(), now);
    assert!(has(&r, "backend 0", "running but dead"), "{}", r.text());
    assert!(has(&r, "blkdev 0", "backend 0 is not running or dead"));
    // The same from the clock: everything is dead a minute later.
    let r = reinspect(&s.bytes, now + 60_000_000_000);
    assert!(has(&r, "host 1", "running but dead"), "{}", r.text());

    // 4. A segment listed by two backends.
    let mut other = tp.backend(0).unwrap().unwrap().rec;
    other.path[0] ^= 1;
    tp.write_backend(1, &other).unwrap();
    let r = reinspect(&mem.to_vec(), now);
    assert!(
        has(&r, &format!("segment {}", s.seg), "listed by 2 backends"),
        "{}",
        r.text()
    );

    // 5. A torn SE (bad entry CRC) in flight: the CRC formats only.
    if nc {
        let e = &c.ses[2];
        let mut b = s.bytes.clone();
        b[e.offset as usize + 30] ^= 1;
        let r = reinspect(&b, now);
        assert!(
            has(&r, &format!("SE @ {:#x}", e.pos), "entry CRC"),
            "{}",
            r.text()
        );
        // 6. A payload byte of a waiting WRITE (the SE itself is intact).
        let e = c.ses.iter().find(|e| e.op == "write").unwrap();
        assert_eq!(e.payload_crc_ok, Some(true));
        let mut b = s.bytes.clone();
        b[(c.geom.data + e.data_off as u64 + 100) as usize] ^= 1;
        let r = reinspect(&b, now);
        assert!(
            has(
                &r,
                &format!("SE @ {:#x}", e.pos),
                "does not match its data_crc"
            ),
            "{}",
            r.text()
        );
    }
}

#[test]
fn corruptions_of_a_v3_pair_are_named() {
    corrupt(false);
}

#[test]
fn corruptions_of_a_noncoherent_pair_are_named() {
    corrupt(true);
}

#[test]
fn random_bytes_and_truncated_files_give_findings_not_panics() {
    let mut rng = SplitMix64::new(0x1A5EC7);
    let full = TransportInfo::region_for(2) as usize;
    // Pure garbage of many sizes.
    for len in [0usize, 1, 79, 80, 4096, 8192, 1 << 20] {
        let mut b = vec![0u8; len];
        rng.fill(&mut b);
        let r = reinspect(&b, T0);
        assert!(r.worst() == Some(Severity::Error) || r.transport.is_some());
    }
    // A valid transport info over garbage records, control pages and rings: the
    // walk goes deep and every value it meets is hostile.
    let base = {
        let mem = HeapMem::new(full);
        Transport::format(Shm::new(&mem, &NoTrace), format_flags(true), false, T0).unwrap();
        mem.to_vec()
    };
    let info = TransportInfo::decode(&base).unwrap();
    for round in 0..40 {
        let mut b = base.clone();
        let n = 1 + rng.below(64) as usize;
        for _ in 0..n {
            let off = if round % 2 == 0 {
                // Records and segment heads (copies and control page).
                let seg = info.segment_off(rng.below(info.segment_num as u64) as u32) as usize;
                match rng.below(3) {
                    0 => info.host_area_off as usize + rng.below(0x40000) as usize,
                    _ => seg + rng.below(0x4000) as usize,
                }
            } else {
                rng.below(full as u64) as usize
            };
            let len = (1 + rng.below(4096) as usize).min(full - off.min(full));
            rng.fill(&mut b[off.min(full)..off.min(full) + len]);
        }
        // Keep the transport info valid on half the rounds.
        if round % 4 != 3 {
            b[..tinfo::SIZE].copy_from_slice(&base[..tinfo::SIZE]);
        }
        let r = reinspect(&b, T0);
        let _ = r.text();
        let _ = r.to_json();
    }
    // Channels whose every pointer, line and entry is random, under a segment
    // record that says "channel of backend 0".
    for _ in 0..40 {
        let mem = HeapMem::from_bytes(&base);
        let tp = Transport::open(Shm::new(&mem, &NoTrace), false).unwrap();
        let mut be = BackendInfo {
            state: STATE_RUNNING,
            n_handlers: rng.below(200) as u32,
            ..BackendInfo::default()
        };
        for h in be.handler_channels.iter_mut() {
            *h = rng.below(4) as u32;
        }
        tp.write_backend(0, &be).unwrap();
        let seg = SegmentInfo {
            seg_type: SEG_TYPE_CHANNEL,
            state: STATE_RUNNING,
            ..SegmentInfo::default()
        };
        tp.write_segment(0, &seg).unwrap();
        let ctrl_off = info.segment_off(0) + chan::CTRL_OFF;
        let mut junk = vec![0u8; 4096 * 8];
        rng.fill(&mut junk);
        mem.write(ctrl_off, &junk);
        // Plausible pointers sometimes, so the ring walks run over junk entries.
        if rng.chance(500) {
            for p in [ctrl::SUBMR_HEAD, ctrl::SUBMR_TAIL, ctrl::COMPR_HEAD] {
                mem.store_u32(ctrl_off + p, 48 * rng.below(300) as u32);
            }
            mem.store_u32(ctrl_off + ctrl::COMPR_TAIL, 24 * rng.below(1024) as u32);
        }
        let r = reinspect(&mem.to_vec(), T0);
        assert!(!r.segments.is_empty());
        let _ = r.text();
    }
    // Truncated copies of a live file, read through FileMem.
    let s = run_pair(true);
    let dir = std::env::temp_dir().join(format!("cbd-inspect-trunc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for cut in [
        0,
        40,
        tinfo::SIZE,
        HOST_AREA_OFF as usize + 100,
        s.bytes.len() / 2,
        s.bytes.len() - 1,
    ] {
        let p = dir.join("cut");
        std::fs::write(&p, &s.bytes[..cut]).unwrap();
        let r = inspect::inspect_file(&p, T0).unwrap();
        assert_eq!(r.worst(), Some(Severity::Error), "cut at {cut}");
        assert!(r.segments.is_empty(), "cut at {cut}: {}", r.text());
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// `(data-name, data-offset, the group's text)` of every labelled box of a picture.
fn labels(svg: &str) -> Vec<(String, u64, String)> {
    let mut out = Vec::new();
    let mut rest = svg;
    while let Some(i) = rest.find("data-name=\"") {
        rest = &rest[i + 11..];
        let name = &rest[..rest.find('"').unwrap()];
        let o = rest
            .find("data-offset=\"0x")
            .expect("an offset after the name")
            + 15;
        let hex = &rest[o..o + rest[o..].find('"').unwrap()];
        let end = rest.find("</g>").unwrap();
        out.push((
            name.to_string(),
            u64::from_str_radix(hex, 16).unwrap(),
            rest[..end].to_string(),
        ));
    }
    out
}

fn expected_offsets(info: &TransportInfo) -> std::collections::BTreeMap<String, u64> {
    let el = info.entry_layout();
    let mut m = std::collections::BTreeMap::new();
    for (n, o) in [
        ("tinfo", 0),
        ("HOST_AREA_OFF", info.host_area_off),
        ("BACKEND_AREA_OFF", info.backend_area_off),
        ("BLKDEV_AREA_OFF", info.blkdev_area_off),
        ("SEGMENT_AREA_OFF", info.segment_area_off),
        ("SEG_INFO0", chan::SEG_INFO0),
        ("SEG_INFO1", chan::SEG_INFO1),
        ("CTRL_OFF", chan::CTRL_OFF),
        ("COMPR_OFF", chan::COMPR_OFF),
        ("SUBMR_OFF", el.submr_off()),
        ("DATA_OFF", chan::DATA_OFF),
        ("line.nc_host", chan::CTRL_OFF + ctrl::NC_HOST_LINE),
        ("line.nc_dev", chan::CTRL_OFF + ctrl::NC_DEV_LINE),
        ("line.dur_dev", chan::CTRL_OFF + ctrl::DUR_DEV_LINE),
        ("line.dur_host", chan::CTRL_OFF + ctrl::DUR_HOST_LINE),
    ] {
        m.insert(n.to_string(), o);
    }
    let se = if el.se_crc && el.data_crc {
        "se_both_crc"
    } else {
        "se_plain"
    };
    let ce = if el.se_crc && el.data_crc {
        "ce_both_crc"
    } else {
        "ce_plain"
    };
    for t in TABLES {
        let base = match t.name {
            "tinfo" | "meta" => 0,
            "ctrl" => chan::CTRL_OFF,
            "nc_host" => chan::CTRL_OFF + ctrl::NC_HOST_LINE,
            "nc_dev" => chan::CTRL_OFF + ctrl::NC_DEV_LINE,
            "dur_dev" => chan::CTRL_OFF + ctrl::DUR_DEV_LINE,
            "dur_host" => chan::CTRL_OFF + ctrl::DUR_HOST_LINE,
            n if n == se || n == ce => 0,
            _ => continue,
        };
        for f in t.fields {
            m.insert(format!("{}.{}", t.name, f.name), base + f.offset as u64);
        }
    }
    m
}

#[test]
fn the_layout_picture_has_the_layouts_offsets_and_the_live_pointers() {
    let s = run_pair(true);
    let svg = s.report.svg(Some(s.seg));
    let got = labels(&svg);
    let want = expected_offsets(&s.report.info().unwrap());
    for (name, off) in &want {
        let l = got.iter().find(|l| &l.0 == name);
        let (_, o, text) = l.unwrap_or_else(|| panic!("{name} is not in the picture"));
        assert_eq!(o, off, "{name}: data-offset");
        assert!(text.contains(&format!("@ {off:#x}")), "{name}: {text}");
    }
    for (name, _, _) in &got {
        assert!(
            want.contains_key(name) || name == "reserved" || name.ends_with("_end"),
            "{name}: a box the test does not know"
        );
    }
    let c = s.report.segments.iter().find(|x| x.id == s.seg).unwrap();
    let p = &c.channel.as_ref().unwrap().pointers;
    for (name, pos) in [
        ("submr_head", p.submr_head.pos),
        ("submr_tail", p.submr_tail.pos),
        ("compr_head", p.compr_head.pos),
        ("compr_tail", p.compr_tail.pos),
    ] {
        let tag = format!("data-pointer=\"{name}\" data-pos=\"{pos:#x}\"");
        assert!(svg.contains(&tag), "{tag} missing");
    }
    assert_eq!(svg.matches("data-extent=").count(), 5);
}

/// `docs/img/layout.svg` is the layout-only picture as the code draws it today
/// (regenerate: `cargo run -- inspect --svg docs/img/layout.svg`).
#[test]
fn the_committed_layout_picture_is_current() {
    let info = inspect::svg::example_info();
    let svg = inspect::svg::layout_svg(&info, None, None);
    let want = expected_offsets(&info);
    for (name, off, _) in labels(&svg) {
        if let Some(w) = want.get(&name) {
            assert_eq!(off, *w, "{name}");
        }
    }
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/img/layout.svg");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == svg,
        "{path} is stale: run `cargo run -- inspect --svg docs/img/layout.svg`"
    );
}
