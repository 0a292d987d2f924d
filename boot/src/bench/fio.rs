//! `cargo run -- bench`: fio in one Linux guest, one run, four disks:
//! (1) `cbd`, our ublk disk (`cbd-host` → CBD ring over ivshmem → the cbdfw device
//! VM's RAM disk), (2) `virtio`, a virtio-blk disk backed by a /dev/shm file, (3)
//! `null`, the ublk null target (`rublk`), (4) `brd`, a RAM disk inside the guest.
//! Jobs: 4 KiB randread/randwrite at QD1 and QD32, 1 MiB sequential read/write at QD4.
//! It prints the figures and cbd's ratio to each yardstick, and writes a JSON file and
//! an SVG plot so runs can be compared. Performance figures live here, never in tests.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use qemu::Firmware;
use qemu::pair::{PairSpec, run_pair, script};

/// The disks, in the order the guest script runs them (`qemu/scripts/bench.sh`).
pub const DEVICES: [&str; 4] = ["cbd", "virtio", "null", "brd"];

/// One fio job of the benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Job {
    /// fio's `--rw`.
    pub rw: &'static str,
    /// Block size in bytes.
    pub bs: u32,
    pub qd: u32,
}

impl Job {
    /// `randread 4k qd1`, `write 1m qd4`.
    pub fn name(&self) -> String {
        let bs = if self.bs >= 1 << 20 {
            format!("{}m", self.bs >> 20)
        } else {
            format!("{}k", self.bs >> 10)
        };
        format!("{} {bs} qd{}", self.rw, self.qd)
    }

    /// Large blocks are compared by bandwidth, small ones by IOPS.
    pub fn by_bandwidth(&self) -> bool {
        self.bs >= 1 << 20
    }
}

/// The jobs, in the script's order.
pub const JOBS: [Job; 6] = [
    Job {
        rw: "randread",
        bs: 4096,
        qd: 1,
    },
    Job {
        rw: "randread",
        bs: 4096,
        qd: 32,
    },
    Job {
        rw: "randwrite",
        bs: 4096,
        qd: 1,
    },
    Job {
        rw: "randwrite",
        bs: 4096,
        qd: 32,
    },
    Job {
        rw: "read",
        bs: 1 << 20,
        qd: 4,
    },
    Job {
        rw: "write",
        bs: 1 << 20,
        qd: 4,
    },
];

/// A target the project set itself: cbd's figure ≥ `min` × the yardstick's, on `job`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Target {
    pub job: Job,
    pub yardstick: &'static str,
    pub min: f64,
}

/// The throughput targets (docs/throughput.md, "Targets").
pub const TARGETS: [Target; 6] = [
    Target {
        job: JOBS[0],
        yardstick: "virtio",
        min: 1.0,
    },
    Target {
        job: JOBS[2],
        yardstick: "virtio",
        min: 1.0,
    },
    Target {
        job: JOBS[1],
        yardstick: "null",
        min: 0.8,
    },
    Target {
        job: JOBS[3],
        yardstick: "null",
        min: 0.8,
    },
    Target {
        job: JOBS[4],
        yardstick: "brd",
        min: 0.5,
    },
    Target {
        job: JOBS[5],
        yardstick: "brd",
        min: 0.5,
    },
];

/// One fio result.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub dev: String,
    pub rw: String,
    /// Block size in bytes.
    pub bs: u32,
    pub qd: u32,
    pub iops: f64,
    /// Mean completion latency, µs.
    pub clat_us: f64,
}

impl Sample {
    pub fn mib_s(&self) -> f64 {
        self.iops * self.bs as f64 / f64::from(1u32 << 20)
    }

    /// The figure the job is compared by: MiB/s for 1 MiB jobs, IOPS otherwise.
    pub fn figure(&self, job: &Job) -> f64 {
        if job.by_bandwidth() {
            self.mib_s()
        } else {
            self.iops
        }
    }
}

fn parse_bs(s: &str) -> Option<u32> {
    let (n, mul) = match s.as_bytes().last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 1u32 << 10),
        b'm' | b'M' => (&s[..s.len() - 1], 1 << 20),
        _ => (s, 1),
    };
    n.parse::<u32>().ok()?.checked_mul(mul)
}

