//! Paired-VM tests: the cbdfw device VM and a Linux VM (Debian 6.12, `cbd-host` →
//! ublk) on one shared backing file, both under TCG. Each case runs a script in the
//! guest that prints `RESULT NAME OK|FAIL`; both consoles are kept under
//! `target/pairs/NAME/` and printed on failure.

use std::time::Duration;

use qemu::Firmware;
use qemu::pair::{PairSpec, run_pair, run_pair_watched};
use qemu::status::KernelStatus;

fn case(name: &str, topo: &str, with_device: bool, tweak: impl FnOnce(&mut PairSpec)) {
    case_with(name, topo, "", "", with_device, tweak)
}

/// [`case`] with extra cbd-host arguments (`$HOSTARGS` in lib.sh's `start_host`); `suffix`
/// names the run (logs in `target/pairs/NAME-TOPO-SUFFIX/`, `RESULT NAME-TOPO-SUFFIX`).
fn case_with(
    name: &str,
    topo: &str,
    suffix: &str,
    hostargs: &str,
    with_device: bool,
    tweak: impl FnOnce(&mut PairSpec),
) {
    let run_name = run_name(name, topo, suffix);
    let body = vmtests::guest_body(
        name,
        &run_name,
        &format!("TOPO={topo}\nHOSTARGS='{hostargs}'"),
    );
    run_case(&run_name, topo, &body, with_device, tweak)
}

/// Several scripts in one pair, one after the other (`vmtests::guest_body_steps`), run
/// name `pair-A-B-…-TOPO[-SUFFIX]` (the scripts' names without `pair-`), with the device.
fn steps(scripts: &[&str], topo: &str, suffix: &str, hostargs: &str) {
    steps_with(scripts, topo, suffix, hostargs, "")
}

/// [`steps`] with more shell variables for the scripts (`vars`, e.g. `FIO_SIZE=2M`).
fn steps_with(scripts: &[&str], topo: &str, suffix: &str, hostargs: &str, vars: &str) {
    let steps: Vec<&str> = scripts
        .iter()
        .map(|s| s.trim_start_matches("pair-"))
        .collect();
    let run_name = run_name(&format!("pair-{}", steps.join("-")), topo, suffix);
    let body = vmtests::guest_body_steps(
        scripts,
        &run_name,
        &format!("TOPO={topo}\nHOSTARGS='{hostargs}'\n{vars}"),
    );
    run_case(&run_name, topo, &body, true, |_| {});
}

/// A run's name: `BASE-TOPO`, or `BASE-TOPO-SUFFIX` (its logs in `target/pairs/NAME/`, the
/// guest's `RESULT NAME` line).
fn run_name(base: &str, topo: &str, suffix: &str) -> String {
    if suffix.is_empty() {
        format!("{base}-{topo}")
    } else {
        format!("{base}-{topo}-{suffix}")
    }
}

fn run_case(
    run_name: &str,
    topo: &str,
    body: &str,
    with_device: bool,
    tweak: impl FnOnce(&mut PairSpec),
) {
    let mut spec = PairSpec::new(run_name, topo, body);
    tweak(&mut spec);
    let kernel = with_device
        .then(|| boot::image::kernel_image_for_tests(Firmware::Bios).expect("kernel image"));
    let out = run_pair(&spec, kernel.as_deref()).unwrap_or_else(|e| panic!("{run_name}: {e}"));
    let ok = out.guest_ok(run_name);
    let dev_ok = out
        .device
        .as_ref()
        .is_none_or(|d| d.status == KernelStatus::Success);
    if !ok || !dev_ok {
        eprintln!("==== linux console ({run_name}) ====\n{}", out.linux.output);
        if let Some(d) = &out.device {
            eprintln!(
                "==== device console ({run_name}): {} ====\n{}",
                d.status.describe(),
                d.output
            );
        }
        panic!(
            "{run_name}: guest {:?}, device {:?} (logs in {})",
            out.result_line(run_name),
            out.device.as_ref().map(|d| d.status.describe()),
            out.logs.display()
        );
    }
    if let Some(d) = &out.device {
        let summary = d
            .output
            .lines()
            .find(|l| l.contains("serve: stopped:"))
            .unwrap_or_default();
        assert!(
            summary.contains("errors=0"),
            "device reported errors: {summary}"
        );
        eprintln!(
            "{run_name}: {} | device {summary}",
            out.result_line(run_name).unwrap_or_default()
        );
    }
}

