//! The approximate-nearest-neighbour index: a thin wrapper over usearch's HNSW (the only module
//! that imports usearch). Keys are the shard's slot numbers; vectors arrive as f32 and usearch
//! quantizes them to the collection's scalar kind (b1 is packed to sign bits here). Its only
//! I/O is `save` and `load` of the graph file, which `shard/saved_graph.rs` drives.

use std::path::Path;

use parking_lot::RwLock;
use usearch::{b1x8, Index, IndexOptions, MetricKind, ScalarKind};

use vecshard_core::error::{Error, Result};
use vecshard_core::model::{CollectionConfig, Metric, Quantization};

pub struct VectorIndex {
    /// Read for add/search/remove (usearch synchronises those itself); write only to grow.
    inner: RwLock<Index>,
    options: IndexOptions,
    quantization: Quantization,
    threads: usize,
}

/// Keys are renamed through this range (far above any slot, which is a u32) so that a new
/// key never collides with an old one not yet renamed.
const REKEY_SPARE: u64 = 1 << 40;

/// A candidate from the graph: slot and usearch's distance (smaller is closer).
pub type Candidate = (u64, f32);

impl VectorIndex {
    /// `threads` is how many callers may use the index at once: usearch hands each call one of
    /// that many thread slots and fails the call when none is free.
    pub fn new(config: &CollectionConfig, threads: usize) -> Result<Self> {
        let (metric, quantization) = match config.quantization {
            Quantization::B1 => (MetricKind::Hamming, ScalarKind::B1),
            q => {
                let metric = match config.metric {
                    // Cosine collections store and search unit vectors (the shard normalises
                    // both), so the inner product ranks them the same as cosine, and its kernel
                    // skips the two norms that usearch's cosine kernel recomputes per distance
                    // (measured: ~15 % faster i8 searches at equal recall).
                    Metric::Cosine => MetricKind::IP,
                    Metric::Dot => MetricKind::IP,
                    Metric::L2 => MetricKind::L2sq,
                };
                let scalar = match q {
                    Quantization::F32 => ScalarKind::F32,
                    Quantization::F16 => ScalarKind::F16,
                    _ => ScalarKind::I8,
                };
                (metric, scalar)
            }
        };
        let dimensions = match config.quantization {
            Quantization::B1 => config.dimension.div_ceil(8) * 8,
            _ => config.dimension,
        };
        let options = IndexOptions {
            dimensions,
            metric,
            quantization,
            connectivity: config.hnsw.m,
            expansion_add: config.hnsw.ef_construction,
            // Searches pass their own breadth as the wanted count (usearch searches with
            // max(expansion, wanted)), so the index default stays minimal.
            expansion_search: 1,
            multi: false,
        };
        Ok(VectorIndex {
            inner: RwLock::new(empty_index(&options, threads)?),
            options,
            quantization: config.quantization,
            threads,
        })
    }

