//! A sensor server and its clients written directly against callbacks: each
//! connection's receive loop is driven by the completion callbacks, and a
//! receive that finishes at once is handled in a loop, not by recursion.

use std::collections::BTreeMap;
use std::io;
use std::net::TcpListener;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use awd::frame::{Decoder, Reading};
use awd::socket::{CallbackSocket, IoThread, Received, Start};

/// What a connection reports to the rest of the server.
#[derive(Debug)]
enum Report {
    Reading(Reading),
    /// The connection ended: cleanly, or with the reason.
    Ended(Result<(), String>),
}

// ANCHOR: connection
/// One client connection: its socket, the bytes of a frame that is not
/// complete yet, and where readings go.
struct Connection {
    socket: CallbackSocket,
    decoder: Mutex<Decoder>,
    reports: Sender<Report>,
}

impl Connection {
    /// Handles one finished receive. Returns true to keep receiving.
    fn handle(&self, received: Received) -> bool {
        let mut decoder = self.decoder.lock().unwrap();
        let ended = match received.result {
            Ok(0) => Err(decoder.finish().map_err(|e| e.to_string())),
            Ok(n) => {
                decoder.push(&received.buffer[..n]);
                Ok(())
            }
            Err(e) => Err(Err(e.to_string())),
        };
        while let Some(reading) = decoder.next_reading() {
            match reading {
                Ok(reading) => {
                    let _ = self.reports.send(Report::Reading(reading));
                }
                Err(bad) => {
                    // A client that sends garbage is dropped.
                    let _ = self.reports.send(Report::Ended(Err(bad.to_string())));
                    self.socket.close();
                    return false;
                }
            }
        }
        match ended {
            Ok(()) => true,
            Err(how) => {
                let _ = self.reports.send(Report::Ended(how));
                false
            }
        }
    }
}

/// How many receives that finish at once one call handles before it lets
/// the I/O thread serve other sockets.
const AT_ONCE: usize = 16;

/// Starts receives until one is pending. A receive that finishes at once is
/// handled right here and the loop goes round again; a pending one hands
/// the rest to its callback, which calls this function again, on the I/O
/// thread, where the nesting starts again from the thread's dispatch loop
/// instead of growing. After [`AT_ONCE`] receives that all finished
/// at once, the rest is posted to the I/O thread's queue, behind the other
/// sockets' callbacks: a client that keeps its socket full gets its turn,
/// not the whole thread.
fn receive_more(connection: Arc<Connection>) {
    for _ in 0..AT_ONCE {
        let for_callback = Arc::clone(&connection);
        let start = connection.socket.receive(vec![0; 256], move |received| {
            if for_callback.handle(received) {
                receive_more(for_callback);
            }
        });
        match start {
            Start::Ready(received) => {
                if !connection.handle(received) {
                    return;
                }
            }
            Start::Pending => return,
        }
    }
    let later = Arc::clone(&connection);
    if let Err(e) = connection.socket.post(move || receive_more(later)) {
        let _ = connection.reports.send(Report::Ended(Err(e.to_string())));
    }
}
// ANCHOR_END: connection

// ANCHOR: client
/// A sensor: connects, sends its readings with one callback-driven send, and
/// closes once the send has completed.
fn run_sensor(
    io: &IoThread,
    server: std::net::SocketAddr,
    sensor: u16,
    count: u32,
) -> io::Result<()> {
    let socket = io.connect(server)?;
    let frames: Vec<u8> = (1..=count)
        .flat_map(|sequence| {
            let millidegrees = 21_000 + i32::from(sensor) * 100 + sequence as i32;
            Reading {
                sensor,
                sequence,
                millidegrees,
            }
            .encode()
        })
        .collect();
    let closing = socket.clone();
    match socket.send(frames, move |sent| {
        if let Err(e) = sent {
            eprintln!("sensor {sensor}: send failed: {e}");
        }
        closing.close();
    }) {
        Start::Ready(sent) => {
            sent?;
            socket.close();
        }
        Start::Pending => {} // the callback closes the socket
    }
    Ok(())
}
// ANCHOR_END: client

