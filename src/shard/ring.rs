//! One io_uring per shard, set up the way io_uring is cheap: a single issuer with deferred task work (the
//! kernel runs completions only when the shard asks for them, in its own `io_uring_enter`), a completion
//! queue four times the submission queue, and every wait bounded by a timeout passed with the enter
//! itself (no timer request armed per turn). Also the shard's provided-buffer ring, from which multishot
//! receives take their buffers (an idle connection owns none), and the tokens that name what a
//! completion belongs to.
//!
//! A turn's sends are `MSG_DONTWAIT` (the kernel then never parks them on a poll: they complete, in full,
//! in part or with `EAGAIN`, while the enter submits them), so the wait that follows asks for one
//! completion more than those: their completions do not end the sleep, and a lone message costs one
//! `io_uring_enter` instead of two (one to submit the send and see it complete, one to sleep).

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use io_uring::{cqueue, opcode, squeue, types, IoUring};

/// What a completion belongs to: the kind of request in the top byte, an index (listener or connection
/// slot) in the low 32 bits and the slot's generation in between.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token(pub u64);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum TokenKind {
    Accept = 1,
    Recv = 2,
    Send = 3,
    /// The shard's control eventfd: a stop or jobs (see `control`).
    Control = 4,
    /// A MSG_RING from another shard: its mesh queue has batches.
    Doorbell = 5,
    /// Requests whose completion needs nothing (cancels, failed doorbells).
    Ignore = 6,
    /// The shard's log writer synced (its eventfd).
    Durable = 7,
}

const GENERATION_MASK: u64 = (1 << 24) - 1;

impl Token {
    pub fn new(kind: TokenKind, index: u32, generation: u32) -> Token {
        Token((kind as u64) << 56 | (u64::from(generation) & GENERATION_MASK) << 32 | u64::from(index))
    }

    pub fn kind(self) -> Option<TokenKind> {
        Some(match (self.0 >> 56) as u8 {
            1 => TokenKind::Accept,
            2 => TokenKind::Recv,
            3 => TokenKind::Send,
            4 => TokenKind::Control,
            5 => TokenKind::Doorbell,
            6 => TokenKind::Ignore,
            7 => TokenKind::Durable,
            _ => return None,
        })
    }

    pub fn index(self) -> u32 {
        self.0 as u32
    }

    /// The low 24 bits of the generation it was made with.
    pub fn generation(self) -> u32 {
        ((self.0 >> 32) & GENERATION_MASK) as u32
    }

    /// Whether a slot of generation `generation` is the one this token was made for.
    pub fn matches_generation(self, generation: u32) -> bool {
        u64::from(generation) & GENERATION_MASK == u64::from(self.generation())
    }
}

/// A completion copied out of the completion queue.
#[derive(Clone, Copy, Debug)]
pub struct Completion {
    pub token: Token,
    pub result: i32,
    pub flags: u32,
}

impl Completion {
    /// Whether a multishot request stays armed after this completion.
    pub fn more(&self) -> bool {
        cqueue::more(self.flags)
    }

    pub fn buffer(&self) -> Option<u16> {
        cqueue::buffer_select(self.flags)
    }
}

/// Why a shard's ring could not be set up. Names the kernel feature that is missing.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    #[error("cannot create an io_uring ({0}); shardmq needs Linux 6.1 or newer with io_uring enabled (sysctl kernel.io_uring_disabled = 0) and, unprivileged, enough locked memory (ulimit -l)")]
    Setup(io::Error),
    #[error("the kernel's io_uring lacks {0}, which shardmq needs (Linux 6.1 or newer)")]
    MissingFeature(&'static str),
    #[error("cannot register the provided-buffer ring ({0}); needs Linux 5.19 or newer")]
    BufferRing(io::Error),
    /// Not the ring's own, but the other thing a shard starts with: its persistence writer thread.
    #[error("cannot start the shard's log writer thread: {0}")]
    LogWriter(io::Error),
}

pub struct Ring {
    ring: IoUring,
    /// Queued requests that complete while the enter submits them ([`Ring::push_inline`]).
    inline_pending: u32,
}

