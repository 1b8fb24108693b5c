//! The lock rules of `awd::socket` (its `# Locks` section), as behaviour: no
//! callback runs, and none is dropped, under a lock of the socket, so a
//! callback may take any of them again. A rule broken here shows as a
//! thread that locks a mutex it already holds, which never returns: each
//! test waits for its report a bounded time and fails instead of hanging.

use std::io::{ErrorKind, Read, Write};
use std::sync::mpsc::{channel, Sender};
use std::thread;
use std::time::Duration;

use awd::completion_source::{completion_source, Continuations};
use awd::socket::{loopback_pair, CallbackSocket, IoThread, Start};
use awd::watchdog::TestLimit;

const WAIT: Duration = Duration::from_secs(5);

/// Runs `check` when dropped: a callback that owns one runs it wherever the
/// callback is dropped, called or not.
struct OnDrop<F: FnOnce()>(Option<F>);

impl<F: FnOnce()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        if let Some(check) = self.0.take() {
            check();
        }
    }
}

/// A guard that, when dropped, takes both of `socket`'s locks and says so.
fn takes_the_sockets_locks(socket: &CallbackSocket, done: Sender<&'static str>) -> impl Send {
    let socket = socket.clone();
    OnDrop(Some(move || {
        let _ = socket.is_receive_pending(); // `receiving`
        let _ = socket.send(vec![1], |_| {}); // `sending`
        done.send("dropped").unwrap();
    }))
}

#[test]
fn a_receive_callback_may_use_its_own_socket_in_every_way() {
    let _limit = TestLimit::seconds(10);
    let io = IoThread::start().unwrap();
    let (socket, mut peer) = loopback_pair(&io).unwrap();
    let (report, reports) = channel();
    let own = socket.clone();
    let start = socket.receive(vec![0; 4], move |received| {
        assert_eq!(received.bytes(), Some(&b"21.5"[..]));
        // `receiving`, and the facts of `waits`: the next receive.
        let next = report.clone();
        let started = own.receive(vec![0; 4], move |aborted| {
            next.send(format!("next: {:?}", aborted.result.map_err(|e| e.kind())))
                .unwrap();
        });
        assert!(matches!(started, Start::Pending));
        assert!(own.is_receive_pending());
        // `sending`: a reply that fits in the buffers finishes at once.
        own.send_all(b"ok").unwrap();
        // `jobs`: a job for later.
        let later = report.clone();
        own.post(move || later.send("job".to_string()).unwrap())
            .unwrap();
        // `receiving`, `sending`, `sockets` and `jobs`: closing.
        own.close();
        report.send("callback".to_string()).unwrap();
    });
    assert!(matches!(start, Start::Pending));
    peer.write_all(b"21.5").unwrap();
    let mut said: Vec<String> = (0..3)
        .map(|_| reports.recv_timeout(WAIT).unwrap())
        .collect();
    said.sort();
    assert_eq!(said, ["callback", "job", "next: Err(ConnectionAborted)"]);
    let mut reply = [0; 2];
    peer.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"ok");
}

#[test]
fn a_send_callback_may_use_its_own_socket() {
    let _limit = TestLimit::seconds(20);
    let io = IoThread::start().unwrap();
    let (socket, mut peer) = loopback_pair(&io).unwrap();
    let (report, reports) = channel();
    let own = socket.clone();
    let data = vec![7u8; 32 * 1024 * 1024];
    let start = socket.send(data.clone(), move |sent| {
        assert_eq!(sent.unwrap(), 32 * 1024 * 1024);
        // `sending` again: the next send starts (at once or later, as the
        // buffers allow), and is not refused as busy.
        let again = own.send(vec![8], |_| {});
        assert!(!matches!(again, Start::Ready(Err(_))), "{again:?}");
        // `receiving`.
        report.send(own.is_receive_pending()).unwrap();
    });
    assert!(matches!(start, Start::Pending), "32 MiB do not fit");
    let mut got = vec![0u8; data.len() + 1];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(reports.recv_timeout(WAIT), Ok(false));
    assert_eq!(got[data.len()], 8);
}

#[test]
fn a_callback_that_is_never_called_is_dropped_after_the_lock_is_released() {
    let _limit = TestLimit::seconds(10);
    let io = IoThread::start().unwrap();
    let (socket, _peer) = loopback_pair(&io).unwrap();
    let (done, dropped) = channel();
    // On a thread of its own: if a callback were dropped under the lock, this
    // thread would lock the mutex it holds and never return.
    let starter = socket.clone();
    thread::spawn(move || {
        let socket = starter;
        // Refused: a zero-length buffer.
        let guard = takes_the_sockets_locks(&socket, done.clone());
        let refused = socket.receive(Vec::new(), move |_| drop(guard));
        assert!(matches!(refused, Start::Ready(r) if r.result.is_err()));
        // Refused: another receive is pending.
        let pending = socket.receive(vec![0; 4], |_| {});
        assert!(matches!(pending, Start::Pending));
        let guard = takes_the_sockets_locks(&socket, done.clone());
        let busy = socket.receive(vec![0; 4], move |_| drop(guard));
        assert!(matches!(
            busy,
            Start::Ready(r) if r.result.as_ref().is_err_and(|e| e.kind() == ErrorKind::ResourceBusy)
        ));
        // Refused: a send on a closed socket.
        socket.close();
        let guard = takes_the_sockets_locks(&socket, done.clone());
        let closed = socket.send(vec![1], move |_| drop(guard));
        assert!(matches!(closed, Start::Ready(Err(e)) if e.kind() == ErrorKind::NotConnected));
    });
    for _ in 0..3 {
        assert_eq!(
            dropped.recv_timeout(WAIT),
            Ok("dropped"),
            "a callback was dropped under the socket's lock"
        );
    }
}

#[test]
fn a_completion_abandoned_by_a_dropped_callback_may_start_the_next_receive() {
    let _limit = TestLimit::seconds(10);
    let io = IoThread::start().unwrap();
    let (socket, mut peer) = loopback_pair(&io).unwrap();
    peer.write_all(b"21.5").unwrap();
    assert!(socket.wait_until_readable(WAIT));
    let (report, reports) = channel();
    let starter = socket.clone();
    thread::spawn(move || {
        let socket = starter;
        let (source, completion) = completion_source::<u32>(Continuations::Inline);
        let again = socket.clone();
        // The continuation runs inline when the last source is dropped: with
        // the callback, when the receive below finishes at once.
        completion.on_completed(move |abandoned| {
            let next = again.receive(vec![0; 4], |_| {});
            report
                .send((abandoned.is_err(), matches!(next, Start::Pending)))
                .unwrap();
        });
        let start = socket.receive(vec![0; 4], move |_| drop(source));
        assert!(matches!(start, Start::Ready(_)));
    });
    assert_eq!(reports.recv_timeout(WAIT), Ok((true, true)));
}

#[test]
fn the_last_handles_dropped_in_a_callback_do_not_join_the_io_thread() {
    let _limit = TestLimit::seconds(10);
    let io = IoThread::start().unwrap();
    let (socket, mut peer) = loopback_pair(&io).unwrap();
    let (report, reports) = channel();
    let (last_socket, last_io) = (socket.clone(), io.clone());
    let start = socket.receive(vec![0; 4], move |_| {
        drop(last_socket);
        drop(last_io);
        report.send("dropped").unwrap();
    });
    assert!(matches!(start, Start::Pending));
    drop(socket);
    drop(io);
    peer.write_all(b"21.5").unwrap();
    assert_eq!(reports.recv_timeout(WAIT), Ok("dropped"));
}
