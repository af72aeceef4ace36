//! Reading vector datasets: NumPy `.npy` matrices (f16 or f32, little-endian, C order; i32 for
//! ground truth), `.fvecs` files (each row: i32 dimension, then that many f32), and JSONL
//! payload files (one JSON object per row). Rows are streamed, so files larger than memory
//! load in constant space, and a loader can start at any row (resume). f16 is widened here so
//! that no extra crate is needed.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// A whole matrix in memory (benchmarks: queries, ground truth, base vectors).
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Element {
    F16,
    F32,
    I32,
}

impl Element {
    fn size(self) -> usize {
        match self {
            Element::F16 => 2,
            Element::F32 | Element::I32 => 4,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// `.npy`: a header, then rows × cols elements.
    Npy { element: Element, data_offset: u64 },
    /// `.fvecs`: every row prefixed by its dimension as i32.
    Fvecs,
}

/// A file of vectors read row by row.
pub struct VectorFile {
    path: PathBuf,
    reader: BufReader<File>,
    layout: Layout,
    pub rows: usize,
    pub cols: usize,
    /// Index of the next row `next_row` returns.
    position: usize,
}

impl VectorFile {
    /// Opens `.npy` (f16/f32) or `.fvecs`, chosen by the file's extension.
    pub fn open(path: &Path) -> Result<VectorFile> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let len = file.metadata()?.len();
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let (layout, rows, cols) = match ext {
            "npy" => {
                let header = read_npy_header(&mut reader)
                    .with_context(|| format!("reading the header of {}", path.display()))?;
                if header.element == Element::I32 {
                    bail!("{}: vectors must be f16 or f32, not i32", path.display());
                }
                let layout = Layout::Npy {
                    element: header.element,
                    data_offset: header.data_offset,
                };
                (layout, header.rows, header.cols)
            }
            "fvecs" => {
                let mut dim = [0u8; 4];
                reader
                    .read_exact(&mut dim)
                    .with_context(|| format!("{} is empty", path.display()))?;
                let cols = i32::from_le_bytes(dim);
                if cols <= 0 {
                    bail!("{}: first row has dimension {cols}", path.display());
                }
                let row_bytes = 4 + 4 * cols as u64;
                if len % row_bytes != 0 {
                    bail!(
                        "{}: size {len} is not a multiple of the row size {row_bytes} (dimension {cols})",
                        path.display()
                    );
                }
                reader.seek(SeekFrom::Start(0))?;
                (Layout::Fvecs, (len / row_bytes) as usize, cols as usize)
            }
            other => bail!(
                "{}: unknown vector file type {other:?}; use .npy, .fvecs or .jsonl",
                path.display()
            ),
        };
        Ok(VectorFile {
            path: path.to_path_buf(),
            reader,
            layout,
            rows,
            cols,
            position: 0,
        })
    }

    fn row_bytes(&self) -> u64 {
        match self.layout {
            Layout::Npy { element, .. } => (self.cols * element.size()) as u64,
            Layout::Fvecs => 4 + 4 * self.cols as u64,
        }
    }

    /// Moves to row `row` (rows are fixed-size, so this is a seek).
    pub fn seek_row(&mut self, row: usize) -> Result<()> {
        let start = match self.layout {
            Layout::Npy { data_offset, .. } => data_offset,
            Layout::Fvecs => 0,
        };
        self.reader
            .seek(SeekFrom::Start(start + row as u64 * self.row_bytes()))?;
        self.position = row;
        Ok(())
    }

    /// The next row as f32, or `None` at the end.
    pub fn next_row(&mut self) -> Result<Option<Vec<f32>>> {
        if self.position >= self.rows {
            return Ok(None);
        }
        let mut bytes = vec![0u8; self.row_bytes() as usize];
        self.reader.read_exact(&mut bytes).with_context(|| {
            format!(
                "{}: row {} is cut short",
                self.path.display(),
                self.position
            )
        })?;
        self.position += 1;
        let row = match self.layout {
            Layout::Npy {
                element: Element::F16,
                ..
            } => bytes
                .chunks_exact(2)
                .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
            Layout::Npy { .. } => le_f32s(&bytes),
            Layout::Fvecs => {
                let dim = i32::from_le_bytes(bytes[..4].try_into().expect("4 bytes"));
                if dim as usize != self.cols {
                    bail!(
                        "{}: row {} has dimension {dim}, the first row {}",
                        self.path.display(),
                        self.position - 1,
                        self.cols
                    );
                }
                le_f32s(&bytes[4..])
            }
        };
        Ok(Some(row))
    }
}

fn le_f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4-byte chunk")))
        .collect()
}

