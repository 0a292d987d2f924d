//! `boot`: the command behind `cargo run`, `cargo ktest` and `cargo xtest`.
//!
//! ```text
//! boot [run] [OPTIONS] [-- QEMU-ARGS…]   build the device kernel and boot it
//! boot ktest [OPTIONS] [FILTER]         boot every kernel test binary
//! boot bench [fio]                      CBD ublk vs virtio-blk vs null, two VMs (fio)
//! boot bench journal                    journal commit, FUA vs durability tokens, on
//!                                       the device kernel with a virtio-blk disk
//! boot test                             native tests + kernel tests (the CI command)
//! OPTIONS: --uefi  --release  --timeout SECS  --log LEVEL  --memory MIB
//!          --topology NAME (qemu/topologies/NAME.args)  --shm PATH  --shm-size MIB
//!          --mode MODE (what the device does this boot; see kernel/src/main.rs)
//!          --media PATH[:MIB] (virtio-blk disk image: the device's durable media)
//!          --runtime SECS (bench: fio seconds per job / journal seconds per mode, default 5)
//!          --blocks N (bench journal: data blocks per transaction, default 4)
//!          --opt KEY=VALUE (any other device option, e.g. serve-secs=10; docs/kernel.md)
//! ```

use std::process::ExitCode;
use std::time::Duration;

use boot::image::{self, KernelElf};
use boot::ktest::Expectation;
use device::exit_code::runner;
use qemu::device_vm::DeviceVm;
use qemu::pair::{PairSpec, run_pair};
use qemu::status::KernelStatus;
use qemu::topology::{self, SharedFile, Topology};
use qemu::{Echo, Firmware, Input, Vm};

const USAGE: &str = "usage: boot [demo|device|shell|bench [fio|journal]|ktest|test] [--trace] [--uefi] [--release] [--timeout SECS] [--log LEVEL] [--memory MIB]
            [--topology cxl|cxl2rp|ivshmem] [--shm PATH] [--shm-size MIB] [--mode MODE] [--opt KEY=VALUE]... [--media PATH[:MIB]] [--runtime SECS] [--blocks N] [FILTER] [-- QEMU-ARGS...]";

#[derive(Debug)]
struct Opts {
    cmd: String,
    firmware: Firmware,
    release: bool,
    timeout: Duration,
    log: Option<String>,
    memory_mib: u64,
    filter: Option<String>,
    topology: Option<String>,
    shm: Option<std::path::PathBuf>,
    shm_size_mib: Option<u64>,
    mode: Option<String>,
    opts: Vec<(String, String)>,
    media: Option<(std::path::PathBuf, u64)>,
    /// bench: fio seconds per job, or journal seconds per mode.
    runtime: Option<u32>,
    /// bench journal: data blocks per transaction.
    blocks: Option<u64>,
    /// demo: run qemu/scripts/NAME.sh instead of demo.sh.
    script: Option<String>,
    trace: bool,
    qemu_extra: Vec<String>,
}

