//! Queries: bootstrap, find_node, get and put, each driving an iterative lookup (see `lookup`),
//! plus republishing our own records before they expire and refreshing stale buckets.
//!
//! Latency first: a `get` reports the first valid record the moment it arrives (`GetMode::First`
//! then ends the query), and a `put` reports every replica's answer as it comes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand_core::Rng;

use super::{Dht, DhtEvent, PingPurpose, QueryId, RequestError, Target, Waiting};
use crate::channel::PeerInfo;
use crate::identity::{NodeId, NodeRecord};
use crate::lookup::{Lookup, LookupConfig};
use crate::stats::DropReason;
use crate::store::{self, Stored};
use crate::wire::{Body, Key, Record};

/// How a `get` ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GetMode {
    /// At the first valid record (immutable and mutable records).
    First,
    /// When the lookup ends, having reported every distinct valid record.
    All,
    /// Like `All`, for a multi-writer set: asks with FindSet and reads each replica's entries
    /// page by page (at most `MAX_SET_PAGES` pages per replica).
    Set,
}

/// Pages of one set read from one replica, at most (8 entries or more a page: more than a
/// replica's 64 writers).
pub const MAX_SET_PAGES: u8 = 16;

/// What a `put` achieved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PutOutcome {
    /// Replicas that stored the record (this node included, if it is one of the r closest).
    pub stored: usize,
    /// Of those, replicas other than this node: 0 means no other node took a copy.
    pub remote: usize,
    /// Replicas that refused or did not answer.
    pub failed: usize,
    /// Hops of the lookup to the closest node.
    pub hops: u32,
}

#[derive(Debug)]
pub(super) enum Kind {
    FindNode,
    Refresh,
    Bootstrap {
        seeds_left: usize,
    },
    Get {
        key: Key,
        mode: GetMode,
        found: Vec<Record>,
    },
    Put {
        key: Key,
        record: Box<Record>,
        ttl: Duration,
        cas: Option<u64>,
        /// Whether to republish it (`put`) or not (`put_once`).
        republish: bool,
        replicas_left: Option<usize>,
        outcome: PutOutcome,
        error: Option<RequestError>,
    },
}

#[derive(Debug)]
pub(super) struct Query {
    pub(super) kind: Kind,
    pub(super) lookup: Option<Lookup>,
    pub(super) deadline: Instant,
    pub(super) started: Instant,
    /// Whether its lookup runs (or it waits in `query_queue`).
    pub(super) admitted: bool,
}

/// A record we put and keep alive by putting it again before it expires.
#[derive(Clone, Debug)]
pub(super) struct Published {
    pub(super) record: Record,
    pub(super) ttl: Duration,
    pub(super) next: Instant,
}

/// Interval of the check for stale buckets.
const REFRESH_CHECK: Duration = Duration::from_secs(60);

fn addr_of(rec: &NodeRecord) -> Option<SocketAddr> {
    rec.addr_for(false).or_else(|| rec.addr_for(true))
}

impl Dht {
    fn new_query(&mut self, now: Instant, kind: Kind, target: Option<NodeId>) -> Result<QueryId, RequestError> {
        if self.queries.len() >= self.cfg.max_queries {
            return Err(RequestError::Busy);
        }
        let id = self.next_query;
        self.next_query += 1;
        // A record lives on the r closest nodes: a set read, and a put looking for where to store,
        // end when the 2r closest known have answered rather than k (20): a third of the
        // requests for the same replicas, and fewer answers to wait for on a lossy network.
        let k = match &kind {
            Kind::Get { mode: GetMode::Set, .. } | Kind::Put { .. } => {
                (2 * self.cfg.replication).clamp(1, self.cfg.lookup.k)
            }
            _ => self.cfg.lookup.k,
        };
        let lookup = target.map(|t| self.start_lookup(t, k));
        let admitted = self.active_queries < self.cfg.max_active_queries.max(1);
        if admitted {
            self.active_queries += 1;
        } else {
            self.query_queue.push_back(id);
            self.stats.queries_queued += 1;
        }
        let deadline = now + self.cfg.query_timeout;
        self.queries.insert(id, Query { kind, lookup, deadline, started: now, admitted });
        Ok(id)
    }

