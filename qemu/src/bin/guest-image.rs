//! `guest-image`: builds (or finds cached) the Linux guest image and prints its paths.
//!
//! ```text
//! cargo run -p boot --bin guest-image -- [--cache DIR] [--host] [--cxl] [--boot] [-- KERNEL ARGS]
//! ```
//! * `--host`  also builds the static host program and puts it at /usr/bin/cbd-host (a layer).
//! * `--cxl`   adds the CXL type-3 topology (backing files in DIR/shm/) when booting.
//! * `--boot`  starts the guest interactively in QEMU (TCG); Ctrl-A X quits.
//!
//! The QEMU invocation here is deliberately minimal; the project's runner will own it.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use qemu::guest;

struct StderrLog;
impl log::Log for StderrLog {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::max_level()
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            eprintln!("guest-image: {}: {}", r.level(), r.args());
        }
    }
    fn flush(&self) {}
}

const USAGE: &str =
    "usage: guest-image [--cache DIR] [--host] [--cxl] [--boot] [-v] [-- KERNEL ARGS...]";

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("guest-image: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<(), Box<dyn std::error::Error>> {
    let mut cache = guest::default_cache_dir();
    let (mut host, mut cxl, mut boot, mut verbose) = (false, false, false, false);
    let mut append: Vec<String> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--cache" => {
                cache = PathBuf::from(args.next().ok_or("--cache needs a directory")?);
            }
            "--host" => host = true,
            "--cxl" => cxl = true,
            "--boot" => boot = true,
            "-v" | "--verbose" => verbose = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            "--" => append.extend(args.by_ref()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}").into()),
        }
    }
    log::set_logger(&StderrLog).ok();
    log::set_max_level(if verbose {
        log::LevelFilter::Debug
    } else {
        log::LevelFilter::Info
    });

    let img = guest::ensure_image(&cache)?;
    println!("kernel  {}", img.kernel.display());
    println!("initrd  {}", img.initrd.display());
    println!("release {}", img.kernel_release);

    let mut initrd = img.initrd.clone();
    if host {
        let bin = guest::build_host_binary()?;
        let mut layer = guest::Layer::new();
        guest::add_host_binary(&mut layer, &bin)?;
        let layer_path = cache.join("host-layer.img");
        layer.write(&layer_path)?;
        initrd = cache.join("initrd-host.img");
        img.initrd_with(&[&layer_path], &initrd)?;
        println!("host    {}", bin.display());
        println!("initrd+ {}", initrd.display());
    }
    if !boot {
        return Ok(());
    }
    let mut qargs = guest::qemu_args(&img.kernel, &initrd, &append.join(" "), cxl);
    if cxl {
        let shm = cache.join("shm");
        std::fs::create_dir_all(&shm)?;
        let shared = qemu::topology::SharedFile {
            path: shm.join("cxl-mem.raw"),
            size_mib: 256,
        };
        let t = qemu::topology::load("cxl", &shared)?;
        t.prepare_files()?;
        qargs.extend(t.args);
    }
    eprintln!("guest-image: qemu-system-x86_64 {}", qargs.join(" "));
    let status = Command::new("qemu-system-x86_64").args(&qargs).status()?;
    if !status.success() {
        return Err(format!("qemu exited with {status}").into());
    }
    Ok(())
}
