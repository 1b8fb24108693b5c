//! Without the panic guard, a panic in a sensorlib callback cannot unwind
//! into C: Rust aborts the whole process. Run as a child process, whose end
//! is checked.

use awd::watchdog::TestLimit;
use std::process::Command;

#[test]
fn a_panic_that_reaches_c_aborts_the_process() {
    let _limit = TestLimit::seconds(30);
    let output = Command::new(env!("CARGO_BIN_EXE_listing-12-02"))
        .arg("--no-guard")
        .output()
        .expect("the listing starts");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot parse [111, 111, 112, 115]"),
        "{stderr}"
    );
    // No frame on the event thread, which C started, can catch the panic:
    // the unwinder reports the end of the stack (5, `_URC_END_OF_STACK`)
    // and Rust aborts.
    assert!(
        stderr.contains("fatal runtime error: failed to initiate panic, error 5, aborting"),
        "{stderr}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        const SIGABRT: i32 = 6;
        assert_eq!(output.status.signal(), Some(SIGABRT), "{stderr}");
    }
    // It got as far as the panicking transfer, and no further.
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("completed"), "{stdout}");
    assert!(!stdout.contains("closed"), "{stdout}");
}