    /// Query `q` is gone (`admitted`: it was running): its turn goes to the next waiting one.
    fn query_removed(&mut self, now: Instant, q: QueryId, admitted: bool) {
        if admitted {
            self.active_queries = self.active_queries.saturating_sub(1);
        } else {
            self.query_queue.retain(|w| *w != q);
        }
        // A query admitted here may finish at once and come back through this function: the
        // loop below goes on admitting, the nested call does not.
        if self.admitting {
            return;
        }
        self.admitting = true;
        while self.active_queries < self.cfg.max_active_queries.max(1) {
            let Some(next) = self.query_queue.pop_front() else { break };
            let Some(query) = self.queries.get_mut(&next) else { continue };
            query.admitted = true;
            // The wait does not count against its time to run.
            query.deadline = now + self.cfg.query_timeout;
            self.active_queries += 1;
            self.drive(now, next);
        }
        self.admitting = false;
    }

    fn start_lookup(&mut self, target: NodeId, k: usize) -> Lookup {
        self.stats.lookups += 1;
        let seeds = self.table.closest(&target, self.cfg.lookup.k).into_iter().map(|e| (e.record, e.addr)).collect();
        Lookup::new(target, self.id(), LookupConfig { k, ..self.cfg.lookup }, seeds)
    }

    /// Joins the network through `seeds` (records, `NODEID@addr` or bare addresses), then looks up
    /// our own id to fill the routing table. With no seeds it rejoins from the table it has. The
    /// seeds are remembered: a node whose table runs low rejoins through them (§7.6).
    pub fn bootstrap(&mut self, now: Instant, seeds: Vec<Target>) -> Result<QueryId, RequestError> {
        self.rejoin.remember_seeds(&seeds);
        let q = self.start_bootstrap(now, seeds)?;
        self.check_floor(now);
        Ok(q)
    }

    /// Looks up our own id (a refresh of our neighbourhood), reporting nothing.
    pub(super) fn self_lookup(&mut self, now: Instant) {
        let me = self.id();
        if let Ok(q) = self.new_query(now, Kind::Refresh, Some(me)) {
            self.drive(now, q);
        }
    }

    pub(super) fn start_bootstrap(&mut self, now: Instant, seeds: Vec<Target>) -> Result<QueryId, RequestError> {
        let q = self.new_query(now, Kind::Bootstrap { seeds_left: seeds.len() }, None)?;
        if seeds.is_empty() {
            self.bootstrap_lookup(now, q);
            return Ok(q);
        }
        for seed in seeds {
            let sent = match seed {
                Target::Record(rec) => match rec.verify() {
                    Ok(()) => Self::peer_info(&rec, None).and_then(|info| {
                        self.remember(&rec);
                        let w = Waiting::Pong { peer: rec.id, purpose: PingPurpose::Bootstrap(q) };
                        self.send_request(now, &info, Body::Ping, w, self.cfg.rpc_timeout)
                    }),
                    Err(e) => Err(RequestError::BadRecord(e)),
                },
                Target::Addr { addr, expect } => {
                    self.fetch_record(now, crate::channel::canonical(addr), expect, super::AfterRecord::Bootstrap(q))
                }
            };
            if sent.is_err() {
                self.bootstrap_seed_done(now, q);
            }
        }
        Ok(q)
    }

    pub(super) fn bootstrap_seed_done(&mut self, now: Instant, q: QueryId) {
        let Some(Query { kind: Kind::Bootstrap { seeds_left }, .. }) = self.queries.get_mut(&q) else { return };
        *seeds_left = seeds_left.saturating_sub(1);
        if *seeds_left == 0 {
            self.bootstrap_lookup(now, q);
        }
    }

