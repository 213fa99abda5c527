//! This test binary's log lines, captured in memory: the first [`capture`] installs one
//! process-wide `tracing` subscriber (at the filter and in the format it names) writing into a
//! buffer that [`captured`] reads. The subscriber holds every test's lines, not one test's.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

/// How captured lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Plain text, no colours.
    Text,
    /// One JSON object a line (what operators ship).
    Json,
}

struct Capture {
    filter: String,
    format: Format,
    buffer: Arc<Mutex<Vec<u8>>>,
}

static CAPTURE: OnceLock<Capture> = OnceLock::new();

/// Starts capturing this binary's logs at `filter` (an `EnvFilter` directive) in `format`; later
/// calls must ask for the same, since there is one subscriber a process.
pub fn capture(filter: &str, format: Format) {
    let capture = CAPTURE.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = {
            let buffer = buffer.clone();
            move || LogWriter(buffer.clone())
        };
        let builder = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(writer)
            .with_ansi(false);
        let _ = match format {
            Format::Text => builder.try_init(),
            Format::Json => builder.json().try_init(),
        };
        Capture {
            filter: filter.to_owned(),
            format,
            buffer,
        }
    });
    assert_eq!(
        (capture.filter.as_str(), capture.format),
        (filter, format),
        "this test binary already captures its logs otherwise"
    );
}

/// Everything captured so far.
pub fn captured() -> String {
    let buffer = &CAPTURE.get().expect("logs::capture was called").buffer;
    String::from_utf8_lossy(&buffer.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
