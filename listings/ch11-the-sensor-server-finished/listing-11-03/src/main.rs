//! The load test: the finished server of Listing 11-2 under a thousand
//! concurrent sensors on loopback, plus clients that misbehave in every way
//! the protocol allows, and clients that keep their socket full for the
//! whole run. Every frame is accounted for by (sensor, sequence),
//! and the time from sending a frame to the server decoding it is measured on
//! one clock, since both sides run in this process.
//!
//! `cargo run -p listing-11-03` runs the default load; `-- 200 50` runs 200
//! sensors of 50 frames each.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use awd::bridge;
use awd::frame::{Decoder, FrameError, Reading, FRAME_LEN};
use awd::socket::{CallbackSocket, IoThread};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio::sync::{oneshot, Barrier};
use tokio::time::{self, MissedTickBehavior};

// The server, exactly as Listing 11-2 has it (a test below compares the two).
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

// ANCHOR: load
/// The load: how many sensors, how many frames each, and how often.
#[derive(Clone, Copy, Debug)]
struct Load {
    sensors: u16,
    frames: u32,
    interval: Duration,
    /// The server's read timeout in this run: short, so that the silent
    /// client is dropped within the run, and still many intervals long.
    read_timeout: Duration,
    /// Clients that send as fast as the server reads, from before the first
    /// sensor connects until the last one is done: as many as the server has
    /// workers, enough to hold them all if a connection never yielded.
    flooders: usize,
}

const LOAD: Load = Load {
    sensors: 1_000,
    frames: 100,
    interval: Duration::from_millis(20),
    read_timeout: Duration::from_secs(2),
    flooders: SERVER_WORKERS,
};

/// The server runtime's worker threads.
const SERVER_WORKERS: usize = 2;

/// The whole run must end within this, or the watchdog stops it.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// How long any one step of a client (a connect, a write, the server's
/// close) may take before the client gives up and reports it.
const CLIENT_PATIENCE: Duration = Duration::from_secs(15);
// ANCHOR_END: load

/// A sensor's temperature for one frame: any value the server could not
/// guess, so that a frame delivered with another frame's payload shows.
fn temperature(sensor: u16, sequence: u32) -> i32 {
    let mixed = u32::from(sensor).wrapping_mul(7_919) ^ sequence.wrapping_mul(104_729);
    -40_000 + (mixed % 100_000) as i32
}

// ANCHOR: ledger
/// Every frame of the run, by (sensor, sequence): when it was sent, when the
/// server decoded it, and how many times. Atomics only: the server calls
/// this from its connection tasks, which must not block.
struct Ledger {
    load: Load,
    clock: Instant,
    sent_at: Vec<AtomicU64>,
    decoded_at: Vec<AtomicU64>,
    copies: Vec<AtomicU32>,
    /// Readings that match no frame a sensor sent.
    strays: AtomicU64,
    open: AtomicUsize,
    peak_open: AtomicUsize,
    /// When the last sensor connected, on the ledger's clock.
    all_connected_at: AtomicU64,
    ends: UnboundedSender<End>,
}

/// How the server says a connection ended.
#[derive(Debug)]
struct End {
    peer: SocketAddr,
    readings: u64,
    how: Result<(), Dropped>,
}

impl Ledger {
    fn new(load: Load, ends: UnboundedSender<End>) -> Ledger {
        let frames = usize::from(load.sensors) * load.frames as usize;
        let zeros = |n| (0..n).map(|_| AtomicU64::new(0)).collect();
        Ledger {
            load,
            clock: Instant::now(),
            sent_at: zeros(frames),
            decoded_at: zeros(frames),
            copies: (0..frames).map(|_| AtomicU32::new(0)).collect(),
            strays: AtomicU64::new(0),
            open: AtomicUsize::new(0),
            peak_open: AtomicUsize::new(0),
            all_connected_at: AtomicU64::new(0),
            ends,
        }
    }

    /// The frame's place in the ledger; sensors count from 1, sequences too.
    fn slot(&self, sensor: u16, sequence: u32) -> Option<usize> {
        let valid =
            (1..=self.load.sensors).contains(&sensor) && (1..=self.load.frames).contains(&sequence);
        valid.then(|| usize::from(sensor - 1) * self.load.frames as usize + (sequence - 1) as usize)
    }

