//! The shard mesh: one bounded lock-free queue (crossbeam `ArrayQueue`) for every ordered pair of shards,
//! carrying batches, the doorbell that wakes a sleeping shard, and the per-shard outbox that batches
//! messages per destination during a turn and never blocks when a queue is full.
//!
//! A wake-up crosses threads only when the receiving shard sleeps: it raises its `sleeping` flag before it
//! waits and looks at its queues once more; a sender that finds the flag raised after pushing lowers it and
//! rings the doorbell, an IORING_OP_MSG_RING request that posts a completion into the sleeper's ring (it
//! rides on the sender's next `io_uring_enter`: no extra system call, no eventfd). One batch is sent per
//! destination per turn. When a queue is full the batch goes to a local overflow list, kept in order, and is
//! retried on the next flush; the shard keeps serving its own connections. The overflow list is bounded
//! (`mesh_overflow_max_messages` per destination): past the bound QoS 0 publishes are dropped, past twice
//! the bound QoS 1/2 publishes too, each counted and warned about; control messages (interest, acks,
//! retained updates, handoffs) are always kept, see [`Shedding`].

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::atomic::{fence, AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;

/// Index of a shard, `0..shard_count`.
pub type ShardIndex = usize;

/// What the outbox may drop from a batch it has to park while the overflow list towards that destination
/// is over its bound (`overflow_messages_max` messages waiting).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shedding {
    /// Dropped once the bound is reached: QoS 0 publishes (MQTT allows losing them).
    AtBound,
    /// Dropped once twice the bound is reached: QoS 1/2 publishes. The destination has then taken nothing
    /// for long enough that the shard's memory is at stake, as with Mosquitto's `max_queued_messages`.
    AtTwiceBound,
    /// Never dropped: interest changes and acknowledgements (SUBACK barriers wait on them), retained-store
    /// updates (replicas must agree) and connection handoffs (each holds a socket). They come one per
    /// subscribe, retained publish or connection, not per delivered message.
    Never,
}

/// Messages the outbox dropped, by cause, since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MeshDrops {
    /// Batches whose destination shard had already stopped.
    pub closed_batches: u64,
    /// QoS 0 publishes shed over the overflow bound.
    pub shed_qos0_messages: u64,
    /// QoS 1/2 publishes shed over twice the overflow bound.
    pub shed_reliable_messages: u64,
}

/// How a shard is woken by the others: whether it sleeps, whether it stopped, and its ring.
#[derive(Debug)]
pub struct ShardWake {
    sleeping: AtomicBool,
    stopped: AtomicBool,
    ring_fd: AtomicI32,
}

impl Default for ShardWake {
    fn default() -> Self {
        ShardWake { sleeping: AtomicBool::new(false), stopped: AtomicBool::new(false), ring_fd: AtomicI32::new(-1) }
    }
}

impl ShardWake {
    /// Published by the shard once its ring exists, before any peer can ring it.
    pub fn set_ring_fd(&self, fd: RawFd) {
        self.ring_fd.store(fd, Ordering::Release);
    }

    /// The shard is about to sleep; it must look at its queues once more after this (see the module doc).
    pub fn going_to_sleep(&self) {
        self.sleeping.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    pub fn awake(&self) {
        self.sleeping.store(false, Ordering::Relaxed);
    }

    /// After pushing to this shard: its ring if it must be woken (it slept and nobody woke it yet).
    pub fn needs_doorbell(&self) -> Option<RawFd> {
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed) && self.sleeping.swap(false, Ordering::Relaxed) {
            let fd = self.ring_fd.load(Ordering::Acquire);
            return (fd >= 0 && !self.is_stopped()).then_some(fd);
        }
        None
    }

    pub fn mark_stopped(&self) {
        self.stopped.store(true, Ordering::Release);
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }
}

/// Every queue and wake-up handle of the mesh, built on the main thread before the shards start.
/// One direction of the mesh: batches from one shard to another.
type Queue<T> = Arc<ArrayQueue<Vec<T>>>;

pub struct Mesh<T> {
    /// `queues[from][to]` (None where from == to).
    queues: Vec<Vec<Option<Queue<T>>>>,
    wakes: Arc<[ShardWake]>,
}

