//! Catching up: when final blocks were missed or cannot be executed here, the core asks its
//! driver for the newest certified round (`MeshOut::Fetch`), one read at a time and at most one
//! every [`FETCH_EVERY`], and installs what comes back.

use super::*;

/// The least time between two reads of the newest certified round.
pub const FETCH_EVERY: Duration = Duration::from_millis(500);

/// A certified round read from elsewhere (the DHT): its number, its state, its block (the body
/// may be empty) and the block's certificate.
pub type Fetched<S> = (u64, S, Proposal, Certificate);

/// The catch-up reads: one in flight at most, spaced by [`FETCH_EVERY`].
#[derive(Debug, Default)]
pub(super) struct Fetching {
    pub(super) in_flight: bool,
    pub(super) last: Option<Instant>,
}

impl<W: World> MeshCore<W> {
    /// Whether final blocks are waiting for a state to build on, or were missed (the core asks
    /// for a catch-up read while it is).
    pub fn behind(&self) -> bool {
        self.gap.is_some() || !self.orphans.is_empty()
    }

    /// Asks for a read now, whatever the state (a member that starts or restarts begins from
    /// the newest round stored, if there is one yet).
    pub(super) fn fetch_now(&mut self, now: Instant) {
        if self.fetch.in_flight {
            return;
        }
        self.fetch.in_flight = true;
        self.fetch.last = Some(now);
        self.out.push_back(MeshOut::Fetch);
    }

    /// Asks for a read if behind and none is in flight or was asked for in the last
    /// [`FETCH_EVERY`].
    pub(super) fn want_fetch(&mut self, now: Instant) {
        let spaced = self.fetch.last.is_none_or(|t| now.saturating_duration_since(t) >= FETCH_EVERY);
        if self.behind() && spaced {
            self.fetch_now(now);
        }
    }

    /// When the next catch-up read is due (behind, none in flight).
    pub(super) fn fetch_due(&self) -> Option<Instant> {
        if !self.behind() || self.fetch.in_flight {
            return None;
        }
        Some(self.fetch.last.map_or(self.last_round_at, |t| t + FETCH_EVERY))
    }

    /// The answer to `MeshOut::Fetch`: the newest certified round the driver found, verified
    /// against the genesis (see `net::get_state`), or `None` when there is none or the read
    /// failed. Returns whether the member moved forward.
    pub fn fetched(&mut self, now: Instant, round: Option<Fetched<W::State>>) -> bool {
        self.fetch.in_flight = false;
        let moved = match round {
            Some((round, state, proposal, certificate)) => self.catch_up(now, round, state, proposal, certificate),
            None => false,
        };
        self.want_fetch(now);
        moved
    }

    /// Installs a certified state fetched from elsewhere (the DHT): round `round` is block
    /// `proposal` (its body may be empty) with `certificate`, which the caller has verified
    /// against the genesis, and `state` hashes to its header's state hash. The member continues
    /// from it: the agreement resumes after that block, and final blocks that were waiting on it
    /// are executed. Ignored (false) if we already are at or past that round.
    ///
    /// The inputs applied in the 16 rounds before it are not known here, so until the window
    /// has passed this member cannot refuse a batch that repeats one of them; the other members
    /// still do.
    pub fn catch_up(
        &mut self,
        now: Instant,
        round: u64,
        state: W::State,
        proposal: Proposal,
        certificate: Certificate,
    ) -> bool {
        if round <= self.final_round {
            return false;
        }
        let digest = certificate.digest;
        let hash = state_hash(&state);
        let state = Arc::new(state);
        // A block executed here already keeps what it knows (its inputs for the replay window).
        let executed = Executed { round, state: state.clone(), state_hash: hash, inputs: Vec::new(), parent: None };
        self.blocks.entry(digest).or_insert(executed);
        let height = proposal.height;
        self.certify(
            now,
            Certified { round, height, digest, state_hash: hash, state, proposal, certificate: Some(certificate) },
        );
        self.stats.caught_up += 1;
        self.simplex.resume_after(now, height, digest);
        self.gap = None;
        let waiting = std::mem::take(&mut self.orphans);
        for (h, (d, p, c)) in waiting {
            if h > height {
                self.finalized(now, p, d, c);
            }
        }
        self.pump(now);
        true
    }
}
