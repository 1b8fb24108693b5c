//! Where io_uring is missing: the listing is run under a seccomp filter that
//! makes `io_uring_setup` fail, as an old kernel (ENOSYS) or a container's
//! profile (EPERM) does, and must say so in one line and exit with 77. The
//! filter knows the system call numbers of x86-64 and AArch64 only.
#![cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]

use std::os::unix::process::CommandExt;
use std::process::Command;

use awd::watchdog::TestLimit;

/// A seccomp filter: `io_uring_setup` fails with `errno`; every other
/// system call is allowed. A process of another architecture is let through
/// unfiltered (the system call numbers below are this one's).
fn refuse_io_uring_setup(errno: u32) -> Vec<libc::sock_filter> {
    #[cfg(target_arch = "x86_64")]
    const ARCH: u32 = 0xC000_003E; // AUDIT_ARCH_X86_64
    #[cfg(target_arch = "aarch64")]
    const ARCH: u32 = 0xC000_00B7; // AUDIT_ARCH_AARCH64
    let statement = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    };
    let load = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let ret = libc::BPF_RET | libc::BPF_K;
    vec![
        statement(load, 4), // seccomp_data.arch
        jump(ARCH, 1, 0),
        statement(ret, libc::SECCOMP_RET_ALLOW),
        statement(load, 0), // seccomp_data.nr
        jump(libc::SYS_io_uring_setup as u32, 0, 1),
        statement(ret, libc::SECCOMP_RET_ERRNO | errno),
        statement(ret, libc::SECCOMP_RET_ALLOW),
    ]
}

/// Runs the listing with `io_uring_setup` refused with `errno`.
fn run_refused(errno: u32) -> std::process::Output {
    let filter = refuse_io_uring_setup(errno);
    let mut command = Command::new(env!("CARGO_BIN_EXE_listing-13-01"));
    // SAFETY: the closure runs in the child between fork and exec, and only
    // makes two system calls (async-signal-safe) on memory that the fork
    // copied: `filter` and the program that points into it.
    unsafe {
        command.pre_exec(move || {
            let program = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr() as *mut libc::sock_filter,
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    0,
                    &program as *const libc::sock_fprog,
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.output().expect("the listing starts")
}

fn check(errno: u32, reason: &str) {
    let output = run_refused(errno);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(77), "{output:?}");
    assert!(output.stdout.is_empty(), "{output:?}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert_eq!(
        stderr.trim_end(),
        format!("io_uring is unavailable here: io_uring_setup failed: {reason}")
    );
}

#[test]
fn without_io_uring_in_the_kernel_it_says_so_and_exits_77() {
    let _limit = TestLimit::seconds(20);
    check(
        libc::ENOSYS as u32,
        "Function not implemented (os error 38)",
    );
}

#[test]
fn with_io_uring_refused_by_seccomp_it_says_so_and_exits_77() {
    let _limit = TestLimit::seconds(20);
    check(libc::EPERM as u32, "Operation not permitted (os error 1)");
}