    fn bootstrap_lookup(&mut self, now: Instant, q: QueryId) {
        let me = self.id();
        let lookup = self.start_lookup(me, self.cfg.lookup.k);
        if let Some(query) = self.queries.get_mut(&q) {
            query.lookup = Some(lookup);
        }
        self.drive(now, q);
    }

    /// Finds the k nodes closest to `target`.
    pub fn find_node(&mut self, now: Instant, target: NodeId) -> Result<QueryId, RequestError> {
        if self.table.is_empty() {
            return Err(RequestError::NoPeers);
        }
        let q = self.new_query(now, Kind::FindNode, Some(target))?;
        self.drive(now, q);
        Ok(q)
    }

    /// Looks up the records under `key`; local records are reported first.
    pub fn get(&mut self, now: Instant, key: Key, mode: GetMode) -> Result<QueryId, RequestError> {
        let local = self.store.get(now, &key);
        if self.table.is_empty() && local.is_empty() {
            return Err(RequestError::NoPeers);
        }
        let q = self.new_query(now, Kind::Get { key, mode, found: Vec::new() }, Some(NodeId(key.0)))?;
        let me = self.id();
        for record in local {
            self.found_record(q, record, me, 0);
        }
        if mode == GetMode::First && self.query_found_any(q) {
            self.finish(now, q);
        } else {
            self.drive(now, q);
        }
        Ok(q)
    }

    /// Stores `record` under `key` on the r closest nodes for `ttl`, with an optional
    /// compare-and-swap on the mutable record's current seq. Refused at once if invalid.
    pub fn put(
        &mut self,
        now: Instant,
        key: Key,
        record: Record,
        ttl: Duration,
        cas: Option<u64>,
    ) -> Result<QueryId, RequestError> {
        self.put_with(now, key, record, ttl, cas, true)
    }

    /// Like `put`, but the record is not republished: it lives `ttl` unless the caller stores it
    /// again (for records their owner rewrites itself, such as presence entries and mesh heads).
    pub fn put_once(&mut self, now: Instant, key: Key, record: Record, ttl: Duration) -> Result<QueryId, RequestError> {
        self.put_with(now, key, record, ttl, None, false)
    }

    fn put_with(
        &mut self,
        now: Instant,
        key: Key,
        record: Record,
        ttl: Duration,
        cas: Option<u64>,
        republish: bool,
    ) -> Result<QueryId, RequestError> {
        store::validate(&key, &record).map_err(RequestError::Invalid)?;
        // Replicas clamp lifetimes to this anyway; clamping here keeps the republish arithmetic
        // on `Instant` far from overflow whatever the caller passes.
        let ttl = ttl.clamp(Duration::from_secs(1), self.cfg.store.max_ttl);
        let kind = Kind::Put {
            key,
            record: Box::new(record),
            ttl,
            cas,
            republish,
            replicas_left: None,
            outcome: PutOutcome::default(),
            error: None,
        };
        let q = self.new_query(now, kind, Some(NodeId(key.0)))?;
        self.drive(now, q);
        Ok(q)
    }

    fn query_found_any(&self, q: QueryId) -> bool {
        matches!(self.queries.get(&q), Some(Query { kind: Kind::Get { found, .. }, .. }) if !found.is_empty())
    }

