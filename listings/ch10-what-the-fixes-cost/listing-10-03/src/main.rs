//! The zero-hop bridge: Listing 2-3's bridge on a socket whose pending
//! receives are driven by tokio's own reactor, so that the callback runs on
//! the runtime's thread and the task it wakes needs no other thread.

use std::io::{self, ErrorKind, Write};
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use awd::completion_source::{completion_source, Continuations};
use awd::frame::{Decoder, Reading};
use awd::reactor_socket::{self, ReactorSocket};
use awd::socket::{self, IoThread, Received, Start};

// ANCHOR: bridge
/// Receives into `buffer`: at once if the bytes are already there, or when
/// the runtime's reactor sees them and the socket's driver task runs the
/// callback, on the runtime's own thread.
pub async fn receive(socket: &ReactorSocket, buffer: Vec<u8>) -> io::Result<Received> {
    let (source, completion) = completion_source(Continuations::Asynchronous);
    let start = socket.receive(buffer, move |received| {
        // In the socket's driver task, woken by the reactor: store the
        // result and wake the task, which this same thread polls next.
        let _ = source.set_result(received);
    });
    match start {
        // As in Listing 2-3: a receive that finished at once still spends a
        // unit of tokio's budget.
        Start::Ready(received) => {
            tokio::task::coop::consume_budget().await;
            Ok(received)
        }
        Start::Pending => completion.await.map_err(|abandoned| {
            // The socket broke its contract and dropped the callback.
            io::Error::new(ErrorKind::ConnectionAborted, abandoned)
        }),
    }
}
// ANCHOR_END: bridge

type Callback = Box<dyn FnOnce(Received) + Send>;

// ANCHOR: where
/// Starts a receive with `start` while nothing has been sent, sends a few
/// bytes, and names the thread that ran the receive's callback.
async fn callback_thread(
    start: impl FnOnce(Callback) -> Start<Received>,
    peer: &mut TcpStream,
) -> io::Result<String> {
    let (source, completion) = completion_source(Continuations::Asynchronous);
    let started = start(Box::new(move |received| {
        let name = thread::current().name().unwrap_or("unnamed").to_string();
        let _ = source.set_result((received, name));
    }));
    assert!(matches!(started, Start::Pending), "nothing was sent yet");
    peer.write_all(b"21.5")?;
    let (received, name) = completion
        .await
        .map_err(|abandoned| io::Error::new(ErrorKind::ConnectionAborted, abandoned))?;
    assert_eq!(received.bytes(), Some(&b"21.5"[..]));
    Ok(name)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> io::Result<()> {
    let task = thread::current().name().unwrap_or("unnamed").to_string();
    let io = IoThread::start()?;
    let (socket, mut peer) = socket::loopback_pair(&io)?;
    let on = callback_thread(|callback| socket.receive(vec![0; 16], callback), &mut peer).await?;
    println!("CallbackSocket: the callback ran on `{on}`, the waiting task on `{task}`");
    let (socket, mut peer) = reactor_socket::loopback_pair()?;
    let on = callback_thread(|callback| socket.receive(vec![0; 16], callback), &mut peer).await?;
    println!("ReactorSocket:  the callback ran on `{on}`, the waiting task on `{task}`");
    // ANCHOR_END: where

    // The bridge serves a sensor, as Listing 2-3's did.
    let (socket, mut sensor) = reactor_socket::loopback_pair()?;
    let sending = thread::spawn(move || -> io::Result<()> {
        for sequence in 1..=3 {
            let reading = Reading {
                sensor: 7,
                sequence,
                millidegrees: 21_000 + sequence as i32,
            };
            sensor.write_all(&reading.encode())?;
            thread::sleep(Duration::from_millis(2)); // some arrive while the server waits
        }
        Ok(()) // dropping the stream closes it
    });
    let mut decoder = Decoder::new();
    loop {
        let received = receive(&socket, vec![0; 256]).await?;
        let n = received.result?;
        if n == 0 {
            decoder.finish()?;
            break;
        }
        decoder.push(&received.buffer[..n]);
        while let Some(reading) = decoder.next_reading() {
            println!("{}", reading?);
        }
    }
    sending.join().expect("the sensor thread")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::TestLimit;

    #[tokio::test]
    async fn both_paths_of_the_bridge_deliver_the_bytes() {
        let _limit = TestLimit::seconds(10);
        let (socket, mut peer) = reactor_socket::loopback_pair().unwrap();
        // Sent only once the receive is pending: the reactor completes it.
        let waiting = socket.clone();
        let writer = thread::spawn(move || {
            while !waiting.is_receive_pending() {
                thread::sleep(Duration::from_millis(1));
            }
            peer.write_all(b"cd").unwrap();
            peer
        });
        let received = receive(&socket, vec![0; 8]).await.unwrap();
        assert_eq!(received.bytes(), Some(&b"cd"[..]));
        assert_eq!(socket.receive_callbacks(), 1);
        let mut peer = writer.join().unwrap();
        // Then more bytes, and the end of the stream.
        peer.write_all(b"ef").unwrap();
        peer.shutdown(std::net::Shutdown::Write).unwrap();
        let mut got = Vec::new();
        loop {
            let received = receive(&socket, vec![0; 8]).await.unwrap();
            match received.result.unwrap() {
                0 => break,
                n => got.extend_from_slice(&received.buffer[..n]),
            }
        }
        assert_eq!(got, b"ef");
    }

    #[tokio::test]
    async fn the_callback_runs_on_the_runtime_thread() {
        let _limit = TestLimit::seconds(10);
        let (socket, mut peer) = reactor_socket::loopback_pair().unwrap();
        let on = callback_thread(|callback| socket.receive(vec![0; 16], callback), &mut peer)
            .await
            .unwrap();
        assert_eq!(Some(on.as_str()), thread::current().name());
    }

    #[tokio::test]
    async fn a_closed_socket_is_an_error_not_a_hang() {
        let _limit = TestLimit::seconds(10);
        let (socket, _peer) = reactor_socket::loopback_pair().unwrap();
        let closer = socket.clone();
        let closing = tokio::spawn(async move {
            tokio::task::yield_now().await; // after the receive below is pending
            closer.close();
        });
        let error = receive(&socket, vec![0; 8])
            .await
            .unwrap()
            .result
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::ConnectionAborted);
        closing.await.unwrap();
        let error = receive(&socket, vec![0; 8])
            .await
            .unwrap()
            .result
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::NotConnected);
    }
}