/// Builds the full mesh for `shards` shards, each queue holding `capacity_batches` batches.
pub fn build_mesh<T>(shards: usize, capacity_batches: usize) -> Mesh<T> {
    let queues = (0..shards)
        .map(|from| {
            (0..shards).map(|to| (from != to).then(|| Arc::new(ArrayQueue::new(capacity_batches.max(1))))).collect()
        })
        .collect();
    Mesh { queues, wakes: (0..shards).map(|_| ShardWake::default()).collect() }
}

impl<T> Mesh<T> {
    /// Shard `shard`'s ends: its queues towards every other shard and from every other shard.
    pub fn links(&self, shard: ShardIndex) -> MeshLinks<T> {
        let shards = self.queues.len();
        MeshLinks {
            shard,
            outgoing: self.queues[shard].clone(),
            incoming: (0..shards)
                .filter_map(|from| self.queues[from][shard].clone().map(|queue| (from, queue)))
                .collect(),
            wakes: self.wakes.clone(),
            pending_doorbells: vec![false; shards],
        }
    }

    pub fn wakes(&self) -> Arc<[ShardWake]> {
        self.wakes.clone()
    }
}

/// One shard's ends of the mesh.
pub struct MeshLinks<T> {
    shard: ShardIndex,
    outgoing: Vec<Option<Queue<T>>>,
    incoming: Vec<(ShardIndex, Queue<T>)>,
    wakes: Arc<[ShardWake]>,
    /// Destinations that got a batch since the last `ring_doorbells`.
    pending_doorbells: Vec<bool>,
}

impl<T> MeshLinks<T> {
    pub fn wake(&self) -> &ShardWake {
        &self.wakes[self.shard]
    }

    /// The next batch some other shard sent here, with its sender.
    pub fn receive(&self) -> Option<(ShardIndex, Vec<T>)> {
        self.incoming.iter().find_map(|(from, queue)| queue.pop().map(|batch| (*from, batch)))
    }

    pub fn has_incoming(&self) -> bool {
        self.incoming.iter().any(|(_, queue)| !queue.is_empty())
    }

    /// Rings of the shards that were sent batches and are asleep (each gets one doorbell).
    pub fn doorbells(&mut self, mut ring: impl FnMut(RawFd)) {
        for to in 0..self.pending_doorbells.len() {
            if std::mem::take(&mut self.pending_doorbells[to]) {
                if let Some(fd) = self.wakes[to].needs_doorbell() {
                    ring(fd);
                }
            }
        }
    }
}

/// Why a queue did not take a batch.
pub enum SendRefused<B> {
    /// The queue is full: keep the batch and retry later.
    Full(B),
    /// The receiving shard is gone (shutting down): the batch is dropped.
    Closed,
}

/// Where an outbox delivers batches; the mesh in the broker, a plain queue in tests.
pub trait BatchSink<T> {
    fn try_send_batch(&mut self, to: ShardIndex, batch: Vec<T>) -> Result<(), SendRefused<Vec<T>>>;
}

impl<T> BatchSink<T> for MeshLinks<T> {
    fn try_send_batch(&mut self, to: ShardIndex, batch: Vec<T>) -> Result<(), SendRefused<Vec<T>>> {
        let Some(Some(queue)) = self.outgoing.get(to) else { return Err(SendRefused::Closed) };
        if self.wakes[to].is_stopped() {
            return Err(SendRefused::Closed);
        }
        match queue.push(batch) {
            Ok(()) => {
                self.pending_doorbells[to] = true;
                Ok(())
            }
            Err(batch) => {
                // A full queue still deserves a doorbell: the receiver may be asleep on a full queue.
                self.pending_doorbells[to] = true;
                Err(SendRefused::Full(batch))
            }
        }
    }
}

/// Messages a shard produced this turn, batched per destination, plus batches waiting for room.
pub struct MeshOutbox<T> {
    current: Vec<Vec<T>>,
    overflow: Vec<VecDeque<Vec<T>>>,
    /// Messages in `overflow[to]`, kept beside it so the bound check does not walk the list.
    overflow_messages: Vec<usize>,
    overflow_messages_max: usize,
    shedding: fn(&T) -> Shedding,
    /// Whether shedding towards `to` was logged since its overflow list was last empty.
    shed_warned: Vec<bool>,
    drops: MeshDrops,
}

