//! Topics on the node: subscriptions, publishing, and the member-set work the topic core asks for
//! (`suprnova_gossip::proto::topic`: it decides when to announce, read, join and mix; the node only
//! carries out the DHT reads and writes and tells it when the DHT saw a former peer again).

use std::net::SocketAddr;
use std::time::Duration;

use suprnova_dht::NodeId;
use suprnova_gossip::net::MemberWork;
use suprnova_gossip::net::topics::{decode_contact, encode_contact};
use suprnova_gossip::wire::TopicId;
use tokio::sync::mpsc;

use crate::{MessageId, Node, NodeError, Subscription, TopicInfo};

/// How often the DHT's count of former peers that answered again is looked at.
const REVIVAL_CHECK: Duration = Duration::from_secs(2);

impl Node {
    /// Subscribes to the topic `name`: our signed entry goes into the topic's member set in the
    /// DHT and we join the overlay through members read there (this returns once that first read
    /// was answered, so a caller who waits for every subscriber can publish right away); both are
    /// kept fresh until [`Node::leave`].
    pub async fn subscribe(&self, name: &str) -> Result<Subscription, NodeError> {
        let topic = TopicId::from_name(name);
        let rx = self.inner.topics.subscribe(topic).await?;
        Ok(Subscription { topic, name: name.to_string(), rx })
    }

    /// Signs and broadcasts `payload` on topic `name` (we must be subscribed).
    pub async fn publish(&self, name: &str, payload: Vec<u8>) -> Result<MessageId, NodeError> {
        Ok(self.inner.topics.publish(TopicId::from_name(name), payload).await?)
    }

    /// Leaves topic `name`: neighbours are told, subscriptions end.
    pub async fn leave(&self, name: &str) {
        self.inner.topics.leave(TopicId::from_name(name)).await;
    }

    /// Views of topic `name`.
    pub async fn topic_info(&self, name: &str) -> Option<TopicInfo> {
        self.inner.topics.info(TopicId::from_name(name)).await
    }

    /// Carries out the topic core's member-set work until the driver stops, and tells the core
    /// whenever the DHT saw a former peer answer again (a partition may have healed).
    pub(crate) async fn member_work(self, mut work: mpsc::Receiver<MemberWork>) {
        // The DHT's counters are read only once a topic exists (the first member-set work).
        let mut revived: Option<u64> = None;
        let mut check = tokio::time::interval(REVIVAL_CHECK);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                w = work.recv() => {
                    let Some(w) = w else { return };
                    if revived.is_none() {
                        revived = Some(self.revivals().await);
                    }
                    self.dispatch(w, &mut work);
                }
                _ = check.tick() => {
                    let Some(before) = revived else { continue };
                    let now = self.revivals().await;
                    if now > before {
                        self.inner.topics.revived().await;
                    }
                    revived = Some(now);
                }
            }
        }
    }

    /// Starts one piece of member-set work. A read asked right after an announcement (a new
    /// subscription) waits for our entry to be written: two nodes that subscribe at once then
    /// see each other.
    fn dispatch(&self, w: MemberWork, work: &mut mpsc::Receiver<MemberWork>) {
        let MemberWork::Announce(topic) = w else {
            self.spawn_work(w);
            return;
        };
        let read = match work.try_recv() {
            Ok(MemberWork::Read(t, done)) if t == topic => Some(done),
            Ok(other) => {
                self.spawn_work(other);
                None
            }
            Err(_) => None,
        };
        let node = self.clone();
        tokio::spawn(async move {
            node.announce(topic).await;
            if let Some(done) = read {
                node.answer_read(topic).await;
                drop(done);
            }
        });
    }

    /// Carries out one piece of member-set work on its own task.
    fn spawn_work(&self, w: MemberWork) {
        let node = self.clone();
        tokio::spawn(async move {
            match w {
                MemberWork::Announce(topic) => node.announce(topic).await,
                MemberWork::Read(topic, done) => {
                    node.answer_read(topic).await;
                    drop(done);
                }
            }
        });
    }

    /// Reads `topic`'s member set and hands the members to the topic core.
    async fn answer_read(&self, topic: TopicId) {
        let members = self.read_members(topic).await;
        let _ = self.inner.topics.members_read(topic, members).await;
    }

    /// Writes our entry (our contact addresses) into `topic`'s member set.
    async fn announce(&self, topic: TopicId) {
        let contact = encode_contact(&self.contact_addrs());
        if let Err(e) = self.put_set_entry(topic.members_key(), &contact, self.inner.cfg.topic_entry_ttl).await {
            tracing::debug!(error = %e, "topic announce failed");
        }
    }

    /// The members in `topic`'s set with their addresses (none if the read failed).
    async fn read_members(&self, topic: TopicId) -> Vec<(NodeId, Vec<SocketAddr>)> {
        let Ok(entries) = self.get_set(topic.members_key()).await else { return Vec::new() };
        let me = self.id();
        entries
            .iter()
            .map(|e| (NodeId::from_public_key(&e.public_key), decode_contact(&e.value)))
            .filter(|(id, a)| *id != me && !a.is_empty())
            .collect()
    }

    /// Former DHT peers that answered again (`RejoinStatus::revived`).
    async fn revivals(&self) -> u64 {
        self.inner.dht.stats().await.map_or(0, |s| s.rejoin.revived)
    }
}
