//! The router of incoming QUIC streams: direct messages, requests and blob reads.

use std::sync::atomic::Ordering;

use tokio::sync::mpsc;

use suprnova_gossip::net::{IncomingStream, kind};
use tokio::sync::oneshot;

use crate::blobs::BlobRequest;
use crate::direct::{read_sized, status, write_response};
use crate::{Direct, Node, Responder};

impl Node {
    // ---- the router of incoming streams -------------------------------------------------------

    pub(crate) async fn route(self, mut streams: mpsc::Receiver<IncomingStream>, incoming: mpsc::Sender<Direct>) {
        while let Some(s) = streams.recv().await {
            let node = self.clone();
            let incoming = incoming.clone();
            match s {
                IncomingStream::Uni { from, kind: kind::GOSSIP, recv } => {
                    let topics = self.inner.topics.clone();
                    tokio::spawn(async move { topics.read_stream(from, recv).await });
                }
                IncomingStream::Uni { from, kind: kind::MESSAGE, mut recv } => {
                    tokio::spawn(async move {
                        let max = node.inner.cfg.max_message_size;
                        let deadline = node.inner.cfg.request_timeout;
                        let c = &node.inner.counters;
                        let read = tokio::time::timeout(deadline, read_sized(&mut recv, max)).await;
                        match read.unwrap_or(Err(false)) {
                            Ok(data) => {
                                c.direct_received.fetch_add(1, Ordering::Relaxed);
                                if incoming.try_send(Direct::Message { from, data }).is_err() {
                                    c.direct_dropped.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            Err(_) => drop(c.direct_dropped.fetch_add(1, Ordering::Relaxed)),
                        }
                    });
                }
                IncomingStream::Bi { from, kind: kind::REQUEST, mut send, mut recv } => {
                    tokio::spawn(async move {
                        let max = node.inner.cfg.max_message_size;
                        let deadline = node.inner.cfg.request_timeout;
                        let c = &node.inner.counters;
                        let read = tokio::time::timeout(deadline, read_sized(&mut recv, max)).await;
                        let data = match read.unwrap_or(Err(false)) {
                            Ok(d) => d,
                            Err(big) => {
                                c.direct_dropped.fetch_add(1, Ordering::Relaxed);
                                if big {
                                    let _ = write_response(&mut send, status::TOO_LARGE, &[]).await;
                                    let _ = send.finish();
                                }
                                return;
                            }
                        };
                        c.direct_received.fetch_add(1, Ordering::Relaxed);
                        if node.inner.stopping.load(Ordering::Relaxed) {
                            let _ = write_response(&mut send, status::REFUSED, &[]).await;
                            let _ = send.finish();
                            return;
                        }
                        let (tx, rx) = oneshot::channel();
                        let responder = Responder { tx };
                        if incoming.try_send(Direct::Request { from, data, responder }).is_err() {
                            c.direct_dropped.fetch_add(1, Ordering::Relaxed);
                            let _ = write_response(&mut send, status::BUSY, &[]).await;
                            let _ = send.finish();
                            return;
                        }
                        let timeout = node.inner.cfg.request_timeout;
                        let (st, body) = match tokio::time::timeout(timeout, rx).await {
                            Ok(Ok(body)) if body.len() <= max => (status::OK, body),
                            Ok(Ok(_)) => (status::TOO_LARGE, Vec::new()),
                            _ => (status::REFUSED, Vec::new()),
                        };
                        let _ = tokio::time::timeout(deadline, write_response(&mut send, st, &body)).await;
                        let _ = send.finish();
                    });
                }
                IncomingStream::Bi { kind: kind::BLOB, mut send, mut recv, .. } => {
                    tokio::spawn(async move {
                        // A reader that stalls does not hold the chunk for ever.
                        let deadline = node.inner.cfg.request_timeout;
                        let _ = tokio::time::timeout(deadline, node.serve_blob(&mut send, &mut recv)).await;
                    });
                }
                _ => {}
            }
        }
    }

    async fn serve_blob(&self, send: &mut quinn::SendStream, recv: &mut quinn::RecvStream) {
        if self.inner.stopping.load(Ordering::Relaxed) {
            let _ = write_response(send, status::REFUSED, &[]).await;
            let _ = send.finish();
            return;
        }
        let Ok(body) = read_sized(recv, 128).await else { return };
        let Some(req) = suprnova_gossip::wire::decode_canonical::<BlobRequest>(&body) else { return };
        let (hash, chunk) = match req {
            BlobRequest::Manifest(h) => (h, None),
            BlobRequest::Chunk(h, i) => (h, Some(i as usize)),
        };
        let Some(stored) = self.inner.blobs.get(&hash) else {
            let _ = write_response(send, status::REFUSED, &[]).await;
            let _ = send.finish();
            return;
        };
        let reply: Option<Vec<u8>> = match chunk {
            None => Some(stored.manifest_bytes.clone()),
            Some(i) => {
                let cs = stored.manifest.chunk_size as usize;
                let start = i.saturating_mul(cs);
                let end = start.saturating_add(cs).min(stored.data.len());
                let bytes = stored.data.get(start..end).filter(|s| !s.is_empty() || stored.data.is_empty());
                match (bytes, &self.inner.cfg.chunk_filter) {
                    (Some(b), Some(f)) => f.chunk(&hash, i, b.to_vec()),
                    (b, None) => b.map(<[u8]>::to_vec),
                    (None, Some(_)) => None,
                }
            }
        };
        match reply {
            Some(bytes) => {
                self.inner.counters.blob_served.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                let _ = write_response(send, status::OK, &bytes).await;
            }
            None => {
                let _ = write_response(send, status::REFUSED, &[]).await;
            }
        }
        let _ = send.finish();
    }
}