    /// Nanoseconds on the ledger's clock (never 0, which means "not yet").
    fn now(&self) -> u64 {
        self.clock.elapsed().as_nanos().max(1) as u64
    }

    /// Called by a sensor just before it writes the frame.
    fn sent(&self, sensor: u16, sequence: u32) {
        if let Some(slot) = self.slot(sensor, sequence) {
            self.sent_at[slot].store(self.now(), Ordering::Relaxed);
        }
    }
}

// ANCHOR: accounting
impl Sink for Ledger {
    fn connected(&self, _peer: SocketAddr) {
        let open = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak_open.fetch_max(open, Ordering::Relaxed);
    }

    fn reading(&self, _peer: SocketAddr, reading: Reading) {
        if reading.sensor == 0 {
            return; // a misbehaving client's frame: the server's report counts it
        }
        let now = self.now();
        let expected = temperature(reading.sensor, reading.sequence);
        match self.slot(reading.sensor, reading.sequence) {
            Some(slot) if reading.millidegrees == expected => {
                if self.copies[slot].fetch_add(1, Ordering::Relaxed) == 0 {
                    self.decoded_at[slot].store(now, Ordering::Relaxed);
                }
            }
            _ => {
                self.strays.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn ended(&self, peer: SocketAddr, readings: u64, how: Result<(), Dropped>) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        let _ = self.ends.send(End {
            peer,
            readings,
            how,
        });
    }
}
// ANCHOR_END: accounting
// ANCHOR_END: ledger

// ANCHOR: sensor
/// A well-behaved sensor: connects, waits until every sensor is connected,
/// sends its frames one at a time at the load's pace, closes its side, and
/// waits for the server to close the other.
async fn sensor(
    address: SocketAddr,
    sensor: u16,
    ledger: Arc<Ledger>,
    all_connected: Arc<Barrier>,
) -> io::Result<()> {
    let connected = patiently(TcpStream::connect(address)).await;
    if all_connected.wait().await.is_leader() {
        // The last sensor is connected: a thousand open connections.
        let now = ledger.now();
        ledger.all_connected_at.store(now, Ordering::Relaxed);
    }
    let mut stream = connected?;
    stream.set_nodelay(true)?;
    let load = ledger.load;
    // Sensors start spread over one interval rather than all at once.
    let offset = load.interval * u32::from(sensor) / u32::from(load.sensors);
    let mut ticks = time::interval_at(time::Instant::now() + offset, load.interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    for sequence in 1..=load.frames {
        ticks.tick().await;
        let frame = Reading {
            sensor,
            sequence,
            millidegrees: temperature(sensor, sequence),
        }
        .encode();
        ledger.sent(sensor, sequence);
        patiently(stream.write_all(&frame)).await?;
    }
    patiently(stream.shutdown()).await?;
    let mut byte = [0u8; 1];
    match patiently(stream.read(&mut byte)).await? {
        0 => Ok(()),
        _ => Err(io::Error::other("the server sent bytes; it never should")),
    }
}

/// Runs one step of a client, which must finish within [`CLIENT_PATIENCE`].
async fn patiently<T>(step: impl std::future::Future<Output = io::Result<T>>) -> io::Result<T> {
    time::timeout(CLIENT_PATIENCE, step)
        .await
        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
}
// ANCHOR_END: sensor

// ANCHOR: misbehaving
/// The clients that break the protocol, one of each kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Misbehaviour {
    /// Sends one frame and seven bytes of the next, then disconnects.
    LeavesMidFrame,
    /// Announces a payload of 65,535 bytes.
    OversizedLength,
    /// Announces a payload of 4 bytes, which is no reading.
    MalformedLength,
    /// Connects and sends nothing.
    Silent,
}

const MISBEHAVIOURS: [Misbehaviour; 4] = [
    Misbehaviour::LeavesMidFrame,
    Misbehaviour::OversizedLength,
    Misbehaviour::MalformedLength,
    Misbehaviour::Silent,
];

/// What a misbehaving client saw.
#[derive(Debug)]
struct Seen {
    /// The client's own address, which the server's report names.
    me: SocketAddr,
    /// How long after its last byte the server closed the connection (`None`
    /// for the client that leaves by itself).
    closed_after: Option<Duration>,
}

async fn misbehave(address: SocketAddr, how: Misbehaviour) -> io::Result<Seen> {
    let mut stream = patiently(TcpStream::connect(address)).await?;
    let me = stream.local_addr()?;
    let whole = |sequence| {
        Reading {
            sensor: 0, // no well-behaved sensor has number 0
            sequence,
            millidegrees: 0,
        }
        .encode()
    };
    let bytes = match how {
        Misbehaviour::LeavesMidFrame => [&whole(1)[..], &whole(2)[..7]].concat(),
        Misbehaviour::OversizedLength => vec![0xff, 0xff, 1, 2, 3],
        Misbehaviour::MalformedLength => vec![0x00, 0x04, 1, 2, 3, 4],
        Misbehaviour::Silent => Vec::new(),
    };
    stream.write_all(&bytes).await?;
    if how == Misbehaviour::LeavesMidFrame {
        let closed_after = None; // dropping the stream disconnects
        return Ok(Seen { me, closed_after });
    }
    let last_byte = Instant::now();
    let mut byte = [0u8; 1];
    match patiently(stream.read(&mut byte)).await {
        Ok(0) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        Ok(_) => return Err(io::Error::other("the server sent bytes; it never should")),
        Err(e) => return Err(e),
    }
    let closed_after = Some(last_byte.elapsed());
    Ok(Seen { me, closed_after })
}

// ANCHOR: flooding
/// What a flooding client did.
#[derive(Debug)]
struct Flooded {
    /// The client's own address, which the server's report names.
    me: SocketAddr,
    /// Frames written, every one of them whole.
    frames: u64,
    /// How long it kept its socket full.
    flooding: Duration,
}

/// A client that keeps its socket full: it writes frames of sensor 0 in
/// batches of 64 KiB, each as soon as the last one is taken, until `stop` is
/// set. It says when its first mebibyte is written (the flood is on), then
/// closes its side and waits for the server to close the other.
async fn flood(
    address: SocketAddr,
    flooding: oneshot::Sender<()>,
    stop: Arc<AtomicBool>,
) -> io::Result<Flooded> {
    const BATCH: usize = 64 * 1024 / FRAME_LEN;
    let mut stream = patiently(TcpStream::connect(address)).await?;
    stream.set_nodelay(true)?;
    let me = stream.local_addr()?;
    let batch: Vec<u8> = (1..=BATCH as u32)
        .flat_map(|sequence| {
            Reading {
                sensor: 0, // no well-behaved sensor has number 0
                sequence,
                millidegrees: 0,
            }
            .encode()
        })
        .collect();
    let mut flooding = Some(flooding);
    let mut frames = 0u64;
    let started = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        patiently(stream.write_all(&batch)).await?;
        frames += BATCH as u64;
        if frames * FRAME_LEN as u64 >= 1 << 20 {
            if let Some(flooding) = flooding.take() {
                let _ = flooding.send(());
            }
        }
    }
    let flooding = started.elapsed();
    patiently(stream.shutdown()).await?;
    let mut byte = [0u8; 1];
    match patiently(stream.read(&mut byte)).await? {
        0 => Ok(Flooded {
            me,
            frames,
            flooding,
        }),
        _ => Err(io::Error::other("the server sent bytes; it never should")),
    }
}
// ANCHOR_END: flooding

/// What the server must report for each misbehaving client.
fn as_expected(how: Misbehaviour, end: &End, read_timeout: Duration) -> bool {
    match (how, &end.how) {
        (Misbehaviour::LeavesMidFrame, Err(Dropped::BadFrame(e))) => {
            end.readings == 1 && *e == FrameError::Truncated { received: 7 }
        }
        (Misbehaviour::OversizedLength, Err(Dropped::BadFrame(e))) => {
            end.readings == 0 && *e == FrameError::Oversized { length: 65_535 }
        }
        (Misbehaviour::MalformedLength, Err(Dropped::BadFrame(e))) => {
            end.readings == 0 && *e == FrameError::Malformed { length: 4 }
        }
        (Misbehaviour::Silent, Err(Dropped::Silent(t))) => end.readings == 0 && *t == read_timeout,
        _ => false,
    }
}
// ANCHOR_END: misbehaving

/// What one run found.
#[derive(Debug)]
struct Report {
    load: Load,
    address: SocketAddr,
    sensors_failed: Vec<String>,
    peak_open: usize,
    all_connected_after: Duration,
    sent: usize,
    decoded: usize,
    lost: usize,
    duplicated: u64,
    strays: u64,
    ended_cleanly: usize,
    latencies: Vec<Duration>,
    wall: Duration,
    misbehaving: Vec<(Misbehaviour, io::Result<Seen>)>,
    flooders: Vec<io::Result<Flooded>>,
    ends: HashMap<SocketAddr, End>,
}

// ANCHOR: run
/// Runs the server and every client, and tallies the ledger.
fn run(load: Load) -> io::Result<Report> {
    let started = Instant::now();
    let server = runtime("server")?;
    let clients = runtime("clients")?;
    let (ends, mut ended) = unbounded_channel();
    let ledger = Arc::new(Ledger::new(load, ends));
    let listener = server.block_on(async { listen(SocketAddr::from(([127, 0, 0, 1], 0))) })?;
    let address = listener.local_addr()?;
    let sink: Arc<dyn Sink> = ledger.clone();
    server.spawn(serve(listener, IoThread::start()?, load.read_timeout, sink));

    let (sensors, misbehaving, flooders, ends) = clients.block_on(async {
        // The flood starts first, and the sensors only once it is on.
        let stop = Arc::new(AtomicBool::new(false));
        let mut flooding = Vec::new();
        let flooders: Vec<_> = (0..load.flooders)
            .map(|_| {
                let (on, is_on) = oneshot::channel();
                flooding.push(is_on);
                tokio::spawn(flood(address, on, Arc::clone(&stop)))
            })
            .collect();
        for is_on in flooding {
            let _ = patiently(async { Ok(is_on.await) }).await;
        }
        let all_connected = Arc::new(Barrier::new(usize::from(load.sensors)));
        let bad: Vec<_> = MISBEHAVIOURS
            .iter()
            .map(|&how| tokio::spawn(misbehave(address, how)))
            .collect();
        let good: Vec<_> = (1..=load.sensors)
            .map(|id| {
                let sensor = sensor(address, id, ledger.clone(), all_connected.clone());
                tokio::spawn(sensor)
            })
            .collect();
        let mut sensors = Vec::new();
        for (id, task) in (1..=load.sensors).zip(good) {
            sensors.push((id, task.await.map_err(io::Error::other).and_then(|r| r)));
        }
        let mut misbehaving = Vec::new();
        for (how, task) in MISBEHAVIOURS.iter().zip(bad) {
            misbehaving.push((*how, task.await.map_err(io::Error::other).and_then(|r| r)));
        }
        stop.store(true, Ordering::Relaxed);
        let mut flooded = Vec::new();
        for task in flooders {
            flooded.push(task.await.map_err(io::Error::other).and_then(|r| r));
        }
        // Every connection's end, as the server reports it.
        let mut ends = HashMap::new();
        while ends.len() < usize::from(load.sensors) + MISBEHAVIOURS.len() + load.flooders {
            match time::timeout(CLIENT_PATIENCE, ended.recv()).await {
                Ok(Some(end)) => ends.insert(end.peer, end),
                _ => break,
            };
        }
        (sensors, misbehaving, flooded, ends)
    });
    let wall = started.elapsed();
    clients.shutdown_timeout(Duration::from_secs(1));
    server.shutdown_timeout(Duration::from_secs(1));
    Ok(tally(
        &ledger,
        address,
        sensors,
        (misbehaving, flooders),
        ends,
        wall,
    ))
}

/// A multi-threaded runtime of two workers, named after its side.
fn runtime(name: &str) -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(SERVER_WORKERS)
        .thread_name(name)
        .enable_all()
        .build()
}
// ANCHOR_END: run

