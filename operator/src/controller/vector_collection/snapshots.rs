//! A collection's snapshots as its status shows them, and its schedule: the decisions are pure
//! (`last_snapshots`, `snapshot_condition`, `tick`); `create_scheduled` makes the one write.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, PostParams};
use kube::ResourceExt;
use vecshard_snapshot::schedule::Cron;

use crate::controller::conditions::{condition, ConditionType, Reason};
use crate::controller::vector_snapshot::{finished, LABEL_SCHEDULED_BY};
use crate::crd::{
    ScheduleStatus, SnapshotRecord, SnapshotSpec, VectorCollection, VectorSnapshot,
    VectorSnapshotSpec,
};
use crate::error::{Error, Result};
use crate::names;

/// Records of the succeeded snapshots, newest first.
pub const LAST_SNAPSHOTS: usize = 10;

pub fn last_snapshots(snapshots: &[VectorSnapshot]) -> Vec<SnapshotRecord> {
    let mut done: Vec<SnapshotRecord> = snapshots
        .iter()
        .filter_map(|v| {
            let s = v.status.as_ref()?;
            (s.phase.as_deref() == Some("Succeeded")).then(|| SnapshotRecord {
                id: s.snapshot_id.clone().unwrap_or_default(),
                completed_at: s.completed_at.clone().unwrap_or_default(),
                vectors: s.vectors,
                resource: Some(v.name_any()),
                location: s.location.clone(),
                bytes: s.bytes,
            })
        })
        .collect();
    done.sort_by(|a, b| b.completed_at.cmp(&a.completed_at));
    done.truncate(LAST_SNAPSHOTS);
    done
}

/// `SnapshotSucceeded`: whether the newest finished snapshot succeeded (absent before the
/// first snapshot finished).
pub fn snapshot_condition(
    snapshots: &[VectorSnapshot],
    generation: Option<i64>,
    previous: &[Condition],
    now: &Time,
) -> Option<Condition> {
    let newest = snapshots.iter().filter(|v| finished(v)).max_by_key(|v| {
        v.status
            .as_ref()
            .and_then(|s| s.completed_at.clone())
            .unwrap_or_default()
    })?;
    let s = newest.status.as_ref()?;
    let ok = s.phase.as_deref() == Some("Succeeded");
    let message = if ok {
        format!(
            "snapshot {} ({}) completed at {}",
            s.snapshot_id.as_deref().unwrap_or(""),
            newest.name_any(),
            s.completed_at.as_deref().unwrap_or("")
        )
    } else {
        format!(
            "{} failed: {}",
            newest.name_any(),
            s.message.as_deref().unwrap_or("")
        )
    };
    Some(condition(
        ConditionType::SnapshotSucceeded,
        ok,
        if ok {
            Reason::SnapshotSucceeded
        } else {
            Reason::SnapshotFailed
        },
        message,
        generation,
        previous,
        now,
    ))
}

/// What the schedule asks for now.
#[derive(Clone, Debug, PartialEq)]
pub struct Tick {
    /// A tick is due and no snapshot runs: create one (named after the tick).
    pub create: Option<String>,
    /// A tick is due but a snapshot still runs: skip it.
    pub skipped: bool,
    pub status: ScheduleStatus,
    /// Seconds until the next tick.
    pub wait_seconds: Option<u64>,
}

/// Decides the schedule at `now` (unix seconds): the first tick after the last one handled
/// (or after the collection's creation) is due once `now` reaches it. Missed ticks (the
/// operator was down) collapse into one.
pub fn tick(
    spec: &SnapshotSpec,
    previous: Option<&ScheduleStatus>,
    created: u64,
    now: u64,
    running: bool,
    collection: &str,
) -> std::result::Result<Option<Tick>, String> {
    if !spec.enabled {
        return Ok(None);
    }
    let expression = spec.schedule.as_deref().unwrap_or_default();
    let cron = Cron::parse(expression).map_err(|e| format!("spec.snapshots.schedule: {e}"))?;
    let last = previous
        .and_then(|p| p.last_tick.as_deref())
        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
        .map(|t| t.as_second().max(0) as u64)
        .unwrap_or(created);
    let Some(due) = cron.next_after(last) else {
        return Err(format!(
            "spec.snapshots.schedule: {expression:?} never fires"
        ));
    };
    let stamp = |secs: u64| {
        k8s_openapi::jiff::Timestamp::from_second(secs as i64)
            .map(|t| t.to_string())
            .unwrap_or_default()
    };
    if now < due {
        return Ok(Some(Tick {
            create: None,
            skipped: false,
            status: ScheduleStatus {
                last_tick: previous.and_then(|p| p.last_tick.clone()),
                next_tick: Some(stamp(due)),
            },
            wait_seconds: Some(due - now),
        }));
    }
    // Handled: the one that is due (and any missed before it) counts as this tick.
    let this = cron
        .next_after(now.saturating_sub(60).max(last))
        .filter(|t| *t <= now)
        .unwrap_or(due);
    let next = cron.next_after(now);
    let (y, mo, d, h, mi) = {
        let t = k8s_openapi::jiff::Timestamp::from_second(this as i64)
            .unwrap_or_default()
            .to_zoned(k8s_openapi::jiff::tz::TimeZone::UTC);
        (t.year(), t.month(), t.day(), t.hour(), t.minute())
    };
    Ok(Some(Tick {
        create: (!running).then(|| format!("{collection}-{y:04}{mo:02}{d:02}-{h:02}{mi:02}")),
        skipped: running,
        status: ScheduleStatus {
            last_tick: Some(stamp(this)),
            next_tick: next.map(stamp),
        },
        wait_seconds: next.map(|n| n.saturating_sub(now)),
    }))
}

