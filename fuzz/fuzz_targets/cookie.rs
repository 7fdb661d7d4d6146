//! The affinity cookie: arbitrary Cookie headers and tokens never panic the parser or the
//! verifier, and no forged token verifies.
#![no_main]

use balancer::affinity::{CookieSigner, MAX_KEY_BYTES, find_cookie};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let signer = CookieSigner::new([42; 32]);
    if let Some(token) = find_cookie(&text, "rtsup") {
        // Random bytes forging a valid MAC would be a broken HMAC.
        if let Some(key) = signer.verify(token) {
            assert_eq!(signer.sign(&key), token);
        }
    }
    let _ = signer.verify(&text);
    // Keys up to the cap round-trip; longer ones are refused, never mis-verified.
    let round = signer.sign(&text);
    let expected = (text.len() <= MAX_KEY_BYTES).then_some(&*text);
    assert_eq!(signer.verify(&round).as_deref(), expected);
});
