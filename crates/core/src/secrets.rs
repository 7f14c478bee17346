//! The core's randomness: a keyed BLAKE3 stream. Everything the core draws — connection nonces, challenge operands,
//! the verifier's secret Freivalds seeds, spot-check and canary draws — comes from here. A node sees some outputs
//! (nonces, challenge seeds) and must learn nothing from them about the others (its task's secret R, whether it is
//! being spot-checked): BLAKE3 in keyed mode is a PRF, so outputs reveal neither the key nor each other, unlike the
//! 64-bit generator this replaces, whose raw outputs were its state. The shell keys it with 32 bytes from the OS
//! CSPRNG ([`crate::Core::restore_with_key`]); tests and the simulation derive the key from a `u64` seed, so the
//! core stays deterministic given its inputs.

/// A deterministic stream of random values under a secret 256-bit key.
pub(crate) struct SecretRng {
    key: [u8; 32],
    /// Blocks drawn so far: the next block hashes this counter.
    counter: u64,
    /// Unused words of the current block.
    words: [u64; 4],
    left: usize,
}

impl SecretRng {
    pub(crate) fn from_key(key: [u8; 32]) -> SecretRng {
        SecretRng { key, counter: 0, words: [0; 4], left: 0 }
    }

    /// A key derived from a `u64` seed: for tests and simulations only (a 64-bit seed can be searched).
    pub(crate) fn from_seed(seed: u64) -> SecretRng {
        SecretRng::from_key(blake3::derive_key("neurolov core randomness v1", &seed.to_le_bytes()))
    }

    fn next(&mut self) -> u64 {
        if self.left == 0 {
            let block = blake3::keyed_hash(&self.key, &self.counter.to_le_bytes());
            self.counter += 1;
            for (w, chunk) in self.words.iter_mut().zip(block.as_bytes().chunks_exact(8)) {
                let mut b = [0u8; 8];
                b.copy_from_slice(chunk);
                *w = u64::from_le_bytes(b);
            }
            self.left = 4;
        }
        self.left -= 1;
        self.words[self.left]
    }

    /// Any `u64` (the range argument mirrors `fastrand`'s call shape).
    pub(crate) fn u64(&mut self, _: std::ops::RangeFull) -> u64 {
        self.next()
    }

    /// Uniform in `0..end.end` (`end.end` > 0); the bias of the multiply-shift is below 2⁻³² for any `usize` here.
    pub(crate) fn usize(&mut self, end: std::ops::RangeTo<usize>) -> usize {
        debug_assert!(end.end > 0);
        ((u128::from(self.next()) * end.end as u128) >> 64) as usize
    }

    /// Uniform in [0, 1).
    pub(crate) fn f64(&mut self) -> f64 {
        (self.next() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    pub(crate) fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let word = self.next().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SecretRng;

    #[test]
    fn streams_are_deterministic_per_key_and_differ_across_keys() {
        let draw = |mut r: SecretRng| (0..16).map(|_| r.u64(..)).collect::<Vec<_>>();
        assert_eq!(draw(SecretRng::from_seed(1)), draw(SecretRng::from_seed(1)));
        assert_ne!(draw(SecretRng::from_seed(1)), draw(SecretRng::from_seed(2)));
        assert_ne!(draw(SecretRng::from_key([0; 32])), draw(SecretRng::from_key([1; 32])));
        let v = draw(SecretRng::from_seed(3));
        assert_eq!(v.iter().collect::<std::collections::HashSet<_>>().len(), v.len());
    }

    #[test]
    fn ranges_are_respected_and_roughly_uniform() {
        let mut r = SecretRng::from_seed(9);
        let mut counts = [0u32; 10];
        for _ in 0..100_000 {
            counts[r.usize(..10)] += 1;
            let x = r.f64();
            assert!((0.0..1.0).contains(&x));
        }
        assert!(counts.iter().all(|&c| (9_000..11_000).contains(&c)), "{counts:?}");
        let mut nonce = [0u8; 13];
        r.fill(&mut nonce);
        assert!(nonce.iter().any(|&b| b != 0));
    }
}
