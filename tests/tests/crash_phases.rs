//! Crash phases with a real Linux host: the cbdfw device VM (128 MiB media image,
//! `takeover=on`) and a Linux VM running `cbd-host --history` on one shared file. The
//! harness SIGKILLs the device VM and restarts it inside three phases — `mkfs.ext4`
//! writing its tables in full, a sequential 1 MiB fio write with crc32c verify, an ext4
//! write + fsync loop — and the guest SIGKILLs cbd-host inside a fourth (fio --verify,
//! `--recover 0`), `CBDFW_CRASH_PHASE_POINTS` rounds (default 1). Guest script:
//! `qemu/scripts/crash-phases.sh`.
//!
//! What must hold: no error reaches an application (every exit 0, fio `err= 0`,
//! cbd-host `errors=0`, the `--recover-timeout` bound never fired); the data checks
//! (fsck -fn clean after mkfs and after the fsync loop, the fsynced files' md5 sums after
//! a remount, fio's verify after the sequential write and after the host kill); and each
//! cbd-host lifetime's recorded request history — crash points at each new backend
//! incarnation, post-crash O_DIRECT reads of what each phase wrote — accepted by
//! `history::check` (docs/lifecycle.md says which rules that covers here: the first read of
//! a block after a crash is judged only against the values ever written, and only in the
//! first lifetime, whose initial content is known to be zero). A killed cbd-host's
//! history ends where its log was last written out (every second; a partial last line is
//! dropped), a few hundred requests into the host-kill phase: it is checked as a history
//! whose last requests never completed, and must hold a crash point for each device kill
//! of its lifetime. Across the cbd-host kill itself the data is checked by fio's verify
//! and read-back in the next lifetime, whose history starts afresh (initial content
//! unknown): no one history spans a cbd-host kill.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::thread::JoinHandle;
use std::time::Duration;

use qemu::Firmware;
use qemu::pair::{PairSpec, run_pair_watched};

/// The phases in which the harness kills the device VM, in the guest's order.
const DEVICE_PHASES: [&str; 3] = ["mkfs", "seq", "fsync"];
/// How long the guest may take to reach a kill point or hand out a history.
const PHASE_LIMIT: Duration = Duration::from_secs(300);
/// Where a history's text starts on the virtio-blk disk (the header is in the first 4 KiB).
const SLOT_TEXT: u64 = 1 << 20;

fn points() -> u32 {
    match std::env::var("CBDFW_CRASH_PHASE_POINTS") {
        Ok(s) => s
            .parse()
            .ok()
            .filter(|&n| n >= 1)
            .unwrap_or_else(|| panic!("CBDFW_CRASH_PHASE_POINTS={s}: want a number ≥ 1")),
        Err(_) => 1,
    }
}

/// History `lifetime` as the guest left it on the disk: `slot L LEN` then the text.
fn read_slot(disk: &Path, lifetime: u32) -> Result<String, String> {
    let mut f = std::fs::File::open(disk).map_err(|e| format!("{}: {e}", disk.display()))?;
    let mut head = [0u8; 64];
    f.read_exact(&mut head).map_err(|e| e.to_string())?;
    let head = String::from_utf8_lossy(&head);
    let line = head.lines().next().unwrap_or_default();
    let mut w = line.split_whitespace();
    let (Some("slot"), Some(l), Some(len)) = (w.next(), w.next(), w.next()) else {
        return Err(format!("history {lifetime}: no slot header ({line:?})"));
    };
    if l.parse() != Ok(lifetime) {
        return Err(format!("history {lifetime}: the disk holds slot {l}"));
    }
    let len: u64 = len.parse().map_err(|_| format!("bad length in {line:?}"))?;
    let mut text = vec![0u8; len as usize];
    f.seek(SeekFrom::Start(SLOT_TEXT))
        .and_then(|_| f.read_exact(&mut text))
        .map_err(|e| format!("history {lifetime}: {e}"))?;
    String::from_utf8(text).map_err(|e| format!("history {lifetime}: not text: {e}"))
}

/// One lifetime's history checked, with a crash point for each of its `device_kills`;
/// a `killed` lifetime's may end in a partial line, which is dropped.
fn check_lifetime(
    lifetime: u32,
    text: String,
    killed: bool,
    device_kills: usize,
    logs: &Path,
) -> Result<history::Summary, String> {
    let _ = std::fs::write(logs.join(format!("history-{lifetime}.txt")), &text);
    let text = if killed && !text.ends_with('\n') {
        &text[..text.rfind('\n').map_or(0, |i| i + 1)]
    } else {
        &text[..]
    };
    let mut h =
        history::parse(text).map_err(|e| format!("history {lifetime} does not parse: {e}"))?;
    if lifetime == 0 {
        // cbd-host cannot know what the disk held before it started (`initial=unknown`);
        // the first lifetime's disk is the run's fresh, zero-filled media image. Known
        // initial content is what lets the checker reject a value never written that a
        // read after a crash returns (with unknown content it would take any value).
        h.header.initial = history::Initial::Zero;
    }
    let reads = h.ops.iter().any(|o| o.kind == history::OpKind::Read);
    let writes = h.ops.iter().any(|o| o.kind == history::OpKind::Write);
    if !reads || !writes {
        return Err(format!(
            "history {lifetime}: too small ({} requests, reads {reads}, writes {writes})",
            h.ops.len()
        ));
    }
    let s = history::check(&h).map_err(|e| {
        format!(
            "the history checker rejects lifetime {lifetime} ({}/history-{lifetime}.txt):\n{e}",
            logs.display()
        )
    })?;
    if s.crashes != device_kills {
        return Err(format!(
            "history {lifetime}: {} crash points for {device_kills} device kills",
            s.crashes
        ));
    }
    Ok(s)
}

