//! One device VM and several Linux VMs on one shared file (`qemu::multihost`), driven in
//! phases with a deadline each (TCG on a shared 2-core machine: three VMs are slow, so
//! the I/O is small and every wait is explicit).
//!
//! * `several_hosts_*`: the device exports a RAM disk and a virtio-blk disk as backends 0
//!   and 1; Linux VM `a` runs verified fio rounds on backend 0 for the whole run, Linux VM
//!   `b` attaches to backend 1, has a third host try backend 0 (refused: clear message,
//!   non-zero exit) and runs its own verified fio, both VMs' I/O at once.
//! * `hostile_neighbour_*`: the channels of an idle second host are filled with garbage
//!   from outside while the first host runs verified fio on its own disk.
//! * `serve_under_load_*`: one Linux VM runs verified fio rounds for
//!   `CBDFW_SERVE_LOAD_SECS` (default 600) while the device answers `stats` on its console
//!   (sane and growing), then both are stopped: both VMs exit cleanly, the device with
//!   `serve: stopped … errors=0`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use qemu::Firmware;
use qemu::multihost::{self, GuestSpec, Hosts, HostsOutcome, HostsSpec};
use qemu::status::KernelStatus;

/// One multi-VM run at a time: the test harness runs tests in parallel threads, and
/// two of these runs (three VMs each) at once on a 2-core TCG machine miss their phase
/// deadlines.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// A guest script: lib.sh's helpers, the topology, `cbd-host` arguments, then `script`
/// with its `T=` renamed to `name`.
fn guest(name: &str, script: &str, hostargs: &str, env: &str) -> GuestSpec {
    let text = vmtests::script(script).replace(&format!("T={script}"), &format!("T={name}"));
    GuestSpec {
        name: name.into(),
        script: format!(
            "TOPO=ivshmem\nHOSTARGS='{hostargs}'\n{env}\n{}\n{text}",
            vmtests::script("lib")
        ),
    }
}

fn kernel() -> std::path::PathBuf {
    boot::image::kernel_image_for_tests(Firmware::Bios).expect("kernel image")
}

/// Panic with every console so far (the run is killed when `hosts` drops).
fn give_up(hosts: &Hosts, what: &str) -> ! {
    for vm in &hosts.linux {
        eprintln!("==== {} console ====\n{}", vm.name, vm.output());
    }
    eprintln!("==== device console ====\n{}", hosts.device.output());
    panic!("{what} (logs in {})", hosts.logs.display());
}

/// The device's `serve: stopped: …` line (empty when it printed none).
fn device_summary(out: &HostsOutcome) -> String {
    out.device
        .output
        .lines()
        .find(|l| l.contains("serve: stopped:"))
        .unwrap_or_default()
        .to_string()
}

/// The end of a run: every Linux VM powered off normally (QEMU exit 0), the device
/// stopped with `serve: stopped … errors=0`.
fn check_clean_end(out: &HostsOutcome) -> String {
    let dump = || {
        for (i, l) in out.linux.iter().enumerate() {
            eprintln!("==== linux {i}: {:?} ====\n{}", l.status, l.output);
        }
        eprintln!(
            "==== device: {:?} ====\n{}",
            out.device.status, out.device.output
        );
    };
    for (i, l) in out.linux.iter().enumerate() {
        if l.status != KernelStatus::Unexpected(Some(0)) {
            dump();
            panic!("Linux VM {i} did not power off cleanly: {:?}", l.status);
        }
    }
    let summary = device_summary(out);
    if out.device.status != KernelStatus::Success || !summary.contains("errors=0") {
        dump();
        panic!(
            "device: {:?}, summary {summary:?} (logs in {})",
            out.device.status,
            out.logs.display()
        );
    }
    summary
}

/// How long a guest may take from boot to `HOST-UP` (cbd-host attached, /dev/ublkb0).
const HOST_UP_LIMIT: Duration = Duration::from_secs(180);

