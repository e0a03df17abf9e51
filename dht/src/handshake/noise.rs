//! `Noise_IK_25519_ChaChaPoly_BLAKE2s` (Noise Protocol Framework rev. 34, §5 and §7.5), written on
//! x25519-dalek, chacha20poly1305 and blake2. Wire-spec §5.2 lists every step; any conforming Noise
//! library with the same prologue and payloads interoperates (a test checks against `snow`).
//!
//! ```text
//! IK:
//!   <- s
//!   ...
//!   -> e, es, s, ss
//!   <- e, ee, se
//! ```

use blake2::{Blake2s256, Digest};
use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{ChaCha20Poly1305, Key, KeyInit, Nonce, Tag};
use hmac::{Mac, SimpleHmac};
use x25519_dalek::StaticSecret;
use zeroize::Zeroize;

use crate::crypto::CryptoProvider;
use crate::wire::limits::TAG_LEN;

/// The Noise protocol name; hashed into the initial chaining key.
pub const PROTOCOL_NAME: &[u8] = b"Noise_IK_25519_ChaChaPoly_BLAKE2s";
/// The prologue both sides mix in: binds the handshake to this protocol and version.
pub const PROLOGUE: &[u8] = b"suprnova wire v1";

/// Why a handshake message was refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum NoiseError {
    /// AEAD tag did not verify.
    #[error("handshake decryption failed")]
    Decrypt,
    /// A Diffie-Hellman result was all zeros (low-order point).
    #[error("low-order public key")]
    LowOrder,
}

