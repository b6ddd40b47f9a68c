//! Semantic checks that YAML types cannot express: ordering of steps, thresholds that contradict
//! each other, templates that reference unknown variables. Every finding keeps the location of
//! the value it is about, and all findings are returned, not just the first.

use serde_saphyr::{Location, Spanned};

pub use super::lint::lint;
use super::schema::{HookSpec, RuleSpec};
use super::templates;
use super::window::{Window, Windows};

/// A finding before the file name is attached.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub line: u32,
    pub column: u32,
    pub message: String,
}

pub(super) fn at<T>(s: &Spanned<T>, message: impl Into<String>) -> Finding {
    at_loc(s.referenced, message)
}

pub(super) fn at_loc(loc: Location, message: impl Into<String>) -> Finding {
    Finding {
        line: loc.line().max(1) as u32,
        column: loc.column().max(1) as u32,
        message: message.into(),
    }
}

/// Runs every check; an empty list means the rule can run.
///
/// `analysis_at` is where the `analysis:` block starts (absent when the file leaves it out, and
/// then its defaults are valid).
pub fn validate(spec: &RuleSpec, analysis_at: Option<Location>) -> (Vec<Finding>, Option<Windows>) {
    let mut out = Vec::new();
    let name = &spec.name.value;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        out.push(at(
            &spec.name,
            format!("rule name {name:?} must be non-empty letters, digits, '-' or '_'"),
        ));
    }
    let analysis_at = analysis_at.unwrap_or(spec.name.referenced);
    check_steps(spec, &mut out);
    check_analysis(spec, analysis_at, &mut out);
    super::bounds::check(spec, analysis_at, &mut out);
    super::validate_metric::check_metrics(spec, &mut out);
    super::promql::check(spec, &mut out);
    for hook in spec.hooks.calls() {
        check_hook(hook, &mut out);
    }
    if let Some(t) = &spec.traffic {
        for message in super::traffic::check(&t.value) {
            out.push(at(t, message));
        }
    }
    if let Some(r) = &spec.hooks.readiness
        && reqwest::Url::parse(&r.value.url).is_err()
    {
        out.push(at(
            r,
            format!(
                "readiness url {:?} is not a URL",
                crate::redact::url(&r.value.url)
            ),
        ));
    }
    for h in &spec.health {
        if reqwest::Url::parse(&h.value.url).is_err() {
            out.push(at(
                h,
                format!(
                    "health url {:?} is not a URL",
                    crate::redact::url(&h.value.url)
                ),
            ));
        }
        if h.value.failure_limit == 0 {
            out.push(at(h, "health failure_limit must be at least 1"));
        }
    }
    for (key, list) in [
        ("rollback_on", &spec.alerts.rollback_on),
        ("pause_on", &spec.alerts.pause_on),
    ] {
        for m in list {
            if let Err(e) = super::matchers::parse(&m.value) {
                out.push(at(m, format!("alerts.{key} {:?}: {e}", m.value)));
            }
        }
    }
    check_verify(spec, &mut out);
    let windows = check_windows(spec, &mut out);
    (out, windows)
}

fn check_steps(spec: &RuleSpec, out: &mut Vec<Finding>) {
    let steps = &spec.steps.value;
    let Some(last) = steps.last() else {
        out.push(at(
            &spec.steps,
            "steps must not be empty; e.g. [{weight: 5, hold: 1h}, {weight: 100}]",
        ));
        return;
    };
    let mut previous = 0;
    for step in steps {
        let w = step.value.weight;
        if w == 0 || w > 100 {
            out.push(at(
                step,
                format!("step weight {w} must be between 1 and 100"),
            ));
        } else if w <= previous {
            out.push(at(
                step,
                format!("step weight {w} must be greater than the previous step's {previous}"),
            ));
        }
        previous = previous.max(w);
    }
    if last.value.weight != 100 {
        out.push(at(
            last,
            format!(
                "the last step must have weight 100, not {}",
                last.value.weight
            ),
        ));
    }
}

