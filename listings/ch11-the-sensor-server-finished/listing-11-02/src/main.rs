//! The sensor server, finished: chapter 1's callback-based socket API behind
//! the waker-based bridge, one task per connection on a multi-threaded tokio
//! runtime, a time limit on every read, and every way a client can misbehave
//! turned into a reason to drop that client and no other.
//!
//! `cargo run -p listing-11-02` listens on 127.0.0.1:7878 until stopped;
//! `cargo run -p listing-11-02 -- 0.0.0.0:7878` listens on every interface.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use awd::bridge;
use awd::frame::{Decoder, FrameError, Reading};
use awd::socket::{CallbackSocket, IoThread};
use tokio::net::{TcpListener, TcpSocket};
use tokio::time;

// ANCHOR: server
// ANCHOR: connection_task
/// Why the server dropped a connection.
#[derive(Debug)]
pub enum Dropped {
    /// Nothing arrived for this long.
    Silent(Duration),
    /// An oversized or malformed header, or a stream that ended in the
    /// middle of a frame.
    BadFrame(FrameError),
    /// The socket failed: reset by the peer, or aborted.
    Failed(io::Error),
}

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dropped::Silent(limit) => write!(f, "silent for {limit:?}, the read timeout"),
            Dropped::BadFrame(error) => write!(f, "{error}"),
            Dropped::Failed(error) => write!(f, "socket error: {error}"),
        }
    }
}

impl From<FrameError> for Dropped {
    fn from(error: FrameError) -> Self {
        Dropped::BadFrame(error)
    }
}

impl From<io::Error> for Dropped {
    fn from(error: io::Error) -> Self {
        Dropped::Failed(error)
    }
}

/// Each connection's receive buffer, reused by every receive.
const BUFFER_LEN: usize = 4096;

// ANCHOR: connection
/// Serves one sensor until it closes the stream, misbehaves or falls silent.
async fn serve_connection(
    socket: &CallbackSocket,
    read_timeout: Duration,
    mut on_reading: impl FnMut(Reading),
) -> Result<(), Dropped> {
    let mut decoder = Decoder::new();
    let mut buffer = vec![0; BUFFER_LEN];
    loop {
        // Listing 2-3's bridge: the callback completes the source, which
        // wakes this task; the code below never runs on the I/O thread.
        let receive = bridge::receive(socket, buffer);
        let received = match time::timeout(read_timeout, receive).await {
            Ok(received) => received?,
            Err(_) => return Err(Dropped::Silent(read_timeout)),
        };
        let n = received.result?;
        if n == 0 {
            // The end of the stream: fine between frames, an error inside one.
            return Ok(decoder.finish()?);
        }
        decoder.push(&received.buffer[..n]);
        while let Some(reading) = decoder.next_reading() {
            on_reading(reading?);
        }
        buffer = received.buffer;
    }
}
// ANCHOR_END: connection
// ANCHOR_END: connection_task

// ANCHOR: listening
// ANCHOR: limits
/// Where the server listens unless told otherwise: loopback only. Listening
/// on other interfaces (`0.0.0.0:7878`) is a choice made on the command line.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:7878";

/// How long a connection may stay silent before the server drops it.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How many connections the kernel may hold, handshake done, for the accept
/// loop to take. The usual default of 128 overflows when a thousand sensors
/// connect at once, and a client whose handshake is dropped tries again only
/// a second later.
const BACKLOG: u32 = 1024;

/// How long the accept loop waits after a failed accept (the process is out
/// of file descriptors, say) before it tries again.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
// ANCHOR_END: limits

/// Where the server hands what its connections report. The methods run on
/// the runtime's threads, inside connection tasks: they must not block.
pub trait Sink: Send + Sync + 'static {
    /// A connection was accepted.
    fn connected(&self, _peer: SocketAddr) {}
    /// A reading, as soon as it is decoded.
    fn reading(&self, peer: SocketAddr, reading: Reading);
    /// A connection ended after `readings` readings: `Ok` when the client
    /// closed the stream between frames.
    fn ended(&self, peer: SocketAddr, readings: u64, how: Result<(), Dropped>);
}

