//! A completion source without a lock: one atomic word says who may touch
//! the result and the waker, the way `tokio::sync::oneshot` does it. It keeps
//! the waiting side of the support crate's completion source (a future,
//! woken exactly once, resolved with `Abandoned` if the source is dropped)
//! and leaves out continuations and blocking waits. `cargo bench -p
//! listing-10-02` times it against `oneshot` and the support crate's;
//! `cargo loom` checks it in every interleaving.

use std::io::{self, ErrorKind, Write};
use std::thread;
use std::time::Duration;

use awd::socket::{self, CallbackSocket, IoThread, Received, Start};

/// The atomics and the cell, from std, or from loom under `--cfg loom`.
/// std's `UnsafeCell` gets loom's interface (access through a closure), so
/// that one text serves both.
mod sync {
    #[cfg(loom)]
    pub use loom::{
        cell::UnsafeCell,
        sync::atomic::{AtomicUsize, Ordering},
        sync::Arc,
    };
    #[cfg(not(loom))]
    pub use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    };

    /// `std::cell::UnsafeCell`, reached the way loom's is.
    #[cfg(not(loom))]
    pub struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

    #[cfg(not(loom))]
    impl<T> UnsafeCell<T> {
        pub fn new(value: T) -> Self {
            UnsafeCell(std::cell::UnsafeCell::new(value))
        }
        pub fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
            f(self.0.get())
        }
        pub fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }
}

// ANCHOR: listing
/// A completion source whose two sides agree through one atomic word.
pub mod lock_free {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};

    use super::sync::{Arc, AtomicUsize, Ordering::AcqRel, Ordering::Acquire, UnsafeCell};
    use awd::completion_source::Abandoned;

    /// The waiter's waker is in `waker`. While this is set, both sides may
    /// read the waker and neither writes it.
    const WAKER_SET: usize = 0b01;
    /// The result is in `result`. Before this is set, only the completer
    /// touches the result; after, only the waiter.
    const COMPLETE: usize = 0b10;

    struct Shared<T> {
        state: AtomicUsize,
        waker: UnsafeCell<Option<Waker>>,
        result: UnsafeCell<Option<Result<T, Abandoned>>>,
    }

    // SAFETY: the cells are the only part of `Shared` that is not `Sync`,
    // and the two bits above decide who may touch them. `result` is written
    // only by the completer, before it sets COMPLETE (once: the source is
    // consumed), and read only by the waiter, after it sees COMPLETE; the
    // completer's AcqRel `fetch_or` that sets the bit, and whichever of the
    // waiter's Acquire or AcqRel operations first sees it, order the write
    // before the read. `waker` is written only by the waiter while
    // WAKER_SET is clear, and the completer reads it only when its
    // `fetch_or` found WAKER_SET set; while it is set, reads from both sides may overlap,
    // which `Waker: Sync` allows. A `T` is thus moved between threads, never
    // shared by them, so `T: Send` is enough, as for `Mutex<T>`.
    unsafe impl<T: Send> Sync for Shared<T> {}

    /// The completing side. Completing consumes it, so it completes at most
    /// once; dropped without completing, it abandons the completion.
    pub struct CompletionSource<T: Send> {
        shared: Option<Arc<Shared<T>>>,
    }

    /// The waiting side: a future of the result.
    pub struct Completion<T: Send> {
        shared: Arc<Shared<T>>,
    }

    /// A new completion source and the completion it completes.
    pub fn completion_source<T: Send>() -> (CompletionSource<T>, Completion<T>) {
        let shared = Arc::new(Shared {
            state: AtomicUsize::new(0),
            waker: UnsafeCell::new(None),
            result: UnsafeCell::new(None),
        });
        let source = CompletionSource {
            shared: Some(Arc::clone(&shared)),
        };
        (source, Completion { shared })
    }

    impl<T: Send> CompletionSource<T> {
        /// Completes with `value` and wakes the waiter, if it waits.
        pub fn set_result(mut self, value: T) {
            if let Some(shared) = self.shared.take() {
                complete(&shared, Ok(value));
            }
        }
    }

    impl<T: Send> Drop for CompletionSource<T> {
        fn drop(&mut self) {
            if let Some(shared) = self.shared.take() {
                complete(&shared, Err(Abandoned));
            }
        }
    }

    /// Stores the result, then publishes it; wakes the waker left before.
    fn complete<T: Send>(shared: &Shared<T>, result: Result<T, Abandoned>) {
        // SAFETY: COMPLETE is not set yet (only this function sets it, once
        // per source), so the result is still the completer's alone.
        shared
            .result
            .with_mut(|slot| unsafe { *slot = Some(result) });
        let before = shared.state.fetch_or(COMPLETE, AcqRel);
        if before & WAKER_SET != 0 {
            // SAFETY: WAKER_SET was set when COMPLETE went in, so the waiter
            // wrote the waker before (its AcqRel `fetch_or`, which ours
            // reads, orders that write before this read), and it writes it
            // no more: it writes only after finding COMPLETE clear.
            shared.waker.with(|waker| {
                if let Some(waker) = unsafe { &*waker } {
                    waker.wake_by_ref();
                }
            });
        }
    }

    impl<T: Send> Future for Completion<T> {
        type Output = Result<T, Abandoned>;

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            let shared = &*self.shared;
            let mut state = shared.state.load(Acquire);
            if state & (COMPLETE | WAKER_SET) == WAKER_SET {
                // SAFETY: WAKER_SET is set, so nobody writes the waker; the
                // completer may be reading it too, which is allowed.
                let same = shared.waker.with(|waker| unsafe {
                    (*waker).as_ref().is_some_and(|w| w.will_wake(cx.waker()))
                });
                if same {
                    return Poll::Pending;
                }
                // A different task polls: take the waker back to replace it.
                state = shared.state.fetch_and(!WAKER_SET, AcqRel);
            }
            if state & COMPLETE == 0 {
                // SAFETY: WAKER_SET is clear (never set, or cleared just above
                // before any completion), so a completer that comes now finds
                // it clear and does not read the waker.
                let waker = cx.waker().clone();
                shared.waker.with_mut(|slot| unsafe { *slot = Some(waker) });
                state = shared.state.fetch_or(WAKER_SET, AcqRel);
                if state & COMPLETE == 0 {
                    return Poll::Pending; // the completer will see WAKER_SET
                }
            }
            // SAFETY: COMPLETE is set: the result is the waiter's alone.
            let result = shared.result.with_mut(|slot| unsafe { (*slot).take() });
            // Polled again after it returned the result (a caller's bug):
            // there is no result left, and like the support crate's source it
            // answers `Err(Abandoned)` rather than panicking.
            Poll::Ready(result.unwrap_or(Err(Abandoned)))
        }
    }
}

