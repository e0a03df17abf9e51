//! Worlds, genesis and inputs: what a mesh agrees on.
//!
//! A world is a deterministic state machine: `S(n+1) = F(S(n)) ⊕ E`, where F is
//! [`World::evolve`] (its only randomness is the round seed, derived from the previous certified
//! state) and ⊕ applies the round's ordered, validated inputs with [`World::apply`]. A mesh is born
//! from a [`Genesis`]; the BLAKE3 hash of its encoding is the mesh id.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use suprnova_dht::identity::{Identity, verify_strict};
use suprnova_dht::wire::bounded::{BoundedBytes, BoundedString, BoundedVec};

use crate::simplex::{Digest, MAX_MEMBERS, Sig};

/// Largest input body, bytes.
pub const MAX_INPUT: usize = 16 * 1024;
/// Most inputs one round may apply.
pub const MAX_BATCH: usize = 1024;
/// An input is valid in rounds `round ..= round + INPUT_WINDOW` (its author names the first).
pub const INPUT_WINDOW: u64 = 16;

const STATE_DOMAIN: &str = "suprnova mesh v1 state";
const SEED_DOMAIN: &str = "suprnova mesh v1 round seed";
const INPUT_DOMAIN: &[u8] = b"suprnova mesh v1 input";

/// A deterministic world. Implementations must not read clocks, the OS's randomness or anything
/// outside their arguments: every member re-executes every round and must get the same bytes.
pub trait World: Send + Sync + 'static {
    /// The state. Its postcard encoding is hashed, so it must encode deterministically (ordered
    /// maps, no floats whose bits depend on the platform's math library).
    type State: Clone + Serialize + DeserializeOwned + Send + Sync + 'static;
    /// One input, decoded from a signed input's body.
    type Input: Clone + Serialize + DeserializeOwned + Send + 'static;
    /// World name, part of the genesis.
    fn name(&self) -> &str;
    /// World version, part of the genesis.
    fn version(&self) -> u32;
    /// F: one step of evolution, with this round's seed.
    fn evolve(&self, state: &Self::State, seed: &[u8; 32]) -> Self::State;
    /// Whether `input` from `author` may be applied to `state` (already evolved this round).
    fn validate(&self, state: &Self::State, author: &[u8; 32], input: &Self::Input) -> Result<(), String>;
    /// ⊕: applies one validated input.
    fn apply(&self, state: &mut Self::State, author: &[u8; 32], input: &Self::Input);
    /// The space agents of this world are positioned in, if they are (part of the genesis).
    fn space(&self) -> Option<crate::spatial::Space> {
        None
    }
}

/// Bounds a genesis sets for its mesh.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Limits {
    /// Inputs per round (≤ `MAX_BATCH`).
    pub max_inputs_per_round: u32,
    /// Bytes per input body (≤ `MAX_INPUT`).
    pub max_input_bytes: u32,
    /// Inputs per author per round.
    pub max_inputs_per_author: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_inputs_per_round: 256, max_input_bytes: 4096, max_inputs_per_author: 4 }
    }
}

/// Where a mesh starts. Its hash is the mesh id.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct Genesis {
    /// World name.
    pub world: BoundedString<64>,
    /// World version.
    pub version: u32,
    /// `state_hash` of S(0).
    pub state_hash: Digest,
    /// Members' ed25519 keys, in order (1 ..= 256, distinct).
    pub members: BoundedVec<[u8; 32], MAX_MEMBERS>,
    /// Target time between rounds, milliseconds.
    pub round_interval_ms: u32,
    /// Bounds on inputs.
    pub limits: Limits,
    /// The space of the spatial index, if the world has one.
    pub space: Option<crate::spatial::Space>,
}

impl Genesis {
    /// The genesis of a mesh of `world` starting at `s0` with these members (1 ..= 256, in
    /// order), taking the world's name, version and space; `None` if the member list or the
    /// world's name (64 bytes) is too long.
    pub fn for_world<W: World>(
        world: &W,
        s0: &W::State,
        members: Vec<[u8; 32]>,
        round_interval_ms: u32,
        limits: Limits,
    ) -> Option<Genesis> {
        if world.name().len() > 64 {
            return None;
        }
        Some(Genesis {
            world: BoundedString::truncated(world.name()),
            version: world.version(),
            state_hash: state_hash(s0),
            members: BoundedVec::try_from(members).ok()?,
            round_interval_ms,
            limits,
            space: world.space(),
        })
    }

    /// The mesh id: BLAKE3(postcard(genesis)), which is also the genesis' key as an immutable
    /// DHT record.
    pub fn mesh_id(&self) -> Digest {
        let bytes = postcard::to_allocvec(self).unwrap_or_default();
        *blake3::hash(&bytes).as_bytes()
    }
}

/// BLAKE3-derive_key("suprnova mesh v1 state", postcard(state)).
pub fn state_hash<S: Serialize>(state: &S) -> Digest {
    let bytes = postcard::to_allocvec(state).unwrap_or_default();
    blake3::derive_key(STATE_DOMAIN, &bytes)
}

/// The seed of round `round`: BLAKE3-derive_key("suprnova mesh v1 round seed", mesh id ‖ the
/// previous certified state's hash ‖ u64_le(round)).
pub fn round_seed(mesh: &Digest, prev_state: &Digest, round: u64) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(SEED_DOMAIN);
    h.update(mesh);
    h.update(prev_state);
    h.update(&round.to_le_bytes());
    *h.finalize().as_bytes()
}

