//! Checkpoints after promotion as pure tables: the schedule, the comparison with the service
//! before the rollout, and the machine's `verifying` transitions (pass, regress and revert,
//! regress without revert, abort while verifying, emergency extension).

use crate::machine_support;

use std::path::Path;

use canaryd::rollout::controls::Control;
use canaryd::rollout::verify::{
    CheckpointMetric, CheckpointResult, EMERGENCY_VERIFY, judge_metric, plan_for,
};
use canaryd::rollout::{Action, Event, HookKind, Phase, Plan, Rollout, handle};
use canaryd::rules::parse_rule;
use machine_support::{at, ok, plan_of, step};

const RULE: &str = r#"name: demo
selector:
  canary: 'service="demo", track="canary"'
  baseline: 'service="demo", track="baseline"'
steps:
  - { weight: 5, hold: 1h }
  - { weight: 100 }
metrics:
  - name: error_rate
    query: sum(rate(http_requests_total{ {{selector}} }[{{step}}]))
    rollback_above: 0.05
    max_ratio: 2.0
hooks:
  revert: { url: "http://127.0.0.1:9/revert" }
"#;

fn rule(verify: &str) -> canaryd::rules::Rule {
    parse_rule(Path::new("rule.yaml"), &format!("{RULE}{verify}")).expect("rule loads")
}

/// 5 % held an hour, then 100 %.
fn plan() -> Plan {
    plan_of(&[5], 3600)
}

/// A rollout of `verify` promoted (hook confirmed) at t=10.
fn promoted(verify: &str, emergency: bool) -> Rollout {
    let rule = rule(verify);
    let p = plan();
    let mut r = Rollout::new("ro-1".into(), "demo".into(), "v2".into(), at(0));
    r.emergency = emergency;
    r.verify = plan_for(rule.spec.verify.as_deref(), emergency).map(|mut v| {
        v.previous_version = Some("v1".into());
        Box::new(v)
    });
    let (mut r, _) = step(&r, &p, Event::Start, 0);
    if emergency {
        r = step(&r, &p, control(Control::Approve), 1).0;
    }
    let (r, _) = step(&r, &p, ok(HookKind::SetWeight), 1);
    let (r, a) = step(&r, &p, control(Control::PromoteFull), 2);
    assert_eq!(a, vec![Action::Promote]);
    step(&r, &p, ok(HookKind::Promote), 10).0
}

fn control(c: Control) -> Event {
    Event::Control {
        control: c,
        by: "bob".into(),
        reason: None,
    }
}

fn result(secs: i64, passed: bool) -> CheckpointResult {
    CheckpointResult {
        at: at(secs),
        passed,
        metrics: vec![CheckpointMetric {
            name: "error_rate".into(),
            before: Some(0.01),
            after: Some(if passed { 0.012 } else { 0.2 }),
            passed,
            reason: "r".into(),
        }],
    }
}

const VERIFY: &str = "verify:\n  checkpoints: [15m, 1h, 24h]\n  revert_on_failure: true\n";

#[test]
fn promotion_verifies_each_checkpoint_then_succeeds() {
    let p = plan();
    let r = promoted(VERIFY, false);
    assert_eq!(
        (r.phase, r.weight, r.finished_at),
        (Phase::Verifying, 100, None)
    );
    let v = r.verify.clone().expect("verification");
    let schedule: Vec<u64> = v.checkpoints.iter().map(|c| c.after_secs).collect();
    assert_eq!(schedule, [900, 3600, 86_400]);
    // Due exactly at promoted + 15 m, not before; then the next one.
    assert_eq!(v.due(at(10 + 899)), None);
    assert_eq!(v.due(at(10 + 900)), Some(0));
    let (r, a) = step(
        &r,
        &p,
        Event::Checkpoint {
            index: 0,
            result: result(910, true),
        },
        910,
    );
    assert!(a.is_empty());
    assert_eq!(r.phase, Phase::Verifying);
    assert_eq!(r.verify.as_ref().unwrap().due(at(1000)), None);
    // A checkpoint already measured is not measured twice.
    let t = handle(
        &r,
        &p,
        Event::Checkpoint {
            index: 0,
            result: result(911, false),
        },
        at(911),
    );
    assert!(t.rejected.is_some());
    let (r, _) = step(
        &r,
        &p,
        Event::Checkpoint {
            index: 1,
            result: result(3610, true),
        },
        3610,
    );
    let (r, _) = step(
        &r,
        &p,
        Event::Checkpoint {
            index: 2,
            result: result(86_410, true),
        },
        86_410,
    );
    assert_eq!(r.phase, Phase::Succeeded);
    assert_eq!(r.finished_at, Some(at(86_410)));
    // Ticks, timers, pause and promote do nothing while verifying.
    let r = promoted(VERIFY, false);
    for e in [
        Event::Timer,
        control(Control::Pause),
        control(Control::Promote),
    ] {
        let t = handle(&r, &p, e, at(20));
        assert!(t.actions.is_empty());
        assert_eq!(t.rollout.phase, Phase::Verifying);
    }
}