/// What the misbehaving and the flooding clients saw.
type OtherClients = (
    Vec<(Misbehaviour, io::Result<Seen>)>,
    Vec<io::Result<Flooded>>,
);

fn tally(
    ledger: &Ledger,
    address: SocketAddr,
    sensors: Vec<(u16, io::Result<()>)>,
    (misbehaving, flooders): OtherClients,
    ends: HashMap<SocketAddr, End>,
    wall: Duration,
) -> Report {
    let (mut sent, mut decoded, mut lost, mut duplicated) = (0, 0, 0, 0);
    let mut latencies = Vec::new();
    for slot in 0..ledger.copies.len() {
        let sent_at = ledger.sent_at[slot].load(Ordering::Relaxed);
        let copies = ledger.copies[slot].load(Ordering::Relaxed);
        if sent_at > 0 {
            sent += 1;
        }
        if copies > 0 {
            decoded += 1;
            duplicated += u64::from(copies - 1);
            let decoded_at = ledger.decoded_at[slot].load(Ordering::Relaxed);
            latencies.push(Duration::from_nanos(decoded_at.saturating_sub(sent_at)));
        } else if sent_at > 0 {
            lost += 1;
        }
    }
    latencies.sort();
    let ended_cleanly = ends
        .values()
        .filter(|e| e.how.is_ok() && e.readings == u64::from(ledger.load.frames))
        .count();
    Report {
        load: ledger.load,
        address,
        sensors_failed: sensors
            .into_iter()
            .filter_map(|(id, r)| r.err().map(|e| format!("sensor {id}: {e}")))
            .collect(),
        peak_open: ledger.peak_open.load(Ordering::Relaxed),
        all_connected_after: Duration::from_nanos(ledger.all_connected_at.load(Ordering::Relaxed)),
        sent,
        decoded,
        lost,
        duplicated,
        strays: ledger.strays.load(Ordering::Relaxed),
        ended_cleanly,
        latencies,
        wall,
        misbehaving,
        flooders,
        ends,
    }
}

