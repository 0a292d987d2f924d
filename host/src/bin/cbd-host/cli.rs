//! Command line of `cbd-host`.

use host::engine::Intent;
use host::linux::map::TransportSpec;
use host::linux::ublk::UblkOptions;

/// Where a running cbd-host keeps its counters by default (`cbd-host stats N` reads it).
pub fn default_stats_path(dev_id: i32) -> String {
    format!("/run/cbd-host/ublkb{dev_id}.stats")
}

pub const USAGE: &str = "\
usage: cbd-host [OPTIONS]
       cbd-host stop DEV_ID
       cbd-host stats DEV_ID     print the counters of the running cbd-host serving ublkbDEV_ID

Exposes a CBD disk as a ublk block device (/dev/ublkbN). Runs in the foreground; SIGINT/SIGTERM
stop and delete the device.

Backend (what the ublk device serves):
  --backend cbd            the CBD backend behind the shared transport (default)
  --backend ram            TEST MODE: an in-process RAM disk (no transport needed)
  --ram-size SIZE          RAM disk size (default 64M)

Transport (--backend cbd):
  --transport T            /dev/daxX.Y (CXL region in devdax mode), ivshmem[:PCI-ADDR]
                           (ivshmem BAR2), or a file (default /dev/dax0.0)
  --offset BYTES           offset of the transport in the device (default 0; devdax: 2M aligned)
  --size BYTES             bytes to map (default: rest of the device)
  --hostname NAME          host name to register as (default: the kernel's nodename)
  --backend-id N           backend to dev-start against (default 0)
  --noncoherent            write back/invalidate around shared records (non-coherent sharing)
  --format                 format a CBD v3 transport if the mapping holds none (for a backend
                           started with transport=wait); never overwrites a valid one
  --wait-backend SECS      wait up to SECS for the backend to appear and be alive (default 0)
  --plain-v3               plain CBD v3: none of our extensions (no durability tokens, no
                           non-coherent mode, no DISCARD/WRITE_ZEROES); FUA = WRITE + CBD
                           FLUSH, flush = CBD FLUSH
  --power-window-us N      power window this host guarantees, in µs (default 0 = none;
                           durability tokens only)
  --default-intent I       intent of plain writes with durability tokens: standard (default)
                           or ephemeral

Counters:
  --stats FILE             rewrite FILE every second with the counters (default
                           /run/cbd-host/ublkbN.stats; `--stats none` disables)

ublk:
  --dev-id N               /dev/ublkbN number (default: chosen by the driver)
  --queues N               ublk queues = CBD channels (default 1)
  --depth N                requests in flight per queue (default 64)
  --io-buf BYTES           largest request (default 512K)

  -v, --verbose            debug logging
  -h, --help               this text
SIZE/BYTES accept K, M, G suffixes (powers of 1024).";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendKind {
    Cbd,
    /// Test mode.
    Ram,
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
    pub plain_v3: bool,
    pub power_window_us: u64,
    pub default_intent: Intent,
    /// Counters file: `None` = the default path for the device, `Some("")` = none.
    pub stats: Option<String>,
    pub ublk: UblkOptions,
    pub verbose: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Run(Box<Args>),
    Stop(i32),
    Stats(i32),
    Help,
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

fn num<T: std::str::FromStr>(opt: &str, v: &str) -> Result<T, String> {
    v.parse().map_err(|_| format!("{opt}: bad number {v:?}"))
}

/// Parses the arguments (without the program name).
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Command, String> {
    let mut it = args.into_iter().peekable();
    if let Some(sub @ ("stop" | "stats")) = it.peek().map(String::as_str) {
        let sub = sub.to_string();
        it.next();
        let id = it.next().ok_or(format!("{sub}: missing DEV_ID"))?;
        if let Some(extra) = it.next() {
            return Err(format!("{sub}: unexpected argument {extra:?}"));
        }
        let id = num(&sub, &id)?;
        return Ok(if sub == "stop" {
            Command::Stop(id)
        } else {
            Command::Stats(id)
        });
    }
    let (mut pw_given, mut intent_given) = (false, false);
    let mut a = Args {
        backend: BackendKind::Cbd,
        ram_size: 64 << 20,
        transport: TransportSpec::Dax("/dev/dax0.0".into()),
        offset: 0,
        size: None,
        hostname: None,
        backend_id: 0,
        noncoherent: false,
        format: false,
        wait_backend_secs: 0,
        plain_v3: false,
        power_window_us: 0,
        default_intent: Intent::Standard,
        stats: None,
        ublk: UblkOptions::default(),
        verbose: false,
    };
    while let Some(opt) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{opt} needs a value"));
        match opt.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-v" | "--verbose" => a.verbose = true,
            "--noncoherent" => a.noncoherent = true,
            "--format" => a.format = true,
            "--plain-v3" => a.plain_v3 = true,
            "--power-window-us" => {
                let v = val()?;
                pw_given = true;
                a.power_window_us = num(&opt, &v)?
            }
            "--default-intent" => {
                intent_given = true;
                a.default_intent = match val()?.as_str() {
                    "standard" => Intent::Standard,
                    "ephemeral" => Intent::Ephemeral,
                    other => {
                        return Err(format!(
                            "--default-intent: {other:?} is not standard or ephemeral \
                             (FUA writes are sent critical)"
                        ));
                    }
                }
            }
            "--stats" => {
                let v = val()?;
                if v.is_empty() {
                    return Err("--stats: empty path (use `--stats none` to disable)".into());
                }
                a.stats = Some(if v == "none" { String::new() } else { v })
            }
            "--wait-backend" => a.wait_backend_secs = num(&opt, &val()?)?,
            "--backend" => {
                a.backend = match val()?.as_str() {
                    "cbd" => BackendKind::Cbd,
                    "ram" => BackendKind::Ram,
                    other => return Err(format!("--backend: {other:?} is not cbd or ram")),
                }
            }
            "--ram-size" => a.ram_size = parse_size(&val()?)?,
            "--transport" => a.transport = TransportSpec::parse(&val()?)?,
            "--offset" => a.offset = parse_size(&val()?)?,
            "--size" => a.size = Some(parse_size(&val()?)?),
            "--hostname" => {
                let h = val()?;
                if h.is_empty() || h.len() > 63 {
                    return Err(format!("--hostname: {h:?} must be 1..63 bytes"));
                }
                a.hostname = Some(h)
            }
            "--backend-id" => a.backend_id = num(&opt, &val()?)?,
            "--dev-id" => a.ublk.dev_id = num(&opt, &val()?)?,
            "--queues" => a.ublk.queues = num(&opt, &val()?)?,
            "--depth" => a.ublk.depth = num(&opt, &val()?)?,
            "--io-buf" => {
                let v = parse_size(&val()?)?;
                a.ublk.io_buf_bytes =
                    u32::try_from(v).map_err(|_| format!("--io-buf: {v} too large"))?
            }
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    if a.plain_v3 {
        for (given, opt) in [
            (a.noncoherent, "--noncoherent"),
            (pw_given, "--power-window-us"),
            (intent_given, "--default-intent"),
        ] {
            if given {
                return Err(format!(
                    "--plain-v3 excludes {opt} (an extension of CBD v3)"
                ));
            }
        }
    }
    if a.ublk.queues == 0 || a.ublk.queues > 64 {
        return Err(format!("--queues: {} is not in 1..=64", a.ublk.queues));
    }
    if a.ublk.depth == 0 || a.ublk.depth > 4096 {
        return Err(format!("--depth: {} is not in 1..=4096", a.ublk.depth));
    }
    if a.ublk.io_buf_bytes < 4096
        || !a.ublk.io_buf_bytes.is_multiple_of(4096)
        || a.ublk.io_buf_bytes > 1 << 20
    {
        return Err(format!(
            "--io-buf: {} must be a multiple of 4096 and at most 1M (the CBD request limit)",
            a.ublk.io_buf_bytes
        ));
    }
    Ok(Command::Run(Box::new(a)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Command, String> {
        parse(s.split_whitespace().map(str::to_string))
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
        let Command::Run(a) = p("").unwrap() else {
            panic!()
        };
        assert_eq!(a.backend, BackendKind::Cbd);
        assert_eq!(a.transport, TransportSpec::Dax("/dev/dax0.0".into()));
        assert_eq!(a.ublk, UblkOptions::default());
        let Command::Run(a) =
            p("--backend ram --ram-size 32M --queues 2 --depth 16 --dev-id 3 -v").unwrap()
        else {
            panic!()
        };
        assert_eq!(a.backend, BackendKind::Ram);
        assert_eq!(a.ram_size, 32 << 20);
        assert_eq!((a.ublk.queues, a.ublk.depth, a.ublk.dev_id), (2, 16, 3));
        assert!(a.verbose);
        let Command::Run(a) =
            p("--transport ivshmem --offset 2M --size 64M --backend-id 1 --noncoherent --format --wait-backend 30").unwrap()
        else {
            panic!()
        };
        assert_eq!(a.transport, TransportSpec::Ivshmem(None));
        assert_eq!(
            (a.offset, a.size, a.backend_id),
            (2 << 20, Some(64 << 20), 1)
        );
        assert!(a.noncoherent && a.format);
        assert_eq!(a.wait_backend_secs, 30);
        assert_eq!(p("stop 2").unwrap(), Command::Stop(2));
        assert_eq!(p("stats 1").unwrap(), Command::Stats(1));
        assert!(!a.plain_v3);
        assert_eq!(a.default_intent, Intent::Standard);
        assert_eq!(a.stats, None);
        let Command::Run(a) =
            p("--power-window-us 5000 --default-intent ephemeral --stats /tmp/s").unwrap()
        else {
            panic!()
        };
        assert_eq!(a.power_window_us, 5000);
        assert_eq!(a.default_intent, Intent::Ephemeral);
        assert_eq!(a.stats.as_deref(), Some("/tmp/s"));
        let Command::Run(a) = p("--plain-v3 --stats none").unwrap() else {
            panic!()
        };
        assert!(a.plain_v3);
        assert_eq!(a.stats.as_deref(), Some(""));
        assert_eq!(p("--help").unwrap(), Command::Help);
    }

    #[test]
    fn bad_input_is_explained() {
        for (args, needle) in [
            ("--backend disk", "not cbd or ram"),
            ("--queues 0", "--queues"),
            ("--depth", "needs a value"),
            ("--depth x", "bad number"),
            ("--io-buf 1000", "multiple of 4096"),
            ("--io-buf 2M", "at most 1M"),
            ("--frobnicate", "unknown argument"),
            ("stop", "missing DEV_ID"),
            ("stop 1 2", "unexpected"),
            ("stats", "missing DEV_ID"),
            ("stats x", "bad number"),
            ("--default-intent critical", "not standard or ephemeral"),
            ("--power-window-us -1", "bad number"),
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
            assert!(e.contains(needle), "{args}: {e}");
        }
    }
}
