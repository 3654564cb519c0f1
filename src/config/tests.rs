//! The reader as a whole: a file and an environment in, a config or every problem with
//! its key path out (data-driven, one `check_err` for the error table).

use std::collections::HashMap;
use std::path::Path;

use secrecy::ExposeSecret;

use super::*;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn parse(yaml: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    load(
        Path::new("/tmp/hermes"),
        Some((Path::new("config.yaml"), yaml)),
        &env(vars),
    )
}

/// Asserts that `yaml` is rejected with exactly these `path: message-fragment` issues.
fn check_err(yaml: &str, vars: &[(&str, &str)], expected: &[(&str, &str)]) {
    let issues = match parse(yaml, vars) {
        Err(ConfigError::Invalid(issues)) => issues,
        other => panic!("expected invalid config for {yaml:?}, got {other:?}"),
    };
    assert_eq!(
        issues.len(),
        expected.len(),
        "issues for {yaml:?}: {issues:#?}"
    );
    for ((path, fragment), issue) in expected.iter().zip(&issues) {
        assert_eq!(issue.path, *path, "{issues:#?}");
        assert!(
            issue.message.contains(fragment),
            "{:?} should contain {fragment:?}",
            issue.message
        );
    }
}

#[test]
fn chronos_urls_are_https_or_loopback_http() {
    for (portal, jwks) in [
        ("https://portal.example", "https://portal.example/jwks"),
        ("http://127.0.0.1:9", "http://localhost:9/jwks"),
        ("http://[::1]:9", "http://127.5.0.1/jwks"),
    ] {
        let yaml = format!("cron: {{chronos: {{portal_url: {portal:?}, nas_jwks_url: {jwks:?}}}}}");
        let c = parse(&yaml, &[]).unwrap_or_else(|e| panic!("{yaml}: {e}"));
        assert_eq!(c.cron.chronos.nas_jwks_url, jwks);
    }
}

#[test]
fn absent_and_empty_files_give_defaults() {
    let c = load(Path::new("/h"), None, &env(&[])).unwrap();
    assert_eq!(c.agent.backend, BackendKind::Echo);
    assert_eq!(c.agent.restart_drain_timeout, 60.0);
    assert_eq!(c.api_server.port, 8642);
    assert_eq!(c.api_server.model_name, "hermes-agent");
    assert_eq!(c.dashboard.port, 9119);
    assert_eq!(c.dashboard.drain_auth.min_secret_chars, 43);
    assert_eq!(c.drain.marker_max_age_seconds, 3600);
    assert_eq!(c.cron.tick_interval_seconds, 60);
    assert!(c.storage.url.is_none());
    assert_eq!(c.marker_path(), Path::new("/h/.drain_request.json"));
    let c = parse("# only a comment\n", &[]).unwrap();
    assert_eq!(c.api_server.host, "127.0.0.1");
}

#[test]
fn full_file_is_read() {
    let yaml = r#"
agent:
  backend: command
  restart_drain_timeout: 2.5
  echo: {delay_ms: 300}
  command: {argv: ["/bin/cat"], timeout_seconds: 5, workdir: /tmp}
gateway:
  api_server: {host: 127.0.0.1, port: 0, cors_origins: ["https://a.example/"], model_name: m}
dashboard:
  port: 0
  allowed_origins: ["http://localhost:3000"]
  drain_auth: {scope: lifecycle, min_secret_chars: 50}
drain: {marker_max_age_seconds: 0}
cron: {provider: builtin, timezone: Europe/Berlin, tick_interval_seconds: 5}
storage: {url: "postgres://u:p@127.0.0.1/db"}
"#;
    let c = parse(yaml, &[]).unwrap();
    assert_eq!(c.agent.backend, BackendKind::Command);
    assert_eq!(c.agent.restart_drain_timeout, 2.5);
    assert_eq!(c.agent.echo.delay_ms, 300);
    assert_eq!(c.agent.command.argv, vec!["/bin/cat"]);
    assert_eq!(c.agent.command.workdir.as_deref(), Some(Path::new("/tmp")));
    assert_eq!(c.api_server.port, 0);
    assert_eq!(c.api_server.cors_origins, vec!["https://a.example"]);
    assert_eq!(c.dashboard.allowed_origins, vec!["http://localhost:3000"]);
    assert_eq!(c.dashboard.drain_auth.scope, "lifecycle");
    assert_eq!(c.drain.marker_max_age_seconds, 0);
    assert_eq!(c.cron.provider, CronProvider::Builtin);
    assert_eq!(c.cron.timezone_name, "Europe/Berlin");
    assert!(c.storage.url.is_some());
}

