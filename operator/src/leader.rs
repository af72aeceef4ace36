//! Leader election through a `coordination.k8s.io/v1` Lease, so that two or more operator
//! replicas can run and exactly one reconciles. The holder renews every `duration / 3`; a
//! replica takes the Lease over once it has not been renewed for `duration`. Every write is
//! conditional on the Lease's resourceVersion, so two candidates can never both win.
//!
//! I/O: the Lease through the API server; the takeover decision is the pure `decide`.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};

/// What a candidate should do with the Lease as it stands.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nobody holds it, or the holder stopped renewing: take it.
    Acquire,
    /// We hold it: renew it.
    Renew,
    /// Somebody else holds it and renews it.
    Wait,
}

pub fn decide(spec: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> Decision {
    let Some(spec) = spec else {
        return Decision::Acquire;
    };
    match spec.holder_identity.as_deref() {
        Some(holder) if holder == identity => Decision::Renew,
        None | Some("") => Decision::Acquire,
        Some(_) => {
            let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15));
            let renewed = spec
                .renew_time
                .as_ref()
                .map(|t| t.0.as_second())
                .unwrap_or(0);
            if now.as_second() > renewed + duration {
                Decision::Acquire
            } else {
                Decision::Wait
            }
        }
    }
}

pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

impl LeaderElector {
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Self {
        LeaderElector {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            duration,
        }
    }

    pub fn renew_interval(&self) -> Duration {
        self.duration / 3
    }

    /// One round: acquire or renew when possible. `Ok(true)` while we are the leader.
    pub async fn try_lead(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let current = self.api.get_opt(&self.name).await?;
        let decision = decide(
            current.as_ref().and_then(|l| l.spec.as_ref()),
            &self.identity,
            now,
        );
        if decision == Decision::Wait {
            return Ok(false);
        }
        let previous = current
            .as_ref()
            .and_then(|l| l.spec.clone())
            .unwrap_or_default();
        let taking_over = decision == Decision::Acquire;
        let spec = LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration.as_secs() as i32),
            acquire_time: if taking_over {
                Some(MicroTime(now))
            } else {
                previous.acquire_time.clone()
            },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(
                previous.lease_transitions.unwrap_or(0)
                    + i32::from(taking_over && current.is_some()),
            ),
            ..previous
        };
        let result = match current {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(spec),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            Some(mut lease) => {
                // Carries the resourceVersion we read: a concurrent writer makes this fail.
                lease.spec = Some(spec);
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match result {
            Ok(_) => {
                if taking_over {
                    tracing::info!(identity = %self.identity, lease = %self.name, "acquired the leader lease");
                }
                Ok(true)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up on shutdown so a standby takes over at once instead of after
    /// `duration`.
    pub async fn release(&self) {
        if let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await {
            let ours = lease
                .spec
                .as_ref()
                .and_then(|s| s.holder_identity.as_deref())
                == Some(self.identity.as_str());
            if ours {
                if let Some(spec) = lease.spec.as_mut() {
                    spec.holder_identity = None;
                    spec.renew_time = None;
                }
                let _ = self
                    .api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await;
                tracing::info!(lease = %self.name, "released the leader lease");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_by(holder: &str, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(Timestamp::from_second(renewed).unwrap())),
            ..LeaseSpec::default()
        }
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn a_free_or_released_lease_is_acquired() {
        assert_eq!(decide(None, "a", at(100)), Decision::Acquire);
        assert_eq!(
            decide(Some(&LeaseSpec::default()), "a", at(100)),
            Decision::Acquire
        );
    }

    #[test]
    fn the_holder_renews_and_others_wait_until_it_expires() {
        let spec = held_by("a", 100);
        assert_eq!(decide(Some(&spec), "a", at(105)), Decision::Renew);
        assert_eq!(decide(Some(&spec), "b", at(105)), Decision::Wait);
        assert_eq!(decide(Some(&spec), "b", at(115)), Decision::Wait);
        assert_eq!(decide(Some(&spec), "b", at(116)), Decision::Acquire);
    }
}
