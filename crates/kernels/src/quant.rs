//! Weights in GGUF's storage types: exact conversion to f32 as llama.cpp's reference computes it (`ggml`'s
//! `dequantize_row_*` and the `gguf` Python package): F32, F16, BF16, Q8_0 (blocks of 32: an f16 scale and 32 i8s:
//! x = d·q) and Q4_0/Q4_1 (blocks of 32: an f16 scale, for Q4_1 an f16 minimum, and 16 bytes whose low nibbles are
//! elements 0–15 and high nibbles 16–31: x = d·(q − 8), or x = d·q + m). And [`QMatrix`], a weight matrix kept in
//! its storage type with the CPU path's products that read it directly: decoding one token is memory-bound, so the
//! 4-bit weights are streamed as they are (≈ 80 MB for SmolLM2) rather than as f32 (≈ 540 MB).

use std::sync::Arc;

use rayon::prelude::*;

/// The storage types read here (ggml's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuantType {
    F32,
    F16,
    Bf16,
    Q8_0,
    Q4_0,
    Q4_1,
}

impl QuantType {
    /// Elements per block and bytes per block (ggml's `blck_size` and `type_size`).
    pub fn block(self) -> (usize, usize) {
        match self {
            QuantType::F32 => (1, 4),
            QuantType::F16 | QuantType::Bf16 => (1, 2),
            QuantType::Q8_0 => (32, 34),
            QuantType::Q4_0 => (32, 18),
            QuantType::Q4_1 => (32, 20),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QuantError {
    #[error("{bytes} bytes are not whole {kind:?} blocks")]
    Length { kind: QuantType, bytes: usize },
    #[error("a {rows}×{cols} {kind:?} matrix needs {expected} bytes, got {got}")]
    MatrixSize { kind: QuantType, rows: usize, cols: usize, expected: usize, got: usize },
    #[error("{kind:?} rows of {cols} are not whole blocks")]
    RowBlocks { kind: QuantType, cols: usize },
    #[error("{0:?} matrices are not multiplied here")]
    MatrixType(QuantType),
}

/// The f32 values of `bytes`, stored as `kind`.
pub fn dequantize(kind: QuantType, bytes: &[u8]) -> Result<Vec<f32>, QuantError> {
    let (per_block, block_bytes) = kind.block();
    if !bytes.len().is_multiple_of(block_bytes) {
        return Err(QuantError::Length { kind, bytes: bytes.len() });
    }
    let mut out = Vec::with_capacity(bytes.len() / block_bytes * per_block);
    dequantize_into(kind, bytes, &mut out);
    Ok(out)
}

/// Appends the values of whole blocks `bytes` to `out`.
fn dequantize_into(kind: QuantType, bytes: &[u8], out: &mut Vec<f32>) {
    let blocks = bytes.chunks_exact(kind.block().1);
    match kind {
        QuantType::F32 => out.extend(blocks.map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
        QuantType::F16 => out.extend(blocks.map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]])))),
        QuantType::Bf16 => {
            out.extend(blocks.map(|b| f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16)))
        }
        QuantType::Q8_0 => {
            for b in blocks {
                let d = half(b, 0);
                out.extend(b[2..34].iter().map(|&q| d * f32::from(q as i8)));
            }
        }
        QuantType::Q4_0 => {
            for b in blocks {
                let d = half(b, 0);
                nibbles(&b[2..18], out, |q| d * (f32::from(q) - 8.0));
            }
        }
        QuantType::Q4_1 => {
            for b in blocks {
                let (d, m) = (half(b, 0), half(b, 2));
                nibbles(&b[4..20], out, |q| d * f32::from(q) + m);
            }
        }
    }
}

fn half(b: &[u8], at: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[at], b[at + 1]]))
}

