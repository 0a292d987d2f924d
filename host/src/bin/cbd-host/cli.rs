//! Command line of `cbd-host`, declared with `clap` (derive): `--help` is generated from the
//! declarations below, and bad input is answered with a message naming the option and exit
//! status 2. The flag spellings are the ones the guest scripts (`qemu/scripts/`) use.

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use device::layout::chan;
use host::engine::Intent;
use host::linux::map::TransportSpec;
use host::linux::ublk::UblkOptions;

/// Where cbd-host keeps its host lock (`host-NAME.lock`, see `attach::HostLock`).
pub const LOCK_DIR: &str = "/run/cbd-host";

/// Where a running cbd-host keeps its counters by default (`cbd-host stats N` reads it).
pub fn default_stats_path(dev_id: i32) -> String {
    format!("/run/cbd-host/ublkb{dev_id}.stats")
}

/// Exposes a CBD disk as a ublk block device (/dev/ublkbN).
///
/// Runs in the foreground; SIGINT/SIGTERM stop and delete the device.
#[derive(Parser, Debug)]
#[command(
    name = "cbd-host",
    version,
    args_conflicts_with_subcommands = true,
    args_override_self = true,
    disable_help_subcommand = true,
    after_help = "SIZE/BYTES accept K, M, G suffixes (powers of 1024) and 0x hex."
)]
struct Cli {
    #[command(subcommand)]
    sub: Option<Sub>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Sub {
    /// Stop /dev/ublkbDEV_ID (served by another cbd-host).
    Stop {
        #[arg(value_name = "DEV_ID", allow_negative_numbers = true)]
        id: i32,
    },
    /// Print the counters of the running cbd-host serving /dev/ublkbDEV_ID.
    Stats {
        #[arg(value_name = "DEV_ID", allow_negative_numbers = true)]
        id: i32,
    },
    /// Decode the shared transport (records, liveness, channel pointers, entries in
    /// flight, what is wrong) without attaching or writing; exit 1 if it has errors.
    Inspect(InspectArgs),
}

/// `cbd-host inspect`: where the transport is and how to show it.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct InspectArgs {
    /// /dev/daxX.Y, ivshmem[:PCI-ADDR], or a file (read-only).
    #[arg(value_name = "T", default_value = "/dev/dax0.0", value_parser = TransportSpec::parse)]
    pub transport: TransportSpec,
    /// Offset of the transport in the device.
    #[arg(long, value_name = "BYTES", default_value = "0", value_parser = parse_size)]
    pub offset: u64,
    /// Bytes to map [default: the rest of the device].
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub size: Option<u64>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Refresh every SECS seconds (default 1) until interrupted.
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "1",
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub watch: Option<u64>,
    /// Judge heartbeats at this CLOCK_REALTIME time in ns [default: now].
    #[arg(long, value_name = "NS")]
    pub now: Option<u64>,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// What the ublk device serves.
    #[arg(long, value_enum, default_value_t = BackendKind::Cbd, help_heading = "Backend")]
    backend: BackendKind,
    /// RAM disk size (--backend ram).
    #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = parse_size,
          help_heading = "Backend")]
    ram_size: u64,

    /// /dev/daxX.Y (CXL region in devdax mode), ivshmem[:PCI-ADDR] (ivshmem BAR2), or a file.
    #[arg(long, value_name = "T", default_value = "/dev/dax0.0",
          value_parser = TransportSpec::parse, help_heading = "Transport (--backend cbd)")]
    transport: TransportSpec,
    /// Offset of the transport in the device (devdax: 2M aligned).
    #[arg(long, value_name = "BYTES", default_value = "0", value_parser = parse_size,
          help_heading = "Transport (--backend cbd)")]
    offset: u64,
    /// Bytes to map [default: the rest of the device].
    #[arg(long, value_name = "BYTES", value_parser = parse_size,
          help_heading = "Transport (--backend cbd)")]
    size: Option<u64>,
    /// Host name to register as [default: the kernel's nodename].
    #[arg(long, value_name = "NAME", value_parser = parse_hostname,
          help_heading = "Transport (--backend cbd)")]
    hostname: Option<String>,
    /// Backend to dev-start against.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0,
        help_heading = "Transport (--backend cbd)"
    )]
    backend_id: u32,
    /// Write back/invalidate around shared records (non-coherent sharing).
    #[arg(long, help_heading = "Transport (--backend cbd)")]
    noncoherent: bool,
    /// Format a CBD v3 transport if the mapping holds none (for a backend started with
    /// transport=wait); never overwrites a valid one.
    #[arg(long, help_heading = "Transport (--backend cbd)")]
    format: bool,
    /// Wait up to SECS for the backend to appear and be alive.
    #[arg(
        long = "wait-backend",
        value_name = "SECS",
        default_value_t = 0,
        allow_negative_numbers = true,
        help_heading = "Transport (--backend cbd)"
    )]
    wait_backend_secs: u64,
    /// Hold I/O up to SECS for a backend that died or restarts, then fail it with EIO.
    #[arg(
        long = "recover-timeout",
        value_name = "SECS",
        default_value_t = 120,
        help_heading = "Transport (--backend cbd)"
    )]
    recover_timeout_secs: u64,
    /// Replay buffer in MiB: written data kept until durable, replayed after a backend
    /// restart (0: none; the next flush fails with EIO instead).
    #[arg(
        long = "replay-buffer",
        value_name = "MIB",
        default_value_t = 32,
        help_heading = "Transport (--backend cbd)"
    )]
    replay_buffer_mib: u64,
    /// Plain CBD v3: none of our extensions (no durability tokens, no non-coherent mode, no
    /// DISCARD/WRITE_ZEROES); FUA = WRITE + CBD FLUSH, flush = CBD FLUSH.
    #[arg(long = "plain-v3", help_heading = "Transport (--backend cbd)")]
    plain_v3: bool,
    /// Power window this host guarantees, in µs (durability tokens only) [default: 0 = none].
    #[arg(
        long = "power-window-us",
        value_name = "N",
        allow_negative_numbers = true,
        help_heading = "Transport (--backend cbd)"
    )]
    power_window_us: Option<u64>,
    /// Intent of plain writes with durability tokens (FUA writes are always sent critical)
    /// [default: standard].
    #[arg(
        long = "default-intent",
        value_name = "I",
        value_enum,
        help_heading = "Transport (--backend cbd)"
    )]
    default_intent: Option<IntentArg>,

    /// Rewrite FILE every second with the counters (`--stats none` disables)
    /// [default: /run/cbd-host/ublkbN.stats].
    #[arg(long, value_name = "FILE", value_parser = parse_stats, help_heading = "Counters")]
    stats: Option<String>,
    /// Record every CBD request submitted and completed, the watermarks seen and backend
    /// restarts in FILE, in the history checker's format (`history check FILE`).
    #[arg(long, value_name = "FILE", help_heading = "Counters")]
    history: Option<std::path::PathBuf>,

    /// /dev/ublkbN number [default: chosen by the driver].
    #[arg(
        long = "dev-id",
        value_name = "N",
        allow_negative_numbers = true,
        help_heading = "ublk"
    )]
    dev_id: Option<i32>,
    /// Take over /dev/ublkbN whose cbd-host died (ublk user recovery): the block device
    /// stays, the requests the dead program had taken are served again. Same --queues as
    /// the dead program.
    #[arg(
        long,
        value_name = "N",
        value_parser = clap::value_parser!(i32).range(0..),
        allow_negative_numbers = true,
        conflicts_with = "dev_id",
        help_heading = "ublk"
    )]
    recover: Option<i32>,
    /// ublk queues = CBD channels.
    #[arg(long, value_name = "N", default_value_t = UblkOptions::default().queues,
          value_parser = clap::value_parser!(u16).range(1..=64), help_heading = "ublk")]
    queues: u16,
    /// Requests in flight per queue.
    #[arg(long, value_name = "N", default_value_t = UblkOptions::default().depth,
          value_parser = clap::value_parser!(u16).range(1..=4096), help_heading = "ublk")]
    depth: u16,
    /// Largest request: a multiple of 4096, at most 1M (the CBD request limit).
    #[arg(long = "io-buf", value_name = "BYTES", default_value = "512K",
          value_parser = parse_io_buf, help_heading = "ublk")]
    io_buf: u32,

    /// Debug logging (RUST_LOG refines it).
    #[arg(short, long)]
    verbose: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// The CBD backend behind the shared transport.
    Cbd,
    /// TEST MODE: an in-process RAM disk (no transport needed).
    Ram,
}