#[test]
fn failing_checkpoint_reverts_to_the_previous_version_or_leaves_it_to_a_human() {
    let p = plan();
    let r = promoted(VERIFY, false);
    let (r, a) = step(
        &r,
        &p,
        Event::Checkpoint {
            index: 0,
            result: result(910, false),
        },
        910,
    );
    assert_eq!(r.phase, Phase::RollingBack);
    assert!(r.rollback_decided);
    let [Action::Revert { reason, previous }] = a.as_slice() else {
        panic!("expected one revert, got {a:?}");
    };
    assert_eq!(previous.as_deref(), Some("v1"));
    assert!(
        reason.starts_with("post-promotion regression of v2 at T+15m: error_rate"),
        "{reason}"
    );
    let (done, _) = step(&r, &p, ok(HookKind::Revert), 911);
    assert_eq!(done.phase, Phase::RolledBack);
    let failed = handle(
        &r,
        &p,
        Event::HookFailed {
            hook: HookKind::Revert,
            error: "503".into(),
        },
        at(911),
    );
    assert_eq!(failed.rollout.phase, Phase::Failed);
    assert!(
        failed
            .rollout
            .reason
            .unwrap()
            .starts_with("revert hook failed: 503")
    );

    let no_revert = promoted("verify:\n  checkpoints: [15m]\n", false);
    let (r, a) = step(
        &no_revert,
        &p,
        Event::Checkpoint {
            index: 0,
            result: result(910, false),
        },
        910,
    );
    assert!(a.is_empty());
    assert_eq!(r.phase, Phase::Failed);
    assert!(r.reason.unwrap().contains("a human decides"));
}

#[test]
fn abort_while_verifying_reverts_and_nothing_promotes_after() {
    let p = plan();
    let r = promoted(VERIFY, false);
    let (r, a) = step(&r, &p, control(Control::Abort), 20);
    assert!(matches!(a.as_slice(), [Action::Revert { .. }]), "{a:?}");
    for e in [
        control(Control::PromoteFull),
        Event::Checkpoint {
            index: 0,
            result: result(910, true),
        },
    ] {
        let t = handle(&r, &p, e, at(910));
        assert!(t.actions.is_empty());
        assert_eq!(t.rollout.phase, Phase::RollingBack);
    }
}

#[test]
fn emergency_extends_verification_to_two_hours() {
    let r = promoted(VERIFY, true);
    let last = r.verify.unwrap().checkpoints.last().unwrap().after_secs;
    assert_eq!(last, 86_400, "already longer than 2 h: unchanged");
    let r = promoted("verify:\n  checkpoints: [15m]\n", true);
    let v = r.verify.unwrap();
    let s: Vec<u64> = v.checkpoints.iter().map(|c| c.after_secs).collect();
    assert_eq!(s, [900, EMERGENCY_VERIFY.as_secs()]);
    // A rule without `verify:` still verifies an emergency for 2 h; a normal one does not.
    assert_eq!(promoted("", true).phase, Phase::Verifying);
    assert_eq!(promoted("", false).phase, Phase::Succeeded);
}