/// The 32 values of a 4-bit block: low nibbles first (elements 0–15), then high nibbles (16–31).
fn nibbles(qs: &[u8], out: &mut Vec<f32>, value: impl Fn(u8) -> f32) {
    out.extend(qs.iter().map(|&q| value(q & 0x0F)));
    out.extend(qs.iter().map(|&q| value(q >> 4)));
}
/// Rows one worker takes at a time in a matrix–vector product: scheduling costs little next to reading them, and
/// two workers still share a 192-row matrix.
const MATVEC_ROWS_PER_TASK: usize = 32;
/// Token rows from which a product dequantizes the weights once and runs the GEMM instead of one matvec per row.
pub const GEMM_MIN_ROWS: usize = 4;
/// Fewest token rows worth a thread of their own in a GEMM.
const GEMM_MIN_ROWS_PER_THREAD: usize = 16;

/// A weight matrix `[rows × cols]` (a layer's `[out × in]`, GGUF's `ne = [cols, rows]`) in its storage type.
#[derive(Clone, Debug)]
pub struct QMatrix {
    kind: QuantType,
    rows: usize,
    cols: usize,
    storage: Storage,
}

/// f32 weights stay f32 (no conversion per product); the block types stay as their bytes. Shared (`Arc`): a clone
/// of a matrix is a handle, so the CPU pool's worker can hold it.
#[derive(Clone, Debug)]
enum Storage {
    F32(Arc<[f32]>),
    Blocks(Arc<[u8]>),
}

impl QMatrix {
    /// Wraps `data`, which must be exactly `rows` rows of `cols` elements of `kind` (F32, Q8_0 or Q4_1).
    pub fn new(kind: QuantType, rows: usize, cols: usize, data: Vec<u8>) -> Result<QMatrix, QuantError> {
        let (per_block, block_bytes) = kind.block();
        if !cols.is_multiple_of(per_block) {
            return Err(QuantError::RowBlocks { kind, cols });
        }
        let expected = rows * (cols / per_block) * block_bytes;
        if data.len() != expected {
            return Err(QuantError::MatrixSize { kind, rows, cols, expected, got: data.len() });
        }
        let storage = match kind {
            QuantType::F32 => Storage::F32(dequantize(kind, &data)?.into()),
            QuantType::Q8_0 | QuantType::Q4_1 => Storage::Blocks(data.into()),
            other => return Err(QuantError::MatrixType(other)),
        };
        Ok(QMatrix { kind, rows, cols, storage })
    }

    /// An f32 matrix from its row-major values.
    pub fn from_f32(rows: usize, cols: usize, values: Vec<f32>) -> Result<QMatrix, QuantError> {
        if values.len() != rows * cols {
            let (expected, got) = (rows * cols * 4, values.len() * 4);
            return Err(QuantError::MatrixSize { kind: QuantType::F32, rows, cols, expected, got });
        }
        Ok(QMatrix { kind: QuantType::F32, rows, cols, storage: Storage::F32(values.into()) })
    }