/// BLAKE2s-256 over the concatenation of `parts`.
pub fn hash(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Blake2s256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// HMAC-BLAKE2s (RFC 2104, block length 64).
pub fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let Ok(mut m) = <SimpleHmac<Blake2s256> as hmac::KeyInit>::new_from_slice(key) else {
        return [0u8; 32];
    };
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// Noise HKDF with two outputs: `temp = HMAC(ck, ikm)`, `o1 = HMAC(temp, 0x01)`,
/// `o2 = HMAC(temp, o1 ‖ 0x02)`. `ck` is the HMAC key (salt role), `ikm` the input key material.
pub fn hkdf2(ck: &[u8; 32], ikm: &[u8]) -> ([u8; 32], [u8; 32]) {
    let mut temp = hmac(ck, &[ikm]);
    let o1 = hmac(&temp, &[&[1u8]]);
    let o2 = hmac(&temp, &[&o1, &[2u8]]);
    temp.zeroize();
    (o1, o2)
}

/// The Noise ChaChaPoly nonce: 4 zero bytes then the 64-bit counter little-endian.
pub fn nonce(n: u64) -> Nonce {
    let mut b = [0u8; 12];
    b[4..].copy_from_slice(&n.to_le_bytes());
    Nonce::from(b)
}

/// ChaCha20-Poly1305 seal: returns ciphertext ‖ tag.
pub fn seal(key: &[u8; 32], n: u64, ad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let cipher = ChaCha20Poly1305::new(&Key::from(*key));
    let mut buf = plaintext.to_vec();
    // Only fails for plaintexts beyond 2^38 bytes.
    if let Ok(tag) = cipher.encrypt_inout_detached(&nonce(n), ad, buf.as_mut_slice().into()) {
        buf.extend_from_slice(&tag);
    }
    buf
}

/// ChaCha20-Poly1305 open of ciphertext ‖ tag.
pub fn open(key: &[u8; 32], n: u64, ad: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>, NoiseError> {
    let split = ciphertext.len().checked_sub(TAG_LEN).ok_or(NoiseError::Decrypt)?;
    let (ct, tag) = ciphertext.split_at(split);
    let cipher = ChaCha20Poly1305::new(&Key::from(*key));
    let mut buf = ct.to_vec();
    let tag = Tag::try_from(tag).map_err(|_| NoiseError::Decrypt)?;
    cipher.decrypt_inout_detached(&nonce(n), ad, buf.as_mut_slice().into(), &tag).map_err(|_| NoiseError::Decrypt)?;
    Ok(buf)
}

fn dh(crypto: &CryptoProvider, secret: &StaticSecret, public: &[u8; 32]) -> Result<[u8; 32], NoiseError> {
    (crypto.x25519_dh)(secret, public).ok_or(NoiseError::LowOrder)
}

/// The X25519 public key of `secret`.
fn public_of(crypto: &CryptoProvider, secret: &StaticSecret) -> [u8; 32] {
    (crypto.x25519_public)(secret)
}

/// Intermediate values recorded for test vectors: (label, 32-byte value).
pub type Trace = Vec<(String, [u8; 32])>;

/// Noise SymmetricState (+ its CipherState).
#[derive(Clone)]
pub struct Symmetric {
    ck: [u8; 32],
    h: [u8; 32],
    k: Option<[u8; 32]>,
    n: u64,
    trace: Option<Trace>,
}

impl Drop for Symmetric {
    fn drop(&mut self) {
        self.ck.zeroize();
        if let Some(k) = self.k.as_mut() {
            k.zeroize();
        }
    }
}

impl Symmetric {
    /// InitializeSymmetric(protocol_name), MixHash(prologue), MixHash(responder static).
    fn new(responder_static: &[u8; 32], trace: bool) -> Self {
        // The name is 33 bytes (> HASHLEN), so h = HASH(name).
        let h = hash(&[PROTOCOL_NAME]);
        let mut s = Symmetric { ck: h, h, k: None, n: 0, trace: trace.then(Vec::new) };
        s.record("h0 = ck0 = HASH(protocol_name)", h);
        s.mix_hash(PROLOGUE);
        s.record("h after prologue", s.h);
        s.mix_hash(responder_static);
        s.record("h after <- s", s.h);
        s
    }

    fn record(&mut self, label: &str, v: [u8; 32]) {
        if let Some(t) = self.trace.as_mut() {
            t.push((label.to_string(), v));
        }
    }

    fn mix_hash(&mut self, data: &[u8]) {
        self.h = hash(&[&self.h, data]);
    }

    fn mix_key(&mut self, label: &str, ikm: [u8; 32]) {
        self.record(&format!("dh {label}"), ikm);
        let (ck, k) = hkdf2(&self.ck, &ikm);
        self.ck = ck;
        self.k = Some(k);
        self.n = 0;
        self.record(&format!("ck after {label}"), ck);
        self.record(&format!("k after {label}"), k);
    }

    fn encrypt_and_hash(&mut self, label: &str, plaintext: &[u8]) -> Vec<u8> {
        let ct = match self.k {
            Some(k) => seal(&k, self.n, &self.h, plaintext),
            None => plaintext.to_vec(),
        };
        self.n += 1;
        self.mix_hash(&ct);
        self.record(&format!("h after {label}"), self.h);
        ct
    }

    fn decrypt_and_hash(&mut self, label: &str, ciphertext: &[u8]) -> Result<Vec<u8>, NoiseError> {
        let pt = match self.k {
            Some(k) => open(&k, self.n, &self.h, ciphertext)?,
            None => ciphertext.to_vec(),
        };
        self.n += 1;
        self.mix_hash(ciphertext);
        self.record(&format!("h after {label}"), self.h);
        Ok(pt)
    }

    /// Split(): (initiator->responder key, responder->initiator key).
    fn split(&mut self) -> ([u8; 32], [u8; 32]) {
        let (k1, k2) = hkdf2(&self.ck, &[]);
        self.record("split k1 (initiator -> responder)", k1);
        self.record("split k2 (responder -> initiator)", k2);
        (k1, k2)
    }

    /// The recorded trace, if tracing was on.
    pub fn take_trace(&mut self) -> Trace {
        self.trace.take().unwrap_or_default()
    }

    /// The handshake hash h.
    pub fn handshake_hash(&self) -> [u8; 32] {
        self.h
    }
}

/// Session keys from a completed handshake, from the local side's point of view.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SessionKeys {
    /// Key for packets we send.
    pub send: [u8; 32],
    /// Key for packets we receive.
    pub recv: [u8; 32],
}

/// Initiator state between message 1 and message 2.
#[derive(Clone)]
pub struct InitiatorState {
    sym: Symmetric,
    e: StaticSecret,
    crypto: &'static CryptoProvider,
}

/// The Noise fields of message 1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message1 {
    /// e.
    pub ephemeral: [u8; 32],
    /// ENCRYPT(s).
    pub enc_static: Vec<u8>,
    /// ENCRYPT(payload).
    pub enc_payload: Vec<u8>,
}

