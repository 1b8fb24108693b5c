//! The completion-style socket's contract, on real loopback sockets: both
//! completion paths, end of stream, a reset, and every bad input.

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::sync::mpsc::{channel, Receiver};
use std::time::Duration;

use awd::bridge::receive_completion;
use awd::completion_source::Continuations;
use awd::socket::{loopback_pair, on_io_thread, IoThread, Received, Start};
use awd::watchdog::TestLimit;

const WAIT: Duration = Duration::from_secs(5);

/// A callback that reports its result and the thread it ran on.
fn reporting() -> (
    impl FnOnce(Received) + Send + 'static,
    Receiver<(Received, bool)>,
) {
    let (tx, rx) = channel();
    (move |r: Received| tx.send((r, on_io_thread())).unwrap(), rx)
}

#[test]
fn buffered_bytes_complete_at_once_without_a_callback() {
    let _limit = TestLimit::seconds(10);
    let io = IoThread::start().unwrap();
    let (socket, mut peer) = loopback_pair(&io).unwrap();
    peer.write_all(b"21.5").unwrap();
    assert!(socket.wait_until_readable(WAIT));
    let (callback, called) = reporting();
    match socket.receive(vec![0; 16], callback) {
        Start::Ready(received) => assert_eq!(received.bytes(), Some(&b"21.5"[..])),
        Start::Pending => panic!("the bytes were buffered: the receive must complete at once"),
    }
    assert!(called.recv_timeout(Duration::from_millis(100)).is_err());
    assert_eq!(socket.receive_callbacks(), 0);
}

#[test]
fn a_pending_receive_completes_once_on_the_io_thread() {
    let _limit = TestLimit::seconds(10);
    let io = IoThread::start().unwrap();
    let (socket, mut peer) = loopback_pair(&io).unwrap();
    let (callback, called) = reporting();
    assert!(matches!(
        socket.receive(vec![0; 16], callback),
        Start::Pending
    ));
    assert!(socket.wait_for_pending_receive(WAIT));
    peer.write_all(b"hello").unwrap();
    let (received, on_io) = called.recv_timeout(WAIT).unwrap();
    assert_eq!(received.bytes(), Some(&b"hello"[..]));
    assert!(on_io, "completion callbacks run on the I/O thread");
    assert!(!socket.is_receive_pending());
    assert!(
        called.recv_timeout(Duration::from_millis(100)).is_err(),
        "called twice"
    );
    assert_eq!(socket.receive_callbacks(), 1);
}

#[test]
fn end_of_stream_is_a_zero_byte_result_on_both_paths() {
    let _limit = TestLimit::seconds(10);
    let io = IoThread::start().unwrap();
    let (socket, peer) = loopback_pair(&io).unwrap();
    let (callback, called) = reporting();
    assert!(matches!(
        socket.receive(vec![0; 8], callback),
        Start::Pending
    ));
    peer.shutdown(Shutdown::Write).unwrap();
    let (received, _) = called.recv_timeout(WAIT).unwrap();
    assert_eq!(received.result.unwrap(), 0);
    match socket.receive(vec![0; 8], |_| {
        panic!("no callback on the synchronous path")
    }) {
        Start::Ready(again) => assert_eq!(again.result.unwrap(), 0),
        Start::Pending => panic!("end of stream is known: it completes at once"),
    }
}

#[test]
fn a_reset_connection_is_an_error_through_the_callback() {
    let _limit = TestLimit::seconds(10);
    let io = IoThread::start().unwrap();
    let (socket, mut peer) = loopback_pair(&io).unwrap();
    let (callback, called) = reporting();
    assert!(matches!(
        socket.receive(vec![0; 8], callback),
        Start::Pending
    ));
    // Closing a socket with unread bytes makes the kernel send a reset.
    socket.send_all(b"unread").unwrap();
    let mut one = [0u8; 1];
    peer.read_exact(&mut one).unwrap();
    drop(peer);
    let (received, on_io) = called.recv_timeout(WAIT).unwrap();
    let error = received.result.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ConnectionReset, "{error}");
    assert!(on_io);
}

#[test]
fn bad_inputs_get_clear_errors_and_no_callback() {
    let _limit = TestLimit::seconds(10);
    let io = IoThread::start().unwrap();
    let (socket, _peer) = loopback_pair(&io).unwrap();
    let never = |_: Received| panic!("a refused operation never calls back");
    match socket.receive(Vec::new(), never) {
        Start::Ready(r) => assert_eq!(r.result.unwrap_err().kind(), ErrorKind::InvalidInput),
        Start::Pending => panic!("a zero-length buffer is refused"),
    }
    let (callback, _called) = reporting();
    assert!(matches!(
        socket.receive(vec![0; 4], callback),
        Start::Pending
    ));
    match socket.receive(vec![0; 4], never) {
        Start::Ready(r) => assert_eq!(r.result.unwrap_err().kind(), ErrorKind::ResourceBusy),
        Start::Pending => panic!("a second receive while one is pending is refused"),
    }
    match socket.send(Vec::new(), |_| panic!("never")) {
        Start::Ready(sent) => assert_eq!(sent.unwrap_err().kind(), ErrorKind::InvalidInput),
        Start::Pending => panic!("an empty send is refused"),
    }
}