/// The intents a plain write may carry (CRITICAL is what FUA writes get).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum IntentArg {
    Standard,
    Ephemeral,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Args {
    pub backend: BackendKind,
    pub ram_size: u64,
    pub transport: TransportSpec,
    pub offset: u64,
    pub size: Option<u64>,
    pub hostname: Option<String>,
    pub backend_id: u32,
    pub noncoherent: bool,
    pub format: bool,
    pub wait_backend_secs: u64,
    pub recover_timeout_secs: u64,
    pub replay_buffer_mib: u64,
    pub plain_v3: bool,
    pub power_window_us: u64,
    pub default_intent: Intent,
    /// Counters file: `None` = the default path for the device, `Some("")` = none.
    pub stats: Option<String>,
    /// History file (`--history`).
    pub history: Option<std::path::PathBuf>,
    pub ublk: UblkOptions,
    pub verbose: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Run(Box<Args>),
    Stop(i32),
    Stats(i32),
    Inspect(InspectArgs),
}

/// `4096`, `64K`, `2M`, `1G`, `0x200000`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&t[..t.len() - 1], 1 << 20),
        Some('G' | 'g') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    let n = if let Some(h) = num.strip_prefix("0x") {
        u64::from_str_radix(h, 16)
    } else {
        num.parse::<u64>()
    }
    .map_err(|_| format!("bad size {s:?} (examples: 4096, 64K, 2M, 1G, 0x200000)"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} overflows"))
}

