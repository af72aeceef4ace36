//! The ShardSet reconcile against a mocked API server.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::controller::fake_api;
use crate::metrics::Metrics;

#[tokio::test]
async fn a_shard_set_gets_its_statefulset_service_and_pdb_and_reports_its_selector() {
    let ss: ShardSet = serde_json::from_value(fake_api::shard_set("docs-0")).unwrap();
    let stored = BTreeMap::from([(
        "/apis/vecshard.io/v1alpha1/namespaces/search/shardsets/docs-0".to_string(),
        serde_json::to_value(&ss).unwrap(),
    )]);
    let (client, calls) = fake_api::start(stored);
    let ctx = Arc::new(Context::new(client, Arc::new(Metrics::default()), None));
    reconcile(Arc::new(ss), ctx).await.unwrap();
    let calls = calls.await.unwrap();
    let shorts: Vec<String> = calls.iter().map(|c| c.short()).collect();
    assert_eq!(
        shorts[..4],
        [
            "PATCH statefulsets/docs-0",
            "PATCH services/docs-0",
            "PATCH poddisruptionbudgets/docs-0",
            "DELETE horizontalpodautoscalers/docs-0",
        ]
    );
    let status = calls
        .iter()
        .find(|c| c.short() == "PATCH shardsets/docs-0/status")
        .and_then(|c| c.body.clone())
        .expect("a status write");
    assert_eq!(
        status["status"]["selector"],
        "app.kubernetes.io/component=shard,app.kubernetes.io/instance=docs,app.kubernetes.io/name=vecshard,vecshard.io/shard=docs-0"
    );
    assert_eq!(status["status"]["readyReplicas"], 0);
    // The count is the counting loop's to write (vectors.rs), not the reconcile's.
    assert!(status["status"].get("vectors").is_none(), "{status}");
}
