//! `boot`'s command line (clap derive): what `cargo run -- …`, `cargo krun`,
//! `cargo ktest` and `cargo xtest` (aliases in `.cargo/config.toml`) accept.
//!
//! No arguments at all: the demo. Options without a command: the device VM by
//! itself (`boot device OPTIONS`). Every command takes every option (an option a
//! command does not use is ignored); the help groups them by what they are for.
//! Bad input is an error with the usage, and exit status 2.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use qemu::Firmware;

const EXAMPLES: &str = "\
With no arguments: the demo. Options without a command: the device VM alone.

Examples:
  cargo run                                   the demo (device VM + Linux VM, ext4 on the CBD disk)
  cargo run -- demo --topology cxl            the same over emulated CXL memory
  cargo run -- device --uefi                  the device VM alone, under OVMF
  cargo run -- device --topology ivshmem --mode backend --media disk.img:256
  cargo run -- device --log debug -- -d int   QEMU arguments after --
  cargo ktest basic                           the kernel tests whose name contains \"basic\"
";

/// The examples and the exit statuses (from `device::exit_code`).
fn after_help() -> String {
    let mut s = format!("{EXAMPLES}\nExit status:\n");
    for (status, meaning) in device::exit_code::RUNNER_STATUSES {
        s += &format!("  {status:>3}  {meaning}\n");
    }
    s
}

/// Builds the cbdfw device kernel and runs it under QEMU: alone, paired with a Linux
/// VM, as kernel tests, or as benchmarks.
#[derive(Parser, Debug)]
#[command(
    name = "boot",
    args_conflicts_with_subcommands = true,
    after_help = after_help()
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options alone: the device VM by itself.
    #[command(flatten)]
    pub options: Options,
}

#[derive(Subcommand, Debug, Clone, PartialEq)]
pub enum Command {
    /// Both VMs on one shared file: ext4 on the CBD disk in Linux, the device's
    /// summary, a clean shutdown (the default with no arguments)
    Demo(Options),
    /// The device VM alone: platform report, or what `--mode` asks; exits with its status
    #[command(alias = "run")]
    Device(Options),
    /// The device VM plus an interactive Linux shell on the same shared memory
    Shell(Options),
    /// Benchmarks on two VMs (fio) or on the device kernel (journal)
    Bench(BenchArgs),
    /// Boot every kernel test binary (kernel/tests/*.rs) in QEMU and judge it
    Ktest(KtestArgs),
    /// Native, integration and paired-VM tests, then the kernel tests (the CI command)
    Test(Options),
    /// Decode a CBD transport file read-only (a live /dev/shm file or a saved copy):
    /// records, liveness, channel pointers, entries in flight, what is wrong; no VM
    Inspect(InspectArgs),
    /// Protocol lessons: break one rule on the adversarial memory, watch what goes
    /// wrong, then see the correct version pass (native, seconds; no VM). No NAME: the list
    Lesson(LessonArgs),
}

/// `lesson`: which one and how much to show (docs/lessons.md).
#[derive(Args, Debug, Clone, PartialEq)]
#[command(
    after_help = "Exit status: 0 the lesson ran as designed (its broken run failed, its fixed \
                        run passed) or the list was printed, 1 it did not run as designed, 2 bad \
                        input or no such lesson."
)]
pub struct LessonArgs {
    /// The lesson to run; without it, the list
    #[arg(value_name = "NAME", value_parser = parse_lesson)]
    pub name: Option<String>,
    /// The first scenario seed to try [default: the lesson's own]
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Seeds tried, from the first, until the broken run fails the way the lesson says
    #[arg(long, value_name = "N", default_value_t = 20,
          value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub tries: u64,
    /// Trace lines shown up to the failure (0: none)
    #[arg(long, value_name = "LINES", default_value_t = 40)]
    pub context: usize,
    /// Only what happened: no rule, source or trace
    #[arg(long, short, conflicts_with = "verbose")]
    pub quiet: bool,
    /// The whole trace, record upkeep (record writes, heartbeats) included
    #[arg(long, short)]
    pub verbose: bool,
}

