//! Every fix against both deadlocks: each cell of the table is a scenario
//! run under the watchdog, and the table is printed from what the runs did.
//!
//! - M1: a synchronous handler on a UI thread's message loop waits for one
//!   reading (Chapter 4).
//! - M2: the code after a frame's header waits for its body, wherever the
//!   fix makes that code run (Chapter 3).

use std::fmt;
use std::io::{self, Write};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use awd::bridge::{receive, receive_completion};
use awd::completion_source::{completion_source, Completion, Continuations};
use awd::frame::{Reading, FRAME_LEN, HEADER_LEN, READING_LEN};
use awd::message_loop::{result_of, MessageLoop};
use awd::socket::{loopback_pair, CallbackSocket, IoThread, Received, Start, IO_THREAD_NAME};
use awd::waits::{self, WaitsFor};
use awd::watchdog::{watch, Outcome, DEADLOCK_LIMIT};
use tokio::io::AsyncReadExt;

const WAIT: Duration = Duration::from_secs(5);

/// The fixes of Part III, and no fix at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(clippy::enum_variant_names)] // "no fix" is one of the fixes compared
enum Fix {
    /// The code of Chapters 3 and 4.
    NoFix,
    /// Chapter 6: the callback hands `set_result` to a new thread.
    HandOff,
    /// Chapter 7: the completion source never runs continuations itself.
    AsynchronousContinuations,
    /// Chapter 8: tokio's own socket, no completion source.
    NativeTokio,
    /// Chapter 8: nothing blocks; the waiting code awaits.
    DontBlock,
    /// Chapter 8: the blocking call polls the future itself.
    PollWhereYouBlock,
}

impl fmt::Display for Fix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fix::NoFix => "no fix",
            Fix::HandOff => "hand the completion off (ch. 6)",
            Fix::AsynchronousContinuations => "asynchronous continuations (ch. 7)",
            Fix::NativeTokio => "tokio's own socket (ch. 8)",
            Fix::DontBlock => "don't block: await (ch. 4, 8)",
            Fix::PollWhereYouBlock => "poll where you block (ch. 8)",
        })
    }
}

/// How a scenario ended, as the table says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Completes,
    Deadlocks,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Completes => "completes",
            Verdict::Deadlocks => "deadlocks",
        })
    }
}

/// What the book claims for each fix: (M1, M2). The tests hold the runs to
/// it; `main` prints what the runs did.
const CLAIMED: [(Fix, Verdict, Verdict); 6] = [
    (Fix::NoFix, Verdict::Deadlocks, Verdict::Deadlocks),
    (Fix::HandOff, Verdict::Deadlocks, Verdict::Completes),
    (
        Fix::AsynchronousContinuations,
        Verdict::Deadlocks,
        Verdict::Completes,
    ),
    (Fix::NativeTokio, Verdict::Deadlocks, Verdict::Completes),
    (Fix::DontBlock, Verdict::Completes, Verdict::Completes),
    (
        Fix::PollWhereYouBlock,
        Verdict::Completes,
        Verdict::Deadlocks,
    ),
];

fn frame() -> [u8; FRAME_LEN] {
    Reading {
        sensor: 7,
        sequence: 1,
        millidegrees: 21_500,
    }
    .encode()
}

fn decode(frame: &[u8]) -> io::Result<Reading> {
    Ok(Reading::decode(
        frame.get(HEADER_LEN..).unwrap_or_default(),
    )?)
}

// ANCHOR: bridges
/// A receive as a future, completed the way `fix` says.
async fn receive_with(fix: Fix, socket: CallbackSocket, length: usize) -> io::Result<Vec<u8>> {
    let received = match fix {
        Fix::HandOff => {
            let (source, completion) = completion_source(Continuations::Asynchronous);
            let start = socket.receive(vec![0; length], move |received| {
                thread::spawn(move || drop(source.set_result(received)));
            });
            match start {
                Start::Ready(received) => received,
                Start::Pending => completion.await.map_err(io::Error::other)?,
            }
        }
        _ => receive(&socket, vec![0; length]).await?,
    };
    let n = received.result?;
    Ok(received.buffer[..n].to_vec())
}

/// A receive as a completion, for code that registers a continuation.
fn completion_with(fix: Fix, socket: &CallbackSocket, length: usize) -> Completion<Received> {
    match fix {
        Fix::HandOff => {
            let (source, completion) = completion_source(Continuations::Inline);
            let completer = source.clone();
            let start = socket.receive(vec![0; length], move |received| {
                thread::spawn(move || drop(completer.set_result(received)));
            });
            if let Start::Ready(received) = start {
                let _ = source.set_result(received);
            }
            completion
        }
        Fix::AsynchronousContinuations => {
            receive_completion(socket, vec![0; length], Continuations::Asynchronous)
        }
        _ => receive_completion(socket, vec![0; length], Continuations::Inline),
    }
}
// ANCHOR_END: bridges