fn check_analysis(spec: &RuleSpec, loc: Location, out: &mut Vec<Finding>) {
    let a = &spec.analysis;
    let mut bad = |m: String| out.push(at_loc(loc, format!("analysis: {m}")));
    if a.interval.is_zero() || a.step.is_zero() || a.window.is_zero() {
        bad("interval, window and step must be longer than zero".into());
    }
    if a.window < a.step {
        bad(format!(
            "window ({}) must be at least one step ({})",
            humantime::format_duration(a.window),
            humantime::format_duration(a.step)
        ));
    }
    if a.max_staleness().is_zero() {
        bad("max_staleness must be longer than zero".into());
    }
    if a.failure_limit == 0 || a.nodata_limit == 0 {
        bad("failure_limit and nodata_limit must be at least 1".into());
    }
    // `contains` is false for NaN, so a NaN cut-off is refused too.
    if !(0.0..=100.0).contains(&a.score.pass)
        || !(0.0..=100.0).contains(&a.score.marginal)
        || a.score.marginal > a.score.pass
    {
        bad(format!(
            "score cut-offs must satisfy 0 <= marginal ({}) <= pass ({}) <= 100",
            a.score.marginal, a.score.pass
        ));
    }
}

fn check_hook(hook: &Spanned<HookSpec>, out: &mut Vec<Finding>) {
    let h = &hook.value;
    match (&h.url, &h.command) {
        (Some(url), None) => {
            if reqwest::Url::parse(url).is_err() {
                out.push(at(
                    hook,
                    format!("hook url {:?} is not a URL", crate::redact::url(url)),
                ));
            }
        }
        (None, Some(argv)) if !argv.is_empty() => {
            for arg in argv {
                let known = templates::HOOK_VARIABLES.iter().copied().collect();
                if let Err(e) = templates::check_known(arg, &known) {
                    out.push(at(hook, format!("hook command argument {arg:?}: {e}")));
                }
            }
        }
        (None, Some(_)) => out.push(at(hook, "hook command must not be empty")),
        (Some(_), Some(_)) => out.push(at(
            hook,
            "hook has both `url` and `command`; a hook is exactly one of them, keep one",
        )),
        (None, None) => out.push(at(hook, "hook needs a `url` or a `command`")),
    }
    if h.timeout.is_zero() {
        out.push(at(hook, "hook timeout must be longer than zero"));
    }
    if let Some(path) = &h.secret_file {
        // Only the path goes into the message: the content is a secret.
        if h.url.is_none() {
            out.push(at(
                hook,
                "secret_file signs HTTP hooks; a command hook cannot use it",
            ));
        }
        match std::fs::read_to_string(path) {
            Ok(text) if text.trim().is_empty() => out.push(at(
                hook,
                format!("hook secret_file {} is empty", path.display()),
            )),
            Ok(_) => {}
            Err(e) => out.push(at(
                hook,
                format!(
                    "hook secret_file {} cannot be read: {}",
                    path.display(),
                    e.kind()
                ),
            )),
        }
    }
}

fn check_windows(spec: &RuleSpec, out: &mut Vec<Finding>) -> Option<Windows> {
    let w = spec.windows.as_ref()?;
    let timezone = match Windows::parse_timezone(&w.timezone.value) {
        Ok(tz) => tz,
        Err(e) => {
            out.push(at(&w.timezone, e));
            return None;
        }
    };
    let mut allow = Vec::new();
    for item in &w.allow {
        match Window::parse(&item.value) {
            Ok(win) => allow.push(win),
            Err(e) => out.push(at(item, e)),
        }
    }
    let mut deny = Vec::new();
    for item in &w.deny {
        match super::window::Blackout::parse(&item.value) {
            Ok(b) => deny.push(b),
            Err(e) => out.push(at(item, e)),
        }
    }
    if w.allow.is_empty() && w.deny.is_empty() {
        out.push(at(
            &w.timezone,
            "windows must list at least one allow window or deny blackout",
        ));
    }
    Some(Windows {
        timezone,
        allow,
        deny,
    })
}

/// `verify:` checkpoints parse, increase and stay bounded; reverting needs a `revert` hook.
fn check_verify(spec: &RuleSpec, out: &mut Vec<Finding>) {
    let Some(v) = &spec.verify else {
        return;
    };
    if let Err((i, e)) = super::checkpoints::parse_checkpoints(v) {
        match v.checkpoints.value.get(i) {
            Some(item) => out.push(at(item, e)),
            None => out.push(at(&v.checkpoints, e)),
        }
    }
    if v.revert_on_failure && spec.hooks.revert.is_none() {
        out.push(at(
            &v.checkpoints,
            "verify.revert_on_failure needs a hooks.revert to call",
        ));
    }
}
