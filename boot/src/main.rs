//! `boot`: the command behind `cargo run`, `cargo ktest` and `cargo xtest`.
//!
//! The command line is declared in `boot::cli` (`boot --help`): `demo` (the default),
//! `device`, `shell`, `bench [fio|journal]`, `ktest [FILTER]`, `test`, `inspect PATH`
//! (no VM: decode a transport file read-only, `device::inspect`), `lesson [NAME]` (no
//! VM: break one protocol rule and watch, the `lessons` crate); options alone
//! boot the device by itself; `-- QEMU-ARGS…` go to the device VM's QEMU.

use std::process::ExitCode;

use boot::cli::{self, Bench, Cmd, Options};
use boot::image::{self, KernelElf};
use boot::ktest::Expectation;
use device::exit_code::runner;
use qemu::device_vm::DeviceVm;
use qemu::pair::{PairSpec, run_pair};
use qemu::status::KernelStatus;
use qemu::topology::{self, SharedFile, Topology};
use qemu::{Echo, Firmware, Input, Vm};

/// Resolve a topology by name with the options' shared-file settings.
fn resolve_topology(o: &Options, name: &str) -> Result<Topology, String> {
    let mut shared = SharedFile::default_for(name);
    if let Some(p) = &o.shm {
        shared.path = p.clone();
    }
    if let Some(s) = o.shm_size {
        shared.size_mib = s;
    }
    let t = topology::load(name, &shared)?;
    t.prepare_files()?;
    Ok(t)
}