    /// Sends what the lookup of `q` wants sent; finishes the query when the lookup is done.
    pub(super) fn drive(&mut self, now: Instant, q: QueryId) {
        if self.queries.get(&q).is_some_and(|query| !query.admitted) {
            return;
        }
        for _ in 0..8 {
            let Some(query) = self.queries.get_mut(&q) else { return };
            let body = match &query.kind {
                Kind::Get { key, mode: GetMode::Set, .. } => Body::FindSet { key: *key, after: None },
                Kind::Get { key, .. } => Body::FindValue { key: *key },
                _ => match &query.lookup {
                    Some(l) => Body::FindNode { target: l.target() },
                    None => return,
                },
            };
            let Some(lookup) = query.lookup.as_mut() else { return };
            let reqs = lookup.next_requests();
            if reqs.is_empty() {
                break;
            }
            let mut failed = Vec::new();
            for (rec, addr) in reqs {
                let info = PeerInfo { id: rec.id, noise_key: rec.noise_key, addr };
                let w = Waiting::Lookup {
                    peer: rec.id,
                    query: q,
                    parts: 0,
                    total: None,
                    nodes: Vec::new(),
                    pages: 0,
                    after: None,
                };
                match self.send_request(now, &info, body.clone(), w, self.cfg.rpc_timeout) {
                    Ok(id) => {
                        self.stats.rpcs_sent += 1;
                        let stall = self.stall_deadline(now, &rec.id);
                        if let Some(p) = self.pending.get_mut(&id) {
                            p.stall = Some(stall);
                        }
                    }
                    Err(_) => failed.push(rec.id),
                }
            }
            if failed.is_empty() {
                break;
            }
            if let Some(l) = self.queries.get_mut(&q).and_then(|q| q.lookup.as_mut()) {
                for id in &failed {
                    l.on_failure(id);
                }
            }
        }
        let finished = self.queries.get(&q).and_then(|q| q.lookup.as_ref()).is_some_and(Lookup::is_finished);
        if finished {
            self.finish(now, q);
        }
    }

    pub(super) fn lookup_answered(&mut self, now: Instant, q: QueryId, peer: NodeId, nodes: Vec<NodeRecord>) {
        let Some(l) = self.queries.get_mut(&q).and_then(|q| q.lookup.as_mut()) else { return };
        let nodes = nodes.into_iter().filter_map(|r| addr_of(&r).map(|a| (r, a))).collect();
        l.on_response(&peer, nodes);
        self.drive(now, q);
    }

    /// A lookup request of `q` to `peer` is slow: ask someone else meanwhile.
    pub(super) fn lookup_stalled(&mut self, now: Instant, q: QueryId, peer: NodeId) {
        let Some(l) = self.queries.get_mut(&q).and_then(|q| q.lookup.as_mut()) else { return };
        l.on_stall(&peer);
        self.drive(now, q);
    }

    pub(super) fn lookup_failed(&mut self, now: Instant, q: QueryId, peer: NodeId) {
        let Some(l) = self.queries.get_mut(&q).and_then(|q| q.lookup.as_mut()) else { return };
        l.on_failure(&peer);
        self.drive(now, q);
    }

    fn found_record(&mut self, q: QueryId, record: Record, from: NodeId, hop: u32) {
        let Some(Query { kind: Kind::Get { found, .. }, .. }) = self.queries.get_mut(&q) else { return };
        if found.contains(&record) {
            return;
        }
        found.push(record.clone());
        self.events.push_back(DhtEvent::GotRecord { query: q, record, from, hop });
    }

    pub(super) fn on_value(
        &mut self,
        now: Instant,
        peer: NodeId,
        addr: SocketAddr,
        id: u64,
        key: Key,
        records: Vec<Record>,
    ) {
        let Some(p) = self.take_from(now, id, peer) else { return };
        let Waiting::Lookup { query: q, .. } = p.waiting else {
            self.channel.count_drop(DropReason::UnexpectedResponse);
            return;
        };
        self.responder_alive(now, peer, addr);
        let (want, mode) = match self.queries.get(&q) {
            Some(Query { kind: Kind::Get { key, mode, .. }, .. }) => (*key, *mode),
            _ => return,
        };
        let hop = self.queries.get(&q).and_then(|x| x.lookup.as_ref()).and_then(|l| l.hop_of(&peer)).unwrap_or(1);
        for record in records {
            if key == want && store::validate(&key, &record).is_ok() {
                self.found_record(q, record, peer, hop);
            } else {
                // A wrong key or a record that does not validate: a lying or broken peer.
                self.channel.count_drop(DropReason::InvalidValue);
            }
        }
        if mode == GetMode::First && self.query_found_any(q) {
            self.finish(now, q);
        } else {
            self.lookup_answered(now, q, peer, Vec::new());
        }
    }

