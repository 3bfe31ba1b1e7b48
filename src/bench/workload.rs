//! A load-test workload: from a TOML file, from flags, or both (flags win).

use serde::{Deserialize, Serialize};

/// How records are keyed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyMode {
    /// No keys: batches go to partitions in turn.
    None,
    /// A random key per record.
    Random,
    /// One of this many distinct keys, chosen at random.
    Distinct(u64),
}

impl KeyMode {
    /// Parses `none`, `random` or a number of distinct keys.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "none" => Ok(Self::None),
            "random" => Ok(Self::Random),
            n => match n.parse::<u64>() {
                Ok(n) if n > 0 => Ok(Self::Distinct(n)),
                _ => Err(format!("keys {text:?}: expected none, random or a positive number of distinct keys")),
            },
        }
    }
}

/// The send rate.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Rate {
    /// As fast as the broker acknowledges.
    Max,
    /// This many messages per second in total, on a fixed schedule (latency is measured from
    /// each message's scheduled send time: coordinated omission corrected).
    PerSecond(f64),
}

impl Rate {
    /// Parses `max` or a number of messages per second.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "max" => Ok(Self::Max),
            n => match n.parse::<f64>() {
                Ok(r) if r > 0.0 && r.is_finite() => Ok(Self::PerSecond(r)),
                _ => Err(format!("rate {text:?}: expected max or a positive number of messages per second")),
            },
        }
    }
}

/// Everything a benchmark run does. Field names are the TOML keys.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Workload {
    /// A name for reports.
    pub name: String,
    /// Topic name (a suffix -N is added when there are several); default a fresh random name.
    pub topic: Option<String>,
    /// Number of topics.
    pub topics: usize,
    /// Partitions per topic.
    pub partitions: i32,
    /// Create the topics before the run (and delete them after).
    pub create_topics: bool,
    /// Producer tasks.
    pub producers: usize,
    /// Consumer tasks per consumer group.
    pub consumers: usize,
    /// Consumer groups; each reads every record.
    pub consumer_groups: usize,
    /// Message value size in bytes.
    pub message_size: usize,
    /// Keys: "none", "random" or a number of distinct keys.
    pub keys: String,
    /// Rate: "max" or messages per second (total over all producers).
    pub rate: String,
    /// acks: 0, 1 or -1.
    pub acks: i16,
    /// Compression: none, gzip, snappy, lz4, zstd.
    pub compression: String,
    /// Bytes per produced batch.
    pub batch_bytes: usize,
    /// Longest a partly filled batch waits, in milliseconds.
    pub linger_ms: u64,
    /// Produce requests in flight per producer.
    pub max_in_flight: usize,
    /// Replication factor of the topics created (-1: the broker's default).
    pub replication_factor: i16,
    /// Seconds of warm-up (reported live, left out of the summary).
    pub warmup_secs: u64,
    /// Seconds measured.
    pub duration_secs: u64,
    /// Threads to spread producers and consumers over (0: one per core).
    pub threads: usize,
}

impl Default for Workload {
    fn default() -> Self {
        Self {
            name: "default".into(),
            topic: None,
            topics: 1,
            partitions: 16,
            create_topics: true,
            producers: 1,
            consumers: 1,
            consumer_groups: 1,
            message_size: 1024,
            keys: "none".into(),
            rate: "max".into(),
            acks: -1,
            compression: "none".into(),
            batch_bytes: 64 * 1024,
            linger_ms: 1,
            max_in_flight: 5,
            replication_factor: -1,
            warmup_secs: 5,
            duration_secs: 30,
            threads: 0,
        }
    }
}

impl Workload {
    /// Parses a TOML workload file's text.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let workload: Workload = toml::from_str(text).map_err(|e| format!("workload file: {e}"))?;
        workload.validate()?;
        Ok(workload)
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<(), String> {
        KeyMode::parse(&self.keys)?;
        Rate::parse(&self.rate)?;
        if crate::model::records::compression_id(&self.compression).is_none() {
            return Err(format!("compression {:?}: expected none, gzip, snappy, lz4 or zstd", self.compression));
        }
        if !matches!(self.acks, -1..=1) {
            return Err(format!("acks {}: expected -1, 0 or 1", self.acks));
        }
        if self.topics == 0 || self.partitions <= 0 {
            return Err("topics and partitions must be positive".into());
        }
        if self.producers == 0 && (self.consumers == 0 || self.consumer_groups == 0) {
            return Err("nothing to do: no producers and no consumers".into());
        }
        if self.message_size < 8 {
            return Err("message_size must be at least 8 bytes (the send time is carried in the value)".into());
        }
        if self.batch_bytes < self.message_size || self.batch_bytes > 64 << 20 {
            return Err("batch_bytes must be at least message_size and at most 64 MiB".into());
        }
        if self.max_in_flight == 0 || self.max_in_flight > 1024 {
            return Err("max_in_flight must be between 1 and 1024".into());
        }
        if self.duration_secs == 0 {
            return Err("duration must be at least one second".into());
        }
        Ok(())
    }

    /// The parsed key mode.
    pub fn key_mode(&self) -> KeyMode {
        KeyMode::parse(&self.keys).expect("validated")
    }

    /// The parsed rate.
    pub fn rate(&self) -> Rate {
        Rate::parse(&self.rate).expect("validated")
    }

    /// The topic names.
    pub fn topic_names(&self, default_base: &str) -> Vec<String> {
        let base = self.topic.clone().unwrap_or_else(|| default_base.to_owned());
        if self.topics == 1 { vec![base] } else { (0..self.topics).map(|i| format!("{base}-{i}")).collect() }
    }

    /// Worker threads to use.
    pub fn thread_count(&self) -> usize {
        let wanted =
            if self.threads == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { self.threads };
        wanted.min(self.producers + self.consumers * self.consumer_groups).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_workload_file_with_defaults_for_the_rest() {
        let w = Workload::from_toml(
            "name = \"w1\"\npartitions = 4\nrate = \"5000\"\nkeys = \"100\"\ncompression = \"zstd\"\n",
        )
        .unwrap();
        assert_eq!(w.partitions, 4);
        assert_eq!(w.rate(), Rate::PerSecond(5000.0));
        assert_eq!(w.key_mode(), KeyMode::Distinct(100));
        assert_eq!(w.message_size, 1024);
    }

    #[test]
    fn refuses_unknown_keys_and_bad_values() {
        assert!(Workload::from_toml("partitons = 4").unwrap_err().contains("unknown field"));
        assert!(Workload::from_toml("rate = \"fast\"").is_err());
        assert!(Workload::from_toml("keys = \"0\"").is_err());
        assert!(Workload::from_toml("acks = 2").is_err());
        assert!(Workload::from_toml("compression = \"brotli\"").is_err());
        assert!(Workload::from_toml("message_size = 4").is_err());
        assert!(Workload::from_toml("batch_bytes = 10\nmessage_size = 100").is_err());
    }

    #[test]
    fn topic_names_get_suffixes_when_there_are_several() {
        let mut w = Workload { topic: Some("t".into()), ..Workload::default() };
        assert_eq!(w.topic_names("x"), vec!["t"]);
        w.topics = 2;
        assert_eq!(w.topic_names("x"), vec!["t-0", "t-1"]);
    }
}