struct NpyHeader {
    element: Element,
    rows: usize,
    cols: usize,
    data_offset: u64,
}

fn read_npy_header(reader: &mut impl Read) -> Result<NpyHeader> {
    let mut magic = [0u8; 8];
    reader.read_exact(&mut magic)?;
    if &magic[..6] != b"\x93NUMPY" {
        bail!("not a .npy file");
    }
    let (header_len, prefix) = if magic[6] == 1 {
        let mut len = [0u8; 2];
        reader.read_exact(&mut len)?;
        (u16::from_le_bytes(len) as usize, 10)
    } else {
        let mut len = [0u8; 4];
        reader.read_exact(&mut len)?;
        (u32::from_le_bytes(len) as usize, 12)
    };
    let mut header = vec![0u8; header_len];
    reader.read_exact(&mut header)?;
    let header = String::from_utf8(header)?;
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
        .unwrap_or("");
    let element = match descr {
        "<f2" => Element::F16,
        "<f4" => Element::F32,
        "<i4" => Element::I32,
        other => bail!("dtype {other} is not supported (f16, f32 or i32, little-endian)"),
    };
    if field("'fortran_order':")?.trim_start().starts_with("True") {
        bail!("Fortran order is not supported");
    }
    let shape_text = field("'shape':")?;
    let shape_text = &shape_text
        [shape_text.find('(').context("shape")? + 1..shape_text.find(')').context("shape")?];
    let shape = shape_text
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse())
        .collect::<Result<Vec<usize>, _>>()?;
    Ok(NpyHeader {
        element,
        rows: shape.first().copied().unwrap_or(0),
        cols: shape.get(1).copied().unwrap_or(1),
        data_offset: (prefix + header_len) as u64,
    })
}

/// A whole f16/f32 `.npy` or `.fvecs` file as an f32 matrix.
pub fn read_f32_matrix(path: &Path) -> Result<Matrix<f32>> {
    let mut file = VectorFile::open(path)?;
    let mut data = Vec::with_capacity(file.rows * file.cols);
    while let Some(row) = file.next_row()? {
        data.extend_from_slice(&row);
    }
    Ok(Matrix {
        rows: file.rows,
        cols: file.cols,
        data,
    })
}

/// A whole i32 `.npy` file (ground truth).
pub fn read_i32_matrix(path: &Path) -> Result<Matrix<i32>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let header = read_npy_header(&mut bytes.as_slice())
        .with_context(|| format!("reading the header of {}", path.display()))?;
    if header.element != Element::I32 {
        bail!("{}: dtype is not i32", path.display());
    }
    let body = &bytes[header.data_offset as usize..];
    Ok(Matrix {
        rows: header.rows,
        cols: header.cols,
        data: body
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().expect("4-byte chunk")))
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

pub type JsonObject = serde_json::Map<String, serde_json::Value>;

/// The first `limit` lines of a JSONL file, each a JSON object.
pub fn read_payloads(path: &Path, limit: usize) -> Result<Vec<JsonObject>> {
    let mut lines = JsonLines::open(path)?;
    let mut out = Vec::new();
    while out.len() < limit {
        match lines.next_object()? {
            Some(o) => out.push(o),
            None => break,
        }
    }
    Ok(out)
}

/// A JSONL file read one object per line.
pub struct JsonLines {
    path: PathBuf,
    reader: BufReader<File>,
    line: usize,
}

impl JsonLines {
    pub fn open(path: &Path) -> Result<JsonLines> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        Ok(JsonLines {
            path: path.to_path_buf(),
            reader: BufReader::with_capacity(1 << 20, file),
            line: 0,
        })
    }

    /// Skips `n` rows (resume). Rows are non-empty lines, as `next_object` and the row count
    /// see them, so a file with blank lines resumes at the right row.
    pub fn skip(&mut self, n: usize) -> Result<()> {
        let mut buf = Vec::new();
        let mut skipped = 0;
        while skipped < n {
            buf.clear();
            if self.reader.read_until(b'\n', &mut buf)? == 0 {
                break;
            }
            self.line += 1;
            if !buf.trim_ascii().is_empty() {
                skipped += 1;
            }
        }
        Ok(())
    }

    /// The next non-empty line as a JSON object, or `None` at the end.
    pub fn next_object(&mut self) -> Result<Option<JsonObject>> {
        let mut text = String::new();
        loop {
            text.clear();
            if self.reader.read_line(&mut text)? == 0 {
                return Ok(None);
            }
            self.line += 1;
            if !text.trim().is_empty() {
                break;
            }
        }
        serde_json::from_str(&text).map(Some).with_context(|| {
            format!(
                "{} line {}: not a JSON object",
                self.path.display(),
                self.line
            )
        })
    }
}