fn main() -> io::Result<()> {
    const SENSORS: u16 = 3;
    const READINGS: u32 = 4;
    let io = IoThread::start()?;
    let listener = TcpListener::bind(("127.0.0.1", 0))?;
    let address = listener.local_addr()?;
    let (reports, received) = mpsc::channel();

    for sensor in 1..=SENSORS {
        run_sensor(&io, address, sensor, READINGS)?;
    }
    for _ in 0..SENSORS {
        let (stream, _) = listener.accept()?;
        let connection = Arc::new(Connection {
            socket: io.adopt(stream)?,
            decoder: Mutex::new(Decoder::new()),
            reports: reports.clone(),
        });
        receive_more(connection);
    }

    // Gather every report; connections run concurrently, so sort by sensor.
    let mut by_sensor: BTreeMap<u16, Vec<Reading>> = BTreeMap::new();
    let mut ended = 0;
    while ended < SENSORS {
        match received.recv_timeout(Duration::from_secs(5)) {
            Ok(Report::Reading(reading)) => {
                by_sensor.entry(reading.sensor).or_default().push(reading)
            }
            Ok(Report::Ended(Ok(()))) => ended += 1,
            Ok(Report::Ended(Err(why))) => {
                println!("a connection failed: {why}");
                ended += 1;
            }
            Err(e) => return Err(io::Error::new(io::ErrorKind::TimedOut, e)),
        }
    }
    for (sensor, readings) in &by_sensor {
        let last = readings.last().expect("at least one");
        println!("sensor {sensor}: {} readings, last {last}", readings.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::frame::FrameError;
    use awd::watchdog::TestLimit;
    use std::io::Write;

    /// A server connection fed by `peer`, and the reports it sends.
    fn serve(io: &IoThread) -> (std::net::TcpStream, mpsc::Receiver<Report>) {
        let (socket, peer) = awd::socket::loopback_pair(io).unwrap();
        let (reports, received) = mpsc::channel();
        receive_more(Arc::new(Connection {
            socket,
            decoder: Mutex::new(Decoder::new()),
            reports,
        }));
        (peer, received)
    }

    fn end_of(received: &mpsc::Receiver<Report>) -> (usize, Result<(), String>) {
        let mut readings = 0;
        loop {
            match received.recv_timeout(Duration::from_secs(5)).unwrap() {
                Report::Reading(_) => readings += 1,
                Report::Ended(how) => return (readings, how),
            }
        }
    }

    #[test]
    fn thousands_of_buffered_frames_need_no_deep_stack() {
        let _limit = TestLimit::seconds(30);
        // A 64 KiB stack: recursion per receive would overflow it.
        let worker = std::thread::Builder::new().stack_size(64 * 1024).spawn(|| {
            let io = IoThread::start().unwrap();
            let (socket, mut peer) = awd::socket::loopback_pair(&io).unwrap();
            let frames: Vec<u8> = (0..20_000)
                .flat_map(|sequence| {
                    Reading {
                        sensor: 1,
                        sequence,
                        millidegrees: 0,
                    }
                    .encode()
                })
                .collect();
            let writer = std::thread::spawn(move || {
                peer.write_all(&frames).unwrap();
                peer
            });
            assert!(socket.wait_until_readable(Duration::from_secs(5)));
            let (reports, received) = mpsc::channel();
            receive_more(Arc::new(Connection {
                socket,
                decoder: Mutex::new(Decoder::new()),
                reports,
            }));
            drop(writer.join().unwrap());
            end_of(&received)
        });
        assert_eq!(worker.unwrap().join().unwrap(), (20_000, Ok(())));
    }

    #[test]
    fn a_client_that_keeps_its_socket_full_does_not_hold_the_io_thread() {
        let _limit = TestLimit::seconds(30);
        let io = IoThread::start().unwrap();
        let frame = |sensor, sequence| {
            Reading {
                sensor,
                sequence,
                millidegrees: 0,
            }
            .encode()
        };
        // The flooder: its socket is kept full until the test ends.
        let (mut flooder, flood_reports) = serve(&io);
        let flood: Vec<u8> = (0..4_096).flat_map(|sequence| frame(1, sequence)).collect();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let writer = std::thread::spawn(move || {
            let mut rounds = 0u64;
            while !stopped.load(std::sync::atomic::Ordering::SeqCst) {
                flooder.write_all(&flood).unwrap();
                rounds += 1;
            }
            rounds
        });
        // Readings of the flood are taken as they come, so that its
        // callbacks never wait for room in a channel.
        let drained = std::thread::spawn(move || {
            let mut readings = 0u64;
            while let Ok(Report::Reading(_)) = flood_reports.recv_timeout(Duration::from_secs(5)) {
                readings += 1;
            }
            readings
        });
        // Wait until the flood's receives are running on the I/O thread.
        std::thread::sleep(Duration::from_millis(100));
        // A quiet client, whose receive is pending on the same I/O thread.
        let (mut quiet, quiet_reports) = serve(&io);
        quiet.write_all(&frame(2, 1)).unwrap();
        let report = quiet_reports.recv_timeout(Duration::from_secs(5));
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let rounds = writer.join().unwrap();
        assert!(
            matches!(report, Ok(Report::Reading(Reading { sensor: 2, .. }))),
            "the quiet client's reading never came: {report:?}"
        );
        drop(io);
        let flooded = drained.join().unwrap();
        assert!(
            rounds > 1 && flooded > 4_096,
            "the flood: {rounds} writes, {flooded} readings"
        );
    }

    #[test]
    fn an_oversized_frame_drops_the_client_with_a_clear_error() {
        let _limit = TestLimit::seconds(10);
        let io = IoThread::start().unwrap();
        let (mut peer, received) = serve(&io);
        peer.write_all(
            &Reading {
                sensor: 1,
                sequence: 1,
                millidegrees: 0,
            }
            .encode(),
        )
        .unwrap();
        peer.write_all(&[0xff, 0xff, 1, 2, 3]).unwrap();
        let (readings, how) = end_of(&received);
        assert_eq!(readings, 1);
        assert_eq!(
            how,
            Err(FrameError::Oversized { length: 65_535 }.to_string())
        );
    }

    #[test]
    fn a_client_that_leaves_mid_frame_is_reported_as_truncated() {
        let _limit = TestLimit::seconds(10);
        let io = IoThread::start().unwrap();
        let (mut peer, received) = serve(&io);
        peer.write_all(
            &Reading {
                sensor: 1,
                sequence: 1,
                millidegrees: 0,
            }
            .encode()[..7],
        )
        .unwrap();
        drop(peer);
        assert_eq!(
            end_of(&received),
            (0, Err(FrameError::Truncated { received: 7 }.to_string()))
        );
    }
}
