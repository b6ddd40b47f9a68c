//! One rollout's page: where it stands, its step timeline, every metric drawn over the rollout
//! against its threshold, the last verdicts with their numbers, the hook deliveries, and the
//! controls its phase allows. Pure: data and `now` in, HTML out.

use std::fmt::Write;

use chrono::{DateTime, Utc};

use super::metrics_view;
use super::pages::{layout, phase_badge, step_text};
use crate::controller::report::StepRecord;
use crate::html::{age, clock, escape, num};
use crate::rollout::{Phase, Rollout, Tick};
use crate::store::Delivery;

/// Everything the page shows, read by the handler.
pub struct RolloutPage<'a> {
    pub rollout: &'a Rollout,
    /// The plan's weights, in order.
    pub weights: &'a [u32],
    /// Judged ticks, oldest first.
    pub ticks: &'a [Tick],
    pub deliveries: &'a [Delivery],
    /// Step times from the deployment record, when this daemon recorded it.
    pub steps: Option<&'a [StepRecord]>,
    pub now: DateTime<Utc>,
}

/// A control a button sends: the API action, an optional JSON flag, its label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Control {
    pub action: &'static str,
    pub full: bool,
    pub label: &'static str,
}

const fn control(action: &'static str, full: bool, label: &'static str) -> Control {
    Control {
        action,
        full,
        label,
    }
}

/// The controls a rollout's phase allows, so the page never offers a button the machine would
/// refuse (the API still decides; a refused click shows the API's answer).
pub fn controls(r: &Rollout) -> Vec<Control> {
    let p = r.phase;
    let mut out = Vec::new();
    let steerable = p.is_watching() && !r.rollback_decided;
    if p == Phase::WaitingApproval {
        out.push(control("approve", false, "Approve"));
    }
    if p == Phase::Paused {
        out.push(control("resume", false, "Resume"));
    }
    if steerable && p != Phase::Paused {
        out.push(control("pause", false, "Pause"));
    }
    if steerable {
        out.push(control("promote", false, "Promote"));
        out.push(control("promote", true, "Promote to the end"));
    }
    if !p.is_terminal() && p != Phase::RollingBack && !r.rollback_decided {
        out.push(control("abort", false, "Abort"));
    }
    if matches!(p, Phase::RolledBack | Phase::Failed) {
        out.push(control("retry", false, "Retry"));
    }
    out
}

