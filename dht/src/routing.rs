//! The Kademlia routing table (Maymounkov & Mazières 2002, §2.2): 256 k-buckets over XOR distance,
//! least-recently-seen order with ping-before-evict, a replacement cache per bucket, and IP-diversity
//! limits (at most `per_bucket_subnet` nodes of one /24 (IPv4) or /64 (IPv6) in a bucket and
//! `per_table_subnet` in the table). Sans-IO: it decides, the `Dht` pings and reports back.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::identity::{NodeId, NodeRecord};

/// Tunables of the routing table.
#[derive(Clone, Debug)]
pub struct RoutingConfig {
    /// Bucket size k.
    pub k: usize,
    /// Replacement-cache entries per bucket.
    pub replacements: usize,
    /// Nodes of one subnet (/24 or /64) per bucket.
    pub per_bucket_subnet: usize,
    /// Nodes of one subnet in the whole table.
    pub per_table_subnet: usize,
    /// Exempt local addresses (loopback, RFC 1918 private, link-local, IPv6 unique local; see
    /// [`is_local`]) from the diversity limits: on a LAN every peer shares a /24, and an attacker
    /// who can fill a LAN with nodes is already inside it. Public addresses keep the limits. On by
    /// default; `false` limits local addresses like public ones.
    pub exempt_local: bool,
    /// A bucket with no lookup or insertion for this long is refreshed.
    pub bucket_refresh: Duration,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            k: 20,
            replacements: 10,
            per_bucket_subnet: 2,
            per_table_subnet: 10,
            exempt_local: true,
            bucket_refresh: Duration::from_secs(15 * 60),
        }
    }
}

/// Whether `ip` is local: loopback (127.0.0.0/8, ::1), private (10.0.0.0/8, 172.16.0.0/12,
/// 192.168.0.0/16), link-local (169.254.0.0/16, fe80::/10) or IPv6 unique local (fc00::/7).
/// IPv4-mapped IPv6 addresses count as their IPv4 address.
pub fn is_local(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.is_unique_local() || v6.is_unicast_link_local(),
    }
}

/// One known node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Its verified record.
    pub record: NodeRecord,
    /// The address it answers at.
    pub addr: SocketAddr,
    /// Last time it proved alive.
    pub last_seen: Instant,
    /// Failures counted since it last answered (timeouts close together count once).
    pub failures: u32,
    /// When a failure was last counted.
    pub failed_at: Option<Instant>,
}

impl Entry {
    /// The node id.
    pub fn id(&self) -> NodeId {
        self.record.id
    }
}

/// What `insert` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Insert {
    /// Added to its bucket.
    Added,
    /// Already present: record (if newer), address and liveness refreshed.
    Updated,
    /// Bucket full: the least-recently-seen node `ping` must be pinged; the candidate waits.
    PingFirst {
        /// Node to ping.
        ping: NodeId,
    },
    /// Bucket full and a ping is already pending: kept in the replacement cache.
    Cached,
    /// Refused.
    Refused(Refusal),
}

/// Why a node was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// It is this node.
    SelfId,
    /// Too many nodes of its subnet.
    Diversity,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
struct Subnet([u8; 9]);

fn subnet(ip: IpAddr) -> Subnet {
    let mut s = [0u8; 9];
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            s[0] = 4;
            s[1..4].copy_from_slice(&v4.octets()[..3]);
        }
        IpAddr::V6(v6) => {
            s[0] = 6;
            s[1..9].copy_from_slice(&v6.octets()[..8]);
        }
    }
    Subnet(s)
}

#[derive(Default, Debug)]
struct Bucket {
    /// Least recently seen first.
    entries: Vec<Entry>,
    replacements: VecDeque<Entry>,
    /// (node being pinged, candidate waiting for its slot); boxed because most of the 256
    /// buckets are empty and an inline entry would cost each of them ~300 bytes.
    pending: Option<Box<(NodeId, Entry)>>,
    last_touched: Option<Instant>,
}