/// Parse `BENCH DEV RW BS QD <fio --minimal line>` (fio terse v3: read IOPS is field
/// 8, read clat mean field 16 (µs); write IOPS field 49, write clat mean field 57).
pub fn parse_line(line: &str) -> Option<Sample> {
    let rest = line.trim().strip_prefix("BENCH ")?;
    let mut it = rest.splitn(5, ' ');
    let (dev, rw) = (it.next()?, it.next()?);
    let bs = parse_bs(it.next()?)?;
    let qd = it.next()?.parse().ok()?;
    let f: Vec<&str> = it.next()?.split(';').collect();
    let (iops_i, clat_i) = if rw.contains("read") {
        (7, 15)
    } else {
        (48, 56)
    };
    Some(Sample {
        dev: dev.into(),
        rw: rw.into(),
        bs,
        qd,
        iops: f.get(iops_i)?.parse().ok()?,
        clat_us: f.get(clat_i)?.parse().ok()?,
    })
}

/// One benchmark run.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// `cbd-host --queues`.
    pub queues: u32,
    /// fio seconds per job.
    pub runtime_secs: u32,
    pub samples: Vec<Sample>,
}

impl Report {
    pub fn get(&self, dev: &str, job: &Job) -> Option<&Sample> {
        self.samples
            .iter()
            .find(|s| s.dev == dev && s.rw == job.rw && s.bs == job.bs && s.qd == job.qd)
    }

    /// cbd's figure over the yardstick's on `job`.
    pub fn ratio(&self, yardstick: &str, job: &Job) -> Option<f64> {
        let c = self.get("cbd", job)?.figure(job);
        let y = self.get(yardstick, job)?.figure(job);
        (y > 0.0).then(|| c / y)
    }

    /// Every job on every disk is present.
    pub fn complete(&self) -> bool {
        JOBS.iter()
            .all(|j| DEVICES.iter().all(|d| self.get(d, j).is_some()))
    }
}

/// Build `rublk` (the ublk null target) as a static binary, once.
pub fn rublk_binary() -> Result<PathBuf, String> {
    let root = crate::image::workspace_root().join("target").join("rublk");
    let bin = root.join("bin").join("rublk");
    if bin.is_file() {
        return Ok(bin);
    }
    eprintln!("bench: building rublk 0.2.15 (static) from crates.io, once…");
    let st = Command::new("cargo")
        .env_remove("CARGO_TARGET_DIR")
        .env(
            "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
            "-C target-feature=+crt-static",
        )
        .args([
            "install",
            "rublk",
            "--version",
            "0.2.15",
            "--no-default-features",
            "--locked",
            "--target",
        ])
        .arg("x86_64-unknown-linux-gnu")
        .arg("--root")
        .arg(&root)
        .status()
        .map_err(|e| format!("cargo install rublk: {e}"))?;
    if !st.success() || !bin.is_file() {
        return Err("building rublk failed (needs libclang-dev: run .ci/setup)".into());
    }
    Ok(bin)
}

