//! The scrollback: the last `capacity` bytes a session's terminal wrote, addressed by
//! absolute offsets (bytes since the session started), so every reader follows at its own
//! offset and one that falls behind learns exactly what it lost instead of holding the
//! session up.

use std::collections::VecDeque;

/// A bounded byte ring with absolute offsets.
#[derive(Debug)]
pub struct Ring {
    buf: VecDeque<u8>,
    capacity: usize,
    /// The offset of `buf[0]`.
    start: u64,
}

/// What a reader gets from `Ring::read`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    /// Bytes from `from` on.
    pub data: Vec<u8>,
    /// The offset of `data[0]`: the offset asked for, or the oldest kept one when the reader
    /// fell behind.
    pub from: u64,
    /// Where to read next.
    pub next: u64,
    /// Bytes the reader asked for that are no longer kept (`from - since`), zero if none.
    pub lost: u64,
}

impl Ring {
    pub fn new(capacity: usize) -> Ring {
        Ring {
            buf: VecDeque::new(),
            capacity: capacity.max(1),
            start: 0,
        }
    }

    /// The offset after the last byte written.
    pub fn end(&self) -> u64 {
        self.start + self.buf.len() as u64
    }

    /// Appends `data`, dropping the oldest bytes past the capacity.
    pub fn push(&mut self, data: &[u8]) {
        let data = if data.len() > self.capacity {
            let skip = data.len() - self.capacity;
            self.start += (self.buf.len() + skip) as u64;
            self.buf.clear();
            &data[skip..]
        } else {
            data
        };
        let over = (self.buf.len() + data.len()).saturating_sub(self.capacity);
        self.buf.drain(..over);
        self.start += over as u64;
        self.buf.extend(data);
    }

    /// Up to `max` bytes from `since` (clamped to what is kept; a `since` past the end reads
    /// nothing from the end).
    pub fn read(&self, since: u64, max: usize) -> Read {
        let since = since.min(self.end());
        let from = since.max(self.start);
        let at = (from - self.start) as usize;
        let take = (self.buf.len() - at).min(max);
        let mut data = Vec::with_capacity(take);
        data.extend(self.buf.range(at..at + take));
        Read {
            next: from + take as u64,
            data,
            from,
            lost: from - since,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_follows_at_its_offset_and_one_left_behind_learns_what_it_lost() {
        let mut r = Ring::new(8);
        r.push(b"hello");
        assert_eq!(r.read(0, 100).data, b"hello");
        assert_eq!(r.read(3, 100).data, b"lo");
        r.push(b" world");
        assert_eq!(r.end(), 11);
        let behind = r.read(0, 100);
        assert_eq!(behind.from, 3);
        assert_eq!(behind.lost, 3);
        assert_eq!(behind.data, b"lo world");
        assert_eq!(behind.next, 11);
        let caught_up = r.read(11, 100);
        assert!(caught_up.data.is_empty());
        assert_eq!(caught_up.lost, 0);
        let limited = r.read(5, 2);
        assert_eq!((limited.data.as_slice(), limited.next), (&b" w"[..], 7));
        r.push(b"0123456789AB");
        assert_eq!(r.end(), 23);
        assert_eq!(r.read(0, 100).data, b"456789AB");
    }
}