impl<T> MeshOutbox<T> {
    /// An outbox for `shards` destinations whose overflow lists shed what `shedding` allows once they
    /// hold `overflow_messages_max` messages.
    pub fn new(shards: usize, overflow_messages_max: usize, shedding: fn(&T) -> Shedding) -> Self {
        MeshOutbox {
            current: (0..shards).map(|_| Vec::new()).collect(),
            overflow: (0..shards).map(|_| VecDeque::new()).collect(),
            overflow_messages: vec![0; shards],
            overflow_messages_max,
            shedding,
            shed_warned: vec![false; shards],
            drops: MeshDrops::default(),
        }
    }

    /// Queues `message` for `to`; it leaves with this turn's batch on the next [`flush`](Self::flush).
    pub fn push(&mut self, to: ShardIndex, message: T) {
        self.current[to].push(message);
    }

    /// Sends at most one new batch per destination, after any older overflowed batches (order is kept).
    /// Never waits: what does not fit stays in the overflow list.
    pub fn flush(&mut self, sink: &mut impl BatchSink<T>) {
        for to in 0..self.current.len() {
            self.retry_overflow(to, sink);
            if self.current[to].is_empty() {
                continue;
            }
            let batch = std::mem::take(&mut self.current[to]);
            if !self.overflow[to].is_empty() {
                self.park(to, batch);
                continue;
            }
            match sink.try_send_batch(to, batch) {
                Ok(()) => {}
                Err(SendRefused::Full(batch)) => self.park(to, batch),
                Err(SendRefused::Closed) => self.drops.closed_batches += 1,
            }
        }
    }

    fn retry_overflow(&mut self, to: ShardIndex, sink: &mut impl BatchSink<T>) {
        while let Some(batch) = self.overflow[to].pop_front() {
            let messages = batch.len();
            match sink.try_send_batch(to, batch) {
                Ok(()) => {}
                Err(SendRefused::Full(batch)) => {
                    self.overflow[to].push_front(batch);
                    return;
                }
                Err(SendRefused::Closed) => self.drops.closed_batches += 1,
            }
            self.overflow_messages[to] -= messages;
        }
        self.shed_warned[to] = false;
    }

    /// Appends `batch` to the overflow list of `to`, first shedding what the bound requires.
    fn park(&mut self, to: ShardIndex, mut batch: Vec<T>) {
        if self.overflow_messages[to] + batch.len() > self.overflow_messages_max {
            self.shed(to, &mut batch);
        }
        if batch.is_empty() {
            return;
        }
        self.overflow_messages[to] += batch.len();
        self.overflow[to].push_back(batch);
    }

    fn shed(&mut self, to: ShardIndex, batch: &mut Vec<T>) {
        let bound = self.overflow_messages_max;
        let mut waiting = self.overflow_messages[to];
        let (mut qos0, mut reliable) = (0u64, 0u64);
        let shedding = self.shedding;
        batch.retain(|message| {
            let class = shedding(message);
            let limit = match class {
                Shedding::AtBound => bound,
                Shedding::AtTwiceBound => bound.saturating_mul(2),
                Shedding::Never => usize::MAX,
            };
            if waiting < limit {
                waiting += 1;
                return true;
            }
            match class {
                Shedding::AtBound => qos0 += 1,
                _ => reliable += 1,
            }
            false
        });
        self.drops.shed_qos0_messages += qos0;
        self.drops.shed_reliable_messages += reliable;
        if qos0 + reliable > 0 && !self.shed_warned[to] {
            self.shed_warned[to] = true;
            tracing::warn!(
                to_shard = to,
                waiting,
                overflow_messages_max = bound,
                shed_qos0_messages = self.drops.shed_qos0_messages,
                shed_reliable_messages = self.drops.shed_reliable_messages,
                "mesh queue full and overflow list at its bound: dropping publishes"
            );
        }
    }

    /// True while some batch waits for room; the shard then retries on a short timer.
    pub fn has_overflow(&self) -> bool {
        self.overflow.iter().any(|queue| !queue.is_empty())
    }

    /// Messages waiting in the overflow list towards `to`.
    pub fn overflow_messages(&self, to: ShardIndex) -> usize {
        self.overflow_messages[to]
    }

    /// True when nothing is queued for the next flush.
    pub fn is_empty(&self) -> bool {
        !self.has_overflow() && self.current.iter().all(Vec::is_empty)
    }

    /// What was dropped so far, by cause.
    pub fn drops(&self) -> MeshDrops {
        self.drops
    }

