//! Logging setup: every log line goes to stderr through `tracing`, in the format that suits where
//! stderr leads.
//!
//! - `text`: for a person at a terminal; timestamps, levels, and colours when stderr is a terminal.
//! - `journald`: for systemd's journal. No timestamp (the journal stamps every line itself, so ours
//!   would be printed twice by `journalctl`), no colours, and each line starts with its syslog
//!   priority (`<3>` error ... `<7>` debug), which journald strips and stores as `PRIORITY`. That is
//!   what makes `journalctl -u homewright -p warning` and the journal's colouring work, without linking
//!   libsystemd or writing to the journal's socket ourselves.
//! - `json`: one JSON object per line (tracing-subscriber's format), for tools.
//!
//! `auto` picks `journald` when stderr is the stream systemd set up for the journal (the device and
//! inode in `JOURNAL_STREAM` are those of stderr, as sd_journal_stream_fd(3) says to check; a child
//! process that inherits the variable but writes elsewhere is not fooled), else `text`.

use std::cell::RefCell;
use std::fmt;
use std::io::IsTerminal;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The default filter: the embedded broker logs every connect and disconnect at info; its warnings
/// (a client that sent garbage, a refused login) stay. `RUST_LOG=info,mqtt5=info` brings the rest back.
const DEFAULT_FILTER: &str = "info,mqtt5=warn";

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `journald` under systemd, else `text`.
    #[default]
    Auto,
    /// Human-readable lines with a timestamp; coloured on a terminal.
    Text,
    /// Plain lines with a syslog priority prefix and no timestamp, for the systemd journal.
    Journald,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// Resolves `Auto` for this process's stderr.
    pub fn resolve(self) -> LogFormat {
        match self {
            LogFormat::Auto if stderr_is_journal() => LogFormat::Journald,
            LogFormat::Auto => LogFormat::Text,
            chosen => chosen,
        }
    }
}

/// Installs the global subscriber. `level` is a level or a tracing filter; without it `RUST_LOG`
/// decides, else info. A filter that does not parse falls back to the default rather than silencing
/// the service.
pub fn init(level: Option<&str>, format: LogFormat) {
    let filter = match level {
        Some(level) => EnvFilter::try_new(level),
        None => EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new(DEFAULT_FILTER)),
    }
    .unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_timer(Timestamps)
        .with_writer(std::io::stderr);
    // try_init: a second call (tests running the CLI in-process) keeps the first subscriber.
    let _ = match format.resolve() {
        LogFormat::Json => builder.json().with_current_span(false).try_init(),
        LogFormat::Journald => builder
            .event_format(Journald(
                tracing_subscriber::fmt::format()
                    .without_time()
                    .with_level(false)
                    .with_target(false)
                    .with_ansi(false),
            ))
            .try_init(),
        LogFormat::Text | LogFormat::Auto => builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(false)
            .try_init(),
    };
}

thread_local! {
    /// The virtual clock of the simulation (`replay`, `test`) running on this thread, if any.
    static VIRTUAL_CLOCK: RefCell<Option<crate::scheduler::Clock>> = const { RefCell::new(None) };
}

/// While alive, log lines written on the thread that made it are stamped with a virtual clock's time:
/// in `replay` and `test`, what a rule logs at 18:00 on a replayed day says 18:00 on that day, not the
/// moment the replay ran.
#[must_use = "the virtual time applies only while this lives"]
pub struct VirtualTime(());

impl VirtualTime {
    pub fn follow(clock: crate::scheduler::Clock) -> VirtualTime {
        VIRTUAL_CLOCK.with(|current| *current.borrow_mut() = Some(clock));
        VirtualTime(())
    }
}

impl Drop for VirtualTime {
    fn drop(&mut self) {
        VIRTUAL_CLOCK.with(|current| *current.borrow_mut() = None);
    }
}

/// The wall clock, or the virtual clock of this thread's simulation, in the same UTC format.
struct Timestamps;

impl FormatTime for Timestamps {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        let virtual_now = VIRTUAL_CLOCK.with(|clock| clock.borrow().as_ref().map(|c| c.now()));
        match virtual_now.and_then(chrono::DateTime::from_timestamp_millis) {
            Some(at) => write!(w, "{}", at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
            None => SystemTime.format_time(w),
        }
    }
}

/// Prefixes each line of an inner format with its syslog priority, which journald turns into the
/// entry's `PRIORITY` (SyslogLevelPrefix= is on by default).
struct Journald<F>(F);

impl<S, N, F> FormatEvent<S, N> for Journald<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "<{}>", syslog_priority(*event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

/// The syslog priority of a tracing level: error 3, warning 4, info 6, debug and trace 7. Nothing maps
/// to notice (5): tracing has no such level.
pub fn syslog_priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// True when `JOURNAL_STREAM` (`DEVICE:INODE`) names the file stderr is.
fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((device, inode)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    match stderr_identity() {
        Some((dev, ino)) => device.parse() == Ok(dev) && inode.parse() == Ok(ino),
        None => false,
    }
}

/// The device and inode of the file behind stderr (fstat on a duplicate of the descriptor).
fn stderr_identity() -> Option<(u64, u64)> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let fd = std::io::stderr().as_fd().try_clone_to_owned().ok()?;
    let metadata = std::fs::File::from(fd).metadata().ok()?;
    Some((metadata.dev(), metadata.ino()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_map_to_syslog_priorities() {
        let mapped: Vec<u8> = [Level::ERROR, Level::WARN, Level::INFO, Level::DEBUG, Level::TRACE]
            .into_iter()
            .map(syslog_priority)
            .collect();
        assert_eq!(mapped, [3, 4, 6, 7, 7]);
    }

    #[test]
    fn explicit_formats_are_kept() {
        assert_eq!(LogFormat::Json.resolve(), LogFormat::Json);
        assert_eq!(LogFormat::Journald.resolve(), LogFormat::Journald);
    }
}
