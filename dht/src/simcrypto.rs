//! Stand-ins for the public-key operations, for the simulator only (feature `sim-crypto`).
//!
//! A simulated network of 10,000–100,000 nodes performs millions of handshakes and signature
//! checks. With real X25519 (~18k DH/s) and ed25519 (~28k verifies/s) on one core, crypto alone
//! would take longer than the whole scenario budget. The simulator therefore calls
//! [`enable_insecure_simulation_crypto`] once at start, after which, in that process only:
//!
//! - an X25519 public key is BLAKE3 of the secret, and DH(a, B) is BLAKE3 of the two public keys
//!   in sorted order (commutative, so both sides of a handshake agree);
//! - an ed25519 signature is 64 bytes of keyed BLAKE3 output over (public key, message), and
//!   verification recomputes it.
//!
//! Everything else (the Noise state machine, ChaCha20-Poly1305, every length and replay check,
//! the Kademlia logic) is the real code. These stand-ins offer **no security at all**: anyone can
//! "sign" for any key. The switch does not exist unless the crate is built with the `sim-crypto`
//! feature, it is off until the simulator turns it on, and nothing but `suprnova-sim` and the
//! `dht_ops` fuzz target (a process of its own) enables the feature or calls the function.

#[cfg(feature = "sim-crypto")]
static INSECURE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Turns the insecure stand-ins on for the rest of this process. Simulator only.
#[cfg(feature = "sim-crypto")]
pub fn enable_insecure_simulation_crypto() {
    INSECURE.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Whether the stand-ins are in use.
#[inline]
pub fn insecure() -> bool {
    #[cfg(feature = "sim-crypto")]
    {
        INSECURE.load(std::sync::atomic::Ordering::Relaxed)
    }
    #[cfg(not(feature = "sim-crypto"))]
    {
        false
    }
}

/// The stand-in X25519 public key of `secret`.
pub(crate) fn x25519_public(secret: &[u8; 32]) -> [u8; 32] {
    blake3::derive_key("suprnova sim-crypto x25519 public", secret)
}

/// The stand-in DH between our secret and their public key.
pub(crate) fn x25519_dh(secret: &[u8; 32], public: &[u8; 32]) -> [u8; 32] {
    let mine = x25519_public(secret);
    let (a, b) = if mine <= *public { (mine, *public) } else { (*public, mine) };
    let mut h = blake3::Hasher::new_derive_key("suprnova sim-crypto x25519 dh");
    h.update(&a);
    h.update(&b);
    *h.finalize().as_bytes()
}

/// The stand-in signature of `msg` by `public_key`.
pub(crate) fn sign(public_key: &[u8; 32], msg: &[u8]) -> [u8; 64] {
    let mut h = blake3::Hasher::new_keyed(public_key);
    h.update(msg);
    let mut sig = [0u8; 64];
    h.finalize_xof().fill(&mut sig);
    sig
}
