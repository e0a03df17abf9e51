//! Handshake MACs and cookies (wire-spec §5.5, §5.6): the DoS defence in front of the Noise work.
//!
//! * `mac1` lets a responder drop, with one keyed hash and no DH, any handshake packet not made by
//!   someone who knows its static public key.
//! * Under load the responder demands `mac2`, keyed by a *cookie* that only the holder of the source
//!   address can learn: the responder sends a small encrypted cookie reply, and it keeps no state for it.
//!
//! The idea follows WireGuard's cookie mechanism; the construction here uses BLAKE3 (keyed mode and
//! `derive_key`) and XChaCha20-Poly1305 and is specified in wire-spec §5.5–§5.6.

use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{Key, KeyInit, Tag, XChaCha20Poly1305, XNonce};

use crate::wire::WireAddr;

/// Context for the mac1 key.
pub const MAC1_CONTEXT: &str = "suprnova v1 handshake mac1";
/// Context for the cookie-reply encryption key.
pub const COOKIE_KEY_CONTEXT: &str = "suprnova v1 cookie reply";
/// A cookie secret is replaced after this long; a received cookie is used for at most this long.
pub const COOKIE_SECRET_LIFETIME_S: u64 = 120;

/// mac1 key for packets sent *to* the holder of `static_public`.
pub fn mac1_key(static_public: &[u8; 32]) -> [u8; 32] {
    blake3::derive_key(MAC1_CONTEXT, static_public)
}

/// Key encrypting cookie replies sent *by* the holder of `static_public`.
pub fn cookie_reply_key(static_public: &[u8; 32]) -> [u8; 32] {
    blake3::derive_key(COOKIE_KEY_CONTEXT, static_public)
}

/// A 16-byte MAC: the first 16 bytes of BLAKE3 keyed with `key` over `data`.
pub fn mac(key: &[u8; 32], data: &[u8]) -> [u8; 16] {
    let h = blake3::keyed_hash(key, data);
    let mut out = [0u8; 16];
    out.copy_from_slice(h.as_bytes().get(..16).unwrap_or(&[0u8; 16]));
    out
}

/// The cookie for a source address: BLAKE3 keyed with the responder's secret over the address
/// bytes (IP octets ‖ port big-endian).
pub fn make_cookie(secret: &[u8; 32], source: &WireAddr) -> [u8; 32] {
    *blake3::keyed_hash(secret, &source.cookie_bytes()).as_bytes()
}

/// Encrypts `cookie` for a cookie reply; the initiation's mac1 is the associated data.
pub fn seal_cookie(key: &[u8; 32], nonce: &[u8; 24], mac1: &[u8; 16], cookie: &[u8; 32]) -> [u8; 48] {
    let cipher = XChaCha20Poly1305::new(&Key::from(*key));
    let mut buf = *cookie;
    let mut out = [0u8; 48];
    if let Ok(tag) = cipher.encrypt_inout_detached(&XNonce::from(*nonce), mac1, buf.as_mut_slice().into()) {
        out[..32].copy_from_slice(&buf);
        out[32..].copy_from_slice(&tag);
    }
    out
}

/// Decrypts a cookie reply's cookie; `None` if it does not authenticate.
pub fn open_cookie(key: &[u8; 32], nonce: &[u8; 24], mac1: &[u8; 16], enc: &[u8; 48]) -> Option<[u8; 32]> {
    let cipher = XChaCha20Poly1305::new(&Key::from(*key));
    let mut buf = [0u8; 32];
    buf.copy_from_slice(&enc[..32]);
    let tag = Tag::try_from(&enc[32..]).ok()?;
    cipher.decrypt_inout_detached(&XNonce::from(*nonce), mac1, buf.as_mut_slice().into(), &tag).ok()?;
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_roundtrip_and_binding() {
        let key = cookie_reply_key(&[9; 32]);
        let addr = WireAddr::V4([127, 0, 0, 1], 9000);
        let cookie = make_cookie(&[1; 32], &addr);
        let enc = seal_cookie(&key, &[2; 24], &[3; 16], &cookie);
        assert_eq!(open_cookie(&key, &[2; 24], &[3; 16], &enc), Some(cookie));
        // Bound to the initiation's mac1 ...
        assert_eq!(open_cookie(&key, &[2; 24], &[4; 16], &enc), None);
        // ... and cookies differ by source port.
        assert_ne!(cookie, make_cookie(&[1; 32], &WireAddr::V4([127, 0, 0, 1], 9001)));
    }
}
