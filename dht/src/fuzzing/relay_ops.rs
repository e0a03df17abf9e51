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

/// The relay, the plane, and what the invariants need to know.
struct Harness {
    now: Instant,
    pcfg: PlaneConfig,
    rcfg: RelayConfig,
    plane: DataPlane,
    relay: RelayServer,
    /// Every address some `Open` named.
    named: HashSet<SocketAddr>,
    bytes_in: u64,
    bytes_out: u64,
}

impl Harness {
    fn new() -> Self {
        let now = Instant::now();
        let pcfg = PlaneConfig {
            max_legs: 8,
            max_auto_legs: 4,
            max_circuits: 6,
            circuit_burst: 4000,
            ..PlaneConfig::default()
        };
        let rcfg = RelayConfig {
            max_reservations: 4,
            max_reservations_per_ip: 2,
            max_circuits: 6,
            max_circuits_per_reservation: 3,
            max_circuits_per_initiator: 2,
            circuit_bytes_per_s: 2000,
            ..RelayConfig::default()
        };
        let plane = DataPlane::new(pcfg.clone(), now);
        let relay = RelayServer::new(rcfg.clone());
        Harness { now, pcfg, rcfg, plane, relay, named: HashSet::new(), bytes_in: 0, bytes_out: 0 }
    }

    /// The relay's control decisions: reserve, connect, and time passing.
    fn control(&mut self, k: u8, x: u8, y: u8, z: u8) {
        let (now, peer) = (self.now, NodeId([x % 8; 32]));
        match k {
            0 => {
                if let Ok((_, closes)) = self.relay.reserve(now, peer, addr(x), u32::from(y) * 4) {
                    closes.into_iter().for_each(|op| self.plane.apply(now, op));
                }
            }
            1 => {
                let ids = (u64::from(y % 16), u64::from(z % 16) + 16);
                if let Ok((_, op)) = self.relay.connect(now, peer, addr(x), NodeId([z % 8; 32]), ids) {
                    if let PlaneOp::Open { a, b, .. } = &op {
                        self.named.insert(a.0);
                        self.named.insert(b.0);
                    }
                    self.plane.apply(now, op);
                }
            }
            _ => {
                self.now += Duration::from_millis(u64::from(y) * 100);
                for op in self.relay.expire(self.now) {
                    self.plane.apply(self.now, op);
                }
                for ev in self.plane.take_events() {
                    if let crate::path::PlaneEvent::CircuitClosed { a, .. } = ev {
                        self.relay.closed(&a);
                    }
                }
            }
        }
    }

    /// A frame from `addr(x)` on circuit `z`, `y * 5` inner bytes, cut short if `cut`.
    fn frame(&mut self, x: u8, y: u8, z: u8, cut: bool) {
        let inner = vec![0x45; usize::from(y) * 5];
        let Some(mut f) = packet::relayed(u64::from(z % 32), &inner) else { return };
        if cut {
            f.truncate(usize::from(z));
        }
        let len = f.len();
        match self.plane.inbound(self.now, addr(x), &mut f) {
            Inbound::Forward { to } => {
                assert!(self.named.contains(&to), "forwarded to an address no Open named");
                assert_eq!(f.len(), len);
                self.bytes_in += len as u64;
                self.bytes_out += f.len() as u64;
            }
            Inbound::Local { start, .. } => assert!(start <= len),
            Inbound::Consumed | Inbound::Drop(_) => {}
        }
    }

    fn check(&self) {
        assert!(self.plane.legs().count() <= self.pcfg.max_legs);
        assert!(self.plane.circuits() <= self.pcfg.max_circuits);
        assert!(self.relay.reservations() <= self.rcfg.max_reservations);
        assert!(self.relay.circuits() <= self.rcfg.max_circuits);
        assert!(self.bytes_out <= self.bytes_in);
        assert_eq!(self.plane.stats().relayed_bytes, self.bytes_out);
    }
}

/// Runs the operations encoded in `data` (4 bytes each).
pub fn relay_ops(data: &[u8]) {
    let mut h = Harness::new();
    for op in data.chunks(4).take(1024) {
        let [k, x, y, z] = [0, 1, 2, 3].map(|i| op.get(i).copied().unwrap_or(0));
        let now = h.now;
        match k % 8 {
            2 | 3 => h.frame(x, y, z, k % 8 == 3),
            4 => {
                h.plane.apply(now, PlaneOp::Reserved { relay: addr(x), until: now + Duration::from_secs(u64::from(y)) })
            }
            5 => h
                .plane
                .apply(now, PlaneOp::Leg { relay: addr(x), circuit: u64::from(y % 32), peer: NodeId([x % 8; 32]) }),
            6 => {
                let _ = h.plane.outbound(now, virtual_addr(addr(x), u64::from(y % 32)), usize::from(z) * 8);
            }
            k => h.control(k.min(7), x, y, z),
        }
        h.check();
    }
}
