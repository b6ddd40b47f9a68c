//! The `traffic:` key of a rule: which provider moves the canary's share and where it lives.
//!
//! Every name here is later written into another program's configuration (HAProxy commands,
//! nginx and Traefik files, an env file), so [`check`] holds each to a strict charset at load:
//! nothing a user types is ever templated into those syntaxes unchecked.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One provider and its settings, chosen by `provider:`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(tag = "provider", rename_all = "snake_case")]
pub enum TrafficSpec {
    Haproxy(HaproxySpec),
    Nginx(NginxSpec),
    Traefik(TraefikSpec),
    FlagFile(FlagFileSpec),
}

/// HAProxy's runtime API: `set weight <backend>/<server>` on the admin socket.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HaproxySpec {
    /// A unix admin socket (`stats socket ... level admin`).
    #[serde(default)]
    pub socket: Option<PathBuf>,
    /// Or a TCP admin socket, `host:port`.
    #[serde(default)]
    pub address: Option<String>,
    pub backend: String,
    pub canary: String,
    pub baseline: String,
    #[serde(default = "two_seconds", with = "super::schema::duration")]
    pub timeout: Duration,
}

/// nginx: a rendered upstream include, `nginx -t`, then a reload.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NginxSpec {
    /// The file canaryd owns, included from the http block.
    pub include: PathBuf,
    /// Upstream name the include defines (with `sticky_key`: the variable `$<upstream>_pool`).
    pub upstream: String,
    /// `host:port` of each backend.
    pub canary: String,
    pub baseline: String,
    /// An nginx variable (`$cookie_user`, `$http_x_user_id`) for a sticky `split_clients`
    /// split: a user stays on the side their hash falls on while the percentage only grows.
    #[serde(default)]
    pub sticky_key: Option<String>,
    /// Your own include template (minijinja; `canary_weight`, `baseline_weight`, `canary`,
    /// `baseline`, `upstream`); the default renders one weighted upstream.
    #[serde(default)]
    pub template: Option<PathBuf>,
    /// argv, never a shell string.
    #[serde(default = "nginx_test")]
    pub test_command: Vec<String>,
    #[serde(default = "nginx_reload")]
    pub reload_command: Vec<String>,
    /// nginx's pid file: when given, a reload counts only once every old worker is gone (so the
    /// new weights are what serves).
    #[serde(default)]
    pub pid_file: Option<PathBuf>,
    #[serde(default = "five_seconds", with = "super::schema::duration")]
    pub timeout: Duration,
}

/// Traefik's file provider: a weighted service in a dynamic-configuration file.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TraefikSpec {
    pub path: PathBuf,
    pub service: String,
    pub canary: String,
    pub baseline: String,
}

/// A percentage feature flag in an env or JSON file (seed 003's `FEATURE_ROLLOUT_PCT`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FlagFileSpec {
    pub path: PathBuf,
    #[serde(default)]
    pub format: FlagFormat,
    #[serde(default = "flag_key")]
    pub key: String,
    /// Run after each write (argv, never a shell string), e.g. to restart the service.
    #[serde(default)]
    pub restart: Option<Vec<String>>,
    #[serde(default = "ten_seconds", with = "super::schema::duration")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum FlagFormat {
    #[default]
    Env,
    Json,
}

fn two_seconds() -> Duration {
    Duration::from_secs(2)
}
fn five_seconds() -> Duration {
    Duration::from_secs(5)
}
fn ten_seconds() -> Duration {
    Duration::from_secs(10)
}
fn nginx_test() -> Vec<String> {
    vec!["nginx".into(), "-t".into()]
}
fn nginx_reload() -> Vec<String> {
    vec!["nginx".into(), "-s".into(), "reload".into()]
}
fn flag_key() -> String {
    "FEATURE_ROLLOUT_PCT".into()
}

/// A backend, server or service name: letters, digits, `_ . : -`, 1–64 characters. Nothing in
/// it can end a directive, start a comment or a second command in any provider's syntax.
pub fn is_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'))
}

/// `host:port` with a plain host name or IPv4 address, or `[v6]:port`.
pub fn is_address(s: &str) -> bool {
    let Some((host, port)) = s.rsplit_once(':') else {
        return false;
    };
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            (1..=253).contains(&host.len())
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        }
    };
    host_ok && port.parse::<u16>().is_ok_and(|p| p > 0)
}