/// Longest sleep of a wait that discounts inline completions. They always complete at submission (a
/// unit test holds the kernel to it); this bound only keeps a kernel that broke that from stalling a
/// connection for longer.
const INLINE_WAIT_BOUND: Duration = Duration::from_millis(50);

impl Ring {
    /// A ring with `entries` submission slots, for the calling thread only.
    pub fn new(entries: u32) -> Result<Ring, RingError> {
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_submit_all()
            .setup_cqsize(entries * 4)
            .build(entries)
            .or_else(|_| {
                // Older kernels (< 6.1) lack DEFER_TASKRUN; cooperative task running is the next best.
                IoUring::builder().setup_coop_taskrun().setup_submit_all().setup_cqsize(entries * 4).build(entries)
            })
            .map_err(RingError::Setup)?;
        if !ring.params().is_feature_ext_arg() {
            return Err(RingError::MissingFeature("IORING_FEAT_EXT_ARG (waits with a timeout)"));
        }
        if !ring.params().is_feature_nodrop() {
            return Err(RingError::MissingFeature("IORING_FEAT_NODROP"));
        }
        let mut probe = io_uring::Probe::new();
        ring.submitter().register_probe(&mut probe).map_err(RingError::Setup)?;
        let needed = [
            (opcode::RecvMulti::CODE, "IORING_OP_RECV"),
            (opcode::SendMsg::CODE, "IORING_OP_SENDMSG"),
            (opcode::AcceptMulti::CODE, "IORING_OP_ACCEPT"),
            (opcode::MsgRingData::CODE, "IORING_OP_MSG_RING"),
            (opcode::AsyncCancel::CODE, "IORING_OP_ASYNC_CANCEL"),
            (opcode::Read::CODE, "IORING_OP_READ"),
        ];
        for (code, name) in needed {
            if !probe.is_supported(code) {
                return Err(RingError::MissingFeature(name));
            }
        }
        Ok(Ring { ring, inline_pending: 0 })
    }

    pub fn fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }

    /// Queues a request; a full submission queue is submitted first.
    ///
    /// # Safety
    /// Every buffer the entry points to must stay valid until its completion arrives.
    pub unsafe fn push(&mut self, entry: &squeue::Entry) {
        loop {
            if self.ring.submission().push(entry).is_ok() {
                return;
            }
            if let Err(err) = self.ring.submit() {
                tracing::warn!(%err, "io_uring submit failed while the submission queue was full");
            }
            // What was submitted has completed into the completion queue, where the wait counts it.
            self.inline_pending = 0;
        }
    }

    /// Queues a request that completes while it is submitted (a `MSG_DONTWAIT` send): the next wait
    /// does not end for its completion.
    ///
    /// # Safety
    /// As [`Ring::push`].
    pub unsafe fn push_inline(&mut self, entry: &squeue::Entry) {
        self.push(entry);
        self.inline_pending += 1;
    }

    /// Submits what is queued and waits until a completion arrives or `timeout` passes (`None`: no
    /// limit). One `io_uring_enter` for both.
    /// Completions of requests queued with [`Ring::push_inline`] and completions already waiting are not
    /// counted: the wait is for one more.
    pub fn submit_and_wait(&mut self, timeout: Option<Duration>) {
        let inline = std::mem::take(&mut self.inline_pending);
        let want = self.ring.completion().len() + inline as usize + 1;
        let timeout =
            if inline > 0 { Some(timeout.map_or(INLINE_WAIT_BOUND, |t| t.min(INLINE_WAIT_BOUND))) } else { timeout };
        let result = match timeout {
            None => self.ring.submit_and_wait(want),
            Some(timeout) => {
                let ts = types::Timespec::new().sec(timeout.as_secs()).nsec(timeout.subsec_nanos());
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(want, &args)
            }
        };
        match result {
            Ok(_) => {}
            Err(err) if matches!(err.raw_os_error(), Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN)) => {}
            Err(err) => tracing::warn!(%err, "io_uring_enter failed"),
        }
    }

    /// Moves every completion the kernel has posted into `into`.
    pub fn completions(&mut self, into: &mut Vec<Completion>) {
        for entry in self.ring.completion() {
            into.push(Completion { token: Token(entry.user_data()), result: entry.result(), flags: entry.flags() });
        }
    }
}

