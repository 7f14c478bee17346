//! Weights out of GGUF's storage types into f32, exactly as llama.cpp's reference (`ggml`'s `dequantize_row_*`,
//! and the `gguf` Python package) computes them: F32, F16, BF16, Q8_0 (blocks of 32: an f16 scale and 32 i8s:
//! x = d·q) and Q4_0/Q4_1 (blocks of 32: an f16 scale, for Q4_1 an f16 minimum, and 16 bytes whose low nibbles are
//! elements 0–15 and high nibbles 16–31: x = d·(q − 8), or x = d·q + m). The inference engine's CPU path and its
//! kernels' references read weights through here.

use crate::gguf::TensorType;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QuantError {
    #[error("{0:?} is not dequantized here yet")]
    Unsupported(TensorType),
    #[error("{bytes} bytes are not whole {kind:?} blocks")]
    Length { kind: TensorType, bytes: usize },
}

/// The f32 values of `bytes`, stored as `kind`.
pub fn dequantize(kind: TensorType, bytes: &[u8]) -> Result<Vec<f32>, QuantError> {
    let (per_block, block_bytes) = kind.block();
    if !bytes.len().is_multiple_of(block_bytes as usize) {
        return Err(QuantError::Length { kind, bytes: bytes.len() });
    }
    let blocks = bytes.chunks_exact(block_bytes as usize);
    let mut out = Vec::with_capacity(blocks.len() * per_block as usize);
    match kind {
        TensorType::F32 => out.extend(blocks.map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
        TensorType::F16 => out.extend(blocks.map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]])))),
        TensorType::Bf16 => {
            out.extend(blocks.map(|b| f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16)))
        }
        TensorType::Q8_0 => {
            for b in blocks {
                let d = f16_to_f32(u16::from_le_bytes([b[0], b[1]]));
                out.extend(b[2..34].iter().map(|&q| d * f32::from(q as i8)));
            }
        }
        TensorType::Q4_0 => {
            for b in blocks {
                let d = f16_to_f32(u16::from_le_bytes([b[0], b[1]]));
                nibbles(&b[2..18], &mut out, |q| d * (f32::from(q) - 8.0));
            }
        }
        TensorType::Q4_1 => {
            for b in blocks {
                let d = f16_to_f32(u16::from_le_bytes([b[0], b[1]]));
                let m = f16_to_f32(u16::from_le_bytes([b[2], b[3]]));
                nibbles(&b[4..20], &mut out, |q| d * f32::from(q) + m);
            }
        }
        other => return Err(QuantError::Unsupported(other)),
    }
    Ok(out)
}

/// The 32 values of a 4-bit block: low nibbles first (elements 0–15), then high nibbles (16–31).
fn nibbles(qs: &[u8], out: &mut Vec<f32>, value: impl Fn(u8) -> f32) {
    out.extend(qs.iter().map(|&q| value(q & 0x0F)));
    out.extend(qs.iter().map(|&q| value(q >> 4)));
}

/// IEEE half to single precision, exactly (subnormals, infinities and NaN included).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1F);
    let frac = u32::from(h & 0x3FF);
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, _) => {
            // Subnormal: normalize the fraction.
            let shift = frac.leading_zeros() - 21;
            sign | ((127 - 15 + 1 - shift) << 23) | (((frac << shift) & 0x3FF) << 13)
        }
        (0x1F, _) => sign | 0x7F80_0000 | (frac << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (frac << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // A panic is the failure report.

    use super::*;

    #[test]
    fn halves_convert_exactly() {
        for (h, f) in [
            (0x3C00, 1.0f32),
            (0xC000, -2.0),
            (0x7BFF, 65504.0),
            (0x0001, 5.960_464_5e-8),
            (0x03FF, 6.097_555e-5),
            (0x0400, 6.103_515_6e-5),
            (0x8000, -0.0),
        ] {
            assert_eq!(f16_to_f32(h).to_bits(), f.to_bits(), "{h:#06x}");
        }
        assert_eq!(f16_to_f32(0x7C00), f32::INFINITY);
        assert!(f16_to_f32(0x7E00).is_nan());
    }

    /// A hand-made Q4_1 block: scale 0.5, minimum −1, nibbles 0..15 low and 15..0 high.
    #[test]
    fn a_q4_1_block_reads_low_nibbles_then_high() {
        let mut block = Vec::new();
        block.extend(0x3800u16.to_le_bytes()); // 0.5
        block.extend(0xBC00u16.to_le_bytes()); // -1
        block.extend((0..16u8).map(|i| i | ((15 - i) << 4)));
        let v = dequantize(TensorType::Q4_1, &block).unwrap();
        assert_eq!(v.len(), 32);
        assert_eq!((v[0], v[15], v[16], v[31]), (-1.0, 6.5, 6.5, -1.0));
        assert_eq!(
            dequantize(TensorType::Q4_1, &block[..19]),
            Err(QuantError::Length { kind: TensorType::Q4_1, bytes: 19 })
        );
        assert_eq!(dequantize(TensorType::Q6K, &[0; 210]), Err(QuantError::Unsupported(TensorType::Q6K)));
    }
}
