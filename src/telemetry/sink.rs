//! Where log lines go: one buffer, written out by one background thread,
//! so a request never waits on stderr (or a file) and a busy gateway
//! writes in batches, the way nginx's `access_log … buffer= flush=` does.
//!
//! A line is *urgent* (every line but the access log's) or not. The writer
//! thread sleeps until a line arrives; for an urgent one it writes at once,
//! otherwise it lets a batch gather for [`FLUSH_DELAY`] (or until
//! [`BATCH_BYTES`] are waiting) and writes it with one system call. So an
//! access line costs a copy into the buffer, and the thread is woken once
//! a batch rather than once a line. A wake-up (two context switches) and a
//! write (a file's inode made dirty) cost tens of microseconds each, so
//! the batch is large. Past [`MAX_BYTES`] waiting (the output is blocked),
//! new lines are dropped and counted, never waited for.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::Metadata;
use tracing_subscriber::fmt::MakeWriter;

/// How long a batch of access lines may wait to be written.
pub(crate) const FLUSH_DELAY: Duration = Duration::from_millis(100);
/// A batch this large is written without waiting out the delay.
const BATCH_BYTES: usize = 256 * 1024;
/// The most room the writer keeps for its batches between writes (a batch
/// of a backlog can be far larger).
const KEPT_BYTES: usize = 4 * BATCH_BYTES;
/// Past this much unwritten, new lines are dropped.
const MAX_BYTES: usize = 16 * 1024 * 1024;

/// A handle for writing lines; clones share the buffer and the thread.
#[derive(Clone)]
pub(crate) struct Sink(Arc<SinkShared>);

struct SinkShared {
    buffer: Mutex<Buffer>,
    wake: Condvar,
    dropped: AtomicU64,
}

#[derive(Default)]
struct Buffer {
    lines: Vec<u8>,
    /// An urgent line (or a full batch) is waiting.
    urgent: bool,
    writer: Writer,
    /// The guard went: write what is left and stop.
    closed: bool,
}

/// What the writer thread is doing, so that appenders wake it only when it
/// needs waking (a notification is a system call).
#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Writer {
    /// Writing, or about to look at the buffer again.
    #[default]
    Busy,
    /// Asleep until a line arrives.
    Idle,
    /// Letting a batch gather; woken early only for an urgent line.
    Gathering,
}

/// Stops the writer thread when dropped, after it wrote everything queued.
#[must_use = "dropping it stops the writer"]
pub(crate) struct SinkGuard {
    sink: Sink,
    thread: Option<JoinHandle<()>>,
}

impl Sink {
    /// A sink writing to `out` from a thread named `name`.
    pub(crate) fn start(out: Box<dyn Write + Send>, name: &str) -> std::io::Result<(Sink, SinkGuard)> {
        let sink = Sink(Arc::new(SinkShared {
            buffer: Mutex::new(Buffer::default()),
            wake: Condvar::new(),
            dropped: AtomicU64::new(0),
        }));
        let shared = sink.0.clone();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || shared.run(out))?;
        Ok((
            sink.clone(),
            SinkGuard {
                sink,
                thread: Some(thread),
            },
        ))
    }

    /// Queues `line` (one or more whole lines); `urgent` lines are written
    /// at once, others within [`FLUSH_DELAY`].
    pub(crate) fn append(&self, line: &[u8], urgent: bool) {
        let shared = &*self.0;
        let mut buffer = shared.lock();
        if buffer.lines.len() + line.len() > MAX_BYTES {
            drop(buffer);
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        buffer.lines.extend_from_slice(line);
        let urgent = urgent || buffer.lines.len() >= BATCH_BYTES;
        buffer.urgent |= urgent;
        let wake = match buffer.writer {
            Writer::Idle => true,
            Writer::Gathering => urgent,
            Writer::Busy => false,
        };
        if wake {
            buffer.writer = Writer::Busy;
            drop(buffer);
            shared.wake.notify_one();
        }
    }

    /// Lines dropped so far because the output did not keep up.
    pub(crate) fn dropped(&self) -> u64 {
        self.0.dropped.load(Ordering::Relaxed)
    }
}

impl SinkShared {
    fn lock(&self) -> MutexGuard<'_, Buffer> {
        self.buffer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The writer thread: waits for lines, gathers a batch, writes it.
    /// After a batch it keeps gathering for one more delay before it
    /// sleeps, so that steady traffic wakes it once a batch rather than
    /// twice (a wake-up is two context switches).
    fn run(&self, mut out: Box<dyn Write + Send>) {
        let mut batch: Vec<u8> = Vec::new();
        loop {
            let mut buffer = self.lock();
            let mut gathered = false;
            if buffer.lines.is_empty() && !buffer.closed {
                buffer = self.gather(buffer);
                gathered = true;
            }
            while buffer.lines.is_empty() && !buffer.closed {
                buffer.writer = Writer::Idle;
                buffer = self.wake.wait(buffer).unwrap_or_else(PoisonError::into_inner);
                gathered = false;
            }
            if !gathered && !buffer.urgent && !buffer.closed {
                buffer = self.gather(buffer);
            }
            buffer.writer = Writer::Busy;
            buffer.urgent = false;
            std::mem::swap(&mut buffer.lines, &mut batch);
            let closed = buffer.closed && buffer.lines.is_empty();
            drop(buffer);
            // Nowhere to report a failed log write: the line is lost.
            let _ = out.write_all(&batch).and_then(|()| out.flush());
            batch.clear();
            if batch.capacity() > KEPT_BYTES {
                batch = Vec::new();
            }
            if closed {
                return;
            }
        }
    }