#[test]
fn env_overrides_win_and_secrets_come_from_env() {
    let c = parse(
        "gateway: {api_server: {port: 1000, model_name: file}}\n",
        &[
            ("API_SERVER_PORT", "2000"),
            ("API_SERVER_MODEL_NAME", "envmodel"),
            ("API_SERVER_ENABLED", "no"),
            ("API_SERVER_CORS_ORIGINS", "http://a.test, http://b.test:81"),
            ("API_SERVER_KEY", "k-123"),
            ("HERMES_DASHBOARD_DRAIN_SECRET", "  padded  "),
            ("HERMES_DATABASE_URL", "postgresql://x@localhost/y"),
        ],
    )
    .unwrap();
    assert_eq!(c.api_server.port, 2000);
    assert_eq!(c.api_server.model_name, "envmodel");
    assert!(!c.api_server.enabled);
    assert_eq!(
        c.api_server.cors_origins,
        vec!["http://a.test", "http://b.test:81"]
    );
    assert_eq!(
        c.secrets.api_server_key.as_ref().unwrap().expose_secret(),
        "k-123"
    );
    assert_eq!(
        c.secrets.drain_secret.as_ref().unwrap().expose_secret(),
        "padded"
    );
    assert!(c.storage.url.is_some());
}

#[test]
fn problems_are_reported_together_with_their_paths() {
    check_err(
        "agent:\n  backend: gpt\n  echo: {delay_ms: -1}\ngateway:\n  api_server:\n    port: 70000\n    prot: 1\n",
        &[],
        &[
            ("agent.backend", "unknown backend \"gpt\""),
            ("agent.echo.delay_ms", "whole number"),
            ("gateway.api_server.prot", "unknown key"),
            (
                "gateway.api_server.port",
                "from 0 to 65535, got the number 70000",
            ),
        ],
    );
}

