//! The engine.io query parser and the open-packet sniffer, on arbitrary bytes split into
//! arbitrary chunks: never a panic, and the sniffer agrees with the one-shot parser.
#![no_main]

use balancer::engineio::{OpenPacketSniffer, find_open_packet, parse_query, MAX_OPEN_PACKET};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_query(&String::from_utf8_lossy(data));
    let Some((&split, body)) = data.split_first() else { return };
    let at = usize::from(split).min(body.len());
    let mut sniffer = OpenPacketSniffer::default();
    let found = sniffer.feed(&body[..at]).or_else(|| sniffer.feed(&body[at..]));
    if body.len() <= MAX_OPEN_PACKET {
        assert_eq!(found, find_open_packet(body));
    }
});
