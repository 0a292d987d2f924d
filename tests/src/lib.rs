//! Paired-VM tests live in `tests/tests/`; the guest-side scripts they run are in
//! `qemu/scripts/` (shared with the demo); the pairing machinery is `qemu::pair`.

/// The text of `qemu/scripts/NAME.sh`.
pub fn script(name: &str) -> String {
    qemu::pair::script(name).unwrap_or_else(|e| panic!("{e}"))
}
