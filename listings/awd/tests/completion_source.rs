//! The completion source: exactly once, where continuations run, the future
//! face, and abandonment.

use std::sync::mpsc::channel;
use std::thread;
use std::time::Duration;

use awd::completion_source::{completion_source, Abandoned, AlreadyCompleted, Continuations};
use awd::watchdog::TestLimit;

const WAIT: Duration = Duration::from_secs(5);

#[test]
fn a_result_is_set_exactly_once() {
    let _limit = TestLimit::seconds(10);
    let (source, completion) = completion_source::<u32>(Continuations::Asynchronous);
    assert_eq!(source.set_result(1), Ok(()));
    assert_eq!(source.set_result(2), Err(AlreadyCompleted(2)));
    assert_eq!(completion.wait(), Ok(1));
}

#[test]
fn racing_completers_have_exactly_one_winner() {
    let _limit = TestLimit::seconds(20);
    for _ in 0..200 {
        let (source, completion) = completion_source::<u32>(Continuations::Inline);
        let other = source.clone();
        let racer = thread::spawn(move || other.set_result(2).is_ok());
        let mine = source.set_result(1).is_ok();
        let theirs = racer.join().unwrap();
        assert!(mine ^ theirs, "exactly one completion wins");
        let expected = if mine { 1 } else { 2 };
        assert_eq!(completion.wait(), Ok(expected));
    }
}

#[test]
fn an_error_is_a_result_too() {
    let _limit = TestLimit::seconds(10);
    let (source, completion) = completion_source::<Result<usize, String>>(Continuations::Inline);
    source.set_error("reset".to_string()).unwrap();
    assert!(source.set_result(Ok(3)).is_err());
    assert_eq!(completion.wait(), Ok(Err("reset".to_string())));
}

#[test]
fn inline_continuations_run_inside_set_result() {
    let _limit = TestLimit::seconds(10);
    let (source, completion) = completion_source::<u32>(Continuations::Inline);
    let (ran, ran_on) = channel();
    completion.on_completed(move |value| ran.send((value, thread::current().id())).unwrap());
    source.set_result(5).unwrap();
    // Already there when set_result returns, and on this very thread.
    let (value, thread) = ran_on
        .try_recv()
        .expect("the continuation ran inside set_result");
    assert_eq!(value, Ok(5));
    assert_eq!(thread, thread::current().id());
}

#[test]
fn asynchronous_continuations_never_hold_the_completer() {
    let _limit = TestLimit::seconds(10);
    let (source, completion) = completion_source::<u32>(Continuations::Asynchronous);
    let (release, released) = channel::<()>();
    let (ran, ran_on) = channel();
    completion.on_completed(move |value| {
        // Blocks until the test says so: an inline run would block set_result.
        released.recv().unwrap();
        ran.send((value, thread::current().id())).unwrap();
    });
    source.set_result(6).unwrap(); // returns although the continuation blocks
    release.send(()).unwrap();
    let (value, thread) = ran_on.recv_timeout(WAIT).unwrap();
    assert_eq!(value, Ok(6));
    assert_ne!(thread, thread::current().id());
}

#[test]
fn a_continuation_registered_after_completion_runs_at_once() {
    let _limit = TestLimit::seconds(10);
    let (source, completion) = completion_source::<u32>(Continuations::Asynchronous);
    source.set_result(7).unwrap();
    let (ran, ran_on) = channel();
    completion.on_completed(move |value| ran.send((value, thread::current().id())).unwrap());
    assert_eq!(ran_on.try_recv().unwrap(), (Ok(7), thread::current().id()));
}

#[tokio::test]
async fn the_future_waits_for_a_result_set_on_another_thread() {
    let _limit = TestLimit::seconds(10);
    let (source, completion) = completion_source::<u32>(Continuations::Inline);
    let completer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(20));
        source.set_result(8).unwrap();
    });
    assert_eq!(completion.await, Ok(8));
    completer.join().unwrap();
}

#[tokio::test]
async fn a_dropped_source_resolves_the_future_with_an_error() {
    let _limit = TestLimit::seconds(10);
    let (source, completion) = completion_source::<u32>(Continuations::Inline);
    let clone = source.clone();
    drop(source);
    assert!(!clone.is_complete(), "one handle is still alive");
    thread::spawn(move || drop(clone));
    assert_eq!(completion.await, Err(Abandoned));
}

#[test]
fn a_dropped_source_resolves_waits_and_continuations_with_an_error() {
    let _limit = TestLimit::seconds(10);
    let (source, completion) = completion_source::<u32>(Continuations::Inline);
    drop(source);
    assert_eq!(completion.wait(), Err(Abandoned));
    let (source, completion) = completion_source::<u32>(Continuations::Asynchronous);
    let (ran, ran_on) = channel();
    completion.on_completed(move |value| ran.send(value).unwrap());
    drop(source);
    assert_eq!(ran_on.recv_timeout(WAIT).unwrap(), Err(Abandoned));
}
