//! Per publisher, per subscriber sequence accounting: how many distinct messages arrived, which arrived
//! twice, which arrived after a later one. Loss is computed at the end from what was sent.
//!
//! A ring bitmap remembers the last `WINDOW_SEQUENCES` sequence numbers, so a duplicate is recognised
//! if it arrives within that window of the newest message; anything older counts as out of order.

const WINDOW_WORDS: usize = 16;
/// How far behind the newest sequence a duplicate can still be told from a late arrival.
pub const WINDOW_SEQUENCES: u64 = (WINDOW_WORDS * 64) as u64;

#[derive(Debug, Clone, Default)]
pub struct SequenceTracker {
    /// One past the highest sequence seen.
    next_expected: u64,
    seen: [u64; WINDOW_WORDS],
    pub unique: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
}

/// What one arrival was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    InOrder,
    /// Newer than everything before it but skipping some sequences (a loss, or reordering to come).
    Gap,
    /// Older than the newest seen, first time seen.
    Late,
    Duplicate,
}

impl SequenceTracker {
    pub fn record(&mut self, sequence: u64) -> Arrival {
        if sequence >= self.next_expected {
            let gap = sequence > self.next_expected;
            self.clear_range(self.next_expected, sequence);
            self.mark(sequence);
            self.next_expected = sequence + 1;
            self.unique += 1;
            return if gap { Arrival::Gap } else { Arrival::InOrder };
        }
        if self.next_expected - sequence > WINDOW_SEQUENCES {
            // Too old to know whether it is a repeat: counted once, as late.
            self.unique += 1;
            self.out_of_order += 1;
            return Arrival::Late;
        }
        if self.is_marked(sequence) {
            self.duplicates += 1;
            return Arrival::Duplicate;
        }
        self.mark(sequence);
        self.unique += 1;
        self.out_of_order += 1;
        Arrival::Late
    }

    /// Forget the slots that `first..=last` reuse, before they are marked for the new sequences.
    fn clear_range(&mut self, first: u64, last: u64) {
        if last - first >= WINDOW_SEQUENCES {
            self.seen = [0; WINDOW_WORDS];
            return;
        }
        for sequence in first..=last {
            let (word, bit) = Self::slot(sequence);
            self.seen[word] &= !(1 << bit);
        }
    }

    fn mark(&mut self, sequence: u64) {
        let (word, bit) = Self::slot(sequence);
        self.seen[word] |= 1 << bit;
    }

    fn is_marked(&self, sequence: u64) -> bool {
        let (word, bit) = Self::slot(sequence);
        self.seen[word] & (1 << bit) != 0
    }

    fn slot(sequence: u64) -> (usize, u32) {
        (((sequence / 64) % WINDOW_WORDS as u64) as usize, (sequence % 64) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(sequences: &[u64]) -> SequenceTracker {
        let mut tracker = SequenceTracker::default();
        for &sequence in sequences {
            tracker.record(sequence);
        }
        tracker
    }

    #[test]
    fn in_order_stream_has_no_anomalies() {
        let tracker = feed(&(0..10_000).collect::<Vec<_>>());
        assert_eq!((tracker.unique, tracker.duplicates, tracker.out_of_order), (10_000, 0, 0));
    }

    #[test]
    fn gaps_count_as_missing_not_as_anomalies() {
        let tracker = feed(&[0, 1, 5, 6, 9]);
        assert_eq!((tracker.unique, tracker.duplicates, tracker.out_of_order), (5, 0, 0));
    }

    #[test]
    fn repeats_are_duplicates_and_late_arrivals_are_out_of_order() {
        let tracker = feed(&[0, 1, 3, 2, 2, 3, 0, 4, 4]);
        assert_eq!(tracker.unique, 5);
        assert_eq!(tracker.out_of_order, 1, "2 arrived after 3");
        assert_eq!(tracker.duplicates, 4, "2, 3, 0 and 4 again");
    }

    #[test]
    fn window_reuse_does_not_mistake_new_sequences_for_duplicates() {
        let mut tracker = SequenceTracker::default();
        for sequence in 0..WINDOW_SEQUENCES * 3 {
            assert_ne!(tracker.record(sequence), Arrival::Duplicate, "sequence {sequence}");
        }
        assert_eq!(tracker.record(WINDOW_SEQUENCES * 3 - 5), Arrival::Duplicate);
        // A late first arrival just inside the window after a big jump.
        let jump_to = WINDOW_SEQUENCES * 10;
        assert_eq!(tracker.record(jump_to), Arrival::Gap);
        assert_eq!(tracker.record(jump_to - 3), Arrival::Late);
        assert_eq!(tracker.record(jump_to - 3), Arrival::Duplicate);
    }

    #[test]
    fn arrivals_older_than_the_window_are_counted_late_once() {
        let mut tracker = feed(&[0, WINDOW_SEQUENCES + 10]);
        assert_eq!(tracker.record(3), Arrival::Late);
        assert_eq!((tracker.unique, tracker.out_of_order), (3, 1));
    }
}
