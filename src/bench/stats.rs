//! Latency histograms (HDR, microseconds) and what is derived from them: percentile summaries,
//! HdrHistogram percentile-distribution files (`.hgrm`), JSON.

use std::io::Write;
use std::path::Path;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency recorded (one hour, in microseconds); larger values are clamped.
pub const MAX_LATENCY_US: u64 = 3_600_000_000;

/// A latency histogram in microseconds, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

/// Records `micros`, clamped into the histogram's range.
pub fn record(histogram: &mut Histogram<u64>, micros: u64) {
    let _ = histogram.record(micros.clamp(1, MAX_LATENCY_US));
}

/// The percentiles every report shows.
pub const PERCENTILES: [(f64, &str); 5] =
    [(50.0, "p50"), (90.0, "p90"), (99.0, "p99"), (99.9, "p99.9"), (99.99, "p99.99")];

/// Latency percentiles in microseconds.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct LatencySummary {
    /// Samples.
    pub count: u64,
    /// Mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// 99.99th percentile.
    pub p9999_us: u64,
    /// Largest.
    pub max_us: u64,
}

/// Percentiles of a histogram.
pub fn summarize(h: &Histogram<u64>) -> LatencySummary {
    if h.is_empty() {
        return LatencySummary::default();
    }
    LatencySummary {
        count: h.len(),
        mean_us: h.mean(),
        p50_us: h.value_at_percentile(50.0),
        p90_us: h.value_at_percentile(90.0),
        p99_us: h.value_at_percentile(99.0),
        p999_us: h.value_at_percentile(99.9),
        p9999_us: h.value_at_percentile(99.99),
        max_us: h.max(),
    }
}

impl LatencySummary {
    /// One line: "p50 1.23 ms  p90 ... max ...".
    pub fn line(&self) -> String {
        if self.count == 0 {
            return "no samples".to_owned();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        format!(
            "p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  p99.99 {:.3} ms  max {:.3} ms",
            ms(self.p50_us),
            ms(self.p90_us),
            ms(self.p99_us),
            ms(self.p999_us),
            ms(self.p9999_us),
            ms(self.max_us)
        )
    }
}

/// Writes the histogram as an HdrHistogram percentile distribution (the `.hgrm` text format
/// that HdrHistogram's plotter reads), values in milliseconds.
pub fn write_hgrm(h: &Histogram<u64>, path: &Path) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "{:>12} {:>14} {:>10} {:>14}\n", "Value", "Percentile", "TotalCount", "1/(1-Percentile)")?;
    if !h.is_empty() {
        let mut total = 0u64;
        for v in h.iter_quantiles(5) {
            total += v.count_since_last_iteration();
            let q = v.quantile_iterated_to();
            let value_ms = h.highest_equivalent(v.value_iterated_to()) as f64 / 1000.0;
            if q < 1.0 {
                writeln!(out, "{value_ms:12.3} {q:2.12} {total:10} {:14.2}", 1.0 / (1.0 - q))?;
            } else {
                writeln!(out, "{value_ms:12.3} {q:2.12} {total:10}")?;
            }
        }
    }
    let (mean, stddev, max) =
        if h.is_empty() { (0.0, 0.0, 0.0) } else { (h.mean() / 1000.0, h.stdev() / 1000.0, h.max() as f64 / 1000.0) };
    writeln!(out, "#[Mean    = {mean:12.3}, StdDeviation   = {stddev:12.3}]")?;
    writeln!(out, "#[Max     = {max:12.3}, Total count    = {:12}]", h.len())?;
    writeln!(out, "#[Buckets = {:12}, SubBuckets     = {:12}]", h.buckets(), h.distinct_values())?;
    out.flush()
}

/// Latency from a message's intended send time to `now`, in microseconds (zero if `now` is
/// earlier, which only clock steps could cause). Measuring from the intended time rather than
/// from when the tool got round to sending is what corrects for coordinated omission.
pub fn latency_us(intended_us: u64, now_us: u64) -> u64 {
    now_us.saturating_sub(intended_us)
}

/// Microseconds since the Unix epoch (the clock carried in messages for end-to-end latency).
pub fn wall_clock_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_uniform_distribution() {
        let mut h = new_histogram();
        for v in 1..=100_000u64 {
            record(&mut h, v);
        }
        let s = summarize(&h);
        let close = |got: u64, want: u64| (got as f64 - want as f64).abs() <= want as f64 * 0.001 + 1.0;
        assert!(close(s.p50_us, 50_000), "{s:?}");
        assert!(close(s.p90_us, 90_000), "{s:?}");
        assert!(close(s.p99_us, 99_000), "{s:?}");
        assert!(close(s.p999_us, 99_900), "{s:?}");
        assert!(close(s.p9999_us, 99_990), "{s:?}");
        assert!(close(s.max_us, 100_000), "{s:?}");
        assert!((s.mean_us - 50_000.5).abs() < 60.0, "{s:?}");
    }

    #[test]
    fn a_bimodal_distribution_shows_its_tail() {
        let mut h = new_histogram();
        for _ in 0..9_900 {
            record(&mut h, 100);
        }
        for _ in 0..100 {
            record(&mut h, 50_000);
        }
        let s = summarize(&h);
        assert_eq!(s.p50_us, 100);
        assert_eq!(s.p99_us, 100);
        assert!(s.p999_us >= 49_950, "{s:?}");
    }

    #[test]
    fn coordinated_omission_correction_charges_the_backlog() {
        // Messages scheduled every 1 ms; the system stalls 100 ms after the first, then every
        // queued message is acknowledged at once. Measured from the schedule, the stall shows
        // in every delayed message, not in one sample only.
        let mut corrected = new_histogram();
        let stall_end = 100_000u64;
        for i in 0..100u64 {
            let intended = i * 1000;
            corrected.record(latency_us(intended, stall_end.max(intended) + 50)).unwrap();
        }
        assert!(summarize(&corrected).p50_us >= 49_000, "half the messages waited 50 ms or more");
    }

    #[test]
    fn hgrm_output_has_the_expected_shape() {
        let mut h = new_histogram();
        for v in [1000u64, 2000, 3000, 4000] {
            record(&mut h, v);
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.hgrm");
        write_hgrm(&h, &path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)"), "{text}");
        // HDR reports the highest value equivalent to the largest sample (4000 us within 3
        // significant digits), printed in milliseconds.
        let max_line = text.lines().find(|l| l.starts_with("#[Max")).expect("a Max line");
        let max_ms: f64 = max_line.split(['=', ',']).nth(1).unwrap().trim().parse().unwrap();
        assert!((4.0..4.01).contains(&max_ms), "{max_line}");
        let last_data = text.lines().rfind(|l| !l.starts_with('#') && !l.trim().is_empty()).unwrap();
        assert!(last_data.contains("1.000000000000") && last_data.trim_end().ends_with('4'), "{last_data}");
    }
}
