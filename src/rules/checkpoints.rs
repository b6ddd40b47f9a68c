//! `verify.checkpoints`, parsed and bounded: the rule's side of the checkpoints after promotion,
//! so `check` and the machine ([`crate::rollout::verify`]) read them through one function.

use std::time::Duration;

use super::schema::VerifySpec;

/// At most this many checkpoints: each is a round of queries.
pub const MAX_CHECKPOINTS: usize = 20;
/// The last checkpoint at most 30 days after the promotion.
pub const MAX_CHECKPOINT: Duration = Duration::from_secs(30 * 86_400);

/// Parses and checks `verify.checkpoints`; the error carries the index of the bad entry.
pub fn parse_checkpoints(v: &VerifySpec) -> Result<Vec<Duration>, (usize, String)> {
    let items = &v.checkpoints.value;
    if items.is_empty() {
        return Err((
            0,
            "verify.checkpoints must list at least one duration".into(),
        ));
    }
    if items.len() > MAX_CHECKPOINTS {
        return Err((
            MAX_CHECKPOINTS,
            format!("at most {MAX_CHECKPOINTS} checkpoints"),
        ));
    }
    let mut out: Vec<Duration> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let d = humantime::parse_duration(item.value.trim()).map_err(|e| {
            (
                i,
                format!(
                    "checkpoint {:?} is not a duration ({e}); write e.g. 15m, 1h, 24h",
                    item.value
                ),
            )
        })?;
        if d.is_zero() || d > MAX_CHECKPOINT {
            return Err((
                i,
                format!("checkpoint {:?} must be between 1s and 30 days", item.value),
            ));
        }
        if out.last().is_some_and(|prev| d <= *prev) {
            return Err((
                i,
                format!(
                    "checkpoint {:?} must come after the one before it",
                    item.value
                ),
            ));
        }
        out.push(d);
    }
    Ok(out)
}
