//! The sensor protocol: how a reading travels over a TCP stream.
//!
//! Every frame is a 2-byte big-endian payload length followed by the payload.
//! A reading's payload is 10 bytes: the sensor id (`u16`), a sequence number
//! (`u32`) and the temperature in thousandths of a degree Celsius (`i32`), all
//! big-endian. The length field lets a reader refuse a frame before reading
//! it: a length above [`MAX_PAYLOAD`] is an oversized frame, a length that is
//! not [`READING_LEN`] is a malformed one, and both are errors, never a panic
//! or a huge allocation.
//!
//! ```text
//! +----------+----------+--------------+---------------------+
//! | len: u16 | sensor:  | sequence:    | millidegrees: i32   |
//! |  (= 10)  |   u16    |    u32       |                     |
//! +----------+----------+--------------+---------------------+
//!   2 bytes    2 bytes     4 bytes        4 bytes
//! ```
//!
//! [`Decoder`] turns the chunks a socket delivers (any size, split anywhere)
//! back into readings, and says at the end of the stream whether a frame was
//! cut off.

use std::fmt;

/// Bytes in a frame header (the payload length).
pub const HEADER_LEN: usize = 2;

/// Bytes in a reading's payload.
pub const READING_LEN: usize = 10;

/// Bytes in a whole reading frame, header included.
pub const FRAME_LEN: usize = HEADER_LEN + READING_LEN;

/// The largest payload length a reader accepts before refusing the frame.
pub const MAX_PAYLOAD: usize = 1024;

/// One sensor reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Reading {
    /// Which sensor sent it.
    pub sensor: u16,
    /// The sensor's own counter, one more for every reading it sends.
    pub sequence: u32,
    /// The temperature in thousandths of a degree Celsius.
    pub millidegrees: i32,
}

impl Reading {
    /// The temperature in degrees Celsius.
    pub fn celsius(&self) -> f64 {
        f64::from(self.millidegrees) / 1000.0
    }

    /// The whole frame: header and payload.
    pub fn encode(&self) -> [u8; FRAME_LEN] {
        let mut frame = [0u8; FRAME_LEN];
        frame[..2].copy_from_slice(&(READING_LEN as u16).to_be_bytes());
        frame[2..4].copy_from_slice(&self.sensor.to_be_bytes());
        frame[4..8].copy_from_slice(&self.sequence.to_be_bytes());
        frame[8..12].copy_from_slice(&self.millidegrees.to_be_bytes());
        frame
    }

    /// Reads a payload of exactly [`READING_LEN`] bytes.
    pub fn decode(payload: &[u8]) -> Result<Reading, FrameError> {
        let payload: &[u8; READING_LEN] =
            payload.try_into().map_err(|_| FrameError::Malformed {
                length: payload.len(),
            })?;
        Ok(Reading {
            sensor: u16::from_be_bytes([payload[0], payload[1]]),
            sequence: u32::from_be_bytes([payload[2], payload[3], payload[4], payload[5]]),
            millidegrees: i32::from_be_bytes([payload[6], payload[7], payload[8], payload[9]]),
        })
    }
}

impl fmt::Display for Reading {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sensor {} #{}: {:.3} °C",
            self.sensor,
            self.sequence,
            self.celsius()
        )
    }
}

/// The payload length a header announces, checked against the limits.
pub fn payload_length(header: [u8; HEADER_LEN]) -> Result<usize, FrameError> {
    let length = usize::from(u16::from_be_bytes(header));
    if length > MAX_PAYLOAD {
        Err(FrameError::Oversized { length })
    } else if length != READING_LEN {
        Err(FrameError::Malformed { length })
    } else {
        Ok(length)
    }
}

/// What can be wrong with the bytes a peer sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The header announces more than [`MAX_PAYLOAD`] bytes.
    Oversized {
        /// The announced length.
        length: usize,
    },
    /// The header announces a payload that is not a reading.
    Malformed {
        /// The announced length.
        length: usize,
    },
    /// The stream ended inside a frame.
    Truncated {
        /// How many bytes of the frame had arrived.
        received: usize,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Oversized { length } => write!(
                f,
                "oversized frame: the header announces {length} bytes, the limit is {MAX_PAYLOAD}"
            ),
            FrameError::Malformed { length } => write!(
                f,
                "malformed frame: a reading has {READING_LEN} bytes, the header announces {length}"
            ),
            FrameError::Truncated { received } => write!(
                f,
                "truncated frame: the stream ended after {received} bytes of a frame"
            ),
        }
    }
}

impl std::error::Error for FrameError {}

