//! QEMU runner: typed command lines, the exact command printed, serial captured and
//! echoed, kill on drop, timeouts, and the `isa-debug-exit` status mapped back.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::status::KernelStatus;

/// Firmware the image boots with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firmware {
    Bios,
    Uefi,
}

impl Firmware {
    pub fn name(self) -> &'static str {
        match self {
            Firmware::Bios => "bios",
            Firmware::Uefi => "uefi",
        }
    }
}

/// Where OVMF lives on Debian (`ovmf` package).
pub const OVMF: &str = "/usr/share/ovmf/OVMF.fd";

/// A QEMU command line under construction. Every option the project uses has a
/// typed method; `extra` passes arbitrary arguments through.
#[derive(Clone, Debug)]
pub struct QemuCmd {
    pub binary: PathBuf,
    args: Vec<OsString>,
}

impl QemuCmd {
    pub fn new() -> Self {
        QemuCmd {
            binary: PathBuf::from("qemu-system-x86_64"),
            args: Vec::new(),
        }
    }

    pub fn arg(&mut self, a: impl Into<OsString>) -> &mut Self {
        self.args.push(a.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(&mut self, it: I) -> &mut Self {
        for a in it {
            self.args.push(a.into());
        }
        self
    }

    /// `-machine`.
    pub fn machine(&mut self, m: &str) -> &mut Self {
        self.arg("-machine").arg(m)
    }

    /// TCG (KVM on our machines is kvm-pvm and cannot run these guests: measured).
    pub fn accel_tcg(&mut self) -> &mut Self {
        self.arg("-accel").arg("tcg")
    }

    pub fn cpu(&mut self, c: &str) -> &mut Self {
        self.arg("-cpu").arg(c)
    }

    pub fn memory_mib(&mut self, mib: u64) -> &mut Self {
        self.arg("-m").arg(format!("{mib}M"))
    }

    pub fn smp(&mut self, n: u32) -> &mut Self {
        self.arg("-smp").arg(n.to_string())
    }

    /// Serial on stdio, no display, no reboot (a triple fault ends the VM).
    pub fn headless_serial(&mut self) -> &mut Self {
        self.args([
            "-serial",
            "stdio",
            "-display",
            "none",
            "-no-reboot",
            "-monitor",
            "none",
        ])
    }

    /// The exit device the kernel reports through.
    pub fn debug_exit(&mut self) -> &mut Self {
        self.arg("-device")
            .arg("isa-debug-exit,iobase=0xf4,iosize=0x04")
    }

    pub fn firmware(&mut self, fw: Firmware) -> &mut Self {
        if fw == Firmware::Uefi {
            self.arg("-bios").arg(OVMF);
        }
        self
    }

    pub fn boot_disk(&mut self, image: &Path) -> &mut Self {
        let mut d = OsString::from("format=raw,snapshot=on,file=");
        d.push(image);
        self.arg("-drive").arg(d)
    }

    /// A raw image as a modern-only virtio-blk PCI disk.
    pub fn virtio_blk(&mut self, id: &str, image: &Path) -> &mut Self {
        let mut d = OsString::from("format=raw,if=none,id=");
        d.push(id);
        d.push(",file=");
        d.push(image);
        self.arg("-drive").arg(d);
        self.arg("-device")
            .arg(format!("virtio-blk-pci,drive={id},disable-legacy=on"))
    }

    /// A fw_cfg string option the kernel reads as `opt/cbdfw/<key>`. A comma in `value`
    /// (e.g. `disks=ram:32,virtio`) is doubled, QEMU's escape inside an option list.
    pub fn fw_opt(&mut self, key: &str, value: &str) -> &mut Self {
        let value = value.replace(',', ",,");
        self.arg("-fw_cfg")
            .arg(format!("name=opt/cbdfw/{key},string={value}"))
    }

    /// The command line, shell-quoted, for printing.
    pub fn display(&self) -> String {
        let mut s = shell_quote(&self.binary.to_string_lossy());
        for a in &self.args {
            s.push(' ');
            s.push_str(&shell_quote(&a.to_string_lossy()));
        }
        s
    }

    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.binary);
        c.args(&self.args);
        c
    }
}

impl Default for QemuCmd {
    fn default() -> Self {
        Self::new()
    }
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=,:@%+".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Set by the Ctrl-C handler; running VMs are killed when they see it.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Install a Ctrl-C handler once (the VMs are killed by their `Drop`).
pub fn install_ctrlc() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst));
    });
}

