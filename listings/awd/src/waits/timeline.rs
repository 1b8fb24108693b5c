//! The timeline records: each fact that `awd::waits` keeps, as one line of
//! text. `awd::waits::write_timeline_if_asked` writes them to the file that
//! `AWD_TIMELINE` names, and the book's tools read them back to draw the
//! thread timelines.
//!
//! This file is the format's one definition, and it is compiled twice. The
//! support crate compiles it as `awd::waits::timeline`. The book's tools
//! (`book_tools::timeline`) compile the same file by path. The tools include
//! the mdBook preprocessor, which must stay light, so reading a record must
//! never need the support crate and its tokio and mio. So this file uses
//! only the standard library and names no other module.
//!
//! # Format
//!
//! One event per line, its fields separated by tabs:
//!
//! ```text
//! <microseconds> <thread> <kind> <the kind's fields…>
//! ```
//!
//! | kind | its fields | the thread… |
//! |---|---|---|
//! | `begin` | what | starts running that (a callback, a continuation) |
//! | `end` | none | finishes the innermost thing it began |
//! | `blocked` | `receive`, a number | blocks until that receive completes |
//! | `blocked` | `thread`, a name | blocks on work only that thread can run |
//! | `blocked` | `task`, a name | blocks until that task finishes |
//! | `blocked` | `lock`, a name, a holder | blocks on that lock, held by the holder thread |
//! | `unblocked` | none | stops being blocked |
//! | `mark` | what | notes that something happened at that instant |
//!
//! The microseconds count from the first fact the process recorded. No
//! field holds a tab or a line break: writing turns each into a space.
//!
//! For example, `"79\tserver\tblocked\tthread\tawd-io\n"` says that 79
//! µs in, the thread `server` blocked on work that only the thread `awd-io`
//! can run.

use std::fmt;
use std::time::Duration;

/// What a blocked thread is waiting for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WaitsFor {
    /// The completion of the receive with this number.
    Receive(u64),
    /// Work that only the thread with this name can do.
    Thread(String),
    /// The task with this name (a task of a message loop) to finish.
    Task(String),
    /// The lock with this name, held by the thread with that name.
    Lock {
        /// The lock's name.
        lock: String,
        /// The thread that holds it.
        holder: String,
    },
}

/// How a watchdog report says it.
impl fmt::Display for WaitsFor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitsFor::Receive(id) => write!(f, "receive #{id}"),
            WaitsFor::Thread(name) => write!(f, "work that only thread `{name}` can run"),
            WaitsFor::Task(name) => write!(f, "the task `{name}` to finish"),
            WaitsFor::Lock { lock, holder } => {
                write!(f, "the lock `{lock}`, held by thread `{holder}`")
            }
        }
    }
}

/// One recorded fact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Time since the first event of the process.
    pub at: Duration,
    /// The thread it happened on.
    pub thread: String,
    /// What happened.
    pub what: EventKind,
}

/// The kinds of recorded facts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The thread started doing this.
    Begin(String),
    /// The thread finished the innermost thing it had begun.
    End,
    /// The thread blocked, waiting for this.
    Blocked(WaitsFor),
    /// The thread stopped being blocked.
    Unblocked,
    /// Something happened at one instant.
    Mark(String),
}

/// A text as a field: tabs and line breaks become spaces.
fn field(text: &str) -> String {
    text.replace(['\t', '\n', '\r'], " ")
}

impl Event {
    /// The event as one line of the format, without its line break.
    pub fn line(&self) -> String {
        let what = match &self.what {
            EventKind::Begin(what) => format!("begin\t{}", field(what)),
            EventKind::End => "end".to_string(),
            EventKind::Blocked(WaitsFor::Receive(id)) => format!("blocked\treceive\t{id}"),
            EventKind::Blocked(WaitsFor::Thread(name)) => {
                format!("blocked\tthread\t{}", field(name))
            }
            EventKind::Blocked(WaitsFor::Task(name)) => format!("blocked\ttask\t{}", field(name)),
            EventKind::Blocked(WaitsFor::Lock { lock, holder }) => {
                format!("blocked\tlock\t{}\t{}", field(lock), field(holder))
            }
            EventKind::Unblocked => "unblocked".to_string(),
            EventKind::Mark(what) => format!("mark\t{}", field(what)),
        };
        format!("{}\t{}\t{what}", self.at.as_micros(), field(&self.thread))
    }

    /// Reads one line of the format; `None` if it is not one.
    pub fn parse(line: &str) -> Option<Event> {
        let fields: Vec<&str> = line.split('\t').collect();
        let [micros, thread, kind, rest @ ..] = fields.as_slice() else {
            return None;
        };
        let what = match (*kind, rest) {
            ("begin", [what]) => EventKind::Begin(what.to_string()),
            ("end", []) => EventKind::End,
            ("blocked", ["receive", id]) => EventKind::Blocked(WaitsFor::Receive(id.parse().ok()?)),
            ("blocked", ["thread", name]) => EventKind::Blocked(WaitsFor::Thread(name.to_string())),
            ("blocked", ["task", name]) => EventKind::Blocked(WaitsFor::Task(name.to_string())),
            ("blocked", ["lock", lock, holder]) => EventKind::Blocked(WaitsFor::Lock {
                lock: lock.to_string(),
                holder: holder.to_string(),
            }),
            ("unblocked", []) => EventKind::Unblocked,
            ("mark", [what]) => EventKind::Mark(what.to_string()),
            _ => return None,
        };
        Some(Event {
            at: Duration::from_micros(micros.parse().ok()?),
            thread: thread.to_string(),
            what,
        })
    }
}

/// Every event, one line each.
pub fn write(events: &[Event]) -> String {
    events.iter().map(|e| e.line() + "\n").collect()
}

/// Reads what [`write()`] wrote (blank lines are skipped). An error names the
/// first line that is not in the format.
pub fn parse(text: &str) -> Result<Vec<Event>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| {
            Event::parse(line)
                .ok_or_else(|| format!("timeline line {}: cannot read {line:?}", index + 1))
        })
        .collect()
}
