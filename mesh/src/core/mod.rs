//! The mesh state machine: a world, its input pool and the Simplex core, sans-IO.
//!
//! A member keeps the inputs it has heard of (signed, de-duplicated, bounded per author), builds
//! a [`Batch`] when Simplex asks it to propose (no sooner than the genesis' round interval after
//! the previous round), and re-executes every proposed batch on its parent's state before voting:
//! the round number, every input's signature, window and author bound, then
//! `S(n+1) = F(S(n)) ⊕ inputs`, and the resulting state hash. A finalised block becomes a
//! [`Certified`] round. Like every core here it is fed `(now, input)` and polled.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use suprnova_dht::identity::Identity;
use suprnova_dht::wire::bounded::BoundedVec;

use crate::simplex::{self, Certificate, Digest, Evidence, Members, Message, Proposal, Simplex};
use crate::world::{
    Batch, BatchHeader, Genesis, INPUT_WINDOW, InputError, MAX_BATCH, SignedInput, World, round_seed, state_hash,
};

mod fetch;

pub use fetch::{FETCH_EVERY, Fetched};

/// Final blocks kept while waiting to catch up.
const MAX_ORPHANS: usize = 1024;

/// Tunables.
#[derive(Clone, Debug)]
pub struct MeshConfig {
    /// The agreement's timeout.
    pub simplex: simplex::Config,
    /// Inputs kept pending at most.
    pub max_pool: usize,
    /// Bytes of inputs a batch may carry. The default leaves a notarisation (the block plus the
    /// quorum's signatures) within one 64 KiB broadcast.
    pub max_batch_bytes: usize,
    /// Where the driver keeps the signing guard (see `Simplex::guard`): the highest height this
    /// member may have signed at. Without it, a member that restarts could sign a second,
    /// different vote at a height it voted at before, which breaks safety if more than f members
    /// do. With it, a restarted member sits out until the mesh passes its reservation (at most
    /// 100 heights), which the other members must do without it: a mesh of one member, or one
    /// whose members all restart together, stalls. Keeping a log of the member's own signatures,
    /// so a restart can re-send exactly what it signed, lifts that limit; it is not built yet.
    /// Observers never sign.
    pub guard_file: Option<std::path::PathBuf>,
    /// Rewrites every message this member sends (`None`: sent as the agreement made it). For
    /// test harnesses that play a byzantine member (see `testing`, behind the `testing`
    /// feature); a deployment leaves it `None`.
    pub send_filter: Option<Arc<dyn SendFilter>>,
}

/// A rewrite of what a member sends: each agreement message becomes the messages returned
/// (none: withheld; several: all sent, in order).
pub trait SendFilter: Send + Sync + std::fmt::Debug {
    /// The messages to send instead of `m`, in mesh `mesh`.
    fn rewrite(&self, mesh: &Digest, m: Message) -> Vec<Message>;
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            simplex: simplex::Config::default(),
            max_pool: 10_000,
            max_batch_bytes: 48 * 1024,
            guard_file: None,
            send_filter: None,
        }
    }
}

/// Why a mesh could not be created.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum MeshError {
    /// The genesis names another world or version.
    #[error("genesis is for world {world} v{version}")]
    WrongWorld {
        /// Its world.
        world: String,
        /// Its version.
        version: u32,
    },
    /// S(0) does not hash to the genesis' state hash.
    #[error("initial state does not match the genesis")]
    WrongState,
    /// No members, too many, or repeated.
    #[error("invalid member list")]
    BadMembers,
    /// The genesis' space is invalid or not the world's.
    #[error("the genesis' space is invalid or not the world's")]
    WrongSpace,
    /// A certified round to start from does not verify (certificate, header or state hash).
    #[error("the certified round to start from does not verify")]
    BadCertified,
}

