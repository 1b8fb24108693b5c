//! `cargo bench -p listing-13-05`: runs Listing 13-5's program, which cargo
//! has built with the bench profile (optimised), in benchmark mode.

use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let status = Command::new(env!("CARGO_BIN_EXE_listing-13-05"))
        .arg("--bench")
        .status();
    match status {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!("the benchmark failed: {status}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("the benchmark could not start: {e}");
            ExitCode::FAILURE
        }
    }
}