/// M1: a handler on the `ui` thread's message loop waits for one
/// reading. The sensor sends only once the handler is really waiting.
fn m1(fix: Fix) -> io::Result<Reading> {
    let ui = thread::current().id();
    if fix == Fix::NativeTokio {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        let mut sensor = std::net::TcpStream::connect(listener.local_addr()?)?;
        let (accepted, _) = listener.accept()?;
        accepted.set_nonblocking(true)?;
        thread::spawn(move || {
            if waits::wait_until_blocked(ui, WAIT) {
                let _ = sensor.write_all(&frame());
            }
            thread::sleep(WAIT);
        });
        return MessageLoop::run_until(async move {
            let mut stream = tokio::net::TcpStream::from_std(accepted)?;
            result_of(async move {
                let mut bytes = [0; FRAME_LEN];
                stream.read_exact(&mut bytes).await?;
                decode(&bytes)
            })
        })?;
    }
    let io = IoThread::start()?;
    let (socket, mut sensor) = loopback_pair(&io)?;
    let waiting = socket.clone();
    thread::spawn(move || {
        let ready = match fix {
            Fix::DontBlock => waiting.wait_for_pending_receive(WAIT),
            _ => waits::wait_until_blocked(ui, WAIT),
        };
        if ready {
            let _ = sensor.write_all(&frame());
        }
        thread::sleep(WAIT);
    });
    let reading = async move { decode(&receive_with(fix, socket, FRAME_LEN).await?) };
    MessageLoop::run_until(async move {
        match fix {
            Fix::DontBlock => reading.await,
            Fix::PollWhereYouBlock => {
                let io_thread = WaitsFor::Thread(IO_THREAD_NAME.into());
                waits::blocking("`futures::executor::block_on`", io_thread, || {
                    futures::executor::block_on(reading)
                })
            }
            _ => result_of(reading),
        }
    })?
}

/// M2: the code after a frame's header waits for the body. The sensor
/// sends the header, then the body once that code is waiting.
fn m2(fix: Fix) -> io::Result<Reading> {
    if fix == Fix::NativeTokio {
        return m2_native();
    }
    let io = IoThread::start()?;
    let (socket, mut sensor) = loopback_pair(&io)?;
    let (done, result) = mpsc::channel();
    let header = completion_with(fix, &socket, HEADER_LEN);
    let body_socket = socket.clone();
    header.on_completed(move |header| {
        let header = match header {
            Ok(header) => header,
            Err(abandoned) => return drop(done.send(Err(io::Error::other(abandoned)))),
        };
        let mut frame = header.buffer[..header.result.unwrap_or(0)].to_vec();
        match fix {
            Fix::DontBlock => {
                let body = completion_with(fix, &body_socket, READING_LEN);
                body.on_completed(move |body| {
                    let body = body
                        .map_err(io::Error::other)
                        .and_then(|b| Ok(b.buffer[..b.result?].to_vec()));
                    let _ = done.send(body.and_then(|b| {
                        frame.extend(b);
                        decode(&frame)
                    }));
                });
            }
            Fix::PollWhereYouBlock => {
                let io_thread = WaitsFor::Thread(IO_THREAD_NAME.into());
                let body = waits::blocking("`futures::executor::block_on`", io_thread, || {
                    futures::executor::block_on(receive_with(fix, body_socket, READING_LEN))
                });
                let _ = done.send(body.and_then(|b| {
                    frame.extend(b);
                    decode(&frame)
                }));
            }
            _ => {
                let body = completion_with(fix, &body_socket, READING_LEN).wait();
                let body = body
                    .map_err(io::Error::other)
                    .and_then(|b| Ok(b.buffer[..b.result?].to_vec()));
                let _ = done.send(body.and_then(|b| {
                    frame.extend(b);
                    decode(&frame)
                }));
            }
        }
    });
    let header_receive = socket.last_receive().expect("started");
    sensor.write_all(&frame()[..HEADER_LEN])?;
    let _ = socket.wait_for_pending_receive_after(header_receive, WAIT);
    sensor.write_all(&frame()[HEADER_LEN..])?;
    let io_thread = WaitsFor::Thread(IO_THREAD_NAME.into());
    waits::blocking("`Receiver::recv`", io_thread, || result.recv()).map_err(io::Error::other)?
}