/// The routing table of one node.
#[derive(Debug)]
pub struct RoutingTable {
    local: NodeId,
    cfg: RoutingConfig,
    buckets: Vec<Bucket>,
    subnets: BTreeMap<Subnet, usize>,
    len: usize,
}

impl RoutingTable {
    /// An empty table for `local`.
    pub fn new(local: NodeId, cfg: RoutingConfig) -> Self {
        RoutingTable {
            local,
            cfg,
            buckets: (0..256).map(|_| Bucket::default()).collect(),
            subnets: BTreeMap::new(),
            len: 0,
        }
    }

    /// The bucket index of `id`: 255 − leading zeros of the distance; `None` for the local id.
    pub fn bucket_index(&self, id: &NodeId) -> Option<usize> {
        let lz = self.local.distance(id).leading_zeros();
        (lz < 256).then(|| 255 - lz as usize)
    }

    /// Nodes in the table.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Entries per non-empty bucket, as (index, count).
    pub fn bucket_sizes(&self) -> Vec<(usize, usize)> {
        self.buckets
            .iter()
            .enumerate()
            .filter(|(_, b)| !b.entries.is_empty())
            .map(|(i, b)| (i, b.entries.len()))
            .collect()
    }

    /// The entry for `id`, if held.
    pub fn get(&self, id: &NodeId) -> Option<&Entry> {
        let b = self.buckets.get(self.bucket_index(id)?)?;
        b.entries.iter().find(|e| e.id() == *id)
    }

    fn exempt(&self, ip: IpAddr) -> bool {
        self.cfg.exempt_local && is_local(ip)
    }

    fn diversity_ok(&self, bucket: &Bucket, addr: SocketAddr) -> bool {
        if self.exempt(addr.ip()) {
            return true;
        }
        let net = subnet(addr.ip());
        let in_bucket = bucket.entries.iter().filter(|e| subnet(e.addr.ip()) == net).count();
        let in_table = self.subnets.get(&net).copied().unwrap_or(0);
        in_bucket < self.cfg.per_bucket_subnet && in_table < self.cfg.per_table_subnet
    }

    fn count_subnet(&mut self, addr: SocketAddr, add: bool) {
        if self.exempt(addr.ip()) {
            return;
        }
        let net = subnet(addr.ip());
        let c = self.subnets.entry(net).or_insert(0);
        if add {
            *c += 1;
        } else {
            *c = c.saturating_sub(1);
            if *c == 0 {
                self.subnets.remove(&net);
            }
        }
    }

