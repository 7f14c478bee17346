//! Step (1) of proof of computation: before uploading, a node commits to the blake3 hash of its result for one
//! attempt of one task. The commitment is what the node signs (the protocol crate adds the ed25519 signature), so a
//! result that fails verification is tied to its node by the node's own signature: that is the fraud evidence
//! slashing rests on. A result that does not hash to its commitment is rejected before it is even checked.

/// Domain tag: a commitment signature can never be mistaken for a signature over any other message.
pub const DOMAIN: &[u8] = b"neurolov/commitment/v1";

/// A node's commitment to a result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Commitment {
    pub task_id: u64,
    pub attempt: u32,
    pub result_hash: [u8; 32],
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RevealError {
    #[error("result hashes to {actual}, the commitment says {committed}")]
    HashMismatch { committed: String, actual: String },
}

impl Commitment {
    /// The commitment to `result` for this task attempt.
    pub fn to_result(task_id: u64, attempt: u32, result: &[u8]) -> Commitment {
        Commitment { task_id, attempt, result_hash: *blake3::hash(result).as_bytes() }
    }

    /// The exact bytes a node signs: domain tag, task id and attempt (little-endian), result hash.
    pub fn message(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(DOMAIN.len() + 8 + 4 + 32);
        m.extend_from_slice(DOMAIN);
        m.extend_from_slice(&self.task_id.to_le_bytes());
        m.extend_from_slice(&self.attempt.to_le_bytes());
        m.extend_from_slice(&self.result_hash);
        m
    }

    /// Checks that an uploaded result is the one committed to.
    pub fn check_reveal(&self, result: &[u8]) -> Result<(), RevealError> {
        let actual = blake3::hash(result);
        if actual.as_bytes() != &self.result_hash {
            return Err(RevealError::HashMismatch {
                committed: blake3::Hash::from_bytes(self.result_hash).to_hex().to_string(),
                actual: actual.to_hex().to_string(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_must_match_its_commitment() {
        let c = Commitment::to_result(7, 1, b"result");
        assert_eq!(c.check_reveal(b"result"), Ok(()));
        assert!(matches!(c.check_reveal(b"other"), Err(RevealError::HashMismatch { .. })));
    }

    #[test]
    fn the_signed_message_binds_task_attempt_and_hash() {
        let c = Commitment::to_result(7, 1, b"result");
        let messages = [
            c.message(),
            Commitment { task_id: 8, ..c }.message(),
            Commitment { attempt: 2, ..c }.message(),
            Commitment::to_result(7, 1, b"other").message(),
        ];
        for (i, a) in messages.iter().enumerate() {
            assert!(a.starts_with(DOMAIN));
            for b in &messages[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
