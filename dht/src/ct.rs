//! Constant-time comparison, shared by the identity checks and the handshake (a leaf: it imports
//! nothing from the crate).

/// Constant-time equality of two byte slices of equal length.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
