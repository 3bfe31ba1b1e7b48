//! Bounds-checked readers and writers for Kafka's primitive wire types, for the hand-written hot
//! paths (request headers, Produce requests, Fetch responses). Every read checks the remaining
//! length first and fails with [`WireError`] instead of panicking; no count read from the wire
//! is used to size an allocation.

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::ApiKey;

/// A malformed or truncated encoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed request: {0}")]
pub struct WireError(pub &'static str);

/// A cursor over a byte slice.
pub struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// Reads `bytes` from the start.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    /// Current position.
    pub fn position(&self) -> usize {
        self.at
    }

    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        if self.remaining() < n {
            return Err(WireError(what));
        }
        let slice = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(slice)
    }

    /// Skips `n` bytes.
    pub fn skip(&mut self, n: usize, what: &'static str) -> Result<(), WireError> {
        self.take(n, what).map(|_| ())
    }

    /// int16.
    pub fn i16(&mut self) -> Result<i16, WireError> {
        Ok(i16::from_be_bytes(self.take(2, "truncated int16")?.try_into().expect("2")))
    }

    /// int32.
    pub fn i32(&mut self) -> Result<i32, WireError> {
        Ok(i32::from_be_bytes(self.take(4, "truncated int32")?.try_into().expect("4")))
    }

    /// int64.
    pub fn i64(&mut self) -> Result<i64, WireError> {
        Ok(i64::from_be_bytes(self.take(8, "truncated int64")?.try_into().expect("8")))
    }

    /// uuid (16 bytes).
    pub fn uuid(&mut self) -> Result<uuid::Uuid, WireError> {
        Ok(uuid::Uuid::from_bytes(self.take(16, "truncated uuid")?.try_into().expect("16")))
    }

    /// unsigned varint (at most 5 bytes).
    pub fn uvarint(&mut self) -> Result<u32, WireError> {
        let mut value = 0u32;
        for i in 0..5 {
            let byte = self.take(1, "truncated varint")?[0];
            value |= u32::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(WireError("varint longer than 5 bytes"))
    }

    /// nullable string with an int16 length; returns the byte range.
    pub fn nullable_string(&mut self) -> Result<Option<&'a [u8]>, WireError> {
        match self.i16()? {
            -1 => Ok(None),
            n if n >= 0 => Ok(Some(self.take(n as usize, "truncated string")?)),
            _ => Err(WireError("negative string length")),
        }
    }

    /// compact nullable string (uvarint length + 1).
    pub fn compact_nullable_string(&mut self) -> Result<Option<&'a [u8]>, WireError> {
        match self.uvarint()? {
            0 => Ok(None),
            n => Ok(Some(self.take(n as usize - 1, "truncated compact string")?)),
        }
    }

    /// nullable bytes with an int32 length; returns the range within the reader's slice.
    pub fn nullable_bytes_range(&mut self) -> Result<Option<std::ops::Range<usize>>, WireError> {
        match self.i32()? {
            -1 => Ok(None),
            n if n >= 0 => {
                let start = self.at;
                self.skip(n as usize, "truncated bytes")?;
                Ok(Some(start..self.at))
            }
            _ => Err(WireError("negative bytes length")),
        }
    }

    /// compact nullable bytes (uvarint length + 1); returns the range.
    pub fn compact_nullable_bytes_range(&mut self) -> Result<Option<std::ops::Range<usize>>, WireError> {
        match self.uvarint()? {
            0 => Ok(None),
            n => {
                let start = self.at;
                self.skip(n as usize - 1, "truncated compact bytes")?;
                Ok(Some(start..self.at))
            }
        }
    }

    /// int32 array length (-1 for null, which callers treat as empty).
    pub fn array_len(&mut self) -> Result<usize, WireError> {
        match self.i32()? {
            -1 => Ok(0),
            n if n >= 0 => Ok(n as usize),
            _ => Err(WireError("negative array length")),
        }
    }

    /// compact array length (uvarint length + 1; 0 is null, treated as empty).
    pub fn compact_array_len(&mut self) -> Result<usize, WireError> {
        Ok(self.uvarint()?.saturating_sub(1) as usize)
    }

    /// Skips a tagged-field section.
    pub fn skip_tagged_fields(&mut self) -> Result<(), WireError> {
        let count = self.uvarint()?;
        for _ in 0..count {
            let _tag = self.uvarint()?;
            let size = self.uvarint()? as usize;
            self.skip(size, "truncated tagged field")?;
        }
        Ok(())
    }
}

/// A topic name as the protocol crate's messages carry it.
pub fn topic_name(name: &str) -> kafka_protocol::messages::TopicName {
    kafka_protocol::messages::TopicName(kafka_protocol::protocol::StrBytes::from_string(name.to_owned()))
}

/// Appends an unsigned varint.
pub fn put_uvarint(buf: &mut BytesMut, mut value: u32) {
    while value >= 0x80 {
        buf.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    buf.put_u8(value as u8);
}

/// Appends an int32-length array header, or a compact one when `flexible`.
pub fn put_array_len(buf: &mut BytesMut, len: usize, flexible: bool) {
    if flexible {
        put_uvarint(buf, len as u32 + 1);
    } else {
        buf.put_i32(len as i32);
    }
}

/// Appends a string (int16 length), or a compact string when `flexible`.
pub fn put_string(buf: &mut BytesMut, value: &str, flexible: bool) {
    if flexible {
        put_uvarint(buf, value.len() as u32 + 1);
    } else {
        buf.put_i16(value.len() as i16);
    }
    buf.put_slice(value.as_bytes());
}

/// Appends the length prefix of a nullable bytes field holding `len` bytes (`None` for null).
pub fn put_bytes_len(buf: &mut BytesMut, len: Option<usize>, flexible: bool) {
    match (len, flexible) {
        (None, true) => put_uvarint(buf, 0),
        (None, false) => buf.put_i32(-1),
        (Some(n), true) => put_uvarint(buf, n as u32 + 1),
        (Some(n), false) => buf.put_i32(n as i32),
    }
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

/// Parses a request header. For an API key or version this broker does not know, only the fixed
/// part is parsed (the rest of the header's layout depends on the version).
pub fn parse_request_header(frame: &[u8]) -> Result<(RequestHeader, usize, bool), WireError> {
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

    #[test]
    fn varints_round_trip_and_overlong_is_refused() {
        for value in [0u32, 1, 127, 128, 300, 16_384, u32::MAX] {
            let mut buf = BytesMut::new();
            put_uvarint(&mut buf, value);
            assert_eq!(Reader::new(&buf).uvarint(), Ok(value));
        }
        assert!(Reader::new(&[0xff; 6]).uvarint().is_err());
    }

    #[test]
    fn truncation_is_an_error_not_a_panic() {
        let mut r = Reader::new(&[0, 5, b'a']);
        assert!(r.nullable_string().is_err());
        let mut r = Reader::new(&[0, 0, 0, 9, 1]);
        assert!(r.nullable_bytes_range().is_err());
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xfe]);
        assert!(r.array_len().is_err());
    }

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
            let (parsed, len, complete) = parse_request_header(&buf).unwrap();
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
        let (parsed, len, complete) = parse_request_header(&buf).unwrap();
        assert!(!complete);
        assert_eq!((parsed.correlation_id, len), (7, 8));
    }
}