#[test]
fn checkpoint_compares_with_the_service_before_the_rollout() {
    let rule = rule("");
    let m = rule.metrics().next().unwrap();
    let table = [
        (Some(0.01), Some(0.015), true),
        (Some(0.01), Some(0.03), false), // 3x before: max_ratio 2
        (Some(0.04), Some(0.06), false), // over rollback_above 0.05
        (Some(0.0), Some(0.02), true),   // nothing to divide by: only the absolute line
        (None, Some(0.01), false),       // nothing before to compare with
        (Some(0.01), None, false),       // no data after: not verified
        (Some(0.01), Some(f64::NAN), false),
    ];
    for (before, after, passed) in table {
        let got = judge_metric(m, before, after);
        assert_eq!(got.passed, passed, "{before:?} → {after:?}: {}", got.reason);
        assert_eq!((got.before, got.name.as_str()), (before, "error_rate"));
    }
}

#[test]
fn bad_checkpoints_point_at_file_line_col() {
    for (verify, says) in [
        ("verify:\n  checkpoints: [1h, 15m]\n", "must come after"),
        ("verify:\n  checkpoints: [15x]\n", "not a duration"),
        ("verify:\n  checkpoints: [40d]\n", "between 1s and 30 days"),
        ("verify:\n  checkpoints: []\n", "at least one"),
    ] {
        let e = parse_rule(Path::new("rule.yaml"), &format!("{RULE}{verify}"))
            .expect_err("refused")[0]
            .to_string();
        assert!(e.starts_with("rule.yaml:16:"), "{e}");
        assert!(e.contains(says), "{verify}: {e}");
    }
    let no_hook = RULE.replace(
        "hooks:\n  revert: { url: \"http://127.0.0.1:9/revert\" }\n",
        "",
    );
    let e = parse_rule(Path::new("rule.yaml"), &format!("{no_hook}{VERIFY}")).expect_err("refused")
        [0]
    .to_string();
    assert!(e.contains("needs a hooks.revert"), "{e}");
}

#[test]
fn deploy_complete_message_and_report_carry_each_checkpoints_numbers() {
    use canaryd::actions::templates::Templates;
    use canaryd::controller::Update;
    use canaryd::controller::report::ReportBuilder;
    let p = plan();
    let r = promoted("verify:\n  checkpoints: [15m, 1h]\n", false);
    let (r, _) = step(
        &r,
        &p,
        Event::Checkpoint {
            index: 0,
            result: result(910, true),
        },
        910,
    );
    let (r, _) = step(
        &r,
        &p,
        Event::Checkpoint {
            index: 1,
            result: result(3610, true),
        },
        3610,
    );
    assert_eq!(r.phase, Phase::Succeeded);
    let mut r = r;
    r.controls[0].reason = Some("ok\n| forged row |".into());
    let mut b = ReportBuilder::new(&r, Some(std::sync::Arc::new(rule(""))));
    b.observe(&Update {
        rollout: std::sync::Arc::new(r.clone()),
        event: "checkpoint",
        actions: vec![],
    });
    let mut ctx = serde_json::to_value(b.report()).expect("report json");
    ctx["rollout_url"] = serde_json::json!("http://canaryd/api/v1/rollouts/ro-1");
    let t = Templates::load(None).expect("templates");
    let text = t.render("complete.txt.j2", &ctx).expect("render");
    assert!(
        text.contains("Post-deploy checkpoints (before the rollout → after):"),
        "{text}"
    );
    assert!(
        text.contains("- T+900s: passed; error_rate 0.01 → 0.012"),
        "{text}"
    );
    assert!(
        text.contains("- T+3600s: passed; error_rate 0.01 → 0.012"),
        "{text}"
    );
    let md = t.render("report.md.j2", &ctx).expect("markdown");
    assert!(
        md.contains("| T+900s |") && md.contains("| passed | error_rate 0.01 → 0.012 |"),
        "{md}"
    );
    assert!(
        md.contains("| promote_full | bob | ok \\| forged row \\| | progressing → promoting |"),
        "{md}"
    );
    assert!(!md.lines().any(|l| l.starts_with("| forged row")), "{md}");
    // Without verification the message has no checkpoint section.
    let plain = ReportBuilder::new(&promoted("", false), None);
    let mut ctx = serde_json::to_value(plain.report()).expect("json");
    ctx["rollout_url"] = serde_json::json!("x");
    ctx["finished_at"] = serde_json::json!("2026-11-18T17:00:00Z");
    ctx["duration"] = serde_json::json!("1m");
    ctx["outcome"] = serde_json::json!("promoted");
    let text = t.render("complete.txt.j2", &ctx).expect("render");
    assert!(!text.contains("Post-deploy"), "{text}");
}
