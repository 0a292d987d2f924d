//! `cargo run -- bench`: fio 4 KiB randread/randwrite at QD1 and QD32 in one Linux
//! guest on (1) our ublk disk (`cbd-host` → CBD ring over ivshmem → the cbdfw
//! device VM's RAM disk), (2) a virtio-blk disk backed by a /dev/shm file, (3) the
//! ublk null target (`rublk`), and the ratios. Performance figures live here, never
//! in tests.

use std::path::PathBuf;
use std::process::Command;

use qemu::Firmware;
use qemu::pair::{PairSpec, run_pair, script};

/// One fio result.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub dev: String,
    pub rw: String,
    pub qd: u32,
    pub iops: f64,
    /// Mean completion latency, µs.
    pub clat_us: f64,
}

/// Parse `BENCH DEV RW QD <fio --minimal line>` (fio terse v3: read IOPS is field
/// 8, read clat mean field 16 (µs); write IOPS field 49, write clat mean field 57).
pub fn parse_line(line: &str) -> Option<Sample> {
    let rest = line.trim().strip_prefix("BENCH ")?;
    let mut it = rest.splitn(4, ' ');
    let (dev, rw, qd, terse) = (it.next()?, it.next()?, it.next()?.parse().ok()?, it.next()?);
    let f: Vec<&str> = terse.split(';').collect();
    let (iops_i, clat_i) = if rw.contains("read") {
        (7, 15)
    } else {
        (48, 56)
    };
    Some(Sample {
        dev: dev.into(),
        rw: rw.into(),
        qd,
        iops: f.get(iops_i)?.parse().ok()?,
        clat_us: f.get(clat_i)?.parse().ok()?,
    })
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

/// Run the benchmark and print the table.
pub fn run(runtime_secs: u32) -> Result<Vec<Sample>, String> {
    let rublk = rublk_binary()?;
    let vd = PathBuf::from(format!(
        "/dev/shm/cbdfw-bench-vd-{}.raw",
        std::process::id()
    ));
    // Fully allocated (not sparse), so reads of the virtio disk cost what writes cost.
    std::fs::write(&vd, vec![0u8; 256 << 20]).map_err(|e| format!("{}: {e}", vd.display()))?;
    let body = format!(
        "TOPO=ivshmem\nRUNTIME={runtime_secs}\n{}\n{}",
        script("lib")?,
        script("bench")?
    );
    let mut spec = PairSpec::new("bench", "ivshmem", &body);
    spec.disk_mib = 256;
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
    let samples: Vec<Sample> = out.linux.output.lines().filter_map(parse_line).collect();
    if !out.guest_ok("bench") || samples.len() != 12 {
        return Err(format!(
            "benchmark run failed: {:?}, {} results (consoles in {})",
            out.result_line("bench"),
            samples.len(),
            out.logs.display()
        ));
    }
    Ok(samples)
}

/// The table: IOPS and latency per device and job, and CBD's ratio to each baseline.
pub fn table(samples: &[Sample]) -> String {
    let get = |dev: &str, rw: &str, qd: u32| {
        samples
            .iter()
            .find(|s| s.dev == dev && s.rw == rw && s.qd == qd)
    };
    let mut t = String::from(
        "job            cbd IOPS (clat µs)   virtio IOPS (clat µs)   ublk-null IOPS (clat µs)   cbd/virtio  cbd/null\n",
    );
    for (rw, qd) in [
        ("randread", 1),
        ("randread", 32),
        ("randwrite", 1),
        ("randwrite", 32),
    ] {
        let (Some(c), Some(v), Some(n)) = (
            get("cbd", rw, qd),
            get("virtio", rw, qd),
            get("null", rw, qd),
        ) else {
            continue;
        };
        t.push_str(&format!(
            "{:<14} {:>8.0} ({:>7.1})   {:>10.0} ({:>7.1})    {:>12.0} ({:>7.1})    {:>9.2}  {:>8.2}\n",
            format!("{rw} qd{qd}"),
            c.iops,
            c.clat_us,
            v.iops,
            v.clat_us,
            n.iops,
            n.clat_us,
            c.iops / v.iops.max(1.0),
            c.iops / n.iops.max(1.0)
        ));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fio_terse_lines() {
        // Fields as fio 3.33 --minimal prints them (truncated after the write clat).
        let mut f = vec!["0"; 60];
        f[0] = "3";
        f[7] = "1234";
        f[15] = "800.5";
        f[48] = "4321";
        f[56] = "230.25";
        let terse = f.join(";");
        let r = parse_line(&format!("BENCH cbd randread 1 {terse}")).unwrap();
        assert_eq!((r.iops, r.clat_us, r.qd), (1234.0, 800.5, 1));
        let w = parse_line(&format!("BENCH null randwrite 32 {terse}")).unwrap();
        assert_eq!(
            (w.iops, w.clat_us, w.dev.as_str()),
            (4321.0, 230.25, "null")
        );
        assert!(parse_line("BENCH cbd randread x 1;2").is_none());
        assert!(parse_line("random console noise").is_none());
    }
}
