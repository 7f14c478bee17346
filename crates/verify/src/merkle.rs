//! A binary Merkle tree over blake3 leaf hashes, with multiproofs: a node commits to a long list of values (every
//! layer's activations at every position of an inference) with one 32-byte root, and later opens any subset of them
//! with O(k·log n) sibling hashes. The shape is RFC 6962's (the left subtree holds the largest power of two below
//! n), leaves and inner nodes are hashed under different domain bytes, so a leaf can never pass for an inner node.
//!
//! A proof lists the hashes of the maximal subtrees that hold no opened leaf, in the order a left-to-right
//! depth-first walk meets them; the verifier walks the same tree, taking opened leaves from its map and everything
//! else from the proof, and must use up the proof exactly.

use std::collections::BTreeMap;

/// A node of the tree.
pub type Hash = [u8; 32];

const LEAF: u8 = 0;
const INNER: u8 = 1;
const SIZED: u8 = 2;

/// Most leaves a tree may have (a bound on the recursion and on what a proof may claim; below what a 32-bit
/// target, WebAssembly, can index).
pub const MAX_LEAVES: usize = 1 << 31;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MerkleError {
    #[error("a tree has 1..={MAX_LEAVES} leaves (got {0})")]
    BadSize(usize),
    #[error("opened leaf {index} is outside a tree of {leaves} leaves")]
    OutOfRange { index: usize, leaves: usize },
    #[error("the proof is {0} hashes short")]
    ProofTooShort(usize),
    #[error("the proof has {0} hashes too many")]
    ProofTooLong(usize),
    #[error("the opened leaves do not lead to the committed root")]
    WrongRoot,
}

/// The hash of a leaf's content (`parts` are concatenated): what the tree is built over.
pub fn leaf(parts: &[&[u8]]) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(&[LEAF]);
    for p in parts {
        h.update(p);
    }
    *h.finalize().as_bytes()
}

fn inner(left: &Hash, right: &Hash) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(&[INNER]);
    h.update(left);
    h.update(right);
    *h.finalize().as_bytes()
}

/// Where an n-leaf subtree splits: the largest power of two below n.
fn split(n: usize) -> usize {
    debug_assert!(n >= 2);
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// The root over `leaves` (leaf hashes, in order), bound to their number: two trees of different sizes never
/// share a root, whatever a proof claims.
pub fn root(leaves: &[Hash]) -> Result<Hash, MerkleError> {
    if leaves.is_empty() || leaves.len() > MAX_LEAVES {
        return Err(MerkleError::BadSize(leaves.len()));
    }
    Ok(sized(leaves.len(), &subtree(leaves)))
}

fn sized(n: usize, tree: &Hash) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(&[SIZED]);
    h.update(&(n as u64).to_le_bytes());
    h.update(tree);
    *h.finalize().as_bytes()
}

fn subtree(leaves: &[Hash]) -> Hash {
    if leaves.len() == 1 {
        return leaves[0];
    }
    let k = split(leaves.len());
    inner(&subtree(&leaves[..k]), &subtree(&leaves[k..]))
}

/// The proof that opens the leaves at `opened` (sorted or not, repeats ignored).
pub fn prove(leaves: &[Hash], opened: &[usize]) -> Result<Vec<Hash>, MerkleError> {
    if leaves.is_empty() || leaves.len() > MAX_LEAVES {
        return Err(MerkleError::BadSize(leaves.len()));
    }
    let mut sorted: Vec<usize> = opened.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    if let Some(&index) = sorted.iter().find(|&&i| i >= leaves.len()) {
        return Err(MerkleError::OutOfRange { index, leaves: leaves.len() });
    }
    let mut proof = Vec::new();
    prove_into(leaves, 0, &sorted, &mut proof);
    Ok(proof)
}

fn prove_into(leaves: &[Hash], first: usize, opened: &[usize], proof: &mut Vec<Hash>) {
    if opened.is_empty() {
        proof.push(subtree(leaves));
        return;
    }
    if leaves.len() == 1 {
        return;
    }
    let k = split(leaves.len());
    let cut = opened.partition_point(|&i| i < first + k);
    prove_into(&leaves[..k], first, &opened[..cut], proof);
    prove_into(&leaves[k..], first + k, &opened[cut..], proof);
}

