//! Where log lines go: standard error, with the request log batched.
//!
//! One line per request is the busiest thing Keygate writes. Writing each with its own system
//! call costs more than a gateway's whole authentication, so request lines (written straight
//! here by `log_format::AccessLines`, or the `handled` events at info) collect in a buffer that
//! the log thread writes out every [`FLUSH_EVERY`], or sooner once [`FLUSH_AT`] bytes are
//! waiting (the request whose line crosses that mark wakes it). A request never waits for that
//! write: a log pipe nobody reads for a while, or a disk busy with the database's writes
//! (dirty-page throttling can hold a `write` for tens of milliseconds), stalls the log thread
//! only. Past [`PENDING_CAP`] bytes waiting, requests write them out themselves, and so wait for
//! the output rather than grow memory without bound or drop lines. Every other line (start-up,
//! warnings, errors) is written at once, after whatever request lines are waiting, so the order
//! of the lines is always the order of the events. The buffer is flushed when the process exits
//! normally and before a panic message is printed; a process killed with SIGKILL loses at most
//! the last [`FLUSH_EVERY`] of request lines.

use std::io::Write;
use std::sync::{Mutex, MutexGuard, Once, OnceLock};
use std::time::Duration;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

pub const FLUSH_EVERY: Duration = Duration::from_millis(200);
pub const FLUSH_AT: usize = 64 * 1024;
/// The most request lines kept waiting for a stalled output: at 20,000 requests/s, about a
/// second of them.
pub const PENDING_CAP: usize = 8 * 1024 * 1024;

/// The request log's target: the module of the request log in keygate-server.
pub const REQUEST_LOG_TARGET: &str = "keygate_server::http::request_id";

static PENDING: Mutex<Vec<u8>> = Mutex::new(Vec::new());
/// Held while lines are written out. Taken before `PENDING` is let go, so buffers are written in
/// the order they were taken, while new lines already collect in `PENDING`: a request that logs
/// during a write waits for a pointer swap, not for the write.
static WRITING: Mutex<()> = Mutex::new(());
/// The log thread, once it runs: it writes the request lines out.
static LOG_THREAD: OnceLock<std::thread::Thread> = OnceLock::new();
/// The buffer the last write emptied, kept with its memory to be swapped in by the next one:
/// made anew under `PENDING`'s lock, every request that logged meanwhile waited for the
/// allocation, and the fresh pages were faulted in by the requests that filled them.
static SPARE: Mutex<Vec<u8>> = Mutex::new(Vec::new());
/// A new buffer's room: what arrives between the line that crosses [`FLUSH_AT`] and the log
/// thread's swap fits without the buffer growing (a copy of it all, under the lock).
const BATCH_CAPACITY: usize = 2 * FLUSH_AT;

/// Writes what is waiting.
pub fn flush() {
    let fresh = std::mem::take(&mut *lock(&SPARE));
    write_swapped(lock(&PENDING), fresh);
}

/// Writes what is waiting, `pending` being held already.
fn write_out(pending: MutexGuard<'_, Vec<u8>>) {
    write_swapped(pending, Vec::new());
}

/// Swaps `fresh` (given room if it has none) in for what is waiting, and writes that out after
/// letting the lock go.
fn write_swapped(mut pending: MutexGuard<'_, Vec<u8>>, mut fresh: Vec<u8>) {
    if pending.is_empty() {
        drop(pending);
        keep_spare(fresh);
        return;
    }
    if fresh.capacity() == 0 {
        fresh = Vec::with_capacity(BATCH_CAPACITY);
    }
    let mut lines = std::mem::replace(&mut *pending, fresh);
    let writing = lock(&WRITING);
    drop(pending);
    // A failed write to stderr has nowhere to be reported; the lines are dropped rather than
    // kept growing.
    let _ = std::io::stderr().lock().write_all(&lines);
    drop(writing);
    lines.clear();
    keep_spare(lines);
}

/// Keeps an emptied buffer for the next swap, unless a stalled output made it grow far past a
/// batch: that memory goes back.
fn keep_spare(buffer: Vec<u8>) {
    if buffer.capacity() > 0 && buffer.capacity() <= 4 * BATCH_CAPACITY {
        *lock(&SPARE) = buffer;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Adds a request log line (see `log_format::AccessLines`) to the batch.
pub fn append_request_line(line: &[u8]) {
    let mut pending = lock(&PENDING);
    let before = pending.len();
    pending.extend_from_slice(line);
    batched(pending, before);
}

/// After a request line was added to `pending`, which held `before` bytes: wakes the log thread
/// when the line crossed [`FLUSH_AT`]; writes here only past [`PENDING_CAP`] (or with no log
/// thread).
fn batched(pending: MutexGuard<'_, Vec<u8>>, before: usize) {
    let len = pending.len();
    if len < FLUSH_AT {
        return;
    }
    match LOG_THREAD.get() {
        Some(thread) if len < PENDING_CAP => {
            // One wake-up per batch: a thread busy writing keeps the wake-up for its next wait
            // (`unpark` before `park` makes the park return at once), so none is lost.
            if before < FLUSH_AT {
                drop(pending);
                thread.unpark();
            }
        }
        _ => write_out(pending),
    }
}

/// The `MakeWriter` for the fmt layer. Starts the flushing thread and the panic hook once.
#[derive(Clone, Copy, Debug, Default)]
pub struct StderrBatched;

impl StderrBatched {
    pub fn new() -> Self {
        static START: Once = Once::new();
        START.call_once(|| {
            let started = std::thread::Builder::new()
                .name("keygate-log".into())
                .spawn(|| loop {
                    std::thread::park_timeout(FLUSH_EVERY);
                    flush();
                });
            if let Ok(handle) = started {
                let _ = LOG_THREAD.set(handle.thread().clone());
            }
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                flush();
                previous(info);
            }));
        });
        StderrBatched
    }
}

/// One event's writer: the fmt layer writes the formatted line, then drops it.
pub struct LineWriter {
    batched: bool,
}

impl Write for LineWriter {
    /// The fmt layer formats a whole line, then writes it with one `write_all`, which is one
    /// call here (all of it is taken): the line goes to the batch, and is written out at once
    /// unless it is a request line.
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut pending = lock(&PENDING);
        let before = pending.len();
        pending.extend_from_slice(buf);
        if self.batched {
            batched(pending, before);
        } else {
            write_out(pending);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for StderrBatched {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter { batched: false }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> LineWriter {
        LineWriter {
            batched: is_request_line(meta),
        }
    }
}

fn is_request_line(meta: &Metadata<'_>) -> bool {
    *meta.level() == Level::INFO && meta.target() == REQUEST_LOG_TARGET
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_request_lines_at_info_are_batched() {
        // Spans are only enabled (and have metadata) under a subscriber.
        tracing::subscriber::with_default(tracing_subscriber::registry(), || {
            let meta = |span: tracing::Span| span.metadata().expect("an enabled span");
            let request = tracing::info_span!(target: "keygate_server::http::request_id", "x");
            assert!(is_request_line(meta(request)));
            let other = tracing::info_span!(target: "keygate_server::gateway", "x");
            assert!(!is_request_line(meta(other)));
            let warn = tracing::warn_span!(target: "keygate_server::http::request_id", "x");
            assert!(!is_request_line(meta(warn)));
        });
    }
}
