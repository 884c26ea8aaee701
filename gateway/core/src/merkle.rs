//! RFC 9162 §2.1 Merkle tree over item hashes, with inclusion proofs (interchange-v1 §3).
//!
//! One signature covers a whole envelope; each item carries its audit path so it can be
//! verified alone, after batches are split and regrouped on the way up.

use sha2::{Digest, Sha256};

use crate::canonical::Sha256Digest;

/// `SHA-256(0x00 ‖ data)`: the hash of one leaf. For envelopes `data` is the 32-byte item hash.
pub fn leaf_hash(data: &[u8]) -> Sha256Digest {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    Sha256Digest(h.finalize().into())
}

/// `SHA-256(0x01 ‖ left ‖ right)`: an interior node.
fn node_hash(left: &Sha256Digest, right: &Sha256Digest) -> Sha256Digest {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left.0);
    h.update(right.0);
    Sha256Digest(h.finalize().into())
}

/// The largest power of two smaller than `n` (n ≥ 2): RFC 9162's split point.
fn split(n: usize) -> usize {
    let mut k = 1;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

/// MTH over leaf hashes. The empty tree's hash is SHA-256 of nothing.
pub fn root(leaves: &[Sha256Digest]) -> Sha256Digest {
    match leaves.len() {
        0 => Sha256Digest::of(&[]),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The root and every leaf's audit path (leaf upwards), in O(n log n) hashes.
pub fn root_and_proofs(leaves: &[Sha256Digest]) -> (Sha256Digest, Vec<Vec<Sha256Digest>>) {
    let mut proofs = vec![Vec::new(); leaves.len()];
    let root = build(leaves, &mut proofs);
    (root, proofs)
}

/// The audit path (leaf upwards) of one leaf, in O(n) hashes: for rebuilding a single stored
/// item's proof without computing every other one. `None` if `index` is out of range.
pub fn audit_path(leaves: &[Sha256Digest], index: usize) -> Option<Vec<Sha256Digest>> {
    if index >= leaves.len() {
        return None;
    }
    let mut path = Vec::new();
    let (mut lo, mut hi) = (0, leaves.len());
    // Walk down from the root, remembering each sibling subtree; the path lists them upwards.
    while hi - lo > 1 {
        let k = lo + split(hi - lo);
        if index < k {
            path.push(root(&leaves[k..hi]));
            hi = k;
        } else {
            path.push(root(&leaves[lo..k]));
            lo = k;
        }
    }
    path.reverse();
    Some(path)
}

fn build(leaves: &[Sha256Digest], proofs: &mut [Vec<Sha256Digest>]) -> Sha256Digest {
    match leaves.len() {
        0 => Sha256Digest::of(&[]),
        1 => leaves[0],
        n => {
            let k = split(n);
            let (left_proofs, right_proofs) = proofs.split_at_mut(k);
            let left = build(&leaves[..k], left_proofs);
            let right = build(&leaves[k..], right_proofs);
            // Deeper siblings were pushed first, so each path reads from the leaf upwards.
            left_proofs.iter_mut().for_each(|p| p.push(right));
            right_proofs.iter_mut().for_each(|p| p.push(left));
            node_hash(&left, &right)
        }
    }
}

/// RFC 9162 §2.1.3.2: whether `path` proves `leaf` at `index` in a tree of `size` with `root`.
pub fn verify_inclusion(
    leaf: &Sha256Digest,
    index: u64,
    size: u64,
    path: &[Sha256Digest],
    root: &Sha256Digest,
) -> bool {
    if index >= size {
        return false;
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    for p in path {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && r == *root
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Sha256Digest {
        Sha256Digest::from_hex(s).expect("hex")
    }

    /// RFC 6962 / Certificate Transparency reference leaves and roots (transparency-dev/merkle
    /// test data), used as data.
    const LEAVES: [&str; 8] =
        ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"];
    const ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn reference_leaves() -> Vec<Sha256Digest> {
        LEAVES.iter().map(|l| leaf_hash(&hex::decode(l).expect("hex"))).collect()
    }

    #[test]
    fn roots_match_the_reference_for_every_size() {
        let leaves = reference_leaves();
        for n in 0..=8 {
            assert_eq!(root(&leaves[..n]), h(ROOTS[n]), "size {n}");
            assert_eq!(root_and_proofs(&leaves[..n]).0, h(ROOTS[n]), "size {n}");
        }
    }

    #[test]
    fn proofs_match_the_reference() {
        let (_, proofs) = root_and_proofs(&reference_leaves());
        let expected0 = [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ];
        let expected5 = [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ];
        assert_eq!(proofs[0], expected0.map(h).to_vec());
        assert_eq!(proofs[5], expected5.map(h).to_vec());
    }

    #[test]
    fn single_audit_paths_equal_the_batch_ones() {
        for n in [1usize, 2, 3, 7, 8, 9, 31, 100] {
            let leaves: Vec<Sha256Digest> = (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect();
            let (_, proofs) = root_and_proofs(&leaves);
            for (i, p) in proofs.iter().enumerate() {
                assert_eq!(audit_path(&leaves, i).as_ref(), Some(p), "n={n} i={i}");
            }
            assert_eq!(audit_path(&leaves, n), None);
        }
    }

    #[test]
    fn every_proof_verifies_and_nothing_else_does() {
        let leaves: Vec<_> = (0..70u32).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        for n in 1..=leaves.len() {
            let (r, proofs) = root_and_proofs(&leaves[..n]);
            for i in 0..n {
                let (idx, size) = (i as u64, n as u64);
                assert!(verify_inclusion(&leaves[i], idx, size, &proofs[i], &r), "n={n} i={i}");
                assert!(!verify_inclusion(&leaves[(i + 1) % n], idx, size, &proofs[i], &r) || n == 1);
                assert!(!verify_inclusion(&leaves[i], idx + 1, size, &proofs[i], &r));
                if n > 1 {
                    // (A path can also fit a larger size: the size is bound by the signed `count`.)
                    let mut bent = proofs[i].clone();
                    bent[0].0[0] ^= 1;
                    assert!(!verify_inclusion(&leaves[i], idx, size, &bent, &r));
                    assert!(!verify_inclusion(&leaves[i], idx, size, &proofs[i][1..], &r));
                }
            }
        }
    }
}
