//! The handshake and session layer (wire-spec §5): Noise IK, cookie MACs, the replay window and
//! transport sessions. Plain functions and values; the state machine that uses them is `channel`.

pub mod cookie;
pub mod noise;
pub mod replay;
pub mod session;

pub use crate::ct::ct_eq;

use crate::identity::{self, Identity, NodeId};
use crate::wire::packet::{
    CookieReply, ENC_PAYLOAD_LEN, ENC_STATIC_LEN, INIT_PAYLOAD_LEN, INITIATION_LEN, INITIATION_MAC1, Initiation,
    RESPONSE_LEN, RESPONSE_MAC1, Response,
};
use noise::{InitiatorState, Message1, Message2, NoiseError, ResponderState, SessionKeys, Trace};

/// Why a handshake packet was refused after framing checks.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum HandshakeError {
    /// Noise AEAD failed.
    #[error("handshake decryption failed")]
    Decrypt,
    /// All-zero DH output.
    #[error("low-order key")]
    LowOrder,
    /// The binding signature over the static key does not verify.
    #[error("static key not bound to identity")]
    BadBinding,
}

impl From<NoiseError> for HandshakeError {
    fn from(e: NoiseError) -> Self {
        match e {
            NoiseError::Decrypt => HandshakeError::Decrypt,
            NoiseError::LowOrder => HandshakeError::LowOrder,
        }
    }
}

/// The decrypted payload of an initiation (§5.3): who the initiator is and when it started.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct InitPayload {
    /// Initiator's ed25519 public key.
    pub public_key: [u8; 32],
    /// ed25519 signature over BINDING_SIGNATURE_DOMAIN ‖ initiator's X25519 static key.
    pub binding: [u8; 64],
    /// Initiator's clock in nanoseconds since the Unix epoch; strictly increasing per initiator.
    pub timestamp: u64,
}

impl InitPayload {
    /// The 104 plaintext bytes.
    pub fn to_bytes(&self) -> [u8; INIT_PAYLOAD_LEN] {
        let mut b = [0u8; INIT_PAYLOAD_LEN];
        b[..32].copy_from_slice(&self.public_key);
        b[32..96].copy_from_slice(&self.binding);
        b[96..].copy_from_slice(&self.timestamp.to_le_bytes());
        b
    }

    fn parse(b: &[u8]) -> Option<Self> {
        if b.len() != INIT_PAYLOAD_LEN {
            return None;
        }
        Some(InitPayload {
            public_key: b.get(..32)?.try_into().ok()?,
            binding: b.get(32..96)?.try_into().ok()?,
            timestamp: u64::from_le_bytes(b.get(96..)?.try_into().ok()?),
        })
    }

    /// The initiator's node id.
    pub fn node_id(&self) -> NodeId {
        NodeId::from_public_key(&self.public_key)
    }
}

/// Writes mac1 (and mac2 if a cookie is given, else zeros) into a handshake packet (§5.5).
pub fn set_macs(packet: &mut [u8], mac1_offset: usize, receiver_static: &[u8; 32], cookie: Option<&[u8; 32]>) {
    let mac1 = cookie::mac(&cookie::mac1_key(receiver_static), packet.get(..mac1_offset).unwrap_or(&[]));
    if let Some(slot) = packet.get_mut(mac1_offset..mac1_offset + 16) {
        slot.copy_from_slice(&mac1);
    }
    set_mac2(packet, mac1_offset, cookie);
}

/// Writes mac2 over everything before it, keyed by `cookie`, or zeros without one.
pub fn set_mac2(packet: &mut [u8], mac1_offset: usize, cookie: Option<&[u8; 32]>) {
    let mac2 = match cookie {
        Some(c) => cookie::mac(c, packet.get(..mac1_offset + 16).unwrap_or(&[])),
        None => [0u8; 16],
    };
    if let Some(slot) = packet.get_mut(mac1_offset + 16..mac1_offset + 32) {
        slot.copy_from_slice(&mac2);
    }
}

/// Checks a handshake packet's mac1 against our own static key.
pub fn mac1_ok(packet: &[u8], mac1_offset: usize, own_static: &[u8; 32]) -> bool {
    let (Some(body), Some(got)) = (packet.get(..mac1_offset), packet.get(mac1_offset..mac1_offset + 16)) else {
        return false;
    };
    ct_eq(&cookie::mac(&cookie::mac1_key(own_static), body), got)
}

