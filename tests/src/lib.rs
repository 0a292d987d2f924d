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
    guest_body_steps(&[script_name], run, vars)
}

/// [`guest_body`] for several scripts run one after the other in one guest (one pair
/// boot for all of them), each under the run name `RUN`: every script but the last
/// says `STEP RUN SCRIPT OK` where it would say `RESULT`, so the one `RESULT RUN OK`
/// is the last script's, printed only when every step passed (a failing step's
/// `fail` prints `RESULT RUN FAIL …` and ends the guest's script).
pub fn guest_body_steps(scripts: &[&str], run: &str, vars: &str) -> String {
    let mut body = format!("{vars}\n{}\n", script("lib"));
    for (i, name) in scripts.iter().enumerate() {
        let mut text = script(name).replace(&format!("T={name}"), &format!("T={run}"));
        if i + 1 < scripts.len() {
            let result = "echo \"RESULT $T OK\"";
            assert!(text.contains(result), "{name}.sh has no `{result}`");
            text = text.replace(result, &format!("echo \"STEP $T {name} OK\""));
        }
        body.push_str(&text);
        body.push('\n');
    }
    body
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_print_one_result_the_last_scripts() {
        let body = guest_body_steps(&["pair-dd", "pair-ext4", "pair-fio"], "run-x", "TOPO=x");
        assert_eq!(body.matches("echo \"RESULT $T OK\"").count(), 1);
        let last = body.rfind("T=run-x").unwrap();
        assert!(body[last..].contains("echo \"RESULT $T OK\""));
        assert!(body.contains("echo \"STEP $T pair-dd OK\""));
        assert!(body.contains("echo \"STEP $T pair-ext4 OK\""));
        assert!(
            !body.contains("T=pair-"),
            "every step runs under the run's name"
        );
        assert_eq!(body.matches("fail() {").count(), 1, "lib.sh once");
    }
}
