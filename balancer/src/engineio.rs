//! Pure engine.io parsing: the query of a request and the open packet of a handshake response.
//!
//! No I/O. The sid is treated as opaque (Node's are 20 characters, socketioxide's 16).

use std::time::Duration;

/// Longest sid accepted; anything longer is not a real engine.io sid.
pub const MAX_SID_LEN: usize = 64;

/// Bytes of a handshake body kept while looking for the open packet.
pub const MAX_OPEN_PACKET: usize = 4096;

/// What the balancer needs from an engine.io request's query string.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EioQuery {
    /// The session id, when the request belongs to an existing session.
    pub sid: Option<String>,
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
        // Only the sid: the transport and protocol version are the worker's business.
        if key != "sid" {
            continue;
        }
        if !is_sid(value) {
            return Err(QueryError::BadSid);
        }
        match q.sid.as_deref() {
            Some(sid) if sid != value => return Err(QueryError::ConflictingSid),
            Some(_) => {}
            None => q.sid = Some(value.to_string()),
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

/// Whether `s` could be a sid an engine.io server issued: 1 to [`MAX_SID_LEN`] sid bytes.
fn is_sid(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_SID_LEN && s.bytes().all(is_sid_byte)
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
/// read up to its closing `}` (`None` until the whole object is there, or if it is not an
/// open packet).
pub fn find_open_packet(body: &[u8]) -> Option<OpenPacket> {
    let start = body.windows(2).position(|w| w == b"0{")? + 1;
    let fields = OpenFields::read(&body[start..])?;
    let sid = fields.sid.filter(|s| is_sid(s))?;
    let liveness = match (
        fields.ping_interval.flatten(),
        fields.ping_timeout.flatten(),
    ) {
        (Some(i), Some(t)) => Some(Duration::from_millis(i.saturating_add(t))),
        _ => None,
    };
    Some(OpenPacket {
        sid: sid.to_string(),
        liveness,
    })
}

/// The members of an open packet's JSON object the balancer reads; every other member is
/// skipped whatever its value. Read by hand (about half of `serde_json`'s instructions on
/// every handshake): the object is flat, its values strings, numbers, `true`/`false`/`null`
/// or arrays of those.
#[derive(Debug, Default, PartialEq, Eq)]
struct OpenFields<'a> {
    sid: Option<&'a str>,
    /// Given (`Some`), as a number or as `null` (`Some(None)`).
    ping_interval: Option<Option<u64>>,
    ping_timeout: Option<Option<u64>>,
}

impl<'a> OpenFields<'a> {
    /// The members of the object at the start of `json`; `None` if it is cut short, is not
    /// an object, gives a member twice, gives a read member a value of another type, or nests
    /// an object. A skipped member's value is only delimited, not checked to be valid JSON,
    /// and names and sids are compared as written (one spelled with an escape is not read).
    fn read(json: &'a [u8]) -> Option<Self> {
        let mut r = Reader { json, at: 0 };
        let mut fields = Self::default();
        r.expect(b'{')?;
        if r.peek_past_space()? == b'}' {
            return Some(fields);
        }
        loop {
            let key = r.string()?;
            r.expect(b':')?;
            match key {
                b"sid" => once(&mut fields.sid, std::str::from_utf8(r.string()?).ok()?)?,
                b"pingInterval" => once(&mut fields.ping_interval, r.integer_or_null()?)?,
                b"pingTimeout" => once(&mut fields.ping_timeout, r.integer_or_null()?)?,
                _ => r.skip_value(MAX_ARRAY_DEPTH)?,
            }
            match r.next_past_space()? {
                b',' => {}
                b'}' => return Some(fields),
                _ => return None,
            }
        }
    }
}

/// `value` into the member's `slot`; `None` if the member was given already.
fn once<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    slot.replace(value).is_none().then_some(())
}

/// Deepest arrays skipped in an open packet (`"upgrades":["websocket"]` is one deep).
const MAX_ARRAY_DEPTH: usize = 4;

