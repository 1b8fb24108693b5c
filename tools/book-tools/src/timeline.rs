//! Thread timelines: the figures of Part II, drawn from the events a real run
//! of a listing recorded (`AWD_TIMELINE`, see `awd::waits`), and the check
//! that a figure still says what a fresh run records.
//!
//! A timeline is a sequence diagram: one column per thread, in the order the
//! threads first appear; time flows down, one row per event. A box on a
//! thread's line is something it is running (a callback, an inline
//! continuation); a red bar is the thread blocked, with what it waits for
//! written beside it; the watchdog's conclusion is written at the bottom.
//! The SVG is meant to be inlined in a chapter, so it carries no colours of
//! its own: `theme/listings.css` styles its classes for every theme.

//!
//! # The records
//!
//! The events come from the lines `awd::waits::write_timeline_if_asked`
//! writes. Their format, and the types they are read into, are defined once,
//! in `listings/awd/src/waits/timeline.rs`, which this module compiles by
//! path as [`record`]: that file uses only the standard library, so this
//! crate (an mdBook preprocessor, which must stay light) never depends on
//! the support crate to read a record. A test below reads lines that the
//! support crate itself writes.

use std::fmt::Write as _;
use std::time::Duration;

#[path = "../../../listings/awd/src/waits/timeline.rs"]
pub mod record;

pub use record::{parse, Event, EventKind, WaitsFor};

