//! Where log lines go: a buffer in front of stderr (or a file), flushed by a
//! small thread every 100 ms and when the guard drops. An event costs a lock
//! and a copy, with no allocation, no channel and no wake-up of another
//! thread, which matters at tens of thousands of decision events a second.
//! Nothing is dropped: a full buffer is written out by the thread that
//! fills it.

use std::io::{BufWriter, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How often buffered lines reach the output at the latest.
const FLUSH_EVERY: Duration = Duration::from_millis(100);

struct Shared<W: Write> {
    out: Mutex<BufWriter<W>>,
    stop: Mutex<bool>,
    wake: Condvar,
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
                    let _ = flusher.out.lock().expect("log lock").flush();
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

impl<W: Write + Send + 'static> Drop for FlushGuard<W> {
    fn drop(&mut self) {
        *self.shared.stop.lock().expect("log stop lock") = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = self.shared.out.lock().expect("log lock").flush();
    }
}

/// One event's hold on the buffer.
pub struct Line<'a, W: Write>(MutexGuard<'a, BufWriter<W>>);

impl<W: Write> Write for Line<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.0.write_all(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl<'a, W: Write + Send + 'static> MakeWriter<'a> for BufferedSink<W> {
    type Writer = Line<'a, W>;

    fn make_writer(&'a self) -> Self::Writer {
        // A panic while logging must not silence every later line.
        Line(
            self.shared
                .out
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
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
