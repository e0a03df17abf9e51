#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target from ../test-vectors/*.json.

Every hex string found in the vectors becomes a seed for the decoders; the handshake transcript's
initiation (addressed to the fuzz responder identity, seed 0x42) seeds the responder target in its
framed input format: mode byte, then (u16 LE length, bytes) per datagram.
"""
import glob, json, os, struct

HERE = os.path.dirname(os.path.abspath(__file__))
VECTORS = os.path.join(HERE, "..", "test-vectors")

def hexes(node, out):
    if isinstance(node, dict):
        for v in node.values():
            hexes(v, out)
    elif isinstance(node, list):
        for v in node:
            hexes(v, out)
    elif isinstance(node, str) and len(node) >= 2 and len(node) % 2 == 0:
        try:
            out.append(bytes.fromhex(node))
        except ValueError:
            pass

def write(target, blobs):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    for i, b in enumerate(blobs):
        with open(os.path.join(d, "seed-%04d" % i), "wb") as f:
            f.write(b)

def frame(mode, datagrams):
    out = bytes([mode])
    for d in datagrams:
        out += struct.pack("<H", len(d)) + d
    return out

blobs, packets = [], []
for path in sorted(glob.glob(os.path.join(VECTORS, "*.json"))):
    with open(path) as f:
        doc = json.load(f)
    hexes(doc, blobs)
    if os.path.basename(path) == "handshake.json":
        packets = [bytes.fromhex(doc["initiation"]["packet"]), bytes.fromhex(doc["response"]["packet"])]
blobs = [b for b in blobs if len(b) <= 1300]
write("packet_decode", blobs)
write("message_roundtrip", blobs)
write("record_verify", blobs)
write("handshake_responder", [frame(m, packets + blobs[:8]) for m in range(4)] + [frame(0, [b]) for b in blobs])
write("handshake_initiator", [frame(m, packets + blobs[:8]) for m in range(2)] + [frame(1, [b]) for b in blobs[:32]])
# Session ops: seal (0), deliver (1), forge (2), jump (3), each with an argument byte.
write("session_receive", [bytes([0, 5, 0, 9, 1, 0, 1, 1, 1, 0, 3, 40, 0, 1, 1, 2, 1, 0, 2, 7, 3, 16] + list(range(16))),
                          bytes(sum(([0, i, 1, i] for i in range(32)), []))])
# dht_messages takes plaintext messages framed like datagrams, without the mode byte.
messages = []
path = os.path.join(VECTORS, "messages.json")
if os.path.exists(path):
    with open(path) as f:
        messages = [bytes.fromhex(v["encoding"]) for v in json.load(f)["valid"]]
write("dht_messages", [frame(0, messages)[1:]] + [frame(0, [m])[1:] for m in messages])
write("routing_ops", [bytes(range(96)), bytes([0, 1, 2] * 40)])
# relay_ops: 4 bytes per op (kind, peer/address, arg, arg): reserve, connect, frames both ways, time.
write("relay_ops", [bytes([0, 1, 60, 0, 1, 2, 3, 1, 2, 2, 40, 3, 2, 1, 40, 17, 7, 0, 9, 0] * 4), bytes(range(256))])
# dht_ops decodes its input with `arbitrary` into a list of operations; any bytes are a valid
# input, so the vectors' packets and messages serve as seeds as they are.
write("dht_ops", blobs[:64] + [bytes(range(256)), bytes(512)])
# Simplex: every encoding in mesh.json; the ops target gets a few op sequences (5 bytes per op).
mesh = []
path = os.path.join(VECTORS, "mesh.json")
if os.path.exists(path):
    with open(path) as f:
        doc = json.load(f)
    mesh = [bytes.fromhex(m["encoding"]) for m in doc["messages"]]
    mesh += [bytes.fromhex(doc[k]["encoding"]) for k in ("certificate", "proposal", "evidence", "genesis", "input", "batch")]
presence = []
if os.path.exists(path):
    sp = doc["spatial"]
    mesh += [bytes.fromhex(sp[k]) for k in ("here_encoding", "gone_encoding", "space_encoding")]
    # Dims and levels, a centre (0, 0, 0) and a radius of 30 as f64 bits, a cell bound, then
    # 64-byte entries for the sifter: cell index, writer, seq, and a Here value inside the box.
    import struct
    head = bytes([0, 2, 4, 6]) + struct.pack("<4d", 0.0, 0.0, 0.0, 30.0) + bytes([8])
    here = b"\x00" + struct.pack("<3d", 1.0, 2.0, 0.0) + bytes(32) + b"\x01x"
    presence = [head + b"".join(bytes([i, i, 1]) + here.ljust(61, b"\0") for i in range(6))]
write("simplex_decode", mesh)
write("presence_ops", presence)
write("simplex_ops", [bytes([0, 1, 2, 0, 0, 1, 2, 2, 0, 0, 4, 1, 2, 0, 2, 3, 1, 2, 0, 0] * 6), bytes(range(200))])
write("store_ops", [bytes(range(120)), bytes([0, 5, 1, 3, 2, 7, 2, 2, 3, 9, 1, 1] * 10)])
# Agents: every encoding in agents.json, with its type byte (see agents::fuzzing::agents_decode).
agents = []
path = os.path.join(VECTORS, "agents.json")
if os.path.exists(path):
    with open(path) as f:
        doc = json.load(f)
    for v in doc["encodings"]:
        agents.append(bytes([v["fuzz_type"]]) + bytes.fromhex(v["encoding"]))
    sift = [bytes([(b % 16) | (b << 4 & 0xf0)]) + bytes.fromhex(v["encoding"]) for b, v in enumerate(doc["encodings"]) if v["fuzz_type"] == 0]
    write("discovery_sift", [b"\xff".join(sift)] + sift)
write("agents_decode", agents)
write("ballots_ops", [bytes([0, 3, 6, 1, 0, 0x10, 1, 0, 0x20, 1, 0, 0x30, 2, 0, 0x41, 7, 0, 0, 3, 0, 1, 5, 0, 0, 6, 0, 1, 7, 0, 0] * 4), bytes(range(240))])
print("seed corpus: %d blobs from %s" % (len(blobs), VECTORS))
