//! Containers whose length is checked against a compile-time cap *before* anything is allocated
//! (wire-spec §6.1). postcard announces a sequence's length first; these reject it if it is too big.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A `Vec<T>` of at most `N` elements.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct BoundedVec<T, const N: usize>(Vec<T>);

impl<T, const N: usize> Default for BoundedVec<T, N> {
    fn default() -> Self {
        BoundedVec(Vec::new())
    }
}

impl<T, const N: usize> BoundedVec<T, N> {
    /// An empty vector.
    pub fn new() -> Self {
        BoundedVec(Vec::new())
    }
    /// Appends `v`, or gives it back if the vector is full.
    pub fn try_push(&mut self, v: T) -> Result<(), T> {
        if self.0.len() >= N {
            return Err(v);
        }
        self.0.push(v);
        Ok(())
    }
    /// The inner vector.
    pub fn into_inner(self) -> Vec<T> {
        self.0
    }
}

impl<T: fmt::Debug, const N: usize> fmt::Debug for BoundedVec<T, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<T, const N: usize> Deref for BoundedVec<T, N> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.0
    }
}

/// The vector had more than `N` elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many elements")]
pub struct TooLong;

impl<T, const N: usize> TryFrom<Vec<T>> for BoundedVec<T, N> {
    type Error = TooLong;
    fn try_from(v: Vec<T>) -> Result<Self, TooLong> {
        if v.len() > N {
            return Err(TooLong);
        }
        Ok(BoundedVec(v))
    }
}

impl<T: Serialize, const N: usize> Serialize for BoundedVec<T, N> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

struct VecVisitor<T, const N: usize>(PhantomData<T>);

impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for VecVisitor<T, N> {
    type Value = BoundedVec<T, N>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a sequence of at most {N} elements")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let announced = seq.size_hint().unwrap_or(0);
        if announced > N {
            return Err(de::Error::invalid_length(announced, &self));
        }
        let mut out = Vec::with_capacity(announced);
        while let Some(v) = seq.next_element()? {
            if out.len() >= N {
                return Err(de::Error::invalid_length(N + 1, &self));
            }
            out.push(v);
        }
        Ok(BoundedVec(out))
    }
}

impl<'de, T: Deserialize<'de>, const N: usize> Deserialize<'de> for BoundedVec<T, N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_seq(VecVisitor::<T, N>(PhantomData))
    }
}

/// A byte string of at most `N` bytes.
#[derive(Clone, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct BoundedBytes<const N: usize>(Vec<u8>);

impl<const N: usize> BoundedBytes<N> {
    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }
}

impl<const N: usize> fmt::Debug for BoundedBytes<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{}", hex::encode(&self.0))
    }
}

impl<const N: usize> Deref for BoundedBytes<N> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl<const N: usize> TryFrom<&[u8]> for BoundedBytes<N> {
    type Error = TooLong;
    fn try_from(v: &[u8]) -> Result<Self, TooLong> {
        if v.len() > N {
            return Err(TooLong);
        }
        Ok(BoundedBytes(v.to_vec()))
    }
}

impl<const N: usize> Serialize for BoundedBytes<N> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

struct BytesVisitor<const N: usize>;

impl<'de, const N: usize> Visitor<'de> for BytesVisitor<N> {
    type Value = BoundedBytes<N>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at most {N} bytes")
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        // postcard has already checked that `v.len()` bytes are present in the input.
        BoundedBytes::try_from(v).map_err(|_| E::invalid_length(v.len(), &self))
    }
}

impl<'de, const N: usize> Deserialize<'de> for BoundedBytes<N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_bytes(BytesVisitor::<N>)
    }
}

/// A UTF-8 string of at most `N` bytes.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct BoundedString<const N: usize>(String);

impl<const N: usize> BoundedString<N> {
    /// Builds from `s`, cutting at a character boundary to fit `N` bytes.
    pub fn truncated(s: &str) -> Self {
        let mut end = s.len().min(N);
        while end > 0 && !s.is_char_boundary(end) {
            end -= 1;
        }
        BoundedString(s.get(..end).unwrap_or("").to_string())
    }
    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<const N: usize> fmt::Debug for BoundedString<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<const N: usize> Serialize for BoundedString<N> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

struct StrVisitor<const N: usize>;

impl<'de, const N: usize> Visitor<'de> for StrVisitor<N> {
    type Value = BoundedString<N>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a string of at most {N} bytes")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        if v.len() > N {
            return Err(E::invalid_length(v.len(), &self));
        }
        Ok(BoundedString(v.to_string()))
    }
}

impl<'de, const N: usize> Deserialize<'de> for BoundedString<N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(StrVisitor::<N>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_sequence_rejected_before_allocation() {
        // Announced length 2^32-1 with no elements: must fail on the length, not try to allocate.
        let bytes = [0xff, 0xff, 0xff, 0xff, 0x0f];
        assert!(postcard::from_bytes::<BoundedVec<u64, 4>>(&bytes).is_err());
        let bytes = [5, 1, 2, 3, 4, 5];
        assert!(postcard::from_bytes::<BoundedVec<u8, 4>>(&bytes).is_err());
        let bytes = [4, 1, 2, 3, 4];
        assert_eq!(postcard::from_bytes::<BoundedVec<u8, 4>>(&bytes).unwrap().len(), 4);
    }

    #[test]
    fn bytes_and_strings_bounded() {
        let ok = postcard::to_allocvec(&BoundedBytes::<3>::try_from(&b"abc"[..]).unwrap()).unwrap();
        assert_eq!(ok, b"\x03abc");
        assert!(postcard::from_bytes::<BoundedBytes<2>>(&ok).is_err());
        assert!(postcard::from_bytes::<BoundedString<2>>(b"\x03abc").is_err());
        assert_eq!(BoundedString::<4>::truncated("héllo").as_str(), "hél");
    }
}
