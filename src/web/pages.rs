//! The page frame and the rollout list. Pure: data and `now` in, HTML out.

use std::fmt::Write;

use chrono::{DateTime, Utc};

use crate::html::{age, escape, num, path_segment};
use crate::rollout::{Phase, Rollout};

/// The frame every page shares. `rollout` is the id a detail page follows on the live feed
/// (empty on the list, which follows every rollout). The script and the styles are same-origin
/// files, so the Content-Security-Policy can forbid inline code.
pub fn layout(title: &str, rollout: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · canaryd</title>\
         <link rel=\"stylesheet\" href=\"/static/app.css\">\
         <script src=\"/static/app.js\" defer></script></head>\
         <body data-rollout=\"{rollout}\"><header><a href=\"/\">canaryd</a>\
         <span id=\"feed\" class=\"feed\" title=\"live updates\">○</span></header>\
         <main>{body}</main></body></html>\n",
        title = escape(title),
        rollout = escape(rollout),
    )
}

/// The phase as a badge; the class picks its colour.
pub fn phase_badge(p: Phase) -> String {
    let kind = match p {
        Phase::Succeeded => "ok",
        Phase::RolledBack | Phase::Failed | Phase::RollingBack => "bad",
        Phase::Paused | Phase::WaitingApproval | Phase::WaitingWindow => "wait",
        _ => "run",
    };
    format!(
        "<span class=\"phase {kind}\" data-phase=\"{p}\">{p}</span>",
        p = p.as_str()
    )
}

/// `step 2/4 · 25 %`, as the list and the detail page both say it.
pub fn step_text(r: &Rollout, steps: usize) -> String {
    if steps == 0 {
        return format!("{} %", r.weight);
    }
    format!(
        "step {}/{} · {} %",
        (r.step + 1).min(steps),
        steps,
        r.weight
    )
}

/// One row of the list: a rollout and the number of steps of its plan.
pub struct Row<'a> {
    pub rollout: &'a Rollout,
    pub steps: usize,
}

/// Every rollout, newest first: rule, version, phase, step and weight, score, age, last reason.
pub fn list(rows: &[Row<'_>], now: DateTime<Utc>) -> String {
    let mut b = String::from("<section id=\"live\"><h1>Rollouts</h1>");
    if rows.is_empty() {
        b.push_str("<p class=\"empty\">No rollouts yet.</p></section>");
        return layout("Rollouts", "", &b);
    }
    b.push_str(
        "<div class=\"scroll\"><table class=\"rollouts\"><thead><tr><th>Rule</th>\
         <th>Version</th><th>Phase</th><th>Step</th><th>Score</th><th>Age</th>\
         <th>Last reason</th></tr></thead><tbody>",
    );
    for row in rows.iter().rev() {
        let r = row.rollout;
        let score = r.last_tick.as_ref().map(|t| t.score.value);
        let _ = write!(
            b,
            "<tr data-id=\"{id}\"><td>{rule}</td><td><a href=\"/rollouts/{href}\">{version}</a>\
             </td><td>{phase}</td><td>{step}</td><td>{score}</td><td>{age}</td>\
             <td class=\"reason\">{reason}</td></tr>",
            id = escape(&r.id),
            rule = escape(&r.rule),
            href = path_segment(&r.id),
            version = escape(&r.version),
            phase = phase_badge(r.phase),
            step = escape(&step_text(r, row.steps)),
            score = escape(&num(score)),
            age = escape(&age(r.created_at, now)),
            reason = escape(r.reason.as_deref().unwrap_or("")),
        );
    }
    b.push_str("</tbody></table></div></section>");
    layout("Rollouts", "", &b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .expect("time")
    }

    #[test]
    fn list_shows_each_rollout_with_its_step_and_escapes_what_users_wrote() {
        let mut r = Rollout::new(
            "id-1".into(),
            "checkout".into(),
            "v2".into(),
            at("2026-11-30T10:00:00Z"),
        );
        r.phase = Phase::Progressing;
        r.step = 1;
        r.weight = 25;
        r.reason = Some("<script>alert(1)</script>".into());
        let page = list(
            &[Row {
                rollout: &r,
                steps: 4,
            }],
            at("2026-11-30T10:03:12Z"),
        );
        assert!(page.contains("step 2/4 · 25 %"), "{page}");
        assert!(page.contains("href=\"/rollouts/id-1\""));
        assert!(page.contains("3m 12s"));
        assert!(page.contains("data-phase=\"progressing\""));
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert_eq!(
            page.matches("<script").count(),
            1,
            "only the page's own script tag"
        );
    }

    #[test]
    fn an_empty_list_says_so() {
        assert!(list(&[], at("2026-11-30T10:00:00Z")).contains("No rollouts yet"));
    }
}