impl From<FrameError> for std::io::Error {
    fn from(error: FrameError) -> Self {
        let kind = match error {
            FrameError::Truncated { .. } => std::io::ErrorKind::UnexpectedEof,
            _ => std::io::ErrorKind::InvalidData,
        };
        std::io::Error::new(kind, error)
    }
}

/// Reassembles readings from chunks of a stream, however they were split.
#[derive(Debug, Default)]
pub struct Decoder {
    pending: Vec<u8>,
    failed: Option<FrameError>,
}

impl Decoder {
    /// An empty decoder.
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Adds the bytes of one chunk.
    pub fn push(&mut self, chunk: &[u8]) {
        self.pending.extend_from_slice(chunk);
    }

    /// The next complete reading, `None` when more bytes are needed. After an
    /// error the decoder keeps returning it: a stream with a bad frame cannot
    /// be trusted past it.
    pub fn next_reading(&mut self) -> Option<Result<Reading, FrameError>> {
        if let Some(error) = self.failed {
            return Some(Err(error));
        }
        let header: [u8; HEADER_LEN] = self.pending.get(..HEADER_LEN)?.try_into().ok()?;
        let length = match payload_length(header) {
            Ok(length) => length,
            Err(error) => {
                self.failed = Some(error);
                return Some(Err(error));
            }
        };
        let payload = self.pending.get(HEADER_LEN..HEADER_LEN + length)?;
        let reading = Reading::decode(payload);
        self.pending.drain(..HEADER_LEN + length);
        Some(reading)
    }

    /// Bytes received that do not yet make a whole frame.
    pub fn partial(&self) -> usize {
        self.pending.len()
    }

    /// Called at the end of the stream: an error if it ended inside a frame.
    pub fn finish(&self) -> Result<(), FrameError> {
        match (self.failed, self.pending.len()) {
            (Some(error), _) => Err(error),
            (None, 0) => Ok(()),
            (None, received) => Err(FrameError::Truncated { received }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watchdog::TestLimit;

    fn reading(sequence: u32) -> Reading {
        Reading {
            sensor: 7,
            sequence,
            millidegrees: -12_345,
        }
    }

    #[test]
    fn a_reading_survives_the_round_trip() {
        let _limit = TestLimit::seconds(5);
        let frame = reading(3).encode();
        assert_eq!(payload_length([frame[0], frame[1]]), Ok(READING_LEN));
        assert_eq!(Reading::decode(&frame[HEADER_LEN..]), Ok(reading(3)));
        assert_eq!(reading(3).to_string(), "sensor 7 #3: -12.345 °C");
    }

    #[test]
    fn chunks_split_anywhere_give_the_same_readings() {
        let _limit = TestLimit::seconds(5);
        let stream: Vec<u8> = (0..5).flat_map(|s| reading(s).encode()).collect();
        for size in 1..=stream.len() {
            let mut decoder = Decoder::new();
            let mut out = Vec::new();
            for chunk in stream.chunks(size) {
                decoder.push(chunk);
                while let Some(r) = decoder.next_reading() {
                    out.push(r.unwrap());
                }
            }
            assert_eq!(
                out,
                (0..5).map(reading).collect::<Vec<_>>(),
                "chunks of {size}"
            );
            assert_eq!(decoder.finish(), Ok(()));
        }
    }

    #[test]
    fn oversized_and_malformed_headers_are_refused_before_the_payload() {
        let _limit = TestLimit::seconds(5);
        let mut decoder = Decoder::new();
        decoder.push(&[0xff, 0xff]);
        assert_eq!(
            decoder.next_reading(),
            Some(Err(FrameError::Oversized { length: 65_535 }))
        );
        assert_eq!(
            decoder.next_reading(),
            Some(Err(FrameError::Oversized { length: 65_535 })),
            "an error sticks"
        );
        assert_eq!(
            payload_length([0, 4]),
            Err(FrameError::Malformed { length: 4 })
        );
        assert_eq!(
            Reading::decode(&[0; 3]),
            Err(FrameError::Malformed { length: 3 })
        );
    }

    #[test]
    fn a_stream_that_ends_inside_a_frame_is_truncated() {
        let _limit = TestLimit::seconds(5);
        let mut decoder = Decoder::new();
        decoder.push(&reading(1).encode()[..5]);
        assert_eq!(decoder.next_reading(), None);
        assert_eq!(decoder.finish(), Err(FrameError::Truncated { received: 5 }));
        let error: std::io::Error = FrameError::Truncated { received: 5 }.into();
        assert_eq!(error.kind(), std::io::ErrorKind::UnexpectedEof);
    }
}