// ANCHOR: accept
/// Opens the listening socket, with room for [`BACKLOG`] connections.
pub fn listen(address: SocketAddr) -> io::Result<TcpListener> {
    let socket = match address {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?; // restart at once, as std's listeners do
    socket.bind(address)?;
    socket.listen(BACKLOG)
}

/// Accepts connections for ever, each served by a task of its own.
pub async fn serve(
    listener: TcpListener,
    io: IoThread,
    read_timeout: Duration,
    sink: Arc<dyn Sink>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, or a connection reset before it
                // was accepted: the listener itself is fine.
                eprintln!("accept failed: {e}; trying again in {ACCEPT_RETRY:?}");
                time::sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        // The stream leaves tokio's reactor and joins the I/O thread.
        let socket = match stream.into_std().and_then(|stream| io.adopt(stream)) {
            Ok(socket) => socket,
            Err(e) => {
                eprintln!("{peer}: could not adopt the connection: {e}");
                continue;
            }
        };
        sink.connected(peer);
        let sink = Arc::clone(&sink);
        tokio::spawn(async move {
            let mut readings = 0;
            let how = serve_connection(&socket, read_timeout, |reading| {
                readings += 1;
                sink.reading(peer, reading);
            })
            .await;
            socket.close(); // the client learns at once that it was dropped
            sink.ended(peer, readings, how);
        });
    }
}
// ANCHOR_END: accept
// ANCHOR_END: listening
// ANCHOR_END: server

// ANCHOR: main
/// The address to listen on: the first argument, or loopback.
fn address(argument: Option<String>) -> io::Result<SocketAddr> {
    let text = argument.unwrap_or_else(|| DEFAULT_ADDRESS.to_string());
    text.parse().map_err(|e| {
        let message = format!("`{text}` is not an address such as {DEFAULT_ADDRESS}: {e}");
        io::Error::new(io::ErrorKind::InvalidInput, message)
    })
}

/// Prints how each connection ends, with its latest reading. The table's
/// lock is held for one insert or one removal: never across an `.await`, and
/// never while completing anything (Chapter 3's lock variant).
#[derive(Default)]
struct Log {
    latest: Mutex<HashMap<SocketAddr, Reading>>,
}

impl Sink for Log {
    fn connected(&self, peer: SocketAddr) {
        println!("{peer}: connected");
    }

    fn reading(&self, peer: SocketAddr, reading: Reading) {
        self.latest.lock().unwrap().insert(peer, reading);
    }

    fn ended(&self, peer: SocketAddr, readings: u64, how: Result<(), Dropped>) {
        let latest = self.latest.lock().unwrap().remove(&peer);
        let latest = latest.map(|r| format!(", latest {r}")).unwrap_or_default();
        match how {
            Ok(()) => println!("{peer}: closed after {readings} readings{latest}"),
            Err(why) => println!("{peer}: dropped after {readings} readings{latest}: {why}"),
        }
    }
}