impl Report {
    /// The latency below which `percent` of the frames were decoded.
    fn percentile(&self, percent: usize) -> Duration {
        let last = self.latencies.len().saturating_sub(1);
        self.latencies
            .get(last * percent / 100)
            .copied()
            .unwrap_or_default()
    }

    /// What the server reported for a misbehaving client's connection.
    fn end_of(&self, client: &io::Result<Seen>) -> Option<&End> {
        client
            .as_ref()
            .ok()
            .and_then(|seen| self.ends.get(&seen.me))
    }

    /// Everything that went wrong; empty when the run passed.
    fn problems(&self) -> Vec<String> {
        let load = self.load;
        let expected = usize::from(load.sensors) * load.frames as usize;
        let mut problems = self.sensors_failed.clone();
        if self.sent != expected {
            problems.push(format!("{} frames sent, {expected} expected", self.sent));
        }
        if self.lost > 0 || self.duplicated > 0 || self.strays > 0 {
            problems.push(format!(
                "{} frames lost, {} duplicated, {} that no sensor sent",
                self.lost, self.duplicated, self.strays
            ));
        }
        if self.ended_cleanly != usize::from(load.sensors) {
            problems.push(format!(
                "{} of {} sensors ended cleanly with all their frames",
                self.ended_cleanly, load.sensors
            ));
            let misbehaving: Vec<SocketAddr> = self
                .misbehaving
                .iter()
                .filter_map(|(_, client)| client.as_ref().ok().map(|seen| seen.me))
                .collect();
            let mut reasons: HashMap<String, usize> = HashMap::new();
            for end in self.ends.values() {
                if let (Err(why), false) = (&end.how, misbehaving.contains(&end.peer)) {
                    *reasons.entry(why.to_string()).or_default() += 1;
                }
            }
            for (why, count) in reasons {
                problems.push(format!("the server dropped {count} sensors: {why}"));
            }
        }
        if self.peak_open < usize::from(load.sensors) {
            problems.push(format!(
                "at most {} connections were open at once, not {}",
                self.peak_open, load.sensors
            ));
        }
        for flooder in &self.flooders {
            match flooder {
                Err(e) => problems.push(format!("a flooding client failed: {e}")),
                Ok(flooded) => match self.ends.get(&flooded.me) {
                    Some(End {
                        readings,
                        how: Ok(()),
                        ..
                    }) if *readings == flooded.frames => {}
                    end => problems.push(format!(
                        "a flooding client sent {} frames; the server reported {end:?}",
                        flooded.frames
                    )),
                },
            }
        }
        for (how, client) in &self.misbehaving {
            match (client, self.end_of(client)) {
                (Err(e), _) => problems.push(format!("{how:?}: the client failed: {e}")),
                (Ok(_), None) => problems.push(format!("{how:?}: the server never ended it")),
                (Ok(seen), Some(end)) => {
                    if !as_expected(*how, end, load.read_timeout) {
                        problems.push(format!("{how:?}: unexpected end {:?}", end.how));
                    }
                    if *how != Misbehaviour::LeavesMidFrame && seen.closed_after.is_none() {
                        problems.push(format!("{how:?}: the client never saw the close"));
                    }
                }
            }
        }
        problems
    }
}

