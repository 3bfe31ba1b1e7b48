//! Request framing: a 4-byte size, then the request header and body. Frames are read into a
//! per-connection buffer and split off it without copying; each frame's size is checked against
//! a limit chosen by its API before any of it is buffered.

use std::io;

use bytes::{Buf, BytesMut};
use compio::BufResult;
use compio::buf::{IntoInner, IoBufMut};
use kafka_protocol::messages::ApiKey;

use super::wire::{Reader, WireError};
use crate::io::net::{AsyncRead, TcpStream};

/// Bytes read per socket read when frames are small.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// api_key + api_version + correlation_id.
const FIXED_HEADER_BYTES: usize = 8;

/// Frame size limits.
#[derive(Clone, Copy, Debug)]
pub struct FrameLimits {
    /// For Produce.
    pub produce_max_bytes: usize,
    /// For every other API.
    pub control_max_bytes: usize,
}

/// Why a connection's byte stream cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// Socket error.
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
    /// The peer closed in the middle of a frame.
    #[error("connection closed in the middle of a request")]
    Truncated,
    /// Size field out of bounds.
    #[error("request of {size} bytes exceeds the {limit}-byte limit for this API")]
    TooLarge {
        /// Claimed size.
        size: i64,
        /// Limit that applied.
        limit: usize,
    },
    /// Size too small for a header.
    #[error("request size {0} is too small for a request header")]
    TooSmall(i64),
    /// The header does not parse.
    #[error(transparent)]
    Malformed(#[from] WireError),
}

/// A request header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHeader {
    /// API key.
    pub api_key: i16,
    /// API version.
    pub api_version: i16,
    /// Correlation id echoed in the response.
    pub correlation_id: i32,
    /// Client id, if sent.
    pub client_id: Option<String>,
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

/// Reads frames from a socket.
pub struct FrameReader {
    stream: TcpStream,
    buf: BytesMut,
    limits: FrameLimits,
}

impl FrameReader {
    /// Reads from `stream`.
    pub fn new(stream: TcpStream, limits: FrameLimits) -> Self {
        Self { stream, buf: BytesMut::with_capacity(READ_CHUNK_BYTES), limits }
    }

    /// Reads until `self.buf` holds at least `want` bytes; false on a clean EOF before any byte
    /// of a new frame.
    async fn fill(&mut self, want: usize) -> Result<bool, FrameError> {
        while self.buf.len() < want {
            let spare = self.buf.capacity() - self.buf.len();
            if spare < want - self.buf.len() || spare == 0 {
                self.buf.reserve((want - self.buf.len()).max(READ_CHUNK_BYTES));
            }
            let buf = std::mem::take(&mut self.buf);
            // `read` fills a buffer from its start; `uninit()` aims it past what is already there.
            let BufResult(result, buf) = self.stream.read(buf.uninit()).await;
            self.buf = buf.into_inner();
            match result {
                Ok(0) if self.buf.is_empty() => return Ok(false),
                Ok(0) => return Err(FrameError::Truncated),
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err.into()),
            }
        }
        Ok(true)
    }

    /// The next request, or `None` when the peer closed cleanly between requests.
    pub async fn next(&mut self) -> Result<Option<RequestFrame>, FrameError> {
        if !self.fill(4).await? {
            return Ok(None);
        }
        let size = i64::from(i32::from_be_bytes(self.buf[..4].try_into().expect("4 bytes")));
        if size < FIXED_HEADER_BYTES as i64 {
            return Err(FrameError::TooSmall(size));
        }
        if !self.fill(4 + 2).await? {
            return Err(FrameError::Truncated);
        }
        let api_key = i16::from_be_bytes(self.buf[4..6].try_into().expect("2 bytes"));
        let limit = if api_key == ApiKey::Produce as i16 {
            self.limits.produce_max_bytes
        } else {
            self.limits.control_max_bytes
        };
        if size > limit as i64 {
            return Err(FrameError::TooLarge { size, limit });
        }
        let total = 4 + size as usize;
        if !self.fill(total).await? {
            return Err(FrameError::Truncated);
        }
        let mut frame = self.buf.split_to(total);
        frame.advance(4);
        let (header, header_len, header_complete) = parse_header(&frame)?;
        frame.advance(header_len);
        Ok(Some(RequestFrame { header, body: frame, header_complete }))
    }
}

/// Parses a request header. For an API key or version this broker does not know, only the fixed
/// part is parsed (the rest of the header's layout depends on the version).
pub fn parse_header(frame: &[u8]) -> Result<(RequestHeader, usize, bool), WireError> {
    let mut r = Reader::new(frame);
    let api_key = r.i16()?;
    let api_version = r.i16()?;
    let correlation_id = r.i32()?;
    let mut header = RequestHeader { api_key, api_version, correlation_id, client_id: None };
    let Ok(key) = ApiKey::try_from(api_key) else {
        return Ok((header, r.position(), false));
    };
    let range = key.valid_versions();
    if api_version < range.min || api_version > range.max {
        return Ok((header, r.position(), false));
    }
    let header_version = key.request_header_version(api_version);
    if header_version >= 1 {
        header.client_id = r.nullable_string()?.map(|b| String::from_utf8_lossy(b).into_owned());
    }
    if header_version >= 2 {
        r.skip_tagged_fields()?;
    }
    Ok((header, r.position(), true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::RequestHeader as CrateHeader;
    use kafka_protocol::protocol::{Encodable, StrBytes};

    #[test]
    fn parses_headers_the_crate_encodes() {
        for (key, version) in
            [(ApiKey::Produce, 3i16), (ApiKey::Produce, 9), (ApiKey::ApiVersions, 3), (ApiKey::Metadata, 12)]
        {
            let header = CrateHeader::default()
                .with_request_api_key(key as i16)
                .with_request_api_version(version)
                .with_correlation_id(42)
                .with_client_id(Some(StrBytes::from_static_str("me")));
            let mut buf = BytesMut::new();
            header.encode(&mut buf, key.request_header_version(version)).unwrap();
            buf.extend_from_slice(b"body");
            let (parsed, len, complete) = parse_header(&buf).unwrap();
            assert!(complete);
            assert_eq!(&buf[len..], b"body");
            assert_eq!(parsed.correlation_id, 42);
            assert_eq!(parsed.client_id.as_deref(), Some("me"));
        }
    }

    #[test]
    fn unknown_versions_keep_only_the_fixed_part() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&18i16.to_be_bytes());
        buf.extend_from_slice(&99i16.to_be_bytes());
        buf.extend_from_slice(&7i32.to_be_bytes());
        let (parsed, len, complete) = parse_header(&buf).unwrap();
        assert!(!complete);
        assert_eq!((parsed.correlation_id, len), (7, 8));
    }
}