fn parse_lesson(v: &str) -> Result<String, String> {
    match lessons::find(v) {
        Some(l) => Ok(l.name.to_string()),
        None => Err(lessons::unknown(v)),
    }
}

/// `inspect`: what to read and how to show it.
#[derive(Args, Debug, Clone, PartialEq)]
#[command(after_help = "Exit status: 0 nothing wrong, 1 the report has errors, 2 bad input.")]
#[command(group(clap::ArgGroup::new("picture").args(["svg", "png"]).multiple(true)))]
pub struct InspectArgs {
    /// The transport file, e.g. /dev/shm/cbdfw-ivshmem.raw (optional with --svg)
    #[arg(value_name = "PATH")]
    pub path: Option<PathBuf>,
    /// Print JSON (for scripts) instead of text
    #[arg(long)]
    pub json: bool,
    /// Refresh every SECS seconds (default 1) until interrupted
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "1",
          value_parser = parse_secs, conflicts_with = "picture")]
    pub watch: Option<f64>,
    /// Judge heartbeats at this CLOCK_REALTIME time in ns [default: now]
    #[arg(long, value_name = "NS")]
    pub now: Option<u64>,
    /// Write a picture of the layout to OUT.svg (with PATH: its live pointers)
    #[arg(long, value_name = "OUT")]
    pub svg: Option<PathBuf>,
    /// The same picture as PNG, to OUT.png (rendered with the machine's fonts)
    #[arg(long, value_name = "OUT")]
    pub png: Option<PathBuf>,
    /// The channel segment --svg/--png draws [default: the first one in use]
    #[arg(long, value_name = "ID", requires = "picture")]
    pub segment: Option<u32>,
}

fn parse_secs(v: &str) -> Result<f64, String> {
    match v.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= 3600.0 => Ok(s),
        _ => Err(format!("{v:?} is not a number of seconds in (0, 3600]")),
    }
}

/// Which benchmark `bench` runs.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bench {
    /// fio 4K QD1/QD32: CBD ublk vs virtio-blk vs ublk null, in one Linux guest
    Fio,
    /// Journal commit on the device kernel with a virtio-blk disk: FUA vs tokens
    Journal,
    /// One fio job (--job) on the CBD disk, the device counting TSC cycles per phase
    Profile,
}

#[derive(Args, Debug, Clone, PartialEq)]
pub struct BenchArgs {
    #[arg(value_enum, value_name = "BENCH", default_value_t = Bench::Fio)]
    pub which: Bench,
    #[command(flatten)]
    pub options: Options,
}

#[derive(Args, Debug, Clone, PartialEq)]
pub struct KtestArgs {
    /// Only the test binaries whose name contains FILTER
    pub filter: Option<String>,
    #[command(flatten)]
    pub options: Options,
}

