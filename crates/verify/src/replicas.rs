//! Agreement between replicas of a task whose result cannot be checked cheaply (a client's own WGSL kernel): the
//! same task runs on nodes of different operators and their outputs are compared. Integer outputs must agree
//! bitwise. Float outputs agree within a tolerance, because two honest GPUs legitimately differ: WGSL lets `exp`,
//! `tanh`, `pow` and division err by a few ULP (more for larger arguments), and drivers reorder sums.

/// How two replicas' outputs are compared.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Tolerance {
    /// Byte-for-byte (integer outputs, or a client that wants exactness).
    Bitwise,
    /// f32 values agree when |a − b| ≤ abs + rel·max(|a|, |b|); NaN agrees with NaN, infinities with the same sign.
    Float { abs: f32, rel: f32 },
}

/// The default for float outputs: 2⁻¹³ relative (about 1000 ULP, several times WGSL's worst accuracy bound for
/// one transcendental), 10⁻⁶ absolute for values near zero.
pub const DEFAULT_FLOAT: Tolerance = Tolerance::Float { abs: 1e-6, rel: 1.0 / 8192.0 };
/// Loosest float tolerance a client may ask for: beyond it, agreement would not mean much.
pub const MAX_REL: f32 = 0.01;

/// Where two outputs first disagree.
#[derive(Clone, Debug, PartialEq)]
pub enum Disagreement {
    Length {
        a: usize,
        b: usize,
    },
    /// At this byte (bitwise) or f32 element (float).
    At {
        index: usize,
    },
}

/// Whether `a` and `b` agree under `tol`.
pub fn agree(a: &[u8], b: &[u8], tol: Tolerance) -> Result<(), Disagreement> {
    if a.len() != b.len() {
        return Err(Disagreement::Length { a: a.len(), b: b.len() });
    }
    match tol {
        Tolerance::Bitwise => match a.iter().zip(b).position(|(x, y)| x != y) {
            Some(index) => Err(Disagreement::At { index }),
            None => Ok(()),
        },
        Tolerance::Float { abs, rel } => {
            if !a.len().is_multiple_of(4) {
                return Err(Disagreement::Length { a: a.len(), b: b.len() });
            }
            let f = |c: &[u8]| f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            for (index, (x, y)) in a.chunks_exact(4).map(f).zip(b.chunks_exact(4).map(f)).enumerate() {
                let ok = if x.is_nan() || y.is_nan() {
                    x.is_nan() && y.is_nan()
                } else if x.is_infinite() || y.is_infinite() {
                    x == y
                } else {
                    (x - y).abs() <= abs + rel * x.abs().max(y.abs())
                };
                if !ok {
                    return Err(Disagreement::At { index });
                }
            }
            Ok(())
        }
    }
}

/// Groups replica outputs into classes of mutual agreement (each output joins the first class whose first member
/// it agrees with) and returns the classes as index lists, largest first.
pub fn classes(outputs: &[&[u8]], tol: Tolerance) -> Vec<Vec<usize>> {
    let mut classes: Vec<Vec<usize>> = Vec::new();
    for (i, out) in outputs.iter().enumerate() {
        match classes.iter_mut().find(|c| agree(outputs[c[0]], out, tol).is_ok()) {
            Some(c) => c.push(i),
            None => classes.push(vec![i]),
        }
    }
    classes.sort_by_key(|c| std::cmp::Reverse(c.len()));
    classes
}

/// The verdict on a set of replicas: the indices of the accepted outputs (a strict majority that agrees, of at
/// least `quorum` members), or `None` when there is no such majority and more replicas are needed.
pub fn quorum(outputs: &[&[u8]], tol: Tolerance, quorum: usize) -> Option<Vec<usize>> {
    let classes = classes(outputs, tol);
    let best = classes.first()?;
    (best.len() >= quorum.max(1) && best.len() * 2 > outputs.len()).then(|| best.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn float_agreement() {
        let tol = DEFAULT_FLOAT;
        let cases: &[(&[f32], &[f32], bool)] = &[
            (&[1.0, 2.0], &[1.0, 2.0], true),
            (&[1000.0], &[1000.1], true),
            (&[1000.0], &[1001.0], false),
            (&[0.0], &[5e-7], true),
            (&[0.0], &[5e-6], false),
            (&[f32::NAN], &[f32::NAN], true),
            (&[f32::NAN], &[1.0], false),
            (&[f32::INFINITY], &[f32::INFINITY], true),
            (&[f32::INFINITY], &[f32::NEG_INFINITY], false),
            (&[f32::INFINITY], &[f32::MAX], false),
        ];
        for (a, b, want) in cases {
            assert_eq!(agree(&bytes(a), &bytes(b), tol).is_ok(), *want, "{a:?} vs {b:?}");
        }
        assert_eq!(agree(&bytes(&[1.0]), &bytes(&[1.0, 2.0]), tol), Err(Disagreement::Length { a: 4, b: 8 }));
    }

    #[test]
    fn bitwise_agreement_names_the_first_difference() {
        assert_eq!(agree(&[1, 2, 3], &[1, 2, 3], Tolerance::Bitwise), Ok(()));
        assert_eq!(agree(&[1, 2, 3], &[1, 9, 3], Tolerance::Bitwise), Err(Disagreement::At { index: 1 }));
    }

    #[test]
    fn quorum_needs_a_strict_majority() {
        let good = bytes(&[1.0, 2.0]);
        let close = bytes(&[1.0, 2.000_01]);
        let bad = bytes(&[1.0, 3.0]);
        assert_eq!(quorum(&[&good, &close], DEFAULT_FLOAT, 2), Some(vec![0, 1]));
        assert_eq!(quorum(&[&good, &bad], DEFAULT_FLOAT, 2), None);
        assert_eq!(quorum(&[&good, &bad, &close], DEFAULT_FLOAT, 2), Some(vec![0, 2]));
        // Two colluders agreeing on the same wrong answer outvote one honest node: replication alone cannot stop
        // collusion, which is why replicas go to distinct operators and canaries exist.
        assert_eq!(quorum(&[&good, &bad, &bad], DEFAULT_FLOAT, 2), Some(vec![1, 2]));
    }
}
