//! The finished server's connection task: one sensor, served through the
//! waker-based bridge until it closes the stream, breaks the protocol or
//! falls silent. `main` shows each way a connection can end.

use std::fmt;
use std::io::{self, Write};
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use awd::bridge;
use awd::frame::{Decoder, FrameError, Reading};
use awd::socket::{loopback_pair, CallbackSocket, IoThread};
use tokio::time;

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

/// The read timeout of this demonstration: short, so that the silent client
/// does not keep you waiting. The server's is ten seconds.
const DEMO_TIMEOUT: Duration = Duration::from_millis(300);

/// How long the demonstration's clients wait for the server's receives.
const PATIENCE: Duration = Duration::from_secs(5);

fn frame(sensor: u16, sequence: u32) -> [u8; awd::frame::FRAME_LEN] {
    let millidegrees = 21_000 + i32::from(sensor) * 100 + sequence as i32;
    Reading {
        sensor,
        sequence,
        millidegrees,
    }
    .encode()
}

/// A client of the demonstration: what it sends before the server starts
/// receiving, what it sends while the server waits, and whether it then
/// closes its side or stays silent.
struct Client {
    what: &'static str,
    at_once: Vec<u8>,
    while_waiting: Vec<Vec<u8>>,
    then_closes: bool,
}

fn clients() -> Vec<Client> {
    vec![
        Client {
            what: "a sensor that sends three readings, two while the server waits",
            at_once: frame(7, 1).to_vec(),
            while_waiting: vec![frame(7, 2).to_vec(), frame(7, 3).to_vec()],
            then_closes: true,
        },
        Client {
            what: "a sensor that leaves in the middle of its second frame",
            at_once: [&frame(8, 1)[..], &frame(8, 2)[..7]].concat(),
            while_waiting: Vec::new(),
            then_closes: true,
        },
        Client {
            what: "a client whose header announces 65535 bytes",
            at_once: vec![0xff, 0xff, 1, 2, 3],
            while_waiting: Vec::new(),
            then_closes: false,
        },
        Client {
            what: "a client whose header announces 4 bytes",
            at_once: vec![0x00, 0x04, 1, 2, 3, 4],
            while_waiting: Vec::new(),
            then_closes: false,
        },
        Client {
            what: "a client that connects and sends nothing",
            at_once: Vec::new(),
            while_waiting: Vec::new(),
            then_closes: false,
        },
    ]
}

/// What serving one client gave: its readings, how the connection ended, and
/// how many receives the I/O thread's callback delivered.
struct Served {
    readings: Vec<Reading>,
    how: Result<(), Dropped>,
    callbacks: usize,
}

/// Serves `client` on a fresh loopback connection.
fn serve_one(
    runtime: &tokio::runtime::Runtime,
    io: &IoThread,
    client: &Client,
) -> io::Result<Served> {
    let (socket, mut peer) = loopback_pair(io)?;
    peer.write_all(&client.at_once)?;
    if !client.at_once.is_empty() && !socket.wait_until_buffered(client.at_once.len(), PATIENCE) {
        return Err(io::ErrorKind::TimedOut.into());
    }
    // The rest is sent only once the server's receive is really pending, so
    // that it travels through the callback.
    let gate = socket.clone();
    let later = client.while_waiting.clone();
    let closes = client.then_closes;
    let sender = thread::spawn(move || -> io::Result<Option<TcpStream>> {
        let mut waited_for = 0;
        for bytes in later {
            if !gate.wait_for_pending_receive_after(waited_for, PATIENCE) {
                return Err(io::ErrorKind::TimedOut.into());
            }
            waited_for = gate.pending_receive().unwrap_or(waited_for);
            peer.write_all(&bytes)?;
        }
        if closes {
            if !gate.wait_for_pending_receive_after(waited_for, PATIENCE) {
                return Err(io::ErrorKind::TimedOut.into());
            }
            return Ok(None); // dropping the stream closes it
        }
        Ok(Some(peer)) // kept open until the server is done
    });
    let mut readings = Vec::new();
    let how = runtime.block_on(serve_connection(&socket, DEMO_TIMEOUT, |reading| {
        readings.push(reading)
    }));
    let callbacks = socket.receive_callbacks();
    socket.close();
    drop(sender.join().expect("the client thread")?);
    Ok(Served {
        readings,
        how,
        callbacks,
    })
}