    pub fn len(&self) -> usize {
        self.inner.read().size()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn memory_bytes(&self) -> usize {
        self.inner.read().memory_usage()
    }

    /// Adds a batch of vectors using `threads` threads. Holds the write lock for the batch:
    /// usearch's graph walk is not safe against concurrent inserts (a search can reach a slot
    /// whose node is not yet published and crash), so searches wait for the batch instead.
    /// Keep batches small so that the pause stays short.
    pub fn add_batch(&self, batch: &[(u64, Vec<f32>)], threads: usize) -> Result<()> {
        let index = self.inner.write();
        let needed = index.size() + batch.len();
        if needed > index.capacity() {
            let capacity = needed.max(index.capacity() * 2);
            index
                .reserve_capacity_and_threads(capacity, self.threads)
                .map_err(|e| Error::index("reserve", e))?;
        }
        let chunk = batch.len().div_ceil(threads.clamp(1, self.threads)).max(1);
        let index = &*index;
        std::thread::scope(|scope| {
            let handles: Vec<_> = batch
                .chunks(chunk)
                .map(|part| {
                    scope.spawn(move || {
                        part.iter()
                            .try_for_each(|(key, v)| self.add_one(index, *key, v))
                    })
                })
                .collect();
            handles.into_iter().try_for_each(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::internal("index insert thread panicked")))
            })
        })
    }

    fn add_one(&self, index: &Index, key: u64, vector: &[f32]) -> Result<()> {
        let result = match self.quantization {
            Quantization::B1 => index.add(key, &pack_bits(vector)),
            _ => index.add(key, vector),
        };
        result.map_err(|e| Error::index("add", e))
    }

    /// Removes keys (exclusive, for the same reason as `add_batch`).
    pub fn remove_batch(&self, keys: &[u64]) -> Result<()> {
        let index = self.inner.write();
        keys.iter().try_for_each(|k| {
            index
                .remove(*k)
                .map(|_| ())
                .map_err(|e| Error::index("remove", e))
        })
    }

    /// Writes the graph and its quantized vectors to `path` (usearch's format). Searches go on
    /// meanwhile; the caller must not add or remove keys until it returns.
    pub fn save(&self, path: &Path) -> Result<()> {
        let path = path_str("save", path)?;
        self.inner
            .read()
            .save(path)
            .map_err(|e| Error::index("save", e))
    }

    /// Replaces the graph with the one saved at `path`, which must have been built with this
    /// index's dimensions, metric, quantization and connectivity (usearch takes those from
    /// the file, so they are checked after loading).
    pub fn load(&self, path: &Path) -> Result<()> {
        let path = path_str("load", path)?;
        let mut index = self.inner.write();
        let loaded = index.load(path).map_err(|e| Error::index("load", e));
        let checked = loaded.and_then(|()| {
            let o = &self.options;
            let expected = (
                o.dimensions,
                o.metric,
                o.quantization,
                o.connectivity,
                o.multi,
            );
            let found = (
                index.dimensions(),
                index.metric_kind(),
                index.scalar_kind(),
                index.connectivity(),
                index.multi(),
            );
            if found == expected {
                return Ok(());
            }
            Err(Error::index(
                "load",
                format!(
                    "the saved graph has (dimensions, metric, scalar, connectivity, multi) \
                     {found:?}; this index has {expected:?}"
                ),
            ))
        });
        if let Err(e) = checked {
            // Leave an empty index of this kind behind, not a foreign or half-loaded one.
            *index = empty_index(&self.options, self.threads)?;
            return Err(e);
        }
        index.change_expansion_add(self.options.expansion_add);
        index.change_expansion_search(self.options.expansion_search);
        index
            .reserve_capacity_and_threads(index.size() + 1024, self.threads)
            .map_err(|e| Error::index("reserve", e))
    }

    /// Drops every key: the index is as new.
    pub fn clear(&self) -> Result<()> {
        let fresh = empty_index(&self.options, self.threads)?;
        *self.inner.write() = fresh;
        Ok(())
    }

    /// Gives keys new numbers: each `(from, to)` renames `from` to `to`; the `to`s are
    /// distinct, and no other key in the graph may hold one of them.
    pub fn rekey(&self, moves: &[(u64, u64)]) -> Result<()> {
        let index = self.inner.write();
        for &(from, _) in moves {
            rename(&index, from, from + REKEY_SPARE)?;
        }
        for &(from, to) in moves {
            rename(&index, from + REKEY_SPARE, to)?;
        }
        Ok(())
    }

    /// `rekey` in one pass, for moves sorted by `from` that each go to a smaller key which no
    /// key left unmoved holds (a compaction's renumbering: every target is either free or
    /// the old number of a key already moved further down).
    pub fn rekey_downward(&self, moves: &[(u64, u64)]) -> Result<()> {
        debug_assert!(moves.windows(2).all(|w| w[0].0 < w[1].0));
        debug_assert!(moves.iter().all(|(from, to)| to < from));
        let index = self.inner.write();
        for &(from, to) in moves {
            rename(&index, from, to)?;
        }
        Ok(())
    }

    /// The `wanted` nearest keys accepted by `accept` (all when `None`); `wanted` is also the
    /// search breadth (ef).
    pub fn search(
        &self,
        query: &[f32],
        wanted: usize,
        accept: Option<&dyn Fn(u64) -> bool>,
    ) -> Result<Vec<Candidate>> {
        let index = self.inner.read();
        if index.size() == 0 {
            return Ok(Vec::new());
        }
        let packed;
        let matches = match (self.quantization, accept) {
            (Quantization::B1, None) => {
                packed = pack_bits(query);
                index.search(&packed, wanted)
            }
            (Quantization::B1, Some(f)) => {
                packed = pack_bits(query);
                index.filtered_search(&packed, wanted, f)
            }
            (_, None) => index.search(query, wanted),
            (_, Some(f)) => index.filtered_search(query, wanted, f),
        }
        .map_err(|e| Error::index("search", e))?;
        Ok(matches.keys.into_iter().zip(matches.distances).collect())
    }
}