/// A step index with when it started and ended, as far as known.
type StepSpan = (usize, Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// When each step started (and ended): the deployment record's times when there is one, else
/// the first judged tick of each step.
fn step_times(page: &RolloutPage<'_>) -> Vec<StepSpan> {
    if let Some(steps) = page.steps.filter(|s| !s.is_empty()) {
        return steps
            .iter()
            .map(|s| (s.step, Some(s.started_at), s.ended_at))
            .collect();
    }
    let mut out: Vec<StepSpan> = Vec::new();
    for t in page.ticks {
        if out.last().map(|l| l.0) != Some(t.step) {
            if let Some(last) = out.last_mut() {
                last.2 = Some(t.at);
            }
            out.push((t.step, Some(t.at), None));
        }
    }
    out
}

fn timeline(page: &RolloutPage<'_>) -> String {
    let r = page.rollout;
    let times = step_times(page);
    let mut b = String::from("<h2>Steps</h2><ol class=\"timeline\">");
    let _ = write!(
        b,
        "<li class=\"done\"><span>started</span> <time>{}</time></li>",
        clock(r.created_at)
    );
    for (i, w) in page.weights.iter().enumerate() {
        let state = if r.phase == Phase::Succeeded || i < r.step {
            "done"
        } else if i == r.step && !r.phase.is_terminal() {
            "current"
        } else {
            "todo"
        };
        let when = times
            .iter()
            .rev()
            .find(|t| t.0 == i)
            .map(|(_, start, end)| {
                let s = start.map(clock).unwrap_or_default();
                match end {
                    Some(e) => format!("{s}–{}", clock(*e)),
                    None => s,
                }
            })
            .unwrap_or_default();
        let _ = write!(
            b,
            "<li class=\"{state}\"><span>step {} · {w} %</span> <time>{}</time></li>",
            i + 1,
            escape(&when)
        );
    }
    if let Some(end) = r.finished_at {
        let _ = write!(
            b,
            "<li class=\"done\"><span>{}</span> <time>{}</time></li>",
            r.phase.as_str(),
            clock(end)
        );
    }
    b.push_str("</ol>");
    b
}

/// Deliveries shown, newest first: a hook that failed for days must not make the page huge.
pub const DELIVERIES_SHOWN: usize = 200;

fn deliveries(list: &[Delivery]) -> String {
    let mut b = String::from("<h2>Hook deliveries</h2>");
    if list.is_empty() {
        b.push_str("<p class=\"empty\">None yet.</p>");
        return b;
    }
    if list.len() > DELIVERIES_SHOWN {
        let _ = write!(
            b,
            "<p class=\"empty\">The latest {DELIVERIES_SHOWN} of {}; all are in \
             <code>GET /api/v1/rollouts/{{id}}/history</code>.</p>",
            list.len()
        );
    }
    b.push_str(
        "<div class=\"scroll\"><table class=\"deliveries\"><thead><tr><th>Time</th>\
         <th>Hook</th><th>Outcome</th><th>Attempts</th><th>Error</th></tr></thead><tbody>",
    );
    for d in list.iter().rev().take(DELIVERIES_SHOWN) {
        let _ = write!(
            b,
            "<tr data-hook=\"{hook}\"><td>{}</td><td>{hook}</td><td>{}</td><td>{}</td>\
             <td class=\"reason\">{}</td></tr>",
            clock(d.at),
            escape(&d.outcome),
            d.attempts,
            escape(d.error.as_deref().unwrap_or("")),
            hook = d.hook.as_str(),
        );
    }
    b.push_str("</tbody></table></div>");
    b
}

fn buttons(r: &Rollout) -> String {
    let cs = controls(r);
    if cs.is_empty() {
        return "<div class=\"actions\"><p class=\"empty\">No controls: the rollout has ended.\
                </p></div>"
            .into();
    }
    let mut b = String::from("<div class=\"actions\">");
    for c in cs {
        let _ = write!(
            b,
            "<button type=\"button\" data-action=\"{}\"{} class=\"{}\">{}</button>",
            c.action,
            if c.full { " data-full=\"true\"" } else { "" },
            if c.action == "abort" { "danger" } else { "" },
            c.label
        );
    }
    b.push_str("</div>");
    b
}

/// The page. The token and reason fields sit outside `#live`, which the script replaces on
/// every update, so what a user is typing survives a refresh.
pub fn render(page: &RolloutPage<'_>) -> String {
    let r = page.rollout;
    let score = r.last_tick.as_ref().map(|t| &t.score);
    let mut b = String::new();
    let _ = write!(
        b,
        "<h1><span class=\"rule\">{rule}</span> <span class=\"version\">{version}</span></h1>\
         <form id=\"controls\" class=\"controls\" autocomplete=\"off\">\
         <label>API token <input id=\"token\" type=\"password\" autocomplete=\"off\" \
         spellcheck=\"false\"></label>\
         <label>Reason <input id=\"reason\" type=\"text\" maxlength=\"500\"></label>\
         <p id=\"action-status\" role=\"status\"></p></form>\
         <section id=\"live\" data-phase=\"{phase_name}\">",
        rule = escape(&r.rule),
        version = escape(&r.version),
        phase_name = r.phase.as_str(),
    );
    let _ = write!(
        b,
        "<dl class=\"summary\"><dt>Phase</dt><dd id=\"phase\">{phase}</dd>\
         <dt>Step</dt><dd>{step}</dd><dt>Score</dt><dd>{score}</dd>\
         <dt>{age_label}</dt><dd>{age}</dd><dt>Reason</dt><dd id=\"reason-text\" class=\"reason\">\
         {reason}</dd></dl>",
        phase = phase_badge(r.phase),
        step = escape(&step_text(r, page.weights.len())),
        score = escape(&match score {
            Some(s) => format!("{} ({:?})", num(Some(s.value)), s.outcome).to_lowercase(),
            None => "—".into(),
        }),
        // An ended rollout shows how long it took, not a clock that keeps running.
        age_label = if r.finished_at.is_some() {
            "Took"
        } else {
            "Age"
        },
        age = escape(&age(r.created_at, r.finished_at.unwrap_or(page.now))),
        reason = escape(r.reason.as_deref().unwrap_or("")),
    );
    b.push_str(&buttons(r));
    b.push_str(&timeline(page));
    b.push_str(&metrics_view::verdicts(r.last_tick.as_ref()));
    b.push_str(&metrics_view::charts(r, page.ticks));
    b.push_str(&deliveries(page.deliveries));
    b.push_str("</section>");
    layout(&format!("{} {}", r.rule, r.version), &r.id, &b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout(phase: Phase) -> Rollout {
        let t = DateTime::parse_from_rfc3339("2026-11-30T10:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .expect("time");
        let mut r = Rollout::new("r1".into(), "checkout".into(), "v2".into(), t);
        r.phase = phase;
        r
    }

    fn actions(r: &Rollout) -> Vec<(&'static str, bool)> {
        controls(r).iter().map(|c| (c.action, c.full)).collect()
    }

    #[test]
    fn each_phase_offers_the_controls_the_machine_accepts() {
        use Phase::*;
        let table: [(Phase, &[(&str, bool)]); 10] = [
            (Pending, &[("abort", false)]),
            (
                Progressing,
                &[
                    ("pause", false),
                    ("promote", false),
                    ("promote", true),
                    ("abort", false),
                ],
            ),
            (
                WaitingWindow,
                &[
                    ("pause", false),
                    ("promote", false),
                    ("promote", true),
                    ("abort", false),
                ],
            ),
            (
                WaitingApproval,
                &[
                    ("approve", false),
                    ("pause", false),
                    ("promote", false),
                    ("promote", true),
                    ("abort", false),
                ],
            ),
            (
                Paused,
                &[
                    ("resume", false),
                    ("promote", false),
                    ("promote", true),
                    ("abort", false),
                ],
            ),
            (Promoting, &[("abort", false)]),
            (Succeeded, &[]),
            (RollingBack, &[]),
            (RolledBack, &[("retry", false)]),
            (Failed, &[("retry", false)]),
        ];
        for (phase, want) in table {
            assert_eq!(actions(&rollout(phase)), want.to_vec(), "{phase:?}");
        }
        let mut decided = rollout(Progressing);
        decided.rollback_decided = true;
        assert!(actions(&decided).is_empty(), "a decided rollback is final");
    }

    #[test]
    fn page_escapes_the_reason_and_keeps_the_token_field_outside_the_live_part() {
        let mut r = rollout(Phase::Paused);
        r.reason = Some("\"><img src=x onerror=alert(1)>".into());
        let html = render(&RolloutPage {
            rollout: &r,
            weights: &[5, 25, 100],
            ticks: &[],
            deliveries: &[],
            steps: None,
            now: r.created_at,
        });
        assert!(!html.contains("<img"), "{html}");
        assert!(html.contains("&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"));
        let live = html.find("id=\"live\"").expect("live section");
        assert!(html.find("id=\"token\"").expect("token field") < live);
        assert!(html.contains("data-action=\"resume\""));
        assert!(html.contains("step 1/3 · 0 %"));
    }

    #[test]
    fn an_ended_rollout_shows_its_duration_and_at_most_the_latest_deliveries() {
        let mut r = rollout(Phase::RolledBack);
        r.finished_at = Some(r.created_at + chrono::Duration::seconds(75));
        let many: Vec<Delivery> = (0..DELIVERIES_SHOWN + 50)
            .map(|i| Delivery {
                rollout_id: "r1".into(),
                hook: crate::rollout::HookKind::Rollback,
                idempotency_key: format!("k{i}"),
                attempts: 1,
                outcome: "failed".into(),
                error: Some(format!("attempt {i}")),
                at: r.created_at,
            })
            .collect();
        let html = render(&RolloutPage {
            rollout: &r,
            weights: &[5, 100],
            ticks: &[],
            deliveries: &many,
            steps: None,
            now: r.created_at + chrono::Duration::hours(5),
        });
        assert!(html.contains("<dt>Took</dt><dd>1m 15s</dd>"), "{html}");
        assert_eq!(
            html.matches("data-hook=\"rollback\"").count(),
            DELIVERIES_SHOWN
        );
        assert!(
            html.contains("attempt 249") && !html.contains("attempt 49<"),
            "newest first"
        );
        assert!(html.contains("The latest 200 of 250"));
    }
}
