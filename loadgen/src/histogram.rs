//! Latency histograms: microsecond HdrHistograms, their percentile summary, the `.hgrm` percentile file
//! format, and the hex-wrapped V2 serialization that carries them from worker processes to the parent.

use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// One hour in microseconds: the largest latency a histogram keeps apart (larger values saturate).
const LATENCY_US_MAX: u64 = 3_600_000_000;

pub fn new_latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("static histogram bounds are valid")
}

/// Records a latency in microseconds, clamped into the histogram's range.
pub fn record_us(histogram: &mut Histogram<u64>, latency_us: u64) {
    histogram.saturating_record(latency_us.clamp(1, LATENCY_US_MAX));
}

/// The percentiles a report prints, in microseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LatencySummary {
    pub count: u64,
    pub min: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub p9999: u64,
    pub max: u64,
    /// (percentile in 0..100, latency µs) at evenly spaced points on the log "tail" axis 1/(1-p),
    /// for plotting without the histogram.
    pub percentiles: Vec<(f64, u64)>,
}

impl LatencySummary {
    pub fn of(histogram: &Histogram<u64>) -> LatencySummary {
        if histogram.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: histogram.len(),
            min: histogram.min(),
            mean: histogram.mean(),
            p50: histogram.value_at_quantile(0.5),
            p90: histogram.value_at_quantile(0.9),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            p9999: histogram.value_at_quantile(0.9999),
            max: histogram.max(),
            percentiles: tail_points(histogram),
        }
    }
}

/// Ten points per decade of 1/(1-p), up to where the sample count still resolves the tail.
fn tail_points(histogram: &Histogram<u64>) -> Vec<(f64, u64)> {
    let count = histogram.len() as f64;
    let mut points = Vec::new();
    for step in 0..=70 {
        let tail = 10f64.powf(step as f64 / 10.0);
        if tail > count.max(1.0) {
            break;
        }
        let quantile = 1.0 - 1.0 / tail;
        points.push((quantile * 100.0, histogram.value_at_quantile(quantile)));
    }
    points.push((100.0, histogram.max()));
    points
}

/// The classic HdrHistogram percentile distribution text (what `HistogramLogProcessor` and the online
/// plotter read), values in microseconds.
pub fn hgrm_text(histogram: &Histogram<u64>) -> String {
    use std::fmt::Write;
    let mut text = String::new();
    let _ = writeln!(text, "{:>12} {:>14} {:>10} {:>14}\n", "Value", "Percentile", "TotalCount", "1/(1-Percentile)");
    let mut total = 0u64;
    for step in histogram.iter_quantiles(5) {
        total += step.count_since_last_iteration();
        let quantile = step.quantile_iterated_to();
        if quantile < 1.0 {
            let inverse = 1.0 / (1.0 - quantile);
            let _ = writeln!(
                text,
                "{:12.3} {:2.12} {:10} {:14.2}",
                step.value_iterated_to() as f64,
                quantile,
                total,
                inverse
            );
        } else {
            let _ = writeln!(text, "{:12.3} {:2.12} {:10}", step.value_iterated_to() as f64, quantile, total);
        }
    }
    let _ = writeln!(text, "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]", histogram.mean(), histogram.stdev());
    let _ = writeln!(text, "#[Max     = {:12.3}, Total count    = {:12}]", histogram.max() as f64, histogram.len());
    let _ =
        writeln!(text, "#[Buckets = {:12}, SubBuckets     = {:12}]", histogram.buckets(), histogram.distinct_values());
    text
}

/// V2-serialized histogram as lowercase hex, to travel in a JSON line.
pub fn to_hex(histogram: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    V2Serializer::new().serialize(histogram, &mut bytes).expect("serializing into a Vec cannot fail");
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

pub fn from_hex(text: &str) -> Result<Histogram<u64>, String> {
    if !text.len().is_multiple_of(2) {
        return Err("odd-length histogram hex".into());
    }
    let bytes = (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&text[at..at + 2], 16).map_err(|err| err.to_string()))
        .collect::<Result<Vec<u8>, String>>()?;
    Deserializer::new().deserialize(&mut bytes.as_slice()).map_err(|err| format!("histogram: {err:?}"))
}

/// Adds `from` into `into` (same bounds by construction, so this cannot fail for our histograms).
pub fn merge(into: &mut Histogram<u64>, from: &Histogram<u64>) {
    into.add(from).expect("loadgen histograms share one range");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_keeps_every_count() {
        let mut histogram = new_latency_histogram();
        for value in [1, 5, 5, 900, 12_345, 3_000_000] {
            record_us(&mut histogram, value);
        }
        let back = from_hex(&to_hex(&histogram)).unwrap();
        assert_eq!(back, histogram);
    }

    #[test]
    fn hgrm_text_ends_with_totals() {
        let mut histogram = new_latency_histogram();
        for value in 1..=1000 {
            record_us(&mut histogram, value);
        }
        let text = hgrm_text(&histogram);
        assert!(text.contains("Total count    =         1000"), "{text}");
        assert!(text.lines().nth(2).unwrap().trim_start().starts_with("1.000"));
    }

    #[test]
    fn summary_tail_points_reach_the_max() {
        let mut histogram = new_latency_histogram();
        for value in 1..=10_000 {
            record_us(&mut histogram, value);
        }
        let summary = LatencySummary::of(&histogram);
        assert_eq!(summary.count, 10_000);
        assert!((summary.p50 as i64 - 5000).abs() < 10);
        assert_eq!(summary.percentiles.last().unwrap().1, summary.max);
        assert!(summary.percentiles.windows(2).all(|pair| pair[0].1 <= pair[1].1));
    }
}