fn rename(index: &Index, from: u64, to: u64) -> Result<()> {
    match index.rename(from, to) {
        Ok(1) => Ok(()),
        Ok(n) => Err(Error::index(
            "rename",
            format!("key {from} renamed {n} times"),
        )),
        Err(e) => Err(Error::index("rename", e)),
    }
}

/// A new index with room for 1,024 vectors and `threads` concurrent callers.
fn empty_index(options: &IndexOptions, threads: usize) -> Result<Index> {
    let index = Index::new(options).map_err(|e| Error::index("create", e))?;
    index
        .reserve_capacity_and_threads(1024, threads)
        .map_err(|e| Error::index("reserve", e))?;
    Ok(index)
}

fn path_str<'a>(operation: &'static str, path: &'a Path) -> Result<&'a str> {
    path.to_str()
        .ok_or_else(|| Error::index(operation, format!("path {} is not UTF-8", path.display())))
}

/// Sign bits of a vector, eight dimensions per byte, for the binary (b1) index.
fn pack_bits(vector: &[f32]) -> Vec<b1x8> {
    vector
        .chunks(8)
        .map(|chunk| {
            let mut byte = 0u8;
            for (i, v) in chunk.iter().enumerate() {
                if *v > 0.0 {
                    byte |= 1 << i;
                }
            }
            b1x8(byte)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use vecshard_core::model::HnswParams;

    fn config(q: Quantization) -> CollectionConfig {
        CollectionConfig {
            name: "t".into(),
            dimension: 16,
            metric: Metric::Cosine,
            hnsw: HnswParams {
                m: 8,
                ef_construction: 32,
                ef_search: 16,
            },
            quantization: q,
            indexed_fields: vec![],
        }
    }

    /// A unit vector, as the shard hands the index for cosine collections.
    fn vector(i: u64) -> Vec<f32> {
        let mut v: Vec<f32> = (0..16u64)
            .map(|d| {
                (xxhash_rust::xxh3::xxh3_64(&(i * 16 + d).to_le_bytes()) % 2001) as f32 / 1000.0
                    - 1.0
            })
            .collect();
        vecshard_core::model::normalize(&mut v);
        v
    }

    #[test]
    fn every_quantization_finds_an_indexed_vector_as_its_own_nearest() {
        for q in [
            Quantization::F32,
            Quantization::F16,
            Quantization::I8,
            Quantization::B1,
        ] {
            let index = VectorIndex::new(&config(q), 2).unwrap();
            index
                .add_batch(&(0..2000).map(|i| (i, vector(i))).collect::<Vec<_>>(), 2)
                .unwrap();
            assert_eq!(index.len(), 2000);
            let found = index.search(&vector(5), 64, None).unwrap();
            assert!(found.iter().any(|(k, _)| *k == 5), "{q:?}: {found:?}");
        }
    }

    #[test]
    fn filtered_search_returns_only_accepted_keys() {
        let index = VectorIndex::new(&config(Quantization::F32), 2).unwrap();
        index
            .add_batch(&(0..500).map(|i| (i, vector(i))).collect::<Vec<_>>(), 2)
            .unwrap();
        let odd = |k: u64| k % 2 == 1;
        let found = index.search(&vector(4), 20, Some(&odd)).unwrap();
        assert!(!found.is_empty());
        assert!(found.iter().all(|(k, _)| k % 2 == 1));
    }

    #[test]
    fn growing_past_the_initial_capacity_keeps_working() {
        let index = VectorIndex::new(&config(Quantization::I8), 2).unwrap();
        for start in (0..3000).step_by(7) {
            index
                .add_batch(
                    &(start..start + 7)
                        .map(|i| (i, vector(i)))
                        .collect::<Vec<_>>(),
                    2,
                )
                .unwrap();
        }
        assert_eq!(index.len(), 3003);
    }
}
