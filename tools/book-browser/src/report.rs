//! The outcome of every check, and how the run reports them: one line per
//! failed or skipped check (page, what, why), then a one-line summary.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// How one check ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    Failed(String),
    /// Not applicable to this book (yet), with the reason.
    Skipped(String),
}

/// One check: where, what, and how it ended.
#[derive(Debug, Clone)]
pub struct Check {
    /// The page (file name) or `(book)` for book-wide checks.
    pub page: String,
    /// What was checked, including the theme where it matters.
    pub what: String,
    pub outcome: Outcome,
}

/// Every check of the run, in the order they were made.
#[derive(Debug, Default)]
pub struct Report {
    checks: Vec<Check>,
    /// When set, every check is also printed as it ends, with the time
    /// since this instant.
    verbose_since: Option<Instant>,
}

impl Report {
    /// A report that also prints every check as it ends.
    pub fn verbose(started: Instant) -> Report {
        Report {
            checks: Vec::new(),
            verbose_since: Some(started),
        }
    }

    fn push(&mut self, check: Check) {
        if let Some(started) = self.verbose_since {
            let label = match &check.outcome {
                Outcome::Passed => "ok",
                Outcome::Failed(_) => "FAIL",
                Outcome::Skipped(_) => "SKIP",
            };
            eprintln!(
                "[{:6.2} s] {label} {}: {}",
                started.elapsed().as_secs_f64(),
                check.page,
                check.what
            );
        }
        self.checks.push(check);
    }

    /// Records a check that passed when `result` is `Ok`, failed otherwise.
    pub fn record(&mut self, page: &str, what: &str, result: Result<(), String>) {
        let outcome = match result {
            Ok(()) => Outcome::Passed,
            Err(why) => Outcome::Failed(why),
        };
        self.push(Check {
            page: page.to_string(),
            what: what.to_string(),
            outcome,
        });
    }

    /// Records a failed check.
    pub fn fail(&mut self, page: &str, what: &str, why: impl Into<String>) {
        self.record(page, what, Err(why.into()));
    }

    /// Records a check that does not apply, with the reason.
    pub fn skip(&mut self, page: &str, what: &str, why: &str) {
        self.push(Check {
            page: page.to_string(),
            what: what.to_string(),
            outcome: Outcome::Skipped(why.to_string()),
        });
    }

    /// How many checks failed.
    pub fn failures(&self) -> usize {
        self.count(|outcome| matches!(outcome, Outcome::Failed(_)))
    }

    fn count(&self, matching: impl Fn(&Outcome) -> bool) -> usize {
        self.checks
            .iter()
            .filter(|check| matching(&check.outcome))
            .count()
    }

    /// The report: a line per failed or skipped check, then the summary.
    pub fn render(&self, pages: usize, elapsed: Duration) -> String {
        let mut text = String::new();
        for check in &self.checks {
            let (label, why) = match &check.outcome {
                Outcome::Passed => continue,
                Outcome::Failed(why) => ("FAIL", why),
                Outcome::Skipped(why) => ("SKIP", why),
            };
            let _ = writeln!(text, "{label} {}: {}: {why}", check.page, check.what);
        }
        let passed = self.count(|outcome| *outcome == Outcome::Passed);
        let skipped = self.count(|outcome| matches!(outcome, Outcome::Skipped(_)));
        let _ = writeln!(
            text,
            "book-browser: {} ({pages} pages, {} checks: {passed} passed, {} failed, {skipped} skipped) in {:.1} s",
            if self.failures() == 0 { "ok" } else { "FAILED" },
            self.checks.len(),
            self.failures(),
            elapsed.as_secs_f64()
        );
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::TestLimit;

    #[test]
    fn failures_and_skips_get_a_line_each_and_passes_only_count() {
        let _limit = TestLimit::seconds(5);
        let mut report = Report::default();
        report.record("index.html", "loads cleanly [light]", Ok(()));
        report.fail("ch01.html", "captions styled [navy]", "contrast 3.1 < 4.5");
        report.skip("(book)", "admonitions styled", "no admonition in the book");
        assert_eq!(report.failures(), 1);
        let text = report.render(2, Duration::from_millis(2500));
        assert_eq!(
            text,
            "FAIL ch01.html: captions styled [navy]: contrast 3.1 < 4.5\n\
             SKIP (book): admonitions styled: no admonition in the book\n\
             book-browser: FAILED (2 pages, 3 checks: 1 passed, 1 failed, 1 skipped) in 2.5 s\n"
        );
    }
}