/// An input signed by its author (an agent or any node), for one mesh, first valid in `round`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct SignedInput {
    /// The mesh.
    pub mesh: Digest,
    /// Author's ed25519 key.
    pub author: [u8; 32],
    /// First round it may be applied in (valid through `round + INPUT_WINDOW`).
    pub round: u64,
    /// Makes otherwise equal inputs distinct.
    pub nonce: u64,
    /// The world's input, postcard-encoded.
    pub body: BoundedBytes<MAX_INPUT>,
    /// Signature over `signed_bytes`.
    pub sig: Sig,
}

impl SignedInput {
    /// "suprnova mesh v1 input" ‖ mesh ‖ author ‖ u64_le(round) ‖ u64_le(nonce) ‖ BLAKE3(body).
    pub fn signed_bytes(mesh: &Digest, author: &[u8; 32], round: u64, nonce: u64, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::with_capacity(INPUT_DOMAIN.len() + 112);
        m.extend_from_slice(INPUT_DOMAIN);
        m.extend_from_slice(mesh);
        m.extend_from_slice(author);
        m.extend_from_slice(&round.to_le_bytes());
        m.extend_from_slice(&nonce.to_le_bytes());
        m.extend_from_slice(blake3::hash(body).as_bytes());
        m
    }

    /// Signs `input` for `mesh`, first valid in `round`.
    pub fn sign<I: Serialize>(
        id: &Identity,
        mesh: &Digest,
        round: u64,
        nonce: u64,
        input: &I,
    ) -> Result<SignedInput, InputError> {
        let body = postcard::to_allocvec(input).map_err(|_| InputError::Malformed)?;
        let body = BoundedBytes::try_from(body.as_slice()).map_err(|_| InputError::TooLarge)?;
        let author = id.public_key();
        let sig = Sig(id.sign(&Self::signed_bytes(mesh, &author, round, nonce, body.as_slice())));
        Ok(SignedInput { mesh: *mesh, author, round, nonce, body, sig })
    }

    /// Its id: BLAKE3 of its encoding.
    pub fn id(&self) -> Digest {
        *blake3::hash(&postcard::to_allocvec(self).unwrap_or_default()).as_bytes()
    }

    /// Checks the mesh, the size and the signature.
    pub fn check(&self, mesh: &Digest, limits: &Limits) -> Result<(), InputError> {
        if self.mesh != *mesh {
            return Err(InputError::WrongMesh);
        }
        if self.body.len() > limits.max_input_bytes as usize {
            return Err(InputError::TooLarge);
        }
        let msg = Self::signed_bytes(&self.mesh, &self.author, self.round, self.nonce, self.body.as_slice());
        if !verify_strict(&self.author, &msg, &self.sig.0) {
            return Err(InputError::BadSignature);
        }
        Ok(())
    }
}

/// Why an input was refused.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum InputError {
    /// For another mesh.
    #[error("input is for another mesh")]
    WrongMesh,
    /// Body over the mesh's limit.
    #[error("input too large")]
    TooLarge,
    /// Signature does not verify.
    #[error("input signature does not verify")]
    BadSignature,
    /// Body does not decode as the world's input.
    #[error("input does not decode")]
    Malformed,
    /// Its rounds are over.
    #[error("input's rounds are past (valid {from} ..= {to}, now {now})")]
    Expired {
        /// First round.
        from: u64,
        /// Last round.
        to: u64,
        /// Current round.
        now: u64,
    },
    /// For a round too far ahead.
    #[error("input is for round {0}, too far ahead")]
    TooEarly(u64),
    /// Already pending or applied.
    #[error("input already seen")]
    Duplicate,
    /// The author has as many inputs pending as a round may take from it.
    #[error("author has too many inputs pending")]
    AuthorLimit,
    /// The pending pool is full.
    #[error("input pool full")]
    PoolFull,
    /// The world refused it.
    #[error("the world refused the input")]
    Refused,
}

/// A block's payload (hashed into its digest): the round it makes, the hash of the state after
/// it, and the hash of its body, the encoded [`Batch`] of inputs.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct BatchHeader {
    /// The round (parent's round + 1).
    pub round: u64,
    /// `state_hash` of S(round).
    pub state_hash: Digest,
    /// BLAKE3 of the block's body (`postcard(Batch)`).
    pub inputs_hash: Digest,
}

/// A block's body: the round's inputs, in the order applied.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Batch {
    /// Inputs, in order.
    pub inputs: BoundedVec<SignedInput, MAX_BATCH>,
}

/// Any world, its agents positioned in `space`: the world's F and ⊕ unchanged, the space part
/// of the genesis (so the mesh gets a spatial index).
#[derive(Clone, Debug)]
pub struct WithSpace<W> {
    /// The world.
    pub world: W,
    /// Its space.
    pub space: crate::spatial::Space,
}

impl<W: World> World for WithSpace<W> {
    type State = W::State;
    type Input = W::Input;
    fn name(&self) -> &str {
        self.world.name()
    }
    fn version(&self) -> u32 {
        self.world.version()
    }
    fn evolve(&self, state: &Self::State, seed: &[u8; 32]) -> Self::State {
        self.world.evolve(state, seed)
    }
    fn validate(&self, state: &Self::State, author: &[u8; 32], input: &Self::Input) -> Result<(), String> {
        self.world.validate(state, author, input)
    }
    fn apply(&self, state: &mut Self::State, author: &[u8; 32], input: &Self::Input) {
        self.world.apply(state, author, input)
    }
    fn space(&self) -> Option<crate::spatial::Space> {
        Some(self.space.clone())
    }
}
