//! `bench profile`: one fio job on our ublk disk while the device counts TSC cycles
//! per phase of its serve loop (`device::profile`, device option `profile=on`); the
//! breakdown the device prints when it stops, with fio's figure for the same run.

use qemu::Firmware;
use std::time::Duration;

use qemu::pair::{PairSpec, run_pair_watched, script};

use super::fio::{Sample, parse_line};

/// A job: fio `--rw`, block size (`4k`, `1m`, …) and queue depth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    pub rw: String,
    pub bs: String,
    pub qd: u32,
}

impl Job {
    /// `RW:BS:QD`, e.g. `write:1m:4` or `randread:4k:1`.
    pub fn parse(v: &str) -> Result<Job, String> {
        let bad = || format!("{v:?} is not RW:BS:QD (e.g. write:1m:4, randread:4k:1)");
        let mut it = v.split(':');
        let (rw, bs, qd) = match (it.next(), it.next(), it.next(), it.next()) {
            (Some(r), Some(b), Some(q), None) => (r, b, q),
            _ => return Err(bad()),
        };
        if !["read", "write", "randread", "randwrite"].contains(&rw) {
            return Err(format!("{rw:?}: RW is read, write, randread or randwrite"));
        }
        let digits = bs.trim_end_matches(['k', 'm']);
        if digits.is_empty()
            || !digits.bytes().all(|c| c.is_ascii_digit())
            || bs.len() - digits.len() != 1
        {
            return Err(format!(
                "{bs:?}: BS is a number of KiB or MiB, e.g. 4k or 1m"
            ));
        }
        let qd = qd
            .parse::<u32>()
            .ok()
            .filter(|q| (1..=256).contains(q))
            .ok_or_else(bad)?;
        Ok(Job {
            rw: rw.into(),
            bs: bs.into(),
            qd,
        })
    }
}

impl Default for Job {
    fn default() -> Self {
        Job::parse("write:1m:4").expect("the default job parses")
    }
}

/// What one profiled run gave: fio's result and the device's breakdown lines; the same
/// job on the ublk null target; where the guest's CPU went during each.
pub struct ProfileRun {
    pub job: Job,
    pub sample: Sample,
    pub lines: Vec<String>,
    pub null: Option<Sample>,
    /// (disk, shares) for `cbd` and `null`, in the guest's order.
    pub cpu: Vec<(String, CpuShare)>,
    /// `perf report`'s rows for the guest during fio on our disk ([`perf_lines`]).
    pub perf: Vec<String>,
}

/// The guest's CPU during one fio run, from two `CPUSTAT` lines (before, after):
/// `CPUSTAT DISK before|after NCPU cpu USER NICE SYSTEM IDLE IOWAIT IRQ SOFTIRQ STEAL
/// [GUEST GUEST_NICE] SERVER_UTIME SERVER_STIME`, all in USER_HZ ticks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CpuShare {
    pub ncpu: u32,
    /// Busy share of all vCPUs together (1.0 = every vCPU busy all the time).
    pub busy: f64,
    /// Of that, user / system (system includes irq and softirq).
    pub user: f64,
    pub system: f64,
    /// The block server's process (cbd-host or rublk): its CPU time in vCPUs (1.0 = one
    /// vCPU all the time).
    pub server_vcpus: f64,
}

struct CpuSnap {
    ncpu: u32,
    /// user, nice, system, idle, iowait, irq, softirq, steal
    f: [u64; 8],
    server: u64,
}

fn parse_cpustat(line: &str) -> Option<(String, bool, CpuSnap)> {
    let rest = line.trim().strip_prefix("CPUSTAT ")?;
    let w: Vec<&str> = rest.split_whitespace().collect();
    // disk, before|after, ncpu, "cpu", 8..=10 counters, server utime, stime
    if w.len() < 14 || w[3] != "cpu" {
        return None;
    }
    let before = match w[1] {
        "before" => true,
        "after" => false,
        _ => return None,
    };
    let num = |s: &str| s.parse::<u64>().ok();
    let mut f = [0u64; 8];
    for (i, x) in f.iter_mut().enumerate() {
        *x = num(w[4 + i])?;
    }
    let n = w.len();
    let server = num(w[n - 2])? + num(w[n - 1])?;
    Some((
        w[0].to_string(),
        before,
        CpuSnap {
            ncpu: w[2].parse().ok().filter(|&c| c > 0)?,
            f,
            server,
        },
    ))
}

