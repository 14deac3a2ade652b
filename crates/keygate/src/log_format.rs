//! How a log line looks: one JSON object per line (the default when stderr is not a terminal),
//! or plain text. A line written inside a request names the request (id, client, method, path)
//! from keygate-server's request context rather than from a tracing span: a span per request
//! would format those fields for every request, where the context costs nothing until a line is
//! actually written.
//!
//! JSON: `{"timestamp", "level", "fields": {"message", …}, "target", "span": {"request_id",
//! "client", "method", "path", "name": "request"}}`, `span` only inside a request.

use std::fmt::Write as _;

use keygate_server::http::request_id::{self, RequestContext};

use crate::log_writer::REQUEST_LOG_TARGET;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

#[derive(Clone, Copy, Debug)]
pub struct Lines {
    pub json: bool,
}

impl<S, N> FormatEvent<S, N> for Lines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut line = String::with_capacity(256);
        let request = request_id::context();
        if self.json {
            json_line(&mut line, event, request.as_deref());
        } else {
            text_line(&mut line, event, request.as_deref());
        }
        line.push('\n');
        writer.write_str(&line)
    }
}

/// The request log's lines, written by keygate-server's frame straight into the log buffer
/// (see `request_id::AccessLog`): the very bytes its `handled` event at info would have become
/// through [`Lines`], without tracing's dispatch and formatting layer around them.
#[derive(Clone, Copy, Debug)]
pub struct AccessLines {
    pub json: bool,
}

impl AccessLines {
    fn line(&self, out: &mut String, request: &RequestContext, status: u16, latency_us: u64) {
        let level = tracing::Level::INFO;
        if self.json {
            json_head(out, &level);
            let _ = write!(
                out,
                "\"message\":\"handled\",\"status\":{status},\"latency_us\":{latency_us}"
            );
            json_tail(out, REQUEST_LOG_TARGET, Some(request));
        } else {
            text_head(out, &level, REQUEST_LOG_TARGET, Some(request));
            let _ = write!(out, "handled status={status} latency_us={latency_us}");
        }
        out.push('\n');
    }
}

impl request_id::AccessLog for AccessLines {
    fn handled(&self, request: &RequestContext, status: u16, latency_us: u64) {
        let mut line = String::with_capacity(320);
        self.line(&mut line, request, status, latency_us);
        crate::log_writer::append_request_line(line.as_bytes());
    }
}

fn json_line(out: &mut String, event: &Event<'_>, request: Option<&RequestContext>) {
    let meta = event.metadata();
    json_head(out, meta.level());
    event.record(&mut JsonFields { out, first: true });
    json_tail(out, meta.target(), request);
}

/// A JSON line up to its first field.
fn json_head(out: &mut String, level: &tracing::Level) {
    out.push_str("{\"timestamp\":\"");
    timestamp(out);
    out.push_str("\",\"level\":\"");
    out.push_str(level.as_str());
    out.push_str("\",\"fields\":{");
}

/// A JSON line after its last field: the target and the request.
fn json_tail(out: &mut String, target: &str, request: Option<&RequestContext>) {
    out.push_str("},\"target\":");
    json_str(out, target);
    if let Some(r) = request {
        out.push_str(",\"span\":{\"request_id\":");
        json_str(out, &r.id);
        out.push_str(",\"client\":\"");
        let _ = write!(out, "{}", r.client.addr);
        out.push_str("\",\"method\":");
        json_str(out, r.method.as_str());
        out.push_str(",\"path\":");
        json_str(out, &r.path);
        out.push_str(",\"name\":\"request\"}");
    }
    out.push('}');
}

fn text_line(out: &mut String, event: &Event<'_>, request: Option<&RequestContext>) {
    let meta = event.metadata();
    text_head(out, meta.level(), meta.target(), request);
    event.record(&mut TextFields { out, first: true });
}

/// A text line up to its message.
fn text_head(
    out: &mut String,
    level: &tracing::Level,
    target: &str,
    request: Option<&RequestContext>,
) {
    timestamp(out);
    let _ = write!(out, " {:>5} {}: ", level.as_str(), target);
    if let Some(r) = request {
        let _ = write!(
            out,
            "request{{request_id={} client={} method={} path={}}}: ",
            r.id, r.client.addr, r.method, r.path
        );
    }
}

/// RFC 3339 in UTC with microseconds, as `2026-11-24T13:03:04.123456Z`. The text up to the
/// second is made once a second per thread.
fn timestamp(out: &mut String) {
    thread_local! {
        static SECOND: std::cell::RefCell<(i64, String)> =
            const { std::cell::RefCell::new((i64::MIN, String::new())) };
    }
    let t = time::OffsetDateTime::now_utc();
    let unix = t.unix_timestamp();
    SECOND.with_borrow_mut(|(at, text)| {
        if *at != unix {
            *at = unix;
            text.clear();
            let _ = write!(
                text,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            );
        }
        out.push_str(text);
    });
    let _ = write!(out, ".{:06}Z", t.microsecond());
}

/// A JSON string literal: quotes, backslashes and control characters escaped. Runs that need
/// no escaping (nearly every string) are copied whole.
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    json_escape(out, s);
    out.push('"');
}

/// Formats into a JSON string's inside (the quotes are the caller's).
struct JsonEscaped<'a>(&'a mut String);

impl std::fmt::Write for JsonEscaped<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        json_escape(self.0, s);
        Ok(())
    }
}

/// `s` escaped for the inside of a JSON string.
fn json_escape(out: &mut String, s: &str) {
    let mut clean = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f | 0x7f => "",
            _ => continue,
        };
        // Every byte escaped is ASCII, so `i` is a character boundary.
        out.push_str(&s[clean..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escape);
        }
        clean = i + 1;
    }
    out.push_str(&s[clean..]);
}