fn parse_args(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        // No arguments at all: the demo. Options alone: the device by itself.
        cmd: if args.is_empty() {
            "demo".into()
        } else {
            "run".into()
        },
        trace: false,
        firmware: Firmware::Bios,
        release: false,
        timeout: Duration::from_secs(120),
        log: None,
        memory_mib: 512,
        filter: None,
        topology: None,
        shm: None,
        shm_size_mib: None,
        mode: None,
        opts: Vec::new(),
        media: None,
        runtime: None,
        blocks: None,
        script: None,
        qemu_extra: Vec::new(),
    };
    let mut it = args.iter();
    let mut first = true;
    while let Some(a) = it.next() {
        match a.as_str() {
            "run" | "device" if first => o.cmd = "run".into(),
            "demo" | "shell" | "bench" | "ktest" | "test" if first => o.cmd = a.clone(),
            "--trace" => o.trace = true,
            "--uefi" => o.firmware = Firmware::Uefi,
            "--bios" => o.firmware = Firmware::Bios,
            "--release" => o.release = true,
            "--timeout" => {
                let v = it.next().ok_or("--timeout needs a value in seconds")?;
                let s: u64 = v
                    .parse()
                    .map_err(|_| format!("--timeout: {v:?} is not a number of seconds"))?;
                o.timeout = Duration::from_secs(s);
            }
            "--log" => {
                let v = it.next().ok_or("--log needs a level")?;
                if !["off", "error", "warn", "info", "debug", "trace"].contains(&v.as_str()) {
                    return Err(format!(
                        "--log: unknown level {v:?} (off, error, warn, info, debug, trace)"
                    ));
                }
                o.log = Some(v.clone());
            }
            "--memory" => {
                let v = it.next().ok_or("--memory needs a size in MiB")?;
                o.memory_mib = v
                    .parse()
                    .map_err(|_| format!("--memory: {v:?} is not a number of MiB"))?;
            }
            "--topology" => o.topology = Some(it.next().ok_or("--topology needs a name")?.clone()),
            "--shm" => o.shm = Some(it.next().ok_or("--shm needs a file path")?.into()),
            "--shm-size" => {
                let v = it.next().ok_or("--shm-size needs a size in MiB")?;
                o.shm_size_mib = Some(
                    v.parse()
                        .map_err(|_| format!("--shm-size: {v:?} is not a number of MiB"))?,
                );
            }
            "--mode" => o.mode = Some(it.next().ok_or("--mode needs a value")?.clone()),
            "--script" => {
                o.script = Some(
                    it.next()
                        .ok_or("--script needs a name from qemu/scripts")?
                        .clone(),
                )
            }
            "--runtime" => {
                let v = it.next().ok_or("--runtime needs seconds")?;
                let n: u32 = v
                    .parse()
                    .map_err(|_| format!("--runtime: {v:?} is not a number of seconds"))?;
                o.runtime = Some(n.clamp(1, 300));
            }
            "--blocks" => {
                let v = it.next().ok_or("--blocks needs a number of data blocks")?;
                let n: u64 = v
                    .parse()
                    .map_err(|_| format!("--blocks: {v:?} is not a number of blocks"))?;
                o.blocks = Some(n);
            }
            "--media" => {
                let v = it.next().ok_or("--media needs PATH[:SIZE_MIB]")?;
                let (p, size) = match v.rsplit_once(':') {
                    Some((p, n)) => (
                        p,
                        n.parse()
                            .map_err(|_| format!("--media: {n:?} is not a size in MiB"))?,
                    ),
                    None => (v.as_str(), 256),
                };
                o.media = Some((p.into(), size));
            }
            "--opt" => {
                let v = it.next().ok_or("--opt needs KEY=VALUE")?;
                let (k, val) = v
                    .split_once('=')
                    .ok_or_else(|| format!("--opt: {v:?} is not KEY=VALUE"))?;
                o.opts.push((k.to_string(), val.to_string()));
            }
            "--" => {
                o.qemu_extra.extend(it.by_ref().cloned());
            }
            "-h" | "--help" => return Err(String::new()),
            s if s.starts_with('-') => return Err(format!("unknown option {s:?}")),
            s if o.cmd == "ktest" && o.filter.is_none() => o.filter = Some(s.to_string()),
            "fio" | "journal" if o.cmd == "bench" && o.filter.is_none() => {
                o.filter = Some(a.clone())
            }
            s => return Err(format!("unexpected argument {s:?}")),
        }
        first = false;
    }
    Ok(o)
}

/// Resolve a topology by name with the options' shared-file settings.
fn resolve_topology(o: &Opts, name: &str) -> Result<Topology, String> {
    let mut shared = SharedFile::default_for(name);
    if let Some(p) = &o.shm {
        shared.path = p.clone();
    }
    if let Some(s) = o.shm_size_mib {
        shared.size_mib = s;
    }
    let t = topology::load(name, &shared)?;
    t.prepare_files()?;
    Ok(t)
}