    /// A page of a set from `peer`: each entry must validate and come after the previous one
    /// (and after the `after` we asked with). If the replica has more, ask it for the next page;
    /// else the replica has answered the lookup.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_set_page(
        &mut self,
        now: Instant,
        peer: NodeId,
        addr: SocketAddr,
        id: u64,
        key: Key,
        entries: Vec<crate::wire::SetEntry>,
        more: bool,
    ) {
        let Some(p) = self.take_from(now, id, peer) else { return };
        let Waiting::Lookup { query: q, pages, after, .. } = p.waiting else {
            self.channel.count_drop(DropReason::UnexpectedResponse);
            return;
        };
        self.responder_alive(now, peer, addr);
        let want = match self.queries.get(&q) {
            Some(Query { kind: Kind::Get { key, mode: GetMode::Set, .. }, .. }) => *key,
            _ => return,
        };
        let hop = self.queries.get(&q).and_then(|x| x.lookup.as_ref()).and_then(|l| l.hop_of(&peer)).unwrap_or(1);
        let mut last = after;
        let mut honest = key == want;
        for e in entries {
            let in_order = last.is_none_or(|l| e.public_key > l);
            let record = Record::SetEntry(e);
            if honest && in_order && store::validate(&key, &record).is_ok() {
                if let Record::SetEntry(e) = &record {
                    last = Some(e.public_key);
                }
                self.found_record(q, record, peer, hop);
            } else {
                // Wrong key, out of order, or invalid: a lying or broken peer; stop paging it.
                self.channel.count_drop(DropReason::InvalidValue);
                honest = false;
            }
        }
        let pages = pages.saturating_add(1);
        if honest
            && more
            && last != after
            && pages < MAX_SET_PAGES
            && let Some(rec) = self.lookup_record(&peer)
        {
            let info = PeerInfo { id: peer, noise_key: rec.noise_key, addr };
            let w = Waiting::Lookup { peer, query: q, parts: 0, total: None, nodes: Vec::new(), pages, after: last };
            let body = Body::FindSet { key, after: last };
            if let Ok(id) = self.send_request(now, &info, body, w, self.cfg.rpc_timeout) {
                self.stats.rpcs_sent += 1;
                let stall = self.stall_deadline(now, &peer);
                if let Some(p) = self.pending.get_mut(&id) {
                    p.stall = Some(stall);
                }
                return;
            }
        }
        self.lookup_answered(now, q, peer, Vec::new());
    }

    pub(super) fn on_store_ack(
        &mut self,
        now: Instant,
        peer: NodeId,
        addr: SocketAddr,
        id: u64,
        result: Result<(), RequestError>,
    ) {
        let Some(p) = self.take_from(now, id, peer) else { return };
        let Waiting::StoreAck { query, .. } = p.waiting else {
            self.channel.count_drop(DropReason::UnexpectedResponse);
            return;
        };
        self.responder_alive(now, peer, addr);
        self.replica_done(now, query, peer, result);
    }

    pub(super) fn replica_done(&mut self, now: Instant, q: QueryId, peer: NodeId, result: Result<(), RequestError>) {
        if q == super::repair::REPAIR_QUERY {
            self.repair_store_done();
            return;
        }
        let Some(Query { kind: Kind::Put { replicas_left: Some(left), outcome, error, .. }, .. }) =
            self.queries.get_mut(&q)
        else {
            return;
        };
        *left = left.saturating_sub(1);
        match result {
            Ok(()) => {
                outcome.stored += 1;
                outcome.remote += usize::from(peer != self.channel.identity().id());
            }
            Err(e) => {
                outcome.failed += 1;
                *error = Some(e);
            }
        }
        let done = *left == 0;
        self.events.push_back(DhtEvent::PutReplica { query: q, node: peer, result });
        if done {
            self.finish(now, q);
        }
    }

    /// The lookup of a put is done: store on the r closest (and here, if we are one of them).
    fn start_storing(&mut self, now: Instant, q: QueryId) {
        let me = self.id();
        let r = self.cfg.replication;
        let Some(query) = self.queries.get_mut(&q) else { return };
        let lookup = query.lookup.take();
        let Kind::Put { key, record, ttl, cas, replicas_left, outcome, .. } = &mut query.kind else { return };
        let (key, record, ttl, cas) = (*key, (**record).clone(), *ttl, *cas);
        let closest = lookup.as_ref().map(|l| l.closest(r)).unwrap_or_default();
        outcome.hops = closest.first().map_or(0, |f| f.hop);
        let target = NodeId(key.0);
        let local =
            closest.len() < r || closest.last().is_some_and(|f| target.distance(&me) < target.distance(&f.record.id));
        let remote: Vec<_> = closest.into_iter().take(if local { r.saturating_sub(1) } else { r }).collect();
        *replicas_left = Some(remote.len() + usize::from(local));
        let ttl_s = u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX);
        if local {
            let res = self.store.put(now, key, record.clone(), ttl, cas, me);
            let res = match res {
                Ok(Stored::New | Stored::Replaced | Stored::Refreshed) => Ok(()),
                Err(e) => Err(RequestError::Refused(e.code())),
            };
            self.replica_done(now, q, me, res);
        }
        for f in remote {
            let info = PeerInfo { id: f.record.id, noise_key: f.record.noise_key, addr: f.addr };
            let body = Body::Store { key, record: record.clone(), ttl_s, expected_seq: cas };
            let w = Waiting::StoreAck { peer: f.record.id, query: q };
            match self.send_request(now, &info, body, w, self.cfg.rpc_timeout) {
                Ok(_) => self.stats.rpcs_sent += 1,
                Err(e) => self.replica_done(now, q, f.record.id, Err(e)),
            }
        }
        if self.queries.get(&q).is_some_and(|x| matches!(x.kind, Kind::Put { replicas_left: Some(0), .. })) {
            self.finish(now, q);
        }
    }

    /// Ends query `q` (lookup done, value found, or deadline) and reports it.
    pub(super) fn finish(&mut self, now: Instant, q: QueryId) {
        if matches!(self.queries.get(&q), Some(Query { kind: Kind::Put { replicas_left: None, .. }, .. })) {
            return self.start_storing(now, q);
        }
        let Some(query) = self.queries.remove(&q) else { return };
        self.query_removed(now, q, query.admitted);
        let queries = query.lookup.as_ref().map_or(0, Lookup::queries);
        let name = match query.kind {
            Kind::FindNode => "find_node",
            Kind::Refresh => "refresh",
            Kind::Bootstrap { .. } => "bootstrap",
            Kind::Get { .. } => "get",
            Kind::Put { .. } => "put",
        };
        self.stats.query_latency.entry(name).or_default().observe(now.saturating_duration_since(query.started));
        match query.kind {
            Kind::FindNode => {
                let nodes = query.lookup.as_ref().map(|l| l.closest(self.cfg.lookup.k)).unwrap_or_default();
                let hops = nodes.first().map_or(0, |f| f.hop);
                self.events.push_back(DhtEvent::FoundNodes { query: q, nodes, hops, queries });
            }
            Kind::Refresh => {}
            Kind::Bootstrap { .. } => {
                self.events.push_back(DhtEvent::Bootstrapped { query: q, peers: self.table.len() });
                // Spread out: refresh the three farthest buckets, which hold half, a quarter and
                // an eighth of the network.
                for i in [255usize, 254, 253] {
                    self.refresh_bucket(now, i);
                }
            }
            Kind::Get { found, .. } => {
                let result = if found.is_empty() { Err(RequestError::NotFound) } else { Ok(found.len()) };
                self.events.push_back(DhtEvent::GetDone { query: q, result, queries });
            }
            Kind::Put { key, record, ttl, outcome, error, republish, .. } => {
                let result = if outcome.stored > 0 { Ok(outcome) } else { Err(error.unwrap_or(RequestError::Timeout)) };
                if outcome.stored > 0 && republish {
                    self.remember_published(now, key, *record, ttl);
                }
                self.events.push_back(DhtEvent::PutDone { query: q, result });
            }
        }
    }

    fn remember_published(&mut self, now: Instant, key: Key, record: Record, ttl: Duration) {
        let writer = match &record {
            Record::SetEntry(e) => e.public_key,
            _ => [0u8; 32],
        };
        if !self.published.contains_key(&(key, writer)) && self.published.len() >= self.cfg.max_published {
            return;
        }
        // Republish at four fifths of the lifetime, so the copies never lapse.
        let next = now + ttl.mul_f64(0.8).max(Duration::from_secs(1));
        self.published.insert((key, writer), super::query::Published { record, ttl, next });
    }

    pub(super) fn query_timeouts(&mut self, now: Instant) {
        let due: Vec<QueryId> = self.queries.iter().filter(|(_, q)| now >= q.deadline).map(|(id, _)| *id).collect();
        for q in due {
            // A put still looking up gets to store on what it found; anything else ends here.
            if let Some(query) = self.queries.get_mut(&q) {
                query.deadline = now + self.cfg.rpc_timeout;
                // A put still storing, or one that never got its turn (it has no replicas to
                // store on), ends here with a timeout.
                if matches!(query.kind, Kind::Put { replicas_left: Some(_), .. })
                    || (!query.admitted && matches!(query.kind, Kind::Put { .. }))
                {
                    let admitted = query.admitted;
                    self.queries.remove(&q);
                    self.query_removed(now, q, admitted);
                    self.events.push_back(DhtEvent::PutDone { query: q, result: Err(RequestError::Timeout) });
                    continue;
                }
            }
            self.finish(now, q);
        }
    }

    pub(super) fn republish_due(&mut self, now: Instant) {
        let due: Vec<(Key, [u8; 32])> =
            self.published.iter().filter(|(_, p)| now >= p.next).map(|(k, _)| *k).take(16).collect();
        for k in due {
            let Some(p) = self.published.get_mut(&k) else { continue };
            p.next = now + p.ttl.mul_f64(0.8).max(Duration::from_secs(1));
            let (record, ttl) = (p.record.clone(), p.ttl);
            if self.table.is_empty() {
                continue;
            }
            if self.put(now, k.0, record, ttl, None).is_ok() {
                self.stats.republished += 1;
            }
        }
    }

    pub(super) fn next_refresh(&self) -> Option<Instant> {
        (!self.table.is_empty()).then_some(self.last_refresh_check + REFRESH_CHECK)
    }

    pub(super) fn refresh_due(&mut self, now: Instant) {
        if now < self.last_refresh_check + REFRESH_CHECK {
            return;
        }
        self.last_refresh_check = now;
        // One stale bucket per check keeps refresh traffic low and steady.
        if let Some(i) = self.table.stale_buckets(now).into_iter().next() {
            self.refresh_bucket(now, i);
        }
    }

    /// A lookup for a random id in bucket `i`, which marks the bucket fresh.
    fn refresh_bucket(&mut self, now: Instant, i: usize) {
        let mut r = [0u8; 32];
        self.rng.fill_bytes(&mut r);
        let target = self.table.id_in_bucket(i, r);
        self.table.touch(i, now);
        if let Ok(q) = self.new_query(now, Kind::Refresh, Some(target)) {
            self.drive(now, q);
        }
    }
}
