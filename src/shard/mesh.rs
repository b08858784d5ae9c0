//! The shard mesh: one bounded lock-free single-producer/single-consumer queue (glommio `shared_channel`)
//! for every ordered pair of shards, carrying batches, plus the per-shard outbox that batches messages
//! per destination during a turn and never blocks when a queue is full.
//!
//! A wakeup crosses threads only when the receiving shard is parked (glommio writes its eventfd only then),
//! and one batch is sent per destination per turn. When a queue is full the batch goes to a local overflow
//! list, kept in order, and is retried on the next flush; the shard keeps serving its own connections.
//! The overflow list is bounded (`mesh_overflow_messages_max` per destination): past the bound QoS 0
//! publishes are dropped, past twice the bound QoS 1/2 publishes too, each counted and warned about;
//! control messages (interest, acks, retained updates, handoffs) are always kept, see [`Shedding`].

use std::collections::VecDeque;

use glommio::channels::shared_channel::{self, ConnectedReceiver, ConnectedSender, SharedReceiver, SharedSender};
use glommio::GlommioError;

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

/// Unconnected channel ends for one shard, built on the main thread before the executors start.
pub struct MeshEnds<T: Send> {
    /// `senders[to]`: this shard's queue towards `to` (None at the shard's own index).
    senders: Vec<Option<SharedSender<Vec<T>>>>,
    /// `receivers[from]`: the queue `from` sends to this shard on (None at the shard's own index).
    receivers: Vec<Option<SharedReceiver<Vec<T>>>>,
}

/// Builds the full mesh for `shards` shards, each queue holding `capacity_batches` batches. Element `i`
/// goes to shard `i`.
pub fn build_mesh<T: Send + 'static>(shards: usize, capacity_batches: usize) -> Vec<MeshEnds<T>> {
    let mut ends: Vec<MeshEnds<T>> = (0..shards)
        .map(|_| MeshEnds {
            senders: (0..shards).map(|_| None).collect(),
            receivers: (0..shards).map(|_| None).collect(),
        })
        .collect();
    for from in 0..shards {
        for to in (0..shards).filter(|&to| to != from) {
            let (sender, receiver) = shared_channel::new_bounded(capacity_batches);
            ends[from].senders[to] = Some(sender);
            ends[to].receivers[from] = Some(receiver);
        }
    }
    ends
}

/// This shard's connected queues towards every other shard.
pub struct MeshSenders<T: Send> {
    senders: Vec<Option<ConnectedSender<Vec<T>>>>,
}

/// Connected receiving ends, one per other shard, as `(from, receiver)`.
pub type MeshReceivers<T> = Vec<(ShardIndex, ConnectedReceiver<Vec<T>>)>;

impl<T: Send + 'static> MeshEnds<T> {
    /// Connects every end. Must run inside this shard's executor; completes once every peer has connected
    /// its side too, so all shards must call it concurrently.
    pub async fn connect(self) -> (MeshSenders<T>, MeshReceivers<T>) {
        let sender_tasks: Vec<_> = self
            .senders
            .into_iter()
            .map(|end| {
                glommio::spawn_local(async move {
                    match end {
                        Some(end) => Some(end.connect().await),
                        None => None,
                    }
                })
            })
            .collect();
        let receiver_tasks: Vec<_> = self
            .receivers
            .into_iter()
            .enumerate()
            .filter_map(|(from, end)| end.map(|end| (from, glommio::spawn_local(end.connect()))))
            .collect();
        let mut senders = Vec::with_capacity(sender_tasks.len());
        for task in sender_tasks {
            senders.push(task.await);
        }
        let mut receivers = Vec::with_capacity(receiver_tasks.len());
        for (from, task) in receiver_tasks {
            receivers.push((from, task.await));
        }
        (MeshSenders { senders }, receivers)
    }
}

/// Why a queue did not take a batch.
pub enum SendRefused<B> {
    /// The queue is full: keep the batch and retry later.
    Full(B),
    /// The receiving shard is gone (shutting down): the batch is dropped.
    Closed,
}

/// Where an outbox delivers batches; the glommio mesh in the broker, a plain queue in tests.
pub trait BatchSink<T> {
    fn try_send_batch(&self, to: ShardIndex, batch: Vec<T>) -> Result<(), SendRefused<Vec<T>>>;
}

impl<T: Send> BatchSink<T> for MeshSenders<T> {
    fn try_send_batch(&self, to: ShardIndex, batch: Vec<T>) -> Result<(), SendRefused<Vec<T>>> {
        let Some(Some(sender)) = self.senders.get(to) else {
            return Err(SendRefused::Closed);
        };
        match sender.try_send(batch) {
            Ok(()) => Ok(()),
            Err(GlommioError::WouldBlock(glommio::ResourceType::Channel(batch))) => Err(SendRefused::Full(batch)),
            Err(_) => Err(SendRefused::Closed),
        }
    }
}

