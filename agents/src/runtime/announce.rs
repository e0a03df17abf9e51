//! Announcing agents in the DHT (their capability, kind and swarm sets), refreshing and
//! withdrawing them, and reading the announcement topic.

use super::*;

impl Runtime {
    pub(super) fn announcement(&self, p: &Profile) -> Option<Announcement> {
        let addrs: Vec<WireAddr> =
            self.inner.node.contact_addrs().into_iter().take(wire::MAX_ADDRS).map(WireAddr::from).collect();
        let caps = p.capabilities.iter().map(|c| wire::bounded(c)).collect::<Option<Vec<_>>>()?;
        let a = Announcement {
            node: self.inner.node.id().0,
            addrs: addrs.try_into().ok()?,
            kind: wire::bounded(&p.kind)?,
            capabilities: caps.try_into().ok()?,
            resources: p.resources,
            position: p.position,
            time_ms: unix_ms(),
        };
        a.check().ok()?;
        Some(a)
    }

    /// Writes `agent`'s announcement in its kind's and capabilities' sets (and its presence in
    /// the spatial index, and on the announce topic). Returns how many set entries were stored.
    pub async fn announce(&self, agent: &Identity, profile: &Profile) -> usize {
        let Some(a) = self.announcement(profile) else {
            tracing::debug!("announcement over its size limit");
            return 0;
        };
        self.inner.counters.announced.fetch_add(1, Ordering::Relaxed);
        let pk = agent.public_key();
        let b = bucket(&pk);
        let value = wire::encode(&a);
        let ttl = self.inner.cfg.announce_ttl;
        let ttl_s = u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX);
        let mut keys = vec![kind_key(&profile.kind, b)];
        keys.extend(profile.capabilities.iter().map(|c| capability_key(c, b)));
        let mut set = JoinSet::new();
        for k in keys {
            let Ok(entry) = SetEntry::sign(agent, &Key(k), a.time_ms, ttl_s, &value) else { continue };
            let node = self.inner.node.clone();
            set.spawn(async move { node.put_once(Key(k), Record::SetEntry(entry), ttl).await });
        }
        let mut stored = 0;
        while let Some(r) = set.join_next().await {
            self.inner.counters.announce_writes.fetch_add(1, Ordering::Relaxed);
            match r {
                Ok(Ok(o)) if o.stored > 0 => stored += 1,
                _ => {
                    self.inner.counters.announce_failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let spatial = lock(&self.inner.spatial).clone();
        if let (Some(s), Some(p)) = (spatial, profile.position) {
            let info = profile.kind.as_bytes();
            if let Err(e) = s.announce_position(agent, p, info).await {
                tracing::debug!(error = %e, "presence not announced");
            }
        }
        if self.inner.cfg.announce_topic {
            let signed = SignedAnnouncement::sign(agent, a);
            let _ = self.inner.node.publish(ANNOUNCE_TOPIC, wire::encode(&signed)).await;
        }
        stored
    }

    /// Re-announces hosted agent `agent` with `profile` (as [`Ctx::announce`] does), withdrawing
    /// it from the sets it no longer belongs to; returns the set entries stored.
    pub async fn reannounce(&self, agent: &AgentId, profile: Profile) -> Result<usize, RuntimeError> {
        let h = self.hosted(agent).ok_or(RuntimeError::Stopped)?;
        let p = normalise(profile)?;
        let old = std::mem::replace(&mut *lock(&h.profile), p.clone());
        self.withdraw_from(&h.identity, &old, &p).await;
        Ok(if p.announce { self.announce(&h.identity, &p).await } else { 0 })
    }

    /// Writes withdrawals (empty values) over the agent's entries in the sets of `old` that
    /// `new` no longer names (a kind or capabilities it dropped, or all when it stops
    /// announcing).
    pub(super) async fn withdraw_from(&self, agent: &Identity, old: &Profile, new: &Profile) {
        if !old.announce {
            return;
        }
        let b = bucket(&agent.public_key());
        let mut keys = Vec::new();
        if !new.announce || old.kind != new.kind {
            keys.push(kind_key(&old.kind, b));
        }
        for c in &old.capabilities {
            if !new.announce || !new.capabilities.contains(c) {
                keys.push(capability_key(c, b));
            }
        }
        let ttl = self.inner.cfg.announce_ttl;
        let ttl_s = u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX);
        let seq = unix_ms();
        let mut set = JoinSet::new();
        for k in keys {
            let Ok(entry) = SetEntry::sign(agent, &Key(k), seq, ttl_s, &[]) else { continue };
            let node = self.inner.node.clone();
            set.spawn(async move { node.put_once(Key(k), Record::SetEntry(entry), ttl).await });
        }
        while set.join_next().await.is_some() {}
    }

    pub(super) async fn refresher(self) {
        let every = self.inner.cfg.announce_ttl / 3;
        let mut interval = tokio::time::interval(every.max(Duration::from_secs(1)));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval.tick().await;
        loop {
            interval.tick().await;
            let hosted: Vec<Arc<Hosted>> = lock(&self.inner.agents).values().cloned().collect();
            let mut set = JoinSet::new();
            for h in hosted {
                let p = lock(&h.profile).clone();
                if !p.announce {
                    continue;
                }
                while set.len() >= self.inner.cfg.parallel {
                    let _ = set.join_next().await;
                }
                let rt = self.clone();
                set.spawn(async move { rt.announce(&h.identity, &p).await });
            }
            while set.join_next().await.is_some() {}
        }
    }

    pub(super) async fn announce_reader(self, mut sub: suprnova_node::Subscription) {
        while let Some(ev) = sub.recv().await {
            let TopicEvent::Message { payload, .. } = ev else { continue };
            let c = &self.inner.counters;
            match wire::decode::<SignedAnnouncement>(&payload) {
                Err(_) => {
                    c.drop_malformed.fetch_add(1, Ordering::Relaxed);
                }
                Ok(s) => match s.verify() {
                    Err(_) => {
                        c.drop_bad_announcement.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(()) => {
                        c.announcements_seen.fetch_add(1, Ordering::Relaxed);
                        let _ = self.inner.announcements.send(Arc::new(s));
                    }
                },
            }
        }
    }

    // ---- discovery ----------------------------------------------------------------------------
}