#[test]
fn closing_with_a_receive_pending_aborts_it_on_the_io_thread() {
    let _limit = TestLimit::seconds(10);
    let io = IoThread::start().unwrap();
    let (socket, _peer) = loopback_pair(&io).unwrap();
    let (callback, called) = reporting();
    assert!(matches!(
        socket.receive(vec![0; 4], callback),
        Start::Pending
    ));
    socket.close();
    socket.close(); // twice is harmless
    let (received, on_io) = called.recv_timeout(WAIT).unwrap();
    assert_eq!(
        received.result.unwrap_err().kind(),
        ErrorKind::ConnectionAborted
    );
    assert!(on_io);
    match socket.receive(vec![0; 4], |_| panic!("never")) {
        Start::Ready(r) => assert_eq!(r.result.unwrap_err().kind(), ErrorKind::NotConnected),
        Start::Pending => panic!("a closed socket refuses receives"),
    }
}

#[test]
fn closing_always_aborts_never_reads_the_shutdown_as_an_end_of_stream() {
    let _limit = TestLimit::seconds(30);
    // Shutting the socket down makes it readable (0 bytes); the I/O thread
    // may see that before the close has finished. The contract still says
    // `ConnectionAborted`, every time.
    let io = IoThread::start().unwrap();
    for _ in 0..300 {
        let (socket, _peer) = loopback_pair(&io).unwrap();
        let (callback, called) = reporting();
        assert!(matches!(
            socket.receive(vec![0; 4], callback),
            Start::Pending
        ));
        socket.close();
        let (received, _) = called.recv_timeout(WAIT).unwrap();
        assert_eq!(
            received.result.map_err(|e| e.kind()),
            Err(ErrorKind::ConnectionAborted)
        );
    }
}

#[test]
fn dropping_every_handle_aborts_what_is_pending() {
    let _limit = TestLimit::seconds(10);
    let io = IoThread::start().unwrap();
    let (socket, _peer) = loopback_pair(&io).unwrap();
    let (callback, called) = reporting();
    assert!(matches!(
        socket.receive(vec![0; 4], callback),
        Start::Pending
    ));
    drop(socket);
    drop(io);
    let (received, _) = called.recv_timeout(WAIT).unwrap();
    assert_eq!(
        received.result.unwrap_err().kind(),
        ErrorKind::ConnectionAborted
    );
}

#[test]
fn a_send_larger_than_the_buffers_completes_when_the_peer_reads() {
    let _limit = TestLimit::seconds(20);
    let io = IoThread::start().unwrap();
    let (socket, mut peer) = loopback_pair(&io).unwrap();
    // Twice: the I/O thread listens for writability only while a send is
    // pending, so the second pending send must re-arm what the first disarmed.
    for byte in [7u8, 8] {
        let data = vec![byte; 32 * 1024 * 1024];
        let (tx, sent) = channel();
        let start = socket.send(data.clone(), move |result| tx.send(result).unwrap());
        assert!(
            matches!(start, Start::Pending),
            "32 MiB do not fit in the socket buffers"
        );
        let mut got = vec![0u8; data.len()];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(sent.recv_timeout(WAIT).unwrap().unwrap(), data.len());
        assert!(got == data);
    }
}

/// The error a pending or later operation gets once the I/O thread stopped
/// because a callback panicked.
fn names_the_panic(result: &std::io::Result<usize>) -> bool {
    matches!(result, Err(e) if e.kind() == ErrorKind::ConnectionAborted
        && e.to_string().contains("a callback panicked: sensor 7 is on fire"))
}