/// A duration as a person reads it: `850µs`, `4.2ms`, `2.01s`.
fn show(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d < Duration::from_millis(1) {
        format!("{}µs", d.as_micros())
    } else if d < Duration::from_secs(1) && d.subsec_micros().is_multiple_of(1_000) {
        format!("{}ms", d.as_millis())
    } else if d < Duration::from_secs(1) {
        format!("{:.1}ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.2}s", d.as_secs_f64())
    }
}

/// `1 reading`, `0 readings`.
fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let load = self.load;
        writeln!(
            f,
            "{} sensors × {} frames, one frame every {} each, {} misbehaving clients, \
             and {} clients that keep their socket full",
            load.sensors,
            load.frames,
            show(load.interval),
            MISBEHAVIOURS.len(),
            load.flooders
        )?;
        writeln!(
            f,
            "server on {}, read timeout {}",
            self.address,
            show(load.read_timeout)
        )?;
        writeln!(
            f,
            "every sensor connected after  {}",
            show(self.all_connected_after)
        )?;
        writeln!(f, "frames sent                   {}", self.sent)?;
        writeln!(f, "frames decoded                {}", self.decoded)?;
        writeln!(f, "lost                          {}", self.lost)?;
        writeln!(f, "duplicated                    {}", self.duplicated)?;
        writeln!(f, "decoded but never sent        {}", self.strays)?;
        writeln!(
            f,
            "sensors that ended cleanly    {} of {}",
            self.ended_cleanly, load.sensors
        )?;
        writeln!(
            f,
            "send to decode                p50 {}, p99 {}, max {}",
            show(self.percentile(50)),
            show(self.percentile(99)),
            show(self.latencies.last().copied().unwrap_or_default())
        )?;
        writeln!(f, "wall time                     {}", show(self.wall))?;
        writeln!(f, "flooding clients:")?;
        for flooder in &self.flooders {
            match flooder {
                Ok(flooded) => {
                    let decoded = match self.ends.get(&flooded.me) {
                        Some(End {
                            readings,
                            how: Ok(()),
                            ..
                        }) if *readings == flooded.frames => {
                            "every frame it sent decoded".to_string()
                        }
                        Some(end) => format!("the server reported {:?}", end.how),
                        None => "never ended by the server".to_string(),
                    };
                    writeln!(
                        f,
                        "  kept its socket full for {}: {decoded}",
                        show(flooded.flooding)
                    )?;
                }
                Err(e) => writeln!(f, "  failed: {e}")?,
            }
        }
        writeln!(f, "misbehaving clients:")?;
        for (how, client) in &self.misbehaving {
            let name = match how {
                Misbehaviour::LeavesMidFrame => "leaves mid-frame",
                Misbehaviour::OversizedLength => "oversized length",
                Misbehaviour::MalformedLength => "malformed length",
                Misbehaviour::Silent => "silent",
            };
            let (verdict, why) = match self.end_of(client) {
                Some(End {
                    readings,
                    how: Err(why),
                    ..
                }) => (
                    format!("dropped after {}", plural(*readings, "reading")),
                    why.to_string(),
                ),
                Some(End { readings, .. }) => (
                    format!("ended after {}", plural(*readings, "reading")),
                    "no error".to_string(),
                ),
                None => ("never ended by the server".to_string(), String::new()),
            };
            let seen = match client {
                Ok(Seen {
                    closed_after: Some(after),
                    ..
                }) => format!(", closed {} after its last byte", show(*after)),
                Ok(_) => String::new(),
                Err(e) => format!(", and the client failed: {e}"),
            };
            writeln!(f, "  {name}: {verdict}{seen}")?;
            writeln!(f, "    {why}")?;
        }
        Ok(())
    }
}