struct JsonFields<'a> {
    out: &'a mut String,
    first: bool,
}

impl JsonFields<'_> {
    fn key(&mut self, field: &Field) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        json_str(self.out, field.name());
        self.out.push(':');
    }
}

impl Visit for JsonFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        json_str(self.out, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.key(field);
        self.out.push('"');
        let _ = write!(JsonEscaped(self.out), "{value:?}");
        self.out.push('"');
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        let _ = write!(self.out, "{value}");
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        let _ = write!(self.out, "{value}");
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.out.push_str(if value { "true" } else { "false" });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        if value.is_finite() {
            let _ = write!(self.out, "{value}");
        } else {
            json_str(self.out, &value.to_string());
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.key(field);
        json_str(self.out, &value.to_string());
    }
}

struct TextFields<'a> {
    out: &'a mut String,
    first: bool,
}

impl Visit for TextFields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if !self.first {
            self.out.push(' ');
        }
        self.first = false;
        if field.name() == "message" {
            let _ = write!(self.out, "{value:?}");
        } else {
            let _ = write!(self.out, "{}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        // Strings without their Debug quotes, as tracing's own text format shows them.
        self.record_debug(field, &format_args!("{value}"));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.record_debug(field, &format_args!("{value}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture(json: bool, emit: impl FnOnce()) -> String {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().expect("sink").extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let written = sink.0.clone();
        let subscriber = tracing_subscriber::fmt()
            .event_format(Lines { json })
            .with_writer(move || sink.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        let bytes = written.lock().expect("sink").clone();
        String::from_utf8(bytes).expect("UTF-8")
    }

    #[test]
    fn a_json_line_is_one_object_with_its_fields_escaped() {
        let line = capture(true, || {
            tracing::warn!(
                status = 502u16,
                error = "upstream \"gone\"\n",
                ok = true,
                "handled"
            );
        });
        assert!(
            line.ends_with('\n') && line.matches('\n').count() == 1,
            "{line}"
        );
        let v: serde_json::Value = serde_json::from_str(&line).expect("JSON");
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["fields"]["message"], "handled");
        assert_eq!(v["fields"]["status"], 502);
        assert_eq!(v["fields"]["error"], "upstream \"gone\"\n");
        assert_eq!(v["fields"]["ok"], true);
        assert_eq!(v["target"], module_path!());
        assert!(v.get("span").is_none(), "outside a request: {v}");
        let ts = v["timestamp"].as_str().expect("timestamp");
        time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
            .expect("RFC 3339");
    }

    #[test]
    fn json_strings_escape_what_json_requires_and_keep_the_rest_whole() {
        for text in [
            "",
            "plain",
            "a\"b\\c\nd\re\tf",
            "\u{1}\u{1f}\u{7f} control",
            "é中🙂 and \"quotes\" after non-ASCII",
        ] {
            let mut out = String::new();
            json_str(&mut out, text);
            let back: String = serde_json::from_str(&out).expect("valid JSON string");
            assert_eq!(back, text, "{out}");
            assert!(!out[1..out.len() - 1].contains(|c: char| c < ' '), "{out}");
        }
    }

    #[test]
    fn a_request_line_written_straight_is_the_line_its_event_makes() {
        use keygate_server::http::client::ClientInfo;
        let request = std::sync::Arc::new(RequestContext::new(
            "req_0123".into(),
            "10.0.0.1".parse().expect("ip"),
            ClientInfo {
                addr: "203.0.113.9".parse().expect("ip"),
                secure: false,
            },
            axum_http::Method::POST,
            "/api/v1/keys/\"verify\"",
        ));
        for json in [true, false] {
            let event = capture(json, || request_id::handled_event(&request, 204, 1234));
            let mut direct = String::new();
            AccessLines { json }.line(&mut direct, &request, 204, 1234);
            // The same bytes but for the time they were written.
            let untimed = |line: &str| {
                let at = if json {
                    line.find("\",\"level\"").expect("level")
                } else {
                    line.find(' ').expect("space")
                };
                line[at..].to_owned()
            };
            assert_eq!(untimed(&direct), untimed(&event), "json: {json}");
            assert!(direct.ends_with('\n') && direct.matches('\n').count() == 1);
            if json {
                let v: serde_json::Value = serde_json::from_str(&direct).expect("JSON");
                assert_eq!(v["fields"]["status"], 204);
                assert_eq!(v["span"]["path"], "/api/v1/keys/\"verify\"");
                assert_eq!(v["target"], REQUEST_LOG_TARGET);
            }
        }
    }

    #[test]
    fn timestamps_are_rfc3339_with_microseconds_and_follow_the_clock() {
        let mut first = String::new();
        timestamp(&mut first);
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let mut second = String::new();
        timestamp(&mut second);
        let parse = |t: &str| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                .expect("RFC 3339")
        };
        assert_eq!(first.len(), "2026-11-24T13:03:04.123456Z".len(), "{first}");
        let elapsed = parse(&second) - parse(&first);
        assert!(
            elapsed >= time::Duration::milliseconds(1100),
            "{first} {second}"
        );
        assert!(elapsed < time::Duration::seconds(5), "{first} {second}");
    }

    #[test]
    fn a_text_line_shows_the_message_then_the_fields() {
        let line = capture(false, || tracing::info!(port = 8080, "listening"));
        assert!(line.contains(" INFO "), "{line}");
        assert!(line.trim_end().ends_with("listening port=8080"), "{line}");
    }
}
