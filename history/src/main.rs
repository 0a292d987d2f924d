//! `history check FILE`: check a recorded history; prints OK or the counter-example.
//! Exit status: 0 accepted, 1 violation (or undecided), 2 bad input.

use std::process::ExitCode;

use clap::{Arg, ArgAction, Command};

fn main() -> ExitCode {
    let cmd = Command::new("history")
        .about("Check a recorded CBD block-operation history against the consistency model")
        .subcommand_required(true)
        .subcommand(
            Command::new("check")
                .about("Check FILE (the text format of the history crate; - for stdin)")
                .arg(Arg::new("file").required(true))
                .arg(
                    Arg::new("no-fifo")
                        .long("no-fifo")
                        .action(ArgAction::SetTrue)
                        .help("do not check per-channel order even if level=cbd"),
                ),
        );
    let m = match cmd.try_get_matches() {
        Ok(m) => m,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let Some(("check", sub)) = m.subcommand() else {
        return ExitCode::from(2);
    };
    let file = sub.get_one::<String>("file").cloned().unwrap_or_default();
    let text = if file == "-" {
        let mut s = String::new();
        match std::io::Read::read_to_string(&mut std::io::stdin(), &mut s) {
            Ok(_) => s,
            Err(e) => {
                eprintln!("history: stdin: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        match std::fs::read_to_string(&file) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("history: {file}: {e}");
                return ExitCode::from(2);
            }
        }
    };
    let h = match history::parse(&text) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("history: {file}: {e}");
            return ExitCode::from(2);
        }
    };
    let mut opts = history::CheckOptions::default();
    if sub.get_flag("no-fifo") {
        opts.channel_fifo = Some(false);
    }
    match history::check_with(&h, &opts) {
        Ok(s) => {
            println!("OK {s}");
            ExitCode::SUCCESS
        }
        Err(history::CheckError::Invalid(e)) => {
            eprintln!("history: {file}: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            println!("{e}");
            ExitCode::from(1)
        }
    }
}
