//! Paired VMs: the device VM (our kernel, backend mode) and a Linux VM (the host,
//! running `cbd-host` and a workload script) on one shared backing file, both
//! under TCG. Used by the paired-VM tests (`tests/`), the demo (`cargo run`) and
//! the benchmark.
//!
//! ```text
//!  device VM (cbdfw kernel)            Linux VM (Debian 6.12 guest)
//!   mode=backend ─┐                  ┌─ cbd-host → /dev/ublkb0 ← mkfs / fio / dd
//!                 └── /dev/shm/… ────┘   (ivshmem BAR2, or CXL type-3 + devdax)
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::device_vm::DeviceVm;
use crate::guest;
use crate::topology::{self, SharedFile, Topology};
use crate::vm::{Echo, Input, Outcome, QemuCmd, Vm};

/// What to run.
#[derive(Clone, Debug)]
pub struct PairSpec {
    /// A name for logs and files.
    pub name: String,
    /// `ivshmem` (fast path) or `cxl`.
    pub topology: String,
    /// Shared backing file size (a CBD transport needs ≥ 512 MiB).
    pub shm_mib: u64,
    /// The device's RAM disk.
    pub disk_mib: u64,
    pub channels: u32,
    /// Shell script run in the Linux guest (`/tests/NAME.sh`); it should print
    /// `RESULT NAME OK …` or `RESULT NAME FAIL …`.
    pub script: String,
    /// Extra device options (fw_cfg).
    pub device_opts: Vec<(String, String)>,
    pub timeout: Duration,
    pub echo: Echo,
    /// Give the Linux console to the user (no test script is run).
    pub interactive: bool,
    /// Extra QEMU arguments for the Linux VM (e.g. a virtio-blk disk).
    pub linux_extra: Vec<String>,
    /// Extra files for the guest: (path in the guest, file on the build machine).
    pub linux_files: Vec<(String, PathBuf)>,
    /// Extra initramfs layers for the guest, unpacked after the test's own (e.g.
    /// [`guest::tools_layer`]'s `perf`).
    pub linux_layers: Vec<PathBuf>,
    /// Give the device a media image of this many MiB (virtio-blk, RAM staging,
    /// `takeover=on`) instead of its RAM disk, so that it can be killed and restarted
    /// on the same data ([`Live::restart_device`]).
    pub device_media_mib: Option<u64>,
}

impl PairSpec {
    pub fn new(name: &str, topology: &str, script: &str) -> PairSpec {
        PairSpec {
            name: name.into(),
            topology: topology.into(),
            // A CBD transport needs ≥ 512 MiB; on CXL, Linux's devdax metadata
            // comes first (18 MiB for 1 GiB), so give that topology 1 GiB.
            shm_mib: if topology.starts_with("cxl") {
                1024
            } else {
                512
            },
            disk_mib: 64,
            channels: 2,
            script: script.into(),
            device_opts: Vec::new(),
            timeout: Duration::from_secs(600),
            echo: Echo::Quiet,
            interactive: false,
            linux_extra: Vec::new(),
            linux_files: Vec::new(),
            linux_layers: Vec::new(),
            device_media_mib: None,
        }
    }
}

/// How a paired run ended.
#[derive(Debug)]
pub struct PairOutcome {
    pub device: Option<Outcome>,
    pub linux: Outcome,
    /// Where both consoles were saved.
    pub logs: PathBuf,
}

impl PairOutcome {
    /// The guest script's `RESULT NAME …` line.
    pub fn result_line(&self, name: &str) -> Option<String> {
        let tag = format!("RESULT {name} ");
        self.linux
            .output
            .lines()
            .find(|l| l.contains(&tag))
            .map(|l| l.trim().to_string())
    }

    pub fn guest_ok(&self, name: &str) -> bool {
        self.result_line(name)
            .is_some_and(|l| l.contains(&format!("RESULT {name} OK")))
    }
}

/// A guest-side script from `qemu/scripts/NAME.sh`.
pub fn script(name: &str) -> Result<String, String> {
    let p = crate::data_dir().join("scripts").join(format!("{name}.sh"));
    std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))
}

/// The statically linked host program: `CBDFW_HOST_BIN` (set by `boot test`, which
/// builds it before cargo test holds the build lock) or built now.
pub fn host_binary() -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var("CBDFW_HOST_BIN") {
        return Ok(PathBuf::from(p));
    }
    guest::build_host_binary().map_err(|e| e.to_string())
}

/// The Linux VM's command line for a topology.
pub fn linux_command(
    img: &guest::GuestImage,
    initrd: &Path,
    append: &str,
    topo: &Topology,
) -> QemuCmd {
    let cxl = topo
        .machine
        .as_deref()
        .is_some_and(|m| m.contains("cxl=on"));
    let mut q = QemuCmd::new();
    q.args(guest::qemu_args(&img.kernel, initrd, append, cxl));
    topo.apply(&mut q);
    q
}

