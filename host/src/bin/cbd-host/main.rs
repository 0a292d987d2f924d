//! `cbd-host`: exposes a CBD disk as a ublk block device. See `cbd-host --help` and docs/host.md.
//!
//! Build (static, runs in the bare guest initramfs):
//! `CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static" \
//!  cargo build -p host --release --target x86_64-unknown-linux-gnu`
//! (or `boot::guest::build_host_binary()`).

mod cli;

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cli::{BackendKind, Command};
use host::linux::cbd_disk::{self, CbdDisk};
use host::linux::disk::{Disk, RamDisk};
use host::linux::{attach, map, ublk};

fn main() -> ExitCode {
    // Bad input: a message naming the option, exit 2; --help/--version: stdout, exit 0.
    let cmd = cli::parse(std::env::args_os()).unwrap_or_else(|e| e.exit());
    match run(cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cbd-host: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Log lines on stderr as `cbd-host: LEVEL: message`; `-v` is debug, `RUST_LOG` refines it.
fn init_log(verbose: bool) {
    let level = if verbose {
        log::LevelFilter::Debug
    } else {
        log::LevelFilter::Info
    };
    env_logger::Builder::new()
        .filter_level(level)
        .parse_default_env()
        .format(|buf, r| writeln!(buf, "cbd-host: {}: {}", r.level(), r.args()))
        .init();
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "cbd-host".into())
}

fn run(cmd: Command) -> Result<(), Box<dyn std::error::Error>> {
    let args = match cmd {
        Command::Stop(id) => return Ok(ublk::stop(id)?),
        Command::Stats(id) => {
            let path = cli::default_stats_path(id);
            let s = std::fs::read_to_string(&path).map_err(|e| {
                format!("{path}: {e} (is a cbd-host serving /dev/ublkb{id} with default --stats?)")
            })?;
            print!("{s}");
            return Ok(());
        }
        Command::Inspect(a) => return inspect(&a),
        Command::Run(a) => a,
    };
    init_log(args.verbose);

    let history = match &args.history {
        Some(p) => {
            let f = std::fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()))?;
            let w: Box<dyn Write + Send> = Box::new(std::io::BufWriter::with_capacity(1 << 20, f));
            let log = cbd_disk::HistoryLog::new(w, cbd_disk::history_header())
                .map_err(|e| format!("{}: {e}", p.display()))?;
            log::info!("recording the request history in {}", p.display());
            let log = Arc::new(log);
            // A killed program loses what its buffer holds: write it out every second, so
            // that the history of a cbd-host killed mid-I/O ends at most a second early.
            let l = Arc::clone(&log);
            std::thread::spawn(move || {
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(1));
                    if let Err(e) = l.flush() {
                        log::warn!("history: {e}");
                    }
                }
            });
            Some(log)
        }
        None => None,
    };
    // Held for the life of the program: the proof that no other cbd-host of our host name
    // runs on this Linux, so records of that name which look alive are a dead one's.
    let mut _host_lock = None;
    let disk: Arc<dyn Disk> = match args.backend {
        BackendKind::Ram => {
            log::warn!("TEST MODE: serving an in-process RAM disk, not a CBD backend");
            let ram: &'static RamDisk = Box::leak(Box::new(RamDisk::new(args.ram_size)?));
            Arc::new(ram)
        }
        BackendKind::Cbd => {
            // The mapping lives as long as the program (queues borrow it).
            let mem = Box::leak(Box::new(map::map_transport(
                &args.transport,
                args.offset,
                args.size,
            )?));
            log::info!("write-back instruction: {:?}", mem.write_back_insn());
            let name = args.hostname.clone().unwrap_or_else(hostname);
            if args.ublk.recover {
                // Before touching the transport: the device exists and its server is dead.
                let o = ublk::check_recoverable(args.ublk.dev_id)?;
                log::info!(
                    "/dev/ublkb{} is orphaned (server pid {} is gone): taking it over",
                    o.dev_id,
                    o.old_pid
                );
            }
            let reclaim = match attach::HostLock::acquire(
                std::path::Path::new(cli::LOCK_DIR),
                &name,
            ) {
                Ok(attach::Lock::Held(l)) => {
                    log::debug!("host lock {} held", l.path.display());
                    _host_lock = Some(l);
                    true
                }
                Ok(attach::Lock::Busy(p)) => {
                    log::warn!(
                        "{} is held: another cbd-host named {name:?} runs here; its records are left alone",
                        p.display()
                    );
                    false
                }
                Err(e) => {
                    log::warn!(
                        "no host lock in {} ({e}): a dead predecessor's records wait for their 30 s timeout",
                        cli::LOCK_DIR
                    );
                    false
                }
            };
            let opts = attach::CbdOptions {
                hostname: name,
                backend_id: args.backend_id,
                queues: args.ublk.queues,
                depth: args.ublk.depth,
                noncoherent: args.noncoherent,
                format: args.format,
                wait_backend_ns: args.wait_backend_secs.saturating_mul(1_000_000_000),
                plain_v3: args.plain_v3,
                power_window_us: args.power_window_us,
                default_intent: args.default_intent,
                reclaim,
                recover_timeout_ns: args.recover_timeout_secs.saturating_mul(1_000_000_000),
                replay_bytes: (args.replay_buffer_mib as usize).saturating_mul(1 << 20),
            };
            let clock = Arc::new(attach::now_ns);
            Arc::new(CbdDisk::start_recording(
                mem,
                &opts,
                clock,
                history.clone(),
            )?)
        }
    };
    log::info!(
        "serving {} on {} queue(s) of depth {}",
        disk.describe(),
        args.ublk.queues,
        args.ublk.depth
    );

    let stats_stop = Arc::new(AtomicBool::new(false));
    type Writer = (String, std::thread::JoinHandle<()>);
    let stats_file: Arc<Mutex<Option<Writer>>> = Arc::new(Mutex::new(None));
    let (d, st_stop, st_file, st_arg) = (
        Arc::clone(&disk),
        Arc::clone(&stats_stop),
        Arc::clone(&stats_file),
        args.stats.clone(),
    );
    let ready = move |id: i32| {
        println!("cbd-host: ready /dev/ublkb{id}");
        std::io::stdout().flush().ok();
        let path = st_arg.unwrap_or_else(|| cli::default_stats_path(id));
        if !path.is_empty()
            && let Some(h) = spawn_stats_writer(d, path.clone(), id, st_stop)
        {
            *st_file.lock().unwrap_or_else(|p| p.into_inner()) = Some((path, h));
        }
        // SIGINT/SIGTERM: stop the device; `serve` then returns and deletes it.
        match signal_hook::iterator::Signals::new([
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGTERM,
        ]) {
            Ok(mut sigs) => {
                std::thread::spawn(move || {
                    if let Some(s) = sigs.forever().next() {
                        log::info!("signal {s}: stopping /dev/ublkb{id}");
                        if let Err(e) = ublk::stop(id) {
                            log::error!("{e}");
                        }
                    }
                });
            }
            Err(e) => log::warn!("no signal handling ({e}); stop with `cbd-host stop {id}`"),
        }
    };
    let served = ublk::serve(Arc::clone(&disk), &args.ublk, ready);
    stats_stop.store(true, Ordering::Release);
    let writer = stats_file.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some((p, h)) = writer {
        h.join().ok();
        std::fs::remove_file(p).ok();
    }
    disk.shutdown();
    if let Some(h) = &history {
        h.flush()?;
    }
    served?;
    let stats = disk.stats();
    println!("cbd-host: stopped; {stats}");
    Ok(())
}

