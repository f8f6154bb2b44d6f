//! Where log lines go and how they look: `log_format = "text"` (the
//! default: tracing's human format) or `"json"` (one JSON object per line
//! for log shippers: `time`, `level`, `target`, `queue_id` when the line is
//! about a message, `message`, then the event's own fields).
//!
//! Lines about a message start with its queue id (`"{qid}: …"`, a house
//! rule that `tests/log_format.rs` checks in the source). The JSON format
//! lifts that prefix into `queue_id` for events from the modules that
//! handle messages, so the text format keeps its shape and every call site
//! stays as it is.

use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::config::LogFormat;

/// Modules whose log lines are about one message and start with its queue
/// id. Other modules' lines (`milter socket: …`, `listening on …`) get no
/// `queue_id`.
const MESSAGE_TARGETS: &[&str] = &[
    "autoencrypt_milter::milter::session",
    "autoencrypt_milter::milter::callbacks",
    "autoencrypt_milter::harvest",
];

/// Longest queue id lifted: Postfix's long ids are 10–20 characters,
/// Sendmail's 14; anything longer is left in the message.
const MAX_QUEUE_ID: usize = 64;

/// Installs the global subscriber: stderr (journald under systemd),
/// `RUST_LOG` overriding `level`, the DNS library's chatter kept to errors.
pub(crate) fn init(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!(
            "{level},hickory_net=error,hickory_proto=error,hickory_resolver=error,indymilter=warn"
        ))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        // No colour codes in journald or log files.
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder.with_ansi(false).event_format(JsonLines).try_init(),
    };
}

/// The `json` event format.
struct JsonLines;

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
        let meta = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let line = json_line(
            SystemTime::now(),
            &meta.level().as_str().to_ascii_lowercase(),
            meta.target(),
            &fields,
        );
        writer.write_str(&line)?;
        writer.write_char('\n')
    }
}

/// An event's fields: the message and the rest, as JSON values.
#[derive(Debug, Default)]
pub(crate) struct Fields {
    message: String,
    others: Vec<(&'static str, String)>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // `message` is format_args!, whose Debug is its Display.
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.others
                .push((field.name(), json_string(&format!("{value:?}"))));
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            self.others.push((field.name(), json_string(value)));
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.others.push((field.name(), value.to_string()));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.others.push((field.name(), value.to_string()));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.others.push((field.name(), value.to_string()));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinity.
        let v = if value.is_finite() {
            value.to_string()
        } else {
            json_string(&value.to_string())
        };
        self.others.push((field.name(), v));
    }
}

/// One log line as a JSON object (without the newline).
pub(crate) fn json_line(time: SystemTime, level: &str, target: &str, fields: &Fields) -> String {
    let (queue_id, message) = split_queue_id(target, &fields.message);
    let mut out = String::with_capacity(96 + fields.message.len());
    out.push_str("{\"time\":");
    out.push_str(&json_string(&rfc3339(time)));
    out.push_str(",\"level\":");
    out.push_str(&json_string(level));
    out.push_str(",\"target\":");
    out.push_str(&json_string(target));
    if let Some(qid) = queue_id {
        out.push_str(",\"queue_id\":");
        out.push_str(&json_string(qid));
    }
    out.push_str(",\"message\":");
    out.push_str(&json_string(message));
    for (name, value) in &fields.others {
        // The fixed members win over an event field of the same name.
        if matches!(*name, "time" | "level" | "target" | "queue_id" | "message") {
            continue;
        }
        out.push(',');
        out.push_str(&json_string(name));
        out.push(':');
        out.push_str(value);
    }
    out.push('}');
    out
}

/// `("QID", "rest")` for a message-handling module's `"QID: rest"`;
/// `(None, message)` otherwise.
fn split_queue_id<'m>(target: &str, message: &'m str) -> (Option<&'m str>, &'m str) {
    let about_a_message = MESSAGE_TARGETS
        .iter()
        .any(|t| target == *t || target.strip_prefix(t).is_some_and(|r| r.starts_with("::")));
    if !about_a_message {
        return (None, message);
    }
    match message.split_once(": ") {
        Some((qid, rest))
            if !qid.is_empty()
                && qid.len() <= MAX_QUEUE_ID
                && qid.bytes().all(|b| b.is_ascii_graphic() && b != b':') =>
        {
            (Some(qid), rest)
        }
        _ => (None, message),
    }
}

/// A JSON string literal (RFC 8259 §7): quotes, backslash and every
/// control character escaped, so a hostile address cannot end the line or
/// the object.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // U+2028/2029 end lines in JavaScript-based shippers.
            c if (c as u32) < 0x20 || c == '\u{7f}' || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `2026-12-02T19:36:47.123Z` (UTC, milliseconds).
fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // Both fit: day is 1..=31, month 1..=12.
    (
        year,
        u32::try_from(month).unwrap_or(1),
        u32::try_from(day).unwrap_or(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn fields(message: &str) -> Fields {
        Fields {
            message: message.to_owned(),
            others: Vec::new(),
        }
    }

    const SESSION: &str = "autoencrypt_milter::milter::session::eom";

    #[test]
    fn dates_are_rfc3339_utc() {
        let t = UNIX_EPOCH + Duration::from_millis(1_796_240_207_123);
        assert_eq!(rfc3339(t), "2026-12-02T19:36:47.123Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        // A leap day.
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn the_queue_id_is_lifted_from_message_lines_only() {
        let l = json_line(UNIX_EPOCH, "info", SESSION, &fields("4XyZ1b: encrypted"));
        assert!(
            l.contains(r#""queue_id":"4XyZ1b","message":"encrypted""#),
            "{l}"
        );
        let l = json_line(UNIX_EPOCH, "warn", "autoencrypt_milter::milter::slots", &{
            fields("milter socket: accept failed")
        });
        assert!(!l.contains("queue_id"), "{l}");
        assert!(l.contains(r#""message":"milter socket: accept failed""#));
        // A first word with a space or none at all is not a queue id.
        let l = json_line(UNIX_EPOCH, "info", SESSION, &fields("no colon here"));
        assert!(!l.contains("queue_id"), "{l}");
        // A look-alike module name is not a message module.
        let l = json_line(
            UNIX_EPOCH,
            "info",
            "autoencrypt_milter::harvester",
            &fields("X: y"),
        );
        assert!(!l.contains("queue_id"), "{l}");
    }

    #[test]
    fn hostile_text_stays_inside_its_string() {
        let l = json_line(
            UNIX_EPOCH,
            "info",
            SESSION,
            &fields("Q1: rcpt \"a\\\"b\"@x\n{\"level\":\"error\"}\u{0}\u{1b}\u{2028}"),
        );
        assert!(!l.contains('\n'), "{l}");
        assert!(
            l.contains(r#"rcpt \"a\\\"b\"@x\n{\"level\":\"error\"}\u0000\u001b\u2028""#),
            "{l}"
        );
    }

    #[test]
    fn event_fields_follow_and_cannot_shadow_the_fixed_members() {
        let mut f = fields("Q2: done");
        f.others.push(("recipients", "3".into()));
        f.others.push(("queue_id", json_string("forged")));
        f.others.push(("method", json_string("smime")));
        let l = json_line(UNIX_EPOCH, "info", SESSION, &f);
        assert!(
            l.ends_with(r#""queue_id":"Q2","message":"done","recipients":3,"method":"smime"}"#),
            "{l}"
        );
    }
}