/// Run the benchmark in one paired run.
pub fn run(runtime_secs: u32, queues: u32) -> Result<Report, String> {
    let rublk = rublk_binary()?;
    let vd = PathBuf::from(format!(
        "/dev/shm/cbdfw-bench-vd-{}.raw",
        std::process::id()
    ));
    // Fully allocated (not sparse), so reads of the virtio disk cost what writes cost.
    std::fs::write(&vd, vec![0u8; 256 << 20]).map_err(|e| format!("{}: {e}", vd.display()))?;
    let body = format!(
        "TOPO=ivshmem\nRUNTIME={runtime_secs}\nQUEUES={queues}\n{}\n{}",
        script("lib")?,
        script("bench")?
    );
    let mut spec = PairSpec::new("bench", "ivshmem", &body);
    spec.disk_mib = 256;
    spec.channels = queues.max(2);
    spec.linux_files.push(("usr/bin/rublk".into(), rublk));
    spec.linux_extra = vec![
        "-drive".into(),
        format!(
            "file={},format=raw,if=none,id=vd,cache=none,aio=threads",
            vd.display()
        ),
        "-device".into(),
        "virtio-blk-pci,drive=vd".into(),
    ];
    let kernel = crate::image::kernel_image_for_tests(Firmware::Bios).map_err(|e| e.to_string());
    let out = kernel.and_then(|k| run_pair(&spec, Some(&k)));
    let _ = std::fs::remove_file(&vd);
    let out = out?;
    let report = Report {
        queues,
        runtime_secs,
        samples: out.linux.output.lines().filter_map(parse_line).collect(),
    };
    if !out.guest_ok("bench") || !report.complete() {
        return Err(format!(
            "benchmark run failed: {:?}, {} of {} results (consoles in {})",
            out.result_line("bench"),
            report.samples.len(),
            JOBS.len() * DEVICES.len(),
            out.logs.display()
        ));
    }
    Ok(report)
}

fn cell(s: Option<&Sample>, job: &Job) -> String {
    match s {
        Some(s) => format!("{:>8.0} ({:>7.1})", s.figure(job), s.clat_us),
        None => format!("{:>18}", "-"),
    }
}

/// The table: per job, each disk's figure (IOPS, or MiB/s for 1 MiB jobs) and mean
/// completion latency, cbd's ratio to each yardstick, and the targets.
pub fn table(r: &Report) -> String {
    let mut t = format!(
        "fio, {} s per job, cbd-host --queues {}; figure = IOPS (4k) or MiB/s (1m), (mean clat µs)\n",
        r.runtime_secs, r.queues
    );
    t += "job               cbd                virtio             null               brd                cbd/virtio cbd/null cbd/brd\n";
    for job in &JOBS {
        let _ = write!(t, "{:<17}", job.name());
        for d in DEVICES {
            let _ = write!(t, " {}", cell(r.get(d, job), job));
        }
        for (y, w) in [("virtio", 10), ("null", 8), ("brd", 7)] {
            match r.ratio(y, job) {
                Some(x) => {
                    let _ = write!(t, " {x:>w$.2}");
                }
                None => {
                    let _ = write!(t, " {:>w$}", "-");
                }
            }
        }
        t.push('\n');
    }
    t += "\ntargets:\n";
    for g in &TARGETS {
        let got = r.ratio(g.yardstick, &g.job);
        let verdict = match got {
            Some(x) if x >= g.min => "met",
            Some(_) => "NOT met",
            None => "no figure",
        };
        let _ = writeln!(
            t,
            "  {:<17} cbd/{:<6} ≥ {:.1}: {} ({verdict})",
            g.job.name(),
            g.yardstick,
            g.min,
            got.map_or("-".into(), |x| format!("{x:.2}")),
        );
    }
    t
}

/// The run as JSON: every sample, every ratio, every target.
pub fn json(r: &Report) -> serde_json::Value {
    let samples: Vec<_> = r
        .samples
        .iter()
        .map(|s| {
            serde_json::json!({
                "dev": s.dev, "rw": s.rw, "bs": s.bs, "qd": s.qd,
                "iops": s.iops, "mib_s": s.mib_s(), "clat_us": s.clat_us,
            })
        })
        .collect();
    let ratios: Vec<_> = JOBS
        .iter()
        .flat_map(|j| {
            DEVICES[1..].iter().filter_map(move |y| {
                r.ratio(y, j)
                    .map(|x| serde_json::json!({"job": j.name(), "yardstick": y, "ratio": x}))
            })
        })
        .collect();
    let targets: Vec<_> = TARGETS
        .iter()
        .map(|g| {
            let got = r.ratio(g.yardstick, &g.job);
            serde_json::json!({
                "job": g.job.name(), "yardstick": g.yardstick, "min": g.min,
                "ratio": got, "met": got.is_some_and(|x| x >= g.min),
            })
        })
        .collect();
    serde_json::json!({
        "bench": "fio",
        "queues": r.queues,
        "runtime_secs": r.runtime_secs,
        "samples": samples,
        "ratios": ratios,
        "targets": targets,
    })
}