// ANCHOR: open_files
/// Raises this process's limit of open files to `needed`, within the hard
/// limit. Each connection costs two descriptors here, the sensor's and the
/// server's, and the usual soft limit of 1,024 is too low for a thousand.
#[cfg(unix)]
fn allow_open_files(needed: u64) -> io::Result<()> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let needed = needed as libc::rlim_t;
    if limit.rlim_cur >= needed {
        return Ok(());
    }
    if limit.rlim_max != libc::RLIM_INFINITY && limit.rlim_max < needed {
        return Err(io::Error::other(format!(
            "this load needs {needed} open files and the hard limit is {}: \
             raise it (`ulimit -Hn`), or run fewer sensors: \
             `cargo run -p listing-11-03 -- 400`",
            limit.rlim_max
        )));
    }
    limit.rlim_cur = needed;
    // SAFETY: setrlimit only reads the struct it is given.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
// ANCHOR_END: open_files

#[cfg(not(unix))]
fn allow_open_files(_needed: u64) -> io::Result<()> {
    Ok(())
}

/// The load asked for on the command line: `[sensors] [frames]`.
fn load_from(mut arguments: impl Iterator<Item = String>) -> Result<Load, String> {
    let mut load = LOAD;
    if let Some(sensors) = arguments.next() {
        load.sensors = sensors.parse().ok().filter(|&n| n > 0).ok_or(format!(
            "`{sensors}` is not a number of sensors (1 to 65535)"
        ))?;
    }
    if let Some(frames) = arguments.next() {
        load.frames = frames
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .ok_or(format!("`{frames}` is not a number of frames"))?;
    }
    Ok(load)
}