/// Both Linux VMs attached (`HOST-UP`), then VM a's first verified fio round passed.
fn both_up_and_a_verified_round(hosts: &mut Hosts) {
    for i in 0..2 {
        if !hosts.linux[i].wait_for("HOST-UP", HOST_UP_LIMIT) {
            give_up(
                hosts,
                &format!("Linux VM {i}: no HOST-UP within {HOST_UP_LIMIT:?}"),
            );
        }
    }
    if !hosts.linux[0].wait_for("ROUND 1 OK", Duration::from_secs(300)) {
        give_up(hosts, "host a: no verified fio round within 300 s");
    }
}

/// Type `stats` on the device console and return its answer, which must come within
/// 30 s (the device serves its console while busy).
fn ask_stats(hosts: &mut Hosts) -> String {
    let seen = hosts.device.output().matches("stats: requests=").count();
    hosts.device.send_line("stats").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = hosts.device.output();
        if let Some(l) = out
            .lines()
            .filter(|l| l.contains("stats: requests="))
            .nth(seen)
        {
            return l.to_string();
        }
        if Instant::now() > deadline {
            give_up(hosts, "the device did not answer `stats` within 30 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn several_hosts(name: &str, noncoherent: bool) {
    let nc = if noncoherent { " --noncoherent" } else { "" };
    let a = guest(
        &format!("{name}-a"),
        "fio-loop",
        &format!("--backend-id 0 --hostname host-a{nc}"),
        "",
    );
    let b = guest(
        &format!("{name}-b"),
        "multi-third",
        &format!("--backend-id 1 --hostname host-b{nc}"),
        "",
    );
    let (tag_a, tag_b) = (a.name.clone(), b.name.clone());
    let mut spec = HostsSpec::new(name, "ram:32,virtio", vec![a, b]);
    if noncoherent {
        spec.device_opts.push(("noncoherent".into(), "on".into()));
    }
    let mut hosts = multihost::start(&spec, &kernel()).unwrap_or_else(|e| panic!("{name}: {e}"));
    let dev = hosts.device.output();
    assert!(
        dev.contains("ready: RAM disk 32 MiB, path /dev/cbdfw0")
            && dev.contains("ready: virtio-blk disk 32 MiB, path /dev/cbdfw1"),
        "the device's two backends: {dev}"
    );
    // Phase 1: both hosts attached, host a doing I/O.
    both_up_and_a_verified_round(&mut hosts);
    // Phase 2: host b's third host and its own fio, while host a's rounds go on.
    hosts.linux[1].send_line("go").unwrap();
    let b_done = format!("RESULT {tag_b} ");
    if !hosts.linux[1].wait_for(&b_done, Duration::from_secs(420)) {
        give_up(&hosts, "host b: no RESULT within 420 s");
    }
    let a_rounds_before = hosts.linux[0].output().matches("ROUND ").count();
    // Phase 3: stop host a after its current round; everything ends.
    hosts.linux[0].send_line("stop").unwrap();
    let out = hosts.finish(Duration::from_secs(300));
    let summary = check_clean_end(&out);
    let ra = out.result_line(0, &tag_a).unwrap_or_default();
    let rb = out.result_line(1, &tag_b).unwrap_or_default();
    assert!(
        ra.contains("OK") && rb.contains("OK"),
        "host a: {ra:?}, host b: {rb:?} (logs in {})",
        out.logs.display()
    );
    assert!(
        out.linux[1].output.contains("THIRD-HOST-REFUSED"),
        "host b printed no refusal"
    );
    eprintln!("{name}: a {ra} ({a_rounds_before} rounds while b ran) | b {rb} | device {summary}");
}

#[test]
fn several_hosts_ivshmem_each_on_its_own_disk() {
    let _one = one_at_a_time();
    several_hosts("several-hosts", false);
}

#[test]
fn several_hosts_ivshmem_noncoherent() {
    let _one = one_at_a_time();
    several_hosts("several-hosts-nc", true);
}

/// One `stats` answer: requests, completions, bytes, errors.
fn parse_stats(line: &str) -> Option<[u64; 4]> {
    let field = |k: &str| -> Option<u64> {
        let i = line.find(&format!(" {k}="))? + k.len() + 2;
        line[i..].split(' ').next()?.parse().ok()
    };
    Some([
        field("requests")?,
        field("completions")?,
        field("bytes")?,
        field("errors")?,
    ])
}

#[test]
fn serve_under_load_then_stop_both() {
    let _one = one_at_a_time();
    let secs: u64 = std::env::var("CBDFW_SERVE_LOAD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let name = "serve-load";
    let g = guest(&format!("{name}-linux"), "fio-loop", "", "");
    let tag = g.name.clone();
    let spec = HostsSpec::new(name, "ram:64", vec![g]);
    let mut hosts = multihost::start(&spec, &kernel()).unwrap_or_else(|e| panic!("{name}: {e}"));
    if !hosts.linux[0].wait_for("HOST-UP", HOST_UP_LIMIT) {
        give_up(&hosts, &format!("no HOST-UP within {HOST_UP_LIMIT:?}"));
    }
    // Phase 2: serve under load for `secs`, asking the device for `stats` every 30 s.
    let t0 = Instant::now();
    let mut samples: Vec<[u64; 4]> = Vec::new();
    while t0.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(
            Duration::from_secs(30).min(Duration::from_secs(secs).saturating_sub(t0.elapsed())),
        );
        let line = ask_stats(&mut hosts);
        let s = parse_stats(&line)
            .unwrap_or_else(|| give_up(&hosts, &format!("bad stats line {line:?}")));
        let [req, comp, bytes, errors] = s;
        if errors != 0 || comp > req || bytes == 0 {
            give_up(&hosts, &format!("insane stats: {line}"));
        }
        if let Some(prev) = samples.last()
            && !(req > prev[0] && comp > prev[1] && bytes > prev[2])
        {
            give_up(
                &hosts,
                &format!("stats did not grow under load: {prev:?} then {s:?}"),
            );
        }
        eprintln!("{name}: {:>4} s: {line}", t0.elapsed().as_secs());
        samples.push(s);
    }
    if hosts.linux[0].output().contains("RESULT ") {
        give_up(&hosts, "the guest's fio loop ended before the stop");
    }
    // Phase 3: stop both. The guest finishes its round, stops cbd-host, powers off.
    hosts.linux[0].send_line("stop").unwrap();
    let out = hosts.finish(Duration::from_secs(300));
    let summary = check_clean_end(&out);
    let r = out.result_line(0, &tag).unwrap_or_default();
    assert!(
        r.contains("OK"),
        "guest: {r:?} (logs in {})",
        out.logs.display()
    );
    assert!(samples.len() >= 2, "only {} stats answers", samples.len());
    eprintln!(
        "{name}: {secs} s under load, {} stats answers, guest {r} | device {summary}",
        samples.len()
    );
}

/// One channel of the hostile neighbour: where its submission ring and control struct
/// are in the shared file.
struct Target {
    seg: u32,
    ctrl: u64,
    submr: u64,
    submr_size: u64,
    se_size: u64,
}

/// The channels backend `backend` lists, read from the live shared file; none of them
/// may be listed by another backend (else the neighbour's garbage would land in a
/// channel it does not own and the test would prove nothing).
fn channels_of(shm: &std::path::Path, backend: u32) -> Vec<Target> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let r = device::inspect::inspect_file(shm, now).expect("read the shared file");
    r.segments
        .iter()
        .filter(|s| s.listed_by.contains(&backend))
        .map(|s| {
            assert_eq!(
                s.listed_by,
                vec![backend],
                "segment {} is listed by several backends",
                s.id
            );
            let c = s
                .channel
                .as_ref()
                .unwrap_or_else(|| panic!("segment {} of backend {backend}: no channel", s.id));
            Target {
                seg: s.id,
                ctrl: c.geom.ctrl,
                submr: c.geom.submr,
                submr_size: c.geom.submr_size,
                se_size: u64::from(c.geom.se_size),
            }
        })
        .collect()
}

/// How long the neighbour writes garbage (at least one whole fio round of host a runs
/// while it does).
const SCRIBBLE: Duration = Duration::from_secs(45);

/// Garbage into `targets` for `how_long`, the way a rogue host would write its own
/// channels: random bytes over submission entries, and the v3 `submr_head` moved to
/// legal and illegal positions (so the device walks garbage entries, and meets pointers
/// it must refuse). Returns the number of stores.
fn scribble(shm: &std::path::Path, targets: &[Target], how_long: Duration) -> u64 {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(shm)
        .expect("open the shared file for writing");
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ u64::from(std::process::id());
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let t0 = Instant::now();
    let mut stores = 0;
    while t0.elapsed() < how_long {
        let t = &targets[(next() % targets.len() as u64) as usize];
        let entries = t.submr_size / t.se_size;
        if next() % 5 == 0 {
            let head = if next() % 2 == 0 {
                ((next() % entries) * t.se_size) as u32
            } else {
                next() as u32
            };
            f.write_at(
                &head.to_le_bytes(),
                t.ctrl + device::layout::ctrl::SUBMR_HEAD,
            )
            .expect("store submr_head");
        } else {
            let mut junk = vec![0u8; t.se_size as usize];
            junk.iter_mut().for_each(|b| *b = next() as u8);
            f.write_at(&junk, t.submr + (next() % entries) * t.se_size)
                .expect("store an SE");
        }
        stores += 1;
        std::thread::sleep(Duration::from_millis(2));
    }
    stores
}

/// Isolation on real VMs: Linux VM `a` runs verified fio rounds on backend 0 while the
/// channels of Linux VM `b` (backend 1, attached, idle) are filled with garbage from
/// outside. Host a's every round still verifies, the device keeps answering on its
/// console and stops cleanly, and it did meet the garbage (errors or rejected entries
/// counted). The native counterpart is `tests/several_hosts.rs`.
#[test]
fn hostile_neighbour_cannot_change_another_hosts_reads() {
    let _one = one_at_a_time();
    let name = "hostile-neighbour";
    let a = guest(
        &format!("{name}-a"),
        "fio-loop",
        "--backend-id 0 --hostname host-a",
        "",
    );
    let b = guest(
        &format!("{name}-b"),
        "idle-host",
        "--backend-id 1 --hostname host-b",
        "",
    );
    let tag_a = a.name.clone();
    let spec = HostsSpec::new(name, "ram:32,ram:32", vec![a, b]);
    let mut hosts = multihost::start(&spec, &kernel()).unwrap_or_else(|e| panic!("{name}: {e}"));
    both_up_and_a_verified_round(&mut hosts);
    let targets = channels_of(&hosts.shm, 1);
    let own = channels_of(&hosts.shm, 0);
    if targets.is_empty() || own.is_empty() {
        give_up(&hosts, "backends 0 and 1 do not both list channels");
    }
    let rounds = |h: &Hosts| {
        h.linux[0]
            .output()
            .lines()
            .filter(|l| l.contains("ROUND ") && l.trim_end().ends_with(" OK"))
            .count()
    };
    let before = rounds(&hosts);
    let stores = scribble(&hosts.shm, &targets, SCRIBBLE);
    // Host a goes on: a round that began after the garbage stopped verifies too.
    let until = rounds(&hosts) + 2;
    let deadline = Instant::now() + Duration::from_secs(300);
    while rounds(&hosts) < until {
        if hosts.linux[0].output().contains("FAIL") || Instant::now() > deadline {
            give_up(&hosts, "host a: its fio rounds stopped verifying");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let during = rounds(&hosts) - before;
    ask_stats(&mut hosts);
    hosts.linux[0].send_line("stop").unwrap();
    hosts.linux[1].send_line("stop").unwrap();
    let out = hosts.finish(Duration::from_secs(300));
    let ra = out.result_line(0, &tag_a).unwrap_or_default();
    let summary = device_summary(&out);
    let count = |k: &str| -> u64 {
        summary
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(k))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    assert!(
        ra.contains("OK"),
        "host a: {ra:?} (logs in {})",
        out.logs.display()
    );
    assert_eq!(
        out.device.status,
        KernelStatus::Success,
        "device: {summary:?} (logs in {})",
        out.logs.display()
    );
    assert!(
        count("errors=") + count("rejected=") > 0,
        "the device never met the garbage ({stores} stores into segments {:?}): {summary}",
        targets.iter().map(|t| t.seg).collect::<Vec<_>>()
    );
    eprintln!(
        "{name}: {stores} garbage stores into backend 1's channels {:?}; host a {ra} ({during} rounds from the garbage on) | device {summary}",
        targets.iter().map(|t| t.seg).collect::<Vec<_>>()
    );
}
