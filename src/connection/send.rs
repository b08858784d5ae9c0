//! A connection's frames on their way to the socket: one `sendmsg` request (an iovec per frame) for
//! everything queued in a turn, so the kernel cost of a send is paid once per turn, not once per message.
//! The batch is boxed and stays put while the kernel reads its `msghdr` and iovecs; a partial send
//! advances it and goes again.

use std::collections::VecDeque;

use bytes::{Buf, Bytes};

/// Frames passed to one `sendmsg` (Linux IOV_MAX is 1024).
pub const IOVECS_PER_SEND: usize = 1024;

pub struct SendBatch {
    message: libc::msghdr,
    iovecs: Vec<libc::iovec>,
    frames: VecDeque<Bytes>,
}

impl SendBatch {
    pub fn new() -> Box<SendBatch> {
        Box::new(SendBatch {
            // SAFETY: msghdr is plain data; all-zero is an empty message.
            message: unsafe { std::mem::zeroed() },
            iovecs: Vec::new(),
            frames: VecDeque::new(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Bytes not yet sent.
    pub fn len_bytes(&self) -> usize {
        self.frames.iter().map(Bytes::len).sum()
    }

    /// Adds frames behind the ones queued. Only while no send of this batch is in flight.
    pub fn extend(&mut self, frames: impl IntoIterator<Item = Bytes>) {
        self.frames.extend(frames.into_iter().filter(|frame| !frame.is_empty()));
    }

    /// Points the message at the front frames and returns it for a `sendmsg` request. The batch must
    /// not be touched until that request completes.
    pub fn prepare(&mut self) -> *const libc::msghdr {
        self.iovecs.clear();
        self.iovecs.extend(
            self.frames
                .iter()
                .take(IOVECS_PER_SEND)
                .map(|frame| libc::iovec { iov_base: frame.as_ptr() as *mut libc::c_void, iov_len: frame.len() }),
        );
        self.message.msg_iov = self.iovecs.as_mut_ptr();
        self.message.msg_iovlen = self.iovecs.len() as _;
        &self.message
    }

    /// The kernel took `written` bytes from the front.
    pub fn sent(&mut self, mut written: usize) {
        while let Some(front) = self.frames.front_mut() {
            if front.len() > written {
                front.advance(written);
                return;
            }
            written -= front.len();
            self.frames.pop_front();
        }
    }

    /// Empties the batch for reuse, keeping no large capacity.
    pub fn reset(&mut self) {
        self.frames.clear();
        self.iovecs.clear();
        if self.frames.capacity() > 64 {
            self.frames = VecDeque::new();
        }
        if self.iovecs.capacity() > 64 {
            self.iovecs = Vec::new();
        }
        self.message.msg_iov = std::ptr::null_mut();
        self.message.msg_iovlen = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    fn sendmsg(fd: i32, batch: &mut SendBatch) -> usize {
        let message = batch.prepare();
        let written = unsafe { libc::sendmsg(fd, message, libc::MSG_DONTWAIT) };
        assert!(written >= 0, "{}", std::io::Error::last_os_error());
        written as usize
    }

    #[test]
    fn all_frames_go_out_in_one_send_in_order() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let mut batch = SendBatch::new();
        batch.extend(["one", "", "two", "three"].iter().map(|text| Bytes::from_static(text.as_bytes())));
        let written = sendmsg(ours.as_raw_fd(), &mut batch);
        assert_eq!(written, 11);
        batch.sent(written);
        assert!(batch.is_empty());
        let mut received = [0u8; 11];
        theirs.read_exact(&mut received).unwrap();
        assert_eq!(&received, b"onetwothree");
    }

    #[test]
    fn a_partial_send_advances_a_partly_written_frame() {
        let mut batch = SendBatch::new();
        batch.extend([Bytes::from_static(b"abc"), Bytes::from_static(b"de")]);
        batch.sent(4);
        assert_eq!(batch.len_bytes(), 1);
        let message = batch.prepare();
        let iov = unsafe { &*(*message).msg_iov };
        assert_eq!(unsafe { std::slice::from_raw_parts(iov.iov_base as *const u8, iov.iov_len) }, b"e");
    }

    #[test]
    fn a_full_socket_takes_part_and_the_rest_follows_in_order() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let big = Bytes::from(vec![7u8; 4 * 1024 * 1024]);
        let mut batch = SendBatch::new();
        batch.extend([big.clone(), Bytes::from_static(b"tail")]);
        let written = sendmsg(ours.as_raw_fd(), &mut batch);
        assert!(written < big.len(), "a socket pair does not buffer 4 MiB");
        batch.sent(written);
        assert_eq!(batch.len_bytes(), big.len() + 4 - written);
        theirs.set_nonblocking(true).unwrap();
        let mut received = Vec::new();
        while received.len() < big.len() + 4 {
            let mut chunk = vec![0u8; 1 << 16];
            if let Ok(n) = theirs.read(&mut chunk) {
                received.extend_from_slice(&chunk[..n]);
            }
            if !batch.is_empty() {
                let message = batch.prepare();
                let written = unsafe { libc::sendmsg(ours.as_raw_fd(), message, libc::MSG_DONTWAIT) };
                if written > 0 {
                    batch.sent(written as usize);
                }
            }
        }
        assert!(received[..big.len()].iter().all(|&byte| byte == 7));
        assert_eq!(&received[big.len()..], b"tail");
    }
}