fn parse_io_buf(s: &str) -> Result<u32, String> {
    let v = parse_size(s)?;
    if v < 4096 || !v.is_multiple_of(4096) || v > chan::MAX_IO as u64 {
        return Err(format!(
            "{v} must be a multiple of 4096 and at most {}M (the CBD request limit)",
            chan::MAX_IO >> 20
        ));
    }
    Ok(v as u32)
}

fn parse_hostname(h: &str) -> Result<String, String> {
    if h.is_empty() || h.len() > 63 {
        return Err(format!("{h:?} must be 1..63 bytes"));
    }
    Ok(h.to_string())
}

/// `none` disables the file (kept as the empty path).
fn parse_stats(v: &str) -> Result<String, String> {
    match v {
        "" => Err("empty path (use `--stats none` to disable)".into()),
        "none" => Ok(String::new()),
        path => Ok(path.to_string()),
    }
}

/// Parses the arguments (with the program name first). `--help` and `--version` come back
/// as errors too ([`clap::Error::exit`] prints them and exits 0; real errors exit 2).
pub fn parse<I, T>(args: I) -> Result<Command, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = Cli::try_parse_from(args)?;
    match cli.sub {
        Some(Sub::Stop { id }) => return Ok(Command::Stop(id)),
        Some(Sub::Stats { id }) => return Ok(Command::Stats(id)),
        Some(Sub::Inspect(a)) => return Ok(Command::Inspect(a)),
        None => {}
    }
    let r = cli.run;
    if r.history.is_some() && r.backend == BackendKind::Ram {
        return Err(Cli::command().error(
            ErrorKind::ArgumentConflict,
            "--history records CBD requests: it needs --backend cbd",
        ));
    }
    if r.recover.is_some() && r.backend == BackendKind::Ram {
        return Err(Cli::command().error(
            ErrorKind::ArgumentConflict,
            "--recover takes over a CBD disk: it needs --backend cbd (a RAM disk died with its program)",
        ));
    }
    if r.plain_v3 {
        for (given, opt) in [
            (r.noncoherent, "--noncoherent"),
            (r.power_window_us.is_some(), "--power-window-us"),
            (r.default_intent.is_some(), "--default-intent"),
        ] {
            if given {
                return Err(Cli::command().error(
                    ErrorKind::ArgumentConflict,
                    format!("--plain-v3 excludes {opt} (an extension of CBD v3)"),
                ));
            }
        }
    }
    Ok(Command::Run(Box::new(Args {
        backend: r.backend,
        ram_size: r.ram_size,
        transport: r.transport,
        offset: r.offset,
        size: r.size,
        hostname: r.hostname,
        backend_id: r.backend_id,
        noncoherent: r.noncoherent,
        format: r.format,
        wait_backend_secs: r.wait_backend_secs,
        recover_timeout_secs: r.recover_timeout_secs,
        replay_buffer_mib: r.replay_buffer_mib,
        plain_v3: r.plain_v3,
        power_window_us: r.power_window_us.unwrap_or(0),
        default_intent: match r.default_intent {
            None | Some(IntentArg::Standard) => Intent::Standard,
            Some(IntentArg::Ephemeral) => Intent::Ephemeral,
        },
        stats: r.stats,
        history: r.history,
        ublk: UblkOptions {
            dev_id: r
                .recover
                .or(r.dev_id)
                .unwrap_or(UblkOptions::default().dev_id),
            queues: r.queues,
            depth: r.depth,
            io_buf_bytes: r.io_buf,
            recover: r.recover.is_some(),
        },
        verbose: r.verbose,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Command, clap::Error> {
        parse(std::iter::once("cbd-host").chain(s.split_whitespace()))
    }

    fn run(s: &str) -> Args {
        match p(s) {
            Ok(Command::Run(a)) => *a,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn the_declaration_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("64K").unwrap(), 64 << 10);
        assert_eq!(parse_size("2M").unwrap(), 2 << 20);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert_eq!(parse_size("0x200000").unwrap(), 2 << 20);
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
    }

    #[test]
    fn defaults_and_options() {
        let a = run("");
        assert_eq!(a.backend, BackendKind::Cbd);
        assert_eq!(a.ram_size, 64 << 20);
        assert_eq!(a.transport, TransportSpec::Dax("/dev/dax0.0".into()));
        assert_eq!(a.ublk, UblkOptions::default());
        assert_eq!((a.offset, a.size, a.hostname.as_deref()), (0, None, None));
        assert!(!a.verbose && !a.noncoherent && !a.format);
        let a = run("--backend ram --ram-size 32M --queues 2 --depth 16 --dev-id 3 -v");
        assert_eq!(a.backend, BackendKind::Ram);
        assert_eq!(a.ram_size, 32 << 20);
        assert_eq!((a.ublk.queues, a.ublk.depth, a.ublk.dev_id), (2, 16, 3));
        assert!(a.verbose);
        let a = run(
            "--transport ivshmem --offset 2M --size 64M --backend-id 1 --noncoherent --format --wait-backend 30",
        );
        assert_eq!(a.transport, TransportSpec::Ivshmem(None));
        assert_eq!(
            (a.offset, a.size, a.backend_id),
            (2 << 20, Some(64 << 20), 1)
        );
        assert!(a.noncoherent && a.format);
        assert_eq!(a.wait_backend_secs, 30);
        assert!(!a.plain_v3);
        assert_eq!(a.default_intent, Intent::Standard);
        assert_eq!(a.stats, None);
        assert_eq!(p("stop 2").unwrap(), Command::Stop(2));
        assert_eq!(p("stats 1").unwrap(), Command::Stats(1));
        let a = run("--power-window-us 5000 --default-intent ephemeral --stats /tmp/s");
        assert_eq!(a.power_window_us, 5000);
        assert_eq!(a.default_intent, Intent::Ephemeral);
        assert_eq!(a.stats.as_deref(), Some("/tmp/s"));
        assert_eq!(a.history, None);
        assert_eq!((a.recover_timeout_secs, a.replay_buffer_mib), (120, 32));
        let a = run("--recover-timeout 300 --replay-buffer 0");
        assert_eq!((a.recover_timeout_secs, a.replay_buffer_mib), (300, 0));
        let a = run("--history /tmp/h.txt");
        assert_eq!(
            a.history.as_deref(),
            Some(std::path::Path::new("/tmp/h.txt"))
        );
        let a = run("--plain-v3 --stats none --hostname guest --io-buf 1M");
        assert!(a.plain_v3);
        assert_eq!(a.stats.as_deref(), Some(""));
        assert_eq!(a.hostname.as_deref(), Some("guest"));
        assert_eq!(a.ublk.io_buf_bytes, chan::MAX_IO);
        // As the guest scripts call it (lib.sh's start_host, pair-nodevice.sh).
        let a = run("--transport /dev/dax0.0 --format --queues 2 --depth 32 --wait-backend 120");
        assert_eq!(a.transport, TransportSpec::Dax("/dev/dax0.0".into()));
        assert_eq!((a.ublk.queues, a.ublk.depth), (2, 32));
        let a = run("--transport ivshmem --recover 3 --queues 2");
        assert!(a.ublk.recover);
        assert_eq!((a.ublk.dev_id, a.ublk.queues), (3, 2));
        assert!(!run("--dev-id 3").ublk.recover);
        // A repeated option: the last one counts.
        assert_eq!(run("--queues 2 --queues 4").ublk.queues, 4);
    }

    #[test]
    fn inspect_parses() {
        let Ok(Command::Inspect(a)) = p("inspect") else {
            panic!("not inspect")
        };
        assert_eq!(a.transport, TransportSpec::Dax("/dev/dax0.0".into()));
        assert_eq!(
            (a.offset, a.size, a.json, a.watch, a.now),
            (0, None, false, None, None)
        );
        let Ok(Command::Inspect(a)) = p("inspect /dev/shm/t.raw --json --watch --now 7") else {
            panic!("not inspect")
        };
        assert_eq!(a.transport, TransportSpec::File("/dev/shm/t.raw".into()));
        assert_eq!((a.json, a.watch, a.now), (true, Some(1), Some(7)));
        let Ok(Command::Inspect(a)) = p("inspect ivshmem --offset 2M --watch 5") else {
            panic!("not inspect")
        };
        assert_eq!((a.offset, a.watch), (2 << 20, Some(5)));
        for (args, needle) in [
            ("inspect --watch 0", "--watch"),
            ("inspect --now x", "invalid digit"),
            ("inspect ivshmem:zz", "bad PCI address"),
            ("inspect a b", "unexpected argument 'b'"),
        ] {
            let e = p(args).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args}");
            assert!(e.to_string().contains(needle), "{args}: {e}");
        }
    }

    #[test]
    fn help_and_version_are_not_errors() {
        for (args, kind) in [
            ("--help", ErrorKind::DisplayHelp),
            ("-h", ErrorKind::DisplayHelp),
            ("--version", ErrorKind::DisplayVersion),
        ] {
            let e = p(args).unwrap_err();
            assert_eq!(e.kind(), kind, "{args}");
            assert_eq!(e.exit_code(), 0, "{args}");
        }
        let help = Cli::command().render_long_help().to_string();
        for opt in [
            "--backend",
            "--ram-size",
            "--transport",
            "--offset",
            "--size",
            "--hostname",
            "--backend-id",
            "--noncoherent",
            "--format",
            "--wait-backend",
            "--plain-v3",
            "--power-window-us",
            "--default-intent",
            "--stats",
            "--history",
            "--dev-id",
            "--recover",
            "--queues",
            "--depth",
            "--io-buf",
            "--verbose",
            "stop",
            "stats",
        ] {
            assert!(help.contains(opt), "--help lacks {opt}:\n{help}");
        }
    }

    #[test]
    fn bad_input_is_explained_and_exits_2() {
        for (args, needle) in [
            ("--backend disk", "possible values: cbd, ram"),
            ("--queues 0", "--queues"),
            ("--queues 65", "1..=64"),
            ("--depth 0", "--depth"),
            ("--depth", "a value is required"),
            ("--depth x", "invalid digit"),
            ("--io-buf 1000", "multiple of 4096"),
            ("--io-buf 2M", "at most 1M"),
            ("--ram-size 12Q", "bad size"),
            ("--transport ivshmem:zz", "bad PCI address"),
            (
                "--hostname 0123456789012345678901234567890123456789012345678901234567890123",
                "1..63 bytes",
            ),
            ("--stats=", "--stats none"),
            ("--backend ram --history /tmp/h", "needs --backend cbd"),
            ("--frobnicate", "unexpected argument '--frobnicate'"),
            ("stop", "DEV_ID"),
            ("stop 1 2", "unexpected argument '2'"),
            ("stats", "DEV_ID"),
            ("stats x", "invalid digit"),
            ("--queues 2 stop 0", "cannot be used"),
            (
                "--default-intent critical",
                "possible values: standard, ephemeral",
            ),
            ("--power-window-us -1", "invalid digit"),
            ("--recover -1", "--recover"),
            ("--recover 1 --dev-id 1", "cannot be used with"),
            ("--backend ram --recover 0", "needs --backend cbd"),
            ("--wait-backend -5", "--wait-backend"),
            (
                "--plain-v3 --noncoherent",
                "--plain-v3 excludes --noncoherent",
            ),
            (
                "--plain-v3 --power-window-us 10",
                "excludes --power-window-us",
            ),
            (
                "--default-intent ephemeral --plain-v3",
                "excludes --default-intent",
            ),
        ] {
            let e = p(args).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains(needle), "{args}: {msg}");
            assert_eq!(e.exit_code(), 2, "{args}: {msg}");
        }
    }
}