/// What a blocked thread waits for, as a figure writes it.
fn waits_for(what: &WaitsFor) -> String {
    match what {
        WaitsFor::Receive(id) => format!("blocked: waits for receive #{id}"),
        WaitsFor::Thread(name) => format!("blocked: waits for thread `{name}`"),
        WaitsFor::Task(name) => format!("blocked: waits for the task `{name}` to finish"),
        WaitsFor::Lock { lock, holder } => {
            format!("blocked: waits for lock `{lock}`, held by `{holder}`")
        }
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const LEFT: usize = 84;
const COLUMN: usize = 300;
const TOP: usize = 56;
const ROW: usize = 24;

/// The label each event gets in a figure.
fn label(kind: &EventKind) -> String {
    match kind {
        EventKind::Begin(what) => format!("runs {what}"),
        EventKind::End => "returns".to_string(),
        EventKind::Blocked(what) => waits_for(what),
        EventKind::Unblocked => "unblocked".to_string(),
        EventKind::Mark(what) => what.clone(),
    }
}

/// Draws `events` as an SVG sequence diagram. `verdict` holds the lines of
/// the watchdog's conclusion (empty when the run completed); `title` names
/// the figure for screen readers.
pub fn render(events: &[Event], verdict: &[String], title: &str) -> String {
    let mut threads: Vec<&str> = Vec::new();
    for event in events {
        if !threads.contains(&event.thread.as_str()) {
            threads.push(&event.thread);
        }
    }
    let rows = events.len();
    let bottom = TOP + rows * ROW + 8;
    let width = LEFT + threads.len() * COLUMN + 110;
    let height = bottom + 14 + verdict.len() * 18 + 8;
    let column = |thread: &str| {
        let index = threads.iter().position(|t| *t == thread).unwrap_or(0);
        LEFT + index * COLUMN + 20
    };
    let row_y = |row: usize| TOP + row * ROW + ROW / 2;

    let mut svg = String::new();
    let description = if verdict.is_empty() {
        format!("{title}: every thread ran to the end.")
    } else {
        verdict.join(" ")
    };
    let _ = write!(
        svg,
        "<svg class=\"timeline\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width} {height}\" \
         width=\"{width}\" height=\"{height}\" role=\"img\" aria-labelledby=\"{id}-title {id}-desc\">\n\
         <title id=\"{id}-title\">{title}</title>\n<desc id=\"{id}-desc\">{desc}</desc>\n",
        id = title
            .to_lowercase()
            .replace(|c: char| !c.is_ascii_alphanumeric(), "-"),
        title = escape(title),
        desc = escape(&description),
    );
    // Thread headers and lifelines.
    for thread in &threads {
        let x = column(thread);
        let _ = writeln!(
            svg,
            "<rect class=\"header\" x=\"{}\" y=\"8\" width=\"{}\" height=\"28\" rx=\"4\"/>\
             <text class=\"thread\" x=\"{}\" y=\"27\">thread {}</text>\
             <line class=\"lifeline\" x1=\"{x}\" y1=\"36\" x2=\"{x}\" y2=\"{bottom}\"/>",
            x - 16,
            COLUMN - 40,
            x - 8,
            escape(thread),
        );
    }
    let _ = writeln!(svg, "<text class=\"time\" x=\"4\" y=\"27\">time</text>");
    // Spans: what each thread runs, and where it blocks.
    let mut open: Vec<(String, usize, usize)> = Vec::new(); // thread, row, depth
    let mut blocked: Vec<(String, usize)> = Vec::new();
    let mut depth_of = std::collections::HashMap::<String, usize>::new();
    let mut spans = String::new();
    let mut labels = String::new();
    let first = events.first().map_or(Duration::ZERO, |e| e.at);
    for (row, event) in events.iter().enumerate() {
        let x = column(&event.thread);
        let y = row_y(row);
        let depth = *depth_of.get(&event.thread).unwrap_or(&0);
        match &event.what {
            EventKind::Begin(_) => {
                open.push((event.thread.clone(), row, depth));
                depth_of.insert(event.thread.clone(), depth + 1);
            }
            EventKind::End => {
                if let Some(at) = open.iter().rposition(|(t, _, _)| *t == event.thread) {
                    let (_, start, d) = open.remove(at);
                    let _ = writeln!(
                        spans,
                        "<rect class=\"activity\" x=\"{}\" y=\"{}\" width=\"10\" height=\"{}\"/>",
                        x - 5 + d * 6,
                        row_y(start) - 6,
                        row_y(row) - row_y(start) + 12
                    );
                    depth_of.insert(event.thread.clone(), d);
                }
            }
            EventKind::Blocked(_) => blocked.push((event.thread.clone(), row)),
            EventKind::Unblocked => {
                if let Some(at) = blocked.iter().rposition(|(t, _)| *t == event.thread) {
                    let (_, start) = blocked.remove(at);
                    let _ = writeln!(
                        spans,
                        "<line class=\"blocked\" x1=\"{x}\" y1=\"{}\" x2=\"{x}\" y2=\"{y}\"/>",
                        row_y(start)
                    );
                }
            }
            EventKind::Mark(_) => {
                let _ = writeln!(
                    spans,
                    "<circle class=\"mark\" cx=\"{}\" cy=\"{y}\" r=\"3\"/>",
                    x + depth * 6
                );
            }
        }
        let shift = match event.what {
            EventKind::Begin(_) => depth,
            _ => depth.saturating_sub(usize::from(matches!(event.what, EventKind::End))),
        };
        let _ = writeln!(
            labels,
            "<text class=\"time\" x=\"4\" y=\"{}\">+{:.2} ms</text>\
             <text class=\"label\" x=\"{}\" y=\"{}\">{}</text>",
            y + 4,
            event.at.saturating_sub(first).as_secs_f64() * 1000.0,
            x + 14 + shift * 6,
            y + 4,
            escape(&label(&event.what)),
        );
    }
    // Whatever is still running or blocked at the end never returned.
    for (thread, start, d) in open {
        let x = column(&thread);
        let _ = writeln!(
            spans,
            "<rect class=\"activity unfinished\" x=\"{}\" y=\"{}\" width=\"10\" height=\"{}\"/>",
            x - 5 + d * 6,
            row_y(start) - 6,
            bottom - row_y(start) + 6
        );
    }
    for (thread, start) in blocked {
        let x = column(&thread);
        let _ = writeln!(
            spans,
            "<line class=\"blocked\" x1=\"{x}\" y1=\"{}\" x2=\"{x}\" y2=\"{bottom}\"/>",
            row_y(start)
        );
    }
    svg.push_str(&spans);
    svg.push_str(&labels);
    for (index, line) in verdict.iter().enumerate() {
        let _ = writeln!(
            svg,
            "<text class=\"verdict\" x=\"{LEFT}\" y=\"{}\">{}</text>",
            bottom + 18 + index * 18,
            escape(line)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// The texts of a figure that say something (labels, thread names and the
/// verdict), sorted: what a figure must keep saying when it is redrawn from
/// a fresh run. Times and positions are left out: they change every run.
pub fn statements(svg: &str) -> Vec<String> {
    let mut found = Vec::new();
    for class in ["label", "thread", "verdict"] {
        let open = format!("<text class=\"{class}\"");
        for (at, _) in svg.match_indices(&open) {
            let rest = &svg[at..];
            let Some(start) = rest.find('>') else {
                continue;
            };
            let Some(end) = rest.find("</text>") else {
                continue;
            };
            found.push(format!("{class}: {}", &rest[start + 1..end]));
        }
    }
    found.sort();
    found
}

/// The verdict lines of a watchdog report (`awd::watchdog::run` writes them
/// to standard error): its first line's conclusion and the `=>` lines.
pub fn verdict(stderr: &str) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut in_conclusion = false;
    for line in stderr.lines() {
        if let Some(rest) = line.strip_prefix("watchdog: ") {
            in_conclusion = false;
            if let Some((_, conclusion)) = rest.split_once(" ms: ") {
                lines.push(format!("watchdog: {conclusion}"));
            }
        } else if let Some(rest) = line.trim().strip_prefix("=> ") {
            in_conclusion = true;
            lines.push(rest.to_string());
        } else if in_conclusion && line.starts_with("      ") {
            // A wrapped continuation of the conclusion.
            if let Some(last) = lines.last_mut() {
                last.push(' ');
                last.push_str(line.trim());
            }
        } else {
            in_conclusion = false;
        }
    }
    lines
}

/// Where `book figures` draws: `target/figures/` by default, so that drawing
/// changes nothing the repository tracks; the book's own `src/figures/` only
/// with `--into-book`.
pub fn figures_dir(root: &std::path::Path, into_book: bool) -> std::path::PathBuf {
    if into_book {
        root.join("src/figures")
    } else {
        root.join("target/figures")
    }
}

/// "Listing 3-1" for the package `listing-03-01`.
pub fn listing_name(package: &str) -> String {
    let numbers: Vec<String> = package
        .trim_start_matches("listing-")
        .split('-')
        .map(|n| n.trim_start_matches('0').to_string())
        .map(|n| if n.is_empty() { "0".to_string() } else { n })
        .collect();
    format!("Listing {}", numbers.join("-"))
}

/// Runs the listing `package` (from the book's root, with `cargo`), records
/// its timeline, and draws it. Bounded: a run that outlives `limit` is
/// stopped and is an error.
pub fn draw_from_a_fresh_run(
    cargo: &std::path::Path,
    root: &std::path::Path,
    package: &str,
    limit: std::time::Duration,
) -> Result<String, String> {
    let recorded =
        std::env::temp_dir().join(format!("awd-timeline-{package}-{}.tsv", std::process::id()));
    let mut command = std::process::Command::new(cargo);
    command
        .current_dir(root)
        .args(["run", "--quiet", "-p", package])
        .env("AWD_TIMELINE", &recorded);
    let stderr = crate::process::run_bounded(&mut command, limit)?.stderr;
    let tsv = std::fs::read_to_string(&recorded)
        .map_err(|e| format!("{package} recorded no timeline ({e}); its output:\n{stderr}"))?;
    let _ = std::fs::remove_file(&recorded);
    let events = parse(&tsv)?;
    let title = format!("{}: thread timeline", listing_name(package));
    Ok(render(&events, &verdict(&stderr), &title))
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::TestLimit;

    const RUN: &str = "17\tserver\tmark\treceive #1 pending\n\
                       51\tawd-io\tbegin\tthe callback of receive #1\n\
                       67\tawd-io\tblocked\treceive\t2\n\
                       79\tserver\tblocked\tthread\tawd-io\n";

    #[test]
    fn what_the_support_crate_records_is_read_back_field_by_field() {
        let _limit = TestLimit::seconds(10);
        use awd::waits::{self, WaitsFor as Recorded};
        // Facts recorded by the support crate itself, on a thread of their own.
        let text = std::thread::Builder::new()
            .name("recorder".to_string())
            .spawn(|| {
                waits::start_recording();
                let _callback = waits::activity("a callback");
                waits::mark("receive #7 pending");
                let lock = Recorded::Lock {
                    lock: "latest".into(),
                    holder: "awd-io".into(),
                };
                for waits_for in [
                    Recorded::Receive(7),
                    Recorded::Thread("awd-io".into()),
                    Recorded::Task("receive_reading#1".into()),
                    lock,
                ] {
                    waits::blocking("a wait", waits_for, || ());
                }
                let mine = waits::events()
                    .into_iter()
                    .filter(|e| e.thread == "recorder")
                    .collect::<Vec<_>>();
                waits::timeline::write(&mine)
            })
            .unwrap()
            .join()
            .unwrap();
        let events = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let blocked: Vec<WaitsFor> = events
            .iter()
            .filter_map(|e| match &e.what {
                EventKind::Blocked(what) => Some(what.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(
            blocked,
            vec![
                WaitsFor::Receive(7),
                WaitsFor::Thread("awd-io".into()),
                WaitsFor::Task("receive_reading#1".into()),
                WaitsFor::Lock {
                    lock: "latest".into(),
                    holder: "awd-io".into()
                },
            ]
        );
        assert!(events.iter().all(|e| e.thread == "recorder"));
        assert_eq!(events[0].what, EventKind::Begin("a callback".into()));
        assert_eq!(events[1].what, EventKind::Mark("receive #7 pending".into()));
        // Read and written again, the text is the same, byte for byte.
        assert_eq!(record::write(&events), text);
        let said = statements(&render(&events, &[], "x"));
        for label in [
            "label: blocked: waits for receive #7",
            "label: blocked: waits for thread `awd-io`",
            "label: blocked: waits for the task `receive_reading#1` to finish",
            "label: blocked: waits for lock `latest`, held by `awd-io`",
        ] {
            assert!(said.contains(&label.to_string()), "{label}: {said:?}");
        }
    }

    #[test]
    fn a_tab_or_a_line_break_in_a_text_cannot_break_a_record() {
        let _limit = TestLimit::seconds(5);
        let event = Event {
            at: Duration::from_micros(5),
            thread: "a\tthread".into(),
            what: EventKind::Mark("two\nlines".into()),
        };
        let read = parse(&record::write(&[event])).unwrap();
        assert_eq!(read[0].thread, "a thread");
        assert_eq!(read[0].what, EventKind::Mark("two lines".into()));
    }

    #[test]
    fn figures_are_drawn_under_target_unless_asked_into_the_book() {
        let _limit = TestLimit::seconds(10);
        let root = std::path::Path::new("/book");
        assert_eq!(figures_dir(root, false), root.join("target/figures"));
        assert_eq!(figures_dir(root, true), root.join("src/figures"));
    }

    #[test]
    fn a_recorded_run_becomes_a_figure_with_its_statements() {
        let _limit = TestLimit::seconds(5);
        let events = parse(RUN).unwrap();
        assert_eq!(events.len(), 4);
        let verdict = vec!["a cycle: `awd-io` → `awd-io`".to_string()];
        let svg = render(&events, &verdict, "Listing 3-1");
        assert!(
            !svg.contains("\n\n"),
            "an inlined SVG must have no blank line"
        );
        let said = statements(&svg);
        assert!(said.contains(&"label: blocked: waits for receive #2".to_string()));
        assert!(said.contains(&"label: blocked: waits for thread `awd-io`".to_string()));
        assert!(said.contains(&"thread: thread awd-io".to_string()));
        assert!(said.contains(&"verdict: a cycle: `awd-io` → `awd-io`".to_string()));
        assert!(svg.contains("class=\"activity unfinished\""));
    }

    #[test]
    fn the_order_of_events_does_not_change_the_statements() {
        let _limit = TestLimit::seconds(5);
        let mut events = parse(RUN).unwrap();
        let first = statements(&render(&events, &[], "x"));
        events.swap(2, 3);
        assert_eq!(statements(&render(&events, &[], "x")), first);
    }

    #[test]
    fn bad_lines_and_verdicts_are_read_carefully() {
        let _limit = TestLimit::seconds(5);
        assert!(parse("x\ty\n").is_err());
        assert!(parse("1\tt\tbegin\n").is_err());
        assert!(parse("1\tt\tblocked\treceive\tseven\n").is_err());
        assert!(parse("1\tt\tblocked\tlock\tlatest\n").is_err());
        // The English of a report is not a record.
        assert!(parse("1\tt\tblocked\twork that only thread `x` can run\n").is_err());
        let report = "watchdog: `ui` did not finish within 300 ms: deadlock\n  thread ...\n  => a cycle: `ui` → `ui`. None of them can move: a deadlock\n";
        assert_eq!(
            verdict(report),
            vec![
                "watchdog: deadlock".to_string(),
                "a cycle: `ui` → `ui`. None of them can move: a deadlock".to_string()
            ]
        );
    }
}
