//! What the C callback bridge costs: a loopback echo round trip through
//! sensorlib (a write transfer, then a read transfer, each awaited) against
//! the same round trip on tokio's own `TcpStream`, and the cost of one
//! completion's hop out of C (an empty transfer, which sensorlib's event
//! thread completes at once, awaited by a task).
//!
//! `cargo run -p listing-12-07` checks that both clients echo every byte,
//! quickly; `cargo bench -p listing-12-07` measures: medians of batches, one
//! run, and ratios to native tokio.

use std::io;
use std::time::{Duration, Instant};

use listing_12_02::Sensor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The bytes of one round trip: one frame of the sensor protocol.
const FRAME: [u8; awd::frame::FRAME_LEN] = [0, 10, 0, 7, 0, 0, 0, 1, 0, 0, 83, 252];

/// An echo server on its own thread and runtime; returns its address.
fn echo_server() -> io::Result<std::net::SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    std::thread::Builder::new()
        .name("echo".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                let listener = TcpListener::from_std(listener).expect("a listener");
                loop {
                    let Ok((mut stream, _)) = listener.accept().await else {
                        return;
                    };
                    stream.set_nodelay(true).expect("nodelay");
                    tokio::spawn(async move {
                        let mut buffer = [0u8; 4096];
                        while let Ok(n) = stream.read(&mut buffer).await {
                            if n == 0 || stream.write_all(&buffer[..n]).await.is_err() {
                                break;
                            }
                        }
                    });
                }
            });
        })?;
    Ok(address)
}

// ANCHOR: round_trips
/// `rounds` round trips on tokio's own socket.
async fn native(address: std::net::SocketAddr, rounds: usize) -> io::Result<()> {
    let mut stream = TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let mut echoed = [0u8; FRAME.len()];
    for _ in 0..rounds {
        stream.write_all(&FRAME).await?;
        stream.read_exact(&mut echoed).await?;
        assert_eq!(echoed, FRAME);
    }
    Ok(())
}

/// `rounds` round trips through sensorlib: each transfer is completed by
/// its event thread, whose callback wakes this task.
async fn through_c(sensor: &Sensor, rounds: usize) -> io::Result<()> {
    for _ in 0..rounds {
        sensor.write(FRAME.to_vec()).await?;
        let echoed = sensor.read(FRAME.len()).await?;
        assert_eq!(echoed, FRAME);
    }
    Ok(())
}

/// `rounds` empty transfers: the hop out of C and back, with no I/O.
async fn hops(sensor: &Sensor, rounds: usize) -> io::Result<()> {
    for _ in 0..rounds {
        sensor.read(0).await?;
    }
    Ok(())
}
// ANCHOR_END: round_trips

/// A device on a connection to the echo server.
fn sensor(address: std::net::SocketAddr) -> io::Result<Sensor> {
    let stream = std::net::TcpStream::connect(address)?;
    stream.set_nodelay(true)?;
    Sensor::open(stream)
}

/// The median time per operation of `batches` timed batches of `rounds`.
fn median_per_op(
    batches: usize,
    rounds: usize,
    mut batch: impl FnMut(usize) -> io::Result<()>,
) -> io::Result<Duration> {
    let mut times = Vec::with_capacity(batches);
    for _ in 0..batches {
        let start = Instant::now();
        batch(rounds)?;
        times.push(start.elapsed());
    }
    times.sort();
    Ok(times[times.len() / 2] / rounds as u32)
}

fn main() -> io::Result<()> {
    let bench = std::env::args().any(|a| a == "--bench");
    let address = echo_server()?;
    // One core for the client, as a one-core server would have.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let sensor = sensor(address)?;
    if !bench {
        runtime.block_on(native(address, 100))?;
        runtime.block_on(through_c(&sensor, 100))?;
        runtime.block_on(hops(&sensor, 100))?;
        println!("100 round trips each, native tokio and through sensorlib: every byte echoed");
        println!("100 empty transfers completed by sensorlib's event thread");
        return Ok(());
    }
    let (batches, rounds) = (21, 2_000);
    let native = median_per_op(batches, rounds, |n| runtime.block_on(native(address, n)))?;
    let c = median_per_op(batches, rounds, |n| runtime.block_on(through_c(&sensor, n)))?;
    let hop = median_per_op(batches, rounds, |n| runtime.block_on(hops(&sensor, n)))?;
    let ratio = |d: Duration| d.as_secs_f64() / native.as_secs_f64();
    println!("{batches} batches of {rounds}; medians per operation, one run");
    println!("| client | per round trip | ratio to native tokio |");
    println!("|---|---|---|");
    println!("| native tokio `TcpStream` | {native:.1?} | 1.00 |");
    println!(
        "| the C callback bridge (Listing 12-2) | {c:.1?} | {:.2} |",
        ratio(c)
    );
    println!(
        "| an empty transfer: the hop out of C alone | {hop:.1?} | {:.2} |",
        ratio(hop)
    );
    Ok(())
}
