//! A transport session (wire-spec §5.7–§5.8): the two directional keys from the handshake, the
//! send counter used as nonce, and the receive replay window. Seal and open work in caller buffers.

use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{ChaCha20Poly1305, Key, KeyInit, Tag};

use super::noise::{SessionKeys, nonce};
use super::replay::{ReplayError, ReplayWindow};
use crate::wire::limits::{MAX_DATAGRAM, TAG_LEN, TRANSPORT_HEADER_LEN};
use crate::wire::packet::transport_header;

/// No packet is sent or accepted with a counter at or above this (§5.8).
pub const REJECT_AFTER_MESSAGES: u64 = u64::MAX - (1 << 13);

/// Why a transport packet could not be sealed or opened.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum SessionError {
    /// Counter space used up; a new handshake is needed.
    #[error("session counter exhausted")]
    Exhausted,
    /// Plaintext too large for one datagram.
    #[error("plaintext too large")]
    TooLarge,
    /// Replayed or too old.
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// Tag did not verify.
    #[error("transport decryption failed")]
    Decrypt,
}

/// One direction pair of an established session.
pub struct Session {
    /// Our index: peers put it in packets they send us.
    pub local_index: u32,
    /// The peer's index: we put it in packets we send.
    pub remote_index: u32,
    send: ChaCha20Poly1305,
    recv: ChaCha20Poly1305,
    send_counter: u64,
    replay: ReplayWindow,
}

impl Session {
    /// A session from handshake keys.
    pub fn new(local_index: u32, remote_index: u32, keys: &SessionKeys) -> Self {
        Session {
            local_index,
            remote_index,
            send: ChaCha20Poly1305::new(&Key::from(keys.send)),
            recv: ChaCha20Poly1305::new(&Key::from(keys.recv)),
            send_counter: 0,
            replay: ReplayWindow::default(),
        }
    }

    /// Packets sealed so far (the next counter).
    pub fn sent(&self) -> u64 {
        self.send_counter
    }

    /// Seals `plaintext` into a complete transport packet in `out`; returns the counter used.
    pub fn seal_into(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<u64, SessionError> {
        if TRANSPORT_HEADER_LEN + plaintext.len() + TAG_LEN > MAX_DATAGRAM {
            return Err(SessionError::TooLarge);
        }
        let c = self.send_counter;
        if c >= REJECT_AFTER_MESSAGES {
            return Err(SessionError::Exhausted);
        }
        out.clear();
        out.extend_from_slice(&transport_header(self.remote_index, c));
        out.extend_from_slice(plaintext);
        let body = out.get_mut(TRANSPORT_HEADER_LEN..).ok_or(SessionError::TooLarge)?;
        let tag = self.send.encrypt_inout_detached(&nonce(c), &[], body.into()).map_err(|_| SessionError::TooLarge)?;
        out.extend_from_slice(&tag);
        self.send_counter = c + 1;
        Ok(c)
    }

    /// Moves the send counter on by `n` as if `n` packets had been sent and lost (the session fuzz
    /// target moves the receiver's window this way without sealing thousands of packets).
    #[cfg(feature = "fuzzing")]
    pub(crate) fn skip_sent(&mut self, n: u64) {
        self.send_counter = self.send_counter.saturating_add(n).min(REJECT_AFTER_MESSAGES);
    }

    /// Opens a transport packet's ciphertext (‖ tag) into `out`, enforcing the replay window.
    pub fn open_into(&mut self, counter: u64, ciphertext: &[u8], out: &mut Vec<u8>) -> Result<(), SessionError> {
        if counter >= REJECT_AFTER_MESSAGES {
            return Err(SessionError::Exhausted);
        }
        self.replay.check(counter)?;
        let split = ciphertext.len().checked_sub(TAG_LEN).ok_or(SessionError::Decrypt)?;
        let (ct, tag) = ciphertext.split_at(split);
        let tag = Tag::try_from(tag).map_err(|_| SessionError::Decrypt)?;
        out.clear();
        out.extend_from_slice(ct);
        self.recv
            .decrypt_inout_detached(&nonce(counter), &[], out.as_mut_slice().into(), &tag)
            .map_err(|_| SessionError::Decrypt)?;
        self.replay.update(counter);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::packet::{Packet, parse};

    fn pair() -> (Session, Session) {
        let k = SessionKeys { send: [1; 32], recv: [2; 32] };
        let k2 = SessionKeys { send: [2; 32], recv: [1; 32] };
        (Session::new(10, 20, &k), Session::new(20, 10, &k2))
    }

    #[test]
    fn seal_open_and_replay() {
        let (mut a, mut b) = pair();
        let mut pkt = Vec::new();
        let mut out = Vec::new();
        for i in 0..3u8 {
            a.seal_into(&[i; 100], &mut pkt).unwrap();
            let Ok(Packet::Transport(t)) = parse(&pkt) else { panic!("not transport") };
            assert_eq!(t.receiver_index, 20);
            assert_eq!(t.counter, u64::from(i));
            b.open_into(t.counter, t.ciphertext, &mut out).unwrap();
            assert_eq!(out, vec![i; 100]);
            assert_eq!(
                b.open_into(t.counter, t.ciphertext, &mut out),
                Err(SessionError::Replay(ReplayError::Duplicate))
            );
        }
    }

    #[test]
    fn tampering_fails_and_does_not_burn_counter() {
        let (mut a, mut b) = pair();
        let mut pkt = Vec::new();
        let mut out = Vec::new();
        a.seal_into(b"hi", &mut pkt).unwrap();
        let mut bad = pkt.clone();
        if let Some(x) = bad.last_mut() {
            *x ^= 1;
        }
        let Ok(Packet::Transport(t)) = parse(&bad) else { panic!("not transport") };
        assert_eq!(b.open_into(t.counter, t.ciphertext, &mut out), Err(SessionError::Decrypt));
        let Ok(Packet::Transport(t)) = parse(&pkt) else { panic!("not transport") };
        b.open_into(t.counter, t.ciphertext, &mut out).unwrap();
        assert_eq!(out, b"hi");
    }

    #[test]
    fn oversized_plaintext_refused() {
        let (mut a, _) = pair();
        let mut pkt = Vec::new();
        assert_eq!(a.seal_into(&[0; 1169], &mut pkt), Err(SessionError::TooLarge));
        a.seal_into(&[0; 1168], &mut pkt).unwrap();
        assert_eq!(pkt.len(), 1200);
    }
}