    /// Lets lines gather for [`FLUSH_DELAY`], or until an urgent line or a
    /// full batch wakes the thread.
    fn gather<'a>(&'a self, mut buffer: MutexGuard<'a, Buffer>) -> MutexGuard<'a, Buffer> {
        buffer.writer = Writer::Gathering;
        self.wake
            .wait_timeout(buffer, FLUSH_DELAY)
            .unwrap_or_else(PoisonError::into_inner)
            .0
    }
}

impl Drop for SinkGuard {
    fn drop(&mut self) {
        self.sink.0.lock().closed = true;
        self.sink.0.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The writer `tracing_subscriber::fmt` formats each line into: every
/// line it writes is urgent.
pub(crate) struct LineWriter<'a>(&'a Sink);

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.append(buf, true);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Sink {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter(self)
    }

    fn make_writer_for(&'a self, _meta: &Metadata<'_>) -> Self::Writer {
        LineWriter(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// A `Write` into shared memory, to read what the thread wrote.
    #[derive(Clone, Default)]
    struct Memory(Arc<Mutex<Vec<u8>>>);

    impl Write for Memory {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Memory {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
        }
    }

    fn eventually(mut done: impl FnMut() -> bool) -> bool {
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if done() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    #[test]
    fn every_line_is_written_in_order_and_the_guard_flushes_the_rest() {
        let out = Memory::default();
        let (sink, guard) = Sink::start(Box::new(out.clone()), "test-log").unwrap();
        for i in 0..1000 {
            sink.append(format!("line {i}\n").as_bytes(), i % 100 == 0);
        }
        drop(guard);
        let expected: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        assert_eq!(out.text(), expected);
        assert_eq!(sink.dropped(), 0);
    }

    #[test]
    fn urgent_lines_go_at_once_and_others_within_the_delay() {
        let out = Memory::default();
        let (sink, _guard) = Sink::start(Box::new(out.clone()), "test-log").unwrap();
        let appended = Instant::now();
        sink.append(b"lazy\n", false);
        // Not at once: the batch gathers (checked only when this thread woke
        // well within the delay, so a slow machine cannot fail it).
        std::thread::sleep(FLUSH_DELAY / 4);
        let early = out.text();
        if appended.elapsed() < FLUSH_DELAY / 2 {
            assert_eq!(early, "");
        }
        assert!(eventually(|| out.text() == "lazy\n"), "written within the delay");
        sink.append(b"lazy again\n", false);
        sink.append(b"urgent\n", true);
        assert!(eventually(|| out.text() == "lazy\nlazy again\nurgent\n"));
    }

    /// After a batch the writer gathers for one more delay before it
    /// sleeps: a line in that time, one after it, and a full batch are all
    /// written.
    #[test]
    fn lines_after_a_batch_are_written_whether_the_writer_gathers_or_sleeps() {
        let out = Memory::default();
        let (sink, _guard) = Sink::start(Box::new(out.clone()), "test-log").unwrap();
        sink.append(b"first\n", false);
        assert!(eventually(|| out.text() == "first\n"));
        sink.append(b"second\n", false);
        assert!(
            eventually(|| out.text() == "first\nsecond\n"),
            "the line while it gathered"
        );
        std::thread::sleep(FLUSH_DELAY * 3);
        sink.append(b"third\n", false);
        assert!(
            eventually(|| out.text() == "first\nsecond\nthird\n"),
            "the line that woke it"
        );
        let batch = vec![b'x'; BATCH_BYTES];
        sink.append(&batch, false);
        assert!(eventually(
            || out.text().len() == "first\nsecond\nthird\n".len() + BATCH_BYTES
        ));
    }

    /// An output that blocks until released: lines past the limit are
    /// dropped and counted, and appending never waits.
    #[test]
    fn a_blocked_output_drops_and_counts_instead_of_waiting() {
        struct Blocked(Arc<Mutex<()>>);
        impl Write for Blocked {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                drop(self.0.lock().unwrap_or_else(PoisonError::into_inner));
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let gate = Arc::new(Mutex::new(()));
        let held = gate.lock().unwrap_or_else(PoisonError::into_inner);
        let (sink, guard) = Sink::start(Box::new(Blocked(gate.clone())), "test-log").unwrap();
        let line = vec![b'x'; 1024];
        let started = Instant::now();
        for _ in 0..(MAX_BYTES / 1024 + 100) * 2 {
            sink.append(&line, true);
        }
        assert!(started.elapsed() < Duration::from_secs(5), "appending waited");
        assert!(sink.dropped() >= 100, "dropped {}", sink.dropped());
        drop(held);
        drop(guard);
    }
}
