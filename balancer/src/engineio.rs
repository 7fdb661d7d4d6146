//! Pure engine.io parsing: the query of a request and the open packet of a handshake response.
//!
//! No I/O. The sid is treated as opaque (Node's are 20 characters, socketioxide's 16).

use std::time::Duration;

use serde::Deserialize;

/// Longest sid accepted; anything longer is not a real engine.io sid.
pub const MAX_SID_LEN: usize = 64;

/// Bytes of a handshake body kept while looking for the open packet.
pub const MAX_OPEN_PACKET: usize = 4096;

/// Engine.io transport named in the query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// HTTP long-polling.
    Polling,
    /// WebSocket.
    Websocket,
}

/// What the balancer needs from an engine.io request's query string.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EioQuery {
    /// The session id, when the request belongs to an existing session.
    pub sid: Option<String>,
    /// The transport, when named.
    pub transport: Option<Transport>,
    /// Protocol version (`EIO=4`, `EIO=3`).
    pub eio: Option<u8>,
}

/// Why a query is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// `sid=` present but empty, too long or with characters no engine.io server emits.
    #[error("malformed sid")]
    BadSid,
    /// `sid=` given twice with different values.
    #[error("conflicting sid parameters")]
    ConflictingSid,
}

/// Parse an engine.io query string (without the leading `?`).
pub fn parse_query(query: &str) -> Result<EioQuery, QueryError> {
    let mut q = EioQuery::default();
    let mut rest = Some(query);
    while let Some(pairs) = rest {
        let (pair, after) = cut(pairs, b'&');
        rest = after;
        let (key, value) = cut(pair, b'=');
        let value = value.unwrap_or("");
        match key {
            "sid" => {
                if value.is_empty() || value.len() > MAX_SID_LEN || !value.bytes().all(is_sid_byte)
                {
                    return Err(QueryError::BadSid);
                }
                if q.sid.as_deref().is_some_and(|s| s != value) {
                    return Err(QueryError::ConflictingSid);
                }
                q.sid = Some(value.to_string());
            }
            "transport" => {
                q.transport = match value {
                    "polling" => Some(Transport::Polling),
                    "websocket" => Some(Transport::Websocket),
                    _ => None,
                }
            }
            "EIO" => q.eio = value.parse().ok(),
            _ => {}
        }
    }
    Ok(q)
}

/// `s` cut at its first `sep`, an ASCII byte (so both sides are whole characters): the part
/// before and, if `sep` was there, the part after. A byte search: `str::split` with a `char`
/// pattern cost ~140 instructions per piece under callgrind, on every engine.io request.
fn cut(s: &str, sep: u8) -> (&str, Option<&str>) {
    debug_assert!(sep.is_ascii(), "cut at an ASCII byte only");
    match s
        .bytes()
        .position(|b| b == sep)
        .and_then(|i| s.split_at_checked(i))
    {
        Some((before, after)) => (before, after.get(1..)),
        None => (s, None),
    }
}

/// Characters of base64id (Node), socketioxide's ids and URL-encoded `=`/`+`/`/`.
fn is_sid_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'%' | b'.' | b'~')
}

/// The fields of an engine.io open packet the balancer uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenPacket {
    /// The new session's id.
    pub sid: String,
    /// `pingInterval + pingTimeout`: how long a silent session stays alive.
    pub liveness: Option<Duration>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawOpen {
    sid: String,
    ping_interval: Option<u64>,
    ping_timeout: Option<u64>,
}

/// Collects the start of a handshake response body, chunk by chunk, until it holds the open
/// packet: `0{"sid":…}` (EIO4), `96:0{…}` (EIO3 text framing) or `\0…\xff0{…}` (EIO3 binary).
#[derive(Debug, Default)]
pub struct OpenPacketSniffer {
    buf: Vec<u8>,
    done: bool,
}

impl OpenPacketSniffer {
    /// Feed the next body chunk. Returns the packet once found; `None` while more is needed or
    /// once the sniffer has given up (no packet in the first [`MAX_OPEN_PACKET`] bytes).
    pub fn feed(&mut self, chunk: &[u8]) -> Option<OpenPacket> {
        if self.done {
            return None;
        }
        let room = MAX_OPEN_PACKET.saturating_sub(self.buf.len());
        self.buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        match find_open_packet(&self.buf) {
            Some(p) => {
                self.done = true;
                self.buf = Vec::new();
                Some(p)
            }
            None => {
                if self.buf.len() >= MAX_OPEN_PACKET {
                    self.done = true;
                    self.buf = Vec::new();
                }
                None
            }
        }
    }

    /// Whether the sniffer has finished (found the packet or given up).
    #[cfg(test)]
    fn is_done(&self) -> bool {
        self.done
    }
}

