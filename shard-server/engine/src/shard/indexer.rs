//! The indexer thread: adds committed points to the HNSW graph in batches, keeps the value
//! graphs in step, compacts dead slots, and saves the graph so that a restart does not rebuild it.

use super::*;

impl Shard {
    /// The indexer: moves pending slots into the graph in batches, in parallel, removes
    /// slots of replaced or deleted points, and saves the graph for the next start when it
    /// has caught up (every `graph_save_interval` at most) and when the shard closes. It is
    /// the graph's only writer, so the graph holds still while it saves. `in_graph`: the
    /// slots the graph holds.
    pub(super) fn run_indexer(self: Arc<Self>, mut in_graph: RoaringBitmap) {
        // Small batches: the graph is locked against searches while a batch goes in.
        const BATCH: usize = 64;
        let mut huge_pages = crate::huge_pages::Advisor::new(self.options.huge_pages);
        // Changes since the graph was last saved (or loaded), and when that was.
        let mut unsaved = 0usize;
        let mut saved_at = (!in_graph.is_empty()).then(Instant::now);
        // The state the value graphs were last found current for (see `sync_value_graphs`).
        let mut value_graphs_current_at = None;
        while !self.stopping.load(Ordering::Acquire) {
            let (work, dead) = {
                let mut st = self.state.write();
                let dead = std::mem::take(&mut st.dead_indexed);
                let work: Vec<(u64, Vec<f32>)> = st
                    .pending
                    .iter()
                    .take(BATCH)
                    .map(|s| (u64::from(s), st.vector(s)))
                    .collect();
                (work, dead)
            };
            if !dead.is_empty() {
                let gone: RoaringBitmap = dead.iter().copied().collect();
                match self.retire_from_graph(&gone, &mut in_graph) {
                    Ok(()) => unsaved += dead.len(),
                    Err(e) => {
                        tracing::warn!(error = %e, "removing retired slots from the graph failed")
                    }
                }
            }
            if work.is_empty() {
                if !self.ready.swap(true, Ordering::AcqRel) {
                    tracing::info!(
                        points = self.index.len(),
                        from_saved_graph = self.graph_points_loaded(),
                        "index ready"
                    );
                }
                huge_pages.caught_up();
                if self.sync_value_graphs(&mut value_graphs_current_at) {
                    continue;
                }
                if self.compaction_due() {
                    self.compact_slots(&mut in_graph);
                    unsaved += 1;
                    continue;
                }
                // A snapshot asks for a save so that it carries a current graph.
                let requested = self.graph_save_requested.load(Ordering::Acquire);
                let due = requested
                    || self.options.graph_save_interval.is_some_and(|every| {
                        unsaved > 0 && saved_at.is_none_or(|at| at.elapsed() >= every)
                    });
                if due {
                    self.graph_save_requested.store(false, Ordering::Release);
                    self.save_graph(&in_graph);
                    (unsaved, saved_at) = (0, Some(Instant::now()));
                    continue;
                }
                let mut guard = self.indexer_wake.0.lock();
                self.indexer_wake
                    .1
                    .wait_for(&mut guard, Duration::from_millis(200));
                continue;
            }
            if let Err(e) = self.index.add_batch(&work, self.options.indexer_threads) {
                tracing::error!(error = %e, "indexing failed; retrying");
                std::thread::sleep(Duration::from_millis(500));
                continue;
            }
            // The graph may have grown into new arenas (and the copies into new memory).
            huge_pages.points_added(work.len());
            in_graph.extend(work.iter().map(|(key, _)| *key as u32));
            unsaved += work.len();
            let mut st = self.state.write();
            for (key, _) in &work {
                let slot = *key as u32;
                st.pending.remove(slot);
                if !st.live.contains(slot) {
                    st.dead_indexed.push(slot);
                }
            }
        }
        if unsaved > 0 {
            self.save_graph(&in_graph);
        }
    }