/// The Linux guest's initrd: the base image plus a layer with cbd-host, the test script
/// `/tests/NAME.sh` and `files`, written as `work/PREFIXinitrd.img`.
pub(crate) fn guest_initrd(
    img: &guest::GuestImage,
    work: &Path,
    prefix: &str,
    name: &str,
    script: &str,
    files: &[(String, PathBuf)],
    layers: &[PathBuf],
) -> Result<PathBuf, String> {
    let mut layer = guest::Layer::new();
    guest::add_host_binary(&mut layer, &host_binary()?).map_err(|e| e.to_string())?;
    layer
        .add_test_script(name, script)
        .map_err(|e| e.to_string())?;
    for (guest_path, src) in files {
        layer
            .add_file(guest_path, src, 0o755)
            .map_err(|e| e.to_string())?;
    }
    let layer_path = work.join(format!("{prefix}layer.cpio.gz"));
    layer.write(&layer_path).map_err(|e| e.to_string())?;
    let initrd = work.join(format!("{prefix}initrd.img"));
    let all: Vec<&Path> = std::iter::once(layer_path.as_path())
        .chain(layers.iter().map(PathBuf::as_path))
        .collect();
    img.initrd_with(&all, &initrd).map_err(|e| e.to_string())?;
    Ok(initrd)
}

/// A fresh shared file at `shm` (any old one and its label area removed) with topology
/// `name` instantiated on it; the file goes when the returned guard drops.
pub(crate) fn fresh_shared(
    name: &str,
    shm: &Path,
    size_mib: u64,
) -> Result<(Topology, Cleanup), String> {
    let _ = std::fs::remove_file(shm);
    let _ = std::fs::remove_file(format!("{}.lsa", shm.display()));
    let topo = topology::load(
        name,
        &SharedFile {
            path: shm.to_path_buf(),
            size_mib,
        },
    )?;
    topo.prepare_files()?;
    Ok((topo, Cleanup(shm.to_path_buf())))
}

/// Save a console log next to the other run products.
pub(crate) fn save(dir: &Path, file: &str, text: &str) {
    let _ = std::fs::create_dir_all(dir);
    let _ = std::fs::write(dir.join(file), text);
}

/// Run the device VM (booting `device_image`, a boot image from `boot::image`) and the
/// Linux VM on one shared file until the guest script ends. Without a device image only
/// the Linux VM runs (case (d): a host with no device).
pub fn run_pair(spec: &PairSpec, device_image: Option<&Path>) -> Result<PairOutcome, String> {
    run_pair_watched(spec, device_image, |_| {})
}

/// A running pair, as [`run_pair_watched`] hands it to its watcher: the shared file
/// (read it, e.g. with `device::inspect`, while both VMs use it) and the Linux VM
/// (its console so far, [`Vm::wait_for`]).
pub struct Live<'a> {
    pub shm: &'a Path,
    pub linux: &'a mut Vm,
    /// The device VM and how to start it again (None without a device).
    pub device: Option<&'a mut DeviceCtl>,
}

/// The running device VM of a pair, with the command line that started it.
pub struct DeviceCtl {
    pub vm: Vm,
    cmd: QemuCmd,
    echo: Echo,
    /// Consoles of the incarnations killed so far.
    pub killed_logs: Vec<String>,
}

/// How long a restarted device VM may take to serve again.
pub const DEVICE_RESTART_LIMIT: Duration = Duration::from_secs(240);

impl DeviceCtl {
    /// SIGKILL the device VM, wait `down`, start it again on the same shared file and
    /// media (`takeover=on`: it re-attaches to its own records at once) and wait until it
    /// serves. Returns how long it took from the kill to serving.
    pub fn restart_device(&mut self, down: Duration) -> Result<Duration, String> {
        let t0 = std::time::Instant::now();
        self.vm.kill();
        self.killed_logs.push(self.vm.output());
        std::thread::sleep(down);
        let mut vm = Vm::spawn_with_input("device", &self.cmd, self.echo, Input::Piped)
            .map_err(|e| e.to_string())?;
        if !vm.wait_for("serve: backend", DEVICE_RESTART_LIMIT) {
            return Err(format!(
                "the restarted device VM did not serve within {} s:\n{}",
                DEVICE_RESTART_LIMIT.as_secs(),
                vm.output()
            ));
        }
        self.vm = vm;
        Ok(t0.elapsed())
    }
}