/// The device VM these options describe.
fn device_vm(o: &Opts, topo: Option<&Topology>) -> DeviceVm {
    let mut d = DeviceVm {
        firmware: o.firmware,
        memory_mib: o.memory_mib,
        ..Default::default()
    };
    if let Some(l) = &o.log {
        d = d.option("log", l);
    }
    if let Some(m) = &o.mode {
        d = d.option("mode", m);
    }
    for (k, v) in &o.opts {
        d = d.option(k, v);
    }
    d.media = o.media.as_ref().map(|(p, _)| p.clone());
    d.topology = topo.cloned();
    d.extra = o.qemu_extra.clone();
    d
}

fn cmd_run(o: &Opts) -> Result<KernelStatus, String> {
    let elf = image::build_kernel(o.release).map_err(|e| e.to_string())?;
    let img = image::make_image(&elf, o.firmware).map_err(|e| e.to_string())?;
    let topo = o
        .topology
        .as_deref()
        .map(|n| resolve_topology(o, n))
        .transpose()?;
    // The console is ours: type `stop`, `stats`, `trace on` in backend mode.
    if let Some((p, mib)) = &o.media {
        topology::ensure_file(p, mib << 20)?;
    }
    let vm = Vm::spawn_with_input(
        "device",
        &device_vm(o, topo.as_ref()).command(&img),
        Echo::Lines,
        Input::Inherit,
    )
    .map_err(|e| e.to_string())?;
    let out = vm.wait(o.timeout);
    eprintln!(
        "boot: device {} after {:.1} s",
        out.status.describe(),
        out.elapsed.as_secs_f64()
    );
    Ok(out.status)
}

fn run_one_test(o: &Opts, elf: &KernelElf) -> Result<(), String> {
    let src = std::fs::read_to_string(&elf.src).unwrap_or_default();
    let expect = Expectation::parse(&elf.name, &src);
    let img = image::make_image(elf, o.firmware).map_err(|e| e.to_string())?;
    // A test that declares a topology gets its own backing file.
    let topo = match &expect.topology {
        Some(name) => {
            let mut shared = SharedFile::default_for(name);
            shared.path = format!(
                "/dev/shm/cbdfw-ktest-{}-{}.raw",
                elf.name,
                std::process::id()
            )
            .into();
            shared.size_mib = 256;
            let t = topology::load(name, &shared)?;
            t.prepare_files()?;
            Some(t)
        }
        None => None,
    };
    let vm = Vm::spawn(
        &elf.name,
        &device_vm(o, topo.as_ref()).command(&img),
        Echo::Quiet,
    )
    .map_err(|e| e.to_string())?;
    let out = vm.wait(o.timeout);
    if let Some(t) = &topo {
        let _ = std::fs::remove_file(&t.shm);
        let _ = std::fs::remove_file(format!("{}.lsa", t.shm.display()));
    }
    let verdict = expect.judge(&out.status, &out.output);
    if verdict.is_err() {
        eprintln!(
            "---- serial output of {} ----\n{}---- end of {} ----",
            elf.name, out.output, elf.name
        );
    }
    verdict
}

fn cmd_bench_journal(o: &Opts) -> Result<boot::bench::journal::JournalReport, String> {
    let elf = image::build_kernel(o.release).map_err(|e| e.to_string())?;
    let img = image::make_image(&elf, o.firmware).map_err(|e| e.to_string())?;
    let mut b = boot::bench::journal::JournalBench::new();
    if let Some(n) = o.blocks {
        b.blocks = n;
    }
    if let Some(r) = o.runtime {
        b.secs = r as f64;
    }
    if let Some((p, mib)) = &o.media {
        b.media = p.clone();
        b.media_mib = *mib;
    }
    b.options = o.opts.clone();
    boot::bench::journal::run(&img, &b)
}