    /// Copies the shedding counters and the messages waiting in the overflow lists into `io` (for
    /// `$SYS` and `/metrics`; a handful of stores per turn).
    pub fn record_counters(&self, io: &mut crate::broker::IoCounters) {
        io.mesh_overflow_messages = self.overflow_messages.iter().sum::<usize>() as u64;
        io.mesh_shed_qos0_messages = self.drops.shed_qos0_messages;
        io.mesh_shed_reliable_messages = self.drops.shed_reliable_messages;
        io.mesh_closed_batches = self.drops.closed_batches;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// A sink with a fixed number of batch slots per destination, like a bounded queue nobody drains.
    struct BoundedSink {
        capacity: usize,
        queues: RefCell<Vec<VecDeque<Vec<u32>>>>,
    }

    impl BoundedSink {
        fn new(shards: usize, capacity: usize) -> Self {
            BoundedSink { capacity, queues: RefCell::new((0..shards).map(|_| VecDeque::new()).collect()) }
        }
        fn drain(&self, to: ShardIndex) -> Vec<u32> {
            self.queues.borrow_mut()[to].drain(..).flatten().collect()
        }
    }

    impl BatchSink<u32> for BoundedSink {
        fn try_send_batch(&mut self, to: ShardIndex, batch: Vec<u32>) -> Result<(), SendRefused<Vec<u32>>> {
            let mut queues = self.queues.borrow_mut();
            if queues[to].len() >= self.capacity {
                return Err(SendRefused::Full(batch));
            }
            queues[to].push_back(batch);
            Ok(())
        }
    }

    fn unbounded(shards: usize) -> MeshOutbox<u32> {
        MeshOutbox::new(shards, usize::MAX, |_| Shedding::Never)
    }

    /// Test messages carry their class in the last digit: 0 = QoS 0, 1 = QoS 1/2, 2 = control.
    fn class_by_last_digit(message: &u32) -> Shedding {
        match message % 10 {
            0 => Shedding::AtBound,
            1 => Shedding::AtTwiceBound,
            _ => Shedding::Never,
        }
    }

    #[test]
    fn a_destination_that_takes_nothing_sheds_qos0_then_reliable_publishes_but_keeps_control_messages() {
        let bound = 10;
        let mut sink = BoundedSink::new(2, 1);
        let mut outbox = MeshOutbox::new(2, bound, class_by_last_digit);
        let mut sent = Vec::new();
        for turn in 0..100u32 {
            for class in [0, 1, 2] {
                let message = turn * 10 + class;
                outbox.push(1, message);
                sent.push(message);
            }
            outbox.flush(&mut sink); // never waits although nobody drains the queue
            let controls_so_far = (turn + 1) as usize;
            assert!(outbox.overflow_messages(1) <= 2 * bound + controls_so_far, "turn {turn}");
        }
        let drops = outbox.drops();
        assert!(drops.shed_qos0_messages > 0 && drops.shed_reliable_messages > 0, "{drops:?}");
        // Of the 300 messages: 3 went into the queue, the overflow holds at most 2 x bound publishes.
        let publishes_waiting = outbox.overflow[1].iter().flatten().filter(|m| *m % 10 != 2).count();
        assert!(publishes_waiting <= 2 * bound, "{publishes_waiting} publishes waiting");
        // Once the destination drains, what was kept arrives in the order it was sent, every control
        // message included.
        let mut received = sink.drain(1);
        while outbox.has_overflow() {
            outbox.flush(&mut sink);
            received.extend(sink.drain(1));
        }
        assert_eq!(received.len() as u64, 300 - drops.shed_qos0_messages - drops.shed_reliable_messages);
        let kept_in_sent_order: Vec<u32> = sent.iter().copied().filter(|m| received.contains(m)).collect();
        assert_eq!(received, kept_in_sent_order);
        assert_eq!(received.iter().filter(|m| *m % 10 == 2).count(), 100, "a control message was dropped");
        assert_eq!(outbox.overflow_messages(1), 0);
    }

    #[test]
    fn under_the_bound_nothing_is_shed() {
        let mut sink = BoundedSink::new(2, 1);
        let mut outbox = MeshOutbox::new(2, 1000, class_by_last_digit);
        for message in 0..300 {
            outbox.push(1, message);
            outbox.flush(&mut sink);
        }
        assert_eq!(outbox.drops(), MeshDrops::default());
        assert_eq!(outbox.overflow_messages(1), 299);
    }

    #[test]
    fn one_batch_per_destination_per_flush() {
        let mut sink = BoundedSink::new(3, 10);
        let mut outbox = unbounded(3);
        for n in 0..5 {
            outbox.push(1, n);
        }
        outbox.push(2, 9);
        outbox.flush(&mut sink);
        assert_eq!(sink.queues.borrow()[1].len(), 1);
        assert_eq!(sink.drain(1), vec![0, 1, 2, 3, 4]);
        assert_eq!(sink.drain(2), vec![9]);
        assert!(outbox.is_empty());
    }

    #[test]
    fn a_full_queue_never_blocks_and_keeps_order() {
        let mut sink = BoundedSink::new(2, 1);
        let mut outbox = unbounded(2);
        for n in 0..4 {
            outbox.push(1, n);
            outbox.flush(&mut sink); // returns although the queue holds only one batch
        }
        assert!(outbox.has_overflow());
        let mut received = sink.drain(1);
        while outbox.has_overflow() {
            outbox.flush(&mut sink);
            received.extend(sink.drain(1));
        }
        assert_eq!(received, vec![0, 1, 2, 3]);
    }

    #[test]
    fn new_messages_wait_behind_overflowed_batches() {
        let mut sink = BoundedSink::new(2, 1);
        let mut outbox = unbounded(2);
        outbox.push(1, 1);
        outbox.flush(&mut sink);
        outbox.push(1, 2);
        outbox.flush(&mut sink); // parked: queue full
        let first = sink.drain(1);
        outbox.push(1, 3);
        outbox.flush(&mut sink); // room for one batch: the parked one goes first, 3 is parked
        assert_eq!(first, vec![1]);
        assert_eq!(sink.drain(1), vec![2]);
        outbox.flush(&mut sink);
        assert_eq!(sink.drain(1), vec![3]);
        assert!(outbox.is_empty());
    }

    #[test]
    fn batches_to_a_closed_shard_are_counted_and_dropped() {
        struct ClosedSink;
        impl BatchSink<u32> for ClosedSink {
            fn try_send_batch(&mut self, _: ShardIndex, _: Vec<u32>) -> Result<(), SendRefused<Vec<u32>>> {
                Err(SendRefused::Closed)
            }
        }
        let mut outbox = unbounded(2);
        outbox.push(0, 1);
        outbox.flush(&mut ClosedSink);
        assert_eq!(outbox.drops().closed_batches, 1);
        assert!(outbox.is_empty());
    }

    #[test]
    fn batches_cross_threads_in_order_and_a_sleeping_receiver_is_rung_once() {
        let mesh = build_mesh::<u32>(2, 1);
        let mut sender = mesh.links(0);
        let receiver = mesh.links(1);
        receiver.wake().set_ring_fd(42);
        receiver.wake().going_to_sleep();
        let mut outbox = unbounded(2);
        for n in 0..3 {
            outbox.push(1, n);
            outbox.flush(&mut sender); // capacity 1: later batches overflow, never block
        }
        let mut rung = Vec::new();
        sender.doorbells(|fd| rung.push(fd));
        assert_eq!(rung, vec![42], "one doorbell for a sleeping receiver");
        sender.doorbells(|fd| rung.push(fd));
        assert_eq!(rung, vec![42], "nothing new sent, no second doorbell");
        let consumer = std::thread::spawn(move || {
            let mut got = Vec::new();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while got.len() < 3 && std::time::Instant::now() < deadline {
                match receiver.receive() {
                    Some((from, batch)) => {
                        assert_eq!(from, 0);
                        got.extend(batch);
                    }
                    None => std::thread::yield_now(),
                }
            }
            got
        });
        while outbox.has_overflow() {
            outbox.flush(&mut sender);
            std::thread::yield_now();
        }
        assert_eq!(consumer.join().unwrap(), vec![0, 1, 2]);
    }

    #[test]
    fn an_awake_or_stopped_receiver_gets_no_doorbell() {
        let mesh = build_mesh::<u32>(2, 4);
        let mut sender = mesh.links(0);
        let receiver = mesh.links(1);
        receiver.wake().set_ring_fd(7);
        let mut outbox = unbounded(2);
        outbox.push(1, 1);
        outbox.flush(&mut sender);
        let mut rung = 0;
        sender.doorbells(|_| rung += 1);
        assert_eq!(rung, 0, "the receiver was awake");
        receiver.wake().mark_stopped();
        outbox.push(1, 2);
        outbox.flush(&mut sender);
        assert_eq!(outbox.drops().closed_batches, 1);
    }
}