const LOG_LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Every option; each command uses those that concern it.
#[derive(Args, Debug, Clone, PartialEq)]
pub struct Options {
    /// Boot under UEFI (OVMF)
    #[arg(long, overrides_with = "bios", help_heading = "Device VM")]
    pub uefi: bool,
    /// Boot under BIOS (the default)
    #[arg(long, overrides_with = "uefi", help_heading = "Device VM")]
    pub bios: bool,
    /// Build the kernel with the release profile
    #[arg(long, help_heading = "Device VM")]
    pub release: bool,
    /// Kill QEMU after SECS seconds (the device alone, each kernel test)
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 120,
        help_heading = "Device VM"
    )]
    pub timeout: u64,
    /// The device's log level
    #[arg(long, value_name = "LEVEL", value_parser = LOG_LEVELS, help_heading = "Device VM")]
    pub log: Option<String>,
    /// The device VM's RAM
    #[arg(
        long,
        value_name = "MIB",
        default_value_t = 512,
        help_heading = "Device VM"
    )]
    pub memory: u64,
    /// QEMU topology: qemu/topologies/NAME.args (cxl, cxl2rp, ivshmem)
    #[arg(long, value_name = "NAME", help_heading = "Device VM")]
    pub topology: Option<String>,
    /// The topology's shared backing file (default /dev/shm/cbdfw-NAME.raw)
    #[arg(long, value_name = "PATH", help_heading = "Device VM")]
    pub shm: Option<PathBuf>,
    /// Size of the shared backing file (a multiple of 256)
    #[arg(long = "shm-size", value_name = "MIB", help_heading = "Device VM")]
    pub shm_size: Option<u64>,
    /// What the device does this boot (see kernel/src/main.rs), e.g. backend
    #[arg(long, value_name = "MODE", help_heading = "Device VM")]
    pub mode: Option<String>,
    /// Any other device option, e.g. serve-secs=10 (docs/kernel.md); repeatable
    #[arg(long = "opt", value_name = "KEY=VALUE", value_parser = parse_key_value, help_heading = "Device VM")]
    pub opts: Vec<(String, String)>,
    /// virtio-blk disk image, the device's durable media (created, default 256 MiB)
    #[arg(long, value_name = "PATH[:MIB]", value_parser = parse_media, help_heading = "Device VM")]
    pub media: Option<(PathBuf, u64)>,
    /// demo: print every protocol event on the device console
    #[arg(long, help_heading = "Demo")]
    pub trace: bool,
    /// demo: run qemu/scripts/NAME.sh instead of demo.sh
    #[arg(long, value_name = "NAME", help_heading = "Demo")]
    pub script: Option<String>,
    /// bench: fio seconds per job / journal seconds per mode (1-300, default 5)
    #[arg(long, value_name = "SECS", help_heading = "Bench")]
    pub runtime: Option<u32>,
    /// bench journal: data blocks per transaction (default 4)
    #[arg(long, value_name = "N", help_heading = "Bench")]
    pub blocks: Option<u64>,
    /// bench fio: cbd-host queues (1-8, default 1)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=8), help_heading = "Bench")]
    pub queues: Option<u32>,
    /// bench profile: the fio job, RW:BS:QD (default write:1m:4)
    #[arg(long, value_name = "RW:BS:QD", value_parser = crate::bench::profile::Job::parse, help_heading = "Bench")]
    pub job: Option<crate::bench::profile::Job>,
    /// bench fio: where the JSON and SVG of the run go (default target/bench)
    #[arg(long = "bench-out", value_name = "DIR", help_heading = "Bench")]
    pub bench_out: Option<PathBuf>,
    /// Extra QEMU arguments for the device VM
    #[arg(last = true, value_name = "QEMU-ARGS")]
    pub qemu_args: Vec<String>,
}

impl Options {
    pub fn firmware(&self) -> Firmware {
        if self.uefi {
            Firmware::Uefi
        } else {
            Firmware::Bios
        }
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout)
    }

    /// `--runtime`, held to 1–300 s.
    pub fn runtime(&self) -> Option<u32> {
        self.runtime.map(|n| n.clamp(1, 300))
    }
}

fn parse_key_value(v: &str) -> Result<(String, String), String> {
    let (k, val) = v
        .split_once('=')
        .ok_or_else(|| format!("{v:?} is not KEY=VALUE"))?;
    Ok((k.to_string(), val.to_string()))
}

fn parse_media(v: &str) -> Result<(PathBuf, u64), String> {
    match v.rsplit_once(':') {
        Some((p, n)) => Ok((
            p.into(),
            n.parse()
                .map_err(|_| format!("{n:?} is not a size in MiB"))?,
        )),
        None => Ok((v.into(), 256)),
    }
}

/// What to do, resolved from the command line.
#[derive(Debug, Clone, PartialEq)]
pub enum Cmd {
    Demo,
    Device,
    Shell,
    Bench(Bench),
    /// With the name filter.
    Ktest(Option<String>),
    Test,
    Inspect(InspectArgs),
    Lesson(LessonArgs),
}