/// The shard's provided buffers: `count` buffers of `size` bytes in one allocation, offered to the kernel
/// through a buffer ring. A receive completion names the buffer its bytes landed in; the shard copies
/// them out and gives the buffer back at once.
///
/// Only `INITIAL_OFFERED_BUFFERS` of them are offered at first, more (doubling, up to `count`) each time
/// the kernel finds none (`ran_dry`). The ring is first in, first out: with all 256 offered, even an idle
/// fleet's keep-alives cycle through every buffer and fault in at least a page of each (1 MiB per shard,
/// 210 B per connection at 5,000 connections on one shard, perf/SCALE.md), while a few suffice until a
/// burst needs more; the allocation itself is untouched (zeroed pages come from the OS on first write).
pub struct BufferRing {
    entries: *mut types::BufRingEntry,
    entries_layout: Layout,
    buffers: Box<[u8]>,
    buffer_bytes: usize,
    mask: u16,
    tail: u16,
    group: u16,
    /// Buffers `0..offered` have been given to the kernel; the others were never touched.
    offered: u16,
}

/// Buffers offered at start; a shard receiving from more sockets per turn than this grows the set.
const INITIAL_OFFERED_BUFFERS: u16 = 16;

/// Page alignment the kernel requires of a buffer ring.
const RING_ALIGN: usize = 4096;

impl BufferRing {
    /// Registers `count` (a power of two, at most 32768) buffers of `buffer_bytes` as group `group`.
    pub fn new(ring: &Ring, group: u16, count: u16, buffer_bytes: usize) -> Result<BufferRing, RingError> {
        assert!(count.is_power_of_two(), "buffer count must be a power of two");
        let entries_layout =
            Layout::from_size_align(usize::from(count) * std::mem::size_of::<types::BufRingEntry>(), RING_ALIGN)
                .expect("buffer ring layout");
        // SAFETY: a non-zero-sized layout; freed in Drop with the same layout.
        let entries = unsafe { alloc_zeroed(entries_layout) }.cast::<types::BufRingEntry>();
        if entries.is_null() {
            std::alloc::handle_alloc_error(entries_layout);
        }
        let mut this = BufferRing {
            entries,
            entries_layout,
            buffers: vec![0u8; usize::from(count) * buffer_bytes].into_boxed_slice(),
            buffer_bytes,
            mask: count - 1,
            tail: 0,
            group,
            offered: 0,
        };
        // SAFETY: the entries stay allocated (and the buffers alive) until the ring is dropped, after the
        // io_uring that uses them (the shard drops its ring first).
        unsafe { ring.ring.submitter().register_buf_ring_with_flags(entries as u64, count, group, 0) }
            .map_err(RingError::BufferRing)?;
        this.offer_up_to(INITIAL_OFFERED_BUFFERS.min(count));
        Ok(this)
    }

    fn offer_up_to(&mut self, offered: u16) {
        for id in self.offered..offered {
            self.give_back(id);
        }
        self.offered = self.offered.max(offered);
    }

    /// A receive found no buffer (`ENOBUFS`): offer twice as many (up to all), so the next burst of this
    /// size finds one.
    pub fn ran_dry(&mut self) {
        let count = self.mask + 1;
        self.offer_up_to(self.offered.saturating_mul(2).min(count));
    }

    /// Buffers offered to the kernel so far (the others hold no memory yet).
    pub fn offered(&self) -> u16 {
        self.offered
    }

    pub fn group(&self) -> u16 {
        self.group
    }

    /// The first `len` bytes of buffer `id`, as a completion reported them.
    pub fn bytes(&self, id: u16, len: usize) -> &[u8] {
        let start = usize::from(id) * self.buffer_bytes;
        &self.buffers[start..start + len.min(self.buffer_bytes)]
    }

    /// Offers buffer `id` to the kernel again.
    pub fn give_back(&mut self, id: u16) {
        let start = usize::from(id) * self.buffer_bytes;
        // SAFETY: `tail & mask` indexes an entry inside the allocation; the kernel reads entries only up
        // to the published tail, which is stored (with release ordering) after the entry is written.
        unsafe {
            let entry = &mut *self.entries.add(usize::from(self.tail & self.mask));
            entry.set_addr(self.buffers.as_ptr().add(start) as u64);
            entry.set_len(self.buffer_bytes as u32);
            entry.set_bid(id);
            self.tail = self.tail.wrapping_add(1);
            let tail = &*(types::BufRingEntry::tail(self.entries).cast::<AtomicU16>());
            tail.store(self.tail, Ordering::Release);
        }
    }
}