    /// Offers a node that just proved alive (answered us or sent us an authenticated request).
    pub fn insert(&mut self, now: Instant, entry: Entry) -> Insert {
        let Some(i) = self.bucket_index(&entry.id()) else { return Insert::Refused(Refusal::SelfId) };
        let k = self.cfg.k;
        let Some(bucket) = self.buckets.get_mut(i) else { return Insert::Refused(Refusal::SelfId) };
        bucket.last_touched = Some(now);
        if let Some(pos) = bucket.entries.iter().position(|e| e.id() == entry.id()) {
            let mut old = bucket.entries.remove(pos);
            let old_addr = old.addr;
            if entry.record.seq > old.record.seq {
                old.record = entry.record;
            }
            old.addr = entry.addr;
            old.last_seen = now;
            old.failures = 0;
            old.failed_at = None;
            if subnet(old_addr.ip()) == subnet(entry.addr.ip()) {
                bucket.entries.push(old);
                return Insert::Updated;
            }
            // It moved to another network: it must fit that network's limits like a newcomer.
            self.len -= 1;
            self.count_subnet(old_addr, false);
            let fits = self.buckets.get(i).is_some_and(|b| self.diversity_ok(b, entry.addr));
            if !fits {
                return Insert::Refused(Refusal::Diversity);
            }
            if let Some(b) = self.buckets.get_mut(i) {
                b.entries.push(old);
            }
            self.len += 1;
            self.count_subnet(entry.addr, true);
            return Insert::Updated;
        }
        let Some(bucket) = self.buckets.get(i) else { return Insert::Refused(Refusal::SelfId) };
        if !self.diversity_ok(bucket, entry.addr) {
            return Insert::Refused(Refusal::Diversity);
        }
        let Some(bucket) = self.buckets.get_mut(i) else { return Insert::Refused(Refusal::SelfId) };
        if bucket.entries.len() < k {
            let addr = entry.addr;
            if bucket.entries.capacity() == 0 {
                // A bucket never holds more than k: allocate exactly that once, not the doubling
                // growth's 32 slots for 20 (some 3 KB a bucket, 40 KB a table).
                bucket.entries.reserve_exact(k);
            }
            bucket.entries.push(entry);
            self.len += 1;
            self.count_subnet(addr, true);
            return Insert::Added;
        }
        if bucket.pending.is_none() {
            let lrs = bucket.entries.first().map(Entry::id);
            if let Some(lrs) = lrs {
                bucket.pending = Some(Box::new((lrs, entry)));
                return Insert::PingFirst { ping: lrs };
            }
        }
        Self::cache(bucket, entry, self.cfg.replacements);
        Insert::Cached
    }

    fn cache(bucket: &mut Bucket, entry: Entry, cap: usize) {
        bucket.replacements.retain(|e| e.id() != entry.id());
        if cap == 0 {
            return;
        }
        if bucket.replacements.len() >= cap {
            bucket.replacements.pop_front();
        }
        if bucket.replacements.capacity() == 0 {
            bucket.replacements.reserve_exact(cap);
        }
        bucket.replacements.push_back(entry);
    }

    /// The node pinged before eviction answered: it stays (most recently seen); the candidate
    /// goes to the replacement cache.
    pub fn on_alive(&mut self, now: Instant, id: &NodeId) {
        let Some(i) = self.bucket_index(id) else { return };
        let cap = self.cfg.replacements;
        let Some(bucket) = self.buckets.get_mut(i) else { return };
        if let Some(pos) = bucket.entries.iter().position(|e| e.id() == *id) {
            let mut e = bucket.entries.remove(pos);
            e.last_seen = now;
            // Alive again: earlier misses no longer count toward its removal.
            e.failures = 0;
            e.failed_at = None;
            bucket.entries.push(e);
        }
        if bucket.pending.as_ref().is_some_and(|b| b.0 == *id)
            && let Some(waiting) = bucket.pending.take()
        {
            Self::cache(bucket, waiting.1, cap);
        }
    }

    /// A node failed to answer: it is removed and replaced by the waiting candidate or the
    /// freshest replacement that passes the diversity limits.
    pub fn on_failed(&mut self, id: &NodeId) -> Option<NodeId> {
        let i = self.bucket_index(id)?;
        let bucket = self.buckets.get_mut(i)?;
        let pos = bucket.entries.iter().position(|e| e.id() == *id);
        let pending = if bucket.pending.as_ref().is_some_and(|b| b.0 == *id) { bucket.pending.take() } else { None };
        let removed = pos.map(|p| bucket.entries.remove(p));
        if let Some(r) = &removed {
            self.len -= 1;
            self.count_subnet(r.addr, false);
        } else {
            // Not in the table: forget it in the replacement cache too.
            if let Some(b) = self.buckets.get_mut(i) {
                b.replacements.retain(|e| e.id() != *id);
            }
            return None;
        }
        let mut candidates: Vec<Entry> = pending.map(|b| b.1).into_iter().collect();
        if let Some(b) = self.buckets.get_mut(i) {
            candidates.extend(b.replacements.drain(..).rev());
        }
        let mut added = None;
        let mut rest = Vec::new();
        for c in candidates {
            // A waiting candidate may have entered meanwhile through the replacement cache.
            if self.buckets.get(i).is_some_and(|b| b.entries.iter().any(|e| e.id() == c.id())) {
                continue;
            }
            let ok = added.is_none() && self.buckets.get(i).is_some_and(|b| self.diversity_ok(b, c.addr));
            if ok {
                added = Some(c.id());
                let addr = c.addr;
                if let Some(b) = self.buckets.get_mut(i) {
                    b.entries.push(c);
                }
                self.len += 1;
                self.count_subnet(addr, true);
            } else {
                rest.push(c);
            }
        }
        if let Some(b) = self.buckets.get_mut(i) {
            // Keep the remaining replacements, freshest last.
            b.replacements = rest.into_iter().rev().collect();
        }
        added
    }