/// Builds a complete initiation packet (§5.3) with the given ephemeral secret.
#[allow(clippy::too_many_arguments)]
pub fn build_initiation(
    local: &Identity,
    remote_static: &[u8; 32],
    ephemeral_secret: [u8; 32],
    sender_index: u32,
    timestamp: u64,
    cookie: Option<&[u8; 32]>,
    trace: bool,
) -> Result<(InitiatorState, Vec<u8>), HandshakeError> {
    let payload = InitPayload { public_key: local.public_key(), binding: local.binding_signature(), timestamp };
    let (st, m1) = noise::write_message1(
        local.crypto(),
        local.noise_secret(),
        remote_static,
        ephemeral_secret,
        &payload.to_bytes(),
        trace,
    )?;
    let mut enc_static = [0u8; ENC_STATIC_LEN];
    let mut enc_payload = [0u8; ENC_PAYLOAD_LEN];
    if m1.enc_static.len() != ENC_STATIC_LEN || m1.enc_payload.len() != ENC_PAYLOAD_LEN {
        return Err(HandshakeError::Decrypt);
    }
    enc_static.copy_from_slice(&m1.enc_static);
    enc_payload.copy_from_slice(&m1.enc_payload);
    let init =
        Initiation { sender_index, ephemeral: m1.ephemeral, enc_static, enc_payload, mac1: [0; 16], mac2: [0; 16] };
    let mut bytes = init.to_bytes();
    set_macs(&mut bytes, INITIATION_MAC1, remote_static, cookie);
    Ok((st, bytes))
}

/// Responder side of an initiation whose mac1 already verified: Noise, payload, identity binding.
pub fn consume_initiation(
    local: &Identity,
    init: &Initiation,
    trace: bool,
) -> Result<(ResponderState, InitPayload), HandshakeError> {
    let m1 = Message1 {
        ephemeral: init.ephemeral,
        enc_static: init.enc_static.to_vec(),
        enc_payload: init.enc_payload.to_vec(),
    };
    let (st, payload) = noise::read_message1(local.crypto(), local.noise_secret(), &m1, trace)?;
    let payload = InitPayload::parse(&payload).ok_or(HandshakeError::Decrypt)?;
    let msg = identity::binding_message(&st.rs);
    if !(local.crypto().verify)(&payload.public_key, &msg, &payload.binding) {
        return Err(HandshakeError::BadBinding);
    }
    Ok((st, payload))
}

/// Builds the response packet (§5.4) and the responder's session keys.
pub fn build_response(
    st: ResponderState,
    ephemeral_secret: [u8; 32],
    sender_index: u32,
    receiver_index: u32,
) -> Result<(Vec<u8>, SessionKeys, Trace), HandshakeError> {
    let rs = st.rs;
    let (m2, keys, trace) = noise::write_message2(st, ephemeral_secret, &[])?;
    let mut enc_empty = [0u8; 16];
    if m2.enc_payload.len() != 16 {
        return Err(HandshakeError::Decrypt);
    }
    enc_empty.copy_from_slice(&m2.enc_payload);
    let resp =
        Response { sender_index, receiver_index, ephemeral: m2.ephemeral, enc_empty, mac1: [0; 16], mac2: [0; 16] };
    let mut bytes = resp.to_bytes();
    set_macs(&mut bytes, RESPONSE_MAC1, &rs, None);
    debug_assert_eq!(bytes.len(), RESPONSE_LEN);
    Ok((bytes, keys, trace))
}

/// Initiator side of a response whose mac1 already verified.
pub fn consume_response(
    st: InitiatorState,
    local: &Identity,
    resp: &Response,
) -> Result<(SessionKeys, Trace), HandshakeError> {
    let m2 = Message2 { ephemeral: resp.ephemeral, enc_payload: resp.enc_empty.to_vec() };
    let (payload, keys, trace) = noise::read_message2(st, local.noise_secret(), &m2)?;
    if !payload.is_empty() {
        return Err(HandshakeError::Decrypt);
    }
    Ok((keys, trace))
}

/// Builds a cookie reply (§5.6) for an initiation from `source`.
pub fn build_cookie_reply(
    own_static: &[u8; 32],
    secret: &[u8; 32],
    nonce: [u8; 24],
    init: &Initiation,
    source: &crate::wire::WireAddr,
) -> Vec<u8> {
    let c = cookie::make_cookie(secret, source);
    let enc_cookie = cookie::seal_cookie(&cookie::cookie_reply_key(own_static), &nonce, &init.mac1, &c);
    CookieReply { receiver_index: init.sender_index, nonce, enc_cookie }.to_bytes()
}

const _: () = assert!(INITIATION_LEN == INITIATION_MAC1 + 32);
