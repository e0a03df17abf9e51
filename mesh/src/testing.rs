//! Byzantine members for tests, the simulator and the devnet (behind the `testing` feature,
//! never in a deployment): rewrites of what a member sends, plugged in as
//! [`MeshConfig::send_filter`](crate::core::MeshConfig::send_filter).

use suprnova_dht::identity::Identity;

use crate::core::SendFilter;
use crate::simplex::{self, Digest, Message, Proposal, Sig};

/// Sends nothing: its proposals, votes and finalize votes are withheld.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl SendFilter for Silent {
    fn rewrite(&self, _mesh: &Digest, _m: Message) -> Vec<Message> {
        Vec::new()
    }
}

/// Besides each block vote it signs, signs and sends a vote for a different block at the same
/// height: self-proving evidence for the others. Everything else is sent as made.
#[derive(Debug)]
pub struct EquivocateVotes {
    /// The member's own key (the twin must carry a valid signature to convict it).
    pub identity: Identity,
}

impl SendFilter for EquivocateVotes {
    fn rewrite(&self, mesh: &Digest, m: Message) -> Vec<Message> {
        let twin = match &m {
            Message::Vote { choice: Some(_), .. } => equivocation_twin(mesh, &self.identity, &m),
            _ => None,
        };
        std::iter::once(m).chain(twin).collect()
    }
}

/// The equivocator's twin of `m`, signed by `id`: the same kind of message for a different block
/// (a second proposal with one more payload byte, or a vote or finalize for another digest).
/// Tests and the simulator use it to make a member equivocate; `None` for kinds it cannot twin.
pub fn equivocation_twin(mesh: &Digest, id: &Identity, m: &Message) -> Option<Message> {
    match m {
        Message::Propose { proposal, .. } => {
            let mut p: Proposal = proposal.clone();
            let mut pl = p.payload.to_vec();
            pl.push(0x42);
            p.payload = pl.as_slice().try_into().ok()?;
            let d = p.digest(mesh);
            let sig = Sig(id.sign(&simplex::vote_message(mesh, p.height, &Some(d))));
            Some(Message::Propose { proposal: p, sig })
        }
        Message::Vote { height, choice: Some(_), signer, .. } => {
            let other = *blake3::hash(&height.to_le_bytes()).as_bytes();
            let sig = Sig(id.sign(&simplex::vote_message(mesh, *height, &Some(other))));
            Some(Message::Vote { height: *height, choice: Some(other), signer: *signer, sig })
        }
        Message::Finalize { height, signer, .. } => {
            let other = *blake3::hash(&height.to_le_bytes()).as_bytes();
            let sig = Sig(id.sign(&simplex::finalize_message(mesh, *height, &other)));
            Some(Message::Finalize { height: *height, digest: other, signer: *signer, sig })
        }
        _ => None,
    }
}