#[test]
fn config_error_table() {
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a [(&'a str, &'a str)]);
    let table: &[Case] = &[
        ("[1, 2]", &[], &[("(top level)", "expected a mapping")]),
        (
            "logging: {format: xml, level: 'info,=nonsense=='}",
            &[],
            &[
                ("logging.format", "expected text or json, got \"xml\""),
                ("logging.level", "not a log filter"),
            ],
        ),
        (
            "",
            &[("HERMES_LOG_FORMAT", "yaml")],
            &[("HERMES_LOG_FORMAT", "expected text or json")],
        ),
        ("agents: {}", &[], &[("agents", "unknown key")]),
        (
            "agent: echo",
            &[],
            &[("agent", "expected a mapping, got the string")],
        ),
        (
            "agent: {restart_drain_timeout: -5}",
            &[],
            &[("agent.restart_drain_timeout", "seconds")],
        ),
        (
            "agent: {restart_drain_timeout: \"60\"}",
            &[],
            &[("agent.restart_drain_timeout", "got the string")],
        ),
        (
            "agent: {backend: command}",
            &[],
            &[("agent.command.argv", "non-empty")],
        ),
        (
            "agent: {command: {argv: [1]}}",
            &[],
            &[("agent.command.argv[0]", "expected a string")],
        ),
        (
            "agent: {command: {timeout_seconds: 0}}",
            &[],
            &[("agent.command.timeout_seconds", "from 1")],
        ),
        (
            "agent: {command: {env: [OPENAI_API_KEY, API_SERVER_KEY, HERMES_DASHBOARD_DRAIN_SECRET]}}",
            &[],
            &[
                ("agent.command.env[1]", "the gateway's own secrets"),
                ("agent.command.env[2]", "the gateway's own secrets"),
            ],
        ),
        (
            "agent: {command: {env: [HERMES_NOUS_ACCESS_TOKEN, HERMES_DATABASE_URL, HERMES_DASHBOARD_SESSION_TOKEN, 'A B']}}",
            &[],
            &[
                ("agent.command.env[0]", "never passed to the agent"),
                ("agent.command.env[1]", "never passed to the agent"),
                ("agent.command.env[2]", "never passed to the agent"),
                ("agent.command.env[3]", "not an environment variable name"),
            ],
        ),
        // An item that is not a string is named at its own index, and no later item is
        // named at a shifted one.
        (
            "agent: {command: {env: [123, API_SERVER_KEY]}}\ngateway: {api_server: {cors_origins: [5, 'bad origin']}}",
            &[],
            &[
                ("agent.command.env[0]", "expected a string"),
                ("gateway.api_server.cors_origins[0]", "expected a string"),
            ],
        ),
        (
            "dashboard: {host: 'no such host!'}",
            &[("API_SERVER_HOST", "-bad-"), ("API_SERVER_KEY", "k")],
            &[
                (
                    "gateway.api_server.host",
                    "not an IP address or a host name",
                ),
                ("dashboard.host", "not an IP address or a host name"),
            ],
        ),
        (
            "",
            &[("RUST_LOG", "nonsense=bogus")],
            &[("RUST_LOG", "not a log filter")],
        ),
        (
            "agent: {command: {env: OPENAI_API_KEY}}",
            &[],
            &[("agent.command.env", "expected a list of strings")],
        ),
        (
            "agent: {openai: {base_url: ftp://x}}",
            &[],
            &[("agent.openai.base_url", "not an http(s) URL")],
        ),
        (
            "agent: {openai: {api_key_env: 'A-B'}}",
            &[],
            &[(
                "agent.openai.api_key_env",
                "not an environment variable name",
            )],
        ),
        (
            "gateway: {api_server: {enabled: maybe}}",
            &[],
            &[("gateway.api_server.enabled", "true or false")],
        ),
        (
            "gateway: {api_server: {key: abc}}",
            &[],
            &[("gateway.api_server.key", "API_SERVER_KEY")],
        ),
        (
            "gateway: {api_server: {host: 0.0.0.0}}",
            &[],
            &[("gateway.api_server.host", "API_SERVER_KEY must be set")],
        ),
        (
            "gateway: {api_server: {cors_origins: ['not a url']}}",
            &[],
            &[("gateway.api_server.cors_origins[0]", "not an origin")],
        ),
        (
            "gateway: {api_server: {model_name: ''}}",
            &[],
            &[("gateway.api_server.model_name", "must not be empty")],
        ),
        (
            "dashboard: {basic_auth: {secret: s3cret}}",
            &[],
            &[(
                "dashboard.basic_auth.secret",
                "HERMES_DASHBOARD_BASIC_AUTH_SECRET",
            )],
        ),
        (
            "dashboard: {drain_auth: {scope: ''}}",
            &[],
            &[("dashboard.drain_auth.scope", "must not be empty")],
        ),
        (
            "dashboard: {drain_auth: {min_secret_chars: 0}}",
            &[],
            &[("dashboard.drain_auth.min_secret_chars", "from 1")],
        ),
        (
            "dashboard: {public_url: 'nope'}",
            &[],
            &[("dashboard.public_url", "not an http(s) URL")],
        ),
        (
            "dashboard: {allowed_origins: ['https://x.test/path']}",
            &[],
            &[("dashboard.allowed_origins[0]", "not an origin")],
        ),
        (
            "drain: {marker_max_age_seconds: 1.5}",
            &[],
            &[("drain.marker_max_age_seconds", "whole number")],
        ),
        (
            "cron: {provider: cloud}",
            &[],
            &[("cron.provider", "unknown provider")],
        ),
        (
            "cron: {timezone: Mars/Olympus}",
            &[],
            &[("cron.timezone", "unknown time zone")],
        ),
        (
            "cron: {tick_interval_seconds: 0}",
            &[],
            &[("cron.tick_interval_seconds", "from 1")],
        ),
        (
            "cron: {chronos: {nas_public_keys: ['abc']}}",
            &[],
            &[("cron.chronos.nas_public_keys[0]", "PEM")],
        ),
        (
            "storage: {url: 'mysql://x'}",
            &[],
            &[("storage.url", "postgres://")],
        ),
        (
            "",
            &[("API_SERVER_PORT", "http")],
            &[("API_SERVER_PORT", "port number")],
        ),
        (
            "",
            &[("API_SERVER_ENABLED", "perhaps")],
            &[("API_SERVER_ENABLED", "true or false")],
        ),
        (
            "",
            &[("API_SERVER_HOST", "10.1.2.3")],
            &[("gateway.api_server.host", "not a loopback")],
        ),
        (
            "",
            &[("HERMES_DATABASE_URL", "sqlite://x")],
            &[("storage.url", "postgres://")],
        ),
        (
            "cron: {chronos: {nas_jwks_url: 'http://keys.example/jwks', portal_url: 'http://10.0.0.5'}}",
            &[],
            &[
                ("cron.chronos.portal_url", "must be an https URL"),
                ("cron.chronos.nas_jwks_url", "must be an https URL"),
            ],
        ),
    ];
    for (yaml, vars, expected) in table {
        check_err(yaml, vars, expected);
    }
}

