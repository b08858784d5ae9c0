//! Load averages as Mosquitto publishes them under `$SYS/broker/load/...`: per counter, how many per
//! minute over the last 1, 5 and 15 minutes, as exponentially decayed averages (the same form as the
//! Unix load average), updated at every `$SYS` interval.

/// The averaging windows, in minutes, and the topic suffix of each.
pub const WINDOWS: [(f64, &str); 3] = [(1.0, "1min"), (5.0, "5min"), (15.0, "15min")];

/// The decayed per-minute rates of one counter.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadAverage {
    last_count: Option<u64>,
    per_minute: [f64; 3],
}

impl LoadAverage {
    /// Takes the counter's value `elapsed_secs` after the previous update. The first update only sets
    /// the base (no rate is known yet).
    pub fn update(&mut self, count: u64, elapsed_secs: f64) {
        let Some(last) = self.last_count.replace(count) else { return };
        if elapsed_secs <= 0.0 {
            return;
        }
        let rate_per_minute = count.saturating_sub(last) as f64 * 60.0 / elapsed_secs;
        for (average, (window_minutes, _)) in self.per_minute.iter_mut().zip(WINDOWS) {
            let keep = (-elapsed_secs / (60.0 * window_minutes)).exp();
            *average = *average * keep + rate_per_minute * (1.0 - keep);
        }
    }

    /// Per-minute averages over 1, 5 and 15 minutes.
    pub fn per_minute(&self) -> [f64; 3] {
        self.per_minute
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steady_rate_is_approached_fastest_by_the_shortest_window() {
        let mut load = LoadAverage::default();
        load.update(0, 10.0);
        assert_eq!(load.per_minute(), [0.0; 3], "the first update only sets the base");
        // 10 per second = 600 per minute, for 5 minutes of 10 s intervals.
        for step in 1..=30 {
            load.update(step * 100, 10.0);
        }
        let [one, five, fifteen] = load.per_minute();
        assert!((one - 600.0).abs() < 600.0 * 0.01, "{one}");
        assert!(five < one && fifteen < five && fifteen > 0.0, "{five} {fifteen}");
    }

    #[test]
    fn a_counter_that_stops_moving_decays_towards_zero() {
        let mut load = LoadAverage::default();
        load.update(0, 10.0);
        load.update(6000, 60.0);
        let before = load.per_minute()[0];
        load.update(6000, 60.0);
        assert!(load.per_minute()[0] < before * 0.5);
    }
}