/// Rows in a JSONL file (for a progress bar); reads the whole file once.
pub fn count_lines(path: &Path) -> Result<usize> {
    let mut reader = BufReader::with_capacity(1 << 20, File::open(path)?);
    let mut n = 0;
    let mut buf = Vec::new();
    while reader.read_until(b'\n', &mut buf)? > 0 {
        if buf.iter().any(|b| !b.is_ascii_whitespace()) {
            n += 1;
        }
        buf.clear();
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_values_widen_exactly() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert_eq!(f16_to_f32(0x0001), 5.960_464_5e-8);
        assert!(f16_to_f32(0x7c00).is_infinite());
    }

    fn npy_f32(rows: &[[f32; 3]]) -> Vec<u8> {
        let mut header = format!(
            "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, 3), }}",
            rows.len()
        );
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        for v in rows.iter().flatten() {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    fn fvecs(rows: &[[f32; 3]]) -> Vec<u8> {
        let mut out = Vec::new();
        for row in rows {
            out.extend_from_slice(&3i32.to_le_bytes());
            for v in row {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        out
    }

    #[test]
    fn npy_and_fvecs_stream_the_same_rows_and_seek_to_any_row() {
        let rows = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.5]];
        let dir = tempfile::tempdir().unwrap();
        for (name, bytes) in [("a.npy", npy_f32(&rows)), ("a.fvecs", fvecs(&rows))] {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            let mut f = VectorFile::open(&path).unwrap();
            assert_eq!((f.rows, f.cols), (3, 3), "{name}");
            assert_eq!(f.next_row().unwrap().unwrap(), rows[0]);
            f.seek_row(2).unwrap();
            assert_eq!(f.next_row().unwrap().unwrap(), rows[2], "{name}");
            assert!(f.next_row().unwrap().is_none());
            assert_eq!(read_f32_matrix(&path).unwrap().row(1), rows[1]);
        }
    }

    #[test]
    fn a_truncated_fvecs_file_is_refused_with_its_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.fvecs");
        let mut bytes = fvecs(&[[1.0, 2.0, 3.0]]);
        bytes.pop();
        std::fs::write(&path, bytes).unwrap();
        let err = VectorFile::open(&path).err().unwrap().to_string();
        assert!(err.contains("not a multiple of the row size 16"), "{err}");
    }
}

#[cfg(test)]
mod json_lines_tests {
    use super::*;

    #[test]
    fn resuming_skips_rows_not_blank_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.jsonl");
        std::fs::write(&path, "{\"a\":0}\n\n{\"a\":1}\n   \n{\"a\":2}\n").unwrap();
        let mut lines = JsonLines::open(&path).unwrap();
        lines.skip(2).unwrap();
        let next = lines.next_object().unwrap().unwrap();
        assert_eq!(next["a"], 2);
        assert!(lines.next_object().unwrap().is_none());
    }
}

/// The `k` rows among `rows` with the highest inner product with `query`, best first (equal
/// scores: the lower row first): exact ground truth for a slice of a dataset or a filter,
/// computed by the tools without the engine, with the shard's own inner product.
pub fn top_k_by_dot(base: &Matrix<f32>, query: &[f32], rows: &[usize], k: usize) -> Vec<u32> {
    let mut scored: Vec<(u32, f32)> = rows
        .iter()
        .map(|&r| (r as u32, vecshard_core::model::dot(query, base.row(r))))
        .collect();
    let best_first = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if k == 0 {
        return Vec::new();
    }
    if scored.len() > k {
        scored.select_nth_unstable_by(k - 1, best_first);
        scored.truncate(k);
    }
    scored.sort_unstable_by(best_first);
    scored.into_iter().map(|(r, _)| r).collect()
}

#[cfg(test)]
mod top_k_tests {
    use super::*;

    #[test]
    fn top_k_by_dot_ranks_the_given_rows_best_first() {
        let base = Matrix {
            rows: 4,
            cols: 2,
            data: vec![1.0, 0.0, 0.0, 1.0, 0.7, 0.7, -1.0, 0.0],
        };
        let all = [0, 1, 2, 3];
        assert_eq!(top_k_by_dot(&base, &[1.0, 0.2], &all, 2), vec![0, 2]);
        // Only the rows asked for are ranked; k above their number returns them all.
        assert_eq!(top_k_by_dot(&base, &[1.0, 0.2], &[1, 3], 5), vec![1, 3]);
        assert!(top_k_by_dot(&base, &[1.0, 0.2], &all, 0).is_empty());
    }
}
