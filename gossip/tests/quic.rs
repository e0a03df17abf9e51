#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
//! The QUIC transport on a shared socket: identities are proven both ways, impostors refused, and
//! DHT datagrams on the same port still reach the DHT side.

use std::sync::Arc;
use std::time::Duration;

use suprnova_dht::Identity;
use suprnova_gossip::net::{ConnectError, IncomingStream, Transport, TransportOptions, kind, peer_id};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

async fn transport(
    seed: u8,
) -> (Transport, mpsc::Receiver<IncomingStream>, mpsc::Receiver<(std::net::SocketAddr, Vec<u8>)>, std::net::SocketAddr)
{
    let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let addr = socket.local_addr().unwrap();
    let (dht_tx, dht_rx) = mpsc::channel(16);
    let (t, streams) = Transport::new(
        &Identity::from_seed([seed; 32]),
        suprnova_dht::pathio::PathSocket::new(socket, Default::default()),
        dht_tx,
        TransportOptions::default(),
    )
    .unwrap();
    (t, streams, dht_rx, addr)
}

#[tokio::test]
async fn peers_prove_their_ids_and_impostors_are_refused() {
    let (a, _sa, _da, _) = transport(1).await;
    let (b, mut sb, _db, b_addr) = transport(2).await;
    let id_b = Identity::from_seed([2; 32]).id();
    let id_c = Identity::from_seed([3; 32]).id();

    // B's address, but the NodeId of C: B cannot prove C's key, the handshake fails.
    let err = a.connect(id_c, &[b_addr]).await.unwrap_err();
    assert!(matches!(err, ConnectError::Handshake(_) | ConnectError::WrongPeer(_)), "{err:?}");
    assert_eq!(a.stats().connect_failures.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert!(a.connection(&id_c).is_none());

    // The right id works, and B learns A's id from A's certificate.
    let conn = a.connect(id_b, &[b_addr]).await.unwrap();
    assert_eq!(peer_id(&conn), Some(id_b));
    let mut s = conn.open_uni().await.unwrap();
    s.write_all(&[kind::MESSAGE, 9, 9]).await.unwrap();
    s.finish().unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), sb.recv()).await.unwrap().unwrap();
    match got {
        IncomingStream::Uni { from, kind: k, mut recv } => {
            assert_eq!(from, Identity::from_seed([1; 32]).id());
            assert_eq!(k, kind::MESSAGE);
            assert_eq!(recv.read_to_end(16).await.unwrap(), vec![9, 9]);
        }
        other => panic!("{other:?}"),
    }
    // Reuse: a second connect returns the same connection.
    let again = a.connect(id_b, &[b_addr]).await.unwrap();
    assert_eq!(again.stable_id(), conn.stable_id());
    assert_eq!(b.connection_count(), 1);
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn non_quic_datagrams_go_to_the_dht_side() {
    let (a, _sa, mut da, a_addr) = transport(4).await;
    let (b, _sb, _db, b_addr) = transport(5).await;
    // Bring up a QUIC connection so the endpoint is busy reading too.
    let _c = b.connect(a.id(), &[a_addr]).await.unwrap();
    let probe = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for i in 0..10u8 {
        probe.send_to(&[0x01, i], a_addr).await.unwrap();
    }
    let mut got = Vec::new();
    while got.len() < 10 {
        let (from, d) = tokio::time::timeout(Duration::from_secs(5), da.recv()).await.unwrap().unwrap();
        assert_eq!(from, probe.local_addr().unwrap());
        got.push(d[1]);
    }
    assert_eq!(got, (0..10).collect::<Vec<u8>>());
    let d = a.demux_stats();
    assert_eq!(d.dht.load(std::sync::atomic::Ordering::Relaxed), 10);
    assert!(d.quic.load(std::sync::atomic::Ordering::Relaxed) > 0);
    let _ = b_addr;
}
