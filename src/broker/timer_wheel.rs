//! `TimerWheel<K>`: every deadline of a shard (connect timeout, keep-alive, will delay, session expiry) in
//! one hashed timing wheel, instead of a timer per connection.
//!
//! Slots are `TICK` wide; an entry due further than one revolution away stays in its slot until its tick
//! comes round. A bitmap of non-empty slots finds the next deadline without scanning empty slots.
//! Entries are normally not removed early: the owner re-checks an expired key against its own state (a
//! keep-alive entry whose connection sent a packet since is simply re-armed), which keeps packet handling
//! free of wheel updates. `cancel` exists for the one entry that can never matter again (a connection
//! that moved to its home shard).

use std::time::{Duration, Instant};

const TICK: Duration = Duration::from_millis(100);
const SLOT_COUNT: usize = 1024;
const BITMAP_WORDS: usize = SLOT_COUNT / 64;

struct Entry<K> {
    due_tick: u64,
    key: K,
}

pub struct TimerWheel<K> {
    /// Tick 0 starts here: the `now` of the first insert.
    origin: Option<Instant>,
    /// Every tick before this one has been fired.
    next_tick: u64,
    slots: Vec<Vec<Entry<K>>>,
    occupied: [u64; BITMAP_WORDS],
    len: usize,
}

impl<K> Default for TimerWheel<K> {
    fn default() -> Self {
        TimerWheel {
            origin: None,
            next_tick: 0,
            slots: (0..SLOT_COUNT).map(|_| Vec::new()).collect(),
            occupied: [0; BITMAP_WORDS],
            len: 0,
        }
    }
}

