//! One frame of a gossip stream (wire-spec §12): the cores' messages with their topic, and its
//! length-prefixed encoding. Here rather than in `wire`, which the cores use, so that `wire`
//! needs nothing of them.

use serde::{Deserialize, Serialize};
use suprnova_dht::NodeId;

use super::{hyparview, plumtree};
use crate::wire::{MAX_FRAME, TopicId, decode_canonical};

/// One frame of a gossip stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// 0: nothing (keeps the connection alive while the peer is a neighbour).
    KeepAlive,
    /// 1: HyParView message of a topic.
    Membership {
        /// Topic.
        topic: TopicId,
        /// Message.
        msg: hyparview::Message<NodeId>,
    },
    /// 2: Plumtree message of a topic; `Gossip` payloads are encoded [`Envelope`](crate::wire::Envelope)s.
    Broadcast {
        /// Topic.
        topic: TopicId,
        /// Message.
        msg: plumtree::Message,
    },
}

/// Encodes a frame with its 4-byte big-endian length prefix.
pub fn encode_frame(frame: &Frame) -> Option<Vec<u8>> {
    // Room for the whole frame up front: one allocation, no regrowth while encoding.
    let hint = match frame {
        Frame::Broadcast { msg: plumtree::Message::Gossip { payload, .. }, .. } => payload.len() + 96,
        Frame::Broadcast { msg: plumtree::Message::IHave(ids), .. } => ids.len() * 36 + 48,
        _ => 128,
    };
    let mut out = Vec::with_capacity(4 + hint);
    out.extend_from_slice(&[0; 4]);
    let mut out = postcard::to_extend(frame, out).ok()?;
    let len = out.len() - 4;
    if len > MAX_FRAME {
        return None;
    }
    out.get_mut(..4)?.copy_from_slice(&u32::try_from(len).ok()?.to_be_bytes());
    Some(out)
}

/// Decodes a frame body (without its length prefix).
pub fn decode_frame(body: &[u8]) -> Option<Frame> {
    if body.len() > MAX_FRAME {
        return None;
    }
    decode_canonical(body)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn frames_round_trip() {
        let f = Frame::Broadcast { topic: TopicId::from_name("x"), msg: plumtree::Message::Prune };
        let enc = encode_frame(&f).unwrap();
        assert_eq!(u32::from_be_bytes(enc[..4].try_into().unwrap()) as usize, enc.len() - 4);
        assert_eq!(decode_frame(&enc[4..]), Some(f));
        assert_eq!(decode_frame(&[9]), None);
    }
}
