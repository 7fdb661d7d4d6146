//! Just enough RFC 6455 framing to end a proxied WebSocket politely: follow the frame boundaries
//! of the worker → client byte stream, so a close frame can be appended between two frames
//! (never inside one), and know whether the worker already sent its own close frame.
//!
//! Pure: no I/O, fed the body chunks pingora hands to `response_body_filter`.

/// A server → client close frame with status 1001 "going away" and no reason: what a client
/// gets when the balancer releases its connection to a draining worker. Every client stack
/// treats it as a clean close and (socket.io-client with reconnection on) reconnects.
pub const GOING_AWAY_CLOSE: [u8; 4] = [0x88, 0x02, 0x03, 0xE9];

const OPCODE_CLOSE: u8 = 0x8;

/// Follows the frames of one direction of a WebSocket stream, chunk by chunk.
#[derive(Debug, Default, Clone)]
pub struct FrameTracker {
    /// Header bytes of the frame being read (at most 2 + 8 + 4).
    head: [u8; 14],
    /// How many of `head` are filled; 0 between frames.
    have: usize,
    /// Payload bytes of the current frame still to come.
    remaining: u64,
    /// A close frame (opcode 0x8) was seen.
    close_seen: bool,
}

impl FrameTracker {
    /// Account for the next bytes of the stream.
    pub fn feed(&mut self, mut buf: &[u8]) {
        while !buf.is_empty() {
            if self.remaining > 0 {
                let take = usize::try_from(self.remaining).map_or(buf.len(), |r| r.min(buf.len()));
                self.remaining -= take as u64;
                buf = &buf[take..];
                continue;
            }
            self.head[self.have] = buf[0];
            self.have += 1;
            buf = &buf[1..];
            if let Some(len) = self.header_done() {
                if self.head[0] & 0x0F == OPCODE_CLOSE {
                    self.close_seen = true;
                }
                self.remaining = len;
                self.have = 0;
            }
        }
    }

    /// The payload length once the whole header is in `head`.
    fn header_done(&self) -> Option<u64> {
        if self.have < 2 {
            return None;
        }
        let masked = self.head[1] & 0x80 != 0;
        let (ext, len7) = match self.head[1] & 0x7F {
            126 => (2, None),
            127 => (8, None),
            n => (0, Some(u64::from(n))),
        };
        let need = 2 + ext + if masked { 4 } else { 0 };
        if self.have < need {
            return None;
        }
        Some(len7.unwrap_or_else(|| {
            self.head[2..2 + ext]
                .iter()
                .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
        }))
    }

    /// Between two frames: a new frame may be written here.
    pub fn at_boundary(&self) -> bool {
        self.have == 0 && self.remaining == 0
    }

    /// How many bytes to read, at most, to end the current frame without starting the next:
    /// the rest of its payload, or one at a time while its header is incomplete. `None`
    /// between frames.
    pub fn left_in_frame(&self) -> Option<u64> {
        if self.have > 0 {
            Some(1)
        } else if self.remaining > 0 {
            Some(self.remaining)
        } else {
            None
        }
    }

    /// The stream carried a close frame (nothing may follow it).
    pub fn close_seen(&self) -> bool {
        self.close_seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
        let mut f = vec![0x80 | opcode];
        let m = if masked { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => f.push(m | n as u8),
            n if n <= 0xFFFF => {
                f.push(m | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(m | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if masked {
            f.extend_from_slice(&[1, 2, 3, 4]);
        }
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn boundaries_over_every_split() {
        let mut stream = frame(0x1, b"2", false);
        stream.extend(frame(0x1, &[b'4'; 300], false));
        stream.extend(frame(0x2, &[7u8; 70_000], false));
        stream.extend(frame(0x9, b"", true));
        let ends = [3, 3 + 4 + 300, 3 + 4 + 300 + 10 + 70_000, stream.len()];
        assert_eq!(ends[3], 3 + 304 + 70_010 + 6);
        for cut in (0..stream.len()).step_by(97).chain(ends) {
            let mut t = FrameTracker::default();
            t.feed(&stream[..cut]);
            assert_eq!(
                t.at_boundary(),
                cut == 0 || ends.contains(&cut),
                "cut {cut}"
            );
            t.feed(&stream[cut..]);
            assert!(t.at_boundary());
            assert!(!t.close_seen());
        }
        // Byte by byte.
        let mut t = FrameTracker::default();
        for b in &stream {
            t.feed(std::slice::from_ref(b));
        }
        assert!(t.at_boundary());
    }

    #[test]
    fn reading_what_is_left_in_the_frame_ends_exactly_at_its_boundary() {
        let mut stream = frame(0x2, &[7u8; 300], false);
        stream.extend(frame(0x1, b"next", false));
        for cut in 0..=304 {
            let mut t = FrameTracker::default();
            t.feed(&stream[..cut]);
            let mut at = cut;
            while let Some(n) = t.left_in_frame() {
                let n = usize::try_from(n).expect("small");
                t.feed(&stream[at..at + n]);
                at += n;
            }
            assert_eq!(at, if cut == 0 { 0 } else { 304 }, "cut {cut}");
            assert!(t.at_boundary());
        }
    }

    #[test]
    fn sees_the_workers_close_frame() {
        let mut t = FrameTracker::default();
        t.feed(&frame(0x1, b"41", false));
        assert!(!t.close_seen());
        t.feed(&GOING_AWAY_CLOSE);
        assert!(t.close_seen());
        assert!(t.at_boundary());
    }
}