/// Listing 2-3's bridge with the lock-free completion source.
async fn receive(socket: &CallbackSocket, buffer: Vec<u8>) -> io::Result<Received> {
    let (source, completion) = lock_free::completion_source();
    match socket.receive(buffer, move |received| source.set_result(received)) {
        Start::Ready(received) => Ok(received),
        Start::Pending => completion
            .await
            .map_err(|abandoned| io::Error::new(ErrorKind::ConnectionAborted, abandoned)),
    }
}
// ANCHOR_END: listing

fn main() -> io::Result<()> {
    if std::env::args().any(|a| a == "--bench") {
        return bench::run();
    }
    let io = IoThread::start()?;
    let (socket, mut peer) = socket::loopback_pair(&io)?;
    let watcher = socket.clone();
    let sender = thread::spawn(move || {
        // Send only once the receive waits, so that the callback completes it.
        if watcher.wait_for_pending_receive(Duration::from_secs(5)) {
            let _ = peer.write_all(b"sensor 7: 21.5 C");
        }
        peer
    });
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let received = runtime.block_on(receive(&socket, vec![0u8; 64]))?;
    let bytes = received.bytes().unwrap_or_default();
    println!("received {:?}", String::from_utf8_lossy(bytes));
    drop(sender.join());

    let (source, completion) = lock_free::completion_source::<u32>();
    drop(source);
    println!(
        "a source dropped unfinished: {:?}",
        runtime.block_on(completion)
    );
    Ok(())
}

/// `--bench`: each completion is timed as Listing 10-1 times the primitives
/// (created, polled once from a tokio task, completed, polled again), on one
/// thread, which is busy throughout, so wall time measures its work. The
/// three are timed one after another in each of seven repeats.
mod bench {
    use std::future::{poll_fn, Future};
    use std::hint::black_box;
    use std::io;
    use std::pin::Pin;
    use std::task::Poll;
    use std::time::Instant;

    use awd::completion_source::{completion_source, Continuations};

    use super::lock_free;

    const OPS: u32 = 1_000_000;
    const REPEATS: usize = 7;
    const NAMES: [&str; 3] = [
        "tokio::sync::oneshot",
        "awd's completion source (a lock)",
        "lock-free completion source",
    ];

