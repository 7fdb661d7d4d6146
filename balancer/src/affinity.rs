//! The affinity cookie: a signed, opaque token naming a backend key, so a client cannot aim its
//! handshakes at a backend of its choosing.
//!
//! Token = `hex(key) "." hex(HMAC-SHA256(secret, key))[..32]`. The secret is random per rtsup
//! process unless configured, so cookies from a previous run simply stop matching (the request
//! falls back to the new-session policy).

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Hex characters of the MAC kept in the token (128 bits).
const MAC_HEX: usize = 32;
/// Longest backend key a token may carry (keys are short, like `chat:12`; the cap keeps a
/// hostile cookie from costing more than a few hundred bytes of work).
pub const MAX_KEY_BYTES: usize = 128;

/// Signs and verifies affinity tokens.
#[derive(Clone)]
pub struct CookieSigner {
    /// HMAC-SHA256 keyed with the secret once: its inner and outer pads are hashed already, so
    /// a token costs two compressions instead of four.
    keyed: Hmac<Sha256>,
}

impl std::fmt::Debug for CookieSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CookieSigner(..)")
    }
}

impl CookieSigner {
    /// A signer with this secret.
    pub fn new(secret: [u8; 32]) -> Self {
        // HMAC accepts keys of any length, so this cannot fail.
        let keyed = <Hmac<Sha256> as KeyInit>::new_from_slice(&secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        Self { keyed }
    }

    /// A signer with a random secret.
    pub fn random() -> Self {
        Self::new(rand::random())
    }

    /// The MAC of `key`, hex-encoded (its first `MAC_HEX / 2` bytes).
    fn mac(&self, key: &[u8]) -> [u8; MAC_HEX] {
        let mut mac = self.keyed.clone();
        mac.update(key);
        let mut out = [0u8; MAC_HEX];
        hex::encode_to_slice(&mac.finalize().into_bytes()[..MAC_HEX / 2], &mut out)
            .unwrap_or_else(|_| unreachable!("MAC_HEX / 2 bytes fill MAC_HEX hex digits"));
        out
    }

    /// The token for backend `key`. Written without `fmt` (one per handshake: formatting cost
    /// more than the two SHA-256 compressions).
    pub fn sign(&self, key: &str) -> String {
        let mut token = Vec::with_capacity(2 * key.len() + 1 + MAC_HEX);
        token.resize(2 * key.len(), 0);
        hex::encode_to_slice(key, &mut token)
            .unwrap_or_else(|_| unreachable!("the buffer holds two digits per byte"));
        token.push(b'.');
        token.extend_from_slice(&self.mac(key.as_bytes()));
        String::from_utf8(token).unwrap_or_else(|_| unreachable!("hex digits are ASCII"))
    }

    /// The backend key in `token`, if the token is well-formed and its MAC is ours.
    pub fn verify(&self, token: &str) -> Option<String> {
        let (key_hex, mac) = token.split_once('.')?;
        if mac.len() != MAC_HEX || key_hex.len() > 2 * MAX_KEY_BYTES {
            return None;
        }
        let key = hex::decode(key_hex).ok()?;
        let expected = self.mac(&key);
        // Constant-time comparison of the MACs.
        let diff = expected
            .iter()
            .zip(mac.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff != 0 {
            return None;
        }
        String::from_utf8(key).ok()
    }
}

/// The value of cookie `name` in a `Cookie:` header value, if present.
pub fn find_cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then(|| v.trim_matches('"'))
    })
}

/// The `Set-Cookie` value for `token` (`Secure` when the client came over HTTPS).
pub fn set_cookie_value(name: &str, token: &str, secure: bool) -> String {
    const ATTRIBUTES: &str = "; Path=/; HttpOnly; SameSite=Lax";
    const SECURE: &str = "; Secure";
    let mut value =
        String::with_capacity(name.len() + 1 + token.len() + ATTRIBUTES.len() + SECURE.len());
    value.push_str(name);
    value.push('=');
    value.push_str(token);
    value.push_str(ATTRIBUTES);
    if secure {
        value.push_str(SECURE);
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_then_verify_round_trips() {
        let s = CookieSigner::new([7; 32]);
        let t = s.sign("chat/2");
        assert_eq!(s.verify(&t).as_deref(), Some("chat/2"));
        assert!(!t.contains("chat"), "token must be opaque: {t}");
    }

    #[test]
    fn tokens_are_hmac_sha256_truncated_and_stable() {
        // A configured secret keeps cookies valid across restarts and upgrades: the token for
        // a key must not change between versions (vector from Python's hmac module).
        let s = CookieSigner::new([7; 32]);
        assert_eq!(
            s.sign("chat/2"),
            "636861742f32.b0d6ff2e6a34fa488ccdb80fc4dc8846"
        );
        assert_eq!(
            s.verify("636861742f32.b0d6ff2e6a34fa488ccdb80fc4dc8846")
                .as_deref(),
            Some("chat/2")
        );
    }

    #[test]
    fn tampering_is_rejected() {
        let s = CookieSigner::new([7; 32]);
        let t = s.sign("chat/2");
        let (_, mac) = t.split_once('.').expect("dot");
        let forged = format!("{}.{mac}", hex::encode("chat/3"));
        assert_eq!(s.verify(&forged), None);
        assert_eq!(CookieSigner::new([8; 32]).verify(&t), None);
        for bad in ["", ".", "zz.zz", "abc", &format!("{t}x"), &t[..t.len() - 1]] {
            assert_eq!(s.verify(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn keys_over_the_cap_are_refused_not_misread() {
        // Found by the fuzzer: the round trip holds only up to MAX_KEY_BYTES.
        let s = CookieSigner::new([7; 32]);
        let long = "\u{fffd}".repeat(43);
        assert!(long.len() > MAX_KEY_BYTES);
        assert_eq!(s.verify(&s.sign(&long)), None);
        let ok = "k".repeat(MAX_KEY_BYTES);
        assert_eq!(s.verify(&s.sign(&ok)).as_deref(), Some(ok.as_str()));
    }

    #[test]
    fn cookie_header_parsing() {
        assert_eq!(find_cookie("a=1; rtsup=tok; b=2", "rtsup"), Some("tok"));
        assert_eq!(find_cookie("rtsupx=1", "rtsup"), None);
        assert_eq!(find_cookie("garbage", "rtsup"), None);
        assert_eq!(
            set_cookie_value("rtsup", "t", false),
            "rtsup=t; Path=/; HttpOnly; SameSite=Lax"
        );
        assert_eq!(
            set_cookie_value("rtsup", "t", true),
            "rtsup=t; Path=/; HttpOnly; SameSite=Lax; Secure"
        );
    }
}
