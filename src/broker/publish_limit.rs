//! Per-connection publish limits, `publish_rate_max_per_second` (PUBLISH packets) and
//! `publish_bytes_max_per_second` (topic + payload bytes), as EMQX's per-client limiter: one token bucket
//! per limit holding one second's worth. Every PUBLISH a connection sends takes its tokens once handled; a
//! connection whose bucket ran empty is throttled, not refused or dropped: the input gate (`backlog`) reads
//! nothing more from it (TCP pushes back on that client alone) until the bucket has refilled
//! `RESUME_REFILL` worth, when one timer-wheel entry per pause opens its input again.
//!
//! Nothing is kept for a connection until its first PUBLISH, and nothing at all when neither limit is set.

use std::time::{Duration, Instant};

use ahash::AHashMap;
use tracing::{debug, trace};

use super::core::ShardCore;
use super::message::ConnId;
use super::settings::BrokerSettings;
use super::timers::TimerKey;

/// What a full bucket holds: one second's worth of the limit.
const BURST: Duration = Duration::from_secs(1);
/// How much of the bucket must have refilled before a throttled connection is read again: a tenth, so a
/// client held at its limit is paused and resumed about ten times a second (one timer each), not once
/// per message.
const RESUME_REFILL: Duration = Duration::from_millis(100);
/// A pause is never longer than this, even for one PUBLISH far larger than a second's worth of bytes.
const PAUSE_MAX: Duration = Duration::from_secs(3600);
/// A throttle that starts this long after the last one ended is a new episode: logged at debug (the
/// pauses in between at trace).
const EPISODE_GAP: Duration = Duration::from_secs(1);

/// Which limit throttled a connection (named in its log line and metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PublishLimit {
    Rate,
    Bytes,
}

impl PublishLimit {
    pub fn setting(self) -> &'static str {
        match self {
            PublishLimit::Rate => "publish_rate_max_per_second",
            PublishLimit::Bytes => "publish_bytes_max_per_second",
        }
    }
}

/// A connection just throttled: read again at `until`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Throttle {
    pub until: Instant,
    pub limit: PublishLimit,
    /// The first pause after a while without one (see `EPISODE_GAP`).
    pub new_episode: bool,
}

/// One bucket as the instant at which it is full again (a "theoretical arrival time"): taking `cost`
/// tokens moves that instant `cost / rate` seconds on; the bucket is empty when it lies a whole `BURST`
/// or more ahead of now. One `Instant` per limit, no refill arithmetic per call.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    full_at: Instant,
}

impl Bucket {
    fn take(&mut self, now: Instant, cost: u64, rate_per_second: u32) {
        let nanos = u128::from(cost) * 1_000_000_000 / u128::from(rate_per_second.max(1));
        let cost_time = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)).min(PAUSE_MAX);
        self.full_at = self.full_at.max(now) + cost_time;
    }

    /// When reading may resume, if the bucket is empty now.
    fn empty_until(&self, now: Instant) -> Option<Instant> {
        (self.full_at.saturating_duration_since(now) >= BURST).then(|| self.full_at - BURST + RESUME_REFILL)
    }
}

#[derive(Debug)]
struct ConnBuckets {
    messages: Bucket,
    bytes: Bucket,
    /// When its last pause ended (for `EPISODE_GAP`).
    resumed_at: Option<Instant>,
}

/// The buckets of this shard's connections and which of them are throttled now (see the module doc).
#[derive(Debug, Default)]
pub(super) struct PublishLimiter {
    rate_per_second: Option<u32>,
    bytes_per_second: Option<u32>,
    buckets: AHashMap<ConnId, ConnBuckets>,
    /// Throttled connections and when they may be read again; empty for a shard with none, so the input
    /// gate's check costs one length test.
    throttled: AHashMap<ConnId, Instant>,
}

impl PublishLimiter {
    pub(super) fn new(settings: &BrokerSettings) -> Self {
        PublishLimiter {
            rate_per_second: settings.publish_rate_max_per_second,
            bytes_per_second: settings.publish_bytes_max_per_second,
            ..PublishLimiter::default()
        }
    }

    pub(super) fn is_active(&self) -> bool {
        self.rate_per_second.is_some() || self.bytes_per_second.is_some()
    }

    /// A PUBLISH of `bytes` (topic + payload) from `conn` was handled: its tokens are taken. `Some` when
    /// that emptied a bucket and the connection is throttled from now on.
    pub(super) fn charge(&mut self, conn: ConnId, bytes: usize, now: Instant) -> Option<Throttle> {
        if !self.is_active() {
            return None;
        }
        let fresh = Bucket { full_at: now };
        let buckets =
            self.buckets.entry(conn).or_insert(ConnBuckets { messages: fresh, bytes: fresh, resumed_at: None });
        let mut until: Option<(Instant, PublishLimit)> = None;
        for (rate, bucket, cost, limit) in [
            (self.rate_per_second, &mut buckets.messages, 1, PublishLimit::Rate),
            (self.bytes_per_second, &mut buckets.bytes, bytes as u64, PublishLimit::Bytes),
        ] {
            let Some(rate) = rate else { continue };
            bucket.take(now, cost, rate);
            if let Some(at) = bucket.empty_until(now) {
                if until.is_none_or(|(later, _)| at > later) {
                    until = Some((at, limit));
                }
            }
        }
        let (until, limit) = until?;
        // Already paused (a PUBLISH held for the external auth backend came through meanwhile): the
        // armed resume stands; what this one took is paid for after it.
        if self.throttled.contains_key(&conn) {
            return None;
        }
        self.throttled.insert(conn, until);
        let new_episode = buckets.resumed_at.is_none_or(|at| now.saturating_duration_since(at) >= EPISODE_GAP);
        Some(Throttle { until, limit, new_episode })
    }

