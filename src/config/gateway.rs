//! The `gateway` section: the OpenAI-compatible API server (`gateway.api_server`) and the
//! connection limits both listeners share (`gateway.connections`).

use serde_json::Value;

use super::tree::{Reader, Section};
use super::{ApiServerConfig, ConnectionsConfig};

impl Reader {
    /// `gateway.api_server` (and the keys of `gateway` itself).
    pub(super) fn api_server(&mut self, top: &Section) -> ApiServerConfig {
        let g = self.section(top, "gateway", &["api_server", "connections"]);
        let s = self.section(
            &g,
            "api_server",
            &[
                "enabled",
                "host",
                "port",
                "key",
                "cors_origins",
                "model_name",
                "max_stored_sessions",
                "max_session_messages",
                "max_stored_responses",
            ],
        );
        self.no_secret_in_file(&s, "key", "API_SERVER_KEY");
        ApiServerConfig {
            enabled: self.bool(&s, "enabled", true),
            host: self.string(&s, "host", "127.0.0.1"),
            port: self.uint(&s, "port", 8642, 0, 65535) as u16,
            cors_origins: self.strings(&s, "cors_origins"),
            model_name: self.string(&s, "model_name", "hermes-agent"),
            max_stored_sessions: self.uint(&s, "max_stored_sessions", 10_000, 1, 1_000_000),
            max_session_messages: self.uint(&s, "max_session_messages", 200, 2, 100_000),
            max_stored_responses: self.uint(&s, "max_stored_responses", 10_000, 1, 10_000_000),
        }
    }

    /// `gateway.connections` (its parent's keys are checked by `api_server`).
    pub(super) fn connections(&mut self, top: &Section) -> ConnectionsConfig {
        let gateway = Section {
            path: "gateway".into(),
            map: Self::value(top, "gateway").and_then(Value::as_object),
        };
        let s = self.section(
            &gateway,
            "connections",
            &["max_per_listener", "header_timeout_seconds"],
        );
        ConnectionsConfig {
            max_per_listener: self.uint(&s, "max_per_listener", 1024, 1, 1_000_000) as usize,
            header_timeout_seconds: self.uint(&s, "header_timeout_seconds", 30, 1, 3600),
        }
    }
}
