//! Paired-VM tests live in `tests/tests/`; the guest-side scripts they run are in
//! `qemu/scripts/` (shared with the demo); the pairing machinery is `qemu::pair`.

/// The text of `qemu/scripts/NAME.sh`.
pub fn script(name: &str) -> String {
    qemu::pair::script(name).unwrap_or_else(|e| panic!("{e}"))
}

/// A Linux guest's script body: `vars` (shell assignments), `lib.sh`, then
/// `qemu/scripts/SCRIPT.sh` with its run name `T=SCRIPT` replaced by `T=RUN` (the name
/// the harness looks for in the `RESULT` line).
pub fn guest_body(script_name: &str, run: &str, vars: &str) -> String {
    format!("{vars}\n{}\n{}", script("lib"), script(script_name))
        .replace(&format!("T={script_name}"), &format!("T={run}"))
}

/// A sparse, zero-filled raw file in `/dev/shm` for a virtio-blk disk of the Linux VM (the
/// guest copies a recorded history out through it); removed when dropped.
pub struct ScratchDisk(std::path::PathBuf);

impl ScratchDisk {
    pub fn new(name: &str, bytes: u64) -> ScratchDisk {
        let p =
            std::path::PathBuf::from(format!("/dev/shm/cbdfw-{name}-{}.raw", std::process::id()));
        std::fs::File::create(&p)
            .and_then(|f| f.set_len(bytes))
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        ScratchDisk(p)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }

    /// The Linux VM's QEMU arguments for this disk (`/dev/vda` when it is the only one).
    pub fn qemu_args(&self, id: &str) -> Vec<String> {
        vec![
            "-drive".into(),
            format!("file={},format=raw,if=none,id={id}", self.0.display()),
            "-device".into(),
            format!("virtio-blk-pci,drive={id}"),
        ]
    }
}

impl Drop for ScratchDisk {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