/// Every `CPUSTAT` before/after pair of a console, as shares.
pub fn cpu_shares(console: &str) -> Vec<(String, CpuShare)> {
    let mut open: Vec<(String, CpuSnap)> = Vec::new();
    let mut out = Vec::new();
    for (disk, before, snap) in console.lines().filter_map(parse_cpustat) {
        if before {
            open.retain(|(d, _)| *d != disk);
            open.push((disk, snap));
            continue;
        }
        let Some(i) = open.iter().position(|(d, _)| *d == disk) else {
            continue;
        };
        let (_, a) = open.remove(i);
        let d: Vec<u64> = (0..8).map(|i| snap.f[i].saturating_sub(a.f[i])).collect();
        let total: u64 = d.iter().sum();
        if total == 0 {
            continue;
        }
        let t = total as f64;
        let user = (d[0] + d[1]) as f64 / t;
        let system = (d[2] + d[5] + d[6]) as f64 / t;
        let wall_ticks = t / f64::from(a.ncpu);
        out.push((
            disk,
            CpuShare {
                ncpu: a.ncpu,
                busy: user + system,
                user,
                system,
                server_vcpus: snap.server.saturating_sub(a.server) as f64 / wall_ticks,
            },
        ));
    }
    out
}

/// The device's `profile:` lines of its first report, without the console's prefix.
/// A report starts with `profile: TSC at …`; the device prints one when asked (the
/// harness asks when fio ends) and another when it stops (which also covers the stop).
pub fn profile_lines(device_console: &str) -> Vec<String> {
    let mut reports = 0;
    device_console
        .lines()
        .filter_map(|l| l.find("profile: ").map(|i| l[i..].trim_end().to_string()))
        .filter(|l| {
            if l.starts_with("profile: TSC at") {
                reports += 1;
            }
            reports <= 1
        })
        .collect()
}

/// The guest's `PERF` lines (the sampled report of the fio run on our disk), without
/// the prefix: section headings (`samples-by …`) and `perf report` rows, up to `end`.
pub fn perf_lines(guest_console: &str) -> Vec<String> {
    guest_console
        .lines()
        .filter_map(|l| l.find("PERF ").map(|i| l[i + 5..].trim_end().to_string()))
        .take_while(|l| l != "end")
        .collect()
}

/// How long the harness waits for each of the guest script's markers.
const PHASE_LIMIT: Duration = Duration::from_secs(600);