/// The device VM these options describe.
fn device_vm(o: &Options, topo: Option<&Topology>) -> DeviceVm {
    let mut d = DeviceVm {
        firmware: o.firmware(),
        memory_mib: o.memory,
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
    d.extra = o.qemu_args.clone();
    d
}

fn cmd_device(o: &Options) -> Result<KernelStatus, String> {
    let elf = image::build_kernel(o.release).map_err(|e| e.to_string())?;
    let img = image::make_image(&elf, o.firmware()).map_err(|e| e.to_string())?;
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
    // --timeout is the whole run.
    let left = vm.remaining(o.timeout());
    let out = vm.wait(left);
    eprintln!(
        "boot: device {} after {:.1} s",
        out.status.describe(),
        out.elapsed.as_secs_f64()
    );
    Ok(out.status)
}

fn run_one_test(o: &Options, elf: &KernelElf) -> Result<(), String> {
    let src = std::fs::read_to_string(&elf.src).unwrap_or_default();
    let expect = Expectation::parse(&elf.name, &src);
    let img = image::make_image(elf, o.firmware()).map_err(|e| e.to_string())?;
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
    // --timeout is the whole run of each test.
    let left = vm.remaining(o.timeout());
    let out = vm.wait(left);
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

fn cmd_bench_journal(o: &Options) -> Result<boot::bench::journal::JournalReport, String> {
    let elf = image::build_kernel(o.release).map_err(|e| e.to_string())?;
    let img = image::make_image(&elf, o.firmware()).map_err(|e| e.to_string())?;
    let mut b = boot::bench::journal::JournalBench::new();
    if let Some(n) = o.blocks {
        b.blocks = n;
    }
    if let Some(r) = o.runtime() {
        b.secs = r as f64;
    }
    if let Some((p, mib)) = &o.media {
        b.media = p.clone();
        b.media_mib = *mib;
    }
    b.options = o.opts.clone();
    boot::bench::journal::run(&img, &b)
}

fn cmd_ktest(o: &Options, filter: Option<&str>) -> Result<bool, String> {
    let mut elfs = image::build_kernel_tests().map_err(|e| e.to_string())?;
    if let Some(f) = filter {
        elfs.retain(|e| e.name.contains(f));
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

fn cmd_test(o: &Options) -> Result<bool, String> {
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
    let ok = cmd_ktest(o, None)?;
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
fn cmd_demo(o: &Options) -> Result<i32, String> {
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
fn cmd_shell(o: &Options) -> Result<i32, String> {
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

/// `lesson`: the list, or one lesson run (docs/lessons.md). 0: it ran as designed (the
/// broken run failed, the fixed run passed), 1: it did not.
fn cmd_lesson(a: &cli::LessonArgs) -> Result<i32, String> {
    let Some(name) = &a.name else {
        print!("{}", lessons::list_text());
        return Ok(0);
    };
    let lesson = lessons::find(name).ok_or_else(|| lessons::unknown(name))?;
    let o = lessons::Options {
        seed: a.seed,
        tries: a.tries,
        context: a.context,
        quiet: a.quiet,
        verbose: a.verbose,
    };
    let r = lessons::run(&lesson, &o);
    print!("{}", r.text);
    Ok(if r.as_designed() { 0 } else { 1 })
}

/// `inspect`: decode the file (again every `--watch` seconds), print text or JSON, or
/// write the layout picture. 0: nothing wrong, 1: the report has errors.
fn cmd_inspect(a: &cli::InspectArgs) -> Result<i32, String> {
    use device::inspect::{self, Severity};
    let now = || a.now.unwrap_or_else(device::native::now_ns);
    let read = |p: &std::path::Path| {
        inspect::inspect_file(p, now()).map_err(|e| format!("{}: {e}", p.display()))
    };
    if a.svg.is_some() || a.png.is_some() {
        let svg = match &a.path {
            Some(p) => read(p)?.svg(a.segment),
            None => inspect::svg::layout_svg(&inspect::svg::example_info(), None, None),
        };
        let png = match &a.png {
            Some(_) => boot::png::render(&svg).map_err(|e| format!("inspect --png: {e}"))?,
            None => Vec::new(),
        };
        for (out, bytes) in [(&a.svg, svg.as_bytes()), (&a.png, &png[..])] {
            if let Some(out) = out {
                std::fs::write(out, bytes).map_err(|e| format!("{}: {e}", out.display()))?;
                eprintln!("inspect: wrote {}", out.display());
            }
        }
        return Ok(0);
    }
    let path = a.path.as_deref().ok_or("inspect: no PATH")?;
    loop {
        let r = read(path)?;
        let body = if a.json { r.to_json() } else { r.text() };
        match a.watch {
            Some(secs) => {
                // Clear the terminal, then the fresh report.
                print!(
                    "\x1b[2J\x1b[H{}: every {secs} s (Ctrl-C stops)\n{body}",
                    path.display()
                );
                std::thread::sleep(std::time::Duration::from_secs_f64(secs));
            }
            None => {
                print!("{body}");
                return Ok(if r.worst() == Some(Severity::Error) {
                    1
                } else {
                    0
                });
            }
        }
    }
}

/// `bench fio`: the run, its table, and its JSON and SVG files.
fn cmd_bench_fio(o: &Options) -> Result<i32, String> {
    use boot::bench::fio;
    let r = fio::run(o.runtime().unwrap_or(5), o.queues.unwrap_or(1))?;
    print!("{}", fio::table(&r));
    let dir = o
        .bench_out
        .clone()
        .unwrap_or_else(|| qemu::workspace_root().join("target").join("bench"));
    let (j, s) = fio::save(&r, &dir)?;
    println!("wrote {} and {}", j.display(), s.display());
    Ok(0)
}

/// `bench profile`: one fio job, then where the device's cycles went.
fn cmd_bench_profile(o: &Options) -> Result<i32, String> {
    use boot::bench::profile;
    let job = o.job.clone().unwrap_or_default();
    let r = profile::run(&job, o.runtime().unwrap_or(5), &o.opts)?;
    println!(
        "fio {} {} QD{} on the CBD disk: {:.0} IOPS, {:.1} MiB/s, mean clat {:.1} us",
        r.job.rw,
        r.job.bs,
        r.job.qd,
        r.sample.iops,
        r.sample.mib_s(),
        r.sample.clat_us
    );
    for l in &r.lines {
        println!("{l}");
    }
    if let Some(n) = &r.null {
        println!(
            "the same job on the ublk null target: {:.0} IOPS, {:.1} MiB/s, mean clat {:.1} us (cbd/null {:.2})",
            n.iops,
            n.mib_s(),
            n.clat_us,
            if n.iops > 0.0 {
                r.sample.iops / n.iops
            } else {
                0.0
            }
        );
    }
    for (disk, c) in &r.cpu {
        println!(
            "guest CPU during fio on {disk}: {:.0}% of {} vCPUs busy (user {:.0}%, system {:.0}%); its server used {:.2} vCPU",
            c.busy * 100.0,
            c.ncpu,
            c.user * 100.0,
            c.system * 100.0,
            c.server_vcpus
        );
    }
    if !r.perf.is_empty() {
        println!("perf in the guest during fio on the CBD disk (cpu-clock, every vCPU):");
        for l in &r.perf {
            println!("  {l}");
        }
    }
    Ok(0)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Bad input: the message and the usage on stderr, exit 2 (`--help`: stdout, 0).
    let (cmd, o) = cli::parse_args(&args).unwrap_or_else(|e| e.exit());
    // Warnings of the libraries (e.g. the guest image builder); RUST_LOG=info for progress.
    qemu::init_logger("boot", "warn");
    let result = match cmd {
        Cmd::Device => cmd_device(&o).map(|s| s.exit_code()),
        Cmd::Demo => cmd_demo(&o),
        Cmd::Shell => cmd_shell(&o),
        Cmd::Bench(Bench::Journal) => cmd_bench_journal(&o).map(|r| {
            print!("{}", r.text());
            if r.device_stopped { 0 } else { 1 }
        }),
        Cmd::Bench(Bench::Fio) => cmd_bench_fio(&o),
        Cmd::Bench(Bench::Profile) => cmd_bench_profile(&o),
        Cmd::Ktest(filter) => cmd_ktest(&o, filter.as_deref()).map(|ok| if ok { 0 } else { 1 }),
        Cmd::Test => cmd_test(&o).map(|ok| if ok { 0 } else { 1 }),
        Cmd::Inspect(a) => cmd_inspect(&a),
        Cmd::Lesson(a) => cmd_lesson(&a),
    };
    match result {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("boot: {e}");
            ExitCode::from(runner::ERROR)
        }
    }
}
