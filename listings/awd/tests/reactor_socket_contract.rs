//! The reactor-driven socket keeps the completion-style contract, on real
//! loopback sockets: both completion paths, callbacks on the runtime's thread,
//! end of stream, a reset, every bad input, closing, dropping, and a runtime
//! that shuts down under a pending receive.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use awd::reactor_socket::{loopback_pair, ReactorSocket};
use awd::socket::{Received, Start};
use awd::watchdog::TestLimit;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(5);

/// A callback that reports its result and the thread it ran on.
fn reporting() -> (
    impl FnOnce(Received) + Send + 'static,
    UnboundedReceiver<(Received, ThreadId)>,
) {
    let (tx, rx) = unbounded_channel();
    (
        move |r: Received| {
            let _ = tx.send((r, thread::current().id()));
        },
        rx,
    )
}

/// A callback that must never run.
fn never(_: Received) {
    panic!("a receive that finished at once, or was refused, never calls back")
}

async fn called(rx: &mut UnboundedReceiver<(Received, ThreadId)>) -> (Received, ThreadId) {
    timeout(WAIT, rx.recv())
        .await
        .expect("the callback within the limit")
        .expect("the callback, not a dropped one")
}

async fn not_called_again(rx: &mut UnboundedReceiver<(Received, ThreadId)>) {
    let again = timeout(Duration::from_millis(100), rx.recv()).await;
    assert!(
        !matches!(again, Ok(Some(_))),
        "the callback ran more than once"
    );
}

/// A connected pair and a second handle on the socket's descriptor, to look
/// at what the kernel has buffered without taking it.
fn pair_with_probe() -> (ReactorSocket, TcpStream, TcpStream) {
    let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (peer, _) = listener.accept().unwrap();
    let probe = stream.try_clone().unwrap();
    (ReactorSocket::from_std(stream).unwrap(), peer, probe)
}

/// Waits until `bytes` bytes are buffered for the socket (the probe shares
/// its non-blocking descriptor).
fn wait_until_buffered(probe: &TcpStream, bytes: usize) {
    let deadline = Instant::now() + WAIT;
    let mut look = vec![0u8; bytes];
    while !matches!(probe.peek(&mut look), Ok(n) if n >= bytes) {
        assert!(Instant::now() < deadline, "the bytes never arrived");
        thread::sleep(Duration::from_millis(1));
    }
}

#[tokio::test]
async fn buffered_bytes_complete_at_once_without_a_callback() {
    let _limit = TestLimit::seconds(10);
    let (socket, mut peer, probe) = pair_with_probe();
    peer.write_all(b"21.5").unwrap();
    wait_until_buffered(&probe, 4);
    let (callback, mut calls) = reporting();
    match socket.receive(vec![0; 16], callback) {
        Start::Ready(received) => assert_eq!(received.bytes(), Some(&b"21.5"[..])),
        Start::Pending => panic!("the bytes were buffered: the receive must complete at once"),
    }
    not_called_again(&mut calls).await;
    assert_eq!(socket.receive_callbacks(), 0);
}

