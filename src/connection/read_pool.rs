//! The shard's pool of read buffers. A connection borrows a buffer only while it reads; the buffer goes
//! back as soon as a read leaves no partial packet, so an idle connection holds none.

use bytes::BytesMut;

pub struct ReadPool {
    free: Vec<BytesMut>,
    buffer_bytes: usize,
    pooled_max: usize,
}

impl ReadPool {
    /// Buffers of `buffer_bytes`; at most `pooled_max` kept free (the rest are freed when returned).
    pub fn new(buffer_bytes: usize, pooled_max: usize) -> Self {
        ReadPool { free: Vec::new(), buffer_bytes, pooled_max }
    }

    pub fn buffer_bytes(&self) -> usize {
        self.buffer_bytes
    }

    /// An empty buffer with at least `buffer_bytes` of room.
    pub fn take(&mut self) -> BytesMut {
        let mut buf = self.free.pop().unwrap_or_default();
        buf.reserve(self.buffer_bytes);
        buf
    }

    /// Returns an emptied buffer. A buffer whose memory is still shared with decoded packets (payloads
    /// not yet delivered) is only worth keeping if it still has room of its own.
    pub fn give_back(&mut self, mut buf: BytesMut) {
        buf.clear();
        if self.free.len() < self.pooled_max && buf.capacity() >= self.buffer_bytes / 2 {
            self.free.push(buf);
        }
    }

    pub fn pooled(&self) -> usize {
        self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_and_bounded() {
        let mut pool = ReadPool::new(1024, 2);
        let a = pool.take();
        let b = pool.take();
        let c = pool.take();
        assert!(a.capacity() >= 1024);
        let a_ptr = a.as_ptr();
        pool.give_back(a);
        pool.give_back(b);
        pool.give_back(c);
        assert_eq!(pool.pooled(), 2);
        let again = pool.take();
        assert!(again.is_empty());
        assert!(again.capacity() >= 1024);
        assert!(again.as_ptr() == a_ptr || pool.pooled() == 1);
    }

    #[test]
    fn a_buffer_with_little_room_left_is_dropped() {
        let mut pool = ReadPool::new(1024, 4);
        let mut buf = pool.take();
        buf.extend_from_slice(&[0u8; 1000]);
        let _packet = buf.split_to(1000).freeze(); // still alive: the front of the allocation is shared
        pool.give_back(buf);
        assert_eq!(pool.pooled(), 0);
    }
}
