//! Topic membership through the DHT: each subscriber keeps a signed entry in the topic's member
//! set (written at once, then every third of its lifetime), and reads the set
//! - at once when it subscribes, and whenever it has no neighbour at all: it joins through a few
//!   members picked at random (a node whose neighbours all left or were cut off finds the topic
//!   again on its own);
//! - every `members_every` ticks (at a random phase per topic), and whenever its passive view is
//!   empty: the members feed HyParView (`hyparview::In::Members`), so members it never heard of
//!   become backups and one of them is asked to become a neighbour;
//! - every tick for `after_revival` ticks after the DHT saw a former peer answer again (a healed
//!   partition), asking a member to become a neighbour even if all are known: two halves whose
//!   active views are full of their own side meet again although no active view emptied.
//!
//! The core asks (`Out::Announce`, `Out::ReadMembers`); the driver does the DHT work and answers
//! with `TopicCore::members_read`.

use std::time::{Duration, Instant};

use super::types::MembershipConfig;

/// What to do with a member-set read when it comes back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ReadFor {
    /// Join through a few members (no neighbour yet, or none left).
    Join,
    /// Feed HyParView; `mix`: ask a member to become a neighbour even if all are known.
    Feed {
        /// See `hyparview::In::Members`.
        mix: bool,
    },
}

/// What a tick asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct TickWork {
    /// Write our entry again.
    pub announce: bool,
    /// Read the set, and what for.
    pub read: Option<ReadFor>,
}

/// A read that is not answered within this long is taken as lost (another may be asked).
const READ_LOST_AFTER: Duration = Duration::from_secs(30);

/// The membership state of one topic.
pub(super) struct Membership {
    last_announce: Instant,
    ticks: u64,
    phase: u64,
    /// Ticks left during which every tick reads and mixes (after a revival).
    mixing: u64,
    /// The read asked and not answered yet, and when it was asked.
    reading: Option<(ReadFor, Instant)>,
}

impl Membership {
    /// A new subscription at `now`; `random` picks the phase of the periodic reads.
    pub(super) fn new(now: Instant, random: u64, cfg: &MembershipConfig) -> Self {
        Membership {
            last_announce: now,
            ticks: 0,
            phase: random % cfg.members_every.max(1),
            mixing: 0,
            reading: Some((ReadFor::Join, now)),
        }
    }

    /// The DHT saw a former peer answer again.
    pub(super) fn revived(&mut self, cfg: &MembershipConfig) {
        self.mixing = cfg.after_revival;
    }

    /// One tick: what to ask of the DHT. `active` and `passive` are the view sizes; `random`
    /// decides the occasional mixing read.
    pub(super) fn tick(
        &mut self,
        now: Instant,
        active: usize,
        passive: usize,
        random: u64,
        cfg: &MembershipConfig,
    ) -> TickWork {
        let mut work = TickWork::default();
        if now.saturating_duration_since(self.last_announce) >= cfg.entry_ttl / 3 {
            self.last_announce = now;
            work.announce = true;
        }
        if self.reading.is_some_and(|(_, at)| now.saturating_duration_since(at) >= READ_LOST_AFTER) {
            self.reading = None;
        }
        let mixing = self.mixing > 0;
        let every = cfg.members_every.max(1);
        let read = if active == 0 {
            Some(ReadFor::Join)
        } else if mixing || self.ticks % every == self.phase || passive == 0 {
            Some(ReadFor::Feed { mix: mixing || random.is_multiple_of(cfg.mix_one_in.max(1)) })
        } else {
            None
        };
        if let Some(r) = read
            && self.reading.is_none()
        {
            self.reading = Some((r, now));
            work.read = Some(r);
        }
        self.mixing = self.mixing.saturating_sub(1);
        self.ticks = self.ticks.wrapping_add(1);
        work
    }

    /// A read came back: what it was for (`Feed` without mixing if none was asked).
    pub(super) fn answered(&mut self) -> ReadFor {
        self.reading.take().map_or(ReadFor::Feed { mix: false }, |(r, _)| r)
    }
}