fn cmd_ktest(o: &Opts) -> Result<bool, String> {
    let mut elfs = image::build_kernel_tests().map_err(|e| e.to_string())?;
    if let Some(f) = &o.filter {
        elfs.retain(|e| e.name.contains(f.as_str()));
    }
    if elfs.is_empty() {
        return Err("no kernel test binaries matched".into());
    }
    elfs.sort_by(|a, b| a.name.cmp(&b.name));
    let mut failed = Vec::new();
    for elf in &elfs {
        let r = run_one_test(o, elf);
        match &r {
            Ok(()) => eprintln!("ktest {} ... PASS", elf.name),
            Err(why) => {
                eprintln!("ktest {} ... FAIL: {why}", elf.name);
                failed.push(elf.name.clone());
            }
        }
    }
    eprintln!(
        "ktest: {} passed, {} failed {:?}",
        elfs.len() - failed.len(),
        failed.len(),
        failed
    );
    Ok(failed.is_empty())
}

fn cmd_test(o: &Opts) -> Result<bool, String> {
    // Integration tests boot the device kernel; build its image once, up front.
    let elf = image::build_kernel(false).map_err(|e| e.to_string())?;
    // …and the guest's host program, for the guest and paired-VM tests.
    let host_bin = qemu::guest::build_host_binary().map_err(|e| e.to_string())?;
    eprintln!("== native, integration and paired-VM tests ==");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = std::process::Command::new(cargo)
        .current_dir(image::workspace_root())
        .env("CBDFW_KERNEL_ELF", &elf.path)
        .env("CBDFW_HOST_BIN", &host_bin)
        .args(["test", "--workspace", "--exclude", "kernel"])
        .status()
        .map_err(|e| format!("cannot run cargo test: {e}"))?;
    if !st.success() {
        eprintln!("test: native tests FAILED");
        return Ok(false);
    }
    eprintln!("== kernel tests (in QEMU) ==");
    let ok = cmd_ktest(o)?;
    eprintln!("test: {}", if ok { "all passed" } else { "FAILED" });
    Ok(ok)
}

/// The guest script of the demo and the interactive shell's helper.
fn guest_script(name: &str) -> Result<String, String> {
    qemu::pair::script(name)
}

/// The device VM's boot image for the paired VMs (the demo and the shell).
fn device_image() -> Result<std::path::PathBuf, String> {
    image::kernel_image_for_tests(Firmware::Bios).map_err(|e| e.to_string())
}

/// Both VMs, a short workload in Linux, the device's summary, clean shutdown.
fn cmd_demo(o: &Opts) -> Result<i32, String> {
    let topo = o.topology.clone().unwrap_or_else(|| "ivshmem".into());
    eprintln!(
        "demo: device VM (cbdfw) + Linux VM (cbd-host -> /dev/ublkb0) on one shared file ({topo})"
    );
    let name = o.script.as_deref().unwrap_or("demo");
    // The script reports `RESULT $T …`; the harness looks for the run's name.
    let body = format!(
        "TOPO={topo}\n{}\n{}",
        guest_script("lib")?,
        guest_script(name)?
    )
    .replace(&format!("T={name}\n"), "T=demo\n");
    let mut spec = PairSpec::new("demo", &topo, &body);
    spec.echo = Echo::Lines;
    if o.trace {
        spec.device_opts.push(("trace".into(), "on".into()));
    }
    spec.device_opts.extend(o.opts.iter().cloned());
    let out = run_pair(&spec, Some(&device_image()?))?;
    let dev = out.device.as_ref().ok_or("device VM missing")?;
    let summary = dev
        .output
        .lines()
        .find(|l| l.contains("serve: stopped:"))
        .unwrap_or_default()
        .to_string();
    let field = |k: &str| -> Option<u64> {
        summary
            .split(&format!("{k}="))
            .nth(1)?
            .split(' ')
            .next()?
            .trim()
            .parse()
            .ok()
    };
    let (reqs, bytes, errors) = (field("requests"), field("bytes"), field("errors"));
    if out.guest_ok("demo") && dev.status == KernelStatus::Success && errors == Some(0) {
        eprintln!(
            "demo: guest: {}",
            out.result_line("demo").unwrap_or_default()
        );
        eprintln!("demo: device: {}", summary.trim());
        println!(
            "demo: ok requests={} bytes={} errors=0",
            reqs.unwrap_or(0),
            bytes.unwrap_or(0)
        );
        Ok(0)
    } else {
        println!(
            "demo: FAILED guest={:?} device={} errors={errors:?} (consoles in {})",
            out.result_line("demo"),
            dev.status.describe(),
            out.logs.display()
        );
        Ok(1)
    }
}