    /// One step of bringing the value graphs in step with the points (after the full graph,
    /// which read-your-writes and readiness depend on); true when it did some work.
    /// `current_at` is the state (slot count, live count) at which they were last current:
    /// nothing is planned again until a write changes it.
    pub(super) fn sync_value_graphs(&self, current_at: &mut Option<(usize, u64)>) -> bool {
        let now = {
            let st = self.state.read();
            (st.slot_ids.len(), st.live_len())
        };
        if *current_at == Some(now) {
            return false;
        }
        const BATCH: usize = 256;
        match self
            .value_graphs
            .sync(&self.state, BATCH, self.options.indexer_threads)
        {
            Ok(step) if step.is_idle() => {
                *current_at = Some(now);
                false
            }
            Ok(step) => {
                if step.created + step.dropped > 0 {
                    let (graphs, points, bytes) = self.value_graphs.stats();
                    tracing::info!(
                        created = step.created,
                        dropped = step.dropped,
                        graphs,
                        points,
                        bytes,
                        "value graphs changed"
                    );
                }
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "updating the value graphs failed; retrying later");
                *current_at = Some(now);
                false
            }
        }
    }

    /// True when replaced and deleted points' leftovers (see `State::compact`) reach the
    /// compaction threshold.
    pub(super) fn compaction_due(&self) -> bool {
        let st = self.state.read();
        st.dead_slots() >= self.options.compact_min_dead_slots.max(st.live_len() / 2)
    }

    /// Drops the slots of replaced and deleted points and renumbers the live ones densely,
    /// in the state and in the graph at once: memory then follows the live points, not
    /// every write ever made. Searches and writes wait meanwhile (measured in
    /// docs/benchmarks.md); runs on the indexer thread, between batches, so that no slot is
    /// on its way into the graph.
    pub(super) fn compact_slots(&self, in_graph: &mut RoaringBitmap) {
        let started = Instant::now();
        let mut st = self.state.write();
        let dead = std::mem::take(&mut st.dead_indexed);
        // Graph keys of points no longer live: those just retired, and any left by a failed
        // removal earlier.
        let mut gone: RoaringBitmap = dead.iter().copied().collect();
        gone |= &*in_graph - &st.live;
        if let Err(e) = self.retire_from_graph(&gone, in_graph) {
            tracing::warn!(error = %e, "removing retired slots from the graph failed; not compacting");
            st.dead_indexed = dead;
            return;
        }
        let map = st.compaction_map();
        let moves: Vec<(u64, u64)> = in_graph
            .iter()
            .map(|s| (u64::from(s), u64::from(map[s as usize])))
            .filter(|(from, to)| from != to)
            .collect();
        let renumbered = renumber_slots(in_graph, &map);
        let (dropped, live) = (st.dead_slots(), st.live_len());
        let graph_started = Instant::now();
        if let Err(e) = self.index.rekey_downward(&moves) {
            // Keys may be half renamed: start the graph again; searches scan what is pending.
            tracing::error!(error = %e, "renumbering the graph failed; rebuilding it");
            if let Err(e) = self.index.clear() {
                tracing::error!(error = %e, "clearing the graph failed");
            }
            st.pending = st.live.clone();
            in_graph.clear();
        } else {
            *in_graph = renumbered;
        }
        self.value_graphs.compact(&map);
        let graph_ms = graph_started.elapsed().as_millis() as u64;
        st.compact(&map);
        // Counted before the lock is released: whoever sees the compacted state sees the count.
        self.metrics.slot_compactions.inc();
        drop(st);
        tracing::info!(
            dropped,
            live,
            renamed = moves.len(),
            graph_ms,
            ms = started.elapsed().as_millis() as u64,
            "slots of replaced and deleted points compacted"
        );
    }

    /// Removes `gone` from the graph and from `in_graph` (the slots the graph holds).
    pub(super) fn retire_from_graph(
        &self,
        gone: &RoaringBitmap,
        in_graph: &mut RoaringBitmap,
    ) -> Result<()> {
        let keys: Vec<u64> = gone.iter().map(u64::from).collect();
        self.index.remove_batch(&keys)?;
        *in_graph -= gone;
        Ok(())
    }

    /// Saves the graph and what each of its keys holds (see `saved_graph`). A failure costs
    /// only time at the next start (what the saved graph lacks is indexed again).
    pub(super) fn save_graph(&self, in_graph: &RoaringBitmap) {
        if !self.keeps_graph() {
            // No graph: keep any graph saved while the collection was `hnsw` as it was.
            return;
        }
        let started = Instant::now();
        let keys: Vec<saved_graph::SavedKey> = {
            let st = self.state.read();
            in_graph
                .iter()
                .map(|slot| {
                    let id = st.slot_ids[slot as usize].clone();
                    let version = st
                        .by_id
                        .get(&id)
                        .filter(|e| e.slot == Some(slot))
                        .map_or(0, |e| e.version);
                    saved_graph::SavedKey {
                        key: u64::from(slot),
                        id,
                        version,
                    }
                })
                .collect()
        };
        let params = saved_graph::GraphParams::of(&self.config);
        match saved_graph::save(&self.options.data_dir, &params, &self.index, &keys) {
            Ok(bytes) => {
                self.metrics.graph_saves.inc();
                let now_s = vecshard_core::model::unix_millis() / 1000;
                self.metrics.graph_saved_timestamp.set(now_s as i64);
                tracing::info!(
                    keys = keys.len(),
                    bytes,
                    ms = started.elapsed().as_millis() as u64,
                    "graph saved"
                )
            }
            Err(e) => tracing::warn!(
                error = %e,
                "saving the graph failed; the next start indexes what the saved graph lacks"
            ),
        }
    }
}
