//! The drop test, run as the program it is: the allocator's counts are the
//! whole process's, so each run gets a process of its own, and the test
//! reads its report.

use std::io::Write;

use awd::watchdog::TestLimit;
use io_uring::IoUring;

/// Runs the listing with `args`, or says the test is skipped, by name,
/// where io_uring is unavailable (a failure with `CI=true`).
fn run_listing(test: &str, args: &[&str]) -> Option<std::process::Output> {
    if let Err(e) = IoUring::new(2) {
        let line = format!("skipped: {test}: io_uring is unavailable here: {e}");
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{line} (CI=true)"
        );
        let _ = writeln!(std::io::stderr(), "{line}");
        return None;
    }
    let exe = env!("CARGO_BIN_EXE_listing-13-04");
    Some(
        std::process::Command::new(exe)
            .args(args)
            .output()
            .expect("it runs"),
    )
}

/// The first number after `label` in the report.
fn count(output: &str, label: &str) -> usize {
    let at = output
        .find(label)
        .unwrap_or_else(|| panic!("no `{label}` in:\n{output}"));
    output[at + label.len()..]
        .trim_start_matches([':', ',', ' '])
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number after `{label}` in:\n{output}"))
}

#[test]
fn ten_thousand_dropped_receives_free_every_buffer_once_and_only_after_the_kernel() {
    let _limit = TestLimit::seconds(60);
    let test = "ten_thousand_dropped_receives_free_every_buffer_once_and_only_after_the_kernel";
    let Some(output) = run_listing(test, &[]) else {
        return;
    };
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(count(&text, "receives started and dropped"), 10_000);
    let cancelled = count(&text, "stopped by the cancel (-ECANCELED)");
    let after = count(&text, "reaped after the drop (bytes in the parked buffer)");
    let before = count(&text, "finished first (a poll took the buffer back)");
    assert_eq!(cancelled + after + before, 10_000, "{text}");
    assert_eq!((cancelled, after, before), (3334, 3333, 3333), "{text}");
    assert_eq!(count(&text, "buffers allocated"), 10_000, "{text}");
    assert_eq!(count(&text, "freed"), 10_000, "{text}");
    assert_eq!(count(&text, "still allocated"), 0, "{text}");
    assert_eq!(
        count(&text, "freed while the kernel owned them"),
        0,
        "{text}"
    );
    assert_eq!(count(&text, "written after they were freed"), 0, "{text}");
}

#[test]
fn the_checker_catches_a_buffer_freed_on_drop() {
    let _limit = TestLimit::seconds(60);
    let test = "the_checker_catches_a_buffer_freed_on_drop";
    let Some(output) = run_listing(test, &["--free-on-drop"]) else {
        return;
    };
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        count(&text, "freed while the kernel owned them") > 0,
        "{text}"
    );
    assert!(count(&text, "written after they were freed") > 0, "{text}");
    assert!(text.contains("the checker found buffers misused"), "{text}");
}

/// Runs the listing under Valgrind's Memcheck; `None` (the test skipped, by
/// name) where io_uring or Valgrind is missing, a failure with `CI=true`.
fn under_memcheck(test: &str, args: &[&str]) -> Option<(std::process::Output, String)> {
    let valgrind = std::process::Command::new("valgrind")
        .arg("--version")
        .output();
    if valgrind.is_err() {
        let line = format!("skipped: {test}: Valgrind is not installed");
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{line} (CI=true)"
        );
        let _ = writeln!(std::io::stderr(), "{line}");
        return None;
    }
    run_listing(test, &[])?; // skips, by name, where io_uring is missing
    let output = std::process::Command::new("valgrind")
        .args(["--error-exitcode=9", "--leak-check=full"])
        .arg(env!("CARGO_BIN_EXE_listing-13-04"))
        .args(args)
        .output()
        .expect("valgrind runs");
    let report = String::from_utf8_lossy(&output.stderr).into_owned();
    Some((output, report))
}

#[test]
fn memcheck_does_not_see_the_kernels_writes() {
    let _limit = TestLimit::seconds(120);
    let test = "memcheck_does_not_see_the_kernels_writes";
    // The correct program: no error, nothing lost.
    let Some((output, report)) = under_memcheck(test, &["--rounds", "1000"]) else {
        return;
    };
    assert_eq!(output.status.code(), Some(0), "{report}");
    assert!(report.contains("ERROR SUMMARY: 0 errors"), "{report}");
    assert!(report.contains("definitely lost: 0 bytes"), "{report}");
    // The planted bug, with freed buffers given back at once: the kernel
    // writes into freed blocks, and Memcheck reports no error.
    let Some((output, report)) = under_memcheck(test, &["--free-on-drop", "--no-quarantine"])
    else {
        return;
    };
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(1),
        "the listing's own verdict: {text}"
    );
    assert!(
        count(&text, "freed while the kernel owned them") > 0,
        "{text}"
    );
    assert!(report.contains("ERROR SUMMARY: 0 errors"), "{report}");
}
