//! Writing a connection's queued frames with one `sendmsg` (an iovec per frame): the kernel cost of a send
//! is paid once per turn, not once per message.

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;

use bytes::{Buf, Bytes};
use smallvec::SmallVec;

/// Frames passed to one `sendmsg` (Linux IOV_MAX is 1024).
pub const IOVECS_PER_WRITE: usize = 1024;

/// Writes the front of `frames` with one non-blocking `sendmsg` and drops what the socket took (advancing a
/// frame it took part of). Returns the bytes written; `WouldBlock` when the socket buffer is full.
pub fn write_frames(fd: RawFd, frames: &mut VecDeque<Bytes>) -> io::Result<usize> {
    if frames.is_empty() {
        return Ok(0);
    }
    let iovecs: SmallVec<[libc::iovec; 32]> = frames
        .iter()
        .filter(|frame| !frame.is_empty())
        .take(IOVECS_PER_WRITE)
        .map(|frame| libc::iovec { iov_base: frame.as_ptr() as *mut libc::c_void, iov_len: frame.len() })
        .collect();
    // SAFETY: every iovec points into a `Bytes` held by `frames`, unchanged until sendmsg returns.
    let written = unsafe {
        let mut message: libc::msghdr = std::mem::zeroed();
        message.msg_iov = iovecs.as_ptr() as *mut libc::iovec;
        message.msg_iovlen = iovecs.len() as _;
        libc::sendmsg(fd, &message, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
    };
    if written < 0 {
        return Err(io::Error::last_os_error());
    }
    consume(frames, written as usize);
    Ok(written as usize)
}

/// Drops `written` bytes from the front of `frames`.
pub fn consume(frames: &mut VecDeque<Bytes>, mut written: usize) {
    while let Some(front) = frames.front_mut() {
        if front.len() > written {
            front.advance(written);
            return;
        }
        written -= front.len();
        frames.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn all_frames_go_out_in_one_write_in_order() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let mut frames: VecDeque<Bytes> =
            ["one", "", "two", "three"].iter().map(|text| Bytes::from_static(text.as_bytes())).collect();
        assert_eq!(write_frames(ours.as_raw_fd(), &mut frames).unwrap(), 11);
        assert!(frames.is_empty());
        let mut received = [0u8; 11];
        theirs.read_exact(&mut received).unwrap();
        assert_eq!(&received, b"onetwothree");
    }

    #[test]
    fn a_full_socket_keeps_the_rest_and_reports_would_block() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let big = Bytes::from(vec![7u8; 4 * 1024 * 1024]);
        let mut frames: VecDeque<Bytes> = VecDeque::from([big.clone(), Bytes::from_static(b"tail")]);
        let written = write_frames(ours.as_raw_fd(), &mut frames).unwrap();
        assert!(written < big.len(), "a socket pair does not buffer 4 MiB");
        assert_eq!(frames.iter().map(Bytes::len).sum::<usize>(), big.len() + 4 - written);
        let err = write_frames(ours.as_raw_fd(), &mut frames).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        // Drain and finish: the peer gets every byte once, in order.
        theirs.set_nonblocking(true).unwrap();
        let mut received = Vec::new();
        while !frames.is_empty() || received.len() < big.len() + 4 {
            let mut chunk = vec![0u8; 1 << 16];
            if let Ok(n) = theirs.read(&mut chunk) {
                received.extend_from_slice(&chunk[..n]);
            }
            let _ = write_frames(ours.as_raw_fd(), &mut frames);
        }
        assert_eq!(received.len(), big.len() + 4);
        assert!(received[..big.len()].iter().all(|&byte| byte == 7));
        assert_eq!(&received[big.len()..], b"tail");
    }

    #[test]
    fn consume_advances_a_partly_written_frame() {
        let mut frames: VecDeque<Bytes> = VecDeque::from([Bytes::from_static(b"abc"), Bytes::from_static(b"de")]);
        consume(&mut frames, 4);
        assert_eq!(frames, VecDeque::from([Bytes::from_static(b"e")]));
    }
}