impl<T: Send> MeshSenders<T> {
    /// Closes every queue so the receiving shards see the end of this shard's stream.
    pub fn close(&self) {
        for sender in self.senders.iter().flatten() {
            sender.close();
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
    pub fn flush(&mut self, sink: &impl BatchSink<T>) {
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

    fn retry_overflow(&mut self, to: ShardIndex, sink: &impl BatchSink<T>) {
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
        fn try_send_batch(&self, to: ShardIndex, batch: Vec<u32>) -> Result<(), SendRefused<Vec<u32>>> {
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
        let sink = BoundedSink::new(2, 1);
        let mut outbox = MeshOutbox::new(2, bound, class_by_last_digit);
        let mut sent = Vec::new();
        for turn in 0..100u32 {
            for class in [0, 1, 2] {
                let message = turn * 10 + class;
                outbox.push(1, message);
                sent.push(message);
            }
            outbox.flush(&sink); // never waits although nobody drains the queue
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
            outbox.flush(&sink);
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
        let sink = BoundedSink::new(2, 1);
        let mut outbox = MeshOutbox::new(2, 1000, class_by_last_digit);
        for message in 0..300 {
            outbox.push(1, message);
            outbox.flush(&sink);
        }
        assert_eq!(outbox.drops(), MeshDrops::default());
        assert_eq!(outbox.overflow_messages(1), 299);
    }

    #[test]
    fn one_batch_per_destination_per_flush() {
        let sink = BoundedSink::new(3, 10);
        let mut outbox = unbounded(3);
        for n in 0..5 {
            outbox.push(1, n);
        }
        outbox.push(2, 9);
        outbox.flush(&sink);
        assert_eq!(sink.queues.borrow()[1].len(), 1);
        assert_eq!(sink.drain(1), vec![0, 1, 2, 3, 4]);
        assert_eq!(sink.drain(2), vec![9]);
        assert!(outbox.is_empty());
    }

    #[test]
    fn a_full_queue_never_blocks_and_keeps_order() {
        let sink = BoundedSink::new(2, 1);
        let mut outbox = unbounded(2);
        for n in 0..4 {
            outbox.push(1, n);
            outbox.flush(&sink); // returns although the queue holds only one batch
        }
        assert!(outbox.has_overflow());
        let mut received = sink.drain(1);
        while outbox.has_overflow() {
            outbox.flush(&sink);
            received.extend(sink.drain(1));
        }
        assert_eq!(received, vec![0, 1, 2, 3]);
    }

    #[test]
    fn new_messages_wait_behind_overflowed_batches() {
        let sink = BoundedSink::new(2, 1);
        let mut outbox = unbounded(2);
        outbox.push(1, 1);
        outbox.flush(&sink);
        outbox.push(1, 2);
        outbox.flush(&sink); // parked: queue full
        let first = sink.drain(1);
        outbox.push(1, 3);
        outbox.flush(&sink); // room for one batch: the parked one goes first, 3 is parked
        assert_eq!(first, vec![1]);
        assert_eq!(sink.drain(1), vec![2]);
        outbox.flush(&sink);
        assert_eq!(sink.drain(1), vec![3]);
        assert!(outbox.is_empty());
    }

    #[test]
    fn batches_to_a_closed_shard_are_counted_and_dropped() {
        struct ClosedSink;
        impl BatchSink<u32> for ClosedSink {
            fn try_send_batch(&self, _: ShardIndex, _: Vec<u32>) -> Result<(), SendRefused<Vec<u32>>> {
                Err(SendRefused::Closed)
            }
        }
        let mut outbox = unbounded(2);
        outbox.push(0, 1);
        outbox.flush(&ClosedSink);
        assert_eq!(outbox.drops().closed_batches, 1);
        assert!(outbox.is_empty());
    }

    #[test]
    fn the_glommio_mesh_carries_batches_between_two_executors_and_refuses_when_full() {
        let mut ends = build_mesh::<u32>(2, 1);
        let second = ends.pop().unwrap();
        let first = ends.pop().unwrap();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let executor = |index: usize, ends: MeshEnds<u32>, done: std::sync::mpsc::Sender<Vec<u32>>| {
            std::thread::spawn(move || {
                let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
                    .io_memory(64 * 1024)
                    .make()
                    .unwrap();
                ex.run(async move {
                    let (senders, mut receivers) = ends.connect().await;
                    if index == 0 {
                        let mut outbox = unbounded(2);
                        for n in 0..3 {
                            outbox.push(1, n);
                            outbox.flush(&senders); // capacity 1: later batches overflow, never block
                        }
                        while outbox.has_overflow() {
                            glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
                            outbox.flush(&senders);
                        }
                    } else {
                        let (from, receiver) = receivers.pop().unwrap();
                        assert_eq!(from, 0);
                        let mut got = Vec::new();
                        while got.len() < 3 {
                            got.extend(receiver.recv().await.unwrap());
                        }
                        done.send(got).unwrap();
                    }
                });
            })
        };
        let a = executor(0, first, done_tx.clone());
        let b = executor(1, second, done_tx);
        let got = done_rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        assert_eq!(got, vec![0, 1, 2]);
        a.join().unwrap();
        b.join().unwrap();
    }
}
