//! The bytes of an [`Opening`] on the wire (a blob a provider uploads when challenged): little-endian, length-
//! prefixed, every count and length checked against what is left before anything is allocated, so a hostile blob
//! costs the verifier at most its own size. Layout, version 1:
//!
//! ```text
//! "NLVO" u8 version=1
//! u32 residual leaves  { u64 index, u32 n, n×f32 mid, n×f32 out }
//! u32 key/value leaves { u64 index, u32 n, n×f32 k,   n×f32 v   }
//! u32 proof hashes     { 32 bytes }
//! u32 claims           { u32 vectors { u32 n, n×f32 } }
//! u32 logits vectors   { u32 n, n×f32 }
//! ```

use std::collections::BTreeMap;

use super::embed::EncoderClaim;
use super::{KvBlock, Opening, PairClaim, Residual};

const MAGIC: &[u8; 4] = b"NLVO";
const VERSION: u8 = 1;
/// Largest opening accepted (a 2,048-token chat's is about 70 MiB at most; typical ones are a few MiB).
pub const MAX_OPENING_BYTES: usize = 128 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("an opening is at most {MAX_OPENING_BYTES} bytes")]
    TooLarge,
    #[error("not an opening (bad magic or version)")]
    BadHeader,
    #[error("the opening ends early")]
    Truncated,
    #[error("{0} bytes after the opening's end")]
    Trailing(usize),
    #[error("a claim has {0} vectors, its kind has a different number")]
    ClaimShape(usize),
    #[error("leaf index {0} appears twice")]
    Repeated(u64),
}

/// A provider's claims as vectors of f32, in a fixed order per kind.
pub trait WireClaim: Sized {
    fn vectors(&self) -> Vec<&[f32]>;
    fn from_vectors(vectors: Vec<Vec<f32>>) -> Result<Self, WireError>;
}

impl WireClaim for PairClaim {
    fn vectors(&self) -> Vec<&[f32]> {
        vec![&self.q, &self.gate, &self.up]
    }
    fn from_vectors(v: Vec<Vec<f32>>) -> Result<Self, WireError> {
        let [q, gate, up]: [Vec<f32>; 3] = v.try_into().map_err(|v: Vec<_>| WireError::ClaimShape(v.len()))?;
        Ok(PairClaim { q, gate, up })
    }
}

impl WireClaim for EncoderClaim {
    fn vectors(&self) -> Vec<&[f32]> {
        vec![&self.q, &self.inner]
    }
    fn from_vectors(v: Vec<Vec<f32>>) -> Result<Self, WireError> {
        let [q, inner]: [Vec<f32>; 2] = v.try_into().map_err(|v: Vec<_>| WireError::ClaimShape(v.len()))?;
        Ok(EncoderClaim { q, inner })
    }
}

fn put_f32s(out: &mut Vec<u8>, v: &[f32]) {
    out.extend(v.iter().flat_map(|x| x.to_le_bytes()));
}

fn put_u32(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(n as u32).to_le_bytes());
}

impl<C: WireClaim> Opening<C> {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        put_u32(&mut out, self.residuals.len());
        for (&i, r) in &self.residuals {
            out.extend_from_slice(&(i as u64).to_le_bytes());
            put_u32(&mut out, r.mid.len());
            put_f32s(&mut out, &r.mid);
            put_f32s(&mut out, &r.out);
        }
        put_u32(&mut out, self.kv.len());
        for (&i, b) in &self.kv {
            out.extend_from_slice(&(i as u64).to_le_bytes());
            put_u32(&mut out, b.k.len());
            put_f32s(&mut out, &b.k);
            put_f32s(&mut out, &b.v);
        }
        put_u32(&mut out, self.proof.len());
        self.proof.iter().for_each(|h| out.extend_from_slice(h));
        put_u32(&mut out, self.pairs.len());
        for claim in &self.pairs {
            let vectors = claim.vectors();
            put_u32(&mut out, vectors.len());
            for v in vectors {
                put_u32(&mut out, v.len());
                put_f32s(&mut out, v);
            }
        }
        put_u32(&mut out, self.logits.len());
        for v in &self.logits {
            put_u32(&mut out, v.len());
            put_f32s(&mut out, v);
        }
        out
    }

    /// Reads an opening; a residual or key/value leaf whose two halves differ in length is read as written (the
    /// verifier's shape check refuses it).
    pub fn from_bytes(bytes: &[u8]) -> Result<Opening<C>, WireError> {
        if bytes.len() > MAX_OPENING_BYTES {
            return Err(WireError::TooLarge);
        }
        let mut r = Reader(bytes);
        if r.take(4)? != MAGIC || r.take(1)? != [VERSION] {
            return Err(WireError::BadHeader);
        }
        let residuals = r.leaves(|mid, out| Residual { mid, out })?;
        let kv = r.leaves(|k, v| KvBlock { k, v })?;
        let hashes = r.count(32)?;
        let proof =
            (0..hashes).map(|_| Ok(r.take(32)?.try_into().unwrap_or([0; 32]))).collect::<Result<_, WireError>>()?;
        let claims = r.count(4)?;
        let pairs = (0..claims)
            .map(|_| {
                let vectors = r.count(4)?;
                C::from_vectors((0..vectors).map(|_| r.vector()).collect::<Result<_, _>>()?)
            })
            .collect::<Result<_, _>>()?;
        let logits_count = r.count(4)?;
        let logits = (0..logits_count).map(|_| r.vector()).collect::<Result<_, _>>()?;
        if !r.0.is_empty() {
            return Err(WireError::Trailing(r.0.len()));
        }
        Ok(Opening { residuals, kv, proof, pairs, logits })
    }
}

