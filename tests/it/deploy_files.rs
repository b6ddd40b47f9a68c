//! The files people deploy with rather than code: Grafana dashboards (every PromQL expression
//! checked by promtool), docker-compose.yml (structure, mounts, ports; no Docker engine in CI)
//! and the compose stack's own canaryd configuration.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn collect_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            if let Some(targets) = o.get("targets").and_then(Value::as_array) {
                out.extend(
                    targets
                        .iter()
                        .filter_map(|t| t["expr"].as_str().map(String::from)),
                );
            }
            o.values().for_each(|v| collect_exprs(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

/// Grafana's interval variables become a duration, every other variable a plain label value.
fn substitute(expr: &str) -> String {
    let mut s = expr.to_string();
    for v in [
        "$__rate_interval",
        "$__interval",
        "$__range",
        "${__rate_interval}",
        "${__interval}",
        "${__range}",
    ] {
        s = s.replace(v, "5m");
    }
    let re = regex::Regex::new(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?").expect("regex");
    re.replace_all(&s, "x").into_owned()
}

#[test]
fn every_dashboard_expression_is_valid_promql_for_promtool() {
    let dir = root().join("grafana/dashboards");
    let mut rules = String::from("groups:\n  - name: dashboards\n    rules:\n");
    let mut count = 0;
    let mut dashboards = 0;
    for entry in std::fs::read_dir(&dir).expect("grafana/dashboards") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        dashboards += 1;
        let d: Value = serde_json::from_slice(&std::fs::read(&path).expect("read"))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            d["uid"].is_string() && d["title"].is_string(),
            "{}",
            path.display()
        );
        let mut exprs = Vec::new();
        collect_exprs(&d, &mut exprs);
        assert!(!exprs.is_empty(), "{} has no PromQL", path.display());
        for e in exprs {
            count += 1;
            let expr = serde_json::to_string(&substitute(&e)).expect("json string");
            rules.push_str(&format!(
                "      - record: dashboard:expr_{count}\n        expr: {expr}\n"
            ));
        }
    }
    assert_eq!(dashboards, 2, "rollout overview and canary vs baseline");
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("dashboards.yml");
    std::fs::write(&file, &rules).expect("write");
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("promtool (apt-get install prometheus)");
    assert!(
        out.status.success(),
        "promtool rejected a dashboard expression:\n{}{}\n{rules}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("SUCCESS: {count} rules found"))
    );
}

#[test]
fn substitution_leaves_no_grafana_variable_behind() {
    assert_eq!(
        substitute(r#"rate(x{rule=~"$rule", m="${metric}"}[$__rate_interval])"#),
        r#"rate(x{rule=~"x", m="x"}[5m])"#
    );
}

#[test]
fn grafana_provisioning_points_at_the_mounted_dashboards() {
    let ds = yaml(&root().join("grafana/provisioning/datasources/prometheus.yml"));
    assert_eq!(ds["datasources"][0]["type"], "prometheus");
    assert_eq!(ds["datasources"][0]["url"], "http://prometheus:9090");
    let dash = yaml(&root().join("grafana/provisioning/dashboards/canaryd.yml"));
    assert_eq!(
        dash["providers"][0]["options"]["path"],
        "/var/lib/grafana/dashboards"
    );
}

#[test]
fn compose_stack_has_every_service_with_existing_mounts_and_distinct_ports() {
    let compose = yaml(&root().join("docker-compose.yml"));
    let services = compose["services"].as_object().expect("services");
    let names: BTreeSet<&str> = services.keys().map(String::as_str).collect();
    for s in [
        "prometheus",
        "alertmanager",
        "grafana",
        "demo-baseline",
        "demo-canary",
        "canaryd",
    ] {
        assert!(names.contains(s), "missing service {s}");
    }
    let mut host_ports = BTreeSet::new();
    let mut mounts = BTreeSet::new();
    for (name, s) in services {
        assert!(
            s["image"].is_string() || s["build"].is_string(),
            "{name}: no image"
        );
        for p in s["ports"].as_array().into_iter().flatten() {
            let p = p.as_str().expect("ports as strings");
            let host: u16 = p
                .split(':')
                .next()
                .and_then(|h| h.parse().ok())
                .expect("host port");
            assert!(
                host_ports.insert(host),
                "{name}: host port {host} used twice"
            );
        }
        for v in s["volumes"].as_array().into_iter().flatten() {
            let v = v.as_str().expect("volume as string");
            let mut parts = v.split(':');
            let (src, dst) = (parts.next().expect("source"), parts.next().expect("target"));
            if src.starts_with('.') || src.starts_with('/') {
                assert!(
                    root().join(src).exists(),
                    "{name}: mounted {src} does not exist"
                );
            } else {
                assert!(
                    compose["volumes"].get(src).is_some(),
                    "{name}: named volume {src} is not declared"
                );
            }
            mounts.insert((name.as_str(), dst.to_string()));
        }
        for d in s["depends_on"].as_array().into_iter().flatten() {
            assert!(
                names.contains(d.as_str().unwrap_or("")),
                "{name} depends on unknown {d}"
            );
        }
    }
    for track in ["baseline", "canary"] {
        let cmd = &services[&format!("demo-{track}")]["command"];
        assert_eq!(cmd[0], "demo-service");
        assert!(
            cmd.as_array().expect("argv").contains(&Value::from(track)),
            "{cmd}"
        );
    }
    assert!(mounts.contains(&("grafana", "/etc/grafana/provisioning".into())));
    assert!(mounts.contains(&("grafana", "/var/lib/grafana/dashboards".into())));
    assert!(mounts.contains(&("canaryd", "/etc/canaryd/canaryd.yaml".into())));
    // Prometheus scrapes what compose runs, on the ports they listen on.
    let prom = yaml(&root().join("deploy/prometheus.yml"));
    let targets: Vec<String> = prom["scrape_configs"]
        .as_array()
        .expect("scrape_configs")
        .iter()
        .flat_map(|c| {
            c["static_configs"][0]["targets"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|t| t.as_str().map(String::from))
        .collect();
    assert_eq!(
        targets,
        ["demo-baseline:8000", "demo-canary:8000", "canaryd:9797"]
    );
    for t in &targets {
        assert!(
            names.contains(t.split(':').next().unwrap_or("")),
            "scrape target {t}"
        );
    }
    let am = yaml(&root().join("deploy/alertmanager.yml"));
    assert_eq!(
        am["receivers"][0]["webhook_configs"][0]["url"],
        "http://canaryd:9797/api/v1/alertmanager"
    );
}

#[test]
fn compose_canaryd_configuration_and_rules_load() {
    let cfg = canaryd::config::Config::load(&root().join("deploy/canaryd.yaml")).expect("config");
    assert_eq!(cfg.alertmanager.urls, ["http://alertmanager:9093"]);
    // The token is generated at first start (the `secrets` service), never committed: the
    // config reads it from the shared volume, and a token of the generated length is safe.
    assert_eq!(
        cfg.api_token_file.as_deref(),
        Some(std::path::Path::new("/run/secrets/canaryd-api-token"))
    );
    let compose = yaml(&root().join("docker-compose.yml"));
    let generator = compose["services"]["secrets"]["command"].to_string();
    assert!(
        generator.contains("/secrets/canaryd-api-token"),
        "{generator}"
    );
    assert!(
        !root().join("deploy/canaryd-api-token").exists(),
        "no token in the repository"
    );
    cfg.check_safe(Some(&"ab".repeat(24)))
        .expect("safe with a generated token");
    let (rules, errors) =
        canaryd::rules::load_paths(&[root().join("deploy/rules").display().to_string()]);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(rules.len(), 1);
    assert!(!rules[0].spec.health.is_empty());
}
