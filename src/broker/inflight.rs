//! `Inflight`: a session's outgoing QoS 1/2 PUBLISHes that the client has not finished acknowledging, in the
//! order they were sent, and the allocation of their packet identifiers.
//!
//! QoS 1: sent -> PUBACK removes it. QoS 2: sent -> PUBREC moves it to `Released` (we send PUBREL) ->
//! PUBCOMP removes it. On reconnect everything is sent again: `Sent` entries as PUBLISH with DUP,
//! `Released` entries as PUBREL [MQTT-4.4.0-1].

use std::collections::VecDeque;

use super::delivery::Delivery;
use crate::protocol::QoS;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InflightState {
    /// PUBLISH sent, waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    Sent,
    /// QoS 2: PUBREC received and PUBREL sent, waiting for PUBCOMP. The message itself is no longer needed.
    Released,
}

#[derive(Debug)]
pub struct InflightEntry {
    pub packet_id: u16,
    pub state: InflightState,
    pub delivery: Delivery,
}

/// What an acknowledgement from the client did.
#[derive(Debug, PartialEq, Eq)]
pub enum AckOutcome {
    /// The entry moved on (removed, or QoS 2 released).
    Done,
    /// No entry in the state this acknowledgement expects.
    UnknownPacketId,
}

#[derive(Debug, Default)]
pub struct Inflight {
    entries: VecDeque<InflightEntry>,
    last_packet_id: u16,
}

impl Inflight {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &InflightEntry> {
        self.entries.iter()
    }

    /// Records `delivery` (QoS 1 or 2) as sent under a fresh packet id, which it returns. `None` when all
    /// 65535 ids are in use (callers cap the window far below that).
    pub fn push(&mut self, delivery: Delivery) -> Option<u16> {
        debug_assert!(delivery.qos != QoS::AtMostOnce);
        let packet_id = self.allocate_packet_id()?;
        self.entries.push_back(InflightEntry { packet_id, state: InflightState::Sent, delivery });
        Some(packet_id)
    }

    /// Recovery: an entry as the log had it, with its packet id (ids continue after the highest).
    pub fn restore(&mut self, packet_id: u16, state: InflightState, delivery: Delivery) {
        debug_assert!(packet_id != 0 && !self.entries.iter().any(|entry| entry.packet_id == packet_id));
        self.last_packet_id = self.last_packet_id.max(packet_id);
        self.entries.push_back(InflightEntry { packet_id, state, delivery });
    }

    /// PUBACK for a QoS 1 PUBLISH.
    pub fn puback(&mut self, packet_id: u16) -> AckOutcome {
        self.remove_where(packet_id, |entry| {
            entry.state == InflightState::Sent && entry.delivery.qos == QoS::AtLeastOnce
        })
    }

    /// PUBREC for a QoS 2 PUBLISH; a repeated PUBREC for a released entry is answered again, not an error.
    /// A PUBREC with an error reason ends the exchange (v5 section 4.3.3), like `remove_failed`.
    pub fn pubrec(&mut self, packet_id: u16) -> AckOutcome {
        match self
            .entries
            .iter_mut()
            .find(|entry| entry.packet_id == packet_id && entry.delivery.qos == QoS::ExactlyOnce)
        {
            Some(entry) => {
                entry.state = InflightState::Released;
                AckOutcome::Done
            }
            None => AckOutcome::UnknownPacketId,
        }
    }

    /// PUBCOMP for a released QoS 2 PUBLISH.
    pub fn pubcomp(&mut self, packet_id: u16) -> AckOutcome {
        self.remove_where(packet_id, |entry| entry.state == InflightState::Released)
    }

    /// Drops the entry for `packet_id` whatever its state (the client refused it with an error reason).
    pub fn remove_failed(&mut self, packet_id: u16) -> AckOutcome {
        self.remove_where(packet_id, |_| true)
    }

    fn remove_where(&mut self, packet_id: u16, accept: impl Fn(&InflightEntry) -> bool) -> AckOutcome {
        match self.entries.iter().position(|entry| entry.packet_id == packet_id && accept(entry)) {
            Some(index) => {
                self.entries.remove(index);
                AckOutcome::Done
            }
            None => AckOutcome::UnknownPacketId,
        }
    }

    /// Next id after the last one handed out that no inflight entry uses (never 0 [MQTT-2.2.1-3]).
    fn allocate_packet_id(&mut self) -> Option<u16> {
        if self.entries.len() >= usize::from(u16::MAX) {
            return None;
        }
        loop {
            self.last_packet_id = self.last_packet_id.wrapping_add(1).max(1);
            let candidate = self.last_packet_id;
            if !self.entries.iter().any(|entry| entry.packet_id == candidate) {
                return Some(candidate);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::delivery::tests::delivery;

    #[test]
    fn packet_ids_are_nonzero_unique_and_wrap_mqtt_2_2_1_3() {
        let mut inflight = Inflight { last_packet_id: u16::MAX - 1, ..Inflight::default() };
        assert_eq!(inflight.push(delivery(QoS::AtLeastOnce)), Some(u16::MAX));
        assert_eq!(inflight.push(delivery(QoS::AtLeastOnce)), Some(1), "0 is skipped on wrap");
        inflight.last_packet_id = u16::MAX - 1;
        assert_eq!(inflight.push(delivery(QoS::AtLeastOnce)), Some(2), "ids in use are skipped");
    }

    #[test]
    fn qos1_removed_by_puback_only() {
        let mut inflight = Inflight::default();
        let id = inflight.push(delivery(QoS::AtLeastOnce)).expect("id");
        assert_eq!(inflight.pubcomp(id), AckOutcome::UnknownPacketId);
        assert_eq!(inflight.pubrec(id), AckOutcome::UnknownPacketId, "PUBREC is for QoS 2");
        assert_eq!(inflight.puback(id), AckOutcome::Done);
        assert_eq!(inflight.puback(id), AckOutcome::UnknownPacketId);
        assert_eq!(inflight.len(), 0);
    }

    #[test]
    fn qos2_needs_pubrec_then_pubcomp_mqtt_4_3_3() {
        let mut inflight = Inflight::default();
        let first = inflight.push(delivery(QoS::ExactlyOnce)).expect("id");
        let second = inflight.push(delivery(QoS::ExactlyOnce)).expect("id");
        assert_eq!(inflight.puback(first), AckOutcome::UnknownPacketId);
        assert_eq!(inflight.pubcomp(first), AckOutcome::UnknownPacketId, "PUBCOMP before PUBREC");
        assert_eq!(inflight.pubrec(first), AckOutcome::Done);
        assert_eq!(inflight.iter().next().map(|entry| entry.state), Some(InflightState::Released));
        assert_eq!(inflight.pubcomp(first), AckOutcome::Done);
        assert_eq!(inflight.iter().map(|entry| entry.packet_id).collect::<Vec<_>>(), vec![second]);
    }
}