    pub fn kind(&self) -> QuantType {
        self.kind
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The stored bytes of the blocks (empty for f32): what a GPU buffer holds.
    pub fn block_bytes(&self) -> &[u8] {
        match &self.storage {
            Storage::Blocks(b) => b,
            Storage::F32(_) => &[],
        }
    }

    fn row_bytes(&self) -> usize {
        self.cols / self.kind.block().0 * self.kind.block().1
    }

    /// Row `r` in f32 (an embedding lookup), appended to `out`.
    pub fn row_into(&self, r: usize, out: &mut Vec<f32>) {
        assert!(r < self.rows, "row {r} of {}", self.rows);
        match &self.storage {
            Storage::F32(v) => out.extend_from_slice(&v[r * self.cols..(r + 1) * self.cols]),
            Storage::Blocks(b) => {
                let rb = self.row_bytes();
                dequantize_into(self.kind, &b[r * rb..(r + 1) * rb], out);
            }
        }
    }

    /// Per weight, the magnitude of the terms a product sums for it, row-major: |w| for f32 and Q8_0 (d·q), and
    /// |d|·q + |m| for Q4_1, whose products add d·Σq·x and m·Σx per block — two terms that nearly cancel, so an
    /// honest product rounds like one over these larger terms (what a verifier's rounding bound must use).
    pub fn magnitudes(&self) -> Vec<f32> {
        match (&self.storage, self.kind) {
            (Storage::Blocks(b), QuantType::Q4_1) => {
                let mut out = Vec::with_capacity(self.rows * self.cols);
                for block in b.chunks_exact(QuantType::Q4_1.block().1) {
                    let (d, m) = (half(block, 0).abs(), half(block, 2).abs());
                    nibbles(&block[4..20], &mut out, |q| d * f32::from(q) + m);
                }
                out
            }
            _ => self.to_f32().into_iter().map(f32::abs).collect(),
        }
    }

    /// The whole matrix in f32, row-major.
    pub fn to_f32(&self) -> Vec<f32> {
        match &self.storage {
            Storage::F32(v) => v.to_vec(),
            Storage::Blocks(b) => {
                let rb = self.row_bytes() * MATVEC_ROWS_PER_TASK;
                let parts: Vec<Vec<f32>> = b
                    .par_chunks(rb)
                    .map(|chunk| {
                        let mut out = Vec::with_capacity(chunk.len() / self.kind.block().1 * 32);
                        dequantize_into(self.kind, chunk, &mut out);
                        out
                    })
                    .collect();
                parts.concat()
            }
        }
    }

    /// y[n × rows] = x[n × cols] · Wᵀ: one matvec per row for a few rows (decoding), else the weights in f32 once
    /// and the GEMM (prefill, embedding batches).
    pub fn matmul(&self, x: &[f32], n: usize, y: &mut [f32]) {
        assert!(x.len() == n * self.cols && y.len() == n * self.rows, "matmul operands do not fit the matrix");
        if n < GEMM_MIN_ROWS {
            for (xr, yr) in x.chunks_exact(self.cols).zip(y.chunks_exact_mut(self.rows)) {
                self.matvec(xr, yr);
            }
            return;
        }
        // The GEMM packs both operands on every call, so the threads split the larger one and each packs the
        // smaller whole (the GEMM crate's own threading uses physical cores only: one on a two-thread VM).
        let threads = rayon::current_num_threads();
        if n >= self.rows {
            // Many tokens (an embedding batch): each thread takes a share of the tokens, times all of W.
            let owned;
            let w: &[f32] = match &self.storage {
                Storage::F32(v) => v,
                Storage::Blocks(_) => {
                    owned = self.to_f32();
                    &owned
                }
            };
            let chunk = n.div_ceil(threads).max(GEMM_MIN_ROWS_PER_THREAD);
            x.par_chunks(chunk * self.cols).zip(y.par_chunks_mut(chunk * self.rows)).for_each(|(xc, yc)| {
                crate::cpu::sgemm_strided(xc, w, (1, self.cols), yc, xc.len() / self.cols, self.rows, self.cols);
            });
            return;
        }
        // Fewer tokens than weight rows (a prompt): each thread dequantizes and packs only its share of W's rows,
        // times all tokens; the shares are laid side by side in y.
        let chunk = self.rows.div_ceil(threads).max(GEMM_MIN_ROWS_PER_THREAD);
        let parts: Vec<(usize, Vec<f32>)> = (0..self.rows.div_ceil(chunk))
            .into_par_iter()
            .map(|c| {
                let (r0, r1) = (c * chunk, ((c + 1) * chunk).min(self.rows));
                let owned;
                let w: &[f32] = match &self.storage {
                    Storage::F32(v) => &v[r0 * self.cols..r1 * self.cols],
                    Storage::Blocks(b) => {
                        let rb = self.row_bytes();
                        let mut dense = Vec::with_capacity((r1 - r0) * self.cols);
                        dequantize_into(self.kind, &b[r0 * rb..r1 * rb], &mut dense);
                        owned = dense;
                        &owned
                    }
                };
                let mut out = vec![0.0; n * (r1 - r0)];
                crate::cpu::sgemm_strided(x, w, (1, self.cols), &mut out, n, r1 - r0, self.cols);
                (r0, out)
            })
            .collect();
        for (r0, out) in parts {
            let width = out.len() / n;
            for (yr, part) in y.chunks_exact_mut(self.rows).zip(out.chunks_exact(width)) {
                yr[r0..r0 + width].copy_from_slice(part);
            }
        }
    }

    /// y[rows] = W · x[cols], reading the blocks directly; rows are shared among the worker threads.
    pub fn matvec(&self, x: &[f32], y: &mut [f32]) {
        matvec_many(x, &mut [(self, y)]);
    }

    /// `ys[i]` = rows `first..` of W · x, `ys.len()` of them.
    fn rows_into(&self, first: usize, x: &[f32], block_sums: &[f32], ys: &mut [f32]) {
        match &self.storage {
            Storage::F32(w) => {
                for (i, yv) in ys.iter_mut().enumerate() {
                    *yv = dot_f32(&w[(first + i) * self.cols..(first + i + 1) * self.cols], x);
                }
            }
            Storage::Blocks(b) => {
                let rb = self.row_bytes();
                simd::block_rows(self.kind, &b[first * rb..(first + ys.len()) * rb], x, block_sums, ys)
            }
        }
    }
}

/// y_i = W_i · x for several matrices of the same width in one parallel region (a layer's q, k and v; its gate
/// and up): one hand-off to the worker threads instead of one per matrix — a decoding step is hundreds of small
/// products, and each hand-off costs the threads a wake-up.
pub fn matvec_many(x: &[f32], outputs: &mut [(&QMatrix, &mut [f32])]) {
    // Q4_1's minimum multiplies the sum of x over each block: once per block, not once per row.
    let block_sums: Vec<f32> = x.chunks_exact(32).map(|c| c.iter().sum()).collect();
    let mut tasks = Vec::new();
    for (m, y) in outputs.iter_mut() {
        assert!(x.len() == m.cols && y.len() == m.rows, "matvec operands do not fit the matrix");
        for (c, ys) in y.chunks_mut(MATVEC_ROWS_PER_TASK).enumerate() {
            tasks.push((*m, c * MATVEC_ROWS_PER_TASK, ys));
        }
    }
    tasks.into_par_iter().for_each(|(m, first, ys)| m.rows_into(first, x, &block_sums, ys));
}

/// y_i = W_i · x for several matrices of the same width, the rows split in two between this thread and `pool`'s
/// spinning helper (a decoding step: see [`crate::pool`]). The matrices' rows count as one sequence; each side
/// takes one contiguous half of it.
pub fn matvec_pooled(pool: &crate::pool::SpinPool, x: &[f32], mats: &[&QMatrix]) -> Vec<Vec<f32>> {
    for m in mats {
        assert_eq!(x.len(), m.cols, "matvec operand does not fit the matrix");
    }
    let total: usize = mats.iter().map(|m| m.rows).sum();
    let half = total / 2;
    let owned: Vec<QMatrix> = mats.iter().map(|&m| m.clone()).collect();
    let x_owned = x.to_vec();
    let (theirs, mine) = pool
        .join(Box::new(move || flat_rows(&owned.iter().collect::<Vec<_>>(), &x_owned, half, total)), || {
            flat_rows(mats, x, 0, half)
        });
    let flat = [mine, theirs].concat();
    let mut start = 0;
    mats.iter()
        .map(|m| {
            start += m.rows;
            flat[start - m.rows..start].to_vec()
        })
        .collect()
}

/// Rows `start..end` of the matrices' rows taken as one sequence, times x.
fn flat_rows(mats: &[&QMatrix], x: &[f32], start: usize, end: usize) -> Vec<f32> {
    let block_sums: Vec<f32> = x.chunks_exact(32).map(|c| c.iter().sum()).collect();
    let mut out = vec![0.0; end - start];
    let mut offset = 0;
    for m in mats {
        let (from, to) = (start.max(offset), end.min(offset + m.rows));
        if from < to {
            m.rows_into(from - offset, x, &block_sums, &mut out[from - start..to - start]);
        }
        offset += m.rows;
    }
    out
}

/// Σ a·b in eight running sums (the compiler keeps them in one vector register).
#[inline(always)]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac.remainder().iter().zip(bc.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ac.zip(bc) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Every f16's f32 value: a block's scales are read with one load each instead of a branchy conversion (the
/// scales are 2 of every 20 bytes a Q4_1 product reads).
static HALF_TABLE: std::sync::LazyLock<Box<[f32; 65536]>> = std::sync::LazyLock::new(|| {
    let mut table = Box::new([0f32; 65536]);
    for (h, v) in table.iter_mut().enumerate() {
        *v = f16_to_f32(h as u16);
    }
    table
});

/// `ys[i]` = row i of `rows` (whole `kind` rows) · x.
#[inline(always)]
fn block_rows_portable(kind: QuantType, rows: &[u8], x: &[f32], block_sums: &[f32], ys: &mut [f32]) {
    let table: &[f32; 65536] = &HALF_TABLE;
    let half = |b: &[u8], at: usize| table[usize::from(u16::from_le_bytes([b[at], b[at + 1]]))];
    let rb = rows.len() / ys.len();
    // Sixteen running sums per row, each block's scale applied lane by lane: one horizontal sum per row.
    for (yv, row) in ys.iter_mut().zip(rows.chunks_exact(rb)) {
        let mut acc = [0f32; 16];
        let mut minimums = 0f32;
        if kind == QuantType::Q4_1 {
            // Σ_blocks d·Σ q·x + m·Σ x.
            for ((b, xb), &xsum) in row.as_chunks::<20>().0.iter().zip(x.as_chunks::<32>().0).zip(block_sums) {
                let d = half(b, 0);
                for j in 0..16 {
                    let q = b[4 + j];
                    acc[j] += d * (f32::from(q & 0x0F) * xb[j] + f32::from(q >> 4) * xb[j + 16]);
                }
                minimums += half(b, 2) * xsum;
            }
        } else {
            // Q8_0: Σ_blocks d·Σ q·x.
            for (b, xb) in row.as_chunks::<34>().0.iter().zip(x.as_chunks::<32>().0) {
                let d = half(b, 0);
                for j in 0..16 {
                    acc[j] += d * (f32::from(b[2 + j] as i8) * xb[j] + f32::from(b[18 + j] as i8) * xb[j + 16]);
                }
            }
        }
        *yv = acc.iter().sum::<f32>() + minimums;
    }
}

/// The hot loop compiled three times: portable, with AVX2 and FMA, with AVX-512 (chosen at run time by the CPU).
mod simd {
    #![allow(unsafe_code)]

