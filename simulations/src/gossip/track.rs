//! What the gossip simulation measures: each broadcast's deliveries, and message counters.

use std::collections::BTreeMap;

use suprnova_gossip::proto::topic::Verifier;
use suprnova_gossip::wire::SigCheck;

use crate::engine::Nanos;

/// One broadcast's deliveries.
#[derive(Clone, Debug, Default)]
pub struct Track {
    /// Origin node.
    pub origin: u32,
    /// When it was sent.
    pub sent_at: Nanos,
    /// Nodes that delivered it (the origin included), with when and at which hop.
    pub delivered: BTreeMap<u32, (Nanos, u16)>,
    /// Payload messages (Plumtree `Gossip` or flood copies) sent for it.
    pub payload_msgs: u64,
    /// The hop count of the first full copy each node received (read at delivery).
    pub(super) first_round: BTreeMap<u32, u16>,
}

impl Track {
    /// Relative message redundancy, m / (n − 1) − 1 (Leitão et al.), over `n` delivering nodes.
    pub fn rmr(&self) -> f64 {
        let n = self.delivered.len();
        if n < 2 {
            return 0.0;
        }
        self.payload_msgs as f64 / (n - 1) as f64 - 1.0
    }

    /// Last delivery hop: the largest hop count at which a node delivered.
    pub fn ldh(&self) -> u16 {
        self.delivered.values().map(|&(_, r)| r).max().unwrap_or(0)
    }

    /// Time from sending to the last delivery.
    pub fn last_delivery(&self) -> Nanos {
        self.delivered.values().map(|&(t, _)| t.saturating_sub(self.sent_at)).max().unwrap_or(0)
    }
}

/// Counters of the message layer.
#[derive(Clone, Copy, Debug, Default)]
pub struct GossipNetStats {
    /// HyParView messages sent.
    pub hpv_msgs: u64,
    /// Plumtree messages sent (all kinds).
    pub plum_msgs: u64,
    /// `IHave` messages sent.
    pub ihaves: u64,
    /// `Graft` messages sent.
    pub grafts: u64,
    /// `Prune` messages sent.
    pub prunes: u64,
    /// Connections opened.
    pub connects: u64,
    /// Messages that vanished (dead peer or partition).
    pub vanished: u64,
    /// Member-set reads answered.
    pub member_reads: u64,
    /// Member-set writes.
    pub member_writes: u64,
}

/// The simulation's signature checks: every envelope is signed by a simulated core with its own
/// key and none is forged, so checking 10,000 copies of each would only cost time. The envelope's
/// other checks (id, encoding, time window) still run in the core.
pub(super) struct TrustSigned;

impl Verifier for TrustSigned {
    fn verify(&mut self, checks: &[SigCheck<'_>]) -> Vec<bool> {
        vec![true; checks.len()]
    }
}
