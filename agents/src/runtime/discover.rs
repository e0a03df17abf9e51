//! Discovery: reading the capability / kind sets (or the spatial index) and sifting them.

use super::*;

impl Runtime {
    /// Finds the agents matching `criteria`: reads the 16 buckets of its first capability's set
    /// (or its kind's) in parallel, one round of lookups, and sifts them. A query that names
    /// only a position reads the mesh's spatial index instead (agents are then reported with
    /// their kind only).
    pub async fn discover(&self, criteria: &Criteria) -> Result<Discovery, DiscoverError> {
        self.inner.counters.discoveries.fetch_add(1, Ordering::Relaxed);
        let Some(keys) = criteria.keys() else {
            return self.discover_near(criteria).await;
        };
        let mut set = JoinSet::new();
        for (b, k) in keys.into_iter().enumerate() {
            let node = self.inner.node.clone();
            set.spawn(async move { (b, node.get_set(Key(k)).await) });
        }
        let mut sifter = Sifter::new(criteria, unix_ms(), ms(self.inner.cfg.announce_ttl), ms(self.inner.cfg.max_skew));
        let mut d = Discovery { complete: true, ..Discovery::default() };
        let mut last_err = None;
        let mut read = 0;
        while let Some(r) = set.join_next().await {
            let Ok((b, r)) = r else { continue };
            d.lookups += 1;
            match r {
                Ok(entries) => {
                    read += 1;
                    d.entries += entries.len();
                    // A set keeps 64 writers; one this full may have evicted some.
                    if entries.len() >= 60 {
                        d.complete = false;
                    }
                    sifter.add(u8::try_from(b).unwrap_or(u8::MAX), &entries);
                }
                Err(NodeError::NotFound) => read += 1,
                Err(e) => {
                    d.complete = false;
                    last_err = Some(e);
                }
            }
        }
        if read == 0 {
            return Err(DiscoverError::Unreachable(last_err.unwrap_or(NodeError::NoPeers)));
        }
        d.drops = sifter.drops;
        let c = &self.inner.counters;
        c.discovery_malformed.fetch_add(d.drops.malformed, Ordering::Relaxed);
        c.discovery_stale.fetch_add(d.drops.stale, Ordering::Relaxed);
        c.discovery_misplaced.fetch_add(d.drops.misplaced, Ordering::Relaxed);
        d.agents = sifter.finish();
        for f in &d.agents {
            let addrs: Vec<_> = f.announcement.addrs.iter().map(WireAddr::to_socket_addr).collect();
            if !addrs.is_empty() {
                self.inner.node.add_address(NodeId(f.announcement.node), addrs);
            }
        }
        Ok(d)
    }

    pub(super) async fn discover_near(&self, criteria: &Criteria) -> Result<Discovery, DiscoverError> {
        let spatial = lock(&self.inner.spatial).clone();
        let (Some(s), Some((centre, radius))) = (spatial, criteria.near) else {
            return Err(DiscoverError::TooBroad);
        };
        let near = s.query_local(centre, radius).await.map_err(DiscoverError::Spatial)?;
        let mut d = Discovery { complete: near.complete, lookups: near.cells_read as usize, ..Discovery::default() };
        d.entries = near.agents.len();
        for n in near.agents {
            let kind = String::from_utf8_lossy(&n.info).into_owned();
            let Some(kind_b) = wire::bounded(&kind) else { continue };
            let a = Announcement {
                node: n.node,
                addrs: Default::default(),
                kind: kind_b,
                capabilities: Default::default(),
                resources: Default::default(),
                position: Some(n.position),
                time_ms: n.seq,
            };
            d.agents.push(crate::discovery::Found { agent: n.agent, announcement: a });
        }
        if criteria.limit > 0 {
            d.agents.truncate(criteria.limit);
        }
        Ok(d)
    }

    // ---- messages -----------------------------------------------------------------------------
}