#[test]
fn a_callback_that_panics_stops_the_io_thread_and_every_pending_operation_hears_why() {
    let _limit = TestLimit::seconds(20);
    let io = IoThread::start().unwrap();
    let (panicking, mut trigger) = loopback_pair(&io).unwrap();
    let (other, _other_peer) = loopback_pair(&io).unwrap();
    let (sender, _silent_peer) = loopback_pair(&io).unwrap();
    // A receive pending on another socket, and a send that cannot finish
    // because its peer never reads.
    let (callback, other_called) = reporting();
    assert!(matches!(
        other.receive(vec![0; 16], callback),
        Start::Pending
    ));
    let (sent, send_called) = channel();
    let big = vec![0u8; 64 * 1024 * 1024];
    assert!(matches!(
        sender.send(big, move |s| sent.send(s).unwrap()),
        Start::Pending
    ));
    assert!(matches!(
        panicking.receive(vec![0; 16], |_| panic!("sensor 7 is on fire")),
        Start::Pending
    ));
    trigger.write_all(b"x").unwrap();

    let (received, on_io) = other_called.recv_timeout(WAIT).expect("no silent hang");
    assert!(names_the_panic(&received.result), "{:?}", received.result);
    assert!(on_io);
    let send = send_called.recv_timeout(WAIT).expect("no silent hang");
    assert!(names_the_panic(&send), "{send:?}");
    // Later operations fail at once, with the same reason.
    for socket in [&panicking, &other, &sender] {
        match socket.receive(vec![0; 16], |_| unreachable!("refused at once")) {
            Start::Ready(received) => assert!(names_the_panic(&received.result)),
            Start::Pending => panic!("a receive nobody will ever complete"),
        }
        match socket.send(b"late".to_vec(), |_| unreachable!("refused at once")) {
            Start::Ready(sent) => assert!(names_the_panic(&sent), "{sent:?}"),
            Start::Pending => panic!("a send nobody will ever complete"),
        }
        let posted = socket.post(|| unreachable!("nobody runs it"));
        assert!(names_the_panic(&posted.map(|()| 0)));
        socket.close();
    }
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let adopted = io.connect(listener.local_addr().unwrap()).map(|_| 0);
    assert!(names_the_panic(&adopted), "{adopted:?}");
    // Dropping every handle joins a thread that has ended: no hang either.
    drop((panicking, other, sender, io));
}

#[test]
fn a_posted_job_that_panics_stops_the_io_thread_the_same_way() {
    let _limit = TestLimit::seconds(10);
    let io = IoThread::start().unwrap();
    let (socket, _peer) = loopback_pair(&io).unwrap();
    let (callback, called) = reporting();
    assert!(matches!(
        socket.receive(vec![0; 16], callback),
        Start::Pending
    ));
    socket.post(|| panic!("sensor 7 is on fire")).unwrap();
    let (received, _) = called.recv_timeout(WAIT).expect("no silent hang");
    assert!(names_the_panic(&received.result), "{:?}", received.result);
}

#[test]
fn an_inline_continuation_that_panics_stops_the_io_thread_the_same_way() {
    let _limit = TestLimit::seconds(10);
    let io = IoThread::start().unwrap();
    let (socket, mut peer) = loopback_pair(&io).unwrap();
    let (other, _other_peer) = loopback_pair(&io).unwrap();
    let (callback, called) = reporting();
    assert!(matches!(
        other.receive(vec![0; 16], callback),
        Start::Pending
    ));
    receive_completion(&socket, vec![0; 16], Continuations::Inline)
        .on_completed(|_| panic!("sensor 7 is on fire"));
    peer.write_all(b"x").unwrap();
    let (received, _) = called.recv_timeout(WAIT).expect("no silent hang");
    assert!(names_the_panic(&received.result), "{:?}", received.result);
}

#[test]
fn posted_jobs_run_on_the_io_thread_after_the_events_at_hand() {
    let _limit = TestLimit::seconds(10);
    let io = IoThread::start().unwrap();
    let (socket, _peer) = loopback_pair(&io).unwrap();
    let (ran, on) = channel();
    socket
        .post(move || ran.send(on_io_thread()).unwrap())
        .unwrap();
    assert_eq!(on.recv_timeout(WAIT), Ok(true));
}

#[test]
fn when_the_io_thread_stops_a_panicking_abort_does_not_silence_the_other_callback() {
    let _limit = TestLimit::seconds(20);
    let io = IoThread::start().unwrap();
    let (panicking, mut trigger) = loopback_pair(&io).unwrap();
    let (both, _silent_peer) = loopback_pair(&io).unwrap();
    // One socket with a receive whose callback panics when it is aborted,
    // and a send that cannot finish because its peer never reads.
    assert!(matches!(
        both.receive(vec![0; 16], |_| panic!("the aborted receive panics too")),
        Start::Pending
    ));
    let (sent, send_called) = channel();
    let big = vec![0u8; 64 * 1024 * 1024];
    assert!(matches!(
        both.send(big, move |s| sent.send(s).unwrap()),
        Start::Pending
    ));
    assert!(matches!(
        panicking.receive(vec![0; 16], |_| panic!("sensor 7 is on fire")),
        Start::Pending
    ));
    trigger.write_all(b"x").unwrap();
    let send = send_called
        .recv_timeout(WAIT)
        .expect("the send's callback still runs");
    assert!(names_the_panic(&send), "{send:?}");
}
