//! The watchdog's diagnosis on real scenarios: a cycle of waits is a
//! deadlock, a wait for a completion that already happened is a lost
//! completion, a loop that never blocks is a spin, and each is found within
//! the watchdog's short limit.

use std::io::Write;
use std::sync::mpsc::channel;
use std::time::Duration;

use awd::completion_source::{completion_source, Continuations};
use awd::socket::{loopback_pair, IoThread, Start, IO_THREAD_NAME};
use awd::waits::{self, Verdict, WaitsFor};
use awd::watchdog::{watch, TestLimit, DEADLOCK_LIMIT};

const WAIT: Duration = Duration::from_secs(5);

#[test]
fn a_thread_waiting_for_itself_is_a_deadlock() {
    let _limit = TestLimit::seconds(10);
    let outcome = watch("self-wait", DEADLOCK_LIMIT, || {
        let (_never_sent, never) = channel::<()>();
        waits::blocking(
            "a channel receive",
            WaitsFor::Thread("self-wait".into()),
            || never.recv(),
        )
    });
    let awd::watchdog::Outcome::Stuck { diagnosis, waited } = outcome else {
        panic!("expected a stuck scenario: {outcome:?}");
    };
    assert!(waited < Duration::from_millis(500), "{waited:?}");
    assert_eq!(diagnosis.verdict, Verdict::Deadlock, "{diagnosis}");
    let report = diagnosis.lines.join("\n");
    assert!(
        report.contains("thread `self-wait` is blocked in a channel receive"),
        "{report}"
    );
    assert!(
        report.contains("a cycle: `self-wait` → `self-wait`"),
        "{report}"
    );
}

#[test]
fn a_completion_source_names_what_its_waiter_waits_for() {
    let _limit = TestLimit::seconds(10);
    let outcome = watch("labelled", DEADLOCK_LIMIT, || {
        let io = IoThread::start().unwrap();
        let (socket, mut peer) = loopback_pair(&io).unwrap();
        let for_callback = socket.clone();
        let (done, finished) = channel();
        let first = socket.receive(vec![0; 1], move |_| {
            let (source, completion) = completion_source::<usize>(Continuations::Inline);
            let for_result = source.clone();
            let second = for_callback.receive(vec![0; 1], move |r| {
                let _ = for_result.set_result(r.result.unwrap_or(0));
            });
            assert!(matches!(second, Start::Pending));
            source.completes(WaitsFor::Receive(for_callback.pending_receive().unwrap()));
            drop(source);
            let _ = done.send(completion.wait());
        });
        assert!(matches!(first, Start::Pending));
        assert!(socket.wait_for_pending_receive(WAIT));
        peer.write_all(b"1").unwrap();
        finished.recv().unwrap()
    });
    let awd::watchdog::Outcome::Stuck { diagnosis, .. } = outcome else {
        panic!("expected a stuck scenario: {outcome:?}");
    };
    assert_eq!(diagnosis.verdict, Verdict::Deadlock, "{diagnosis}");
    let report = diagnosis.lines.join("\n");
    assert!(
        report.contains(&format!(
            "thread `{IO_THREAD_NAME}`, inside the callback of receive #"
        )),
        "{report}"
    );
    assert!(
        report.contains("is blocked in `Completion::wait`"),
        "{report}"
    );
    assert!(
        report.contains(&format!(
            "is pending: only thread `{IO_THREAD_NAME}` can run its callback"
        )),
        "{report}"
    );
    assert!(
        report.contains(&format!("a cycle: `{IO_THREAD_NAME}` → `{IO_THREAD_NAME}`")),
        "{report}"
    );
}

#[test]
fn waiting_for_a_receive_that_completed_at_once_is_a_lost_completion() {
    let _limit = TestLimit::seconds(10);
    let outcome = watch("lost", DEADLOCK_LIMIT, || {
        let io = IoThread::start().unwrap();
        let (socket, mut peer) = loopback_pair(&io).unwrap();
        peer.write_all(b"1").unwrap();
        assert!(socket.wait_until_readable(WAIT));
        let (done, result) = channel::<usize>();
        // As a long-lived completion slot would, something else keeps the
        // sending side alive, so the channel cannot report the loss.
        let _slot = done.clone();
        let started = socket.receive(vec![0; 1], move |r| {
            let _ = done.send(r.result.unwrap_or(0));
        });
        assert!(matches!(started, Start::Ready(_)));
        // The bug: wait for the callback anyway. Receive numbers are global,
        // so find this one's number as the newest receive of this socket.
        let id = waits::events()
            .iter()
            .rev()
            .find_map(|e| match &e.what {
                waits::EventKind::Mark(m) if m.ends_with("completed at once") => m
                    .strip_prefix("receive #")
                    .and_then(|rest| rest.split(' ').next())
                    .and_then(|n| n.parse::<u64>().ok()),
                _ => None,
            })
            .unwrap();
        waits::blocking("a channel receive", WaitsFor::Receive(id), || result.recv())
    });
    assert_eq!(
        outcome.verdict(),
        Some(Verdict::LostCompletion),
        "{outcome:?}"
    );
}

#[test]
fn a_loop_that_never_blocks_is_a_spin() {
    let _limit = TestLimit::seconds(10);
    let outcome = watch("spin", DEADLOCK_LIMIT, || loop {
        waits::busy("a 0-byte receive");
        std::hint::spin_loop();
    });
    assert_eq!(outcome.verdict(), Some(Verdict::Spinning), "{outcome:?}");
}

#[test]
fn a_scenario_that_finishes_is_not_diagnosed() {
    let _limit = TestLimit::seconds(10);
    let outcome = watch("fine", DEADLOCK_LIMIT, || {
        waits::blocking("a short sleep", WaitsFor::Thread("nobody".into()), || {
            std::thread::sleep(Duration::from_millis(10))
        });
        7
    });
    assert_eq!(outcome.completed(), Some(7));
}