    /// A request to `id`, sent at `sent`, failed at `now`. It counts only if the node has not
    /// proved alive since the request left, and only once per `spacing`: the requests of a burst
    /// that time out together (the node, or we, were busy for a moment) are one failure, not
    /// many. After `max_failures` counted failures the node is removed as by `on_failed`;
    /// returns whether it was removed.
    pub fn record_failure(
        &mut self,
        now: Instant,
        sent: Instant,
        id: &NodeId,
        max_failures: u32,
        spacing: Duration,
    ) -> bool {
        let Some(i) = self.bucket_index(id) else { return false };
        let Some(b) = self.buckets.get_mut(i) else { return false };
        let Some(e) = b.entries.iter_mut().find(|e| e.id() == *id) else { return false };
        if e.last_seen > sent || e.failed_at.is_some_and(|t| now.saturating_duration_since(t) < spacing) {
            return false;
        }
        e.failed_at = Some(now);
        e.failures += 1;
        if e.failures >= max_failures {
            self.on_failed(id);
            return true;
        }
        false
    }

    /// Removes `id` outright (e.g. it presented an invalid record).
    pub fn remove(&mut self, id: &NodeId) {
        let _ = self.on_failed(id);
    }

    /// Up to `n` entries closest to `target`, closest first.
    pub fn closest(&self, target: &NodeId, n: usize) -> Vec<Entry> {
        self.nearest(target, n, None).into_iter().cloned().collect()
    }

    /// The records of up to `n` entries closest to `target` other than `except`, closest first
    /// (what a `Nodes` answer carries; only those records are cloned).
    pub fn closest_records(&self, target: &NodeId, n: usize, except: &NodeId) -> Vec<NodeRecord> {
        self.nearest(target, n, Some(except)).into_iter().map(|e| e.record.clone()).collect()
    }

    /// Distances computed once and a partial selection: this runs for every FindNode served.
    fn nearest(&self, target: &NodeId, n: usize, except: Option<&NodeId>) -> Vec<&Entry> {
        let mut all: Vec<(crate::identity::Distance, &Entry)> = self
            .buckets
            .iter()
            .flat_map(|b| b.entries.iter())
            .filter(|e| except != Some(&e.id()))
            .map(|e| (target.distance(&e.id()), e))
            .collect();
        let n = n.min(all.len());
        if n == 0 {
            return Vec::new();
        }
        if n < all.len() {
            all.select_nth_unstable_by(n - 1, |a, b| a.0.cmp(&b.0));
            all.truncate(n);
        }
        all.sort_unstable_by_key(|a| a.0);
        all.into_iter().map(|(_, e)| e).collect()
    }

    /// Ids of up to `n` entries closest to `target`, closest first (no entries cloned).
    pub fn closest_ids(&self, target: &NodeId, n: usize) -> Vec<NodeId> {
        let mut best: Vec<(crate::identity::Distance, NodeId)> = Vec::with_capacity(n + 1);
        for e in self.buckets.iter().flat_map(|b| b.entries.iter()) {
            let id = e.id();
            let d = target.distance(&id);
            if best.len() == n && best.last().is_some_and(|(worst, _)| d >= *worst) {
                continue;
            }
            let at = best.partition_point(|(x, _)| *x < d);
            best.insert(at, (d, id));
            best.truncate(n);
        }
        best.into_iter().map(|(_, id)| id).collect()
    }

