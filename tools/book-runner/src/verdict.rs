//! How a run ended, said against what the block's fence promises: the line
//! the page shows under the output ("Deadlocked, as the chapter says.",
//! "Completed: your change cured it.").
//!
//! The outcome comes from the program's exit status, as the book's tests
//! read it: `awd::watchdog::run` ends a program with
//! [`awd_status::DEADLOCK`] when its watchdog finds a deadlock and
//! [`awd_status::HANG`] when it finds a hang that is no deadlock; a panic
//! ends it with 101.

use book_tools::fences::Expectation;

/// The exit statuses the support crate's watchdog uses (the same values as
/// `awd::watchdog::DEADLOCK_EXIT_CODE` and `HANG_EXIT_CODE`; a test checks
/// they agree).
pub mod awd_status {
    /// The watchdog found a deadlock.
    pub const DEADLOCK: i32 = 3;
    /// The watchdog found a hang that is no deadlock.
    pub const HANG: i32 = 4;
    /// A panic.
    pub const PANIC: i32 = 101;
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Exited with status 0.
    Completed,
    /// Stopped by its watchdog: a deadlock.
    Deadlock,
    /// Stopped by its watchdog: a hang without a deadlock.
    Hang,
    /// Panicked.
    Panic,
    /// Did not compile.
    CompileError,
    /// Compiled; not run, as its listing says.
    Compiled,
    /// Stopped by the reader (Stop, or the page went away).
    Stopped,
    /// Still running at the wall-time limit: killed.
    TimedOut,
    /// Printed more than the output limit: killed.
    OutputCut,
    /// Any other end: another exit status, or a signal.
    Failed,
}

impl Outcome {
    /// The outcome of a program that exited with `status` (`None`: killed by
    /// a signal).
    pub fn of_status(status: Option<i32>) -> Outcome {
        match status {
            Some(0) => Outcome::Completed,
            Some(awd_status::DEADLOCK) => Outcome::Deadlock,
            Some(awd_status::HANG) => Outcome::Hang,
            Some(awd_status::PANIC) => Outcome::Panic,
            _ => Outcome::Failed,
        }
    }

    /// The name the page reads (`data-outcome`).
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Completed => "ok",
            Outcome::Deadlock => "deadlock",
            Outcome::Hang => "hang",
            Outcome::Panic => "panic",
            Outcome::CompileError => "compile_error",
            Outcome::Compiled => "compiled",
            Outcome::Stopped => "stopped",
            Outcome::TimedOut => "timeout",
            Outcome::OutputCut => "output_cut",
            Outcome::Failed => "failed",
        }
    }

    /// The outcome a fence promises.
    pub fn promised(expect: Expectation) -> Outcome {
        match expect {
            Expectation::Runs => Outcome::Completed,
            Expectation::Panics => Outcome::Panic,
            Expectation::Deadlocks => Outcome::Deadlock,
            Expectation::Hangs => Outcome::Hang,
            Expectation::CompileFails => Outcome::CompileError,
            Expectation::CompilesOnly => Outcome::Compiled,
        }
    }

    fn what(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Deadlock => "deadlocked",
            Outcome::Hang => "hung without a deadlock",
            Outcome::Panic => "panicked",
            Outcome::CompileError => "does not compile",
            Outcome::Compiled => "compiles",
            Outcome::Stopped => "stopped",
            Outcome::TimedOut => "still running after the time limit: stopped",
            Outcome::OutputCut => "printed more than the output limit: stopped",
            Outcome::Failed => "ended with an error",
        }
    }
}

/// The verdict line, and whether the run did what the fence promises.
pub fn verdict(
    outcome: Outcome,
    expect: Expectation,
    edited: bool,
    status: Option<i32>,
) -> (String, bool) {
    let promised = Outcome::promised(expect);
    let mut what = outcome.what().to_string();
    if outcome == Outcome::Failed {
        what = match status {
            Some(code) => format!("exited with status {code}"),
            None => "was killed by a signal".to_string(),
        };
    }
    let capital = |s: &str| {
        let mut c = s.chars();
        c.next()
            .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
            .unwrap_or_default()
    };
    if matches!(
        outcome,
        Outcome::Stopped | Outcome::TimedOut | Outcome::OutputCut
    ) {
        return (format!("{}.", capital(&what)), false);
    }
    if outcome == promised {
        let line = match outcome {
            Outcome::Compiled => "Compiles, as the chapter says; the listing is not run.".into(),
            _ => format!("{}, as the chapter says.", capital(&what)),
        };
        return (line, true);
    }
    let line = match (promised, outcome, edited) {
        (Outcome::Deadlock | Outcome::Hang | Outcome::Panic, Outcome::Completed, true) => {
            "Completed: your change cured it.".to_string()
        }
        (_, Outcome::CompileError, true) => {
            "Does not compile: see the compiler's message above (lines as shown).".to_string()
        }
        (Outcome::Completed, _, true) => format!(
            "{}: your change broke it (the chapter's version completes).",
            capital(&what)
        ),
        (_, _, true) => format!(
            "{}; the chapter's version {}.",
            capital(&what),
            promised.what()
        ),
        (_, _, false) => format!(
            "{}, but the chapter says it {}.",
            capital(&what),
            promised.what()
        ),
    };
    (line, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::TestLimit;

    #[test]
    fn statuses_agree_with_the_support_crate() {
        let _limit = TestLimit::seconds(5);
        assert_eq!(awd_status::DEADLOCK, awd::watchdog::DEADLOCK_EXIT_CODE);
        assert_eq!(awd_status::HANG, awd::watchdog::HANG_EXIT_CODE);
    }

    #[test]
    fn verdicts_compare_with_the_fence() {
        let _limit = TestLimit::seconds(5);
        let v = |o, e, edited| verdict(o, e, edited, None);
        assert_eq!(
            v(Outcome::Deadlock, Expectation::Deadlocks, false),
            ("Deadlocked, as the chapter says.".to_string(), true)
        );
        assert_eq!(
            v(Outcome::Completed, Expectation::Deadlocks, true),
            ("Completed: your change cured it.".to_string(), false)
        );
        assert!(v(Outcome::Deadlock, Expectation::Runs, true)
            .0
            .contains("your change broke it"));
        assert_eq!(
            v(Outcome::CompileError, Expectation::CompileFails, false),
            ("Does not compile, as the chapter says.".to_string(), true)
        );
        assert_eq!(Outcome::of_status(Some(3)), Outcome::Deadlock);
        assert_eq!(Outcome::of_status(Some(4)), Outcome::Hang);
        assert_eq!(Outcome::of_status(Some(101)), Outcome::Panic);
        assert_eq!(Outcome::of_status(None), Outcome::Failed);
    }
}