/// The device VM plus an interactive Linux shell on the same shared memory.
fn cmd_shell(o: &Opts) -> Result<i32, String> {
    let topo = o.topology.clone().unwrap_or_else(|| "ivshmem".into());
    let mut spec = PairSpec::new("shell", &topo, &guest_script("lib")?);
    spec.echo = Echo::Quiet;
    spec.interactive = true;
    eprintln!(
        "shell: in the guest, run `cbd-host --transport {} --queues 2 &` then use /dev/ublkb0; `poweroff -f` ends it",
        if topo.starts_with("cxl") {
            "/dev/dax0.0 --format (after cxl create-region / ndctl create-namespace)"
        } else {
            "ivshmem"
        }
    );
    let out = run_pair(&spec, Some(&device_image()?))?;
    if let Some(d) = &out.device {
        eprintln!(
            "shell: device {}",
            d.output
                .lines()
                .find(|l| l.contains("serve: stopped:"))
                .unwrap_or("")
        );
    }
    Ok(0)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let o = match parse_args(&args) {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("boot: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(if e.is_empty() { 0 } else { runner::ERROR });
        }
    };
    let result = match o.cmd.as_str() {
        "run" => cmd_run(&o).map(|s| s.exit_code()),
        "demo" => cmd_demo(&o),
        "shell" => cmd_shell(&o),
        "bench" if o.filter.as_deref() == Some("journal") => cmd_bench_journal(&o).map(|r| {
            print!("{}", r.text());
            if r.device_stopped { 0 } else { 1 }
        }),
        "bench" => boot::bench::fio::run(o.runtime.unwrap_or(5)).map(|s| {
            println!("{}", boot::bench::fio::table(&s));
            0
        }),
        "ktest" => cmd_ktest(&o).map(|ok| if ok { 0 } else { 1 }),
        "test" => cmd_test(&o).map(|ok| if ok { 0 } else { 1 }),
        _ => unreachable!("parse_args only accepts known commands"),
    };
    match result {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("boot: {e}");
            ExitCode::from(runner::ERROR)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn parses_options_and_passthrough() {
        let o = parse_args(&s(&[
            "--uefi",
            "--timeout",
            "30",
            "--",
            "-device",
            "ivshmem-plain",
        ]))
        .unwrap();
        assert_eq!(
            (o.cmd.as_str(), o.firmware, o.timeout.as_secs()),
            ("run", Firmware::Uefi, 30)
        );
        assert_eq!(o.qemu_extra, s(&["-device", "ivshmem-plain"]));
        let o = parse_args(&s(&["ktest", "basic"])).unwrap();
        assert_eq!(o.filter.as_deref(), Some("basic"));
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        assert!(
            parse_args(&s(&["--timeout", "soon"]))
                .unwrap_err()
                .contains("not a number")
        );
        assert!(
            parse_args(&s(&["--log", "loud"]))
                .unwrap_err()
                .contains("unknown level")
        );
        assert!(
            parse_args(&s(&["--frobnicate"]))
                .unwrap_err()
                .contains("unknown option")
        );
    }
}
