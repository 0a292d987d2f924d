//! `cargo run -- bench journal`: the journal-commit workload (`host::journal`)
//! against the real device: the cbdfw kernel in QEMU, serving CBD over the ivshmem
//! shared file, with a virtio-blk disk image as its durable media and its RAM staging
//! in front. The host side is our CBD host engine (`host::engine`) in this process,
//! on the same shared file — the same pairing the crash tests use.
//!
//! FUA commits are CRITICAL writes: the device writes them back, behind everything
//! staged before them, and sends a virtio FLUSH before it completes them; QEMU turns
//! the FLUSH into an `fdatasync` of the image file. With tokens
//! the device groups the flushes at its STANDARD bound. The image lives on disk
//! (not `/dev/shm`) by default, so the flushes cost what they cost on this machine.

use std::path::PathBuf;
use std::time::Duration;

use device::native::{MmapMem, now_ns};
use host::journal::{self, Journal};

use qemu::device_vm::DeviceVm;
use qemu::topology::{self, SharedFile};
use qemu::{Echo, Input, Vm};

/// What `bench journal` runs.
#[derive(Clone, Debug)]
pub struct JournalBench {
    /// Data blocks per transaction.
    pub blocks: u64,
    /// Seconds per mode.
    pub secs: f64,
    /// The device's media image and its size in MiB.
    pub media: PathBuf,
    pub media_mib: u64,
    /// Extra device options (`--opt K=V`), e.g. `standard-bound-us=2000`.
    pub options: Vec<(String, String)>,
}

impl JournalBench {
    pub fn new() -> Self {
        JournalBench {
            blocks: 4,
            secs: 5.0,
            media: crate::image::out_dir().join("journal-media.img"),
            media_mib: 64,
            options: Vec::new(),
        }
    }
}

impl Default for JournalBench {
    fn default() -> Self {
        Self::new()
    }
}

/// What a run measured, and what the device said when it stopped.
#[derive(Clone, Debug)]
pub struct JournalReport {
    pub journal: Journal,
    pub result: journal::Comparison,
    /// The host queue's token counters at the end (both modes).
    pub tokens: host::engine::TokenStats,
    /// The device's closing summary lines (requests, staging counters).
    pub device_lines: Vec<String>,
    /// The device exited cleanly after `stop`.
    pub device_stopped: bool,
    pub media: PathBuf,
    pub media_mib: u64,
}

impl JournalReport {
    pub fn text(&self) -> String {
        let mut s = format!(
            "device kernel in QEMU (TCG), media: virtio-blk on {} ({} MiB; a FLUSH = fdatasync of that file)\n{}\ntokens issued {} confirmed {} lost {}\n",
            self.media.display(),
            self.media_mib,
            self.result.report(&self.journal),
            self.tokens.issued,
            self.tokens.confirmed,
            self.tokens.lost
        );
        for l in &self.device_lines {
            s += &format!("  device: {l}\n");
        }
        s
    }
}

/// Boots the device (`image`: a bootable kernel image), runs FUA then tokens on one
/// queue, stops the device cleanly and returns the measurements.
pub fn run(image: &std::path::Path, b: &JournalBench) -> Result<JournalReport, String> {
    if b.media_mib == 0 || b.blocks > 1024 {
        return Err(format!(
            "journal: media must be at least 1 MiB and blocks at most 1024 (got {} MiB, {} blocks)",
            b.media_mib, b.blocks
        ));
    }
    let shared = SharedFile {
        path: PathBuf::from(format!("/dev/shm/cbdfw-journal-{}.raw", std::process::id())),
        size_mib: 256,
    };
    let t = topology::load("ivshmem", &shared)?;
    t.prepare_files()?;
    let result = run_on(image, b, &t);
    let _ = std::fs::remove_file(&t.shm);
    result
}

fn run_on(
    image: &std::path::Path,
    b: &JournalBench,
    t: &topology::Topology,
) -> Result<JournalReport, String> {
    topology::ensure_file(&b.media, b.media_mib << 20).map_err(|e| format!("media image: {e}"))?;
    let mut vm = DeviceVm::default()
        .option("mode", "backend")
        .option("media", "virtio")
        .option("channels", "1")
        .topology(t.clone());
    for (k, v) in &b.options {
        vm = vm.option(k, v);
    }
    vm.media = Some(b.media.clone());
    let mut dev = Vm::spawn_with_input("device", &vm.command(image), Echo::Quiet, Input::Piped)
        .map_err(|e| format!("starting QEMU: {e}"))?;
    if !dev.wait_for("serve: backend", Duration::from_secs(240)) {
        return Err(format!("the device never served:\n{}", dev.output()));
    }

    let mem = MmapMem::create(&t.shm, t.size_mib << 20)
        .map_err(|e| format!("{}: {e}", t.shm.display()))?;
    let mut blk = crate::native_host::attach(&mem, "journal-bench", 1)?;
    let j = Journal {
        blocks: b.blocks,
        secs: b.secs,
        span: b.media_mib << 20,
        stall: Duration::from_secs(60),
    };
    let q = &mut blk.queues[0];
    let c = journal::compare(q, &j, &now_ns);
    let ts = q.tokens;
    let _ = blk.stop();
    let _ = dev.send_line("stop");
    // 60 s to stop, counted from `stop` (the bench itself may run longer).
    let out = dev.wait(Duration::from_secs(60));
    let result = c.map_err(|e| format!("{e}\n---- device serial ----\n{}", out.output))?;
    let device_lines = out
        .output
        .lines()
        .filter(|l| {
            l.contains("serve: stopped")
                || l.contains("serve: staging")
                || l.contains("serve: virtio media")
        })
        .map(|l| l.trim().to_string())
        .collect();
    Ok(JournalReport {
        journal: j,
        result,
        tokens: ts,
        device_lines,
        device_stopped: out.status == qemu::status::KernelStatus::Success,
        media: b.media.clone(),
        media_mib: b.media_mib,
    })
}
