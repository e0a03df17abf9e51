//! Relay and data-plane operation sequences: reservations, connects and closes from a handful of
//! peers and addresses, frames from anyone on any circuit, sends to virtual addresses, and time
//! passing. Invariants: every cap holds, a relay never sends more bytes than it received and only
//! to an address some `Open` named, and a frame is forwarded the same length.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::identity::NodeId;
use crate::path::{DataPlane, Inbound, PlaneConfig, PlaneOp, RelayConfig, RelayServer, virtual_addr};
use crate::wire::packet;

fn addr(b: u8) -> SocketAddr {
    SocketAddr::from(([198, 18, b % 6, 2], 4433 + u16::from(b % 3)))
}

/// Runs the operations encoded in `data` (4 bytes each).
pub fn relay_ops(data: &[u8]) {
    let t0 = Instant::now();
    let mut now = t0;
    let pcfg =
        PlaneConfig { max_legs: 8, max_auto_legs: 4, max_circuits: 6, circuit_burst: 4000, ..PlaneConfig::default() };
    let rcfg = RelayConfig {
        max_reservations: 4,
        max_reservations_per_ip: 2,
        max_circuits: 6,
        max_circuits_per_reservation: 3,
        max_circuits_per_initiator: 2,
        circuit_bytes_per_s: 2000,
        ..RelayConfig::default()
    };
    let mut plane = DataPlane::new(pcfg.clone(), t0);
    let mut relay = RelayServer::new(rcfg.clone());
    let mut named: HashSet<SocketAddr> = HashSet::new();
    let (mut bytes_in, mut bytes_out) = (0u64, 0u64);
    for op in data.chunks(4).take(1024) {
        let [k, x, y, z] = [0, 1, 2, 3].map(|i| op.get(i).copied().unwrap_or(0));
        let peer = NodeId([x % 8; 32]);
        match k % 8 {
            0 => {
                if let Ok((_, closes)) = relay.reserve(now, peer, addr(x), u32::from(y) * 4) {
                    for op in closes {
                        plane.apply(now, op);
                    }
                }
            }
            1 => {
                let ids = (u64::from(y % 16), u64::from(z % 16) + 16);
                if let Ok((_, op)) = relay.connect(now, peer, addr(x), NodeId([z % 8; 32]), ids) {
                    if let PlaneOp::Open { a, b, .. } = &op {
                        named.insert(a.0);
                        named.insert(b.0);
                    }
                    plane.apply(now, op);
                }
            }
            2 | 3 => {
                let inner = vec![0x45; usize::from(y) * 5];
                let Some(mut f) = packet::relayed(u64::from(z % 32), &inner) else { continue };
                if k % 8 == 3 {
                    f.truncate(usize::from(z));
                }
                let len = f.len();
                match plane.inbound(now, addr(x), &mut f) {
                    Inbound::Forward { to } => {
                        assert!(named.contains(&to), "forwarded to an address no Open named");
                        assert_eq!(f.len(), len);
                        bytes_in += len as u64;
                        bytes_out += f.len() as u64;
                    }
                    Inbound::Local { start, .. } => assert!(start <= len),
                    Inbound::Consumed | Inbound::Drop(_) => {}
                }
            }
            4 => plane.apply(now, PlaneOp::Reserved { relay: addr(x), until: now + Duration::from_secs(u64::from(y)) }),
            5 => plane.apply(now, PlaneOp::Leg { relay: addr(x), circuit: u64::from(y % 32), peer }),
            6 => {
                let _ = plane.outbound(now, virtual_addr(addr(x), u64::from(y % 32)), usize::from(z) * 8);
            }
            _ => {
                now += Duration::from_millis(u64::from(y) * 100);
                for op in relay.expire(now) {
                    plane.apply(now, op);
                }
                for ev in plane.take_events() {
                    if let crate::path::PlaneEvent::CircuitClosed { a, .. } = ev {
                        relay.closed(&a);
                    }
                }
            }
        }
        assert!(plane.legs().count() <= pcfg.max_legs);
        assert!(plane.circuits() <= pcfg.max_circuits);
        assert!(relay.reservations() <= rcfg.max_reservations);
        assert!(relay.circuits() <= rcfg.max_circuits);
        assert!(bytes_out <= bytes_in);
        assert_eq!(plane.stats().relayed_bytes, bytes_out);
    }
}
