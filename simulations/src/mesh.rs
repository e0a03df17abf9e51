//! The Simplex agreement core under the latency model (to come).
