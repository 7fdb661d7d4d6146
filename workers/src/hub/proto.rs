//! Hub wire format: length-prefixed binary frames over a Unix socket.
//!
//! Frame = `u32 BE length` + body; body = `op` byte + fields. Strings are `u16 BE length` +
//! UTF-8; payloads are the rest of the frame.
//!
//! | op | direction | fields |
//! |----|-----------|--------|
//! | 1 SUBSCRIBE | worker → hub | channel |
//! | 2 UNSUBSCRIBE | worker → hub | channel |
//! | 3 PUBLISH | worker → hub | channel, payload |
//! | 4 NUMSUB | worker → hub | `u32` request id, channel |
//! | 5 MESSAGE | hub → worker | channel, payload |
//! | 6 NUMSUB_REPLY | hub → worker | `u32` request id, `u16` count |

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest frame either side accepts (socket.io's default max payload is 1 MB; leave room).
pub const MAX_FRAME: usize = 16 << 20;

/// One hub message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Start receiving `channel`.
    Subscribe(String),
    /// Stop receiving `channel`.
    Unsubscribe(String),
    /// Send `payload` to every subscriber of `channel`.
    Publish(String, Bytes),
    /// How many connections subscribe to `channel`?
    NumSub(u32, String),
    /// A message published on a subscribed channel.
    Message(String, Bytes),
    /// Answer to `NumSub`.
    NumSubReply(u32, u16),
}

/// A frame that cannot be decoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// I/O on the socket failed.
    #[error("hub socket: {0}")]
    Io(#[from] std::io::Error),
    /// Longer than [`MAX_FRAME`].
    #[error("hub frame of {0} bytes exceeds {MAX_FRAME}")]
    TooLarge(usize),
    /// Unknown op or truncated fields.
    #[error("malformed hub frame")]
    Malformed,
}

impl Frame {
    /// Encode with its length prefix.
    pub fn encode(&self) -> Bytes {
        let mut body = BytesMut::new();
        let put_str = |b: &mut BytesMut, s: &str| {
            let s = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
            b.put_u16(s.len() as u16);
            b.put_slice(s);
        };
        match self {
            Frame::Subscribe(c) => {
                body.put_u8(1);
                put_str(&mut body, c);
            }
            Frame::Unsubscribe(c) => {
                body.put_u8(2);
                put_str(&mut body, c);
            }
            Frame::Publish(c, p) => {
                body.put_u8(3);
                put_str(&mut body, c);
                body.put_slice(p);
            }
            Frame::NumSub(id, c) => {
                body.put_u8(4);
                body.put_u32(*id);
                put_str(&mut body, c);
            }
            Frame::Message(c, p) => {
                body.put_u8(5);
                put_str(&mut body, c);
                body.put_slice(p);
            }
            Frame::NumSubReply(id, n) => {
                body.put_u8(6);
                body.put_u32(*id);
                body.put_u16(*n);
            }
        }
        let mut out = BytesMut::with_capacity(4 + body.len());
        out.put_u32(body.len() as u32);
        out.put_slice(&body);
        out.freeze()
    }

    /// Decode one frame body (without the length prefix).
    pub fn decode(mut body: Bytes) -> Result<Self, FrameError> {
        fn take_str(b: &mut Bytes) -> Result<String, FrameError> {
            if b.remaining() < 2 {
                return Err(FrameError::Malformed);
            }
            let n = b.get_u16() as usize;
            if b.remaining() < n {
                return Err(FrameError::Malformed);
            }
            String::from_utf8(b.split_to(n).to_vec()).map_err(|_| FrameError::Malformed)
        }
        if !body.has_remaining() {
            return Err(FrameError::Malformed);
        }
        let frame = match body.get_u8() {
            1 => Frame::Subscribe(take_str(&mut body)?),
            2 => Frame::Unsubscribe(take_str(&mut body)?),
            3 => {
                let c = take_str(&mut body)?;
                Frame::Publish(c, body)
            }
            4 => {
                if body.remaining() < 4 {
                    return Err(FrameError::Malformed);
                }
                let id = body.get_u32();
                Frame::NumSub(id, take_str(&mut body)?)
            }
            5 => {
                let c = take_str(&mut body)?;
                Frame::Message(c, body)
            }
            6 => {
                if body.remaining() != 6 {
                    return Err(FrameError::Malformed);
                }
                Frame::NumSubReply(body.get_u32(), body.get_u16())
            }
            _ => return Err(FrameError::Malformed),
        };
        Ok(frame)
    }
}

/// Read one frame; `Ok(None)` at a clean end of stream.
pub async fn read_frame(r: &mut (impl AsyncRead + Unpin)) -> Result<Option<Frame>, FrameError> {
    let len = match r.read_u32().await {
        Ok(n) => n as usize,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut buf = vec![0; len];
    r.read_exact(&mut buf).await?;
    Frame::decode(Bytes::from(buf)).map(Some)
}

/// Write one frame.
pub async fn write_frame(w: &mut (impl AsyncWrite + Unpin), f: &Frame) -> Result<(), FrameError> {
    w.write_all(&f.encode()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_frame_round_trips() {
        let frames = [
            Frame::Subscribe("socket.io-request#/#".into()),
            Frame::Unsubscribe("c".into()),
            Frame::Publish("c".into(), Bytes::from_static(b"\x81\xa1a\x01")),
            Frame::NumSub(7, "c".into()),
            Frame::Message("c".into(), Bytes::new()),
            Frame::NumSubReply(7, 3),
        ];
        for f in frames {
            let enc = f.encode();
            let body = enc.slice(4..);
            assert_eq!(
                u32::from_be_bytes([enc[0], enc[1], enc[2], enc[3]]) as usize,
                body.len()
            );
            assert_eq!(Frame::decode(body).expect("decode"), f);
        }
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        for body in [
            &b""[..],
            b"\x09",
            b"\x01\x00\x05ab",
            b"\x04\x00",
            b"\x06\x00\x00\x00\x01\x00",
            b"\x01\x00\x02\xff\xfe",
        ] {
            assert!(
                Frame::decode(Bytes::copy_from_slice(body)).is_err(),
                "{body:?}"
            );
        }
    }
}