/// A certified round.
#[derive(Clone, Debug)]
pub struct Certified<S> {
    /// Round number (the genesis is round 0).
    pub round: u64,
    /// Simplex height of its block.
    pub height: u64,
    /// Block digest.
    pub digest: Digest,
    /// Hash of the state.
    pub state_hash: Digest,
    /// The state.
    pub state: Arc<S>,
    /// The block (its payload is the batch).
    pub proposal: Proposal,
    /// The finalize quorum's certificate; `None` for a block made final by a descendant's
    /// certificate (then the next `Certified` with a certificate covers it through parent links).
    pub certificate: Option<Certificate>,
}

/// Outputs.
#[derive(Clone, Debug)]
pub enum MeshOut<S> {
    /// Send to every other member (a member's only: an observer sends nothing).
    Send(Message),
    /// Read the newest certified round of this mesh (from the DHT) and hand it to
    /// [`MeshCore::fetched`], or `None` there if there is none or the read failed. One is
    /// asked for when the core starts and whenever it is behind, never two at once.
    Fetch,
    /// A round is final.
    Certified(Certified<S>),
    /// A member equivocated: publish this (once per equivocator: one proof convicts it).
    Evidence(Evidence),
    /// Final blocks this member never saw (heights `from ..= to`): catch up from the DHT.
    Gap {
        /// First.
        from: u64,
        /// Last.
        to: u64,
    },
    /// Record durably that this member may sign up to height `up_to`, then call
    /// `MeshCore::reserved(up_to)` (only with the guard on, see `MeshCore::guard`).
    Reserve {
        /// Highest height covered.
        up_to: u64,
    },
}

/// Counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MeshStats {
    /// Inputs accepted into the pool.
    pub inputs_accepted: u64,
    /// Inputs refused, by reason.
    pub inputs_refused: BTreeMap<&'static str, u64>,
    /// Batches proposed.
    pub proposed: u64,
    /// Proposals refused after re-execution, by reason.
    pub batches_refused: BTreeMap<&'static str, u64>,
    /// Rounds certified.
    pub certified: u64,
    /// Certified rounds installed from elsewhere (`catch_up`, `fetched`, `from_certified`)
    /// rather than agreed here.
    pub caught_up: u64,
    /// Inputs applied in certified rounds.
    pub inputs_applied: u64,
}

fn reason(e: &InputError) -> &'static str {
    match e {
        InputError::WrongMesh => "wrong_mesh",
        InputError::TooLarge => "too_large",
        InputError::BadSignature => "bad_signature",
        InputError::Malformed => "malformed",
        InputError::Expired { .. } => "expired",
        InputError::TooEarly(_) => "too_early",
        InputError::Duplicate => "duplicate",
        InputError::AuthorLimit => "author_limit",
        InputError::PoolFull => "pool_full",
        InputError::Refused => "refused_by_world",
    }
}

/// A block we executed.
struct Executed<S> {
    round: u64,
    state: Arc<S>,
    state_hash: Digest,
    inputs: Vec<Digest>,
    parent: Option<Digest>,
}

/// The mesh state machine of one member (or observer).
pub struct MeshCore<W: World> {
    world: W,
    genesis: Genesis,
    mesh: Digest,
    simplex: Simplex,
    blocks: BTreeMap<Digest, Executed<W::State>>,
    pool: BTreeMap<Digest, SignedInput>,
    per_author: BTreeMap<[u8; 32], usize>,
    /// Input ids applied in final rounds, with their round (kept for `INPUT_WINDOW` rounds).
    applied: BTreeMap<Digest, u64>,
    /// (height, parent, parent height, when) of the proposal we owe.
    proposing: Option<(u64, Digest, u64, Instant)>,
    last_round_at: Instant,
    final_round: u64,
    /// Final blocks we could not execute (their parent's state is missing here), by height,
    /// until a caught-up state lets us (bounded by `MAX_ORPHANS`).
    orphans: BTreeMap<u64, (Digest, Proposal, Option<Certificate>)>,
    /// The agreement reported final blocks it never saw, up to this height: catch up (until
    /// a final block above it executes here, or a caught-up round passes it).
    gap: Option<u64>,
    fetch: fetch::Fetching,
    /// Whether this core signs for one of the members (else it observes).
    member: bool,
    /// Members whose equivocation was reported already.
    convicted: BTreeSet<u16>,
    cfg: MeshConfig,
    out: VecDeque<MeshOut<W::State>>,
    stats: MeshStats,
}

