//! Status conditions in the Kubernetes convention: `lastTransitionTime` changes only when the
//! status flips, so users can see how long something has been true. Pure.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// A condition of `type_`, keeping the previous transition time when its status is unchanged.
pub fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    previous: &[Condition],
    now: &Time,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_string();
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    Condition {
        type_: type_.to_string(),
        status,
        reason: reason.to_string(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time,
    }
}

/// The condition of `type_`, if present and true.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn the_transition_time_moves_only_when_the_status_flips() {
        let first = condition("Ready", false, "Waiting", "0/2", Some(1), &[], &at(100));
        let same = condition(
            "Ready",
            false,
            "Waiting",
            "1/2",
            Some(1),
            std::slice::from_ref(&first),
            &at(200),
        );
        assert_eq!(same.last_transition_time, at(100));
        assert_eq!(same.message, "1/2");
        let flipped = condition("Ready", true, "AllReady", "2/2", Some(1), &[same], &at(300));
        assert_eq!(flipped.last_transition_time, at(300));
        assert!(is_true(&[flipped], "Ready"));
    }
}