    /// Polls `future` once: true if it is pending (its waker stays with it).
    async fn pending<F: Future + Unpin>(future: &mut F) -> bool {
        poll_fn(|cx| Poll::Ready(Pin::new(&mut *future).poll(cx).is_pending())).await
    }

    async fn completions(primitive: usize) {
        for i in 0..OPS {
            match primitive {
                0 => {
                    let (sender, mut receiver) = tokio::sync::oneshot::channel();
                    assert!(pending(&mut receiver).await);
                    let _ = sender.send(i);
                    black_box(receiver.await.expect("sent"));
                }
                1 => {
                    let (source, mut completion) = completion_source(Continuations::Asynchronous);
                    assert!(pending(&mut completion).await);
                    let _ = source.set_result(i);
                    drop(source);
                    black_box(completion.await.expect("set"));
                }
                _ => {
                    let (source, mut completion) = lock_free::completion_source();
                    assert!(pending(&mut completion).await);
                    source.set_result(i);
                    black_box(completion.await.expect("set"));
                }
            }
        }
    }

    fn median(mut values: Vec<f64>) -> f64 {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    }

    pub fn run() -> io::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread().build()?;
        let mut times = vec![Vec::new(); NAMES.len()];
        let mut ratios = vec![Vec::new(); NAMES.len()];
        for repeat in 0..REPEATS {
            let mut ns = [0.0; NAMES.len()];
            for k in 0..NAMES.len() {
                let primitive = (k + repeat) % NAMES.len(); // a shifting order
                let started = Instant::now();
                // `unconstrained`: no cooperative yield every 128th poll.
                runtime.block_on(tokio::task::unconstrained(completions(primitive)));
                ns[primitive] = started.elapsed().as_nanos() as f64 / f64::from(OPS);
            }
            for (primitive, &time) in ns.iter().enumerate() {
                times[primitive].push(time);
                ratios[primitive].push(time / ns[0]);
            }
        }
        println!("ns per completion: median of {REPEATS} repeats of {OPS} completions");
        for (k, name) in NAMES.iter().enumerate() {
            println!(
                "{name:<34} {:>6.1} ns   {:.2} x oneshot",
                median(times[k].clone()),
                median(ratios[k].clone())
            );
        }
        Ok(())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::lock_free::completion_source;
    use super::*;
    use awd::completion_source::Abandoned;
    use awd::watchdog::TestLimit;
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};

    #[test]
    fn the_bridge_receives_through_it() {
        let _limit = TestLimit::seconds(20);
        let io = IoThread::start().unwrap();
        let (socket, mut peer) = socket::loopback_pair(&io).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let waiting = socket.clone();
        let writer = thread::spawn(move || {
            assert!(waiting.wait_for_pending_receive(Duration::from_secs(5)));
            peer.write_all(b"abc").unwrap();
            peer
        });
        let received = runtime.block_on(receive(&socket, vec![0; 8])).unwrap();
        assert_eq!(received.bytes(), Some(&b"abc"[..]));
        drop(writer.join().unwrap()); // the peer closes: the end of the stream
        let end = runtime.block_on(receive(&socket, vec![0; 8])).unwrap();
        assert_eq!(end.bytes(), Some(&b""[..]));
    }

    #[test]
    fn completed_on_another_thread_it_wakes_the_waiter() {
        let _limit = TestLimit::seconds(20);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for i in 0..1_000 {
            let (source, completion) = completion_source();
            let completer = thread::spawn(move || source.set_result(i));
            assert_eq!(runtime.block_on(completion), Ok(i));
            completer.join().unwrap();
        }
    }

    #[test]
    fn a_dropped_source_resolves_the_waiter_with_an_error() {
        let _limit = TestLimit::seconds(20);
        let (source, mut completion) = completion_source::<u32>();
        let mut cx = Context::from_waker(Waker::noop());
        assert!(Pin::new(&mut completion).poll(&mut cx).is_pending());
        drop(source);
        assert_eq!(
            Pin::new(&mut completion).poll(&mut cx),
            Poll::Ready(Err(Abandoned))
        );
        // Polled again after the result: an error, not a panic.
        assert_eq!(
            Pin::new(&mut completion).poll(&mut cx),
            Poll::Ready(Err(Abandoned))
        );
    }

    #[test]
    fn a_result_set_before_the_first_poll_is_there() {
        let _limit = TestLimit::seconds(20);
        let (source, mut completion) = completion_source();
        source.set_result("early");
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(
            Pin::new(&mut completion).poll(&mut cx),
            Poll::Ready(Ok("early"))
        );
    }
}

