//! Fix 3: no completion source at all. The receive loop on tokio's own
//! `TcpStream`: `read_exact` per frame, the end of the stream told apart
//! from a truncated frame, a time limit per read, and cancellation.

use std::io::{self, ErrorKind};
use std::time::Duration;

use awd::frame::{payload_length, Reading, HEADER_LEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::timeout;

/// How long a sensor may stay silent before the server drops it: half a
/// second, or what `-- --timeout-ms N` says (the chapter's exercise).
fn read_timeout() -> Duration {
    let mut args = std::env::args().skip_while(|a| a != "--timeout-ms").skip(1);
    let millis = args.next().and_then(|n| n.parse().ok()).unwrap_or(500);
    Duration::from_millis(millis)
}

// ANCHOR: read_frame
/// Reads one frame: `None` at a clean end of the stream (between frames).
async fn read_frame(stream: &mut TcpStream) -> io::Result<Option<Reading>> {
    let mut header = [0u8; HEADER_LEN];
    // The first byte tells a clean end (0 bytes) from the start of a frame.
    if limited(stream.read(&mut header[..1])).await? == 0 {
        return Ok(None);
    }
    limited(stream.read_exact(&mut header[1..]))
        .await
        .map_err(|e| truncated(e, "header"))?;
    let mut payload = vec![0; payload_length(header)?]; // refuses oversized frames
    limited(stream.read_exact(&mut payload))
        .await
        .map_err(|e| truncated(e, "payload"))?;
    Ok(Some(Reading::decode(&payload)?))
}

/// Any read, with the time limit.
async fn limited<T>(read: impl std::future::Future<Output = io::Result<T>>) -> io::Result<T> {
    timeout(read_timeout(), read)
        .await
        .map_err(|_| io::Error::new(ErrorKind::TimedOut, "the sensor went silent"))?
}

/// `read_exact` reports the end of the stream as `UnexpectedEof`: inside a
/// frame, that is a truncated frame.
fn truncated(error: io::Error, part: &str) -> io::Error {
    if error.kind() == ErrorKind::UnexpectedEof {
        let why = format!("truncated frame: the stream ended inside its {part}");
        io::Error::new(ErrorKind::UnexpectedEof, why)
    } else {
        error
    }
}

/// Serves one sensor until it closes, fails, goes silent, or `shutdown`
/// is signalled.
async fn serve(
    mut stream: TcpStream,
    mut shutdown: watch::Receiver<bool>,
) -> (Vec<Reading>, io::Result<()>) {
    let mut readings = Vec::new();
    loop {
        tokio::select! {
            frame = read_frame(&mut stream) => match frame {
                Ok(Some(reading)) => readings.push(reading),
                Ok(None) => return (readings, Ok(())),
                Err(e) => return (readings, Err(e)),
            },
            // Cancels a read in progress: a half-read frame is dropped,
            // which is what shutting down means.
            _ = shutdown.changed() => {
                let cancelled = io::Error::new(ErrorKind::Interrupted, "cancelled by the shutdown");
                return (readings, Err(cancelled));
            }
        }
    }
}
// ANCHOR_END: read_frame

/// Connects a sensor that sends `bytes`, then closes (or not).
async fn sensor(
    server: std::net::SocketAddr,
    bytes: Vec<u8>,
    close: bool,
) -> io::Result<TcpStream> {
    let mut stream = TcpStream::connect(server).await?;
    stream.write_all(&bytes).await?;
    if close {
        stream.shutdown().await?;
    }
    Ok(stream)
}

fn frames(sensor: u16, count: u32) -> Vec<u8> {
    (1..=count)
        .flat_map(|sequence| {
            Reading {
                sensor,
                sequence,
                millidegrees: 20_000 + sequence as i32,
            }
            .encode()
        })
        .collect()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> io::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let address = listener.local_addr()?;
    let (stop, shutdown) = watch::channel(false);
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("sends 3 readings and closes", frames(1, 3), true),
        (
            "closes in the middle of a frame",
            frames(2, 2)[..17].to_vec(),
            true,
        ),
        ("sends an oversized frame", vec![0xff, 0xff, 1, 2, 3], true),
        ("sends 1 reading, then nothing", frames(4, 1), false),
    ];
    for (what, bytes, close) in cases {
        let _client = sensor(address, bytes, close).await?;
        let (stream, _) = listener.accept().await?;
        let (readings, end) = serve(stream, shutdown.clone()).await;
        println!(
            "a sensor that {what}: received {}, then {}",
            readings.len(),
            ending(&end)
        );
    }
    // Shutdown cancels a sensor that is in the middle of nothing.
    let _client = sensor(address, frames(5, 2), false).await?;
    let (stream, _) = listener.accept().await?;
    let serving = tokio::spawn(serve(stream, shutdown));
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.send_replace(true);
    let (readings, end) = serving.await?;
    println!(
        "a sensor served during shutdown: received {}, then {}",
        readings.len(),
        ending(&end)
    );
    Ok(())
}

/// How a connection ended, in words.
fn ending(end: &io::Result<()>) -> String {
    match end {
        Ok(()) => "a clean end".to_string(),
        Err(e) => format!("{:?}: {e}", e.kind()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::TestLimit;

    async fn served(bytes: Vec<u8>, close: bool) -> (Vec<Reading>, io::Result<()>) {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let _client = sensor(listener.local_addr().unwrap(), bytes, close)
            .await
            .unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let (_stop, shutdown) = watch::channel(false);
        serve(stream, shutdown).await
    }

    #[tokio::test]
    async fn every_end_of_a_connection_is_told_apart() {
        let _limit = TestLimit::seconds(10);
        let (readings, end) = served(frames(1, 100), true).await;
        assert_eq!((readings.len(), end.is_ok()), (100, true));
        let (_, end) = served(frames(1, 1)[..5].to_vec(), true).await;
        assert_eq!(end.unwrap_err().kind(), ErrorKind::UnexpectedEof);
        let (_, end) = served(vec![0, 200], true).await;
        assert_eq!(end.unwrap_err().kind(), ErrorKind::InvalidData);
        let (_, end) = served(Vec::new(), false).await;
        assert_eq!(end.unwrap_err().kind(), ErrorKind::TimedOut);
        let (readings, end) = served(Vec::new(), true).await;
        assert_eq!((readings.len(), end.is_ok()), (0, true));
    }
}
