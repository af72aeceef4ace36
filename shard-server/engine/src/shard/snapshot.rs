//! What a snapshot reads from a shard besides its stored records (`scan`) and its log
//! (`read_log`): the sequence every acknowledged write is at or below, and a current copy of
//! the saved graph.

use std::path::Path;

use super::*;

impl Shard {
    /// Sequence of the last committed write group. It is raised before the group's writes are
    /// acknowledged, so every acknowledged write is stored at or below it.
    pub fn committed_sequence(&self) -> u64 {
        self.wal_sequence.load(Ordering::Acquire)
    }

    /// Asks the indexer to save the graph at its next idle moment and waits up to `within`
    /// for a save that started after the call to finish. False when none did (still indexing a
    /// backlog, or the save failed): a snapshot then goes without the graph.
    pub async fn save_graph_now(&self, within: Duration) -> bool {
        if !self.keeps_graph() {
            return false; // no graph to save
        }
        let before = self.metrics.graph_saves.get();
        self.graph_save_requested.store(true, Ordering::Release);
        self.indexer_wake.1.notify_one();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.metrics.graph_saves.get() > before {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Copies (hard links) the saved graph into `dest` when it is intact (`saved_graph`).
    pub fn copy_saved_graph(&self, dest: &Path) -> Result<bool> {
        if !self.keeps_graph() {
            // A graph left from when the collection was `hnsw` is not this shard's.
            return Ok(false);
        }
        saved_graph::copy_intact(&self.options.data_dir, dest)
    }
}