/// How a VM's output is shown while it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Echo {
    /// Copy every serial line to our stdout, prefixed.
    Lines,
    /// Keep quiet (output is still captured).
    Quiet,
}

/// Where the VM's serial input comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// Nothing (tests that only watch).
    Null,
    /// A pipe the harness writes console commands into ([`Vm::send_line`]).
    Piped,
    /// Our own stdin (interactive `cargo run`).
    Inherit,
}

/// A running QEMU. Killed when dropped.
pub struct Vm {
    pub name: String,
    child: Option<Child>,
    stdin: Option<std::process::ChildStdin>,
    output: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
    started: Instant,
}

/// How a VM ended.
#[derive(Debug)]
pub struct Outcome {
    pub status: KernelStatus,
    pub output: String,
    pub elapsed: Duration,
}

impl Vm {
    /// Start QEMU. The command line is printed first.
    pub fn spawn(name: &str, cmd: &QemuCmd, echo: Echo) -> std::io::Result<Vm> {
        Self::spawn_with_input(name, cmd, echo, Input::Null)
    }

    /// Start QEMU with the given serial input.
    pub fn spawn_with_input(
        name: &str,
        cmd: &QemuCmd,
        echo: Echo,
        input: Input,
    ) -> std::io::Result<Vm> {
        install_ctrlc();
        eprintln!("[{name}] $ {}", cmd.display());
        let mut c = cmd.command();
        c.stdin(match input {
            Input::Null => Stdio::null(),
            Input::Piped => Stdio::piped(),
            Input::Inherit => Stdio::inherit(),
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = c.spawn().map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "cannot start {}: {e} (is QEMU installed? run .ci/setup)",
                    cmd.binary.display()
                ),
            )
        })?;
        let stdin = child.stdin.take();
        let output = Arc::new(Mutex::new(String::new()));
        let mut readers = Vec::new();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        readers.push(spawn_reader(name, stdout, output.clone(), echo, ""));
        readers.push(spawn_reader(
            name,
            stderr,
            output.clone(),
            Echo::Lines,
            "qemu: ",
        ));
        Ok(Vm {
            name: name.to_string(),
            stdin,
            child: Some(child),
            output,
            readers,
            started: Instant::now(),
        })
    }

    /// Type a line on the VM's serial console (needs [`Input::Piped`]).
    pub fn send_line(&mut self, line: &str) -> std::io::Result<()> {
        use std::io::Write;
        let s = self.stdin.as_mut().ok_or_else(|| {
            std::io::Error::other(format!("{}: console input is not piped", self.name))
        })?;
        s.write_all(line.as_bytes())?;
        s.write_all(b"\r")?;
        s.flush()
    }

    /// Everything captured so far.
    pub fn output(&self) -> String {
        self.output.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Wait until the output contains `needle`, the VM exits, or the timeout passes.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline && !INTERRUPTED.load(Ordering::SeqCst) {
            if self.output().contains(needle) {
                return true;
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(_)) = c.try_wait()
            {
                return self.output().contains(needle);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Time since the VM was spawned.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// What is left of a budget `total` counted from the spawn (zero once spent): pass it
    /// to [`Vm::wait`] when a timeout means the whole run (`--timeout N`, a test's limit).
    pub fn remaining(&self, total: Duration) -> Duration {
        total.saturating_sub(self.elapsed())
    }

    /// Wait for QEMU to exit, at most `timeout` **from this call** (e.g. the time a VM
    /// gets to stop after `stop` was typed, however long it ran before); kill it after
    /// that. For a budget over the whole run pass [`Vm::remaining`].
    pub fn wait(mut self, timeout: Duration) -> Outcome {
        let deadline = wait_deadline(Instant::now(), timeout);
        let mut child = self.child.take().expect("child present until waited");
        let status = loop {
            match child.try_wait() {
                Ok(Some(st)) => break KernelStatus::from_qemu_exit(st.code()),
                Ok(None) => {}
                Err(e) => break KernelStatus::RunnerError(format!("waiting for QEMU: {e}")),
            }
            if INTERRUPTED.load(Ordering::SeqCst) {
                let _ = child.kill();
                let _ = child.wait();
                break KernelStatus::Interrupted;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break KernelStatus::Timeout(timeout);
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        Outcome {
            status,
            output: self.output(),
            elapsed: self.started.elapsed(),
        }
    }

    /// Kill the VM now (e.g. the crash tests' SIGKILL).
    pub fn kill(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// When a [`Vm::wait`] called at `now` with `timeout` gives up (saturating: a huge timeout
/// waits for ever rather than overflowing).
fn wait_deadline(now: Instant, timeout: Duration) -> Instant {
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

fn spawn_reader(
    name: &str,
    src: impl Read + Send + 'static,
    out: Arc<Mutex<String>>,
    echo: Echo,
    prefix: &'static str,
) -> JoinHandle<()> {
    let name = name.to_string();
    std::thread::spawn(move || {
        let mut r = BufReader::new(src);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    // OVMF paints the console with escape sequences; drop them.
                    let clean = strip_ansi(&line);
                    if echo == Echo::Lines {
                        eprint!("[{name}] {prefix}{clean}");
                        if !clean.ends_with('\n') {
                            eprintln!();
                        }
                    }
                    if let Ok(mut o) = out.lock() {
                        o.push_str(prefix);
                        o.push_str(&clean);
                    }
                }
            }
        }
    })
}

/// Remove ANSI CSI escape sequences and carriage returns.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\x1b' {
            if it.peek() == Some(&'[') {
                it.next();
                for d in it.by_ref() {
                    if ('@'..='~').contains(&d) {
                        break;
                    }
                }
            }
            continue;
        }
        if c != '\r' {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_is_quoted() {
        let mut q = QemuCmd::new();
        q.machine("q35").fw_opt("log", "debug level").accel_tcg();
        assert_eq!(
            q.display(),
            "qemu-system-x86_64 -machine q35 -fw_cfg 'name=opt/cbdfw/log,string=debug level' -accel tcg"
        );
    }

    /// A stand-in for QEMU: `sleep SECS` through the same runner.
    fn sleeper(secs: &str) -> Vm {
        let mut c = QemuCmd::new();
        c.binary = PathBuf::from("sleep");
        c.arg(secs);
        Vm::spawn("sleeper", &c, Echo::Quiet).expect("spawn sh")
    }

    #[test]
    fn wait_counts_its_timeout_from_the_call() {
        // Ran 0.6 s before the wait; exits ~0.4 s into a 1.5 s wait: not a timeout (it was one
        // when the deadline counted from the spawn and the VM had run longer than the wait).
        let vm = sleeper("1");
        std::thread::sleep(Duration::from_millis(600));
        let out = vm.wait(Duration::from_millis(500));
        assert_eq!(out.status, KernelStatus::Unexpected(Some(0)), "{out:?}");
        assert!(out.elapsed >= Duration::from_millis(900));
        // A wait still kills what outlives it, counted from the call too.
        let vm = sleeper("30");
        std::thread::sleep(Duration::from_millis(300));
        let t = Instant::now();
        let out = vm.wait(Duration::from_millis(400));
        assert_eq!(
            out.status,
            KernelStatus::Timeout(Duration::from_millis(400))
        );
        assert!(
            t.elapsed() >= Duration::from_millis(400),
            "{:?}",
            t.elapsed()
        );
        assert!(t.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn remaining_is_what_is_left_of_a_whole_run_budget() {
        let vm = sleeper("30");
        std::thread::sleep(Duration::from_millis(300));
        let left = vm.remaining(Duration::from_secs(2));
        assert!(left <= Duration::from_millis(1700), "{left:?}");
        assert!(left > Duration::from_millis(500), "{left:?}");
        assert_eq!(vm.remaining(Duration::from_millis(100)), Duration::ZERO);
        // Spent budget: the wait gives up at once (and kills it).
        let t = Instant::now();
        let out = vm.wait(Duration::ZERO);
        assert!(matches!(out.status, KernelStatus::Timeout(_)));
        assert!(t.elapsed() < Duration::from_secs(5));
        let now = Instant::now();
        assert_eq!(
            wait_deadline(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        assert!(wait_deadline(now, Duration::MAX) > now);
    }

    #[test]
    fn ansi_is_stripped() {
        assert_eq!(
            strip_ansi("\x1b[2J\x1b[01;01HBdsDxe: ok\r\n"),
            "BdsDxe: ok\n"
        );
    }
}