fn main() -> ExitCode {
    let load = match load_from(std::env::args().skip(1)) {
        Ok(load) => load,
        Err(why) => {
            eprintln!("{why}");
            return ExitCode::FAILURE;
        }
    };
    let clients = u64::from(load.sensors) + (MISBEHAVIOURS.len() + load.flooders) as u64;
    let descriptors = 2 * clients + 64;
    if let Err(e) = allow_open_files(descriptors) {
        eprintln!("{e}");
        return ExitCode::FAILURE;
    }
    let report = awd::watchdog::run("load test", RUN_LIMIT, move || run(load));
    match report {
        Ok(report) => {
            print!("{report}");
            let problems = report.problems();
            for problem in &problems {
                eprintln!("problem: {problem}");
            }
            if problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("the load test could not run: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::{watch, Outcome, TestLimit};

    #[test]
    fn a_thousand_sensors_lose_nothing_and_every_misbehaving_client_is_dropped() {
        let _limit = TestLimit::seconds(120);
        const { assert!(LOAD.sensors >= 1_000 && LOAD.frames >= 100) };
        const { assert!(LOAD.flooders >= SERVER_WORKERS) };
        let clients = u64::from(LOAD.sensors) + (MISBEHAVIOURS.len() + LOAD.flooders) as u64;
        allow_open_files(2 * clients + 64).expect("enough file descriptors");
        let report = match watch("load test", RUN_LIMIT, || run(LOAD)) {
            Outcome::Completed(report) => report.expect("the load test runs"),
            other => panic!("the load test did not finish: {other:?}"),
        };
        println!("{report}");
        assert_eq!(report.problems(), Vec::<String>::new());
        assert_eq!((report.sent, report.decoded), (100_000, 100_000));
        assert!(report.wall < RUN_LIMIT);
    }

    #[test]
    fn the_server_here_is_listing_11_2s_server() {
        let _limit = TestLimit::seconds(5);
        // The markers are built, not written out, so that mdBook does not
        // take these lines for anchors.
        let marker = |end: &str| format!("// ANCHOR{end}: server\n");
        let region = |text: &str| {
            let start = text.find(&marker("")).expect("the region's start");
            let end = text.find(&marker("_END")).expect("the region's end");
            text[start..end].to_string()
        };
        let here = include_str!("main.rs");
        let there = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../listing-11-02/src/main.rs"
        ))
        .expect("Listing 11-2's file");
        assert!(
            region(here) == region(&there),
            "the server in this file differs from Listing 11-2's: copy it again"
        );
    }

    #[test]
    fn the_load_can_be_chosen_on_the_command_line() {
        let _limit = TestLimit::seconds(5);
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let load = load_from(args(&["200", "50"]).into_iter()).unwrap();
        assert_eq!((load.sensors, load.frames), (200, 50));
        let load = load_from(args(&[]).into_iter()).unwrap();
        assert_eq!((load.sensors, load.frames), (1_000, 100));
        assert!(load_from(args(&["0"]).into_iter()).is_err());
        assert!(load_from(args(&["70000"]).into_iter()).is_err());
    }
}
