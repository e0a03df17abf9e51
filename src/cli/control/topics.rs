//! Topic routes: `POST /v1/publish`, `/v1/subscribe` (a stream of JSON lines), `/v1/leave`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use suprnova_node::{Node, TopicEvent};

use super::{Answer, Fail, State, field, hex_field, http, ok};

pub(super) fn topic_name(v: &Value) -> Result<String, Fail> {
    let t = field(v, "topic")?;
    if t.is_empty() || t.len() > 256 {
        return Err(Fail::Bad("a topic name is 1 to 256 bytes".into()));
    }
    Ok(t.to_string())
}

pub(super) async fn publish(st: &State, v: Value) -> Answer {
    let name = topic_name(&v)?;
    let data = hex_field(&v, "data")?;
    let joined = st.topics.lock().map(|t| t.get(&name).is_some_and(|e| e.1 || e.0 > 0)).unwrap_or(false);
    if !joined {
        // Join as a publisher: the topic stays joined so later publishes go out at once.
        drop(st.node.subscribe(&name).await?);
        wait_for_neighbor(&st.node, &name, Duration::from_secs(3)).await;
    }
    if let Ok(mut t) = st.topics.lock() {
        t.entry(name.clone()).or_default().1 = true;
    }
    let bytes = data.len();
    let id = st.node.publish(&name, data).await?;
    let neighbors = st.node.topic_info(&name).await.map_or(0, |i| i.active.len());
    ok(json!({ "topic": name, "id": hex::encode(id), "bytes": bytes, "neighbors": neighbors }))
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Waits (bounded) until the topic has an active neighbour.
async fn wait_for_neighbor(node: &Node, name: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if node.topic_info(name).await.is_some_and(|i| !i.active.is_empty()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(super) async fn subscribe(st: Arc<State>, v: Value) -> Answer {
    let name = topic_name(&v)?;
    let mut sub = st.node.subscribe(&name).await?;
    if let Ok(mut t) = st.topics.lock() {
        t.entry(name.clone()).or_default().0 += 1;
    }
    let (resp, tx) = http::ndjson_stream();
    tokio::spawn(async move {
        let _ = tx.send(&json!({ "subscribed": name })).await;
        loop {
            let ev = tokio::select! {
                ev = sub.recv() => ev,
                () = tx.closed() => break,
            };
            let line = match ev {
                None => break,
                Some(TopicEvent::Message { origin, seq, payload }) => json!({
                    "topic": name,
                    "origin": origin.to_string(),
                    "seq": seq,
                    "data": hex::encode(&payload),
                    "received_unix_ms": unix_ms(),
                }),
                Some(TopicEvent::NeighborUp(p)) => json!({ "neighbor_up": p.to_string(), "unix_ms": unix_ms() }),
                Some(TopicEvent::NeighborDown(p)) => json!({ "neighbor_down": p.to_string(), "unix_ms": unix_ms() }),
            };
            if !tx.send(&line).await {
                break;
            }
        }
        drop(sub);
        // The last subscribe stream gone and no publish on it: leave the topic.
        let leave_now = st
            .topics
            .lock()
            .map(|mut t| {
                let e = t.entry(name.clone()).or_default();
                e.0 = e.0.saturating_sub(1);
                let idle = e.0 == 0 && !e.1;
                if idle {
                    t.remove(&name);
                }
                idle
            })
            .unwrap_or(false);
        if leave_now {
            st.node.leave(&name).await;
        }
    });
    Ok(resp)
}

pub(super) async fn leave(st: &State, v: Value) -> Answer {
    let name = topic_name(&v)?;
    let was = st.topics.lock().map(|mut t| t.remove(&name).is_some()).unwrap_or(false);
    st.node.leave(&name).await;
    ok(json!({ "topic": name, "left": was }))
}
