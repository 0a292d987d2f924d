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

/// What one profiled run gave: fio's result and the device's breakdown lines.
pub struct ProfileRun {
    pub job: Job,
    pub sample: Sample,
    pub lines: Vec<String>,
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
    let sample = out.linux.output.lines().find_map(parse_line);
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