impl Drop for BufferRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.entries.cast(), self.entries_layout) };
    }
}

/// Requests the shard builds; each is safe to submit because the buffers it names live in the shard's
/// own state until the completion arrives (see the callers).
pub mod request {
    use super::*;

    pub fn accept(listener: RawFd, token: Token) -> squeue::Entry {
        opcode::AcceptMulti::new(types::Fd(listener)).flags(libc::SOCK_CLOEXEC).build().user_data(token.0)
    }

    /// A multishot receive with buffers from `group`.
    pub fn recv_multishot(fd: RawFd, group: u16, token: Token) -> squeue::Entry {
        opcode::RecvMulti::new(types::Fd(fd), group).build().user_data(token.0)
    }

    /// A single receive with a buffer from `group` (a connection whose home shard is not decided yet).
    pub fn recv_once(fd: RawFd, group: u16, token: Token) -> squeue::Entry {
        opcode::Recv::new(types::Fd(fd), std::ptr::null_mut(), 0)
            .buf_group(group)
            .build()
            .flags(squeue::Flags::BUFFER_SELECT)
            .user_data(token.0)
    }

    /// A send that waits for room in the socket (the kernel polls it): the rest after a partial send.
    pub fn sendmsg(fd: RawFd, message: *const libc::msghdr, token: Token) -> squeue::Entry {
        opcode::SendMsg::new(types::Fd(fd), message).flags(libc::MSG_NOSIGNAL as u32).build().user_data(token.0)
    }

    /// A send that completes at submission: all, part, or `-EAGAIN` when the socket has no room. Queue it
    /// with [`Ring::push_inline`].
    pub fn sendmsg_now(fd: RawFd, message: *const libc::msghdr, token: Token) -> squeue::Entry {
        opcode::SendMsg::new(types::Fd(fd), message)
            .flags((libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) as u32)
            .build()
            .user_data(token.0)
    }

    /// Posts a completion with `token` into the ring `target` (another shard's); no completion here
    /// unless it fails.
    pub fn doorbell(target: RawFd, token: Token) -> squeue::Entry {
        opcode::MsgRingData::new(types::Fd(target), 0, token.0, None)
            .build()
            .flags(squeue::Flags::SKIP_SUCCESS)
            .user_data(Token::new(TokenKind::Ignore, 0, 0).0)
    }

    pub fn read(fd: RawFd, buf: *mut u8, len: u32, token: Token) -> squeue::Entry {
        opcode::Read::new(types::Fd(fd), buf, len).build().user_data(token.0)
    }

