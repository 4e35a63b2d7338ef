#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::sync::{Arc, Mutex};

use tracing::Level;
use tracing_subscriber::fmt::MakeWriter;

use super::*;

fn env(level: Option<&str>, format: Option<&str>) -> LogEnv {
    LogEnv {
        level: level.map(str::to_owned),
        format: format.map(str::to_owned),
        ..LogEnv::default()
    }
}

/// Stderr redirected to a file or pipe gets no colour; a terminal does.
#[test]
fn colour_only_on_a_terminal() {
    assert!(!LogSettings::decide(&LogEnv::default(), false, "info").ansi);
    assert!(LogSettings::decide(&LogEnv::default(), true, "info").ansi);
}

/// `NO_COLOR` (non-empty) turns colour off on a terminal too; an empty one does not.
#[test]
fn no_color_wins_over_a_terminal() {
    let mut e = LogEnv {
        no_color: Some("1".into()),
        ..LogEnv::default()
    };
    assert!(!LogSettings::decide(&e, true, "info").ansi);
    e.no_color = Some(String::new());
    assert!(LogSettings::decide(&e, true, "info").ansi);
}

/// `NETTING_LOG_FORMAT=json` (any case) gives JSON without colour, even on a terminal;
/// unset, empty or `plain` give plain text.
#[test]
fn json_when_asked() {
    for value in ["json", "JSON", " Json "] {
        let s = LogSettings::decide(&env(None, Some(value)), true, "info");
        assert_eq!(s.format, LogFormat::Json, "{value:?}");
        assert!(!s.ansi);
        assert!(s.problems.is_empty());
    }
    for value in [None, Some(""), Some("plain")] {
        let s = LogSettings::decide(&env(None, value), false, "info");
        assert_eq!(s.format, LogFormat::Plain, "{value:?}");
        assert!(s.problems.is_empty());
    }
}

/// An unknown format is reported by name and plain text is used.
#[test]
fn unknown_format_is_reported() {
    let s = LogSettings::decide(&env(None, Some("jsonl")), false, "info");
    assert_eq!(s.format, LogFormat::Plain);
    assert_eq!(s.problems.len(), 1);
    assert!(
        s.problems[0].contains("NETTING_LOG_FORMAT=\"jsonl\""),
        "{:?}",
        s.problems
    );
}

/// `NETTING_LOG` wins over `RUST_LOG`, which wins over the default; empty counts as unset.
#[test]
fn level_precedence() {
    let mut e = LogEnv {
        level: Some("debug".into()),
        fallback_level: Some("trace".into()),
        ..LogEnv::default()
    };
    assert_eq!(LogSettings::decide(&e, false, "info").filter, "debug");
    e.level = Some(String::new());
    assert_eq!(LogSettings::decide(&e, false, "info").filter, "trace");
    e.fallback_level = None;
    assert_eq!(LogSettings::decide(&e, false, "info").filter, "info");
}

/// A filter that does not parse is reported by variable and the default is used.
#[test]
fn invalid_level_is_reported() {
    let s = LogSettings::decide(&env(Some("info,foo=loud"), None), false, "warn");
    assert_eq!(s.filter, "warn");
    assert_eq!(s.problems.len(), 1);
    assert!(
        s.problems[0].starts_with("NETTING_LOG="),
        "{:?}",
        s.problems
    );
}

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Buffer {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'w> MakeWriter<'w> for Buffer {
    type Writer = Buffer;
    fn make_writer(&'w self) -> Buffer {
        self.clone()
    }
}

fn written(settings: &LogSettings, drop: fn(&Metadata<'_>) -> bool) -> String {
    let buffer = Buffer::default();
    let subscriber = subscriber(settings, drop, buffer.clone());
    tracing::subscriber::with_default(subscriber, || {
        tracing::warn!(peer = 2, "raft peer unreachable");
        tracing::event!(target: "noisy::lib", Level::ERROR, "per-attempt error");
        tracing::debug!("below the level");
    });
    buffer.text()
}

/// What the installed subscriber writes for a non-terminal: no escape code at all.
#[test]
fn plain_output_for_a_file_has_no_escape_codes() {
    let settings = LogSettings::decide(&LogEnv::default(), false, "info");
    let text = written(&settings, |_| false);
    assert!(text.contains("raft peer unreachable"), "{text}");
    assert!(!text.contains('\x1b'), "{text:?}");
}

/// JSON output is one parseable object per event, with the event's fields.
#[test]
fn json_output_is_one_object_per_line() {
    let settings = LogSettings::decide(&env(None, Some("json")), false, "info");
    let text = written(&settings, |_| false);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with('{') && lines[0].ends_with('}'),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains("\"peer\":2"), "{}", lines[0]);
    assert!(lines[0].contains("\"level\":\"WARN\""), "{}", lines[0]);
}

/// Events the binary asked to drop are never written, whatever their level; the others are.
#[test]
fn dropped_events_are_not_written() {
    let settings = LogSettings::decide(&LogEnv::default(), false, "info");
    let text = written(&settings, |meta| meta.target() == "noisy::lib");
    assert!(text.contains("raft peer unreachable"), "{text}");
    assert!(!text.contains("per-attempt error"), "{text}");
}
