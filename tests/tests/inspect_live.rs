//! The shared-memory inspector on a *running* pair (docs/inspect.md): while fio writes
//! through cbd-host in the Linux VM (non-coherent mode, two channels), the test process
//! decodes the live /dev/shm file with `device::inspect` and checks what it reads
//! against the guest's own view — cbd-host's counters (`cbd-host stats 0`, printed by
//! `qemu/scripts/pair-inspect.sh` every 2 s), its queue count and disk size: the records
//! and who owns them, fresh and moving heartbeats, ring pointers in range and moving,
//! and requests completed no fewer than the host had counted (nor more than it had
//! received). Then a copy of the live file is corrupted twice and each corruption must
//! be named. A single report of a live file is not an atomic snapshot, so a finding may
//! come and go; one that persists across samples fails the test.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use device::channel::HostLine;
use device::inspect::{self, Report, Severity};
use device::layout::{chan, ctrl};
use qemu::Firmware;
use qemu::pair::{Live, PairSpec, run_pair_watched};
use qemu::status::KernelStatus;

const HOSTNAME: &str = "pairguest";
/// Samples to take (one per `INSPECT-STATS` line, 2 s apart; the load runs 40 s).
const SAMPLES: u32 = 8;

/// One look: what the guest had counted just before, and what the inspector read.
struct Sample {
    n: u32,
    stats: BTreeMap<String, u64>,
    report: Report,
}

fn stats_of(line: &str) -> BTreeMap<String, u64> {
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect()
}

/// The last console line containing `tag`, from `tag` on.
fn line_with(out: &str, tag: &str) -> Option<String> {
    out.lines()
        .rev()
        .find_map(|l| l.find(tag).map(|i| l[i..].trim().to_string()))
}

/// Requests the host has reclaimed on each channel in this epoch (non-coherent mode:
/// `tail_tid - base_tid` of its line), with the channel's segment id.
fn reclaimed(r: &Report) -> Vec<(u32, u64)> {
    r.segments
        .iter()
        .filter_map(|s| {
            let h = s.channel.as_ref()?.nc_host.value.as_ref()?;
            Some((s.id, h.tail_tid.saturating_sub(h.base_tid)))
        })
        .collect()
}

fn now() -> u64 {
    device::native::now_ns()
}

/// Check one sample against the guest's view; problems go to `bad`.
fn check_sample(s: &Sample, queues: u64, sectors: u64, bad: &mut Vec<String>) {
    let r = &s.report;
    let mut fail = |what: String| bad.push(format!("sample {}: {what}", s.n));
    if r.transport.as_ref().is_none_or(|t| t.invalid.is_some()) {
        fail(format!("transport not valid: {:?}", r.transport));
        return;
    }
    let host = |name: &str| {
        r.hosts
            .iter()
            .find(|h| h.rec.as_ref().is_some_and(|x| x.hostname == name))
    };
    let (Some(dev_host), Some(guest)) = (host("cbdfw"), host(HOSTNAME)) else {
        fail(format!(
            "hosts: want cbdfw and {HOSTNAME}, read {:?}",
            r.hosts.iter().map(|h| &h.rec).collect::<Vec<_>>()
        ));
        return;
    };
    let (Some(b), Some(d)) = (r.backends.first(), r.blkdevs.first()) else {
        fail("no backend or no blkdev record in use".into());
        return;
    };
    let (Some(brec), Some(drec)) = (&b.rec, &d.rec) else {
        fail("backend or blkdev record unreadable".into());
        return;
    };
    for (what, state, alive) in [
        (
            "host cbdfw",
            &dev_host.rec.as_ref().unwrap().state,
            dev_host.alive,
        ),
        (
            "host pairguest",
            &guest.rec.as_ref().unwrap().state,
            guest.alive,
        ),
        ("backend", &brec.state, b.alive),
        ("blkdev", &drec.state, d.alive),
    ] {
        if *state != "running" || alive != Some(true) {
            fail(format!("{what}: state {state}, alive {alive:?}"));
        }
    }
    if brec.host_id != dev_host.id {
        fail(format!(
            "backend's host {} is not cbdfw's {}",
            brec.host_id, dev_host.id
        ));
    }
    if (drec.host_id, drec.backend_id) != (guest.id, b.id) {
        fail(format!(
            "blkdev names host {} backend {}, want {} and {}",
            drec.host_id, drec.backend_id, guest.id, b.id
        ));
    }
    if brec.n_handlers as u64 != queues || brec.dev_size_sectors != sectors {
        fail(format!(
            "backend: {} channels of {} sectors, the guest sees {queues} queues of {sectors}",
            brec.n_handlers, brec.dev_size_sectors
        ));
    }
    if !drec.features.contains(&"noncoherent") {
        fail(format!("blkdev features {:?}", drec.features));
    }
    let chans: Vec<_> = r.segments.iter().filter(|x| x.channel.is_some()).collect();
    if chans.len() as u64 != queues {
        fail(format!("{} channels in use, want {queues}", chans.len()));
    }
    for seg in &chans {
        let c = seg.channel.as_ref().unwrap();
        if !brec.handler_channels.contains(&seg.id) || seg.blkdevs != [d.id] {
            fail(format!(
                "segment {}: listed by {:?}, blkdevs {:?}",
                seg.id, seg.listed_by, seg.blkdevs
            ));
        }
        if c.mode != "noncoherent" {
            fail(format!("segment {}: mode {}", seg.id, c.mode));
        }
        let p = &c.pointers;
        for q in [&p.submr_head, &p.submr_tail, &p.compr_head, &p.compr_tail] {
            if !q.ok {
                fail(format!(
                    "segment {}: {} {:#x} not legal",
                    seg.id, q.from, q.pos
                ));
            }
        }
    }
    // Completions: everything the guest had counted completed (tokens_completed: its
    // WRITEs completed) was reclaimed before this look.
    let done: u64 = reclaimed(r).iter().map(|x| x.1).sum();
    let completed = s.stats.get("tokens_completed").copied().unwrap_or(u64::MAX);
    if done < completed {
        fail(format!(
            "channels show {done} requests reclaimed, the host had counted {completed} writes completed"
        ));
    }
}

