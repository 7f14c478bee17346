//! NumPy `.npy` files of matrices, the format people already have their data in: read (format versions 1–3,
//! little-endian f32 or f64, C or Fortran order, 1-D or 2-D) and written (version 1.0, `<f4`, C order), as the
//! format's specification (numpy.lib.format) describes. The CLI sends matmul operands as row-major little-endian
//! f32 blobs and writes results back as `.npy` when asked.

use anyhow::{Context, bail, ensure};

/// A row-major f32 matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

impl Matrix {
    /// Its little-endian bytes, row-major (what a matmul operand blob holds).
    pub fn le_bytes(&self) -> Vec<u8> {
        self.data.iter().flat_map(|x| x.to_le_bytes()).collect()
    }
}

const MAGIC: &[u8] = b"\x93NUMPY";
/// Largest header this reader accepts (numpy's own limit for safe loading is 10,000 bytes).
const MAX_HEADER_BYTES: usize = 10_000;

/// Reads an `.npy` file's bytes.
pub fn read(bytes: &[u8]) -> anyhow::Result<Matrix> {
    ensure!(bytes.len() >= 10 && &bytes[..6] == MAGIC, "not a .npy file (no \\x93NUMPY magic)");
    let (header_len, start) = match bytes[6] {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 => {
            ensure!(bytes.len() >= 12, "truncated .npy header");
            (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12)
        }
        v => bail!(".npy format version {v} is not supported (1–3 are)"),
    };
    ensure!(header_len <= MAX_HEADER_BYTES, ".npy header of {header_len} bytes is too long");
    let header = bytes.get(start..start + header_len).context("truncated .npy header")?;
    let header = std::str::from_utf8(header).context(".npy header is not text")?;
    let descr = dict_value(header, "descr").context(".npy header has no 'descr'")?;
    let fortran = dict_value(header, "fortran_order").context(".npy header has no 'fortran_order'")?;
    let shape = dict_value(header, "shape").context(".npy header has no 'shape'")?;
    let dims = parse_shape(shape)?;
    let (rows, cols) = match dims[..] {
        [n] => (1, n),
        [r, c] => (r, c),
        _ => bail!("a matrix has 1 or 2 dimensions, this array has {}", dims.len()),
    };
    let count = rows.checked_mul(cols).context(".npy shape overflows")?;
    let body = &bytes[start + header_len..];
    let values: Vec<f32> = match descr.trim_matches(|c| c == '\'' || c == '"') {
        "<f4" => {
            ensure!(body.len() == 4 * count, ".npy body has {} bytes, the shape needs {}", body.len(), 4 * count);
            body.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
        }
        "<f8" => {
            ensure!(body.len() == 8 * count, ".npy body has {} bytes, the shape needs {}", body.len(), 8 * count);
            body.chunks_exact(8)
                .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
                .collect()
        }
        other => bail!(".npy dtype {other} is not supported (little-endian float32 '<f4' or float64 '<f8' are)"),
    };
    ensure!(values.iter().all(|v| v.is_finite()), ".npy matrix holds a non-finite value");
    let data = match fortran.trim() {
        "False" => values,
        // Column-major on disk: transpose into row-major.
        "True" => (0..rows).flat_map(|r| (0..cols).map(move |c| (r, c))).map(|(r, c)| values[c * rows + r]).collect(),
        other => bail!(".npy 'fortran_order' is {other}"),
    };
    Ok(Matrix { rows, cols, data })
}

/// Writes a matrix as an `.npy` file (version 1.0, `<f4`, C order; the header padded so the data is 64-byte
/// aligned, as numpy writes it).
pub fn write(m: &Matrix) -> Vec<u8> {
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, {}), }}", m.rows, m.cols);
    let unpadded = MAGIC.len() + 4 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&m.le_bytes());
    out
}

/// The text of `key`'s value in the header's Python dict literal (up to the next top-level comma or brace).
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header.find(&format!("'{key}'")).or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = header[at + key.len() + 2..].trim_start().strip_prefix(':')?.trim_start();
    let end = if rest.starts_with('(') { rest.find(')')? + 1 } else { rest.find([',', '}'])? };
    Some(rest[..end].trim())
}

/// `(2, 3)`, `(6,)` or `()` → the dimensions.
fn parse_shape(shape: &str) -> anyhow::Result<Vec<usize>> {
    let inner = shape.strip_prefix('(').and_then(|s| s.strip_suffix(')')).context("malformed .npy shape")?;
    inner
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.parse::<usize>().with_context(|| format!("malformed .npy dimension {d}")))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // A panic is the failure report.

    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)).unwrap()
    }

    /// Files written by numpy 2.4 (`np.save` of `arange(6).reshape(2, 3) * 0.5` as float32, as float64, and in
    /// Fortran order) read as the same row-major matrix.
    #[test]
    fn files_numpy_wrote_read_as_the_same_matrix() {
        let want = Matrix { rows: 2, cols: 3, data: vec![0.0, 0.5, 1.0, 1.5, 2.0, 2.5] };
        for name in ["a23.npy", "a23_f8.npy", "a23_fortran.npy"] {
            assert_eq!(read(&fixture(name)).unwrap(), want, "{name}");
        }
    }

    /// What this writes is byte for byte what numpy writes for the same matrix.
    #[test]
    fn written_files_are_numpys_bytes() {
        let m = read(&fixture("a23.npy")).unwrap();
        assert_eq!(write(&m), fixture("a23.npy"));
        let wide = Matrix { rows: 100, cols: 1000, data: vec![1.0; 100_000] };
        assert_eq!(read(&write(&wide)).unwrap(), wide);
    }

    /// Bad files are refused with a reason, not read as something else.
    #[test]
    fn bad_files_are_refused() {
        let good = fixture("a23.npy");
        let check = |bytes: Vec<u8>, why: &str| {
            let err = read(&bytes).unwrap_err().to_string();
            assert!(err.contains(why), "{err:?} does not say {why:?}");
        };
        check(b"not numpy".to_vec(), "magic");
        check(good[..good.len() - 4].to_vec(), "body has");
        let mut big_endian = good.clone();
        let at = good.windows(3).position(|w| w == b"<f4").unwrap();
        big_endian[at] = b'>';
        check(big_endian, "dtype");
        let mut three_d = good.clone();
        let at = good.windows(9).position(|w| w == b"(2, 3), }").unwrap();
        three_d[at..at + 9].copy_from_slice(b"(1,2,3),}");
        check(three_d, "dimensions");
        let mut nan = good.clone();
        nan[128..132].copy_from_slice(&f32::NAN.to_le_bytes());
        check(nan, "non-finite");
    }
}
