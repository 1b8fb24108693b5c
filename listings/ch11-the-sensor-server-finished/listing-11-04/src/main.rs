//! A stream of completions into a bounded channel: receive callbacks on the
//! I/O thread push one sensor's readings into a `tokio::sync::mpsc` channel
//! of capacity 1, and a task takes them out. What the callback does when the
//! channel is full decides whether the program can deadlock: waiting for
//! room (`blocking_send`) is M2, dropping and counting (`try_send`) is not.

use std::io::{self, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use awd::bridge;
use awd::frame::{Decoder, Reading};
use awd::socket::{loopback_pair, CallbackSocket, IoThread, Received, Start, IO_THREAD_NAME};
use awd::waits::{self, WaitsFor};
use awd::watchdog::DEADLOCK_LIMIT;
use tokio::sync::mpsc::{self, error::TrySendError};

/// The thread that runs the consumer (the watchdog's scenario thread).
const CONSUMER: &str = "server";

// ANCHOR: feed
/// What a receive callback does with a reading when the channel is full.
#[derive(Clone, Copy, Debug)]
pub enum Overflow {
    /// Wait on the I/O thread until the consumer makes room.
    Wait,
    /// Drop the reading and count it; the I/O thread never waits.
    DropAndCount,
}

/// One sensor's readings, pushed by receive callbacks into a bounded channel.
pub struct Feed {
    socket: CallbackSocket,
    decoder: Mutex<Decoder>,
    readings: mpsc::Sender<Reading>,
    overflow: Overflow,
    counts: Arc<Counts>,
}

/// How many readings went into the channel, and how many were dropped.
#[derive(Debug, Default)]
pub struct Counts {
    delivered: AtomicUsize,
    dropped: AtomicUsize,
}

impl Feed {
    /// Keeps one receive pending until the stream ends; the channel closes
    /// when the last receive's callback drops the feed.
    pub fn receive_next(self: &Arc<Self>) {
        loop {
            let feed = Arc::clone(self);
            let start = self.socket.receive(vec![0; 256], move |received| {
                // On the I/O thread.
                if feed.push(received) {
                    feed.receive_next();
                }
            });
            match start {
                Start::Pending => return,
                Start::Ready(received) => {
                    if !self.push(received) {
                        return;
                    }
                }
            }
        }
    }

    /// Decodes what arrived and pushes every whole reading into the channel.
    /// False when the stream is over: ended, failed, malformed, or nobody
    /// takes readings any more.
    fn push(&self, received: Received) -> bool {
        let mut batch = Vec::new();
        {
            let Some(bytes) = received.bytes().filter(|b| !b.is_empty()) else {
                return false;
            };
            let mut decoder = self.decoder.lock().unwrap_or_else(PoisonError::into_inner);
            decoder.push(bytes);
            while let Some(next) = decoder.next_reading() {
                match next {
                    Ok(reading) => batch.push(reading),
                    Err(_) => return false,
                }
            }
        }
        for reading in batch {
            let pushed = match self.overflow {
                Overflow::Wait => {
                    let room = WaitsFor::Thread(CONSUMER.into());
                    let sent = waits::blocking("`Sender::blocking_send`", room, || {
                        self.readings.blocking_send(reading)
                    });
                    sent.is_ok()
                }
                Overflow::DropAndCount => match self.readings.try_send(reading) {
                    Ok(()) => true,
                    Err(TrySendError::Full(_)) => {
                        self.counts.dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    Err(TrySendError::Closed(_)) => false,
                },
            };
            if !pushed {
                return false;
            }
            self.counts.delivered.fetch_add(1, Ordering::Relaxed);
        }
        true
    }
}

/// Pairs each indoor reading with the next outdoor one, which it receives
/// through the bridge, until either sensor's stream ends.
async fn pair(
    mut indoor: mpsc::Receiver<Reading>,
    outdoor: &CallbackSocket,
) -> io::Result<Vec<(Reading, Reading)>> {
    let mut pairs = Vec::new();
    let mut decoder = Decoder::new();
    let mut buffer = vec![0; 256];
    while let Some(inside) = indoor.recv().await {
        let outside = loop {
            if let Some(reading) = decoder.next_reading() {
                break reading?;
            }
            let received = bridge::receive(outdoor, buffer).await?;
            let n = received.result?;
            if n == 0 {
                return Ok(pairs);
            }
            decoder.push(&received.buffer[..n]);
            buffer = received.buffer;
        };
        pairs.push((inside, outside));
    }
    Ok(pairs)
}
// ANCHOR_END: feed

/// What a run that finished found.
#[derive(Debug)]
struct Report {
    pairs: Vec<(Reading, Reading)>,
    delivered: usize,
    dropped: usize,
}

/// How many readings the indoor sensor sends, all in one write.
const INDOOR_READINGS: u32 = 3;

/// The indoor sensor sends three readings at once, which one callback
/// delivers; the outdoor sensor sends one reading, once the consumer's
/// receive for it is pending, and closes.
fn scenario(overflow: Overflow) -> io::Result<Report> {
    // Recorded before the I/O thread exists, so that the watchdog's report
    // follows the threads in the same order on every run.
    drop(waits::activity("starting the scenario"));
    let io = IoThread::start()?;
    let (indoor, mut indoor_sensor) = loopback_pair(&io)?;
    let (outdoor, mut outdoor_sensor) = loopback_pair(&io)?;
    let (sender, receiver) = mpsc::channel(1);
    let counts = Arc::new(Counts::default());
    // Only the callbacks keep the feed, so the channel closes with the
    // indoor sensor's stream.
    Arc::new(Feed {
        socket: indoor.clone(),
        decoder: Mutex::new(Decoder::new()),
        readings: sender,
        overflow,
        counts: Arc::clone(&counts),
    })
    .receive_next();
    assert!(indoor.wait_for_pending_receive(Duration::from_secs(5)));
    let frames: Vec<u8> = (1..=INDOOR_READINGS)
        .flat_map(|sequence| reading(1, sequence, 21_500).encode())
        .collect();
    indoor_sensor.write_all(&frames)?;
    indoor_sensor.shutdown(Shutdown::Write)?;

    let watched = outdoor.clone();
    let outdoor_sends =
        thread::Builder::new()
            .name("outdoor-sensor".into())
            .spawn(move || -> io::Result<()> {
                if !watched.wait_for_pending_receive(Duration::from_secs(5)) {
                    return Err(io::Error::other(
                        "the consumer never waited for the outdoor sensor",
                    ));
                }
                outdoor_sensor.write_all(&reading(2, 1, 4_250).encode())?;
                outdoor_sensor.shutdown(Shutdown::Write)
            })?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Every event this runtime waits for is a completion of `awd-io`.
    let io_thread = WaitsFor::Thread(IO_THREAD_NAME.into());
    let pairs = waits::blocking("`Runtime::block_on`", io_thread, || {
        runtime.block_on(pair(receiver, &outdoor))
    })?;
    outdoor_sends
        .join()
        .map_err(|_| io::Error::other("the outdoor sensor panicked"))??;
    Ok(Report {
        pairs,
        delivered: counts.delivered.load(Ordering::Relaxed),
        dropped: counts.dropped.load(Ordering::Relaxed),
    })
}

fn reading(sensor: u16, sequence: u32, millidegrees: i32) -> Reading {
    Reading {
        sensor,
        sequence,
        millidegrees,
    }
}

/// True when the program runs with `-- <flag>`.
fn run_with(flag: &str) -> bool {
    std::env::args().any(|a| a == flag)
}

fn main() {
    let overflow = if run_with("--try-send") {
        println!("when the channel is full, the callback drops the reading (`try_send`)");
        Overflow::DropAndCount
    } else {
        println!("when the channel is full, the callback waits for room (`blocking_send`)");
        Overflow::Wait
    };
    let report = awd::watchdog::run(CONSUMER, DEADLOCK_LIMIT, move || scenario(overflow));
    match report {
        Ok(report) => {
            for (inside, outside) in &report.pairs {
                println!(
                    "indoor #{} ({} °C) paired with outdoor #{} ({} °C)",
                    inside.sequence,
                    inside.celsius(),
                    outside.sequence,
                    outside.celsius()
                );
            }
            let accounted = report.delivered + report.dropped == INDOOR_READINGS as usize;
            println!(
                "the I/O thread never waited; {INDOOR_READINGS} indoor readings, each {}",
                if accounted {
                    "delivered or counted as dropped"
                } else {
                    "NOT accounted for"
                }
            );
        }
        Err(e) => {
            eprintln!("the run failed: {e}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::{watch, TestLimit};

    #[test]
    fn waiting_for_room_on_the_io_thread_deadlocks_every_time() {
        let _limit = TestLimit::seconds(20);
        for _ in 0..3 {
            let outcome = watch(CONSUMER, DEADLOCK_LIMIT, || scenario(Overflow::Wait));
            assert!(outcome.is_deadlock(), "{outcome:?}");
        }
    }

    #[test]
    fn dropping_on_overflow_never_waits_and_counts_every_reading() {
        let _limit = TestLimit::seconds(20);
        for _ in 0..10 {
            let outcome = watch(CONSUMER, Duration::from_secs(5), || {
                scenario(Overflow::DropAndCount)
            });
            let report = outcome.completed().expect("finished").expect("no error");
            assert_eq!(report.pairs.len(), 1, "{report:?}");
            assert_eq!(
                (report.pairs[0].0.sequence, report.pairs[0].1.sensor),
                (1, 2)
            );
            assert_eq!(
                report.delivered + report.dropped,
                INDOOR_READINGS as usize,
                "{report:?}"
            );
        }
    }
}
