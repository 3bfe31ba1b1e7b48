//! Ids shared by every layer.
//!
//! Ownership: plain `Copy` values, sent between shards by value.

/// A partition: its topic's id and its index within the topic.
pub type TopicPartition = (uuid::Uuid, i32);

/// A broker's node id (`node.id`). Kafka's wire type for it is int32.
pub type BrokerId = i32;

/// "No broker" on the wire (a partition without a leader, an unknown coordinator).
pub const NO_BROKER: BrokerId = -1;

/// A new cluster id, in the form of Kafka's: 16 random bytes, URL-safe base64 without padding.
pub fn new_cluster_id() -> String {
    base64_url(uuid::Uuid::new_v4().as_bytes())
}

/// URL-safe base64 without padding.
fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    let mut bits = 0u32;
    let mut count = 0;
    for byte in bytes {
        bits = (bits << 8) | u32::from(*byte);
        count += 8;
        while count >= 6 {
            count -= 6;
            out.push(ALPHABET[((bits >> count) & 63) as usize] as char);
        }
    }
    if count > 0 {
        out.push(ALPHABET[((bits << (6 - count)) & 63) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ids_look_like_kafkas() {
        let id = new_cluster_id();
        assert_eq!(id.len(), 22);
        assert!(id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(base64_url(b"Man"), "TWFu");
        assert_eq!(base64_url(&[0xff; 16]).len(), 22);
    }
}
