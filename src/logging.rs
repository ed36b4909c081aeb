//! Logging: `tracing` events to journald (with their fields as journal fields) when running
//! under systemd, else to stderr as text or JSON lines. The level can change at run time
//! (SIGHUP reload).

use std::io::IsTerminal;
use std::os::fd::AsFd;

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry, reload};

use crate::config::{LogConfig, LogFormat, LogTarget, parse_log_filter};

/// The subscriber under the output layer: the registry with the reloadable filter.
type Base = tracing_subscriber::layer::Layered<reload::Layer<Targets, Registry>, Registry>;

/// Where the logs actually went (journald can be asked for but missing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    Journald,
    StderrText,
    StderrJson,
}

/// Lets the daemon change the log filter while running.
pub struct LogHandle {
    filter: reload::Handle<Targets, Registry>,
    pub sink: Sink,
}

impl LogHandle {
    /// Replaces the filter directive (e.g. `debug`). The directive was validated with the config.
    pub fn set_level(&self, level: &str) -> Result<(), String> {
        let filter = parse_log_filter(level)?;
        self.filter.reload(filter).map_err(|e| e.to_string())
    }
}

/// Whether stderr is connected to the journal: systemd sets `JOURNAL_STREAM=dev:inode` for the
/// stream it gives us, and we compare it with what stderr really is.
pub fn stderr_is_journal(journal_stream: Option<&str>) -> bool {
    let Some((dev, ino)) = journal_stream.and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    match nix::sys::stat::fstat(std::io::stderr().as_fd()) {
        Ok(st) => st.st_dev == dev && st.st_ino == ino,
        Err(_) => false,
    }
}

/// Installs the global subscriber. Call once, before anything logs.
pub fn init(cfg: &LogConfig) -> LogHandle {
    let filter = parse_log_filter(&cfg.level)
        .unwrap_or_else(|_| Targets::new().with_default(LevelFilter::INFO));
    let (filter, handle) = reload::Layer::new(filter);
    let want_journald = match cfg.target {
        LogTarget::Journald => true,
        LogTarget::Stderr => false,
        LogTarget::Auto => stderr_is_journal(std::env::var("JOURNAL_STREAM").ok().as_deref()),
    };
    let mut journald_error = None;
    let (layer, sink): (Box<dyn Layer<Base> + Send + Sync>, Sink) = if want_journald {
        match tracing_journald::layer() {
            // No prefix: fields arrive in the journal as REQUEST_ID=…, STATUS=…, AUDIT=1.
            Ok(l) => (
                l.with_field_prefix(None)
                    .with_syslog_identifier("localhostd".into())
                    .boxed(),
                Sink::Journald,
            ),
            Err(e) => {
                journald_error = Some(e);
                stderr_layer(cfg.format)
            }
        }
    } else {
        stderr_layer(cfg.format)
    };
    Registry::default().with(filter).with(layer).init();
    if let Some(e) = journald_error {
        tracing::warn!(error = %e, "journald is not reachable; logging to stderr instead");
    }
    LogHandle {
        filter: handle,
        sink,
    }
}

fn stderr_layer(format: LogFormat) -> (Box<dyn Layer<Base> + Send + Sync>, Sink) {
    match format {
        LogFormat::Text => (
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .with_target(false)
                .boxed(),
            Sink::StderrText,
        ),
        LogFormat::Json => (
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .with_writer(std::io::stderr)
                .boxed(),
            Sink::StderrJson,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_must_match_stderr() {
        assert!(!stderr_is_journal(None));
        assert!(!stderr_is_journal(Some("garbage")));
        assert!(!stderr_is_journal(Some("1:1")));
        let st = nix::sys::stat::fstat(std::io::stderr().as_fd()).unwrap();
        assert!(stderr_is_journal(Some(&format!(
            "{}:{}",
            st.st_dev, st.st_ino
        ))));
    }
}