/// [`run_pair`], calling `watch` once the Linux VM has reached userspace, while both
/// VMs run; the guest script goes on meanwhile, and the pair is waited for (and the
/// device stopped) when `watch` returns.
pub fn run_pair_watched(
    spec: &PairSpec,
    device_image: Option<&Path>,
    watch: impl FnOnce(&mut Live<'_>),
) -> Result<PairOutcome, String> {
    let root = crate::workspace_root();
    let work = root.join("target").join("pairs").join(&spec.name);
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;

    // Linux side: base image + a layer with cbd-host and the script.
    let img = guest::ensure_image(&guest::default_cache_dir()).map_err(|e| e.to_string())?;
    let initrd = guest_initrd(
        &img,
        &work,
        "",
        &spec.name,
        &spec.script,
        &spec.linux_files,
        &spec.linux_layers,
    )?;

    // One shared file for both VMs, fresh for every run.
    let shm = PathBuf::from(format!(
        "/dev/shm/cbdfw-pair-{}-{}.raw",
        spec.name,
        std::process::id()
    ));
    let (topo, cleanup) = fresh_shared(&spec.topology, &shm, spec.shm_mib)?;

    let mut device = None;
    if let Some(image) = device_image {
        let mut d = DeviceVm {
            memory_mib: 256 + spec.disk_mib,
            ..Default::default()
        }
        .option("mode", "backend")
        .option("channels", &spec.channels.to_string())
        .topology(topo.clone());
        if let Some(mib) = spec.device_media_mib {
            let img = work.join("media.raw");
            let f = std::fs::File::create(&img).map_err(|e| format!("{}: {e}", img.display()))?;
            f.set_len(mib << 20).map_err(|e| e.to_string())?;
            d.media = Some(img);
            d = d
                .option("media", "virtio")
                .option("staging-mib", "8")
                .option("takeover", "on");
        } else {
            d = d.option("disk-mib", &spec.disk_mib.to_string());
        }
        if spec.topology.starts_with("cxl") {
            // Linux puts devdax metadata first and formats the transport inside it.
            d = d.option("transport", "wait");
        }
        for (k, v) in &spec.device_opts {
            d = d.option(k, v);
        }
        let cmd = d.command(image);
        let mut vm = Vm::spawn_with_input("device", &cmd, spec.echo, Input::Piped)
            .map_err(|e| e.to_string())?;
        if !vm.wait_for("serve: ", Duration::from_secs(240)) {
            // One more second to collect its last lines, then it is killed.
            let out = vm.wait(Duration::from_secs(1));
            save(&work, "device.log", &out.output);
            return Err(format!(
                "device VM never started serving (log: {})",
                work.join("device.log").display()
            ));
        }
        device = Some(DeviceCtl {
            vm,
            cmd,
            echo: spec.echo,
            killed_logs: Vec::new(),
        });
    }

    let (append, input, echo, timeout) = if spec.interactive {
        (
            "quiet".to_string(),
            Input::Inherit,
            Echo::Lines,
            Duration::from_secs(24 * 3600),
        )
    } else {
        (
            format!("quiet test={}", spec.name),
            Input::Null,
            spec.echo,
            spec.timeout,
        )
    };
    let mut linux_cmd = linux_command(&img, &initrd, &append, &topo);
    linux_cmd.args(spec.linux_extra.iter().cloned());
    let mut linux = spawn_linux(&linux_cmd, echo, input)?;
    watch(&mut Live {
        shm: &shm,
        linux: &mut linux,
        device: device.as_mut(),
    });
    // The spec's timeout is the Linux VM's whole run (boot included).
    let left = linux.remaining(timeout);
    let linux_out = linux.wait(left);

    // However long the pair ran, the device gets DEVICE_STOP_LIMIT to stop after `stop`.
    let device_out = device.map(|d| {
        for (i, log) in d.killed_logs.iter().enumerate() {
            save(&work, &format!("device-killed-{i}.log"), log);
        }
        let mut vm = d.vm;
        let _ = vm.send_line("stop");
        vm.wait(DEVICE_STOP_LIMIT)
    });
    save(&work, "linux.log", &linux_out.output);
    if let Some(d) = &device_out {
        save(&work, "device.log", &d.output);
    }
    drop(cleanup);
    Ok(PairOutcome {
        device: device_out,
        linux: linux_out,
        logs: work,
    })
}

/// How long the device VM gets to stop (final sync, `serve: stopped` report, exit) once
/// `stop` was typed on its console, counted from then.
pub const DEVICE_STOP_LIMIT: Duration = Duration::from_secs(120);

/// How long a Linux guest may take to reach userspace before we call it a failed boot.
pub const LINUX_BOOT_LIMIT: Duration = Duration::from_secs(150);

/// Start a Linux guest and wait until its userspace is up (`USERSPACE-UP` from
/// `/init`). On a loaded 2-core host, multi-threaded TCG occasionally loses a vCPU's
/// timer during early boot (seen in CI: RCU stalls on CPU 1 and no progress); such a
/// boot is killed and started once more. Only the boot is retried — never a test.
pub fn spawn_linux(cmd: &QemuCmd, echo: Echo, input: Input) -> Result<Vm, String> {
    for attempt in 1..=2 {
        let mut vm = Vm::spawn_with_input("linux", cmd, echo, input).map_err(|e| e.to_string())?;
        if vm.wait_for("USERSPACE-UP", LINUX_BOOT_LIMIT) {
            return Ok(vm);
        }
        let tail: String = vm
            .output()
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .join(" | ");
        vm.kill();
        eprintln!(
            "linux: no userspace after {} s (attempt {attempt}); last lines: {tail}",
            LINUX_BOOT_LIMIT.as_secs()
        );
    }
    Err("the Linux guest did not boot twice in a row".into())
}

/// Removes the shared file (and its label area) when dropped.
pub(crate) struct Cleanup(pub(crate) PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        let _ = std::fs::remove_file(format!("{}.lsa", self.0.display()));
    }
}