fn main() -> io::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let io = IoThread::start()?;
    for client in clients() {
        let served = serve_one(&runtime, &io, &client)?;
        println!("{}:", client.what);
        for reading in &served.readings {
            println!("  {reading}");
        }
        let count = match served.readings.len() {
            1 => "1 reading".to_string(),
            n => format!("{n} readings"),
        };
        match served.how {
            Ok(()) => println!(
                "  closed after {count}; {} receives completed through the callback",
                served.callbacks
            ),
            Err(why) => println!("  dropped after {count}: {why}"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::TestLimit;

    #[test]
    fn each_client_ends_the_way_the_protocol_says() {
        let _limit = TestLimit::seconds(20);
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let io = IoThread::start().unwrap();
        let ends: Vec<_> = clients()
            .iter()
            .map(|client| serve_one(&runtime, &io, client).unwrap())
            .collect();
        let counts: Vec<usize> = ends.iter().map(|s| s.readings.len()).collect();
        assert_eq!(counts, [3, 1, 0, 0, 0]);
        assert!(ends[0].how.is_ok(), "{:?}", ends[0].how);
        // Frames 2 and 3, then the end of the stream, came through the callback.
        assert_eq!(ends[0].callbacks, 3);
        let errors: Vec<Option<FrameError>> = ends
            .iter()
            .map(|s| match s.how {
                Err(Dropped::BadFrame(e)) => Some(e),
                _ => None,
            })
            .collect();
        assert_eq!(
            errors,
            [
                None,
                Some(FrameError::Truncated { received: 7 }),
                Some(FrameError::Oversized { length: 65_535 }),
                Some(FrameError::Malformed { length: 4 }),
                None,
            ]
        );
        assert!(
            matches!(ends[4].how, Err(Dropped::Silent(t)) if t == DEMO_TIMEOUT),
            "{:?}",
            ends[4].how
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_receive_abandoned_by_the_timeout_is_completed_by_the_close() {
        let _limit = TestLimit::seconds(10);
        let io = IoThread::start().unwrap();
        let (socket, peer) = loopback_pair(&io).unwrap();
        let how = serve_connection(&socket, Duration::from_millis(100), |_| {}).await;
        assert!(matches!(how, Err(Dropped::Silent(_))), "{how:?}");
        // The timeout dropped the future, not the receive: it still waits.
        assert!(socket.is_receive_pending());
        assert_eq!(socket.receive_callbacks(), 0);
        // Closing completes it on the I/O thread; nobody waits for it now.
        socket.close();
        let closed = std::time::Instant::now();
        while socket.receive_callbacks() == 0 {
            assert!(closed.elapsed() < Duration::from_secs(5), "never completed");
            time::sleep(Duration::from_millis(1)).await;
        }
        assert!(!socket.is_receive_pending());
        drop(peer);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn frames_split_anywhere_arrive_whole_and_in_order() {
        let _limit = TestLimit::seconds(20);
        let io = IoThread::start().unwrap();
        let (socket, mut peer) = loopback_pair(&io).unwrap();
        let stream: Vec<u8> = (1..=5_000).flat_map(|s| frame(3, s)).collect();
        let writer = thread::spawn(move || {
            // Chunks of 1 to 37 bytes, each frame split differently.
            let mut at = 0;
            let mut size = 1;
            while at < stream.len() {
                let end = (at + size).min(stream.len());
                peer.write_all(&stream[at..end]).unwrap();
                at = end;
                size = size % 37 + 1;
            }
        });
        let mut sequences = Vec::new();
        let how = serve_connection(&socket, Duration::from_secs(5), |r| {
            sequences.push(r.sequence)
        })
        .await;
        writer.join().unwrap();
        assert!(how.is_ok(), "{how:?}");
        assert_eq!(sequences, (1..=5_000).collect::<Vec<u32>>());
    }
}