/// What is left to read.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if n > self.0.len() {
            return Err(WireError::Truncated);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u32(&mut self) -> Result<usize, WireError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }

    /// A count of items each at least `min_bytes` long: never more than what is left could hold.
    fn count(&mut self, min_bytes: usize) -> Result<usize, WireError> {
        let n = self.u32()?;
        if n.saturating_mul(min_bytes) > self.0.len() {
            return Err(WireError::Truncated);
        }
        Ok(n)
    }

    fn f32s(&mut self, n: usize) -> Result<Vec<f32>, WireError> {
        let bytes = self.take(n.checked_mul(4).ok_or(WireError::Truncated)?)?;
        Ok(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
    }

    fn vector(&mut self) -> Result<Vec<f32>, WireError> {
        let n = self.u32()?;
        self.f32s(n)
    }

    fn leaves<T>(&mut self, make: impl Fn(Vec<f32>, Vec<f32>) -> T) -> Result<BTreeMap<usize, T>, WireError> {
        let n = self.count(12)?;
        let mut out = BTreeMap::new();
        for _ in 0..n {
            let index = self.u64()?;
            let len = self.u32()?;
            let (a, b) = (self.f32s(len)?, self.f32s(len)?);
            if out.insert(usize::try_from(index).map_err(|_| WireError::Truncated)?, make(a, b)).is_some() {
                return Err(WireError::Repeated(index));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Opening<PairClaim> {
        let v = |n: usize, x: f32| (0..n).map(|i| x + i as f32 * 0.25).collect::<Vec<f32>>();
        Opening {
            residuals: BTreeMap::from([
                (3, Residual { mid: v(8, 1.0), out: v(8, -2.0) }),
                (9, Residual { mid: v(4, 0.5), out: v(4, f32::MIN_POSITIVE) }),
            ]),
            kv: BTreeMap::from([(40, KvBlock { k: v(6, 3.0), v: v(6, -0.0) })]),
            proof: vec![[7; 32], [1; 32]],
            pairs: vec![PairClaim { q: v(2, 1.5), gate: v(3, 2.5), up: v(3, -1.0) }],
            logits: vec![v(5, -7.0), vec![]],
        }
    }

    #[test]
    fn openings_round_trip_and_bad_bytes_are_refused() {
        let o = sample();
        let bytes = o.to_bytes();
        assert_eq!(Opening::<PairClaim>::from_bytes(&bytes), Ok(o.clone()));
        let enc = Opening {
            residuals: o.residuals.clone(),
            kv: o.kv.clone(),
            proof: vec![],
            pairs: vec![EncoderClaim { q: vec![1.0], inner: vec![2.0, 3.0] }],
            logits: vec![],
        };
        assert_eq!(Opening::<EncoderClaim>::from_bytes(&enc.to_bytes()), Ok(enc));
        // Every truncation is refused, never a panic.
        for cut in 0..bytes.len() {
            assert!(Opening::<PairClaim>::from_bytes(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(Opening::<PairClaim>::from_bytes(&longer), Err(WireError::Trailing(1)));
        assert_eq!(Opening::<EncoderClaim>::from_bytes(&bytes), Err(WireError::ClaimShape(3)), "a decoder's claims");
        let mut bad = bytes.clone();
        bad[4] = 2;
        assert_eq!(Opening::<PairClaim>::from_bytes(&bad), Err(WireError::BadHeader));
        // A count far beyond the bytes is refused before anything is allocated.
        let mut huge = bytes[..5].to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(Opening::<PairClaim>::from_bytes(&huge), Err(WireError::Truncated));
        // The same leaf twice.
        let mut twice = bytes[..5].to_vec();
        twice.extend_from_slice(&2u32.to_le_bytes());
        for _ in 0..2 {
            twice.extend_from_slice(&5u64.to_le_bytes());
            twice.extend_from_slice(&0u32.to_le_bytes());
        }
        assert_eq!(Opening::<PairClaim>::from_bytes(&twice), Err(WireError::Repeated(5)));
    }
}