/// A cursor over JSON bytes; every method answers `None` at the end of the bytes or on
/// something it does not expect.
struct Reader<'a> {
    json: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// The next byte that is not JSON whitespace, left unread.
    fn peek_past_space(&mut self) -> Option<u8> {
        while let Some(&b) = self.json.get(self.at) {
            if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
                return Some(b);
            }
            self.at += 1;
        }
        None
    }

    /// The next byte that is not JSON whitespace, read.
    fn next_past_space(&mut self) -> Option<u8> {
        let b = self.peek_past_space()?;
        self.at += 1;
        Some(b)
    }

    fn expect(&mut self, want: u8) -> Option<()> {
        (self.next_past_space()? == want).then_some(())
    }

    /// A string's raw bytes between its quotes (escapes left as they are: a member name or
    /// a sid with one is not one the balancer reads).
    fn string(&mut self) -> Option<&'a [u8]> {
        self.expect(b'"')?;
        let start = self.at;
        loop {
            match *self.json.get(self.at)? {
                b'"' => break,
                b'\\' => self.at += 2,
                _ => self.at += 1,
            }
        }
        let raw = self.json.get(start..self.at)?;
        self.at += 1;
        Some(raw)
    }

    /// A non-negative integer that fits a `u64` (what `pingInterval` and `pingTimeout` are),
    /// or `null` (`Some(None)`); a fraction or exponent is refused.
    fn integer_or_null(&mut self) -> Option<Option<u64>> {
        self.peek_past_space()?;
        if self.json.get(self.at..)?.starts_with(b"null") {
            self.at += 4;
            return Some(None);
        }
        let start = self.at;
        while self.json.get(self.at).is_some_and(u8::is_ascii_digit) {
            self.at += 1;
        }
        let digits = self.json.get(start..self.at)?;
        if digits.is_empty() || (digits.len() > 1 && digits[0] == b'0') {
            return None;
        }
        if matches!(self.json.get(self.at)?, b'.' | b'e' | b'E') {
            return None;
        }
        digits
            .iter()
            .try_fold(0u64, |n, d| {
                n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
            })
            .map(Some)
    }

    /// Any value: a string, an array of values (nested at most `depth` deep), or a bare word
    /// (number, `true`, `false`, `null`) up to the next delimiter. An object is refused (an
    /// open packet nests none).
    fn skip_value(&mut self, depth: usize) -> Option<()> {
        match self.peek_past_space()? {
            b'"' => self.string().map(drop),
            b'[' => {
                let depth = depth.checked_sub(1)?;
                self.at += 1;
                if self.peek_past_space()? == b']' {
                    self.at += 1;
                    return Some(());
                }
                loop {
                    self.skip_value(depth)?;
                    match self.next_past_space()? {
                        b',' => {}
                        b']' => return Some(()),
                        _ => return None,
                    }
                }
            }
            b'{' => None,
            _ => {
                let start = self.at;
                while self
                    .json
                    .get(self.at)
                    .is_some_and(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'+' | b'.'))
                {
                    self.at += 1;
                }
                // Cut short, or not a word at all.
                self.json.get(self.at)?;
                (self.at > start).then_some(())
            }
        }
    }
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
    }

    #[test]
    fn sids_of_16_and_20_chars() {
        for sid in ["AAAAAAAAAAAAAAAA", "Xg4Yx-Pz_bA9cR2dE1fQ"] {
            let q = parse_query(&format!("EIO=4&transport=websocket&sid={sid}")).expect("ok");
            assert_eq!(q.sid.as_deref(), Some(sid));
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

    /// What `serde_json` makes of an open packet's object (the reader it replaced): a string
    /// `sid`, `pingInterval` and `pingTimeout` integers, `null` or absent.
    fn by_serde(obj: &[u8]) -> Option<OpenPacket> {
        let v: serde_json::Value = serde_json::from_slice(obj).ok()?;
        let ms = |key: &str| match v.get(key) {
            None | Some(serde_json::Value::Null) => Some(None),
            Some(n) => n.as_u64().map(Some),
        };
        let (interval, timeout) = (ms("pingInterval")?, ms("pingTimeout")?);
        let sid = v.as_object()?.get("sid")?.as_str().filter(|s| is_sid(s))?;
        Some(OpenPacket {
            sid: sid.to_string(),
            liveness: interval
                .zip(timeout)
                .map(|(i, t)| Duration::from_millis(i.saturating_add(t))),
        })
    }

    #[test]
    fn open_packets_read_as_serde_json_read_them() {
        let objects: &[&str] = &[
            r#"{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#,
            r#"{ "maxPayload" : 1e6 , "upgrades" : [ ] , "sid" : "abc" , "pingTimeout":1,"pingInterval":2 }"#,
            "{\n\t\"sid\":\"abc\",\r\n\"pingInterval\":0,\"pingTimeout\":0}",
            r#"{"sid":"abc"}"#,
            r#"{"sid":"abc","pingInterval":null,"pingTimeout":5}"#,
            r#"{"sid":"abc","pingInterval":25000}"#,
            r#"{"x":"a \" } , \\","y":[["a",1],[],[true,false,null]],"sid":"abc","z":-1.5e-3}"#,
            r#"{"sid":"abc","pingInterval":18446744073709551615,"pingTimeout":1}"#,
            r#"{"sid":"abc","pingInterval":18446744073709551616,"pingTimeout":1}"#,
            r#"{}"#,
            r#"{"sid":""}"#,
            r#"{"sid":"has space"}"#,
            r#"{"sid":12}"#,
            r#"{"sid":null}"#,
            r#"{"sid":["abc"]}"#,
            r#"{"sid":"abc","pingInterval":1.5,"pingTimeout":1}"#,
            r#"{"sid":"abc","pingInterval":-1,"pingTimeout":1}"#,
            r#"{"sid":"abc","pingInterval":"1","pingTimeout":1}"#,
            r#"{"sid":"abc","pingInterval":01,"pingTimeout":1}"#,
            r#"{"sid":"abc",}"#,
            r#"{"sid":"abc" "x":1}"#,
            r#"{"sid" "abc"}"#,
            r#"{,"sid":"abc"}"#,
            r#"["sid","abc"]"#,
        ];
        for obj in objects {
            let packet = [b"0", obj.as_bytes()].concat();
            assert_eq!(find_open_packet(&packet), by_serde(obj.as_bytes()), "{obj}");
            // Cut anywhere, it is never read (nor does it panic).
            for cut in 0..packet.len() {
                assert_eq!(find_open_packet(&packet[..cut]), None, "{obj} cut at {cut}");
            }
        }
    }

    #[test]
    fn open_packets_that_name_a_member_twice_or_nest_deep_are_refused() {
        for obj in [
            r#"0{"sid":"abc","sid":"abd"}"#,
            r#"0{"sid":"abc","pingInterval":1,"pingInterval":2}"#,
            r#"0{"sid":"abc","pingTimeout":null,"pingTimeout":null}"#,
            r#"0{"sid":"abc","x":{"y":1}}"#,
            r#"0{"sid":"abc","x":[[[[["too deep"]]]]]}"#,
            r#"0{"sid":"a\"b"}"#,
        ] {
            assert_eq!(find_open_packet(obj.as_bytes()), None, "{obj}");
        }
        let deep = format!(
            r#"0{{"x":{}1{},"sid":"abc"}}"#,
            "[".repeat(4000),
            "]".repeat(4000)
        );
        assert_eq!(find_open_packet(deep.as_bytes()), None);
        let four = r#"0{"x":[[[["deep enough"]]]],"sid":"abc"}"#;
        assert_eq!(
            find_open_packet(four.as_bytes()).map(|p| p.sid),
            Some("abc".into())
        );
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