impl<K> TimerWheel<K> {
    /// Arms `key` to fire at the first tick at or after `deadline` (`now` anchors tick 0 on first use).
    pub fn insert(&mut self, now: Instant, deadline: Instant, key: K) {
        let origin = *self.origin.get_or_insert(now);
        let since = deadline.saturating_duration_since(origin);
        let due_tick = since.as_nanos().div_ceil(TICK.as_nanos()) as u64;
        let due_tick = due_tick.max(self.next_tick);
        let slot = (due_tick % SLOT_COUNT as u64) as usize;
        self.slots[slot].push(Entry { due_tick, key });
        self.occupied[slot / 64] |= 1 << (slot % 64);
        self.len += 1;
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Removes `key` armed for `deadline` before it fires; false when it is not there (already fired, or
    /// armed for another deadline). For the rare owner that knows the entry can never matter again (a
    /// connection moved to another shard); everything else lets entries fire and re-checks them.
    pub fn cancel(&mut self, deadline: Instant, key: &K) -> bool
    where
        K: PartialEq,
    {
        let Some(origin) = self.origin else {
            return false;
        };
        let due_tick = deadline.saturating_duration_since(origin).as_nanos().div_ceil(TICK.as_nanos()) as u64;
        if due_tick < self.next_tick {
            return false;
        }
        let slot = (due_tick % SLOT_COUNT as u64) as usize;
        let entries = &mut self.slots[slot];
        let Some(index) = entries.iter().position(|entry| entry.due_tick == due_tick && entry.key == *key) else {
            return false;
        };
        entries.swap_remove(index);
        self.len -= 1;
        if entries.is_empty() {
            *entries = Vec::new();
            self.occupied[slot / 64] &= !(1 << (slot % 64));
        }
        true
    }

    /// Moves every key due at `now` into `due`.
    pub fn expire(&mut self, now: Instant, due: &mut Vec<K>) {
        let Some(origin) = self.origin else { return };
        let now_tick = (now.saturating_duration_since(origin).as_nanos() / TICK.as_nanos()) as u64;
        while self.next_tick <= now_tick && self.len > 0 {
            let slots_left = now_tick - self.next_tick + 1;
            if slots_left > SLOT_COUNT as u64 {
                // A long sleep: one pass over every slot handles all of them.
                self.drain_due(now_tick, 0..SLOT_COUNT, due);
                self.next_tick = now_tick + 1;
                break;
            }
            let slot = (self.next_tick % SLOT_COUNT as u64) as usize;
            self.drain_due(now_tick, slot..slot + 1, due);
            self.next_tick += 1;
        }
        self.next_tick = self.next_tick.max(now_tick + 1);
    }

    /// The start of the next non-empty slot's tick (an upper bound on how long the shard may sleep).
    pub fn next_deadline(&self) -> Option<Instant> {
        let origin = self.origin?;
        if self.len == 0 {
            return None;
        }
        let start = (self.next_tick % SLOT_COUNT as u64) as usize;
        let distance = (0..SLOT_COUNT)
            .find(|offset| {
                let slot = (start + offset) % SLOT_COUNT;
                self.occupied[slot / 64] & (1 << (slot % 64)) != 0
            })
            .unwrap_or(0) as u64;
        let tick = self.next_tick + distance;
        Some(origin + TICK * tick as u32)
    }

    fn drain_due(&mut self, now_tick: u64, slots: std::ops::Range<usize>, due: &mut Vec<K>) {
        for slot in slots {
            let entries = &mut self.slots[slot];
            let before = entries.len();
            let mut index = 0;
            while index < entries.len() {
                if entries[index].due_tick <= now_tick {
                    due.push(entries.swap_remove(index).key);
                } else {
                    index += 1;
                }
            }
            self.len -= before - entries.len();
            if entries.is_empty() {
                // Give the memory back: a burst of connections must not pin slot capacity forever.
                *entries = Vec::new();
                self.occupied[slot / 64] &= !(1 << (slot % 64));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancelled_entry_never_fires_and_others_in_its_slot_still_do() {
        let start = Instant::now();
        let mut wheel = TimerWheel::default();
        let deadline = start + Duration::from_secs(10);
        wheel.insert(start, deadline, "moved");
        wheel.insert(start, deadline, "stays");
        assert!(wheel.cancel(deadline, &"moved"));
        assert!(!wheel.cancel(deadline, &"moved"), "only once");
        assert!(!wheel.cancel(deadline + Duration::from_secs(1), &"stays"), "another deadline");
        assert_eq!(wheel.len(), 1);
        let mut due = Vec::new();
        wheel.expire(deadline, &mut due);
        assert_eq!(due, vec!["stays"]);
        assert!(!wheel.cancel(deadline, &"stays"), "already fired");
        assert_eq!(wheel.next_deadline(), None);
    }

    #[test]
    fn first_deadline_far_ahead_does_not_fire_early() {
        let start = Instant::now();
        let mut wheel = TimerWheel::default();
        wheel.insert(start, start + Duration::from_secs(5), "timeout");
        let mut due = Vec::new();
        wheel.expire(start + Duration::from_secs(4), &mut due);
        assert!(due.is_empty());
        wheel.expire(start + Duration::from_secs(5), &mut due);
        assert_eq!(due, vec!["timeout"]);
    }

    #[test]
    fn fires_at_deadline_not_before() {
        let start = Instant::now();
        let mut wheel = TimerWheel::default();
        wheel.insert(start, start, "anchor");
        wheel.insert(start, start + Duration::from_millis(1500), "keepalive");
        wheel.insert(start, start + Duration::from_secs(3), "later");
        let mut due = Vec::new();
        wheel.expire(start, &mut due);
        assert_eq!(due, vec!["anchor"]);
        due.clear();
        wheel.expire(start + Duration::from_millis(1400), &mut due);
        assert!(due.is_empty());
        assert_eq!(wheel.next_deadline(), Some(start + Duration::from_millis(1500)));
        wheel.expire(start + Duration::from_millis(1500), &mut due);
        assert_eq!(due, vec!["keepalive"]);
        assert_eq!(wheel.len(), 1);
    }

    #[test]
    fn entries_beyond_one_revolution_wait_their_turn() {
        let start = Instant::now();
        let mut wheel = TimerWheel::default();
        wheel.insert(start, start, 0u32);
        let far = start + TICK * (SLOT_COUNT as u32 + 5);
        wheel.insert(start, far, 1);
        let mut due = Vec::new();
        wheel.expire(start + TICK * 5, &mut due);
        assert_eq!(due, vec![0], "same slot, next revolution: not yet due");
        due.clear();
        wheel.expire(far - TICK, &mut due);
        assert!(due.is_empty());
        wheel.expire(far, &mut due);
        assert_eq!(due, vec![1]);
        assert_eq!(wheel.len(), 0);
        assert_eq!(wheel.next_deadline(), None);
    }

    #[test]
    fn long_sleep_fires_everything_due_once() {
        let start = Instant::now();
        let mut wheel = TimerWheel::default();
        for secs in 0..300u64 {
            wheel.insert(start, start + Duration::from_secs(secs), secs);
        }
        let mut due = Vec::new();
        wheel.expire(start + Duration::from_secs(1000), &mut due);
        due.sort();
        assert_eq!(due, (0..300).collect::<Vec<_>>());
        assert_eq!(wheel.len(), 0);
    }

    #[test]
    fn past_deadline_fires_on_next_expire() {
        let start = Instant::now();
        let mut wheel = TimerWheel::default();
        wheel.insert(start, start + Duration::from_secs(2), 'a');
        let mut due = Vec::new();
        wheel.expire(start + Duration::from_secs(5), &mut due);
        wheel.insert(start, start + Duration::from_secs(1), 'b');
        wheel.expire(start + Duration::from_secs(5), &mut due);
        assert_eq!(due, vec!['a']);
        wheel.expire(start + Duration::from_millis(5100), &mut due);
        assert_eq!(due, vec!['a', 'b']);
    }

    /// A deadline a fraction of a millisecond past a tick boundary belongs to the next tick: firing at the
    /// boundary would be early (the delayed-will bug: due 0.5 ms after the wheel fired it).
    #[test]
    fn sub_millisecond_deadline_never_fires_early() {
        let start = Instant::now();
        let mut wheel = TimerWheel::default();
        wheel.insert(start, start, "anchor");
        let deadline = start + Duration::from_millis(2000) + Duration::from_micros(500);
        wheel.insert(start, deadline, "will");
        let mut due = Vec::new();
        wheel.expire(start + Duration::from_millis(2000) + Duration::from_micros(100), &mut due);
        assert_eq!(due, vec!["anchor"]);
        assert!(wheel.next_deadline().is_some_and(|at| at >= deadline));
        wheel.expire(wheel.next_deadline().unwrap(), &mut due);
        assert_eq!(due, vec!["anchor", "will"]);
    }
}