// dd patterns, then ext4 (mkfs, fsck, remount), then fio --verify at QD16 on two channels:
// one pair boot, cbd-host started and stopped cleanly for each step (so each later step
// also proves that a host re-attaches to a running device after a clean stop).
#[test]
fn ivshmem_dd_patterns_ext4_mkfs_fsck_remount_fio_verify_qd16_two_channels() {
    steps(&["pair-dd", "pair-ext4", "pair-fio"], "ivshmem", "", "");
}

#[test]
fn ivshmem_host_without_device_fails_clearly() {
    case("pair-nodevice", "ivshmem", false, |s| {
        s.timeout = Duration::from_secs(300)
    });
}

// On CXL memory (region, devdax namespace, transport formatted by the host): dd
// patterns, then a small fio --verify by a second host that attaches to the transport
// the first one formatted, without formatting it again.
#[test]
fn cxl_dd_patterns_then_fio_verify_small() {
    steps_with(&["pair-dd", "pair-fio"], "cxl", "", "", "FIO_SIZE=2M");
}

// Durability tokens are negotiated by default: fsyncs are answered from the watermark (no
// CBD FLUSH command), FUA writes go CRITICAL, and cbd-host's counters show it while running.
#[test]
fn ivshmem_tokens_fsync_without_flush_commands() {
    case("pair-tokens", "ivshmem", true, |_| {});
}

// Discard and write-zeroes from the Linux tools (blkdiscard, blkdiscard -z, fio --rw=trim,
// fallocate -p, fstrim) reach the device, and the ranges read back zero with the rest intact.
#[test]
fn ivshmem_discard_and_write_zeroes_reach_the_device() {
    case("pair-discard", "ivshmem", true, |_| {});
}

// cbd-host SIGKILLed during fio --verify and started again with --recover 0: the ublk
// device survives (user recovery), fio finishes without an error; then a second kill, the
// orphan removed, and a plain start of the same host name reclaims the dead program's
// records at once instead of waiting 30 s.
#[test]
fn ivshmem_host_killed_mid_io_recovers_and_fio_verifies() {
    case("pair-hostkill", "ivshmem", true, |_| {});
}

// The same workloads with every extension of ours switched off in the host (plain CBD v3:
// FUA = WRITE + FLUSH, flush = CBD FLUSH, no tokens, no DISCARD/WRITE_ZEROES).
fn plain_v3(name: &str) {
    case_with(name, "ivshmem", "plain-v3", "--plain-v3", true, |_| {});
}

#[test]
fn plain_v3_ivshmem_dd_patterns_ext4_mkfs_fsck_remount_fio_verify_qd16_two_channels() {
    steps(
        &["pair-dd", "pair-ext4", "pair-fio"],
        "ivshmem",
        "plain-v3",
        "--plain-v3",
    );
}

// Plain v3 advertises no discard: the limits read 0, the tools fail with EOPNOTSUPP,
// BLKZEROOUT falls back to the kernel writing zeroes, nothing reaches cbd-host as a discard.
#[test]
fn plain_v3_ivshmem_discard_refused_cleanly() {
    plain_v3("pair-discard");
}

// Non-coherent mode end to end (docs/protocol.md §4): the device offers it, cbd-host asks for
// it; every shared record, ring entry and control line is written back after stores and
// invalidated before loads (CLWB/CLFLUSHOPT/CLFLUSH in the Linux guest, the same in the
// device), entries and payloads carry CRCs and epochs. TCG memory is coherent anyway, so
// this proves the non-coherent protocol carries real block I/O between two real VMs, not
// that a stale line is caught (the adversarial-memory tests in device/ do that).
fn noncoherent(name: &str, topo: &str) {
    case_with(name, topo, "noncoherent", "--noncoherent", true, |s| {
        s.device_opts.push(("noncoherent".into(), "on".into()))
    });
}

#[test]
fn noncoherent_ivshmem_fio_verify_qd16_two_channels() {
    noncoherent("pair-fio", "ivshmem");
}

#[test]
fn noncoherent_cxl_dd_patterns() {
    noncoherent("pair-dd", "cxl");
}

