//! The `traffic:` key and the lifecycle hooks at load: every mistake is found with
//! file:line:col before a rollout can run, and nothing that could break out of a proxy's
//! syntax is accepted as a name.

use std::path::Path;

use canaryd::rules::parse_rule;

/// Lines 1-12; `traffic:` starts on line 13.
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
hooks: {}
"#;

fn load(traffic: &str) -> Result<canaryd::rules::Rule, Vec<String>> {
    parse_rule(Path::new("rule.yaml"), &format!("{RULE}{traffic}"))
        .map_err(|es| es.iter().map(ToString::to_string).collect())
}

#[test]
fn each_provider_loads() {
    for t in [
        "traffic: { provider: haproxy, socket: /run/haproxy/admin.sock, backend: app, canary: app-canary, baseline: app-baseline }\n",
        "traffic: { provider: haproxy, address: '127.0.0.1:9999', backend: app, canary: c, baseline: b, timeout: 1s }\n",
        "traffic: { provider: nginx, include: /etc/nginx/conf.d/app.conf, upstream: app, canary: '10.0.0.2:8080', baseline: '10.0.0.1:8080', sticky_key: $cookie_user_id }\n",
        "traffic: { provider: traefik, path: /etc/traefik/dynamic/app.yml, service: app, canary: app-v2, baseline: app-v1 }\n",
        "traffic: { provider: traefik, path: /etc/traefik/dynamic/app.yml, service: app, canary: app-v2@file, baseline: app-v1@docker }\n",
        "traffic: { provider: nginx, include: /x.conf, upstream: app.v2-x, canary: '10.0.0.2:8080', baseline: '10.0.0.1:8080' }\n",
        "traffic: { provider: flag_file, path: /etc/app/flags.env, restart: [systemctl, restart, app] }\n",
        "traffic: { provider: flag_file, path: /etc/app/flags.json, format: json, key: NEW_CHECKOUT_PCT }\n",
    ] {
        assert!(load(t).is_ok(), "{t}: {:?}", load(t).err());
    }
}

#[test]
fn a_server_name_that_could_inject_a_command_is_refused_with_its_location() {
    let errors = load(
        "traffic: { provider: haproxy, socket: /s, backend: app, canary: 'c; shutdown sessions', baseline: b }\n",
    )
    .expect_err("refused");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("rule.yaml:13:"), "{}", errors[0]);
    assert!(errors[0].contains("traffic canary"), "{}", errors[0]);
}

#[test]
fn nginx_values_are_addresses_and_variables_only() {
    let errors = load(
        "traffic: { provider: nginx, include: /x.conf, upstream: 'app { }', canary: 'evil;', baseline: '10.0.0.1:80', sticky_key: 'cookie; include /etc/passwd' }\n",
    )
    .expect_err("refused");
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(
        errors.iter().all(|e| e.starts_with("rule.yaml:13:")),
        "{errors:?}"
    );
}

#[test]
fn unknown_providers_and_fields_and_socket_confusion_are_errors() {
    let e = load("traffic: { provider: envoy }\n").expect_err("unknown provider");
    assert!(e[0].contains("rule.yaml:13"), "{e:?}");
    let e = load("traffic: { provider: haproxy, socket: /s, backend: a, canary: c, baseline: b, weight: 5 }\n")
        .expect_err("unknown field");
    assert!(e[0].contains("weight"), "{e:?}");
    let e = load("traffic: { provider: haproxy, socket: /s, address: 'h:1', backend: a, canary: c, baseline: b }\n")
        .expect_err("both sockets");
    assert!(e[0].contains("exactly one of socket and address"), "{e:?}");
    let e = load("traffic: { provider: flag_file, path: /f, key: 'a=b' }\n").expect_err("key");
    assert!(e[0].contains("environment variable name"), "{e:?}");
}

#[test]
fn lifecycle_hooks_are_checked_like_the_others() {
    let text = RULE.replace(
        "hooks: {}\n",
        "hooks:\n  pre_rollout: { command: [alembic, upgrade, head] }\n  migrate_down: { command: [alembic, downgrade, '-1'] }\n  readiness: { url: 'http://canary:8000/api/readyz', timeout: 2s }\n",
    );
    assert!(parse_rule(Path::new("rule.yaml"), &text).is_ok());
    let bad = RULE.replace("hooks: {}\n", "hooks:\n  readiness: { url: 'not a url' }\n");
    let errors = parse_rule(Path::new("rule.yaml"), &bad).expect_err("bad url");
    assert!(
        errors[0].to_string().contains("rule.yaml:13:"),
        "{:?}",
        errors[0].to_string()
    );
}

#[test]
fn a_sticky_split_over_an_upstream_nginx_cannot_name_as_a_variable_is_refused_at_check() {
    for upstream in ["app.v2", "app-v2"] {
        let errors = load(&format!(
            "traffic: {{ provider: nginx, include: /x.conf, upstream: {upstream}, canary: '10.0.0.2:80', baseline: '10.0.0.1:80', sticky_key: $cookie_user }}\n"
        ))
        .expect_err("refused");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with("rule.yaml:13:"), "{}", errors[0]);
        assert!(
            errors[0].contains(&format!("${upstream}_pool")),
            "{}",
            errors[0]
        );
    }
}

#[test]
fn traefik_names_a_service_of_another_provider_once_and_defines_its_own_without_one() {
    for (field, value) in [
        ("canary", "'a@b@c'"),
        ("canary", "'@file'"),
        ("baseline", "'v1@fi le'"),
        ("service", "'app@file'"),
    ] {
        let mut t = std::collections::BTreeMap::from([
            ("service", "app"),
            ("canary", "app-v2@file"),
            ("baseline", "app-v1"),
        ]);
        t.insert(field, value);
        let errors = load(&format!(
            "traffic: {{ provider: traefik, path: /d.yml, service: {}, canary: {}, baseline: {} }}\n",
            t["service"], t["canary"], t["baseline"]
        ))
        .expect_err("refused");
        assert_eq!(errors.len(), 1, "{field}={value}: {errors:?}");
        assert!(
            errors[0].contains(&format!("traffic {field}")),
            "{}",
            errors[0]
        );
    }
}
