//! The shard's read buffer. glommio reads synchronously inside a poll (a non-blocking `recv`), so one
//! buffer per shard serves every connection: a read lands here and its bytes are copied into an
//! exactly-sized buffer for decoding. An idle connection therefore holds no read buffer, and decoded
//! packets (whose strings and payloads point into the copy) pin only the bytes of their own read,
//! never a whole pooled buffer.

use bytes::BytesMut;

pub struct ShardReadBuffer {
    scratch: Box<[u8]>,
}

impl ShardReadBuffer {
    pub fn new(buffer_bytes: usize) -> Self {
        ShardReadBuffer { scratch: vec![0; buffer_bytes].into_boxed_slice() }
    }

    /// Where the next read goes.
    pub fn scratch(&mut self) -> &mut [u8] {
        &mut self.scratch
    }

    /// The `read` bytes just read, appended to a connection's partial packet or copied into a new buffer
    /// of exactly their size.
    pub fn take_input(&self, read: usize, partial: Option<BytesMut>) -> BytesMut {
        let bytes = &self.scratch[..read];
        match partial {
            Some(mut partial) => {
                partial.extend_from_slice(bytes);
                partial
            }
            None => BytesMut::from(bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_is_an_exact_copy_and_the_scratch_stays_free() {
        let mut reads = ShardReadBuffer::new(1024);
        reads.scratch()[..5].copy_from_slice(b"hello");
        let input = reads.take_input(5, None);
        assert_eq!(&input[..], b"hello");
        assert!(input.capacity() < 64, "a 5 byte read must not pin a 1 KiB buffer");
        reads.scratch()[..3].copy_from_slice(b"abc");
        assert_eq!(&input[..], b"hello", "the copy does not alias the scratch buffer");
    }

    #[test]
    fn a_partial_packet_is_continued() {
        let mut reads = ShardReadBuffer::new(16);
        reads.scratch()[..2].copy_from_slice(b"de");
        let input = reads.take_input(2, Some(BytesMut::from(&b"abc"[..])));
        assert_eq!(&input[..], b"abcde");
    }
}