/// cbd-host records its request history (`--history`) while fio runs overlapping
/// workloads (two jobs on the same 2 MiB, one per queue, QD 64 and 16, 512 B .. 1 MiB,
/// reads racing writes) after a verify job; the guest copies the history to a virtio-blk
/// disk, and the history checker must accept it (CBD level: per-block linearizability,
/// per-channel order, durability of what the watermarks and flushes confirmed). A
/// rejection fails the test with the checker's counter-example.
fn fio_history(topo: &str, suffix: &str, hostargs: &str, tweak: impl FnOnce(&mut PairSpec)) {
    let run_name = run_name("pair-history", topo, suffix);
    // Sparse and zero-filled: the history ends at the first NUL.
    let disk = vmtests::ScratchDisk::new(&run_name, 256 << 20);
    let hostargs = format!("--history /tmp/history --io-buf 1M {hostargs}");
    case_with("pair-history", topo, suffix, &hostargs, true, |s| {
        s.linux_extra = disk.qemu_args("hist");
        tweak(s);
    });
    let raw = std::fs::read(disk.path()).expect("read the history disk");
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    let text = String::from_utf8_lossy(&raw[..end]).into_owned();
    let logs = qemu::workspace_root()
        .join("target")
        .join("pairs")
        .join(&run_name);
    let _ = std::fs::write(logs.join("history.txt"), &text);
    let h = history::parse(&text).unwrap_or_else(|e| {
        panic!(
            "{run_name}: the history does not parse: {e} ({})",
            logs.display()
        )
    });
    assert!(
        h.ops.len() > 200
            && h.ops.iter().any(|o| o.kind == history::OpKind::Read)
            && h.ops.iter().any(|o| o.kind == history::OpKind::Write),
        "{run_name}: too small a history: {} requests",
        h.ops.len()
    );
    match history::check(&h) {
        Ok(s) => eprintln!("{run_name}: history accepted: {s}"),
        Err(e) => panic!(
            "{run_name}: the history checker rejects cbd-host's history ({}/history.txt):\n{e}",
            logs.display()
        ),
    }
}

#[test]
fn ivshmem_fio_overlapping_history_checked() {
    fio_history("ivshmem", "", "", |_| {});
}

/// The device VM dies (SIGKILL) and is restarted (`takeover=on`, same media image and
/// shared file) twice: while fio --verify writes, and while an ext4 write+fsync loop
/// runs. Nothing reaches the application: fio exits 0 with no verify failure, every
/// fsync returns 0, the files read back after a remount, fsck is clean, cbd-host saw two
/// restarts (new incarnations) and counted no error (`qemu/scripts/pair-recovery.sh`). Each phase has its own
/// deadline: the guest's marker within `PHASE_LIMIT`, the restarted device serving within
/// `qemu::pair::DEVICE_RESTART_LIMIT`, the whole pair within the spec's timeout.
#[test]
fn ivshmem_device_restart_is_invisible_to_fio_and_ext4_fsync() {
    const PHASE_LIMIT: Duration = Duration::from_secs(300);
    let name = "pair-recovery-ivshmem";
    let body = vmtests::guest_body("pair-recovery", name, "TOPO=ivshmem\nHOSTARGS=''");
    let mut spec = PairSpec::new(name, "ivshmem", &body);
    spec.device_media_mib = Some(128);
    spec.timeout = Duration::from_secs(1200);
    let kernel = boot::image::kernel_image_for_tests(Firmware::Bios).expect("kernel image");
    let mut restarts = Vec::new();
    let out = run_pair_watched(&spec, Some(&kernel), |live| {
        for phase in ["PHASE fio-running", "PHASE fsync-running"] {
            if !live.linux.wait_for(phase, PHASE_LIMIT) {
                restarts.push(Err(format!("no '{phase}' within {PHASE_LIMIT:?}")));
                return;
            }
            // Let the workload get going, then kill the device under it.
            std::thread::sleep(Duration::from_secs(2));
            let dev = live.device.as_deref_mut().expect("a device VM");
            restarts.push(dev.restart_device(Duration::from_secs(1)));
        }
    })
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    eprintln!("{name}: device restarts (kill → serving): {restarts:?}");
    let ok = out.guest_ok(name);
    if !ok || restarts.iter().any(|r| r.is_err()) || restarts.len() != 2 {
        eprintln!("==== linux console ({name}) ====\n{}", out.linux.output);
        panic!(
            "{name}: guest {:?}, restarts {restarts:?} (logs in {})",
            out.result_line(name),
            out.logs.display()
        );
    }
    eprintln!("{name}: {}", out.result_line(name).unwrap_or_default());
}
