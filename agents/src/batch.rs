//! Batched ed25519 verification (votes and certificates).
//!
//! `ed25519_dalek::verify_batch` checks n signatures in one multiscalar multiplication, about
//! twice as fast as n single checks. Its random coefficients are derived from the inputs, so it
//! is deterministic. It is not the strict single check (§1.4) every other signature in Suprnova
//! gets, so keys of small order are refused first, and a batch that fails is checked one by one
//! with the strict check to name the bad signatures.

use ed25519_dalek::{Signature, VerifyingKey};

/// Why a batch failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchFailed;

/// Verifies `sigs[i]` over `msgs[i]` by `keys[i]` for every `i`, in one batch.
pub fn verify(msgs: &[&[u8]], sigs: &[[u8; 64]], keys: &[[u8; 32]]) -> Result<(), BatchFailed> {
    if msgs.len() != sigs.len() || msgs.len() != keys.len() {
        return Err(BatchFailed);
    }
    if msgs.is_empty() {
        return Ok(());
    }
    let mut vks = Vec::with_capacity(keys.len());
    for k in keys {
        let vk = VerifyingKey::from_bytes(k).map_err(|_| BatchFailed)?;
        if vk.is_weak() {
            return Err(BatchFailed);
        }
        vks.push(vk);
    }
    let sigs: Vec<Signature> = sigs.iter().map(Signature::from_bytes).collect();
    ed25519_dalek::verify_batch(msgs, &sigs, &vks).map_err(|_| BatchFailed)
}

/// Which of the signatures verify: one batch, and if it fails, each one strictly.
pub fn verify_each(msgs: &[&[u8]], sigs: &[[u8; 64]], keys: &[[u8; 32]]) -> Vec<bool> {
    if verify(msgs, sigs, keys).is_ok() {
        return vec![true; msgs.len()];
    }
    msgs.iter()
        .zip(sigs.iter())
        .zip(keys.iter())
        .map(|((m, s), k)| suprnova_dht::identity::verify_strict(k, m, s))
        .collect()
}