    use super::QuantType;

    pub(super) fn block_rows(kind: QuantType, rows: &[u8], x: &[f32], block_sums: &[f32], ys: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bw") {
            // SAFETY: the CPU was just checked to have AVX-512 F and BW, the only requirement of this function.
            return unsafe { block_rows_avx512(kind, rows, x, block_sums, ys) };
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU was just checked to have AVX2 and FMA, the only requirement of this function.
            return unsafe { block_rows_avx2(kind, rows, x, block_sums, ys) };
        }
        super::block_rows_portable(kind, rows, x, block_sums, ys)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
    fn block_rows_avx512(kind: QuantType, rows: &[u8], x: &[f32], block_sums: &[f32], ys: &mut [f32]) {
        super::block_rows_portable(kind, rows, x, block_sums, ys)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn block_rows_avx2(kind: QuantType, rows: &[u8], x: &[f32], block_sums: &[f32], ys: &mut [f32]) {
        super::block_rows_portable(kind, rows, x, block_sums, ys)
    }
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
        let v = dequantize(QuantType::Q4_1, &block).unwrap();
        assert_eq!(v.len(), 32);
        assert_eq!((v[0], v[15], v[16], v[31]), (-1.0, 6.5, 6.5, -1.0));
        assert_eq!(
            dequantize(QuantType::Q4_1, &block[..19]),
            Err(QuantError::Length { kind: QuantType::Q4_1, bytes: 19 })
        );
    }
}
