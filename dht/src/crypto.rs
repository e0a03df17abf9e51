//! The public-key operations as a value: which X25519 and ed25519 a node uses.
//!
//! As with rustls' `CryptoProvider`, the choice is passed in rather than switched inside: an
//! [`Identity`](crate::identity::Identity) carries the provider it was made with
//! ([`Identity::from_seed_with`](crate::identity::Identity::from_seed_with)) and signs and runs
//! its handshakes' Diffie-Hellman with it; checks made without an identity at hand (a record's,
//! a certificate's or an input's signature) use the process default, [`default_provider`].
//! That is [`REAL`] unless the process installs another once, before anything uses the default
//! ([`install_default`]). Only the simulator and one fuzz target do, with
//! `simcrypto::INSECURE` (feature `sim-crypto`, never in a node).

use std::sync::OnceLock;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use x25519_dalek::{PublicKey, StaticSecret};

/// One implementation of the public-key operations.
pub struct CryptoProvider {
    /// What it is, for logs and reports.
    pub name: &'static str,
    /// The X25519 public key of a secret.
    pub x25519_public: fn(&StaticSecret) -> [u8; 32],
    /// X25519 Diffie-Hellman; `None` when the result is not contributory (a low-order point).
    pub x25519_dh: fn(&StaticSecret, &[u8; 32]) -> Option<[u8; 32]>,
    /// An ed25519 signature.
    pub sign: fn(&SigningKey, &[u8]) -> [u8; 64],
    /// Strict ed25519 verification (canonical encodings, no small-order keys).
    pub verify: fn(&[u8; 32], &[u8], &[u8; 64]) -> bool,
}

impl std::fmt::Debug for CryptoProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CryptoProvider({})", self.name)
    }
}

/// X25519 and ed25519 from the dalek crates: what every node uses.
pub static REAL: CryptoProvider = CryptoProvider {
    name: "x25519-dalek, ed25519-dalek",
    x25519_public: |s| PublicKey::from(s).to_bytes(),
    x25519_dh: |s, p| {
        let shared = s.diffie_hellman(&PublicKey::from(*p));
        shared.was_contributory().then(|| shared.to_bytes())
    },
    sign: |k, m| k.sign(m).to_bytes(),
    verify: |pk, m, sig| {
        VerifyingKey::from_bytes(pk).is_ok_and(|vk| vk.verify_strict(m, &Signature::from_bytes(sig)).is_ok())
    },
};

static DEFAULT: OnceLock<&'static CryptoProvider> = OnceLock::new();

/// Another provider was installed as the default first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a different default crypto provider ({0}) is installed already")]
pub struct AlreadyInstalled(pub &'static str);

/// Makes `p` this process's default provider. Once per process, before anything uses the
/// default (the first use settles it); installing the same provider again is fine, a different
/// one is refused.
pub fn install_default(p: &'static CryptoProvider) -> Result<(), AlreadyInstalled> {
    let now = DEFAULT.get_or_init(|| p);
    if std::ptr::eq(*now, p) { Ok(()) } else { Err(AlreadyInstalled(now.name)) }
}

/// This process's default provider: [`REAL`] unless another was installed first. The first use
/// settles it, so an identity made before a late install and the checks made after it can
/// never disagree (the late install is refused instead).
pub fn default_provider() -> &'static CryptoProvider {
    DEFAULT.get_or_init(|| &REAL)
}