/// Find the open packet's JSON object in `body`: the first `{` preceded by the packet type `0`,
/// up to the first `}` (the open packet has no nested objects).
pub fn find_open_packet(body: &[u8]) -> Option<OpenPacket> {
    let start = body.windows(2).position(|w| w == b"0{")? + 1;
    let end = start + body[start..].iter().position(|&b| b == b'}')?;
    let raw: RawOpen = serde_json::from_slice(&body[start..=end]).ok()?;
    if raw.sid.is_empty() || raw.sid.len() > MAX_SID_LEN || !raw.sid.bytes().all(is_sid_byte) {
        return None;
    }
    let liveness = match (raw.ping_interval, raw.ping_timeout) {
        (Some(i), Some(t)) => Some(Duration::from_millis(i.saturating_add(t))),
        _ => None,
    };
    Some(OpenPacket {
        sid: raw.sid,
        liveness,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_matches_split_once_on_every_shape() {
        for s in [
            "", "&", "a", "a=1", "a=", "=1", "a==b", "a=1&b=2", "&&", "é=ü&ß", "sid=é&x", "=&=",
        ] {
            for sep in [b'&', b'='] {
                let expected = s.split_once(sep as char);
                let got = cut(s, sep);
                assert_eq!(
                    got.1.map(|after| (got.0, after)),
                    expected,
                    "{s:?} at {sep}"
                );
                if expected.is_none() {
                    assert_eq!(got.0, s);
                }
            }
        }
        // a trailing `&` leaves an empty last pair, as `split` did
        assert_eq!(
            parse_query("EIO=4&sid=abc&").expect("ok").sid.as_deref(),
            Some("abc")
        );
    }

    #[test]
    fn handshake_query_has_no_sid() {
        let q = parse_query("EIO=4&transport=polling&t=OaBc1").expect("ok");
        assert_eq!(q.sid, None);
        assert_eq!(q.transport, Some(Transport::Polling));
        assert_eq!(q.eio, Some(4));
    }

    #[test]
    fn sids_of_16_and_20_chars() {
        for sid in ["AAAAAAAAAAAAAAAA", "Xg4Yx-Pz_bA9cR2dE1fQ"] {
            let q = parse_query(&format!("EIO=4&transport=websocket&sid={sid}")).expect("ok");
            assert_eq!(q.sid.as_deref(), Some(sid));
            assert_eq!(q.transport, Some(Transport::Websocket));
        }
    }

    #[test]
    fn garbage_sids_are_rejected() {
        assert_eq!(parse_query("sid="), Err(QueryError::BadSid));
        assert_eq!(parse_query("sid=a%20b<script>"), Err(QueryError::BadSid));
        assert_eq!(
            parse_query(&format!("sid={}", "a".repeat(65))),
            Err(QueryError::BadSid)
        );
        assert_eq!(
            parse_query("sid=aaa&sid=bbb"),
            Err(QueryError::ConflictingSid)
        );
        assert!(parse_query("sid=aaa&sid=aaa").is_ok());
    }

    #[test]
    fn eio4_open_packet() {
        let body = br#"0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#;
        let p = find_open_packet(body).expect("packet");
        assert_eq!(p.sid, "lv_VI97HAXpY6yYWAAAC");
        assert_eq!(p.liveness, Some(Duration::from_secs(45)));
    }

    #[test]
    fn open_packet_followed_by_more_packets() {
        let body = b"0{\"sid\":\"abcdefghijklmnop\",\"upgrades\":[],\"pingInterval\":300,\"pingTimeout\":200}\x1e40{\"sid\":\"zzz\"}";
        let p = find_open_packet(body).expect("packet");
        assert_eq!(p.sid, "abcdefghijklmnop");
        assert_eq!(p.liveness, Some(Duration::from_millis(500)));
    }

    #[test]
    fn eio3_text_and_binary_framing() {
        let text = br#"96:0{"sid":"abcdefghijklmnopqrst","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":5000}2:40"#;
        assert_eq!(
            find_open_packet(text).expect("text").sid,
            "abcdefghijklmnopqrst"
        );
        let mut bin = vec![0u8, 9, 6, 0xff];
        bin.extend_from_slice(
            br#"0{"sid":"abcdefghijklmnopqrst","pingInterval":1,"pingTimeout":2}"#,
        );
        assert_eq!(
            find_open_packet(&bin).expect("binary").sid,
            "abcdefghijklmnopqrst"
        );
    }

    #[test]
    fn sniffer_handles_chunks_split_anywhere() {
        let body = br#"0{"sid":"Xg4Yx-Pz_bA9cR2dE1fQ","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000}"#;
        for split in 1..body.len() {
            let mut s = OpenPacketSniffer::default();
            assert_eq!(s.feed(&body[..split]), None, "split {split}");
            let p = s.feed(&body[split..]).expect("found");
            assert_eq!(p.sid, "Xg4Yx-Pz_bA9cR2dE1fQ");
            assert!(s.is_done());
        }
    }

    #[test]
    fn sniffer_gives_up_on_non_engineio_bodies() {
        let mut s = OpenPacketSniffer::default();
        for _ in 0..100 {
            assert_eq!(s.feed(&[b'x'; 100]), None);
        }
        assert!(s.is_done());
        assert_eq!(find_open_packet(br#"0{"sid":"has space"}"#), None);
        assert_eq!(find_open_packet(br#"0{"nosid":1}"#), None);
    }
}
