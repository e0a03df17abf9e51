//! Direct messages and requests between nodes, over QUIC streams to a peer found by id.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use suprnova_dht::NodeId;
use suprnova_dht::identity::capability;
use suprnova_dht::wire::{Key, Record};
use tokio::sync::mpsc;

use suprnova_gossip::net::kind;

use crate::direct::{read_sized, status, write_sized};
use crate::{ConnectionEvent, Direct, Node, NodeError, StreamError};

/// Finds relayed paths for the transport, without keeping the node alive.
pub(crate) struct RelayResolver(pub(crate) std::sync::Weak<crate::Inner>);

impl suprnova_gossip::net::Resolve for RelayResolver {
    fn relayed(&self, peer: NodeId) -> Pin<Box<dyn Future<Output = Option<SocketAddr>> + Send>> {
        let inner = self.0.upgrade();
        Box::pin(async move { Node { inner: inner? }.relayed(peer).await.ok() })
    }
}

impl Node {
    /// Addresses of `peer`: known, or found with a DHT lookup; a node behind NAT (its record
    /// says `PRIVATE`, or the lookup did not reach it) through a relay circuit (wire-spec §15.5).
    async fn resolve(&self, peer: NodeId) -> Result<Vec<SocketAddr>, NodeError> {
        if let Some(a) = self.inner.addrs.lock().ok().and_then(|m| m.get(&peer).cloned()) {
            return Ok(a);
        }
        let found = self.inner.dht.find_node(peer).await?;
        let public = |f: &&suprnova_dht::lookup::Found| f.record.capabilities & capability::PRIVATE == 0;
        if let Some(f) = found.nodes.iter().find(|f| f.record.id == peer).filter(public) {
            self.learn(peer, vec![f.addr]);
            return Ok(vec![f.addr]);
        }
        Ok(vec![self.relayed(peer).await?])
    }

    /// A relay circuit to `peer`: its reach record names the relays; the first that opens one
    /// gives the virtual address that reaches it.
    pub async fn relayed(&self, peer: NodeId) -> Result<SocketAddr, NodeError> {
        let got = self.inner.dht.get(Key::for_reach(&peer)).await.map_err(|_| NodeError::UnknownPeer(peer))?;
        let Record::Reach(reach) = got.record else { return Err(NodeError::UnknownPeer(peer)) };
        for relay in reach.relays.iter() {
            match self.inner.dht.connect_via(relay.clone(), peer).await {
                Ok(path) => return Ok(path),
                Err(e) => tracing::info!(peer = %peer.short(), relay = %relay.id.short(), error = %e, "no circuit"),
            }
        }
        Err(NodeError::NoRelayPath { peer, tried: reach.relays.len() })
    }

    async fn connect(&self, peer: NodeId) -> Result<quinn::Connection, NodeError> {
        if let Some(c) = self.inner.transport.connection(&peer) {
            return Ok(c);
        }
        let addrs = self.resolve(peer).await?;
        match self.inner.transport.connect(peer, &addrs).await {
            Ok(c) => Ok(c),
            Err(e) => {
                // The address may be stale: forget it so the next attempt looks the peer up.
                if let Ok(mut m) = self.inner.addrs.lock() {
                    m.remove(&peer);
                }
                Err(e.into())
            }
        }
    }

    /// Connection events (a QUIC connection to a peer came up or went down) from now on.
    pub fn events(&self) -> tokio::sync::broadcast::Receiver<ConnectionEvent> {
        self.inner.transport.events()
    }

    // ---- direct messages ----------------------------------------------------------------------

    /// Takes the stream of direct messages and requests sent to this node (once; later calls get
    /// `None`). Until it is taken, requests are answered as refused once the queue is full.
    pub async fn incoming(&self) -> Option<mpsc::Receiver<Direct>> {
        self.inner.incoming.lock().await.take()
    }

    /// Sends `data` to `peer` on a new one-way stream (the connection is reused).
    pub async fn send(&self, peer: NodeId, data: &[u8]) -> Result<(), NodeError> {
        let max = self.inner.cfg.max_message_size;
        if data.len() > max {
            return Err(NodeError::too_large(data.len(), max));
        }
        let conn = self.connect(peer).await?;
        let mut s = conn.open_uni().await?;
        s.write_all(&[kind::MESSAGE]).await?;
        write_sized(&mut s, data).await?;
        s.finish()?;
        Ok(())
    }

    /// Sends a request to `peer` and waits for its answer (at most `request_timeout`).
    pub async fn request(&self, peer: NodeId, data: &[u8]) -> Result<Vec<u8>, NodeError> {
        let t = self.inner.cfg.request_timeout;
        tokio::time::timeout(t, self.request_inner(peer, data)).await.map_err(|_| NodeError::Timeout)?
    }

    async fn request_inner(&self, peer: NodeId, data: &[u8]) -> Result<Vec<u8>, NodeError> {
        let max = self.inner.cfg.max_message_size;
        if data.len() > max {
            return Err(NodeError::too_large(data.len(), max));
        }
        let (st, body) = self.exchange(peer, kind::REQUEST, data, max).await?;
        match st {
            status::OK => Ok(body),
            status::BUSY => Err(NodeError::Busy),
            status::TOO_LARGE => Err(NodeError::too_large(data.len(), max)),
            _ => Err(NodeError::Refused { code: None }),
        }
    }

    /// One bidirectional exchange with `peer` (wire-spec §12.3): kind byte, sized body, FIN; then
    /// the status byte and a sized response of at most `max` bytes.
    pub(crate) async fn exchange(
        &self,
        peer: NodeId,
        stream_kind: u8,
        body: &[u8],
        max: usize,
    ) -> Result<(u8, Vec<u8>), NodeError> {
        let conn = self.connect(peer).await?;
        let (mut s, mut r) = conn.open_bi().await?;
        s.write_all(&[stream_kind]).await?;
        write_sized(&mut s, body).await?;
        s.finish()?;
        let mut st = [0u8; 1];
        r.read_exact(&mut st).await?;
        let data = read_sized(&mut r, max).await.map_err(|big| {
            if big { NodeError::too_large(max + 1, max) } else { NodeError::Stream(StreamError::CutShort) }
        })?;
        let [st] = st;
        Ok((st, data))
    }
}
