//! Reads the benchmark dataset: NumPy `.npy` arrays (f16, f32, i32, little-endian, C order) and
//! the JSONL payloads. f16 is widened to f32 here so the bench needs no extra crate.

use std::path::Path;

use anyhow::{bail, Context, Result};

pub struct Matrix<T> {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<T>,
}

impl<T> Matrix<T> {
    pub fn row(&self, i: usize) -> &[T] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }
}

fn read_npy(path: &Path) -> Result<(String, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        bail!("{} is not a .npy file", path.display());
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        _ => (u32::from_le_bytes(bytes[8..12].try_into()?) as usize, 12),
    };
    let header = std::str::from_utf8(&bytes[start..start + header_len])?;
    let field = |name: &str| -> Result<&str> {
        let at = header
            .find(name)
            .with_context(|| format!("{name} missing in npy header"))?;
        Ok(&header[at + name.len()..])
    };
    let descr = field("'descr':")?
        .trim_start()
        .trim_start_matches('\'')
        .split('\'')
        .next()
        .unwrap_or("")
        .to_string();
    if field("'fortran_order':")?.trim_start().starts_with("True") {
        bail!("{}: Fortran order is not supported", path.display());
    }
    let shape_text = field("'shape':")?;
    let shape_text = &shape_text
        [shape_text.find('(').context("shape")? + 1..shape_text.find(')').context("shape")?];
    let shape = shape_text
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse())
        .collect::<Result<Vec<usize>, _>>()?;
    Ok((descr, shape, bytes[start + header_len..].to_vec()))
}

fn shape2(shape: &[usize]) -> (usize, usize) {
    (shape[0], shape.get(1).copied().unwrap_or(1))
}

pub fn read_f32_matrix(path: &Path) -> Result<Matrix<f32>> {
    let (descr, shape, body) = read_npy(path)?;
    let (rows, cols) = shape2(&shape);
    let data: Vec<f32> = match descr.as_str() {
        "<f4" => body
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        "<f2" => body
            .chunks_exact(2)
            .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
            .collect(),
        other => bail!("{}: dtype {other} is not f16 or f32", path.display()),
    };
    Ok(Matrix { rows, cols, data })
}

pub fn read_i32_matrix(path: &Path) -> Result<Matrix<i32>> {
    let (descr, shape, body) = read_npy(path)?;
    if descr != "<i4" {
        bail!("{}: dtype {descr} is not i32", path.display());
    }
    let (rows, cols) = shape2(&shape);
    Ok(Matrix {
        rows,
        cols,
        data: body
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
    })
}

/// IEEE 754 half → single precision, including subnormals, infinities and NaN.
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // Subnormal: normalise the fraction.
            let shift = f.leading_zeros() - 21;
            sign | ((113 - shift) << 23) | (((f << shift) & 0x3ff) << 13)
        }
        (0x1f, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 112) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}

pub fn read_payloads(
    path: &Path,
    limit: usize,
) -> Result<Vec<serde_json::Map<String, serde_json::Value>>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .take(limit)
        .map(|l| serde_json::from_str(l).context("payload line is not a JSON object"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::f16_to_f32;

    #[test]
    fn half_precision_values_widen_exactly() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert_eq!(f16_to_f32(0x0001), 5.960_464_5e-8);
        assert!(f16_to_f32(0x7c00).is_infinite());
    }
}