impl<W: World> MeshCore<W> {
    /// A member (if `identity` is in the genesis) or observer of the mesh born from `genesis`
    /// with initial state `s0`.
    pub fn new(
        world: W,
        genesis: Genesis,
        s0: W::State,
        identity: Option<Identity>,
        cfg: MeshConfig,
        now: Instant,
    ) -> Result<Self, MeshError> {
        if state_hash(&s0) != genesis.state_hash {
            return Err(MeshError::WrongState);
        }
        let mut core = Self::empty(world, genesis, identity, cfg, now)?;
        let genesis_block = Executed {
            round: 0,
            state: Arc::new(s0),
            state_hash: core.genesis.state_hash,
            inputs: Vec::new(),
            parent: None,
        };
        core.blocks.insert(core.mesh, genesis_block);
        core.pump(now);
        core.fetch_now(now);
        Ok(core)
    }

    /// A member or observer of a running mesh that starts from certified round `round` (its
    /// state, its block's header and its certificate) rather than from S(0): for joining by id
    /// once the mesh has stored a round (see `net::get_state`, which checks all three against
    /// the genesis; this constructor checks the certificate and the state hash again).
    pub fn from_certified(
        world: W,
        genesis: Genesis,
        certified: Fetched<W::State>,
        identity: Option<Identity>,
        cfg: MeshConfig,
        now: Instant,
    ) -> Result<Self, MeshError> {
        let (round, state, proposal, certificate) = certified;
        let mut core = Self::empty(world, genesis, identity, cfg, now)?;
        let header: Option<BatchHeader> = postcard::from_bytes(proposal.payload.as_slice()).ok();
        let valid = core.simplex.members().verify_certificate(&core.mesh, &certificate).is_ok()
            && certificate.digest == proposal.digest(&core.mesh)
            && certificate.height == proposal.height
            && header.is_some_and(|h| h.round == round && h.state_hash == state_hash(&state));
        if !valid || round == 0 {
            return Err(MeshError::BadCertified);
        }
        core.catch_up(now, round, state, proposal, certificate);
        core.fetch_now(now);
        Ok(core)
    }

    /// A core with no blocks yet, after checking the genesis against the world.
    fn empty(
        world: W,
        genesis: Genesis,
        identity: Option<Identity>,
        cfg: MeshConfig,
        now: Instant,
    ) -> Result<Self, MeshError> {
        if genesis.world.as_str() != world.name() || genesis.version != world.version() {
            return Err(MeshError::WrongWorld { world: genesis.world.as_str().to_string(), version: genesis.version });
        }
        if genesis.space != world.space() || genesis.space.as_ref().is_some_and(|s| s.check().is_err()) {
            return Err(MeshError::WrongSpace);
        }
        let members = Members::new(genesis.members.to_vec()).ok_or(MeshError::BadMembers)?;
        let member = identity.as_ref().is_some_and(|i| members.index_of(&i.public_key()).is_some());
        let mesh = genesis.mesh_id();
        let simplex = Simplex::new(cfg.simplex.clone(), mesh, members, identity, now);
        let blocks = BTreeMap::new();
        Ok(MeshCore {
            world,
            genesis,
            mesh,
            simplex,
            blocks,
            pool: BTreeMap::new(),
            per_author: BTreeMap::new(),
            applied: BTreeMap::new(),
            proposing: None,
            last_round_at: now,
            final_round: 0,
            orphans: BTreeMap::new(),
            gap: None,
            fetch: fetch::Fetching::default(),
            member,
            convicted: BTreeSet::new(),
            cfg,
            out: VecDeque::new(),
            stats: MeshStats::default(),
        })
    }

