//! A `std::sync::Mutex` guard held across an `.await`, on one thread: it
//! compiles (nothing asks the future to be `Send`) and deadlocks as soon as
//! a second task asks for the lock. Locking for each insert alone does not.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use awd::bridge;
use awd::frame::{Decoder, Reading};
use awd::socket::{loopback_pair, CallbackSocket, IoThread};
use awd::waits::WatchedMutex;
use awd::watchdog::DEADLOCK_LIMIT;

/// The latest reading of each sensor, behind a standard-library mutex that
/// tells the watchdog who holds it.
type Latest = Arc<WatchedMutex<BTreeMap<u16, Reading>>>;

// ANCHOR: holding
/// Serves one sensor, holding the table's lock for the whole connection:
/// across every `.await` of the receive loop.
async fn serve_holding_the_lock(socket: &CallbackSocket, latest: &Latest) -> io::Result<()> {
    let mut table = latest.lock();
    let (mut decoder, mut buffer) = (Decoder::new(), vec![0; 256]);
    loop {
        let received = bridge::receive(socket, buffer).await?; // the guard is held here
        let n = received.result?;
        if n == 0 {
            return Ok(());
        }
        decoder.push(&received.buffer[..n]);
        while let Some(reading) = decoder.next_reading() {
            let reading = reading?;
            table.insert(reading.sensor, reading);
        }
        buffer = received.buffer;
    }
}
// ANCHOR_END: holding

// ANCHOR: scoped
/// Serves one sensor, locking the table for each insert and for nothing else.
async fn serve_locking_per_insert(socket: &CallbackSocket, latest: &Latest) -> io::Result<()> {
    let (mut decoder, mut buffer) = (Decoder::new(), vec![0; 256]);
    loop {
        let received = bridge::receive(socket, buffer).await?; // no guard alive here
        let n = received.result?;
        if n == 0 {
            return Ok(());
        }
        decoder.push(&received.buffer[..n]);
        while let Some(reading) = decoder.next_reading() {
            let reading = reading?;
            latest.lock().insert(reading.sensor, reading); // the guard ends with the line
        }
        buffer = received.buffer;
    }
}
// ANCHOR_END: scoped

/// Which of the two connection functions to run.
#[derive(Clone, Copy, Debug)]
enum Locking {
    AcrossAwait,
    PerInsert,
}

// ANCHOR: scenario
/// Two sensors, served by two futures on one thread (`join!` inside a
/// `current_thread` runtime's `block_on`: nothing asks them to be `Send`).
/// Each sensor sends one reading once both connections wait, then closes.
fn scenario(locking: Locking) -> io::Result<BTreeMap<u16, Reading>> {
    let io = IoThread::start()?;
    let (first, first_sensor) = loopback_pair(&io)?;
    let (second, second_sensor) = loopback_pair(&io)?;
    let latest: Latest = Arc::new(WatchedMutex::new("latest", BTreeMap::new()));
    let waiting = [first.clone(), second.clone()];
    let sensors = thread::spawn(move || -> io::Result<()> {
        // Both connections wait for their sensor before either sends: a
        // reading already there would let a connection run to its end
        // without ever giving up the thread.
        for socket in &waiting {
            if !socket.wait_for_pending_receive(Duration::from_secs(5)) {
                return Ok(()); // never served: nothing to send
            }
        }
        for (number, mut sensor) in [(1, first_sensor), (2, second_sensor)] {
            let reading = Reading {
                sensor: number,
                sequence: 1,
                millidegrees: 20_000 + i32::from(number),
            };
            sensor.write_all(&reading.encode())?;
            sensor.shutdown(Shutdown::Write)?;
        }
        Ok(())
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (a, b) = runtime.block_on(async {
        match locking {
            Locking::AcrossAwait => tokio::join!(
                serve_holding_the_lock(&first, &latest),
                serve_holding_the_lock(&second, &latest)
            ),
            Locking::PerInsert => tokio::join!(
                serve_locking_per_insert(&first, &latest),
                serve_locking_per_insert(&second, &latest)
            ),
        }
    });
    a?;
    b?;
    sensors
        .join()
        .map_err(|_| io::Error::other("a sensor panicked"))??;
    let table = latest.lock().clone();
    Ok(table)
}
// ANCHOR_END: scenario

/// True when the program runs with `-- <flag>`.
fn run_with(flag: &str) -> bool {
    std::env::args().any(|a| a == flag)
}

fn main() {
    let locking = if run_with("--per-insert") {
        println!("each connection locks the table for each insert");
        Locking::PerInsert
    } else {
        println!("each connection holds the table's lock across its receives");
        Locking::AcrossAwait
    };
    match awd::watchdog::run("server", DEADLOCK_LIMIT, move || scenario(locking)) {
        Ok(table) => {
            for reading in table.values() {
                println!(
                    "latest of sensor {}: {} °C",
                    reading.sensor,
                    reading.celsius()
                );
            }
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
    fn a_guard_held_across_an_await_deadlocks_the_thread_every_time() {
        let _limit = TestLimit::seconds(20);
        for _ in 0..3 {
            let outcome = watch("server", DEADLOCK_LIMIT, || scenario(Locking::AcrossAwait));
            assert!(outcome.is_deadlock(), "{outcome:?}");
        }
    }

    #[test]
    fn locking_per_insert_serves_both_sensors() {
        let _limit = TestLimit::seconds(20);
        for _ in 0..10 {
            let outcome = watch("server", Duration::from_secs(5), || {
                scenario(Locking::PerInsert)
            });
            let table = outcome.completed().expect("finished").expect("no error");
            assert_eq!(table.keys().copied().collect::<Vec<_>>(), [1, 2]);
        }
    }
}
