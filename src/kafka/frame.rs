//! Request framing: a 4-byte size, then the request header and body. Frames are read into a
//! per-connection buffer and split off it without copying; each frame's size is checked against
//! a limit chosen by its API before any of it is buffered.

use std::time::Duration;

use bytes::BytesMut;
use kafka_protocol::messages::ApiKey;

use crate::io::budget::{MemoryBudget, Permit};
use crate::io::net::{FrameError, FrameRules, FramedReader, Stream};
use crate::io::{self};
use crate::model::wire::{RequestHeader, WireError, parse_request_header};

/// api_key + api_version + correlation_id.
const FIXED_HEADER_BYTES: usize = 8;

/// Frame size limits and how long a client may take.
#[derive(Clone, Copy, Debug)]
pub struct FrameLimits {
    /// For Produce.
    pub produce_max_bytes: usize,
    /// For every other API.
    pub control_max_bytes: usize,
    /// From a frame's first byte to its last.
    pub read_timeout: Duration,
    /// Between frames.
    pub idle_timeout: Duration,
}

/// Why a connection's requests cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum RequestFrameError {
    /// The byte stream failed or broke the framing rules.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A frame did not arrive in time.
    #[error("a request took longer than {0:?} to arrive")]
    ReadTimeout(Duration),
    /// Nothing arrived for the idle timeout.
    #[error("idle for {0:?}")]
    Idle(Duration),
    /// The header does not parse.
    #[error(transparent)]
    Malformed(#[from] WireError),
}

/// One request: its header and its body (the bytes after the header).
#[derive(Debug)]
pub struct RequestFrame {
    /// Header.
    pub header: RequestHeader,
    /// Body bytes; for Produce these are split and moved to the owning shards.
    pub body: BytesMut,
    /// Whether the full header could be parsed (false for unknown APIs or versions, whose
    /// header layout is not known; only the fixed part is then valid).
    pub header_complete: bool,
}

/// Reads requests from a connection.
pub struct RequestReader {
    frames: FramedReader,
    limits: FrameLimits,
    budget: MemoryBudget,
}

impl RequestReader {
    /// Reads from `stream`, each frame's bytes held in `budget` as they arrive.
    pub fn new(stream: Stream, limits: FrameLimits, budget: MemoryBudget) -> Self {
        Self { frames: FramedReader::new(stream), limits, budget }
    }

    /// The next request and the shard's request memory it holds (to keep until the request is
    /// done), or `None` when the peer closed cleanly between requests.
    pub async fn next(&mut self) -> Result<Option<(RequestFrame, Permit)>, RequestFrameError> {
        let limits = self.limits;
        let rules = FrameRules { min_bytes: FIXED_HEADER_BYTES, peek_bytes: 2 };
        let limit = |api_key: &[u8]| {
            if i16::from_be_bytes([api_key[0], api_key[1]]) == ApiKey::Produce as i16 {
                limits.produce_max_bytes
            } else {
                limits.control_max_bytes
            }
        };
        // The idle timeout runs until a frame's size has arrived (a peer that sent part of it
        // is as idle as one that sent nothing); the read timeout from then to its last byte.
        let size = match io::timeout(limits.idle_timeout, self.frames.next_size(rules, limit)).await {
            None => return Err(RequestFrameError::Idle(limits.idle_timeout)),
            Some(size) => size?,
        };
        let Some(size) = size else { return Ok(None) };
        let mut permit = self.budget.permit();
        let mut frame = match io::timeout(limits.read_timeout, self.frames.read_frame(size, Some(&mut permit))).await {
            None => return Err(RequestFrameError::ReadTimeout(limits.read_timeout)),
            Some(frame) => frame?,
        };
        let (header, header_len, header_complete) = parse_request_header(&frame)?;
        let _ = frame.split_to(header_len);
        Ok(Some((RequestFrame { header, body: frame, header_complete }, permit)))
    }
}