/// M2 with tokio's own socket: the code after the header runs on a runtime
/// worker and blocks there for the body, the way tokio allows it
/// (`block_in_place`, which hands the worker's other duties, the reactor
/// included, to another thread).
fn m2_native() -> io::Result<Reading> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    let mut sensor = std::net::TcpStream::connect(listener.local_addr()?)?;
    let (accepted, _) = listener.accept()?;
    accepted.set_nonblocking(true)?;
    let (blocked_on, blocked) = mpsc::channel();
    let task = runtime.spawn(async move {
        let mut stream = tokio::net::TcpStream::from_std(accepted)?;
        let mut frame = [0; FRAME_LEN];
        stream.read_exact(&mut frame[..HEADER_LEN]).await?;
        let _ = blocked_on.send(thread::current().id());
        tokio::task::block_in_place(|| {
            let waits_for = WaitsFor::Thread("a runtime worker".into());
            waits::blocking("`Handle::block_on`", waits_for, || {
                tokio::runtime::Handle::current()
                    .block_on(stream.read_exact(&mut frame[HEADER_LEN..]))
            })
        })?;
        decode(&frame)
    });
    sensor.write_all(&frame()[..HEADER_LEN])?;
    let worker = blocked.recv_timeout(WAIT).map_err(io::Error::other)?;
    waits::wait_until_blocked(worker, WAIT);
    sensor.write_all(&frame()[HEADER_LEN..])?;
    let reading = runtime.block_on(task)?;
    runtime.shutdown_background();
    reading
}

/// Runs one cell under the watchdog.
fn run(fix: Fix, m2_mechanism: bool) -> Verdict {
    let outcome = if m2_mechanism {
        watch("server", DEADLOCK_LIMIT, move || m2(fix))
    } else {
        watch("ui", DEADLOCK_LIMIT, move || m1(fix))
    };
    match outcome {
        Outcome::Completed(Ok(reading)) if reading.millidegrees == 21_500 => Verdict::Completes,
        Outcome::Stuck { diagnosis, .. } if diagnosis.verdict == waits::Verdict::Deadlock => {
            Verdict::Deadlocks
        }
        other => panic!("{fix:?}: neither completed with the reading nor deadlocked: {other:?}"),
    }
}

// ANCHOR: main
/// Runs every cell, prints the table, and fails if a run disagrees with
/// what the book claims.
fn main() -> std::process::ExitCode {
    println!("{:<37} | {:<9} | {:<9}", "fix", "M1", "M2");
    println!("{:-<37}-|-{:-<9}-|-{:-<9}", "", "", "");
    let mut disagreements = Vec::new();
    for (fix, claimed_m1, claimed_m2) in CLAIMED {
        let (m1, m2) = (run(fix, false), run(fix, true));
        println!(
            "{:<37} | {:<9} | {:<9}",
            fix.to_string(),
            m1.to_string(),
            m2.to_string()
        );
        for (mechanism, ran, claimed) in [("M1", m1, claimed_m1), ("M2", m2, claimed_m2)] {
            if ran != claimed {
                disagreements.push(format!(
                    "{fix}, {mechanism}: ran {ran}, the book claims {claimed}"
                ));
            }
        }
    }
    for disagreement in &disagreements {
        println!("{disagreement}");
    }
    if disagreements.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
// ANCHOR_END: main

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::TestLimit;

    fn claimed(fix: Fix) -> (Verdict, Verdict) {
        let (_, m1, m2) = CLAIMED
            .iter()
            .find(|(f, _, _)| *f == fix)
            .expect("every fix is claimed");
        (*m1, *m2)
    }

    macro_rules! cell {
        ($name:ident, $fix:expr, $m2:expr) => {
            #[test]
            fn $name() {
                let _limit = TestLimit::seconds(30);
                let (m1, m2) = claimed($fix);
                let expected = if $m2 { m2 } else { m1 };
                for _ in 0..1 {
                    assert_eq!(
                        run($fix, $m2),
                        expected,
                        "{:?}, M{}",
                        $fix,
                        if $m2 { 2 } else { 1 }
                    );
                }
            }
        };
    }

    cell!(no_fix_m1, Fix::NoFix, false);
    cell!(no_fix_m2, Fix::NoFix, true);
    cell!(hand_off_m1, Fix::HandOff, false);
    cell!(hand_off_m2, Fix::HandOff, true);
    cell!(
        asynchronous_continuations_m1,
        Fix::AsynchronousContinuations,
        false
    );
    cell!(
        asynchronous_continuations_m2,
        Fix::AsynchronousContinuations,
        true
    );
    cell!(native_tokio_m1, Fix::NativeTokio, false);
    cell!(native_tokio_m2, Fix::NativeTokio, true);
    cell!(dont_block_m1, Fix::DontBlock, false);
    cell!(dont_block_m2, Fix::DontBlock, true);
    cell!(poll_where_you_block_m1, Fix::PollWhereYouBlock, false);
    cell!(poll_where_you_block_m2, Fix::PollWhereYouBlock, true);
}
