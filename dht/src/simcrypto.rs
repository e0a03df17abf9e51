//! Stand-ins for the public-key operations, for the simulator only (feature `sim-crypto`).
//!
//! A simulated network of 10,000–100,000 nodes performs millions of handshakes and signature
//! checks. With real X25519 (~18k DH/s) and ed25519 (~28k verifies/s) on one core, crypto alone
//! would take longer than the whole scenario budget. The simulator therefore installs
//! [`INSECURE`] as its process's default [`CryptoProvider`](crate::crypto::CryptoProvider) at
//! start ([`crate::crypto::install_default`]), after which, in that process only:
//!
//! - an X25519 public key is BLAKE3 of the secret, and DH(a, B) is BLAKE3 of the two public keys
//!   in sorted order (commutative, so both sides of a handshake agree);
//! - an ed25519 signature is 64 bytes of keyed BLAKE3 output over (public key, message), and
//!   verification recomputes it.
//!
//! Everything else (the Noise state machine, ChaCha20-Poly1305, every length and replay check,
//! the Kademlia logic) is the real code. These stand-ins offer **no security at all**: anyone can
//! "sign" for any key. The provider does not exist unless the crate is built with the
//! `sim-crypto` feature, and nothing but `suprnova-sim` and the `dht_ops` fuzz target (a process
//! of its own) enables the feature or installs it.

use crate::crypto::CryptoProvider;

/// The insecure stand-ins as a provider.
pub static INSECURE: CryptoProvider = CryptoProvider {
    name: "insecure BLAKE3 stand-ins (simulation only)",
    x25519_public: |s| x25519_public(&s.to_bytes()),
    x25519_dh: |s, p| Some(x25519_dh(&s.to_bytes(), p)),
    sign: |k, m| sign(&k.verifying_key().to_bytes(), m),
    verify: |pk, m, sig| crate::ct::ct_eq(&sign(pk, m), sig),
};

/// Installs [`INSECURE`] as this process's default provider (see the module docs). Simulator
/// only; refused if another provider was installed first.
pub fn enable_insecure_simulation_crypto() -> Result<(), crate::crypto::AlreadyInstalled> {
    crate::crypto::install_default(&INSECURE)
}

/// The stand-in X25519 public key of `secret`.
fn x25519_public(secret: &[u8; 32]) -> [u8; 32] {
    blake3::derive_key("suprnova sim-crypto x25519 public", secret)
}

/// The stand-in DH between our secret and their public key.
fn x25519_dh(secret: &[u8; 32], public: &[u8; 32]) -> [u8; 32] {
    let mine = x25519_public(secret);
    let (a, b) = if mine <= *public { (mine, *public) } else { (*public, mine) };
    let mut h = blake3::Hasher::new_derive_key("suprnova sim-crypto x25519 dh");
    h.update(&a);
    h.update(&b);
    *h.finalize().as_bytes()
}

/// The stand-in signature of `msg` by `public_key`.
fn sign(public_key: &[u8; 32], msg: &[u8]) -> [u8; 64] {
    let mut h = blake3::Hasher::new_keyed(public_key);
    h.update(msg);
    let mut sig = [0u8; 64];
    h.finalize_xof().fill(&mut sig);
    sig
}