struct Figures {
    restarts: Vec<(&'static str, u32, Duration)>,
    checks: Vec<JoinHandle<(u32, Result<history::Summary, String>)>>,
    failure: Option<String>,
}

impl Figures {
    /// Wait for `HISTORY L ready`, read the slot and check it on a thread of its own (the
    /// guest goes on meanwhile; it writes the next slot only after the next round's
    /// device kills, which come from this watcher after this read).
    fn take_history(
        &mut self,
        linux: &mut qemu::vm::Vm,
        disk: &Path,
        logs: &Path,
        lifetime: u32,
        killed: bool,
        device_kills: usize,
    ) -> bool {
        if !linux.wait_for(&format!("HISTORY {lifetime} ready"), PHASE_LIMIT) {
            self.failure = Some(format!("history {lifetime} never handed out"));
            return false;
        }
        let logs = logs.to_path_buf();
        let r = read_slot(disk, lifetime);
        self.checks.push(std::thread::spawn(move || {
            let r = r.and_then(|t| check_lifetime(lifetime, t, killed, device_kills, &logs));
            (lifetime, r)
        }));
        true
    }
}

fn ms(d: &[Duration]) -> String {
    let v: Vec<u128> = d.iter().map(|d| d.as_millis()).collect();
    match (v.iter().min(), v.iter().max()) {
        (Some(lo), Some(hi)) => format!(
            "min {:.1} s, mean {:.1} s, max {:.1} s",
            *lo as f64 / 1e3,
            v.iter().sum::<u128>() as f64 / v.len() as f64 / 1e3,
            *hi as f64 / 1e3
        ),
        _ => "none".into(),
    }
}

#[test]
fn ivshmem_crash_phases_mkfs_seq_fsync_and_host_kill() {
    let points = points();
    let name = "crash-phases-ivshmem";
    let body = vmtests::guest_body(
        "crash-phases",
        name,
        &format!("TOPO=ivshmem\nHOSTARGS=''\nPOINTS={points}"),
    );
    let disk = vmtests::ScratchDisk::new(name, 512 << 20);
    let logs = qemu::workspace_root()
        .join("target")
        .join("pairs")
        .join(name);
    let mut spec = PairSpec::new(name, "ivshmem", &body);
    spec.device_media_mib = Some(128);
    spec.timeout = Duration::from_secs(600 + 900 * u64::from(points));
    spec.linux_extra = disk.qemu_args("hist");
    let kernel = boot::image::kernel_image_for_tests(Firmware::Bios).expect("kernel image");
    let mut figs = Figures {
        restarts: Vec::new(),
        checks: Vec::new(),
        failure: None,
    };
    let out = run_pair_watched(&spec, Some(&kernel), |live| {
        for round in 1..=points {
            for phase in DEVICE_PHASES {
                if !live
                    .linux
                    .wait_for(&format!("KILL {phase} r{round} now"), PHASE_LIMIT)
                {
                    figs.failure = Some(format!("no kill point {phase} round {round}"));
                    return;
                }
                let dev = live.device.as_deref_mut().expect("a device VM");
                match dev.restart_device(Duration::from_secs(1)) {
                    Ok(d) => figs.restarts.push((phase, round, d)),
                    Err(e) => {
                        figs.failure = Some(format!("{phase} round {round}: {e}"));
                        return;
                    }
                }
            }
            // Lifetime round-1 (these device kills) ended with this round's host kill.
            let kills = DEVICE_PHASES.len();
            if !figs.take_history(live.linux, disk.path(), &logs, round - 1, true, kills) {
                return;
            }
        }
        figs.take_history(live.linux, disk.path(), &logs, points, false, 0);
    })
    .unwrap_or_else(|e| panic!("{name}: {e}"));

    // The guest's own verdict first: a harness step it never reached follows from it.
    let mut problems = Vec::new();
    if !out.guest_ok(name) {
        problems.push(format!("guest: {:?}", out.result_line(name)));
    }
    problems.extend(figs.failure);
    eprintln!("==== {name}: figures ({points} point(s) per phase) ====");
    for phase in DEVICE_PHASES {
        let d: Vec<Duration> = figs
            .restarts
            .iter()
            .filter(|r| r.0 == phase)
            .map(|r| r.2)
            .collect();
        eprintln!(
            "{phase}: {} device kills, kill → serving again: {}",
            d.len(),
            ms(&d)
        );
    }
    for l in out.linux.output.lines().filter(|l| l.starts_with("FIG ")) {
        eprintln!("{}", l.trim());
    }
    if let Some(s) = out.linux.output.lines().find(|l| l.starts_with("stats: ")) {
        eprintln!("last lifetime {}", s.trim());
    }
    for h in figs.checks {
        match h.join() {
            Ok((l, Ok(s))) => eprintln!("history {l}: {s}"),
            Ok((l, Err(e))) => problems.push(format!("history {l}: {e}")),
            Err(_) => problems.push("a history check panicked".into()),
        }
    }
    eprintln!("{name}: {}", out.result_line(name).unwrap_or_default());
    if !problems.is_empty() {
        eprintln!("==== linux console ({name}) ====\n{}", out.linux.output);
        panic!(
            "{name}: {} (logs in {})",
            problems.join("; "),
            out.logs.display()
        );
    }
    let summary = out
        .device
        .as_ref()
        .and_then(|d| d.output.lines().find(|l| l.contains("serve: stopped:")))
        .unwrap_or_default();
    assert!(
        summary.contains("errors=0"),
        "{name}: the device reported errors: {summary}"
    );
}