    /// All entries, bucket by bucket.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.buckets.iter().flat_map(|b| b.entries.iter())
    }

    /// Buckets that hold nodes (or sit below the deepest non-empty one) and were not touched
    /// for `bucket_refresh`; each should get a lookup for a random id inside it.
    pub fn stale_buckets(&self, now: Instant) -> Vec<usize> {
        let deepest = self.buckets.iter().rposition(|b| !b.entries.is_empty());
        let Some(top) = deepest else { return Vec::new() };
        let lowest = self.buckets.iter().position(|b| !b.entries.is_empty()).unwrap_or(top);
        (lowest..=top)
            .filter(|&i| {
                self.buckets.get(i).is_some_and(|b| {
                    b.last_touched.is_none_or(|t| now.saturating_duration_since(t) >= self.cfg.bucket_refresh)
                })
            })
            .collect()
    }

    /// Marks a bucket as refreshed (a lookup into it started).
    pub fn touch(&mut self, i: usize, now: Instant) {
        if let Some(b) = self.buckets.get_mut(i) {
            b.last_touched = Some(now);
        }
    }

    /// A random id that falls into bucket `i`, from 32 random bytes.
    pub fn id_in_bucket(&self, i: usize, random: [u8; 32]) -> NodeId {
        // Distance with its highest set bit at position i (counting from the least significant).
        let mut d = random;
        let lz = 255 - i; // leading zero bits of the distance
        for bit in 0..lz {
            if let Some(b) = d.get_mut(bit / 8) {
                *b &= !(0x80u8 >> (bit % 8));
            }
        }
        if let Some(b) = d.get_mut(lz / 8) {
            *b |= 0x80u8 >> (lz % 8);
        }
        let mut id = [0u8; 32];
        for (o, (a, b)) in id.iter_mut().zip(self.local.0.iter().zip(d.iter())) {
            *o = a ^ b;
        }
        NodeId(id)
    }

    /// Diversity bookkeeping: nodes per subnet (for tests and metrics).
    pub fn subnet_counts(&self) -> Vec<usize> {
        self.subnets.values().copied().collect()
    }

    /// The configuration.
    pub fn config(&self) -> &RoutingConfig {
        &self.cfg
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use crate::wire::WireAddr;
    use proptest::prelude::*;

    fn entry(seed: [u8; 32], addr: SocketAddr, now: Instant) -> Entry {
        let rec = Identity::from_seed(seed).make_record(1, 0, &[WireAddr::from(addr)]).unwrap();
        Entry { record: rec, addr, last_seen: now, failures: 0, failed_at: None }
    }

    fn seed(n: u32) -> [u8; 32] {
        let mut s = [0u8; 32];
        s[..4].copy_from_slice(&n.to_le_bytes());
        s[31] = 1;
        s
    }

    fn addr(n: u32) -> SocketAddr {
        // Each node in its own /24 so diversity never interferes unless a test wants it to.
        SocketAddr::from(([10, (n >> 8) as u8, n as u8, 1], 4000))
    }

    #[test]
    fn ping_before_evict_and_replacement() {
        let now = Instant::now();
        let local = Identity::from_seed([0; 32]).id();
        let mut t = RoutingTable::new(local, RoutingConfig { k: 2, ..RoutingConfig::default() });
        // Fill one bucket (the far half: bucket 255) with k nodes, then offer a third.
        let mut far = Vec::new();
        for n in 0..200u32 {
            let e = entry(seed(n), addr(n), now);
            if t.bucket_index(&e.id()) == Some(255) {
                far.push(e);
            }
            if far.len() == 4 {
                break;
            }
        }
        assert_eq!(t.insert(now, far[0].clone()), Insert::Added);
        assert_eq!(t.insert(now, far[1].clone()), Insert::Added);
        assert_eq!(t.insert(now, far[2].clone()), Insert::PingFirst { ping: far[0].id() });
        assert_eq!(t.insert(now, far[3].clone()), Insert::Cached);
        // The pinged node answers: it stays, the candidate is cached.
        t.on_alive(now, &far[0].id());
        assert!(t.get(&far[0].id()).is_some());
        assert!(t.get(&far[2].id()).is_none());
        // far[1] is now least recently seen; it fails: the freshest replacement takes its place.
        assert_eq!(t.insert(now, far[2].clone()), Insert::PingFirst { ping: far[1].id() });
        assert_eq!(t.on_failed(&far[1].id()), Some(far[2].id()));
        assert_eq!(t.len(), 2);
        assert!(t.get(&far[1].id()).is_none());
    }

    #[test]
    fn timeouts_together_count_once_and_a_node_heard_since_is_not_failed() {
        let t0 = Instant::now();
        let local = Identity::from_seed([0; 32]).id();
        let mut t = RoutingTable::new(local, RoutingConfig::default());
        let e = entry(seed(1), addr(1), t0);
        let id = e.id();
        assert_eq!(t.insert(t0, e), Insert::Added);
        let spacing = Duration::from_secs(1);
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // Ten requests sent together time out together: one failure, not ten.
        for _ in 0..10 {
            assert!(!t.record_failure(at(2000), at(1), &id, 2, spacing));
        }
        assert_eq!(t.get(&id).map(|e| e.failures), Some(1));
        // It spoke after this request left: the timeout is not held against it.
        t.on_alive(at(2500), &id);
        assert!(!t.record_failure(at(4000), at(2000), &id, 2, spacing));
        assert_eq!(t.get(&id).map(|e| e.failures), Some(0));
        // Failures spread over time remove it.
        assert!(!t.record_failure(at(6000), at(4000), &id, 2, spacing));
        assert!(t.record_failure(at(8000), at(6000), &id, 2, spacing));
        assert!(t.get(&id).is_none());
    }

    #[test]
    fn diversity_limits_apply_to_public_addresses_and_to_local_ones_when_asked() {
        let now = Instant::now();
        let local = Identity::from_seed([0; 32]).id();
        let fill = |cfg: RoutingConfig, at: &dyn Fn(u32) -> SocketAddr| {
            let mut t = RoutingTable::new(local, cfg);
            let added = (0..100u32).filter(|&n| t.insert(now, entry(seed(n), at(n), now)) == Insert::Added).count();
            assert!(t.subnet_counts().iter().all(|&c| c <= 10));
            added
        };
        let public = |n: u32| SocketAddr::from(([192, 0, 2, (n % 250) as u8 + 1], 4000 + n as u16));
        assert!(fill(RoutingConfig::default(), &public) <= 10, "a public /24 is limited by default");
        let locals: [&dyn Fn(u32) -> SocketAddr; 5] = [
            &|n| SocketAddr::from(([127, 0, 0, 1], 5000 + n as u16)),
            &|n| SocketAddr::from(([10, 99, 0, (n % 250) as u8 + 1], 4433)),
            &|n| SocketAddr::from(([192, 168, 1, (n % 250) as u8 + 1], 4433)),
            &|n| SocketAddr::from(([169, 254, 7, (n % 250) as u8 + 1], 4433)),
            &|n| SocketAddr::new(IpAddr::from([0xfd00, 0, 0, 0, 0, 0, 0, n as u16 + 1]), 4433),
        ];
        for at in locals {
            assert!(fill(RoutingConfig::default(), at) > 10, "{} is exempt by default", at(0));
            let limited = RoutingConfig { exempt_local: false, ..RoutingConfig::default() };
            assert!(fill(limited, at) <= 10, "{} is limited when asked", at(0));
        }
        assert!(!is_local(IpAddr::from([198, 18, 0, 2])));
        assert!(!is_local(IpAddr::from([100, 64, 0, 1])), "carrier-grade NAT space is shared, not a LAN");
        assert!(is_local(IpAddr::from([0, 0, 0, 0, 0, 0xffff, 0x0a00, 1])), "IPv4-mapped 10.0.0.1");
    }

    #[test]
    fn a_node_moving_into_a_full_subnet_leaves_the_table() {
        // Found by the routing_ops fuzz target: a move used to skip the subnet limits.
        let now = Instant::now();
        let local = Identity::from_seed([0; 32]).id();
        let mut t = RoutingTable::new(local, RoutingConfig { per_table_subnet: 2, ..RoutingConfig::default() });
        let full = |n: u32| SocketAddr::from(([192, 0, 2, 1], 4000 + n as u16));
        assert_eq!(t.insert(now, entry(seed(1), full(1), now)), Insert::Added);
        assert_eq!(t.insert(now, entry(seed(2), full(2), now)), Insert::Added);
        assert_eq!(t.insert(now, entry(seed(3), addr(3), now)), Insert::Added);
        assert_eq!(t.insert(now, entry(seed(3), full(3), now)), Insert::Refused(Refusal::Diversity));
        assert_eq!(t.len(), 2);
        assert!(t.subnet_counts().iter().all(|&c| c <= 2));
        // Moving within its own subnet is a plain update.
        assert_eq!(t.insert(now, entry(seed(1), full(9), now)), Insert::Updated);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn id_in_bucket_lands_there() {
        let local = Identity::from_seed([3; 32]).id();
        let t = RoutingTable::new(local, RoutingConfig::default());
        for i in [0usize, 1, 7, 8, 100, 254, 255] {
            assert_eq!(t.bucket_index(&t.id_in_bucket(i, [0xa5; 32])), Some(i));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Whatever is inserted and failed: never more than k per bucket, the count is right,
        /// each node sits in its own bucket, diversity limits hold, and `closest` is sorted.
        #[test]
        fn invariants_hold(ops in proptest::collection::vec((0u32..300, 0u8..4, any::<bool>()), 1..400), target in any::<[u8; 32]>()) {
            let now = Instant::now();
            let local = Identity::from_seed([9; 32]).id();
            // Private addresses, with the limits applied to them (they are exempt by default).
            let cfg = RoutingConfig { k: 4, replacements: 3, exempt_local: false, ..RoutingConfig::default() };
            let mut t = RoutingTable::new(local, cfg.clone());
            for (n, net, fail) in ops {
                let e = entry(seed(n), SocketAddr::from(([10, net, (n % 7) as u8, 1], 4000)), now);
                if fail { t.on_failed(&e.id()); } else if let Insert::PingFirst { ping } = t.insert(now, e) {
                    if n % 2 == 0 { t.on_alive(now, &ping); } else { t.on_failed(&ping); }
                }
            }
            let mut total = 0;
            for (i, b) in t.buckets.iter().enumerate() {
                prop_assert!(b.entries.len() <= cfg.k);
                for e in &b.entries {
                    prop_assert_eq!(t.bucket_index(&e.id()), Some(i));
                    let same = b.entries.iter().filter(|x| subnet(x.addr.ip()) == subnet(e.addr.ip())).count();
                    prop_assert!(same <= cfg.per_bucket_subnet);
                }
                total += b.entries.len();
            }
            prop_assert_eq!(total, t.len());
            prop_assert!(t.subnet_counts().iter().all(|&c| c <= cfg.per_table_subnet));
            let target = NodeId(target);
            let c = t.closest(&target, 1000);
            prop_assert_eq!(c.len(), t.len());
            for w in c.windows(2) {
                prop_assert!(target.distance(&w[0].id()) < target.distance(&w[1].id()));
            }
        }
    }
}