/// Checks that the opened leaves (index → leaf hash) of an `n`-leaf tree lead to `root` with `proof`.
pub fn verify(root: &Hash, n: usize, opened: &BTreeMap<usize, Hash>, proof: &[Hash]) -> Result<(), MerkleError> {
    if n == 0 || n > MAX_LEAVES {
        return Err(MerkleError::BadSize(n));
    }
    if let Some((&index, _)) = opened.range(n..).next() {
        return Err(MerkleError::OutOfRange { index, leaves: n });
    }
    let leaves: Vec<(usize, Hash)> = opened.iter().map(|(&i, &h)| (i, h)).collect();
    let mut rest = proof;
    let computed = walk(n, 0, &leaves, &mut rest)?;
    if !rest.is_empty() {
        return Err(MerkleError::ProofTooLong(rest.len()));
    }
    if &sized(n, &computed) != root {
        return Err(MerkleError::WrongRoot);
    }
    Ok(())
}

fn walk(n: usize, first: usize, opened: &[(usize, Hash)], proof: &mut &[Hash]) -> Result<Hash, MerkleError> {
    if opened.is_empty() {
        let (head, tail) = proof.split_first().ok_or(MerkleError::ProofTooShort(1))?;
        *proof = tail;
        return Ok(*head);
    }
    if n == 1 {
        return Ok(opened[0].1);
    }
    let k = split(n);
    let cut = opened.partition_point(|&(i, _)| i < first + k);
    let left = walk(k, first, &opened[..cut], proof)?;
    let right = walk(n - k, first + k, &opened[cut..], proof)?;
    Ok(inner(&left, &right))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n as u32).map(|i| leaf(&[&i.to_le_bytes()])).collect()
    }

    fn open(all: &[Hash], idx: &[usize]) -> BTreeMap<usize, Hash> {
        idx.iter().map(|&i| (i, all[i])).collect()
    }

    #[test]
    fn every_subset_of_small_trees_opens_and_nothing_else_does() {
        for n in 1..=9 {
            let all = leaves(n);
            let r = root(&all).unwrap();
            for mask in 0u32..(1 << n) {
                let idx: Vec<usize> = (0..n).filter(|i| mask & (1 << i) != 0).collect();
                let proof = prove(&all, &idx).unwrap();
                assert_eq!(verify(&r, n, &open(&all, &idx), &proof), Ok(()), "n {n} {idx:?}");
                if let Some(&first) = idx.first() {
                    let mut forged = open(&all, &idx);
                    forged.insert(first, leaf(&[b"forged"]));
                    assert_eq!(verify(&r, n, &forged, &proof), Err(MerkleError::WrongRoot));
                }
                if !proof.is_empty() {
                    assert!(verify(&r, n, &open(&all, &idx), &proof[1..]).is_err());
                }
                let mut longer = proof.clone();
                longer.push([0; 32]);
                assert_eq!(verify(&r, n, &open(&all, &idx), &longer), Err(MerkleError::ProofTooLong(1)));
            }
        }
    }

    #[test]
    fn a_proof_is_logarithmic_and_bound_to_its_size() {
        let all = leaves(1000);
        let r = root(&all).unwrap();
        let proof = prove(&all, &[17]).unwrap();
        assert!(proof.len() <= 10, "{}", proof.len());
        assert!(verify(&r, 999, &open(&all, &[17]), &proof).is_err());
        let beyond = BTreeMap::from([(1000, all[0])]);
        assert_eq!(verify(&r, 1000, &beyond, &proof), Err(MerkleError::OutOfRange { index: 1000, leaves: 1000 }));
        assert_eq!(root(&[]), Err(MerkleError::BadSize(0)));
        // A leaf never equals an inner node over the same bytes.
        assert_ne!(leaf(&[&all[0], &all[1]]), subtree(&all[..2]));
    }
}