    /// The mesh id.
    pub fn mesh_id(&self) -> Digest {
        self.mesh
    }
    /// The genesis.
    pub fn genesis(&self) -> &Genesis {
        &self.genesis
    }
    /// The last certified round.
    pub fn final_round(&self) -> u64 {
        self.final_round
    }
    /// Inputs pending.
    pub fn pool_len(&self) -> usize {
        self.pool.len()
    }
    /// Counters.
    pub fn stats(&self) -> &MeshStats {
        &self.stats
    }
    /// The agreement core's counters.
    pub fn agreement_stats(&self) -> simplex::Stats {
        self.simplex.stats()
    }
    /// Next output.
    pub fn poll(&mut self) -> Option<MeshOut<W::State>> {
        self.out.pop_front()
    }
    /// When `handle_timeout` has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let p = self.proposing.map(|(.., at)| at);
        [self.simplex.poll_timeout(), p, self.fetch_due()].into_iter().flatten().min()
    }

    /// An input heard of (from its author or gossip): checked and pooled.
    pub fn submit(&mut self, input: SignedInput) -> Result<Digest, InputError> {
        let r = self.admit(input);
        match &r {
            Ok(_) => self.stats.inputs_accepted += 1,
            Err(e) => *self.stats.inputs_refused.entry(reason(e)).or_insert(0) += 1,
        }
        r
    }

    fn admit(&mut self, input: SignedInput) -> Result<Digest, InputError> {
        // Cheap checks first: a gossiped duplicate must not cost a signature verification.
        let id = input.id();
        if self.pool.contains_key(&id) || self.applied.contains_key(&id) {
            return Err(InputError::Duplicate);
        }
        input.check(&self.mesh, &self.genesis.limits)?;
        let next = self.final_round + 1;
        if input.round.saturating_add(INPUT_WINDOW) < next {
            return Err(InputError::Expired { from: input.round, to: input.round + INPUT_WINDOW, now: next });
        }
        if input.round > next.saturating_add(INPUT_WINDOW) {
            return Err(InputError::TooEarly(input.round));
        }
        postcard::from_bytes::<W::Input>(input.body.as_slice()).map_err(|_| InputError::Malformed)?;
        let per = self.genesis.limits.max_inputs_per_author as usize * 4;
        if self.per_author.get(&input.author).copied().unwrap_or(0) >= per {
            return Err(InputError::AuthorLimit);
        }
        if self.pool.len() >= self.cfg.max_pool {
            // Full: the input whose window ends first makes room, if it ends before this one's
            // (inputs that never become valid cannot hold the pool for longer than their window).
            let oldest = self.pool.iter().min_by_key(|(_, i)| i.round).map(|(d, i)| (*d, i.round));
            match oldest {
                Some((d, r)) if r < input.round => self.unpool(&d),
                _ => return Err(InputError::PoolFull),
            }
        }
        *self.per_author.entry(input.author).or_insert(0) += 1;
        self.pool.insert(id, input);
        Ok(id)
    }

    fn unpool(&mut self, id: &Digest) {
        if let Some(i) = self.pool.remove(id)
            && let Some(c) = self.per_author.get_mut(&i.author)
        {
            *c = c.saturating_sub(1);
            if *c == 0 {
                self.per_author.remove(&i.author);
            }
        }
    }

    /// A message from another member.
    pub fn handle_message(&mut self, now: Instant, m: Message) {
        self.simplex.handle(now, simplex::In::Message(m));
        self.pump(now);
        self.want_fetch(now);
    }

    /// Timers: the agreement's, and the proposal we owe once the round interval has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.simplex.poll_timeout().is_some_and(|t| t <= now) {
            self.simplex.handle_timeout(now);
        }
        if let Some((height, parent, ph, at)) = self.proposing
            && at <= now
        {
            self.proposing = None;
            self.build(now, height, parent, ph);
        }
        self.pump(now);
        self.want_fetch(now);
    }

    /// Input ids in the `INPUT_WINDOW` blocks ending at `tip` (on its chain).
    fn recent_inputs(&self, tip: &Digest) -> BTreeSet<Digest> {
        let mut ids = BTreeSet::new();
        let mut at = Some(*tip);
        for _ in 0..=INPUT_WINDOW {
            let Some(b) = at.and_then(|d| self.blocks.get(&d)) else { break };
            ids.extend(b.inputs.iter().copied());
            at = b.parent;
        }
        ids
    }

    /// Evolves the parent's state and applies `inputs` in order; the first input that fails
    /// stops it with the reason.
    fn execute(
        &self,
        parent: &Executed<W::State>,
        round: u64,
        inputs: &[SignedInput],
    ) -> Result<W::State, &'static str> {
        let seed = round_seed(&self.mesh, &parent.state_hash, round);
        let mut state = self.world.evolve(&parent.state, &seed);
        for i in inputs {
            let input = postcard::from_bytes::<W::Input>(i.body.as_slice()).map_err(|_| "malformed_input")?;
            self.world.validate(&state, &i.author, &input).map_err(|_| "input_refused_by_world")?;
            self.world.apply(&mut state, &i.author, &input);
        }
        Ok(state)
    }

    /// Builds and hands Simplex our batch for `height` on `parent`.
    fn build(&mut self, now: Instant, height: u64, parent: Digest, ph: u64) {
        // The tip may be a notarised block this member never executed (it voted for another).
        if self.ensure_executed(ph, parent).is_err() {
            return;
        }
        let Some(p) = self.blocks.get(&parent) else { return };
        let round = p.round + 1;
        let seed = round_seed(&self.mesh, &p.state_hash, round);
        let mut state = self.world.evolve(&p.state, &seed);
        let recent = self.recent_inputs(&parent);
        let limits = self.genesis.limits;
        let (mut chosen, mut bytes, mut per_author) = (Vec::new(), 0usize, BTreeMap::<[u8; 32], u32>::new());
        let mut stale = Vec::new();
        for (id, i) in &self.pool {
            if chosen.len() >= (limits.max_inputs_per_round as usize).min(MAX_BATCH) {
                break;
            }
            if i.round.saturating_add(INPUT_WINDOW) < round || recent.contains(id) {
                stale.push(*id);
                continue;
            }
            if i.round > round || per_author.get(&i.author).copied().unwrap_or(0) >= limits.max_inputs_per_author {
                continue;
            }
            let size = i.body.len() + 200;
            if bytes + size > self.cfg.max_batch_bytes.min(simplex::MAX_BODY - 4096) {
                break;
            }
            let Ok(input) = postcard::from_bytes::<W::Input>(i.body.as_slice()) else {
                stale.push(*id);
                continue;
            };
            if self.world.validate(&state, &i.author, &input).is_err() {
                // Not now; it may become valid in a later round, until its window ends.
                continue;
            }
            self.world.apply(&mut state, &i.author, &input);
            *per_author.entry(i.author).or_insert(0) += 1;
            bytes += size;
            chosen.push(i.clone());
        }
        for id in stale {
            self.unpool(&id);
        }
        let hash = state_hash(&state);
        let ids: Vec<Digest> = chosen.iter().map(SignedInput::id).collect();
        let Ok(inputs) = BoundedVec::try_from(chosen) else { return };
        let Ok(body) = postcard::to_allocvec(&Batch { inputs }) else { return };
        let header = BatchHeader { round, state_hash: hash, inputs_hash: *blake3::hash(&body).as_bytes() };
        let Ok(payload) = postcard::to_allocvec(&header) else { return };
        let (Ok(pl), Ok(bd)) = (payload.as_slice().try_into(), body.as_slice().try_into()) else { return };
        let digest = Proposal { height, parent_height: ph, parent, payload: pl, body: bd }.digest(&self.mesh);
        self.blocks.insert(
            digest,
            Executed { round, state: Arc::new(state), state_hash: hash, inputs: ids, parent: Some(parent) },
        );
        self.stats.proposed += 1;
        self.last_round_at = now;
        self.simplex.handle(now, simplex::In::Payload { height, payload, body });
    }

    /// Re-executes a proposal, first its ancestors this member never executed (a block it
    /// did not vote for, notarised by the others: it holds the block from the notarisation);
    /// on success remembers them all.
    fn verify(&mut self, digest: Digest, p: &Proposal) -> Result<(), &'static str> {
        if self.blocks.contains_key(&digest) {
            return Ok(());
        }
        self.ensure_executed(p.parent_height, p.parent)?;
        self.execute_block(digest, p)
    }

    /// Executes block `digest` at `height` and the ancestors below it this member has not,
    /// from the blocks the agreement holds (proposals, and those notarisations carry); at most
    /// `INPUT_WINDOW + 1` of them. Fails with the first one's reason; an unknown block is left
    /// for the caller's own check.
    fn ensure_executed(&mut self, height: u64, digest: Digest) -> Result<(), &'static str> {
        let mut missing = Vec::new();
        let (mut height, mut at) = (height, digest);
        while !self.blocks.contains_key(&at) && missing.len() <= INPUT_WINDOW as usize {
            let Some(b) = self.simplex.block(height, &at) else { break };
            missing.push((at, b.clone()));
            (height, at) = (b.parent_height, b.parent);
        }
        for (d, b) in missing.iter().rev() {
            self.execute_block(*d, b)?;
        }
        Ok(())
    }

    /// Re-executes one block on its parent's state; on success remembers it.
    fn execute_block(&mut self, digest: Digest, p: &Proposal) -> Result<(), &'static str> {
        let header: BatchHeader = postcard::from_bytes(p.payload.as_slice()).map_err(|_| "malformed_header")?;
        if *blake3::hash(p.body.as_slice()).as_bytes() != header.inputs_hash {
            return Err("body_mismatch");
        }
        let batch: Batch = postcard::from_bytes(p.body.as_slice()).map_err(|_| "malformed_batch")?;
        let parent = self.blocks.get(&p.parent).ok_or("unknown_parent")?;
        if header.round != parent.round + 1 {
            return Err("wrong_round");
        }
        let limits = self.genesis.limits;
        if batch.inputs.len() > limits.max_inputs_per_round as usize {
            return Err("too_many_inputs");
        }
        let recent = self.recent_inputs(&p.parent);
        let mut ids = BTreeSet::new();
        let mut per_author = BTreeMap::<[u8; 32], u32>::new();
        for i in batch.inputs.iter() {
            i.check(&self.mesh, &limits).map_err(|e| reason(&e))?;
            if i.round > header.round || i.round.saturating_add(INPUT_WINDOW) < header.round {
                return Err("input_out_of_window");
            }
            let id = i.id();
            if !ids.insert(id) || recent.contains(&id) {
                return Err("input_repeated");
            }
            let c = per_author.entry(i.author).or_insert(0);
            *c += 1;
            if *c > limits.max_inputs_per_author {
                return Err("author_over_limit");
            }
        }
        let state = self.execute(parent, header.round, &batch.inputs)?;
        let hash = state_hash(&state);
        if hash != header.state_hash {
            return Err("state_hash_mismatch");
        }
        let executed = Executed {
            round: header.round,
            state: Arc::new(state),
            state_hash: hash,
            inputs: ids.into_iter().collect(),
            parent: Some(p.parent),
        };
        self.blocks.insert(digest, executed);
        Ok(())
    }

    /// Turns the signing guard on (`Simplex::guard`): sign only above `signed_up_to`, and within
    /// reservations of `step` heights the driver records durably (`MeshOut::Reserve`).
    pub fn guard(&mut self, now: Instant, signed_up_to: u64, step: u64) {
        self.simplex.guard(signed_up_to, step);
        self.pump(now);
    }

    /// A reservation up to `up_to` is durable.
    pub fn reserved(&mut self, up_to: u64) {
        self.simplex.reserved(up_to);
    }

    /// Round `c.round` is final here: record it and report it.
    fn certify(&mut self, now: Instant, c: Certified<W::State>) {
        self.final_round = c.round;
        self.last_round_at = now;
        self.stats.certified += 1;
        self.out.push_back(MeshOut::Certified(c));
    }

    /// Runs Simplex's outputs.
    fn pump(&mut self, now: Instant) {
        for _ in 0..100_000 {
            let Some(o) = self.simplex.poll() else { return };
            match o {
                simplex::Out::Broadcast(m) => self.send(m),
                simplex::Out::Propose { height, parent, parent_height } => {
                    let interval = Duration::from_millis(u64::from(self.genesis.round_interval_ms));
                    let at = (self.last_round_at + interval).max(now);
                    if at <= now {
                        self.build(now, height, parent, parent_height);
                    } else {
                        self.proposing = Some((height, parent, parent_height, at));
                    }
                }
                simplex::Out::Verify { digest, proposal } => {
                    let valid = match self.verify(digest, &proposal) {
                        Ok(()) => true,
                        Err(why) => {
                            *self.stats.batches_refused.entry(why).or_insert(0) += 1;
                            false
                        }
                    };
                    self.simplex.handle(now, simplex::In::Verified { height: proposal.height, digest, valid });
                }
                simplex::Out::Finalized { proposal, digest, certificate } => {
                    self.finalized(now, proposal, digest, certificate);
                }
                simplex::Out::Gap { from, to } => {
                    self.gap = Some(self.gap.map_or(to, |g| g.max(to)));
                    self.out.push_back(MeshOut::Gap { from, to });
                }
                simplex::Out::Reserve { up_to } => self.out.push_back(MeshOut::Reserve { up_to }),
                simplex::Out::Evidence(e) => {
                    if self.convicted.insert(e.signer) {
                        self.out.push_back(MeshOut::Evidence(e));
                    }
                }
            }
        }
    }

    /// A message of ours to the others, through the send filter (members only).
    fn send(&mut self, m: Message) {
        if !self.member {
            return;
        }
        match &self.cfg.send_filter {
            None => self.out.push_back(MeshOut::Send(m)),
            Some(f) => {
                let sent = f.rewrite(&self.mesh, m);
                self.out.extend(sent.into_iter().map(MeshOut::Send));
            }
        }
    }

    fn finalized(&mut self, now: Instant, proposal: Proposal, digest: Digest, certificate: Option<Certificate>) {
        if !self.blocks.contains_key(&digest) && self.verify(digest, &proposal).is_err() {
            // Final by a quorum, yet we cannot execute it: its parent's state is missing here.
            // Keep it until `catch_up` brings a state it can build on.
            let h = proposal.height;
            if self.orphans.len() >= MAX_ORPHANS {
                self.orphans.pop_first();
            }
            self.orphans.insert(h, (digest, proposal, certificate));
            self.out.push_back(MeshOut::Gap { from: h, to: h });
            return;
        }
        let Some(b) = self.blocks.get(&digest) else { return };
        let (round, state, hash, inputs) = (b.round, b.state.clone(), b.state_hash, b.inputs.clone());
        for id in &inputs {
            self.unpool(id);
            self.applied.insert(*id, round);
        }
        self.stats.inputs_applied += inputs.len() as u64;
        let height = proposal.height;
        if self.gap.is_some_and(|g| height > g) {
            self.gap = None;
        }
        self.certify(now, Certified { round, height, digest, state_hash: hash, state, proposal, certificate });
        // Forget what can no longer matter: applied ids past their window, and blocks that are
        // neither recent ancestors of this one nor candidates above it.
        let floor = round.saturating_sub(INPUT_WINDOW + 1);
        self.applied.retain(|_, r| *r >= floor);
        let mut keep = BTreeSet::new();
        let mut at = Some(digest);
        for _ in 0..=INPUT_WINDOW + 1 {
            let Some(d) = at else { break };
            keep.insert(d);
            at = self.blocks.get(&d).and_then(|b| b.parent);
        }
        self.blocks.retain(|d, b| keep.contains(d) || b.round > round);
    }
}