/// Creates the scheduled VectorSnapshot `name` (owned by the collection, so deleting the
/// collection deletes the resources; the bucket's objects stay). Already there is fine.
pub async fn create_scheduled(
    client: &kube::Client,
    vc: &VectorCollection,
    name: &str,
) -> Result<()> {
    let ns = vc.namespace().unwrap_or_default();
    let mut vs = VectorSnapshot::new(
        name,
        VectorSnapshotSpec {
            collection: vc.name_any(),
            s3: None,
        },
    );
    vs.metadata.namespace = Some(ns.clone());
    vs.metadata.labels = Some(
        [
            (LABEL_SCHEDULED_BY.to_string(), vc.name_any()),
            (names::LABEL_COLLECTION.to_string(), vc.name_any()),
        ]
        .into(),
    );
    vs.metadata.owner_references = Some(vec![
        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "vecshard.io/v1alpha1".into(),
            kind: "VectorCollection".into(),
            name: vc.name_any(),
            uid: vc.uid().unwrap_or_default(),
            controller: Some(false),
            block_owner_deletion: None,
        },
    ]);
    match Api::<VectorSnapshot>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &vs)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(source) => Err(Error::Apply {
            kind: "VectorSnapshot".into(),
            name: format!("{ns}/{name}"),
            source,
        }),
    }
}

/// The collection's snapshots among `all` (those naming it).
pub fn of_collection(all: Vec<VectorSnapshot>, collection: &str) -> Vec<VectorSnapshot> {
    all.into_iter()
        .filter(|v| v.spec.collection == collection)
        .collect()
}

/// Whether one of them is still to finish.
pub fn any_running(snapshots: &[VectorSnapshot]) -> bool {
    snapshots.iter().any(|v| !finished(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(schedule: &str) -> SnapshotSpec {
        SnapshotSpec {
            enabled: true,
            schedule: Some(schedule.into()),
            retain: 2,
            s3: None,
        }
    }

    // 2026-12-06T01:34:05Z
    const T: u64 = 1_796_520_845;

    #[test]
    fn a_tick_is_due_once_the_next_time_after_the_last_one_passed() {
        // Created at T, every minute: nothing due before 01:35.
        let t = tick(&spec("* * * * *"), None, T, T + 10, false, "docs")
            .unwrap()
            .unwrap();
        assert_eq!(t.create, None);
        assert_eq!(t.status.next_tick.as_deref(), Some("2026-12-06T01:35:00Z"));
        assert_eq!(t.wait_seconds, Some(45));
        // At 01:35:02 it is: one named after the tick.
        let t = tick(&spec("* * * * *"), None, T, T + 57, false, "docs")
            .unwrap()
            .unwrap();
        assert_eq!(t.create.as_deref(), Some("docs-20261206-0135"));
        assert_eq!(t.status.last_tick.as_deref(), Some("2026-12-06T01:35:00Z"));
        assert_eq!(t.status.next_tick.as_deref(), Some("2026-12-06T01:36:00Z"));
        // Handled: the same moment again creates nothing more.
        let again = tick(
            &spec("* * * * *"),
            Some(&t.status),
            T,
            T + 58,
            false,
            "docs",
        )
        .unwrap()
        .unwrap();
        assert_eq!(again.create, None);
        // Missed ticks (operator down ten minutes) collapse into the latest.
        let late = tick(
            &spec("* * * * *"),
            Some(&t.status),
            T,
            T + 655,
            false,
            "docs",
        )
        .unwrap()
        .unwrap();
        assert_eq!(late.create.as_deref(), Some("docs-20261206-0145"));
    }

    #[test]
    fn a_tick_while_a_snapshot_runs_is_skipped_and_bad_schedules_are_named() {
        let t = tick(&spec("* * * * *"), None, T, T + 57, true, "docs")
            .unwrap()
            .unwrap();
        assert!(t.skipped && t.create.is_none());
        assert!(t.status.last_tick.is_some());
        let err = tick(&spec("* * *"), None, T, T, false, "docs").unwrap_err();
        assert!(err.contains("spec.snapshots.schedule"), "{err}");
        let off = SnapshotSpec {
            enabled: false,
            ..spec("* * * * *")
        };
        assert_eq!(tick(&off, None, T, T + 600, false, "docs").unwrap(), None);
    }
}
