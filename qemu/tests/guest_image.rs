//! Builds the Linux guest image (cached in `<workspace>/.cache/guest`) and boots it under QEMU TCG
//! with test scripts from `qemu/guest/tests/` in a second initramfs layer.
//!
//! Needs the host tools listed in docs/guest.md (apt, dpkg-deb, depmod, xz, gzip,
//! qemu-system-x86_64) and apt lists that include bookworm-backports. The first run downloads
//! about 150 MB of packages; later runs reuse the cache.
//!
//! QEMU runs are serialised (the machines this runs on have 2 cores). A run that does not finish
//! within `CBDFW_GUEST_TIMEOUT` seconds (default 600) is killed: that is a hang guard, the tests
//! assert nothing about time.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use qemu::guest::{self, GuestImage, Layer};
use qemu::status::KernelStatus;
use qemu::topology::{self, SharedFile};
use qemu::{Echo, Input, QemuCmd};

static QEMU_LOCK: Mutex<()> = Mutex::new(());
static HOST_BIN: OnceLock<PathBuf> = OnceLock::new();

/// The static `cbd-host` binary: `$CBDFW_HOST_BIN` if set (the runner builds it before the
/// tests), else built once per test process.
fn host_binary() -> PathBuf {
    HOST_BIN
        .get_or_init(|| match std::env::var_os("CBDFW_HOST_BIN") {
            Some(p) => PathBuf::from(p),
            None => guest::build_host_binary()
                .unwrap_or_else(|e| panic!("building the host binary failed: {e}")),
        })
        .clone()
}

fn image() -> GuestImage {
    guest::ensure_image(&guest::default_cache_dir())
        .unwrap_or_else(|e| panic!("building the guest image failed: {e}"))
}