/// `opts`: extra device options (`--opt KEY=VALUE`), e.g. the idle policy's.
pub fn run(job: &Job, runtime_secs: u32, opts: &[(String, String)]) -> Result<ProfileRun, String> {
    let body = format!(
        "TOPO=ivshmem\nRUNTIME={runtime_secs}\nQUEUES=1\nJOB={}:{}:{}\n{}\n{}",
        job.rw,
        job.bs,
        job.qd,
        script("lib")?,
        script("bench-profile")?
    );
    let mut spec = PairSpec::new("bench-profile", "ivshmem", &body);
    spec.disk_mib = 256;
    // The same job on the ublk null target follows, for the guest's CPU shares.
    spec.linux_files
        .push(("usr/bin/rublk".into(), super::fio::rublk_binary()?));
    // `perf` for the guest's side of the run, in a layer of its own.
    let perf = qemu::guest::tools_layer(
        &qemu::guest::default_cache_dir(),
        qemu::guest::PROFILE_TOOLS,
    )
    .map_err(|e| format!("perf for the guest: {e}"))?;
    spec.linux_layers.push(perf);
    spec.device_opts.push(("profile".into(), "on".into()));
    spec.device_opts.extend(opts.iter().cloned());
    let kernel = crate::image::kernel_image_for_tests(Firmware::Bios).map_err(|e| e.to_string())?;
    // The breakdown covers fio's run alone: reset when the guest starts fio, printed
    // when it ends.
    let mut asked = Ok(());
    let out = run_pair_watched(&spec, Some(&kernel), |live| {
        for (marker, command) in [
            ("PHASE profile-start", "profile reset"),
            ("PHASE profile-end", "profile"),
        ] {
            let Some(dev) = live.device.as_deref_mut() else {
                asked = Err("no device VM".to_string());
                return;
            };
            if !live.linux.wait_for(marker, PHASE_LIMIT) {
                asked = Err(format!("no '{marker}' within {PHASE_LIMIT:?}"));
                return;
            }
            if let Err(e) = dev.vm.send_line(command) {
                asked = Err(format!("device console: {e}"));
                return;
            }
        }
    })?;
    asked?;
    let samples: Vec<Sample> = out.linux.output.lines().filter_map(parse_line).collect();
    let sample = samples.iter().find(|s| s.dev == "cbd").cloned();
    let null = samples.iter().find(|s| s.dev == "null").cloned();
    let cpu = cpu_shares(&out.linux.output);
    let perf = perf_lines(&out.linux.output);
    let lines = out
        .device
        .as_ref()
        .map(|d| profile_lines(&d.output))
        .unwrap_or_default();
    match sample {
        Some(sample) if out.guest_ok("bench-profile") && lines.len() > 2 => Ok(ProfileRun {
            job: job.clone(),
            sample,
            lines,
            null,
            cpu,
            perf,
        }),
        _ => Err(format!(
            "profile run failed: {:?}, {} profile lines (consoles in {})",
            out.result_line("bench-profile"),
            lines.len(),
            out.logs.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_shares_come_from_before_and_after_pairs() {
        // 2 vCPUs, 400 ticks in all between the snapshots (2 s): 100 user, 40 system,
        // 20 irq + softirq, 240 idle; the server used 50 + 30 ticks (0.4 vCPU).
        let console = "x\n\
            CPUSTAT cbd before 2 cpu 1000 0 500 9000 0 10 10 0 0 0 70 20\n\
            noise CPUSTAT\n\
            CPUSTAT cbd after 2 cpu 1100 0 540 9240 0 20 20 0 0 0 120 50\n\
            CPUSTAT null after 2 cpu 1 1 1 1 1 1 1 1 0 0 1 1\n";
        let s = cpu_shares(console);
        assert_eq!(s.len(), 1, "an after without its before is no share: {s:?}");
        let (disk, c) = &s[0];
        assert_eq!(disk, "cbd");
        assert_eq!(c.ncpu, 2);
        assert!((c.user - 0.25).abs() < 1e-9, "{c:?}");
        assert!((c.system - 0.15).abs() < 1e-9, "{c:?}");
        assert!((c.busy - 0.40).abs() < 1e-9, "{c:?}");
        assert!((c.server_vcpus - 0.40).abs() < 1e-9, "{c:?}");
        assert!(parse_cpustat("CPUSTAT cbd during 2 cpu 1 1 1 1 1 1 1 1 1 1").is_none());
        assert!(parse_cpustat("CPUSTAT cbd before 0 cpu 1 1 1 1 1 1 1 1 1 1").is_none());
    }

    #[test]
    fn jobs_parse_and_bad_ones_are_refused() {
        assert_eq!(
            Job::parse("randread:4k:1").unwrap(),
            Job {
                rw: "randread".into(),
                bs: "4k".into(),
                qd: 1
            }
        );
        assert_eq!(Job::default().bs, "1m");
        for bad in [
            "write:1m",
            "trim:4k:1",
            "write:1x:4",
            "write:k:4",
            "write:1m:0",
            "write:1m:4:5",
        ] {
            assert!(Job::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn perf_lines_end_at_the_end_marker() {
        let console =
            "[ 3.1] PERF samples-by comm\nPERF     61.2%  cbd-host\nnoise\nPERF end\nPERF late\n";
        assert_eq!(
            perf_lines(console),
            ["samples-by comm", "    61.2%  cbd-host"],
            "the prefix goes, the rows stay, nothing after `end`"
        );
    }

    #[test]
    fn profile_lines_are_found_behind_the_console_prefix() {
        let console = "[ 0.9 INFO ] profile: TSC at 9 Hz\n[  1.0 INFO ] serve: x\n[ 1.1 INFO ] profile: requests=3 bytes=4\nother\n[ 1.2 INFO ] profile: idle 5 cycles\n[ 2.0 INFO ] profile: TSC at 9 Hz\n[ 2.1 INFO ] profile: requests=7 bytes=8\n";
        assert_eq!(
            profile_lines(console),
            [
                "profile: TSC at 9 Hz",
                "profile: requests=3 bytes=4",
                "profile: idle 5 cycles"
            ],
            "the first report only"
        );
    }
}