/// `cbd-host inspect`: decode the transport read-only (`device::inspect`). A whole file is read
/// with positioned reads of a read-only descriptor; devdax, ivshmem and a window of a file are
/// opened read-only and mapped `PROT_READ` (`map::map_transport_read_only`), so the inspector
/// can never store into a live ring: its view has no store path that reaches memory.
fn inspect(a: &cli::InspectArgs) -> Result<(), Box<dyn std::error::Error>> {
    use device::inspect::{self, FileMem, Severity};
    use device::shm::Shm;
    use device::trace::NoTrace;
    init_log(false);
    let file;
    let mapped;
    let mem: &dyn device::shm::SharedMem = match &a.transport {
        map::TransportSpec::File(p) if a.offset == 0 && a.size.is_none() => {
            file = FileMem::open(p).map_err(|e| format!("{}: {e}", p.display()))?;
            &file
        }
        spec => {
            mapped = map::map_transport_read_only(spec, a.offset, a.size)?;
            &mapped
        }
    };
    loop {
        let now = a.now.unwrap_or_else(attach::now_ns);
        let r = inspect::inspect(Shm::new(mem, &NoTrace), now);
        let body = if a.json { r.to_json() } else { r.text() };
        match a.watch {
            Some(secs) => {
                print!(
                    "\x1b[2J\x1b[H{}: every {secs} s (Ctrl-C stops)\n{body}",
                    a.transport
                );
                std::io::stdout().flush().ok();
                std::thread::sleep(Duration::from_secs(secs));
            }
            None => {
                print!("{body}");
                if r.worst() == Some(Severity::Error) {
                    std::process::exit(1);
                }
                return Ok(());
            }
        }
    }
}

/// Rewrites `path` every second with one line of counters (`dev=ublkbN key=value ...`), until
/// `stop`. Written to a temporary file and renamed, so a reader never sees half a line.
fn spawn_stats_writer(
    disk: Arc<dyn Disk>,
    path: String,
    id: i32,
    stop: Arc<AtomicBool>,
) -> Option<std::thread::JoinHandle<()>> {
    if let Some(dir) = std::path::Path::new(&path).parent()
        && !dir.as_os_str().is_empty()
        && let Err(e) = std::fs::create_dir_all(dir)
    {
        log::warn!("stats: cannot create {}: {e}; no stats file", dir.display());
        return None;
    }
    let spawned = std::thread::Builder::new()
        .name("cbd-stats".into())
        .spawn(move || {
            let tmp = format!("{path}.tmp");
            while !stop.load(Ordering::Acquire) {
                let line = format!("dev=ublkb{id} {}\n", disk.stats());
                let r = std::fs::write(&tmp, line).and_then(|()| std::fs::rename(&tmp, &path));
                if let Err(e) = r {
                    log::warn!("stats: writing {path}: {e}; stats file stops");
                    return;
                }
                for _ in 0..10 {
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        });
    spawned
        .map_err(|e| log::warn!("stats: no writer thread ({e})"))
        .ok()
}