#[test]
fn live_inspect_during_load_matches_the_hosts_counters() {
    let name = "pair-inspect-ivshmem-noncoherent";
    let body = vmtests::guest_body(
        "pair-inspect",
        name,
        &format!("TOPO=ivshmem\nHOSTARGS='--noncoherent --hostname {HOSTNAME}'"),
    );
    let mut spec = PairSpec::new(name, "ivshmem", &body);
    spec.device_opts.push(("noncoherent".into(), "on".into()));
    let kernel = boot::image::kernel_image_for_tests(Firmware::Bios).expect("kernel image");

    let mut samples: Vec<Sample> = Vec::new();
    let mut guest_view = String::new();
    let mut copy_checks: Vec<String> = Vec::new();
    let mut shm_seen = PathBuf::new();
    let watch = |live: &mut Live<'_>| {
        shm_seen = live.shm.to_path_buf();
        if !live
            .linux
            .wait_for("INSPECT-GUEST ", Duration::from_secs(240))
        {
            return;
        }
        guest_view = line_with(&live.linux.output(), "INSPECT-GUEST ").unwrap_or_default();
        for n in 1..=SAMPLES {
            let tag = format!("INSPECT-STATS {n} ");
            if !live.linux.wait_for(&tag, Duration::from_secs(60)) {
                return;
            }
            let line = line_with(&live.linux.output(), &tag).unwrap_or_default();
            let report = match inspect::inspect_file(live.shm, now()) {
                Ok(r) => r,
                Err(e) => {
                    copy_checks.push(format!("sample {n}: {e}"));
                    return;
                }
            };
            samples.push(Sample {
                n,
                stats: stats_of(&line),
                report,
            });
            if n == 3 {
                copy_checks = corrupted_copies(live.shm);
            }
        }
    };
    let out = run_pair_watched(&spec, Some(&kernel), watch).unwrap_or_else(|e| panic!("{e}"));
    let dump = || {
        format!(
            "==== linux console ====\n{}\n==== device ====\n{}",
            out.linux.output,
            out.device.as_ref().map_or("", |d| d.output.as_str())
        )
    };
    assert!(
        out.guest_ok(name),
        "guest: {:?}\n{}",
        out.result_line(name),
        dump()
    );
    let dev = out.device.as_ref().expect("device VM");
    assert_eq!(dev.status, KernelStatus::Success, "{}", dump());
    assert_eq!(
        samples.len() as u32,
        SAMPLES,
        "took {} samples of {SAMPLES} (shared file {})\n{}",
        samples.len(),
        shm_seen.display(),
        dump()
    );

    let g = stats_of(&guest_view);
    let (queues, sectors) = (g["queues"], g["sectors"]);
    assert_eq!(queues, 2, "{guest_view}");
    let mut bad = Vec::new();
    for s in &samples {
        check_sample(s, queues, sectors, &mut bad);
    }
    // Nothing the next look's guest counters rule out: no more requests reclaimed than
    // the host had received (reads + writes; token flushes send no command) by then.
    for w in samples.windows(2) {
        let done: u64 = reclaimed(&w[0].report).iter().map(|x| x.1).sum();
        let received = w[1].stats["reads"] + w[1].stats["writes"];
        if done > received {
            bad.push(format!(
                "sample {}: {done} reclaimed, but by sample {} the host had received only {received}",
                w[0].n, w[1].n
            ));
        }
    }
    // Moving: heartbeats and the channels' pointers, between the first and the last look.
    let (first, last) = (&samples[0].report, &samples[samples.len() - 1].report);
    let ts = |r: &Report| {
        (
            r.hosts
                .iter()
                .map(|h| h.rec.as_ref().map(|x| x.alive_ts))
                .collect::<Vec<_>>(),
            r.backends
                .first()
                .and_then(|b| b.rec.as_ref().map(|x| x.alive_ts)),
            r.blkdevs
                .first()
                .and_then(|b| b.rec.as_ref().map(|x| x.alive_ts)),
        )
    };
    let (h0, b0, d0) = ts(first);
    let (h1, b1, d1) = ts(last);
    if h0.iter().zip(&h1).any(|(a, b)| b <= a) || b1 <= b0 || d1 <= d0 {
        bad.push(format!(
            "heartbeats did not move: hosts {h0:?} -> {h1:?}, backend {b0:?} -> {b1:?}, blkdev {d0:?} -> {d1:?}"
        ));
    }
    let (r0, r1) = (reclaimed(first), reclaimed(last));
    let moved: Vec<bool> = r0.iter().zip(&r1).map(|(a, b)| b.1 > a.1).collect();
    eprintln!("reclaimed per channel (segment, requests): first {r0:?}, last {r1:?}");
    if !moved.iter().any(|&m| m) {
        bad.push(format!("no channel moved: {r0:?} -> {r1:?}"));
    }
    // Findings: a live read may catch a line mid-write once, never twice in a row.
    for w in samples.windows(2) {
        for f in w[1].report.findings_at_least(Severity::Error) {
            if w[0]
                .report
                .findings_at_least(Severity::Error)
                .any(|e| e.at == f.at)
            {
                bad.push(format!("samples {} and {}: {f:?}", w[0].n, w[1].n));
            }
        }
    }
    for s in &samples {
        for f in &s.report.findings {
            eprintln!(
                "sample {}: finding {:?} {}: {}",
                s.n, f.severity, f.at, f.what
            );
        }
    }
    bad.extend(copy_checks);
    assert!(
        bad.is_empty(),
        "{}\n{}",
        bad.join("\n"),
        samples[0].report.text()
    );
    eprintln!(
        "{name}: {} samples; last: {}",
        samples.len(),
        line_with(&out.linux.output, &format!("INSPECT-STATS {SAMPLES} ")).unwrap_or_default()
    );
}