    /// Whether `conn` is throttled (its input must not be read).
    pub(super) fn is_throttled(&self, conn: ConnId) -> bool {
        !self.throttled.is_empty() && self.throttled.contains_key(&conn)
    }

    /// Its resume timer fired: true when `conn` was throttled until now and may be read again.
    pub(super) fn resume(&mut self, conn: ConnId, now: Instant) -> bool {
        match self.throttled.get(&conn) {
            Some(&until) if until <= now => {
                self.throttled.remove(&conn);
                if let Some(buckets) = self.buckets.get_mut(&conn) {
                    buckets.resumed_at = Some(now);
                }
                true
            }
            _ => false,
        }
    }

    /// The connection is gone: its buckets go too.
    pub(super) fn forget(&mut self, conn: ConnId) {
        if self.is_active() {
            self.buckets.remove(&conn);
            self.throttled.remove(&conn);
        }
    }
}

impl ShardCore {
    /// A PUBLISH of `bytes` (topic + payload) from `conn` was received: takes its tokens, and throttles
    /// the connection when that emptied a bucket (counted, logged, its resume armed in the timer wheel).
    pub(super) fn charge_publish(&mut self, conn: ConnId, bytes: usize, now: Instant) {
        let Some(throttle) = self.publish_limits.charge(conn, bytes, now) else { return };
        match throttle.limit {
            PublishLimit::Rate => self.stats.publish_throttled_rate += 1,
            PublishLimit::Bytes => self.stats.publish_throttled_bytes += 1,
        }
        self.timers.insert(now, throttle.until, TimerKey::PublishThrottle(conn));
        let pause_ms = throttle.until.saturating_duration_since(now).as_millis() as u64;
        let (client_id, limit) = (self.client_id_of(conn), throttle.limit.setting());
        if throttle.new_episode {
            debug!(shard = self.shard, client_id = ?client_id, limit, pause_ms, "client throttled: publishing faster than {limit}, its input is not read until its bucket refills");
        } else {
            trace!(shard = self.shard, client_id = ?client_id, limit, pause_ms, "client throttled again");
        }
    }

    /// The resume timer of a throttled connection: its input is read again (a flush opens it), and its
    /// keep-alive counts from now (the broker, not the client, was silent meanwhile).
    pub(super) fn publish_throttle_ended(&mut self, conn: ConnId, now: Instant) {
        if self.publish_limits.resume(conn, now) {
            if let Some(connection) = self.connections.get_mut(&conn) {
                connection.last_packet_at = connection.last_packet_at.max(now);
            }
            self.open_input(conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rate: Option<u32>, bytes: Option<u32>) -> PublishLimiter {
        let settings = BrokerSettings {
            publish_rate_max_per_second: rate,
            publish_bytes_max_per_second: bytes,
            ..BrokerSettings::default()
        };
        PublishLimiter::new(&settings)
    }

    #[test]
    fn a_full_bucket_lets_one_seconds_worth_through_then_throttles_until_a_tenth_refilled() {
        let (conn, start) = (ConnId(1), Instant::now());
        let mut limiter = limiter(Some(100), None);
        for n in 0..99 {
            assert_eq!(limiter.charge(conn, 10, start), None, "PUBLISH {n} is within the burst");
        }
        let throttle = limiter.charge(conn, 10, start).expect("the 100th empties the bucket");
        assert_eq!(throttle.limit, PublishLimit::Rate);
        assert_eq!(throttle.until, start + RESUME_REFILL, "a tenth of a second refills a tenth of the bucket");
        assert!(throttle.new_episode);
        assert!(limiter.is_throttled(conn));
        assert!(!limiter.resume(conn, start + RESUME_REFILL / 2), "too early");
        assert!(limiter.resume(conn, throttle.until));
        assert!(!limiter.is_throttled(conn));
        // Held at the limit: ten PUBLISHes per tenth of a second, then the next pause (not a new episode).
        let now = throttle.until;
        for _ in 0..9 {
            assert_eq!(limiter.charge(conn, 10, now), None);
        }
        let again = limiter.charge(conn, 10, now).expect("the refilled tenth is used up");
        assert!(!again.new_episode);
        assert_eq!(again.until, now + RESUME_REFILL);
    }

    #[test]
    fn the_bytes_bucket_counts_topic_and_payload_and_a_huge_publish_pauses_in_proportion() {
        let (conn, start) = (ConnId(1), Instant::now());
        let mut limiter = limiter(None, Some(1000));
        assert_eq!(limiter.charge(conn, 600, start), None);
        let throttle = limiter.charge(conn, 600, start).expect("1200 bytes is more than a second's 1000");
        assert_eq!(throttle.limit, PublishLimit::Bytes);
        assert_eq!(throttle.until, start + Duration::from_millis(300), "1.2 s of bytes - 1 s burst + 0.1 s refill");
        let other = ConnId(2);
        let huge = limiter.charge(other, 10_000, start).expect("ten seconds' worth at once");
        assert_eq!(huge.until, start + Duration::from_millis(9100));
    }

    #[test]
    fn connections_have_their_own_buckets_and_none_are_kept_without_a_limit() {
        let start = Instant::now();
        let mut limiter = limiter(Some(1), None);
        assert!(limiter.charge(ConnId(1), 1, start).is_some());
        assert_eq!(limiter.charge(ConnId(2), 1, start).map(|t| t.limit), Some(PublishLimit::Rate));
        limiter.forget(ConnId(1));
        assert!(!limiter.is_throttled(ConnId(1)) && limiter.is_throttled(ConnId(2)));
        let mut unlimited = self::limiter(None, None);
        assert_eq!(unlimited.charge(ConnId(1), 1 << 20, start), None);
        assert!(unlimited.buckets.is_empty());
    }
}