/// Writes IK message 1: `e, es, s, ss`, then the payload.
pub fn write_message1(
    crypto: &'static CryptoProvider,
    local_static: &StaticSecret,
    remote_static: &[u8; 32],
    ephemeral_secret: [u8; 32],
    payload: &[u8],
    trace: bool,
) -> Result<(InitiatorState, Message1), NoiseError> {
    let mut sym = Symmetric::new(remote_static, trace);
    let e = StaticSecret::from(ephemeral_secret);
    let e_pub = public_of(crypto, &e);
    sym.mix_hash(&e_pub);
    sym.record("h after e", sym.h);
    sym.mix_key("es", dh(crypto, &e, remote_static)?);
    let s_pub = public_of(crypto, local_static);
    let enc_static = sym.encrypt_and_hash("s", &s_pub);
    sym.mix_key("ss", dh(crypto, local_static, remote_static)?);
    let enc_payload = sym.encrypt_and_hash("payload 1", payload);
    Ok((InitiatorState { sym, e, crypto }, Message1 { ephemeral: e_pub, enc_static, enc_payload }))
}

/// Responder state between reading message 1 and writing message 2.
#[derive(Clone)]
pub struct ResponderState {
    sym: Symmetric,
    /// The initiator's ephemeral key.
    re: [u8; 32],
    /// The initiator's static key (authenticated once `ss` decrypted the payload).
    pub rs: [u8; 32],
    crypto: &'static CryptoProvider,
}

/// Reads IK message 1 as the responder; returns the state and the decrypted payload.
pub fn read_message1(
    crypto: &'static CryptoProvider,
    local_static: &StaticSecret,
    msg: &Message1,
    trace: bool,
) -> Result<(ResponderState, Vec<u8>), NoiseError> {
    let s_pub = public_of(crypto, local_static);
    let mut sym = Symmetric::new(&s_pub, trace);
    sym.mix_hash(&msg.ephemeral);
    sym.record("h after e", sym.h);
    sym.mix_key("es", dh(crypto, local_static, &msg.ephemeral)?);
    let rs_vec = sym.decrypt_and_hash("s", &msg.enc_static)?;
    let rs: [u8; 32] = rs_vec.as_slice().try_into().map_err(|_| NoiseError::Decrypt)?;
    sym.mix_key("ss", dh(crypto, local_static, &rs)?);
    let payload = sym.decrypt_and_hash("payload 1", &msg.enc_payload)?;
    Ok((ResponderState { sym, re: msg.ephemeral, rs, crypto }, payload))
}

/// The Noise fields of message 2.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message2 {
    /// e.
    pub ephemeral: [u8; 32],
    /// ENCRYPT(payload): our payload is empty, so this is the 16-byte tag.
    pub enc_payload: Vec<u8>,
}

