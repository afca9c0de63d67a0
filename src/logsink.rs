//! Where log lines go: a buffer in front of stderr (or a file), flushed by a
//! small thread every 100 ms and when the guard drops. An event costs a lock
//! and a copy, with no allocation, no channel and no wake-up of another
//! thread, which matters at tens of thousands of decision events a second.
//! Nothing is dropped: a full buffer is written out by the thread that
//! fills it. Every line passes through [`crate::redact`] on its way in, and
//! a failed write is remembered, so `main` can say so and exit 1 instead of
//! losing the log in silence.

use std::io::{BufWriter, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How often buffered lines reach the output at the latest.
const FLUSH_EVERY: Duration = Duration::from_millis(100);

struct Shared<W: Write> {
    out: Mutex<BufWriter<W>>,
    /// Set when a write or flush failed (a full disk, `/dev/full`).
    failed: AtomicBool,
    stop: Mutex<bool>,
    wake: Condvar,
}

/// What [`flush_now`] flushes: the process's log sink, once `main` names it.
static PROCESS_SINK: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>> = std::sync::OnceLock::new();

/// Writes out the log lines buffered so far (when `main` installed a sink
/// with [`BufferedSink::flush_on_demand`]), so what goes to stdout next
/// comes after them on a terminal.
pub fn flush_now() {
    if let Some(f) = PROCESS_SINK.get() {
        f();
    }
}

/// The writer to hand to `tracing_subscriber::fmt().with_writer(..)`.
pub struct BufferedSink<W: Write + Send + 'static> {
    shared: Arc<Shared<W>>,
}

impl<W: Write + Send + 'static> Clone for BufferedSink<W> {
    fn clone(&self) -> Self {
        BufferedSink {
            shared: self.shared.clone(),
        }
    }
}

/// Flushes the sink and stops its thread when dropped.
pub struct FlushGuard<W: Write + Send + 'static> {
    shared: Arc<Shared<W>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl<W: Write + Send + 'static> BufferedSink<W> {
    pub fn new(out: W) -> (BufferedSink<W>, FlushGuard<W>) {
        let shared = Arc::new(Shared {
            out: Mutex::new(BufWriter::with_capacity(64 * 1024, out)),
            failed: AtomicBool::new(false),
            stop: Mutex::new(false),
            wake: Condvar::new(),
        });
        let flusher = shared.clone();
        let thread = std::thread::Builder::new()
            .name("log-flush".into())
            .spawn(move || {
                let mut stop = flusher.stop.lock().expect("log stop lock");
                while !*stop {
                    stop = flusher
                        .wake
                        .wait_timeout(stop, FLUSH_EVERY)
                        .expect("log stop lock")
                        .0;
                    flusher.flush();
                }
            })
            .ok();
        (
            BufferedSink {
                shared: shared.clone(),
            },
            FlushGuard { shared, thread },
        )
    }
}

impl<W: Write + Send + 'static> BufferedSink<W> {
    /// Makes [`flush_now`] flush this sink (the process's one; the first
    /// call wins).
    pub fn flush_on_demand(&self) {
        let shared = self.shared.clone();
        let _ = PROCESS_SINK.set(Box::new(move || shared.flush()));
    }
}

impl<W: Write> Shared<W> {
    fn lock(&self) -> MutexGuard<'_, BufWriter<W>> {
        // A panic while logging must not silence every later line.
        self.out
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn flush(&self) {
        if self.lock().flush().is_err() {
            self.failed.store(true, Ordering::SeqCst);
        }
    }
}

impl<W: Write + Send + 'static> FlushGuard<W> {
    /// Stops the flusher, writes out what is buffered, and says whether any
    /// line was lost to a write error.
    pub fn finish(mut self) -> bool {
        self.stop();
        !self.shared.failed.load(Ordering::SeqCst)
    }

    fn stop(&mut self) {
        *self
            .shared
            .stop
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.shared.flush();
    }
}

impl<W: Write + Send + 'static> Drop for FlushGuard<W> {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One event's hold on the buffer.
pub struct Line<'a, W: Write> {
    out: MutexGuard<'a, BufWriter<W>>,
    failed: &'a AtomicBool,
}

impl<W: Write> Line<'_, W> {
    fn noted<T>(&self, r: std::io::Result<T>) -> std::io::Result<T> {
        if r.is_err() {
            self.failed.store(true, Ordering::SeqCst);
        }
        r
    }
}

impl<W: Write> Write for Line<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let clean = crate::redact::bytes(buf);
        let r = self.out.write_all(&clean).map(|()| buf.len());
        self.noted(r)
    }
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        let clean = crate::redact::bytes(buf);
        let r = self.out.write_all(&clean);
        self.noted(r)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        let r = self.out.flush();
        self.noted(r)
    }
}

impl<'a, W: Write + Send + 'static> MakeWriter<'a> for BufferedSink<W> {
    type Writer = Line<'a, W>;

    fn make_writer(&'a self) -> Self::Writer {
        Line {
            out: self.shared.lock(),
            failed: &self.shared.failed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use testkit::Captured;

    #[test]
    fn lines_reach_the_output_within_the_flush_interval() {
        let out = Captured::default();
        let (sink, _guard) = BufferedSink::new(out.clone());
        sink.make_writer().write_all(b"one\n").unwrap();
        assert!(out.text().is_empty(), "buffered, not written per line");
        std::thread::sleep(FLUSH_EVERY * 3);
        assert_eq!(out.text(), "one\n");
    }

    #[test]
    fn dropping_the_guard_flushes_everything() {
        let out = Captured::default();
        let (sink, guard) = BufferedSink::new(out.clone());
        for i in 0..10_000 {
            writeln!(sink.make_writer(), "line {i}").unwrap();
        }
        drop(guard);
        let text = out.text();
        assert_eq!(text.lines().count(), 10_000);
        assert!(text.ends_with("line 9999\n"));
    }
}
