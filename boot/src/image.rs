//! Building the kernel ELF(s) and turning them into bootable disk images.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use qemu::Firmware;
pub use qemu::workspace_root;

/// Where the runner keeps images and other build products.
pub fn out_dir() -> PathBuf {
    let d = workspace_root().join("target").join("cbdfw");
    let _ = std::fs::create_dir_all(&d);
    d
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// A kernel executable reported by cargo.
#[derive(Clone, Debug)]
pub struct KernelElf {
    pub name: String,
    pub path: PathBuf,
    /// Source file (for test binaries: the test file, which carries expectations).
    pub src: PathBuf,
}

/// Build errors, with what to do about them.
#[derive(Debug)]
pub struct BuildError(pub String);

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn run_cargo_json(args: &[&str]) -> Result<Vec<KernelElf>, BuildError> {
    let mut c = Command::new(cargo());
    c.current_dir(workspace_root())
        .args(args)
        .args([
            "-p",
            "kernel",
            "--target",
            "x86_64-unknown-none",
            "--message-format=json-render-diagnostics",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let out = c
        .output()
        .map_err(|e| BuildError(format!("cannot run cargo: {e}")))?;
    if !out.status.success() {
        return Err(BuildError(format!(
            "building the kernel failed (cargo {})",
            args.join(" ")
        )));
    }
    let mut elfs = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["reason"] != "compiler-artifact" {
            continue;
        }
        let Some(exe) = v["executable"].as_str() else {
            continue;
        };
        let kinds: Vec<&str> = v["target"]["kind"]
            .as_array()
            .map(|a| a.iter().filter_map(|k| k.as_str()).collect())
            .unwrap_or_default();
        let is_test_build = args.contains(&"--no-run");
        // `cargo test --no-run` also reports the plain kernel bin; keep only tests then.
        if is_test_build != kinds.contains(&"test") {
            continue;
        }
        elfs.push(KernelElf {
            name: v["target"]["name"].as_str().unwrap_or("kernel").to_string(),
            path: PathBuf::from(exe),
            src: PathBuf::from(v["target"]["src_path"].as_str().unwrap_or("")),
        });
    }
    Ok(elfs)
}

/// Build the device kernel.
pub fn build_kernel(release: bool) -> Result<KernelElf, BuildError> {
    let mut args = vec!["build", "--bin", "kernel"];
    if release {
        args.push("--release");
    }
    run_cargo_json(&args)?
        .into_iter()
        .next()
        .ok_or_else(|| BuildError("cargo reported no kernel executable".into()))
}

/// Build every kernel test binary (`kernel/tests/*.rs`).
pub fn build_kernel_tests() -> Result<Vec<KernelElf>, BuildError> {
    run_cargo_json(&["test", "--no-run"])
}

/// Wrap `elf` into a boot image (rebuilt only when the ELF is newer).
pub fn make_image(elf: &KernelElf, fw: Firmware) -> Result<PathBuf, BuildError> {
    let img = out_dir().join(format!("{}-{}.img", elf.name, fw.name()));
    let newer = |a: &Path, b: &Path| -> bool {
        match (
            a.metadata().and_then(|m| m.modified()),
            b.metadata().and_then(|m| m.modified()),
        ) {
            (Ok(x), Ok(y)) => x > y,
            _ => true,
        }
    };
    if img.exists() && !newer(&elf.path, &img) {
        return Ok(img);
    }
    let imager = workspace_root().join("boot").join("imager");
    if !imager.join("target/release/imager").exists() {
        eprintln!("boot: building the image tool (first time only, about 2–3 minutes)…");
    }
    // Go through the rustup proxy with the outer toolchain's variables removed, so
    // boot/imager/rust-toolchain.toml (the pinned nightly) applies.
    let mut c = Command::new("cargo");
    c.current_dir(&imager)
        .args(["run", "--quiet", "--release", "--"])
        .arg(fw.name())
        .arg(&elf.path)
        .arg(&img);
    for v in [
        "RUSTUP_TOOLCHAIN",
        "CARGO",
        "RUSTC",
        "RUSTDOC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_MANIFEST_DIR",
        "CARGO_PKG_NAME",
    ] {
        c.env_remove(v);
    }
    let st = c
        .status()
        .map_err(|e| BuildError(format!("cannot run the image tool: {e}")))?;
    if !st.success() {
        return Err(BuildError(format!(
            "the image tool failed for {} (is nightly-2026-10-30 with rust-src and llvm-tools installed? run .ci/setup)",
            elf.path.display()
        )));
    }
    Ok(img)
}

/// The device kernel's boot image for integration tests.
///
/// `boot test` builds the kernel first and passes the ELF in `CBDFW_KERNEL_ELF`; a
/// plain `cargo test` builds it here, in a separate target directory, because the
/// outer cargo still holds the workspace's build lock while tests run.
pub fn kernel_image_for_tests(fw: Firmware) -> Result<PathBuf, BuildError> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let path = match std::env::var("CBDFW_KERNEL_ELF") {
        Ok(p) => {
            let p = PathBuf::from(p);
            if !p.is_file() {
                return Err(BuildError(format!(
                    "CBDFW_KERNEL_ELF={} does not exist",
                    p.display()
                )));
            }
            p
        }
        Err(_) => {
            let nested = workspace_root().join("target").join("nested");
            let st = Command::new(cargo())
                .current_dir(workspace_root())
                .env("CARGO_TARGET_DIR", &nested)
                .args([
                    "build",
                    "-p",
                    "kernel",
                    "--bin",
                    "kernel",
                    "--target",
                    "x86_64-unknown-none",
                ])
                .status()
                .map_err(|e| BuildError(format!("cannot run cargo: {e}")))?;
            if !st.success() {
                return Err(BuildError("building the kernel for tests failed".into()));
            }
            nested.join("x86_64-unknown-none/debug/kernel")
        }
    };
    make_image(
        &KernelElf {
            name: "kernel-test".into(),
            path,
            src: PathBuf::new(),
        },
        fw,
    )
}