/// What is wrong with a spec, each as a sentence; empty when it can run.
pub fn check(spec: &TrafficSpec) -> Vec<String> {
    let mut out = Vec::new();
    let mut name = |what: &str, v: &str| {
        if !is_name(v) {
            out.push(format!(
                "traffic {what} {v:?} must be 1-64 letters, digits, '_', '.', ':' or '-'"
            ));
        }
    };
    match spec {
        TrafficSpec::Haproxy(h) => {
            name("backend", &h.backend);
            name("canary", &h.canary);
            name("baseline", &h.baseline);
            match (&h.socket, &h.address) {
                (Some(_), None) => {}
                (None, Some(a)) if is_address(a) => {}
                (None, Some(a)) => out.push(format!("traffic address {a:?} is not host:port")),
                _ => out.push("haproxy needs exactly one of socket and address".into()),
            }
        }
        TrafficSpec::Nginx(n) => {
            name("upstream", &n.upstream);
            for (what, a) in [("canary", &n.canary), ("baseline", &n.baseline)] {
                if !is_address(a) {
                    out.push(format!("traffic {what} {a:?} is not host:port"));
                }
            }
            if let Some(k) = &n.sticky_key {
                if !is_nginx_variable(k) {
                    out.push(format!(
                        "traffic sticky_key {k:?} must be an nginx variable such as $cookie_user"
                    ));
                }
                // The split names the variable `$<upstream>_pool`, and an nginx variable name
                // ends at the first character outside A-Z a-z 0-9 _: nginx would read
                // `$app.v2_pool` as `$app` followed by text, and fail only at reload.
                if is_name(&n.upstream) && !is_nginx_variable(&format!("${}_pool", n.upstream)) {
                    out.push(format!(
                        "traffic upstream {:?} names the sticky split's variable ${}_pool: \
                         with sticky_key it must be letters, digits and '_' only",
                        n.upstream, n.upstream
                    ));
                }
            }
            for (what, argv) in [
                ("test_command", &n.test_command),
                ("reload_command", &n.reload_command),
            ] {
                if argv.first().is_none_or(|p| p.is_empty()) {
                    out.push(format!("traffic {what} must name a program"));
                }
            }
        }
        TrafficSpec::Traefik(t) => {
            // The service canaryd defines is qualified by Traefik itself (`@` is reserved);
            // the two it weighs may name another provider's service, `name@provider`.
            name("service", &t.service);
            for (what, v) in [("canary", &t.canary), ("baseline", &t.baseline)] {
                if !is_traefik_reference(v) {
                    out.push(format!(
                        "traffic {what} {v:?} must be a service name (1-64 letters, digits, \
                         '_', '.', ':' or '-'), optionally @provider"
                    ));
                }
            }
        }
        TrafficSpec::FlagFile(f) => {
            let key_ok = f.key.len() <= 64
                && f.key
                    .starts_with(|c: char| c.is_ascii_uppercase() || c == '_')
                && f.key
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            if !key_ok {
                out.push(format!(
                    "traffic key {:?} must be an environment variable name (A-Z, 0-9, _)",
                    f.key
                ));
            }
            if let Some(argv) = &f.restart
                && argv.first().is_none_or(|p| p.is_empty())
            {
                out.push("traffic restart must name a program".into());
            }
        }
    }
    out
}

/// `name` or `name@provider`, as Traefik resolves a service reference: one `@` at most (Traefik
/// splits on it), a provider name of letters, digits, `_` and `-`.
pub fn is_traefik_reference(s: &str) -> bool {
    match s.split_once('@') {
        None => is_name(s),
        Some((name, provider)) => {
            is_name(name)
                && (1..=64).contains(&provider.len())
                && provider
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
        }
    }
}

fn is_nginx_variable(s: &str) -> bool {
    s.strip_prefix('$').is_some_and(|v| {
        (1..=64).contains(&v.len())
            && v.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_refuse_everything_that_could_end_a_directive() {
        for ok in ["app", "canary-1", "be_app.v2", "srv:1"] {
            assert!(is_name(ok), "{ok}");
        }
        for bad in [
            "",
            "a b",
            "a;b",
            "a\nb",
            "a}b",
            "a#b",
            "a/b",
            "$x",
            &"a".repeat(65),
        ] {
            assert!(!is_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn addresses_are_host_and_port_only() {
        for ok in ["127.0.0.1:8080", "app.internal:80", "[::1]:9000"] {
            assert!(is_address(ok), "{ok}");
        }
        for bad in ["127.0.0.1", "x:0", "a b:80", "a;b:80", "[zz]:80", "h:99999"] {
            assert!(!is_address(bad), "{bad:?}");
        }
    }

    #[test]
    fn traefik_references_may_name_their_provider_once() {
        for ok in ["app-v2", "app-v2@file", "svc@kubernetes-crd", "a.b@docker"] {
            assert!(is_traefik_reference(ok), "{ok}");
        }
        for bad in [
            "@file", "app@", "a@b@c", "a@fi le", "a@f:x", "a b@file", "a\n@file", "a@file\n",
            "a@\"x\"",
        ] {
            assert!(!is_traefik_reference(bad), "{bad:?}");
        }
    }

    #[test]
    fn sticky_keys_are_variables() {
        assert!(is_nginx_variable("$cookie_user_id"));
        assert!(!is_nginx_variable("$a;b"));
        assert!(!is_nginx_variable("cookie"));
    }
}