/// A bar chart of cbd's ratio to each yardstick per job, a line at 1.0 and each
/// target marked. Every bar carries its value as a label (`data-ratio`), so the picture
/// can be checked against the JSON.
pub fn svg(r: &Report) -> String {
    const COLORS: [&str; 3] = ["#4878a8", "#e0a040", "#58a058"];
    let (w, h, left, top, bottom) = (860.0, 360.0, 60.0, 40.0, 70.0);
    let plot_h = h - top - bottom;
    let max = JOBS
        .iter()
        .flat_map(|j| DEVICES[1..].iter().filter_map(|y| r.ratio(y, j)))
        .fold(1.5f64, f64::max)
        .ceil();
    let y_of = |v: f64| top + plot_h * (1.0 - v / max);
    let group = (w - left - 20.0) / JOBS.len() as f64;
    let bar = group / 4.5;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"{w}\" height=\"{h}\" fill=\"white\"/>\n\
         <text x=\"{left}\" y=\"20\" font-size=\"14\">cbd / yardstick, fio, {} s per job, {} queue(s) (IOPS at 4k, MiB/s at 1m)</text>\n",
        r.runtime_secs, r.queues
    );
    for i in 0..=(max as u32) {
        let y = y_of(i as f64);
        let _ = writeln!(
            s,
            "<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"{}\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{i}.0</text>",
            w - 20.0,
            if i == 1 { "#000" } else { "#ddd" },
            left - 6.0,
            y + 4.0
        );
    }
    for (gi, job) in JOBS.iter().enumerate() {
        let x0 = left + gi as f64 * group + bar * 0.5;
        for (k, y) in DEVICES[1..].iter().enumerate() {
            let Some(v) = r.ratio(y, job) else { continue };
            let x = x0 + k as f64 * bar * 1.1;
            let top_y = y_of(v.min(max));
            let _ = writeln!(
                s,
                "<rect x=\"{x:.1}\" y=\"{top_y:.1}\" width=\"{bar:.1}\" height=\"{:.1}\" fill=\"{}\" data-job=\"{}\" data-yardstick=\"{y}\" data-ratio=\"{v:.3}\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"10\">{v:.2}</text>",
                y_of(0.0) - top_y,
                COLORS[k],
                job.name(),
                x + bar / 2.0,
                top_y - 3.0
            );
            if let Some(g) = TARGETS.iter().find(|g| g.job == *job && g.yardstick == *y) {
                let ty = y_of(g.min);
                let _ = writeln!(
                    s,
                    "<line x1=\"{:.1}\" y1=\"{ty:.1}\" x2=\"{:.1}\" y2=\"{ty:.1}\" stroke=\"#c00\" stroke-width=\"2\" stroke-dasharray=\"4 2\"/>",
                    x - 2.0,
                    x + bar + 2.0
                );
            }
        }
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            left + gi as f64 * group + group / 2.0,
            h - bottom + 18.0,
            job.name()
        );
    }
    for (k, y) in DEVICES[1..].iter().enumerate() {
        let x = left + k as f64 * 150.0;
        let _ = writeln!(
            s,
            "<rect x=\"{x}\" y=\"{:.1}\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{:.1}\" y=\"{:.1}\">cbd/{y}</text>",
            h - 28.0,
            COLORS[k],
            x + 16.0,
            h - 18.0
        );
    }
    let _ = writeln!(
        s,
        "<line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#c00\" stroke-width=\"2\" stroke-dasharray=\"4 2\"/><text x=\"{:.1}\" y=\"{:.1}\">target</text>\n</svg>",
        left + 450.0,
        h - 22.0,
        left + 470.0,
        h - 22.0,
        left + 476.0,
        h - 18.0
    );
    s
}

