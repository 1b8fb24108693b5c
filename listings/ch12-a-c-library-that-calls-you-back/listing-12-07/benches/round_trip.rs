//! `cargo bench -p listing-12-07`: runs Listing 12-7's program, which cargo
//! has built with the bench profile (optimised), in benchmark mode.

use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let status = Command::new(env!("CARGO_BIN_EXE_listing-12-07"))
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