#[test]
fn the_command_agent_environment_is_built_not_inherited() {
    let c = parse(
        "agent: {command: {env: [OPENAI_API_KEY, UNSET_ONE, PATH]}}",
        &[
            ("PATH", "/usr/bin:/bin"),
            ("HOME", "/home/h"),
            ("LC_ALL", "C.UTF-8"),
            ("LC_TIME", "de_DE.UTF-8"),
            ("TZ", "UTC"),
            ("OPENAI_API_KEY", "sk-model"),
            ("API_SERVER_KEY", "k-api"),
            ("HERMES_DASHBOARD_DRAIN_SECRET", "d-secret"),
            ("HERMES_DASHBOARD_SESSION_TOKEN", "s-token"),
            ("HERMES_NOUS_ACCESS_TOKEN", "n-token"),
            ("HERMES_DATABASE_URL", "postgres://u:p@h/db"),
            ("SOMETHING_ELSE", "x"),
            ("LANG", ""),
        ],
    )
    .unwrap();
    let got: Vec<(&str, &str)> = c
        .agent
        .command
        .environment
        .iter()
        .map(|(k, v)| (k.as_str(), v.expose_secret()))
        .collect();
    assert_eq!(
        got,
        [
            ("PATH", "/usr/bin:/bin"),
            ("HOME", "/home/h"),
            ("TZ", "UTC"),
            ("LC_ALL", "C.UTF-8"),
            ("LC_TIME", "de_DE.UTF-8"),
            ("OPENAI_API_KEY", "sk-model"),
        ]
    );
    assert_eq!(c.agent.command.env, ["OPENAI_API_KEY", "UNSET_ONE", "PATH"]);
    assert!(!format!("{c:?}").contains("sk-model"));
}

#[test]
fn non_loopback_api_host_with_key_is_fine() {
    let c = parse(
        "gateway: {api_server: {host: 0.0.0.0}}",
        &[("API_SERVER_KEY", "k")],
    )
    .unwrap();
    assert_eq!(c.api_server.host, "0.0.0.0");
}

#[test]
fn duplicate_keys_and_bad_yaml_are_errors() {
    let err = parse("agent:\n  backend: echo\n  backend: openai\n", &[]).unwrap_err();
    assert!(matches!(err, ConfigError::Yaml { .. }), "{err}");
    assert!(
        err.to_string().to_lowercase().contains("duplicate"),
        "{err}"
    );
    let err = parse("agent: [unclosed\n", &[]).unwrap_err();
    assert!(matches!(err, ConfigError::Yaml { .. }), "{err}");
}

#[test]
fn storage_url_error_never_echoes_the_url() {
    let err = parse("storage: {url: 'mysql://user:hunter2@db'}", &[]).unwrap_err();
    assert!(!err.to_string().contains("hunter2"));
}

#[test]
fn connection_limits_and_trusted_proxies() {
    let c = parse("", &[]).unwrap();
    assert_eq!(c.connections.max_per_listener, 1024);
    assert_eq!(c.connections.header_timeout_seconds, 30);
    assert!(c.dashboard.trusted_proxies.is_empty());
    let c = parse(
        "gateway: {connections: {max_per_listener: 8, header_timeout_seconds: 2}}\n\
         dashboard: {trusted_proxies: ['10.0.0.0/8', ' 192.168.1.7 ', 'fd00::1/8', '::1']}",
        &[],
    )
    .unwrap();
    assert_eq!(c.connections.max_per_listener, 8);
    assert_eq!(c.connections.header_timeout_seconds, 2);
    let nets: Vec<String> = c
        .dashboard
        .trusted_proxies
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(
        nets,
        ["10.0.0.0/8", "192.168.1.7/32", "fd00::/8", "::1/128"]
    );
    check_err(
        "gateway: {connections: {max_per_listener: 0, header_timeout_seconds: 0, idle: 1}}",
        &[],
        &[
            ("gateway.connections.idle", "unknown key"),
            ("gateway.connections.max_per_listener", "from 1"),
            ("gateway.connections.header_timeout_seconds", "from 1"),
        ],
    );
    check_err(
        "dashboard: {trusted_proxies: ['10.0.0.0/8', 7, '10.0.0.0/33', 'proxy.local']}",
        &[],
        &[
            ("dashboard.trusted_proxies[1]", "expected a string"),
            ("dashboard.trusted_proxies[2]", "not a CIDR"),
            ("dashboard.trusted_proxies[3]", "not a CIDR"),
        ],
    );
}

#[test]
fn loopback_hosts() {
    for h in ["127.0.0.1", "127.5.0.1", "::1", "[::1]", "localhost"] {
        assert!(is_loopback_host(h), "{h}");
    }
    for h in ["0.0.0.0", "10.0.0.1", "example.com", "::"] {
        assert!(!is_loopback_host(h), "{h}");
    }
}

#[test]
fn listener_hosts_are_addresses_or_host_names() {
    for host in [
        "127.0.0.1",
        "0.0.0.0",
        "::1",
        "[::1]",
        "::ffff:127.0.0.1",
        "localhost",
        "gw-1.internal.",
    ] {
        let yaml =
            format!("dashboard: {{host: {host:?}}}\ngateway: {{api_server: {{host: {host:?}}}}}");
        let c = parse(&yaml, &[("API_SERVER_KEY", "k")]).unwrap_or_else(|e| panic!("{host}: {e}"));
        assert_eq!(c.dashboard.host, host);
    }
}