/// Writes IK message 2: `e, ee, se`, then the (empty) payload; returns the responder's keys.
pub fn write_message2(
    mut st: ResponderState,
    ephemeral_secret: [u8; 32],
    payload: &[u8],
) -> Result<(Message2, SessionKeys, Trace), NoiseError> {
    let e = StaticSecret::from(ephemeral_secret);
    let e_pub = public_of(st.crypto, &e);
    st.sym.mix_hash(&e_pub);
    st.sym.record("h after e (msg 2)", st.sym.h);
    st.sym.mix_key("ee", dh(st.crypto, &e, &st.re)?);
    st.sym.mix_key("se", dh(st.crypto, &e, &st.rs)?);
    let enc_payload = st.sym.encrypt_and_hash("payload 2", payload);
    let (k1, k2) = st.sym.split();
    let trace = st.sym.take_trace();
    Ok((Message2 { ephemeral: e_pub, enc_payload }, SessionKeys { send: k2, recv: k1 }, trace))
}

/// Reads IK message 2 as the initiator; returns the payload and the initiator's keys.
pub fn read_message2(
    mut st: InitiatorState,
    local_static: &StaticSecret,
    msg: &Message2,
) -> Result<(Vec<u8>, SessionKeys, Trace), NoiseError> {
    st.sym.mix_hash(&msg.ephemeral);
    st.sym.record("h after e (msg 2)", st.sym.h);
    st.sym.mix_key("ee", dh(st.crypto, &st.e, &msg.ephemeral)?);
    st.sym.mix_key("se", dh(st.crypto, local_static, &msg.ephemeral)?);
    let payload = st.sym.decrypt_and_hash("payload 2", &msg.enc_payload)?;
    let (k1, k2) = st.sym.split();
    let trace = st.sym.take_trace();
    Ok((payload, SessionKeys { send: k1, recv: k2 }, trace))
}

impl InitiatorState {
    /// Trace recorded so far (message 1), if tracing was on.
    pub fn trace_so_far(&self) -> Trace {
        self.sym.trace.clone().unwrap_or_default()
    }
}

impl ResponderState {
    /// Trace recorded so far (message 1), if tracing was on.
    pub fn trace_so_far(&self) -> Trace {
        self.sym.trace.clone().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use x25519_dalek::PublicKey;

    #[test]
    fn ik_roundtrip_keys_match() {
        let i = StaticSecret::from([1u8; 32]);
        let r = StaticSecret::from([2u8; 32]);
        let r_pub = PublicKey::from(&r).to_bytes();
        let (ist, m1) = write_message1(&crate::crypto::REAL, &i, &r_pub, [3u8; 32], b"hello", false).unwrap();
        let (rst, payload) = read_message1(&crate::crypto::REAL, &r, &m1, false).unwrap();
        assert_eq!(payload, b"hello");
        assert_eq!(rst.rs, PublicKey::from(&i).to_bytes());
        let (m2, rkeys, _) = write_message2(rst, [4u8; 32], &[]).unwrap();
        let (p2, ikeys, _) = read_message2(ist, &i, &m2).unwrap();
        assert!(p2.is_empty());
        assert_eq!(ikeys.send, rkeys.recv);
        assert_eq!(ikeys.recv, rkeys.send);
        assert_ne!(ikeys.send, ikeys.recv);
    }

    #[test]
    fn wrong_responder_key_fails() {
        let i = StaticSecret::from([1u8; 32]);
        let r = StaticSecret::from([2u8; 32]);
        let other = PublicKey::from(&StaticSecret::from([5u8; 32])).to_bytes();
        let (_, m1) = write_message1(&crate::crypto::REAL, &i, &other, [3u8; 32], b"x", false).unwrap();
        assert_eq!(read_message1(&crate::crypto::REAL, &r, &m1, false).err(), Some(NoiseError::Decrypt));
    }

    #[test]
    fn low_order_ephemeral_refused() {
        let r = StaticSecret::from([2u8; 32]);
        let m1 = Message1 { ephemeral: [0u8; 32], enc_static: vec![0; 48], enc_payload: vec![0; 16] };
        assert_eq!(read_message1(&crate::crypto::REAL, &r, &m1, false).err(), Some(NoiseError::LowOrder));
    }
}
