//! The committer: writes are validated on the caller's thread, then one thread groups them,
//! assigns versions, appends them to the log, fsyncs once per group and applies them to the
//! in-memory state before it acknowledges.

use super::*;

/// Records a purge job drops at most (see `commit_purge`).
const PURGE_CHUNK: usize = 2_000;

impl Shard {
    /// Validates every point first (nothing is written when any is bad), then commits the batch
    /// durably. `version` 0 lets the shard assign one.
    pub async fn upsert(&self, points: Vec<Point>, version: u64) -> Result<WriteOutcome> {
        self.upsert_routed(points, version, 0).await
    }

    /// `upsert` of a write a router sent with shard map `map_version` (0: not routed): refused
    /// (FAILED_PRECONDITION) when this replica's ownership belongs to a newer map version or
    /// a point's partition is not writable here. Admitted writes hold the write gate until they
    /// are acknowledged, so an ownership change waits for them.
    pub async fn upsert_routed(
        &self,
        points: Vec<Point>,
        version: u64,
        map_version: u64,
    ) -> Result<WriteOutcome> {
        let started = Instant::now();
        let _admitted = self.write_gate.read().await;
        let view = self.ownership();
        view.check_request(map_version, &self.options.shard_name)?;
        view.check_writable(points.iter().map(|p| &p.id), &self.options.shard_name)?;
        let prepared = self.prepare_upsert(points)?;
        let outcome = self.submit(WriteOp::Upsert(prepared), version).await;
        self.metrics
            .upsert_duration
            .observe(started.elapsed().as_secs_f64());
        outcome
    }

    pub async fn delete(&self, target: DeleteTarget, version: u64) -> Result<WriteOutcome> {
        self.delete_routed(target, version, 0).await
    }

    /// `delete` with the admission of `upsert_routed`.
    pub async fn delete_routed(
        &self,
        target: DeleteTarget,
        version: u64,
        map_version: u64,
    ) -> Result<WriteOutcome> {
        let _admitted = self.write_gate.read().await;
        let view = self.ownership();
        view.check_request(map_version, &self.options.shard_name)?;
        match &target {
            DeleteTarget::Ids(ids) => {
                self.check_batch_len(ids.len())?;
                ids.iter().try_for_each(PointId::validate)?;
                view.check_writable(ids, &self.options.shard_name)?;
            }
            DeleteTarget::Filter(f) => {
                f.check(&self.config)?;
                if f.must.is_empty() && f.should.is_empty() && f.must_not.is_empty() {
                    return Err(Error::invalid(
                        "delete filter has no conditions and would delete every point; \
                         name the points or give at least one condition",
                    ));
                }
            }
        }
        self.submit(WriteOp::Delete(target), version).await
    }

    pub(super) fn check_batch_len(&self, n: usize) -> Result<()> {
        check_batch_len(n, self.options.max_batch_points)
    }

    pub(super) fn prepare_upsert(&self, points: Vec<Point>) -> Result<Vec<PreparedPoint>> {
        self.check_batch_len(points.len())?;
        let mut bytes = 0usize;
        let mut prepared = Vec::with_capacity(points.len());
        for (i, p) in points.into_iter().enumerate() {
            p.id.validate()
                .map_err(|e| Error::invalid(format!("points[{i}]: {e}")))?;
            self.config
                .check_vector("vector", &p.vector)
                .map_err(|e| Error::invalid(format!("points[{i}] (id {}): {e}", p.id)))?;
            let payload =
                serde_json::to_vec(&p.payload).map_err(|e| Error::internal(e.to_string()))?;
            if payload.len() > MAX_PAYLOAD_BYTES {
                return Err(Error::invalid(format!(
                    "points[{i}] (id {}): payload has {} bytes, the limit is {MAX_PAYLOAD_BYTES}",
                    p.id,
                    payload.len()
                )));
            }
            bytes += payload.len() + p.vector.len() * 4;
            if bytes > self.options.max_batch_bytes {
                return Err(Error::too_large(format!(
                    "batch exceeds {} bytes of vectors and payloads",
                    self.options.max_batch_bytes
                )));
            }
            let mut vector = p.vector;
            if self.config.metric == Metric::Cosine {
                normalize(&mut vector);
            }
            prepared.push((
                p.id,
                Record {
                    version: 0,
                    vector: Some(vector),
                    payload,
                },
                p.payload,
            ));
        }
        // The same id twice in one batch: the later one is what the client meant.
        let mut seen = std::collections::HashSet::new();
        let mut deduped: Vec<_> = prepared
            .into_iter()
            .rev()
            .filter(|(id, _, _)| seen.insert(id.clone()))
            .collect();
        deduped.reverse();
        Ok(deduped)
    }