#[tokio::test]
async fn a_pending_receive_completes_once_on_the_runtime_thread() {
    let _limit = TestLimit::seconds(10);
    let (socket, mut peer) = loopback_pair().unwrap();
    let (callback, mut calls) = reporting();
    assert!(matches!(
        socket.receive(vec![0; 16], callback),
        Start::Pending
    ));
    assert!(socket.is_receive_pending());
    peer.write_all(b"hello").unwrap();
    let (received, on) = called(&mut calls).await;
    assert_eq!(received.bytes(), Some(&b"hello"[..]));
    assert_eq!(
        on,
        thread::current().id(),
        "on a current_thread runtime the callback runs on the runtime's one thread"
    );
    assert!(!socket.is_receive_pending());
    not_called_again(&mut calls).await;
    assert_eq!(socket.receive_callbacks(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_multi_thread_runtime_the_callback_runs_on_a_worker() {
    let _limit = TestLimit::seconds(10);
    let (socket, mut peer) = loopback_pair().unwrap();
    let (tx, mut rx) = unbounded_channel();
    let start = socket.receive(vec![0; 16], move |r| {
        let _ = tx.send((r, thread::current().name().map(str::to_string)));
    });
    assert!(matches!(start, Start::Pending));
    peer.write_all(b"x").unwrap();
    let (received, name) = timeout(WAIT, rx.recv()).await.unwrap().unwrap();
    assert_eq!(received.bytes(), Some(&b"x"[..]));
    // The test's own thread only waits in `block_on`; a worker runs the
    // reactor, and the callback with it.
    let name = name.unwrap_or_default();
    assert!(name.contains("worker"), "ran on {name:?}");
}

#[tokio::test]
async fn a_callback_may_start_the_next_receive() {
    let _limit = TestLimit::seconds(10);
    let (socket, mut peer) = loopback_pair().unwrap();
    let (tx, mut rx) = unbounded_channel();
    fn next(socket: ReactorSocket, left: u32, tx: tokio::sync::mpsc::UnboundedSender<u8>) {
        let again = socket.clone();
        let start = socket.receive(vec![0; 1], move |r| {
            let _ = tx.send(r.buffer[0]);
            if left > 1 {
                next(again, left - 1, tx);
            }
        });
        assert!(matches!(start, Start::Pending), "one byte at a time");
    }
    next(socket.clone(), 50, tx);
    for byte in 0..50u8 {
        peer.write_all(&[byte]).unwrap();
        assert_eq!(timeout(WAIT, rx.recv()).await.unwrap(), Some(byte));
    }
    assert_eq!(socket.receive_callbacks(), 50);
}

#[tokio::test]
async fn end_of_stream_is_a_zero_byte_result_on_both_paths() {
    let _limit = TestLimit::seconds(10);
    let (socket, peer) = loopback_pair().unwrap();
    let (callback, mut calls) = reporting();
    assert!(matches!(
        socket.receive(vec![0; 8], callback),
        Start::Pending
    ));
    peer.shutdown(Shutdown::Write).unwrap();
    let (received, _) = called(&mut calls).await;
    assert_eq!(received.result.unwrap(), 0);
    match socket.receive(vec![0; 8], never) {
        Start::Ready(again) => assert_eq!(again.result.unwrap(), 0),
        Start::Pending => panic!("end of stream is known: it completes at once"),
    }
}

#[tokio::test]
async fn a_reset_connection_is_an_error_through_the_callback() {
    let _limit = TestLimit::seconds(10);
    let (socket, mut peer) = loopback_pair().unwrap();
    let (callback, mut calls) = reporting();
    assert!(matches!(
        socket.receive(vec![0; 8], callback),
        Start::Pending
    ));
    // Closing a socket with unread bytes makes the kernel send a reset.
    socket.send_all(b"unread").await.unwrap();
    let mut one = [0u8; 1];
    peer.read_exact(&mut one).unwrap();
    drop(peer);
    let (received, on) = called(&mut calls).await;
    let error = received.result.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ConnectionReset, "{error}");
    assert_eq!(on, thread::current().id());
}

#[tokio::test]
async fn bad_inputs_get_clear_errors_and_no_callback() {
    let _limit = TestLimit::seconds(10);
    let (socket, mut peer) = loopback_pair().unwrap();
    match socket.receive(Vec::new(), never) {
        Start::Ready(r) => assert_eq!(r.result.unwrap_err().kind(), ErrorKind::InvalidInput),
        Start::Pending => panic!("a zero-length buffer is refused"),
    }
    let (callback, mut calls) = reporting();
    assert!(matches!(
        socket.receive(vec![0; 4], callback),
        Start::Pending
    ));
    match socket.receive(vec![0; 4], never) {
        Start::Ready(r) => assert_eq!(r.result.unwrap_err().kind(), ErrorKind::ResourceBusy),
        Start::Pending => panic!("a second receive while one is pending is refused"),
    }
    // The refusal left the first receive alone.
    peer.write_all(b"ok").unwrap();
    let (received, _) = called(&mut calls).await;
    assert_eq!(received.bytes(), Some(&b"ok"[..]));
}

#[tokio::test]
async fn closing_with_a_receive_pending_aborts_it_on_the_runtime() {
    let _limit = TestLimit::seconds(10);
    let (socket, _peer) = loopback_pair().unwrap();
    let (callback, mut calls) = reporting();
    assert!(matches!(
        socket.receive(vec![0; 4], callback),
        Start::Pending
    ));
    socket.close();
    socket.close(); // twice is harmless
    let (received, on) = called(&mut calls).await;
    assert_eq!(
        received.result.unwrap_err().kind(),
        ErrorKind::ConnectionAborted
    );
    assert_eq!(on, thread::current().id(), "not inside `close`'s caller");
    not_called_again(&mut calls).await;
    match socket.receive(vec![0; 4], never) {
        Start::Ready(r) => assert_eq!(r.result.unwrap_err().kind(), ErrorKind::NotConnected),
        Start::Pending => panic!("a closed socket refuses receives"),
    }
    let refused = socket.send_all(b"late").await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::NotConnected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_always_aborts_never_reads_the_shutdown_as_an_end_of_stream() {
    let _limit = TestLimit::seconds(30);
    for _ in 0..300 {
        let (socket, _peer) = loopback_pair().unwrap();
        let (callback, mut calls) = reporting();
        assert!(matches!(
            socket.receive(vec![0; 4], callback),
            Start::Pending
        ));
        socket.close();
        let (received, _) = called(&mut calls).await;
        assert_eq!(
            received.result.map_err(|e| e.kind()),
            Err(ErrorKind::ConnectionAborted)
        );
    }
}

#[tokio::test]
async fn dropping_every_handle_aborts_what_is_pending() {
    let _limit = TestLimit::seconds(10);
    let (socket, _peer) = loopback_pair().unwrap();
    let (callback, mut calls) = reporting();
    assert!(matches!(
        socket.receive(vec![0; 4], callback),
        Start::Pending
    ));
    drop(socket);
    let (received, _) = called(&mut calls).await;
    assert_eq!(
        received.result.unwrap_err().kind(),
        ErrorKind::ConnectionAborted
    );
}

#[test]
fn a_runtime_shut_down_under_a_pending_receive_calls_back_with_an_error() {
    let _limit = TestLimit::seconds(10);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (tx, calls) = std::sync::mpsc::channel();
    let (socket, _peer) = runtime.block_on(async {
        let (socket, peer) = loopback_pair().unwrap();
        let start = socket.receive(vec![0; 4], move |r| {
            let _ = tx.send(r.result.map_err(|e| e.kind()));
        });
        assert!(matches!(start, Start::Pending));
        (socket, peer)
    });
    drop(runtime);
    let result = calls.recv_timeout(WAIT).expect("a callback, not silence");
    assert!(result.is_err(), "{result:?}");
    assert!(
        calls.recv_timeout(Duration::from_millis(100)).is_err(),
        "called once"
    );
    drop(socket);
}

#[test]
fn outside_a_runtime_it_is_an_error_not_a_panic() {
    let _limit = TestLimit::seconds(10);
    let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    assert!(ReactorSocket::from_std(stream).is_err());
}

#[tokio::test]
async fn a_send_larger_than_the_buffers_completes_when_the_peer_reads() {
    let _limit = TestLimit::seconds(20);
    let (socket, mut peer) = loopback_pair().unwrap();
    let data = vec![7u8; 32 * 1024 * 1024];
    let reader = thread::spawn(move || {
        let mut got = vec![0u8; 32 * 1024 * 1024];
        peer.read_exact(&mut got).unwrap();
        got
    });
    socket.send_all(&data).await.unwrap();
    assert!(reader.join().unwrap() == data);
}

#[tokio::test]
async fn callbacks_run_in_the_driver_task_never_inside_a_waker() {
    let _limit = TestLimit::seconds(10);
    let (socket, mut peer) = loopback_pair().unwrap();
    let (tx, mut rx) = unbounded_channel();
    let start = socket.receive(vec![0; 16], move |r| {
        // A task is being polled: the callback runs in the driver task's
        // poll, not in the reactor's call of a waker (which runs no task).
        let _ = tx.send((r, tokio::task::try_id()));
    });
    assert!(matches!(start, Start::Pending));
    peer.write_all(b"x").unwrap();
    let (received, task) = timeout(WAIT, rx.recv()).await.unwrap().unwrap();
    assert_eq!(received.bytes(), Some(&b"x"[..]));
    assert!(task.is_some(), "the callback ran outside any task");
}

#[test]
fn a_receive_under_handle_block_on_with_the_budget_spent_does_not_deadlock() {
    let _limit = TestLimit::seconds(10);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let handle = runtime.handle().clone();
    let (socket, mut peer) = handle.block_on(async { loopback_pair().unwrap() });
    let (tx, calls) = std::sync::mpsc::channel();
    // `Handle::block_on` on a thread of no runtime: tokio calls a waker at
    // once here when a task is out of budget (there is no scheduler to
    // defer to). Spend the whole budget, then start a receive that must wait.
    let (start, budget_left) = handle.block_on(std::future::poll_fn(|cx| {
        while let std::task::Poll::Ready(spent) = tokio::task::coop::poll_proceed(cx) {
            spent.made_progress();
        }
        let budget_left = tokio::task::coop::has_budget_remaining();
        let tx = tx.clone();
        let start = socket.receive(vec![0; 16], move |r| {
            let _ = tx.send(r.result.map_err(|e| e.kind()));
        });
        std::task::Poll::Ready((start, budget_left))
    }));
    assert!(
        !budget_left,
        "the budget was spent when the receive started"
    );
    assert!(matches!(start, Start::Pending));
    peer.write_all(b"21.5").unwrap();
    assert_eq!(calls.recv_timeout(WAIT).expect("the callback"), Ok(4));
}

#[tokio::test]
async fn a_receive_that_waits_costs_two_reads_and_no_stale_one() {
    let _limit = TestLimit::seconds(10);
    let (socket, mut peer) = loopback_pair().unwrap();
    const ROUNDS: usize = 50;
    for round in 0..ROUNDS {
        let (callback, mut calls) = reporting();
        // Nothing is sent before the receive starts: it must wait.
        assert!(matches!(
            socket.receive(vec![0; 16], callback),
            Start::Pending
        ));
        peer.write_all(b"ping").unwrap();
        let (received, _) = called(&mut calls).await;
        assert_eq!(received.bytes(), Some(&b"ping"[..]), "round {round}");
    }
    // Each receive: the attempt that would block, then the read the reactor
    // allows. A read that filled less than the buffer forgot the readiness,
    // so no receive paid a third read to find the socket empty.
    assert_eq!(socket.read_calls(), 2 * ROUNDS);
}