/// Write `fio-q<queues>-<unix time>.{json,svg}` into `dir`; returns both paths.
pub fn save(r: &Report, dir: &Path) -> Result<(PathBuf, PathBuf), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let base = dir.join(format!("fio-q{}-{stamp}", r.queues));
    let (j, s) = (base.with_extension("json"), base.with_extension("svg"));
    let text = serde_json::to_string_pretty(&json(r)).map_err(|e| e.to_string())?;
    std::fs::write(&j, text + "\n").map_err(|e| format!("{}: {e}", j.display()))?;
    std::fs::write(&s, svg(r)).map_err(|e| format!("{}: {e}", s.display()))?;
    Ok((j, s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terse(iops_r: &str, clat_r: &str, iops_w: &str, clat_w: &str) -> String {
        // Fields as fio 3.33 --minimal prints them (truncated after the write clat).
        let mut f = vec!["0"; 60];
        f[0] = "3";
        f[7] = iops_r;
        f[15] = clat_r;
        f[48] = iops_w;
        f[56] = clat_w;
        f.join(";")
    }

    #[test]
    fn parses_fio_terse_lines() {
        let t = terse("1234", "800.5", "4321", "230.25");
        let r = parse_line(&format!("BENCH cbd randread 4k 1 {t}")).unwrap();
        assert_eq!((r.iops, r.clat_us, r.qd, r.bs), (1234.0, 800.5, 1, 4096));
        let w = parse_line(&format!("BENCH null randwrite 4k 32 {t}")).unwrap();
        assert_eq!(
            (w.iops, w.clat_us, w.dev.as_str()),
            (4321.0, 230.25, "null")
        );
        let m = parse_line(&format!("BENCH brd write 1m 4 {t}")).unwrap();
        assert_eq!((m.bs, m.mib_s()), (1 << 20, 4321.0));
        assert!(parse_line("BENCH cbd randread 4k x 1;2").is_none());
        assert!(parse_line("BENCH cbd randread 4q 1 1;2").is_none());
        assert!(parse_line("random console noise").is_none());
    }

    /// A report with every sample: figure = base × factor per disk.
    fn report(factor: impl Fn(&str) -> f64) -> Report {
        let mut samples = Vec::new();
        for d in DEVICES {
            for j in &JOBS {
                samples.push(Sample {
                    dev: d.into(),
                    rw: j.rw.into(),
                    bs: j.bs,
                    qd: j.qd,
                    iops: 1000.0 * factor(d),
                    clat_us: 100.0,
                });
            }
        }
        Report {
            queues: 2,
            runtime_secs: 3,
            samples,
        }
    }

    #[test]
    fn ratios_targets_json_and_plot_agree() {
        let r = report(|d| match d {
            "cbd" => 1.0,
            "virtio" => 2.0,
            "null" => 1.0,
            _ => 4.0,
        });
        assert!(r.complete());
        assert_eq!(r.ratio("virtio", &JOBS[0]), Some(0.5));
        assert_eq!(r.ratio("brd", &JOBS[5]), Some(0.25));
        let t = table(&r);
        assert_eq!(
            t.lines().filter(|l| l.contains("(NOT met)")).count(),
            4,
            "{t}"
        );
        assert_eq!(t.lines().filter(|l| l.contains("(met)")).count(), 2, "{t}");
        let j = json(&r);
        assert_eq!(j["samples"].as_array().unwrap().len(), 24);
        assert_eq!(j["ratios"].as_array().unwrap().len(), 18);
        assert_eq!(
            j["targets"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|g| g["met"] == true)
                .count(),
            2
        );
        // Every bar of the plot is one ratio of the JSON, with the same value.
        let svg = svg(&r);
        let bars: Vec<f64> = svg
            .split("data-ratio=\"")
            .skip(1)
            .map(|s| s[..s.find('"').unwrap()].parse().unwrap())
            .collect();
        let want: Vec<f64> = j["ratios"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| (x["ratio"].as_f64().unwrap() * 1000.0).round() / 1000.0)
            .collect();
        assert_eq!(bars, want);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn a_missing_sample_is_incomplete_and_has_no_ratio() {
        let mut r = report(|_| 1.0);
        r.samples.retain(|s| !(s.dev == "brd" && s.rw == "write"));
        assert!(!r.complete());
        assert_eq!(r.ratio("brd", &JOBS[5]), None);
        assert!(table(&r).contains("(no figure)"));
    }
}
