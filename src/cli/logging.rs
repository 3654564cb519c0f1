//! Where the gateway's logs go: stderr, as human text or as one JSON object a line for a
//! log shipper, filtered by `logging.level` (or `RUST_LOG`, which wins).
//!
//! A JSON line always has `timestamp` (RFC 3339, UTC), `level`, `target` and `message`
//! (empty for an event that has none, as some of sqlx's do), then the event's own fields
//! at the top level; a field named like one of those four is written `field.<name>`.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::config::LogFormat;

/// Starts logging to stderr at `level` (`RUST_LOG` wins) in `format`.
pub fn init(level: &str, format: LogFormat) {
    // An empty RUST_LOG is unset, like every variable the gateway reads.
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| tracing_subscriber::EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder.event_format(JsonLines).try_init(),
    };
}

/// The JSON line format.
struct JsonLines;

/// The keys every line has; an event field with one of these names is renamed.
const RESERVED: [&str; 4] = ["timestamp", "level", "target", "message"];

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        writeln!(writer, "{}", Value::Object(line(event)))
    }
}

/// One event as the JSON object its line holds.
fn line(event: &Event<'_>) -> Map<String, Value> {
    let mut fields = Fields::default();
    event.record(&mut fields);
    let meta = event.metadata();
    let mut line = Map::new();
    // Log lines are stamped by the system clock (logging is outside the gateway's Clock).
    line.insert(
        "timestamp".into(),
        jiff::Timestamp::now().to_string().into(),
    );
    line.insert("level".into(), meta.level().as_str().into());
    line.insert("target".into(), meta.target().into());
    line.insert("message".into(), fields.message.unwrap_or_default().into());
    for (name, value) in fields.rest {
        let key = if RESERVED.contains(&name) {
            format!("field.{name}")
        } else {
            name.to_owned()
        };
        line.insert(key, value);
    }
    line
}

/// An event's fields: its message apart, the others as JSON values.
#[derive(Default)]
struct Fields {
    message: Option<String>,
    rest: Vec<(&'static str, Value)>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        self.rest.push((field.name(), value));
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(value.to_owned());
        } else {
            self.put(field, value.into());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = Some(text);
        } else {
            self.put(field, text.into());
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_line_has_the_four_keys_and_the_fields_beside_them() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .event_format(JsonLines)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(
                user = "ada",
                attempts = 3u64,
                ok = true,
                "signed in after {} tries",
                3
            );
            tracing::warn!(level = "clashes", ratio = 0.5);
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        let (first, second) = (&lines[0], &lines[1]);
        assert_eq!(first["level"], "INFO");
        assert_eq!(first["message"], "signed in after 3 tries");
        assert_eq!(first["target"], module_path!());
        assert_eq!(
            (&first["user"], &first["attempts"], &first["ok"]),
            (&Value::from("ada"), &Value::from(3), &Value::from(true))
        );
        assert!(
            first["timestamp"]
                .as_str()
                .unwrap()
                .parse::<jiff::Timestamp>()
                .is_ok()
        );
        assert_eq!(second["level"], "WARN");
        assert_eq!(
            second["message"], "",
            "an event without a message still has the key"
        );
        assert_eq!(second["field.level"], "clashes");
        assert_eq!(second["ratio"], 0.5);
    }
}
