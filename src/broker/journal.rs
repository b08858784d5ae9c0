//! `Journal`: the changes of durable state this turn, framed for the shard's log (`crate::persist`). The
//! core never touches a file: `Sessions` (every session change passes its methods) and the retained store
//! append `Record`s here, the runtime takes the frames at the end of the turn (`take_frames`) and hands them
//! to the shard's log writer. Disabled (no `[persistence] dir`), every call is a branch and nothing more.
//!
//! Times on disk are wall-clock milliseconds, so expiry keeps counting while the broker is down; the core
//! has no clock, so the journal converts its `Instant`s through one (Instant, wall-clock) pair given when
//! persistence is enabled.

use std::time::{Duration, Instant};

use super::delivery::Delivery;
use super::message::Message;
use crate::persist::{append_frame, Record, StoredDelivery, StoredMessage};

/// An `Instant` <-> wall-clock (Unix milliseconds) mapping fixed at start.
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    pub base: Instant,
    pub base_unix_ms: u64,
}

impl WallClock {
    pub fn unix_ms(&self, at: Instant) -> u64 {
        match at.checked_duration_since(self.base) {
            Some(after) => self.base_unix_ms.saturating_add(after.as_millis() as u64),
            None => self.base_unix_ms.saturating_sub(self.base.duration_since(at).as_millis() as u64),
        }
    }

    /// The instant of a wall-clock time; `None` if it is before the base by more than an `Instant` can
    /// reach back (it is long past either way).
    pub fn instant(&self, unix_ms: u64) -> Option<Instant> {
        if unix_ms >= self.base_unix_ms {
            return self.base.checked_add(Duration::from_millis(unix_ms - self.base_unix_ms));
        }
        self.base.checked_sub(Duration::from_millis(self.base_unix_ms - unix_ms))
    }
}

#[derive(Default)]
pub struct Journal {
    clock: Option<WallClock>,
    frames: Vec<u8>,
    scratch: Vec<u8>,
    /// Records appended since start (the number the writer reports back as durable).
    appended_seq: u64,
}

impl Journal {
    /// Turns journaling on (after recovery has rebuilt the state, so the replay is not journaled again).
    pub fn enable(&mut self, clock: WallClock) {
        self.clock = Some(clock);
    }

    pub fn is_enabled(&self) -> bool {
        self.clock.is_some()
    }

    /// Appends `make()`'s record if journaling is on.
    pub fn record(&mut self, make: impl FnOnce(&WallClock) -> Record) {
        let Some(clock) = &self.clock else { return };
        let record = make(clock);
        self.scratch.clear();
        record.encode(&mut self.scratch);
        append_frame(&mut self.frames, &self.scratch);
        self.appended_seq += 1;
    }

    pub fn appended_seq(&self) -> u64 {
        self.appended_seq
    }

    /// This turn's frames and the number of the last record in them; `None` when there are none.
    pub fn take_frames(&mut self) -> Option<(Vec<u8>, u64)> {
        if self.frames.is_empty() {
            return None;
        }
        Some((std::mem::take(&mut self.frames), self.appended_seq))
    }
}

pub fn stored_message(message: &Message, clock: &WallClock) -> StoredMessage {
    StoredMessage {
        topic: message.topic.clone(),
        payload: message.payload.clone(),
        qos: message.qos,
        retain: message.retain,
        properties: message.properties().clone(),
        expires_at_unix_ms: message.expires_at.map(|at| clock.unix_ms(at)),
    }
}

pub fn stored_delivery(delivery: &Delivery, clock: &WallClock) -> StoredDelivery {
    StoredDelivery {
        message: stored_message(&delivery.message, clock),
        qos: delivery.qos,
        retain: delivery.retain,
        subscription_ids: delivery.subscription_ids.to_vec(),
    }
}
