//! .NET's default, reproduced: the I/O thread only posts each completion to
//! a thread pool, and the pool runs `set_result` with its inline
//! continuation. The same blocking continuation as Listing 3-1 then takes a
//! pool thread, the body's completion waits in the pool's queue, and the
//! program stalls until the pool adds a thread: a starvation, not a deadlock.

use std::io::{self, Write};
use std::sync::mpsc::{self, Sender};
use std::time::Duration;

use awd::completion_source::{completion_source, Abandoned, Completion, Continuations};
use awd::frame::{payload_length, Reading, HEADER_LEN, READING_LEN};
use awd::pool::{Pool, PoolConfig};
use awd::socket::{loopback_pair, CallbackSocket, IoThread, Received, Start};
use awd::waits::{self, WaitsFor};
use awd::watchdog::DEADLOCK_LIMIT;

// ANCHOR: starvation
/// Starts a receive into `buffer` and returns its completion. The I/O
/// thread's callback does not complete it: it posts `set_result` to `pool`
/// and returns, as .NET's socket engine hands completions to its pool.
pub fn receive_completion(
    pool: &Pool,
    socket: &CallbackSocket,
    buffer: Vec<u8>,
) -> Completion<Received> {
    let (source, completion) = completion_source(Continuations::Inline);
    let completer = source.clone();
    let pool = pool.clone();
    let start = socket.receive(buffer, move |received| {
        pool.post(move || {
            let _ = completer.set_result(received);
        });
    });
    match start {
        Start::Ready(received) => {
            let _ = source.set_result(received);
        }
        Start::Pending => {
            if let Some(id) = waits::last_receive_started_here() {
                source.completes(WaitsFor::Receive(id));
            }
        }
    }
    completion
}

/// Listing 3-1's consumer: the continuation receives the body and waits.
fn receive_reading(pool: Pool, socket: CallbackSocket, done: Sender<io::Result<Reading>>) {
    let header = receive_completion(&pool, &socket, vec![0; HEADER_LEN]);
    header.on_completed(move |header| {
        // Inline mode: this runs inside `set_result`, on a pool thread.
        let body = receive_completion(&pool, &socket, vec![0; READING_LEN]);
        let body = body.wait(); // blocks this pool thread until the body arrives
        let _ = done.send(decode(header, body));
    });
}
// ANCHOR_END: starvation

/// The reading in a header and a body, or why not.
fn decode(
    header: Result<Received, Abandoned>,
    body: Result<Received, Abandoned>,
) -> io::Result<Reading> {
    let header = header.map_err(io::Error::other)?;
    let body = body.map_err(io::Error::other)?;
    let header: [u8; HEADER_LEN] = header
        .bytes()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| io::Error::other("a short header"))?;
    payload_length(header)?;
    let body = body.bytes().ok_or_else(|| io::Error::other("no body"))?;
    Ok(Reading::decode(body)?)
}

/// The pool: one thread to start with (a pool whose other threads are all
/// busy), one more per half second of starvation, at most four.
fn pool(min_threads: usize) -> Pool {
    Pool::new(
        "pool",
        PoolConfig {
            min_threads,
            max_threads: 4,
            compensate_blocking_waits: false,
            numbered_threads: true,
        },
    )
}

/// Listing 3-1's sensor: a header, then the body once the server waits for
/// it. `min_threads` is the pool's minimum (`-- --min-threads 2` raises it).
fn scenario(min_threads: usize) -> io::Result<Reading> {
    let io = IoThread::start()?;
    let (socket, mut sensor) = loopback_pair(&io)?;
    let frame = Reading {
        sensor: 7,
        sequence: 1,
        millidegrees: 21_500,
    }
    .encode();
    let (done, result) = mpsc::channel();

    receive_reading(pool(min_threads), socket.clone(), done);
    let header_receive = socket.last_receive().expect("the header's receive started");
    sensor.write_all(&frame[..HEADER_LEN])?;
    assert!(socket.wait_for_pending_receive_after(header_receive, Duration::from_secs(5)));
    sensor.write_all(&frame[HEADER_LEN..])?;

    let waits_for = WaitsFor::Thread("pool-1".into());
    waits::blocking("`Receiver::recv`", waits_for, || result.recv()).map_err(io::Error::other)?
}

/// The pool's minimum: 1, or the number after `--min-threads`.
fn min_threads() -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--min-threads")
        .and_then(|at| args.get(at + 1))
        .map(|n| n.parse().expect("--min-threads takes a number"))
        .unwrap_or(1)
}

fn main() {
    let min = min_threads();
    println!("completions go to a pool of {min} thread(s) that adds one per 500 ms of starvation");
    let reading = awd::watchdog::run("server", DEADLOCK_LIMIT, move || scenario(min));
    println!("received {reading:?}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::{watch, Outcome, TestLimit};

    #[test]
    fn the_pool_starves_until_it_adds_a_thread() {
        let _limit = TestLimit::seconds(30);
        for _ in 0..2 {
            let outcome = watch("server", DEADLOCK_LIMIT, || scenario(1));
            let Outcome::Starved {
                value,
                stalled,
                finished_after,
                added,
            } = outcome
            else {
                panic!("expected a starvation, got {outcome:?}");
            };
            assert_eq!(value.expect("the reading").millidegrees, 21_500);
            // The stall: the continuation blocks pool-1, the body's
            // completion waits in the queue behind it.
            let said = |text: &str| stalled.lines.iter().any(|l| l.contains(text));
            assert!(
                said("thread `pool-1`, inside a continuation run inline by `set_result`, is blocked in `Completion::wait`"),
                "{stalled}"
            );
            assert!(said("pool `pool` has 1 work item(s) queued"), "{stalled}");
            assert!(said("=> starvation"), "{stalled}");
            // The end of the stall: the gate added pool-2, after half a second.
            assert_eq!(added.len(), 1, "{added:?}");
            assert_eq!(added[0].1.thread, "pool-2");
            assert!(added[0].0 >= awd::pool::GATE_PERIOD, "{added:?}");
            assert!(finished_after >= added[0].0);
        }
    }

    #[test]
    fn enough_minimum_threads_means_no_stall() {
        let _limit = TestLimit::seconds(20);
        let outcome = watch("server", DEADLOCK_LIMIT, || scenario(2));
        let Outcome::Completed(reading) = outcome else {
            panic!("expected no stall, got {outcome:?}");
        };
        assert_eq!(reading.expect("the reading").millidegrees, 21_500);
    }
}