/// Parse `boot`'s arguments (without the program name). On error, `clap::Error::exit`
/// prints the message and the usage and exits 2 (0 for `--help`).
pub fn parse_args<S: AsRef<str>>(args: &[S]) -> Result<(Cmd, Options), clap::Error> {
    // No arguments at all: the demo, with its defaults.
    let args: Vec<&str> = if args.is_empty() {
        vec!["demo"]
    } else {
        args.iter().map(|a| a.as_ref()).collect()
    };
    let cli = Cli::try_parse_from(std::iter::once("boot").chain(args))?;
    Ok(match cli.command {
        None => (Cmd::Device, cli.options),
        Some(Command::Demo(o)) => (Cmd::Demo, o),
        Some(Command::Device(o)) => (Cmd::Device, o),
        Some(Command::Shell(o)) => (Cmd::Shell, o),
        Some(Command::Bench(b)) => (Cmd::Bench(b.which), b.options),
        Some(Command::Ktest(k)) => (Cmd::Ktest(k.filter), k.options),
        Some(Command::Test(o)) => (Cmd::Test, o),
        Some(Command::Inspect(a)) => {
            if a.path.is_none() && a.svg.is_none() && a.png.is_none() {
                use clap::CommandFactory;
                return Err(Cli::command().error(
                    clap::error::ErrorKind::MissingRequiredArgument,
                    "inspect needs PATH (or --svg/--png OUT for the layout alone)",
                ));
            }
            let defaults = Cli::try_parse_from(["boot"])?.options;
            (Cmd::Inspect(a), defaults)
        }
        Some(Command::Lesson(a)) => {
            let defaults = Cli::try_parse_from(["boot"])?.options;
            (Cmd::Lesson(a), defaults)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;

    fn ok<S: AsRef<str> + std::fmt::Debug>(args: &[S]) -> (Cmd, Options) {
        parse_args(args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    fn err(args: &[&str]) -> clap::Error {
        match parse_args(args) {
            Ok(r) => panic!("{args:?} parsed: {r:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn the_cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn no_arguments_is_the_demo_and_options_alone_the_device() {
        let (c, o) = ok::<&str>(&[]);
        assert_eq!(c, Cmd::Demo);
        assert_eq!(
            (o.firmware(), o.timeout(), o.memory, o.release),
            (Firmware::Bios, Duration::from_secs(120), 512, false)
        );
        let (c, o) = ok(&[
            "--uefi",
            "--timeout",
            "30",
            "--",
            "-device",
            "ivshmem-plain",
        ]);
        assert_eq!(
            (c, o.firmware(), o.timeout().as_secs()),
            (Cmd::Device, Firmware::Uefi, 30)
        );
        assert_eq!(o.qemu_args, ["-device", "ivshmem-plain"]);
        assert_eq!(ok(&["--", "-d", "int"]).0, Cmd::Device);
        // `run` is the old name of `device`.
        assert_eq!(ok(&["run", "--release"]).0, Cmd::Device);
    }

    #[test]
    fn every_option_parses() {
        let (c, o) = ok(&[
            "device",
            "--uefi",
            "--release",
            "--timeout",
            "7",
            "--log",
            "debug",
            "--memory",
            "1024",
            "--topology",
            "cxl",
            "--shm",
            "/dev/shm/x.raw",
            "--shm-size",
            "512",
            "--mode",
            "backend",
            "--opt",
            "serve-secs=10",
            "--opt",
            "trace=on",
            "--media",
            "disk.img:64",
            "--trace",
            "--script",
            "one-write",
            "--runtime",
            "1000",
            "--blocks",
            "8",
            "--",
            "-d",
            "int",
        ]);
        assert_eq!(c, Cmd::Device);
        assert_eq!(o.firmware(), Firmware::Uefi);
        assert!(o.release && o.trace);
        assert_eq!((o.timeout, o.memory), (7, 1024));
        assert_eq!(o.log.as_deref(), Some("debug"));
        assert_eq!(o.topology.as_deref(), Some("cxl"));
        assert_eq!(o.shm, Some(PathBuf::from("/dev/shm/x.raw")));
        assert_eq!(
            (o.shm_size, o.mode.as_deref()),
            (Some(512), Some("backend"))
        );
        assert_eq!(
            o.opts,
            [
                ("serve-secs".into(), "10".into()),
                ("trace".into(), "on".into())
            ]
        );
        assert_eq!(o.media, Some(("disk.img".into(), 64)));
        assert_eq!(o.script.as_deref(), Some("one-write"));
        assert_eq!((o.runtime(), o.blocks), (Some(300), Some(8)));
        assert_eq!(o.qemu_args, ["-d", "int"]);
        // The later of --uefi / --bios wins; --media without a size is 256 MiB.
        assert_eq!(ok(&["--uefi", "--bios"]).1.firmware(), Firmware::Bios);
        assert_eq!(ok(&["--bios", "--uefi"]).1.firmware(), Firmware::Uefi);
        assert_eq!(
            ok(&["--media", "d.img"]).1.media,
            Some(("d.img".into(), 256))
        );
        assert_eq!(ok(&["bench", "--runtime", "0"]).1.runtime(), Some(1));
        let o = ok(&["bench", "--queues", "2", "--bench-out", "/tmp/b"]).1;
        assert_eq!((o.queues, o.bench_out), (Some(2), Some("/tmp/b".into())));
    }

    #[test]
    fn commands_and_their_positionals() {
        assert_eq!(ok(&["bench"]).0, Cmd::Bench(Bench::Fio));
        assert_eq!(ok(&["bench", "fio"]).0, Cmd::Bench(Bench::Fio));
        assert_eq!(ok(&["bench", "journal"]).0, Cmd::Bench(Bench::Journal));
        assert_eq!(
            ok(&["bench", "--runtime", "3", "journal", "--blocks", "2"]).0,
            Cmd::Bench(Bench::Journal)
        );
        assert_eq!(ok(&["ktest"]).0, Cmd::Ktest(None));
        assert_eq!(ok(&["ktest", "basic"]).0, Cmd::Ktest(Some("basic".into())));
        let (c, o) = ok(&["ktest", "--uefi", "should_fail", "--", "-d", "int"]);
        assert_eq!(c, Cmd::Ktest(Some("should_fail".into())));
        assert_eq!((o.firmware(), o.qemu_args.len()), (Firmware::Uefi, 2));
        assert_eq!(ok(&["test"]).0, Cmd::Test);
        assert_eq!(ok(&["shell", "--topology", "cxl"]).0, Cmd::Shell);
        assert_eq!(ok(&["demo", "--trace"]).0, Cmd::Demo);
    }

    #[test]
    fn bad_input_is_a_clear_error_with_status_2() {
        let cases: [(&[&str], ErrorKind, &str); 11] = [
            (
                &["--frobnicate"],
                ErrorKind::UnknownArgument,
                "--frobnicate",
            ),
            (
                &["device", "--frobnicate"],
                ErrorKind::UnknownArgument,
                "--frobnicate",
            ),
            (&["--timeout", "abc"], ErrorKind::ValueValidation, "abc"),
            (&["--timeout"], ErrorKind::InvalidValue, "--timeout"),
            (&["--log", "loud"], ErrorKind::InvalidValue, "debug"),
            (
                &["--opt", "novalue"],
                ErrorKind::ValueValidation,
                "KEY=VALUE",
            ),
            (&["--media", "d.img:big"], ErrorKind::ValueValidation, "MiB"),
            (&["bench", "disk"], ErrorKind::InvalidValue, "journal"),
            (
                &["bench", "--queues", "9"],
                ErrorKind::ValueValidation,
                "1..=8",
            ),
            (&["frobnicate"], ErrorKind::UnknownArgument, "frobnicate"),
            // A command comes first (as before): options, then a command, is an error.
            (&["--uefi", "device"], ErrorKind::UnknownArgument, "device"),
        ];
        for (args, kind, says) in cases {
            let e = err(args);
            assert_eq!(e.kind(), kind, "{args:?}: {e}");
            assert_eq!(e.exit_code(), 2, "{args:?}");
            let text = e.to_string();
            assert!(text.contains(says), "{args:?}: {text}");
            assert!(text.contains("--help"), "{args:?}: {text}");
        }
        assert!(matches!(
            err(&["test", "extra"]).kind(),
            ErrorKind::UnknownArgument
        ));
        assert!(err(&["ktest", "a", "b"]).exit_code() == 2);
    }

    #[test]
    fn inspect_parses_and_refuses_bad_input_with_status_2() {
        let Cmd::Inspect(a) = ok(&["inspect", "/dev/shm/x.raw"]).0 else {
            panic!("not inspect")
        };
        assert_eq!(
            a.path.as_deref(),
            Some(std::path::Path::new("/dev/shm/x.raw"))
        );
        assert_eq!(
            (a.json, a.watch, a.now, a.svg.is_none()),
            (false, None, None, true)
        );
        let Cmd::Inspect(a) = ok(&["inspect", "--json", "--watch", "--now", "5", "f"]).0 else {
            panic!("not inspect")
        };
        assert_eq!((a.json, a.watch, a.now), (true, Some(1.0), Some(5)));
        let Cmd::Inspect(a) = ok(&["inspect", "--svg", "o.svg", "--segment", "2"]).0 else {
            panic!("not inspect")
        };
        assert_eq!((a.path, a.segment), (None, Some(2)));
        let Cmd::Inspect(a) = ok(&["inspect", "f", "--png", "o.png", "--segment", "1"]).0 else {
            panic!("not inspect")
        };
        assert_eq!((a.png.is_some(), a.svg, a.segment), (true, None, Some(1)));
        for (args, says) in [
            (&["inspect"][..], "needs PATH"),
            (&["inspect", "--watch", "0", "f"], "seconds"),
            (&["inspect", "--now", "x", "f"], "invalid digit"),
            (&["inspect", "--segment", "1", "f"], "--svg"),
            (
                &["inspect", "--svg", "o.svg", "--watch", "2", "f"],
                "cannot be used",
            ),
            (
                &["inspect", "f", "--png", "o.png", "--watch"],
                "cannot be used",
            ),
        ] {
            let e = err(args);
            assert_eq!(e.exit_code(), 2, "{args:?}");
            assert!(e.to_string().contains(says), "{args:?}: {e}");
        }
    }

    #[test]
    fn lesson_parses_and_refuses_an_unknown_name_with_status_2() {
        let Cmd::Lesson(a) = ok(&["lesson"]).0 else {
            panic!("not lesson")
        };
        assert_eq!(
            (a.name, a.seed, a.tries, a.context, a.quiet, a.verbose),
            (None, None, 20, 40, false, false)
        );
        let Cmd::Lesson(a) = ok(&[
            "lesson",
            "dropped-write-back",
            "--seed",
            "7",
            "--tries",
            "3",
            "--context",
            "10",
            "-q",
        ])
        .0
        else {
            panic!("not lesson")
        };
        assert_eq!(a.name.as_deref(), Some("dropped-write-back"));
        assert_eq!(
            (a.seed, a.tries, a.context, a.quiet),
            (Some(7), 3, 10, true)
        );
        for (args, says) in [
            (&["lesson", "no-such-lesson"][..], "dropped-write-back"),
            (&["lesson", "--seed", "x"], "invalid digit"),
            (&["lesson", "--tries", "0"], "0"),
            (&["lesson", "-q", "-v"], "cannot be used"),
        ] {
            let e = err(args);
            assert_eq!(e.exit_code(), 2, "{args:?}");
            assert!(e.to_string().contains(says), "{args:?}: {e}");
        }
        let e = err(&["lesson", "no-such-lesson"]).to_string();
        for l in lessons::all() {
            assert!(e.contains(l.name), "the error lists {}: {e}", l.name);
        }
    }

    #[test]
    fn help_is_generated_and_exits_0() {
        for args in [
            &["--help"][..],
            &["-h"],
            &["bench", "--help"],
            &["ktest", "-h"],
        ] {
            let e = err(args);
            assert_eq!(e.kind(), ErrorKind::DisplayHelp, "{args:?}");
            assert_eq!(e.exit_code(), 0);
        }
        let help = err(&["--help"]).to_string();
        for s in [
            "demo",
            "device",
            "shell",
            "bench",
            "ktest",
            "test",
            "--topology",
            "--media",
            "QEMU-ARGS",
            "Exit status",
            "130  interrupted",
        ] {
            assert!(help.contains(s), "help lacks {s:?}:\n{help}");
        }
    }

    fn text(path: &str) -> String {
        let p = qemu::workspace_root().join(path);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    /// `cargo run -- ARGS`, `cargo krun ARGS`, `cargo ktest ARGS`, `cargo xtest` in a
    /// line of documentation, as `boot`'s arguments (synopses with `[…]` are skipped).
    fn doc_command(line: &str) -> Option<Vec<String>> {
        for (prefix, sub) in [
            ("cargo run --", None),
            ("cargo krun", None),
            ("cargo ktest", Some("ktest")),
            ("cargo xtest", Some("test")),
        ] {
            let Some(i) = line.find(prefix) else { continue };
            let rest = &line[i + prefix.len()..];
            if rest.starts_with(|c: char| !c.is_whitespace()) {
                continue;
            }
            let rest = rest.split(['#', '`', '─', '(']).next().unwrap_or("");
            if rest.contains('[') {
                return None;
            }
            let mut v: Vec<String> = sub.map(String::from).into_iter().collect();
            v.extend(rest.split_whitespace().map(String::from));
            return Some(v);
        }
        if line.contains("cargo run") && !line.contains("cargo run -") {
            return Some(Vec::new());
        }
        None
    }

    #[test]
    fn every_documented_command_parses() {
        let mut files = vec!["README.md".to_string()];
        for e in std::fs::read_dir(qemu::workspace_root().join("docs")).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "md") {
                files.push(format!("docs/{}", p.file_name().unwrap().to_string_lossy()));
            }
        }
        let mut n = 0;
        for f in &files {
            for line in text(f).lines() {
                let Some(args) = doc_command(line) else {
                    continue;
                };
                n += 1;
                match parse_args(&args) {
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::DisplayHelp => {}
                    Err(e) => panic!("{f}: {line:?} -> {args:?}:\n{e}"),
                }
            }
        }
        assert!(n >= 20, "only {n} documented commands found");
        // README's list, command by command.
        let readme = [
            (&[][..], Cmd::Demo),
            (&["demo", "--topology", "cxl"], Cmd::Demo),
            (&["demo", "--script", "one-write", "--trace"], Cmd::Demo),
            (&["shell"], Cmd::Shell),
            (&["bench"], Cmd::Bench(Bench::Fio)),
            (&["bench", "journal"], Cmd::Bench(Bench::Journal)),
            (&["device"], Cmd::Device),
            (&["device", "--uefi"], Cmd::Device),
            (
                &["device", "--topology", "cxl", "--mode", "region-selftest"],
                Cmd::Device,
            ),
            (&["device", "--topology", "cxl2rp"], Cmd::Device),
            (
                &[
                    "device",
                    "--topology",
                    "ivshmem",
                    "--mode",
                    "backend",
                    "--media",
                    "disk.img:256",
                ],
                Cmd::Device,
            ),
            (
                &["device", "--log", "debug", "--", "-device", "…"],
                Cmd::Device,
            ),
            (&["ktest", "basic"], Cmd::Ktest(Some("basic".into()))),
        ];
        let readme_text = text("README.md");
        for (args, want) in readme {
            assert_eq!(ok(args).0, want, "{args:?}");
            if !args.is_empty() && args[0] != "ktest" {
                let line = format!("cargo run -- {}", args.join(" "));
                assert!(readme_text.contains(&line), "README lacks {line:?}");
            }
        }
    }

    #[test]
    fn cargo_aliases_parse() {
        let config = text(".cargo/config.toml");
        let alias = |name: &str| -> Vec<String> {
            let line = config
                .lines()
                .find(|l| l.starts_with(&format!("{name} = ")))
                .unwrap_or_else(|| panic!("no alias {name}"));
            let cmd = line.split('"').nth(1).unwrap();
            let (cargo, boot) = cmd
                .split_once(" -- ")
                .unwrap_or((cmd.trim_end_matches(" --"), ""));
            assert!(cargo.contains("-p boot"), "{name}: {cmd}");
            boot.split_whitespace().map(String::from).collect()
        };
        assert_eq!(ok(&alias("krun")).0, Cmd::Demo);
        assert_eq!(ok(&alias("ktest")).0, Cmd::Ktest(None));
        assert_eq!(ok(&alias("xtest")).0, Cmd::Test);
        let mut k = alias("ktest");
        k.push("basic".into());
        assert_eq!(ok(&k).0, Cmd::Ktest(Some("basic".into())));
    }
}
