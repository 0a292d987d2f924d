//! `guest-image`: builds (or finds cached) the Linux guest image and prints its paths.
//!
//! ```text
//! cargo run -p qemu --bin guest-image -- [--cache DIR] [--host] [--cxl] [--boot] [-v] [-- KERNEL ARGS]
//! ```
//! `--help` says what each option does. The QEMU invocation here is deliberately
//! minimal (an interactive look at the guest); the tests and the paired VMs go
//! through `qemu::pair`.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use clap::Parser;
use qemu::guest;

/// Builds (or finds cached) the Linux guest image (kernel + initramfs from Debian
/// packages) and prints its paths; optionally boots it.
#[derive(Parser, Debug)]
#[command(name = "guest-image")]
struct Args {
    /// The cache directory [default: <workspace>/.cache/guest, or $CBDFW_GUEST_CACHE]
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
    /// Also build the static host program and put it at /usr/bin/cbd-host (a layer)
    #[arg(long)]
    host: bool,
    /// Add the CXL type-3 topology (backing files in DIR/shm/) when booting
    #[arg(long)]
    cxl: bool,
    /// Start the guest interactively in QEMU (TCG); Ctrl-A X quits
    #[arg(long)]
    boot: bool,
    /// Debug logging (RUST_LOG, if set, decides)
    #[arg(short, long)]
    verbose: bool,
    /// Extra kernel command line arguments
    #[arg(last = true, value_name = "KERNEL-ARGS")]
    append: Vec<String>,
}

fn main() -> ExitCode {
    // Bad input: clap's message and the usage, exit 2.
    let args = Args::parse();
    qemu::init_logger("guest-image", if args.verbose { "debug" } else { "info" });
    match real_main(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("guest-image: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let cache = args.cache.unwrap_or_else(guest::default_cache_dir);
    let img = guest::ensure_image(&cache)?;
    println!("kernel  {}", img.kernel.display());
    println!("initrd  {}", img.initrd.display());
    println!("release {}", img.kernel_release);

    let mut initrd = img.initrd.clone();
    if args.host {
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
    if !args.boot {
        return Ok(());
    }
    let mut qargs = guest::qemu_args(&img.kernel, &initrd, &args.append.join(" "), args.cxl);
    if args.cxl {
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(v: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("guest-image").chain(v.iter().copied()))
    }

    #[test]
    fn arguments_parse_and_bad_ones_exit_2() {
        Args::command().debug_assert();
        let a = parse(&[
            "--cache", "/tmp/c", "--host", "--cxl", "--boot", "-v", "--", "quiet", "x=1",
        ])
        .unwrap();
        assert_eq!(a.cache, Some(PathBuf::from("/tmp/c")));
        assert!(a.host && a.cxl && a.boot && a.verbose);
        assert_eq!(a.append, ["quiet", "x=1"]);
        let a = parse(&[]).unwrap();
        assert!(!a.host && !a.boot && a.cache.is_none() && a.append.is_empty());
        for bad in [&["--frobnicate"][..], &["--cache"], &["stray"]] {
            assert_eq!(parse(bad).unwrap_err().exit_code(), 2, "{bad:?}");
        }
        assert_eq!(parse(&["--help"]).unwrap_err().exit_code(), 0);
    }
}