    pub(super) async fn submit(&self, op: WriteOp, version: u64) -> Result<WriteOutcome> {
        let (reply, answer) = oneshot::channel();
        {
            let tx = self.commit_tx.lock();
            let tx = tx
                .as_ref()
                .ok_or_else(|| Error::unavailable("shard is shutting down"))?;
            tx.try_send(CommitJob { op, version, reply })
                .map_err(|e| match e {
                    TrySendError::Full(_) => Error::exhausted(format!(
                        "write queue is full ({} batches waiting); retry with backoff",
                        self.options.max_queued_requests
                    )),
                    TrySendError::Disconnected(_) => Error::unavailable("shard is shutting down"),
                })?;
        }
        answer
            .await
            .map_err(|_| Error::unavailable("shard stopped before the write committed"))?
    }

    /// The committer: takes every queued batch, writes them all, fsyncs once (group commit),
    /// makes them visible, then acknowledges. Exits when the queue is closed and drained.
    pub(super) fn run_committer(self: Arc<Self>, rx: Receiver<CommitJob>, initial_version: u64) {
        let mut last_version = initial_version;
        let mut seq = self.wal_sequence.load(Ordering::Acquire);
        let mut carried: Option<CommitJob> = None;
        while let Some(first) = carried.take().or_else(|| rx.recv().ok()) {
            if matches!(first.op, WriteOp::Purge) {
                let _ = first.reply.send(self.commit_purge());
                continue;
            }
            let mut group = vec![first];
            while group.len() < 256 {
                match rx.try_recv() {
                    // A delete by filter must see every earlier write, so it starts a group;
                    // a purge runs alone, after every earlier write.
                    Ok(job)
                        if matches!(
                            job.op,
                            WriteOp::Delete(DeleteTarget::Filter(_)) | WriteOp::Purge
                        ) =>
                    {
                        carried = Some(job);
                        break;
                    }
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
            let first_seq = seq;
            let result = self.commit_group(&mut group, &mut seq, &mut last_version);
            match result {
                Ok(applied) => {
                    self.wal_sequence.store(seq, Ordering::Release);
                    for (job, outcome) in group.into_iter().zip(applied) {
                        let _ = job.reply.send(Ok(outcome));
                    }
                    self.indexer_wake.1.notify_one();
                    // Trim in steps (an eighth of the retention, at most 1024 entries) so
                    // that not every group pays for a range delete.
                    let step = (self.options.wal_retention / 8).clamp(1, 1024);
                    if seq / step != first_seq / step && seq > self.options.wal_retention {
                        if let Err(e) = self
                            .storage
                            .trim_log_through(seq - self.options.wal_retention)
                        {
                            tracing::warn!(error = %e, "trimming the operation log failed");
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "commit failed");
                    let message = e.to_string();
                    for job in group {
                        let _ = job.reply.send(Err(Error::internal(message.clone())));
                    }
                }
            }
        }
    }

    pub(super) fn commit_group(
        &self,
        group: &mut [CommitJob],
        seq: &mut u64,
        last_version: &mut u64,
    ) -> Result<Vec<WriteOutcome>> {
        let mut planned = Vec::with_capacity(group.len());
        // Writes of partitions not held here (copied from a peer that still holds them, or
        // replayed from before a move) are left out; routed writes were refused before.
        let view = self.ownership();
        {
            // Decide winners against current state plus earlier batches of this group.
            let st = self.state.read();
            // id → (version, live) as decided by earlier batches of this group.
            let mut overlay: std::collections::HashMap<PointId, (u64, bool)> =
                std::collections::HashMap::new();
            for job in group.iter_mut() {
                let version = if job.version == 0 {
                    next_version(last_version)
                } else {
                    job.version
                };
                *last_version = (*last_version).max(version);
                let entries: Vec<PlannedWrite> = match &mut job.op {
                    WriteOp::Upsert(points) => std::mem::take(points)
                        .into_iter()
                        .map(|(id, mut record, payload)| {
                            record.version = version;
                            (id, record, Some(payload))
                        })
                        .collect(),
                    WriteOp::Delete(target) => {
                        let ids: Vec<PointId> = match target {
                            DeleteTarget::Ids(ids) => std::mem::take(ids),
                            DeleteTarget::Filter(f) => st
                                .payloads
                                .evaluate(f, &st.live)
                                .iter()
                                .map(|s| st.slot_ids[s as usize].clone())
                                .collect(),
                        };
                        ids.into_iter()
                            .map(|id| {
                                (
                                    id,
                                    Record {
                                        version,
                                        vector: None,
                                        payload: Vec::new(),
                                    },
                                    None,
                                )
                            })
                            .collect()
                    }
                    WriteOp::Purge => unreachable!("a purge is committed alone"),
                };
                let entries: Vec<PlannedWrite> = if view.all_writable() {
                    entries
                } else {
                    entries
                        .into_iter()
                        .filter(|(id, _, _)| view.can_write(id))
                        .collect()
                };
                *seq += 1;
                let log: Vec<(PointId, Record)> = entries
                    .iter()
                    .map(|(id, r, _)| (id.clone(), r.clone()))
                    .collect();
                let mut winners = Vec::new();
                for (id, record, payload) in entries {
                    let current = overlay
                        .get(&id)
                        .copied()
                        .or_else(|| st.by_id.get(&id).map(|e| (e.version, e.slot.is_some())));
                    if current.is_none_or(|(v, _)| version > v) {
                        let live_before = current.is_some_and(|(_, live)| live);
                        overlay.insert(id.clone(), (version, record.vector.is_some()));
                        winners.push((id, record, payload, live_before));
                    }
                }
                self.storage.write(
                    *seq,
                    &encode_entry(&log),
                    &winners
                        .iter()
                        .map(|(i, r, _, _)| (i.clone(), r.clone()))
                        .collect::<Vec<_>>(),
                )?;
                planned.push((*seq, version, winners));
            }
        }
        self.storage.flush()?;
        let mut st = self.state.write();
        let outcomes = planned
            .into_iter()
            .map(|(sequence, version, winners)| {
                let mut affected = 0;
                for (id, record, payload, live_before) in winners {
                    match (&record.vector, &payload) {
                        (Some(v), Some(p)) => {
                            st.apply(id, version, Some((v, p)));
                            affected += 1;
                        }
                        _ => {
                            affected += u64::from(live_before);
                            st.apply(id, version, None);
                        }
                    }
                }
                WriteOutcome {
                    sequence,
                    affected,
                    version,
                }
            })
            .collect();
        // Still under the write lock: a search that sees these points finds them on the GPU.
        st.flush_device();
        Ok(outcomes)
    }

    /// Drops, durably, up to `PURGE_CHUNK` stored records whose partition is not writable as
    /// of the current ownership view (`affected` 0: none is left). In chunks so that writes
    /// queued behind a large drop wait for one chunk, not for all of it (measured: one
    /// 19,000-record drop held the committer for about a second). No log entry: peers drop
    /// those partitions under their own view.
    fn commit_purge(&self) -> Result<WriteOutcome> {
        let view = self.ownership();
        let ids: Vec<PointId> = if view.all_writable() {
            Vec::new()
        } else {
            let st = self.state.read();
            st.by_id
                .keys()
                .filter(|id| !view.can_write(id))
                .take(PURGE_CHUNK)
                .cloned()
                .collect()
        };
        self.storage.remove(&ids)?;
        self.storage.flush()?;
        let mut st = self.state.write();
        for id in &ids {
            st.forget(id);
        }
        drop(st);
        self.indexer_wake.1.notify_one();
        Ok(WriteOutcome {
            sequence: self.wal_sequence.load(Ordering::Acquire),
            affected: ids.len() as u64,
            version: 0,
        })
    }
}