#[tokio::main]
async fn main() -> io::Result<()> {
    let address = address(std::env::args().nth(1))?;
    let io = IoThread::start()?;
    let listener = listen(address)?;
    println!(
        "listening on {}; a client silent for {READ_TIMEOUT:?} is dropped",
        listener.local_addr()?
    );
    tokio::select! {
        () = serve(listener, io, READ_TIMEOUT, Arc::new(Log::default())) => {}
        stop = tokio::signal::ctrl_c() => {
            stop?;
            println!("stopped by Ctrl-C");
        }
    }
    Ok(())
}
// ANCHOR_END: main

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::TestLimit;
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Instant;
    use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

    /// What a connection reported, in order.
    #[derive(Debug)]
    enum Event {
        Reading(SocketAddr, Reading),
        Ended(SocketAddr, u64, Result<(), Dropped>),
    }

    struct Recorder(UnboundedSender<Event>);

    impl Sink for Recorder {
        fn reading(&self, peer: SocketAddr, reading: Reading) {
            let _ = self.0.send(Event::Reading(peer, reading));
        }
        fn ended(&self, peer: SocketAddr, readings: u64, how: Result<(), Dropped>) {
            let _ = self.0.send(Event::Ended(peer, readings, how));
        }
    }

    /// What the server reported, filed by connection.
    struct Reports {
        events: UnboundedReceiver<Event>,
        readings: HashMap<SocketAddr, Vec<Reading>>,
        ended: HashMap<SocketAddr, (u64, Result<(), Dropped>)>,
    }

    impl Reports {
        /// The end of the connection from `peer`, and the readings it
        /// delivered.
        async fn end_of(&mut self, peer: SocketAddr) -> (Vec<Reading>, u64, Result<(), Dropped>) {
            loop {
                if let Some((count, how)) = self.ended.remove(&peer) {
                    let readings = self.readings.remove(&peer).unwrap_or_default();
                    return (readings, count, how);
                }
                let event = time::timeout(Duration::from_secs(5), self.events.recv())
                    .await
                    .expect("the server reports within 5 s")
                    .expect("the server is running");
                match event {
                    Event::Reading(from, reading) => {
                        self.readings.entry(from).or_default().push(reading)
                    }
                    Event::Ended(from, count, how) => {
                        self.ended.insert(from, (count, how));
                    }
                }
            }
        }
    }

    /// A server on a loopback port of its own, and what it reports.
    async fn start(read_timeout: Duration) -> (SocketAddr, Reports) {
        let listener = listen(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let address = listener.local_addr().unwrap();
        let (events, reported) = unbounded_channel();
        let io = IoThread::start().unwrap();
        tokio::spawn(serve(
            listener,
            io,
            read_timeout,
            Arc::new(Recorder(events)),
        ));
        let reports = Reports {
            events: reported,
            readings: HashMap::new(),
            ended: HashMap::new(),
        };
        (address, reports)
    }

    fn frame(sensor: u16, sequence: u32) -> [u8; awd::frame::FRAME_LEN] {
        Reading {
            sensor,
            sequence,
            millidegrees: 21_000,
        }
        .encode()
    }

    /// Blocks until the server closes `client`'s connection; how long it took.
    fn closed_by_server(mut client: TcpStream) -> Duration {
        let started = Instant::now();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut byte = [0u8; 1];
        match client.read(&mut byte) {
            Ok(0) => {}
            Ok(_) => panic!("the server never sends anything"),
            Err(e) => assert_ne!(e.kind(), io::ErrorKind::WouldBlock, "still open"),
        }
        started.elapsed()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sensor_that_closes_between_frames_ends_cleanly() {
        let _limit = TestLimit::seconds(10);
        let (address, mut reported) = start(READ_TIMEOUT).await;
        let mut client = TcpStream::connect(address).unwrap();
        let peer = client.local_addr().unwrap();
        for sequence in 1..=3 {
            client.write_all(&frame(7, sequence)).unwrap();
        }
        drop(client);
        let (readings, count, how) = reported.end_of(peer).await;
        assert_eq!(count, 3);
        let sequences: Vec<u32> = readings.iter().map(|r| r.sequence).collect();
        assert_eq!(sequences, [1, 2, 3]);
        assert!(how.is_ok(), "{how:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_that_leaves_mid_frame_is_dropped_as_truncated() {
        let _limit = TestLimit::seconds(10);
        let (address, mut reported) = start(READ_TIMEOUT).await;
        let mut client = TcpStream::connect(address).unwrap();
        let peer = client.local_addr().unwrap();
        client.write_all(&frame(7, 1)).unwrap();
        client.write_all(&frame(7, 2)[..7]).unwrap();
        drop(client);
        let (_, count, how) = reported.end_of(peer).await;
        assert_eq!(count, 1);
        assert!(
            matches!(
                how,
                Err(Dropped::BadFrame(FrameError::Truncated { received: 7 }))
            ),
            "{how:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn oversized_and_malformed_lengths_drop_the_client() {
        let _limit = TestLimit::seconds(10);
        let (address, mut reported) = start(READ_TIMEOUT).await;
        for (header, expected) in [
            ([0xff, 0xff], FrameError::Oversized { length: 65_535 }),
            ([0x00, 0x04], FrameError::Malformed { length: 4 }),
        ] {
            let mut client = TcpStream::connect(address).unwrap();
            let peer = client.local_addr().unwrap();
            client.write_all(&header).unwrap();
            let (_, count, how) = reported.end_of(peer).await;
            assert_eq!(count, 0);
            assert!(
                matches!(how, Err(Dropped::BadFrame(e)) if e == expected),
                "{how:?}"
            );
            let waited = tokio::task::spawn_blocking(move || closed_by_server(client))
                .await
                .unwrap();
            assert!(waited < Duration::from_secs(5));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_silent_client_is_dropped_after_the_read_timeout_and_others_carry_on() {
        let _limit = TestLimit::seconds(10);
        let timeout = Duration::from_millis(300);
        let (address, mut reported) = start(timeout).await;
        let silent = TcpStream::connect(address).unwrap();
        let silent_peer = silent.local_addr().unwrap();
        let connected = Instant::now();
        // Meanwhile a sensor sends a frame every 100 ms, well within the limit.
        let mut sensor = TcpStream::connect(address).unwrap();
        let sensor_peer = sensor.local_addr().unwrap();
        let sending = std::thread::spawn(move || {
            for sequence in 1..=8 {
                sensor.write_all(&frame(9, sequence)).unwrap();
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let (_, count, how) = reported.end_of(silent_peer).await;
        let after = connected.elapsed();
        assert_eq!(count, 0);
        assert!(
            matches!(how, Err(Dropped::Silent(t)) if t == timeout),
            "{how:?}"
        );
        assert!(
            after >= timeout && after < Duration::from_secs(3),
            "{after:?}"
        );
        tokio::task::spawn_blocking(move || closed_by_server(silent))
            .await
            .unwrap();
        tokio::task::spawn_blocking(move || sending.join().unwrap())
            .await
            .unwrap();
        let (readings, count, how) = reported.end_of(sensor_peer).await;
        assert_eq!((readings.len(), count), (8, 8));
        assert!(how.is_ok(), "{how:?}");
    }

    #[test]
    fn the_connection_task_here_is_listing_11_1s() {
        let _limit = TestLimit::seconds(5);
        // The markers are built, not written out, so that mdBook does not
        // take these lines for anchors.
        let marker = |end: &str| format!("// ANCHOR{end}: connection_task\n");
        let region = |text: &str| {
            let start = text.find(&marker("")).expect("the region's start");
            let end = text.find(&marker("_END")).expect("the region's end");
            text[start..end].to_string()
        };
        let there = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../listing-11-01/src/main.rs"
        ))
        .expect("Listing 11-1's file");
        assert!(
            region(include_str!("main.rs")) == region(&there),
            "the connection task in this file differs from Listing 11-1's: copy it again"
        );
    }

    #[test]
    fn the_server_listens_on_loopback_unless_told_otherwise() {
        let _limit = TestLimit::seconds(5);
        let default = address(None).unwrap();
        assert!(default.ip().is_loopback(), "{default}");
        let everywhere = address(Some("0.0.0.0:7878".into())).unwrap();
        assert!(everywhere.ip().is_unspecified());
        let error = address(Some("seven".into())).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    }
}