    pub fn cancel(target: Token) -> squeue::Entry {
        opcode::AsyncCancel::new(target.0).build().user_data(Token::new(TokenKind::Ignore, 0, 0).0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_carry_kind_index_and_generation() {
        let token = Token::new(TokenKind::Send, 123_456, 0x0123_4567);
        assert_eq!(token.kind(), Some(TokenKind::Send));
        assert_eq!(token.index(), 123_456);
        assert!(token.matches_generation(0x0123_4567));
        assert!(!token.matches_generation(0x0123_4568));
        assert_eq!(Token(0).kind(), None);
    }

    /// A one-iovec message over `bytes`, kept alive by the caller.
    fn message_over(bytes: &[u8], iov: &mut libc::iovec, message: &mut libc::msghdr) -> *const libc::msghdr {
        *iov = libc::iovec { iov_base: bytes.as_ptr() as *mut libc::c_void, iov_len: bytes.len() };
        message.msg_iov = iov;
        message.msg_iovlen = 1;
        message
    }

    #[test]
    fn a_send_that_must_not_wait_completes_at_submission_even_on_a_full_socket() {
        let mut ring = Ring::new(8).expect("ring");
        let (ours, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let chunk = [1u8; 4096];
        while unsafe { libc::send(ours.as_raw_fd(), chunk.as_ptr().cast(), chunk.len(), 0) } > 0 {}
        let (mut iov, mut message) = (unsafe { std::mem::zeroed() }, unsafe { std::mem::zeroed() });
        let message = message_over(b"more", &mut iov, &mut message);
        let token = Token::new(TokenKind::Send, 1, 0);
        unsafe { ring.push_inline(&request::sendmsg_now(ours.as_raw_fd(), message, token)) };
        ring.ring.submit().expect("submit");
        let mut seen = Vec::new();
        ring.completions(&mut seen);
        assert_eq!(seen.len(), 1, "the completion is there without waiting");
        assert_eq!((seen[0].token, seen[0].result), (token, -libc::EAGAIN));
    }

    #[test]
    fn a_wait_after_an_inline_send_sleeps_until_another_completion() {
        use std::io::Write;
        let mut ring = Ring::new(8).expect("ring");
        let buffers = BufferRing::new(&ring, 0, 4, 64).expect("buffer ring");
        let (ours, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
        let (reader, mut writer) = std::os::unix::net::UnixStream::pair().unwrap();
        let recv = Token::new(TokenKind::Recv, 2, 0);
        unsafe { ring.push(&request::recv_multishot(reader.as_raw_fd(), buffers.group(), recv)) };
        let (mut iov, mut message) = (unsafe { std::mem::zeroed() }, unsafe { std::mem::zeroed() });
        let message = message_over(b"out", &mut iov, &mut message);
        let send = Token::new(TokenKind::Send, 1, 0);
        unsafe { ring.push_inline(&request::sendmsg_now(ours.as_raw_fd(), message, send)) };
        let later = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            writer.write_all(b"in").unwrap();
            writer
        });
        ring.submit_and_wait(Some(Duration::from_secs(5)));
        let mut seen = Vec::new();
        ring.completions(&mut seen);
        let _writer = later.join().unwrap();
        let tokens: Vec<(Token, i32)> = seen.iter().map(|c| (c.token, c.result)).collect();
        assert_eq!(tokens, vec![(send, 3), (recv, 2)], "the send alone did not end the wait");
    }

    #[test]
    fn buffers_are_offered_a_few_at_first_and_doubled_when_the_kernel_runs_dry() {
        let ring = Ring::new(8).expect("ring");
        let mut buffers = BufferRing::new(&ring, 0, 64, 64).expect("buffer ring");
        assert_eq!(buffers.offered(), INITIAL_OFFERED_BUFFERS);
        buffers.ran_dry();
        assert_eq!(buffers.offered(), 2 * INITIAL_OFFERED_BUFFERS);
        buffers.ran_dry();
        buffers.ran_dry();
        assert_eq!(buffers.offered(), 64, "never more than the ring holds");
        let small = BufferRing::new(&ring, 1, 4, 64).expect("buffer ring");
        assert_eq!(small.offered(), 4);
    }

    #[test]
    fn a_multishot_receive_fills_provided_buffers_and_reports_end_of_stream() {
        use std::io::Write;
        let mut ring = Ring::new(8).expect("ring");
        let mut buffers = BufferRing::new(&ring, 0, 4, 64).expect("buffer ring");
        let (ours, peer) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut peer = Some(peer);
        let token = Token::new(TokenKind::Recv, 7, 1);
        unsafe { ring.push(&request::recv_multishot(ours.as_raw_fd(), buffers.group(), token)) };
        peer.as_mut().unwrap().write_all(b"hello").unwrap();
        let mut got = Vec::new();
        let mut seen = Vec::new();
        while !seen.iter().any(|c: &Completion| c.result == 0) {
            ring.submit_and_wait(Some(Duration::from_secs(5)));
            seen.clear();
            ring.completions(&mut seen);
            for completion in &seen {
                assert_eq!(completion.token, token);
                if completion.result > 0 {
                    let id = completion.buffer().expect("a buffer id");
                    got.extend_from_slice(buffers.bytes(id, completion.result as usize));
                    buffers.give_back(id);
                    assert!(completion.more(), "the receive stays armed");
                    peer = None; // the peer closes: the next completion is the end of stream
                }
            }
        }
        assert!(peer.is_none());
        assert_eq!(got, b"hello");
    }
}