/// Copy the live file, then corrupt the copy twice (a byte of the backend record's newest
/// copy; channel 0's host line rewritten, CRC and all, with `submr_head` = 7) and check
/// the inspector names each. Returns what went wrong.
fn corrupted_copies(shm: &Path) -> Vec<String> {
    let mut bad = Vec::new();
    let copy = PathBuf::from(format!(
        "/dev/shm/cbdfw-inspect-copy-{}.raw",
        std::process::id()
    ));
    let at = now();
    if let Err(e) = std::fs::copy(shm, &copy) {
        return vec![format!("copy {}: {e}", copy.display())];
    }
    let result = (|| -> Result<(), String> {
        let base = inspect::inspect_file(&copy, at).map_err(|e| e.to_string())?;
        let b = base.backends.first().ok_or("copy: no backend")?;
        let newest = b.latest.ok_or("copy: backend record has no valid copy")?;
        let seg = base
            .segments
            .iter()
            .find(|s| s.channel.is_some())
            .ok_or("copy: no channel")?;
        let info = base.info().ok_or("copy: transport invalid")?;
        let line_off = info.segment_off(seg.id) + chan::CTRL_OFF + ctrl::NC_HOST_LINE;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&copy)
            .map_err(|e| e.to_string())?;
        use std::os::unix::fs::FileExt;
        // 1: one byte of the newest backend copy (its heartbeat), CRC left as it was.
        let off = b.copies[newest].offset + 16;
        let mut byte = [0u8; 1];
        file.read_at(&mut byte, off).map_err(|e| e.to_string())?;
        file.write_at(&[byte[0] ^ 0x5a], off)
            .map_err(|e| e.to_string())?;
        let r = inspect::inspect_file(&copy, at).map_err(|e| e.to_string())?;
        let want = format!("backend {} copy {newest}", b.id);
        if !r
            .findings
            .iter()
            .any(|f| f.at == want && f.what.contains("bad CRC"))
        {
            return Err(format!(
                "flipped byte at {off:#x}: no finding at {want:?}\n{}",
                r.text()
            ));
        }
        // 2: a host line that verifies but points off the ring.
        let mut l = [0u8; device::layout::nc_host::SIZE];
        file.read_at(&mut l, line_off).map_err(|e| e.to_string())?;
        let mut h = HostLine::decode(&l).ok_or("copy: host line does not verify")?;
        h.submr_head = 7;
        file.write_at(&h.encode(), line_off)
            .map_err(|e| e.to_string())?;
        let r = inspect::inspect_file(&copy, at).map_err(|e| e.to_string())?;
        let want = format!("segment {} nc_host.SUBMR_HEAD", seg.id);
        if !r.findings.iter().any(|f| {
            f.severity == Severity::Error && f.at == want && f.what.contains("out of range")
        }) {
            return Err(format!("submr_head 7: no error at {want:?}\n{}", r.text()));
        }
        eprintln!(
            "corrupted copy: {} finding(s), exit-worthy: {:?}",
            r.findings.len(),
            r.worst()
        );
        Ok(())
    })();
    let _ = std::fs::remove_file(&copy);
    if let Err(e) = result {
        bad.push(e);
    }
    bad
}