fn script(name: &str) -> String {
    let p = guest::guest_data_dir()
        .join("tests")
        .join(format!("{name}.sh"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn run_dir(name: &str) -> PathBuf {
    let d = guest::default_cache_dir().join("run").join(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Boots the image with `layer` on top and `test=NAME` (on the CXL topology when
/// `cxl` holds the backing file); returns the console output.
fn boot(img: &GuestImage, name: &str, layer: &Layer, cxl: Option<&Path>) -> String {
    let dir = run_dir(name);
    let layer_path = dir.join("layer.img");
    layer.write(&layer_path).unwrap();
    let initrd = dir.join("initrd.img");
    img.initrd_with(&[&layer_path], &initrd).unwrap();
    let topo = cxl.map(|mem| {
        let t = topology::load(
            "cxl",
            &SharedFile {
                path: mem.to_path_buf(),
                size_mib: 256,
            },
        )
        .unwrap();
        t.prepare_files().unwrap();
        t
    });
    let mut q = QemuCmd::new();
    q.args(guest::qemu_args(
        &img.kernel,
        &initrd,
        &format!("quiet test={name}"),
        cxl.is_some(),
    ));
    if let Some(t) = &topo {
        t.apply(&mut q);
    }
    let _serial = QEMU_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let limit = Duration::from_secs(
        std::env::var("CBDFW_GUEST_TIMEOUT")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(600),
    );
    let vm = qemu::pair::spawn_linux(&q, Echo::Quiet, Input::Null)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    // The limit is the guest's whole run, boot included.
    let left = vm.remaining(limit);
    let out = vm.wait(left);
    std::fs::write(dir.join("console.log"), &out.output).ok();
    // A powered-off Linux guest ends QEMU with status 0.
    assert_eq!(
        out.status,
        KernelStatus::Unexpected(Some(0)),
        "guest test {name}: {}; console:\n{}",
        out.status.describe(),
        out.output
    );
    out.output
}

fn result_line<'a>(console: &'a str, name: &str) -> Option<&'a str> {
    let prefix = format!("RESULT {name} ");
    console
        .lines()
        .map(|l| l.trim_start_matches(|c: char| c != 'R'))
        .find(|l| l.starts_with(&prefix))
}

fn assert_ok(console: &str, name: &str) {
    assert!(
        console.contains("USERSPACE-UP"),
        "guest never reached /init's marker; console:\n{console}"
    );
    let r = result_line(console, name)
        .unwrap_or_else(|| panic!("no RESULT line from test {name}; console:\n{console}"));
    assert!(
        r.starts_with(&format!("RESULT {name} OK")),
        "test {name} failed: {r}\nconsole:\n{console}"
    );
    assert!(
        console.contains(&format!("GUEST-TEST-EXIT {name} rc=0")),
        "test {name} exited non-zero; console:\n{console}"
    );
}

#[test]
fn image_is_cached_and_has_expected_contents() {
    let a = image();
    let b = image();
    assert_eq!(a, b, "a second ensure_image must return the same image");
    assert!(a.kernel_release.starts_with("6.12"), "{}", a.kernel_release);
    for p in [
        "busybox-static=",
        "ndctl=",
        "daxctl=",
        "fio=",
        "e2fsprogs=",
        "util-linux=",
        "libc6=",
    ] {
        assert!(
            a.packages.iter().any(|x| x.starts_with(p)),
            "{p} missing from {:?}",
            a.packages
        );
    }
    assert!(a.kernel.metadata().unwrap().len() > 1 << 20);
    assert!(a.initrd.metadata().unwrap().len() > 1 << 20);
}

#[test]
fn guest_boots_and_loads_ublk() {
    let img = image();
    let mut layer = Layer::new();
    layer.add_test_script("ublk", &script("ublk")).unwrap();
    let console = boot(&img, "ublk", &layer, None);
    assert_ok(&console, "ublk");
}

#[test]
fn guest_creates_cxl_region_and_devdax() {
    let img = image();
    let dir = run_dir("cxl");
    // Fresh backing files every run: the namespace is created from scratch.
    let mem = dir.join("cxl-mem.raw");
    let lsa = PathBuf::from(format!("{}.lsa", mem.display()));
    for f in [&mem, &lsa] {
        std::fs::remove_file(f).ok();
    }
    let mut layer = Layer::new();
    layer.add_test_script("cxl", &script("cxl")).unwrap();
    let console = boot(&img, "cxl", &layer, Some(&mem));
    assert_ok(&console, "cxl");
    // 256 MiB region at the window base 0x1_1000_0000; the devdax metadata (info block + struct
    // page array, `map=dev`) takes the first 6 MiB, so dax offset X = backing-file offset 6 MiB + X.
    let r = result_line(&console, "cxl").unwrap();
    assert!(r.contains("size=262144000"), "{r}");
    assert!(r.contains("start=110600000"), "{r}");
    assert!(Path::new(&lsa).exists());
}

#[test]
fn host_serves_ram_disk_over_ublk() {
    let img = image();
    let mut layer = Layer::new();
    guest::add_host_binary(&mut layer, &host_binary()).unwrap();
    layer
        .add_test_script("host-ram", &script("host-ram"))
        .unwrap();
    let console = boot(&img, "host-ram", &layer, None);
    assert_ok(&console, "host-ram");
    assert!(
        console.contains("cbd-host: ready /dev/ublkb0"),
        "no ready line; console:\n{console}"
    );
}

#[test]
fn host_on_cxl_devdax_without_backend_fails_clearly() {
    let img = image();
    let dir = run_dir("host-cxl");
    let mem = dir.join("cxl-mem.raw");
    let lsa = PathBuf::from(format!("{}.lsa", mem.display()));
    for f in [&mem, &lsa] {
        std::fs::remove_file(f).ok();
    }
    let mut layer = Layer::new();
    guest::add_host_binary(&mut layer, &host_binary()).unwrap();
    layer.add_test_script("cxl", &script("cxl")).unwrap();
    layer
        .add_test_script("host-cxl", &script("host-cxl"))
        .unwrap();
    let console = boot(&img, "host-cxl", &layer, Some(&mem));
    assert_ok(&console, "host-cxl");
}