/// Every interleaving, with loom (`cargo loom`).
#[cfg(all(test, loom))]
mod loom_models {
    use super::lock_free::completion_source;
    use awd::completion_source::Abandoned;
    use awd::watchdog::TestLimit;
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};

    fn explore(name: &str, model: impl Fn() + Sync + Send + 'static) {
        let explored = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = std::sync::Arc::clone(&explored);
        loom::model(move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            model();
        });
        eprintln!(
            "{name}: {} interleavings explored",
            explored.load(std::sync::atomic::Ordering::SeqCst)
        );
    }

    #[test]
    fn a_waiting_future_is_always_woken() {
        let _limit = TestLimit::seconds(120);
        explore("lock-free: a waiting future is always woken", || {
            let (source, completion) = completion_source::<u32>();
            let completer = loom::thread::spawn(move || source.set_result(3));
            assert_eq!(loom::future::block_on(completion), Ok(3));
            completer.join().unwrap();
        });
    }

    #[test]
    fn a_dropped_source_always_resolves_the_future() {
        let _limit = TestLimit::seconds(120);
        explore(
            "lock-free: a dropped source always resolves the future",
            || {
                let (source, completion) = completion_source::<u32>();
                let dropper = loom::thread::spawn(move || drop(source));
                assert_eq!(loom::future::block_on(completion), Err(Abandoned));
                dropper.join().unwrap();
            },
        );
    }

    #[test]
    fn a_replaced_waker_is_the_one_woken() {
        let _limit = TestLimit::seconds(120);
        explore("lock-free: a replaced waker is the one woken", || {
            let (source, mut completion) = completion_source::<u32>();
            let completer = loom::thread::spawn(move || source.set_result(5));
            // First polled by another task (a waker that does nothing), then
            // awaited here: the waker is replaced while the completer runs.
            let mut cx = Context::from_waker(Waker::noop());
            let first = Pin::new(&mut completion).poll(&mut cx);
            if first.is_pending() {
                assert_eq!(loom::future::block_on(completion), Ok(5));
            } else {
                assert_eq!(first, Poll::Ready(Ok(5)));
            }
            completer.join().unwrap();
        });
    }

    /// A waker that raises a flag, so a model can wait for the wake-up.
    struct Flag(loom::sync::atomic::AtomicBool);

    impl std::task::Wake for Flag {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.store(true, loom::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn the_same_task_polling_again_keeps_its_waker() {
        let _limit = TestLimit::seconds(120);
        explore(
            "lock-free: the same task polling again keeps its waker",
            || {
                let (source, mut completion) = completion_source::<u32>();
                let completer = loom::thread::spawn(move || source.set_result(9));
                let flag = std::sync::Arc::new(Flag(loom::sync::atomic::AtomicBool::new(false)));
                let waker = Waker::from(std::sync::Arc::clone(&flag));
                // The path under test needs a waker that knows its own clone.
                assert!(waker.will_wake(&waker.clone()));
                let mut cx = Context::from_waker(&waker);
                // Polled twice by the same task: the second poll finds its own
                // waker in place and leaves it there.
                let mut result = Pin::new(&mut completion).poll(&mut cx);
                if result.is_pending() {
                    result = Pin::new(&mut completion).poll(&mut cx);
                }
                if result.is_pending() {
                    while !flag.0.load(loom::sync::atomic::Ordering::SeqCst) {
                        loom::thread::yield_now();
                    }
                    result = Pin::new(&mut completion).poll(&mut cx);
                }
                assert_eq!(result, Poll::Ready(Ok(9)));
                completer.join().unwrap();
            },
        );
    }

    #[test]
    fn a_completion_dropped_while_completing_drops_each_thing_once() {
        let _limit = TestLimit::seconds(120);
        explore("lock-free: a completion dropped while completing", || {
            let (source, mut completion) = completion_source::<std::sync::Arc<()>>();
            let value = std::sync::Arc::new(());
            let sent = std::sync::Arc::clone(&value);
            let completer = loom::thread::spawn(move || source.set_result(sent));
            let flag = std::sync::Arc::new(Flag(loom::sync::atomic::AtomicBool::new(false)));
            let waker = Waker::from(std::sync::Arc::clone(&flag));
            let _ = Pin::new(&mut completion).poll(&mut Context::from_waker(&waker));
            drop(completion); // the waiter gives up, whatever the completer is doing
            completer.join().unwrap();
            // The result and the waker's clone were each dropped, once.
            assert_eq!(std::sync::Arc::strong_count(&value), 1);
            drop(waker);
            assert_eq!(std::sync::Arc::strong_count(&flag), 1);
        });
    }
}
