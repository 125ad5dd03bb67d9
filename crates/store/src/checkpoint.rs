//! WAL checkpoints off the write path.
//!
//! With SQLite's automatic checkpoint, the commit that takes the WAL past 1,000 pages copies
//! them into the database and syncs it, inside the writer's transaction and under the
//! store's one mutex: 4–5 ms on this project's test box, where a commit otherwise takes
//! 20–150 µs (`p999` of a commit loop, 4.2 ms against 0.4 ms without). Every writer waiting
//! on the mutex meanwhile (an autostart's start, the agent's reports) pays it too.
//!
//! So the writer connection checkpoints only as a backstop ([`BACKSTOP_PAGES`]), and a thread
//! of the store's own, on a second connection, runs a passive checkpoint every
//! [`CHECKPOINT_EVERY`]: it never blocks a writer, and the WAL is reused from its start once
//! it is all copied. The thread stops (after a last checkpoint) when the store is dropped.
//!
//! Reusing the WAL from its start costs the first write after it a new WAL header and an
//! `fsync` of it (0.4 ms on this project's test box), and that write is often the one a
//! request waits on: the start an autostart records after an idle second. So once a
//! checkpoint has copied everything, the thread itself makes that first write (a counter row,
//! through the store's writer connection under its mutex, so no writer ever meets a busy
//! database), and skips the next checkpoints for as long as nothing else is committed: they
//! would copy only its own page, and the next writer would have to restart the WAL again.

use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

use crate::sqlite::Cached as _;

/// How often the checkpointer copies the WAL into the database.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// The writer checkpoints itself only past this many WAL pages (40 MB of 4 KiB pages): the
/// bound on the WAL if the checkpointer falls behind or fails.
pub const BACKSTOP_PAGES: i64 = 10_000;

/// What the checkpointer has done, for the metrics.
#[derive(Debug, Default)]
pub struct WalStats {
    /// Checkpoints run.
    pub checkpoints: AtomicU64,
    /// Checkpoints that failed (the next one tries again).
    pub failures: AtomicU64,
    /// Checkpoints that could not run because another connection held the database
    /// (tried again a second later).
    pub busy: AtomicU64,
    /// Pages in the WAL at the last checkpoint.
    pub wal_pages: AtomicI64,
    /// Of those, pages not yet copied into the database (readers held them back).
    pub pending_pages: AtomicI64,
    /// Times the thread restarted the WAL itself after a complete checkpoint (so that the
    /// next writer does not).
    pub restarts: AtomicU64,
}

/// The checkpoint thread; stops and is joined on drop.
#[derive(Debug)]
pub(crate) struct Checkpointer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    pub(crate) stats: Arc<WalStats>,
}

impl Checkpointer {
    /// Opens a second connection to the database at `path` and starts checkpointing it;
    /// `writer` is the store's own connection, for the write that restarts the WAL.
    /// `Ok(None)` when no thread could be started (the writer then checkpoints itself).
    pub(crate) fn start(
        path: &Path,
        writer: Weak<Mutex<Connection>>,
    ) -> rusqlite::Result<Option<Self>> {
        let conn = Connection::open(path)?;
        // A checkpoint waits for nobody: a busy database is tried again next time.
        conn.busy_timeout(Duration::ZERO)?;
        let stats = Arc::new(WalStats::default());
        let (stop, stopped) = mpsc::channel::<()>();
        let s = Arc::clone(&stats);
        let thread = std::thread::Builder::new()
            .name("hangar-store-wal".into())
            .spawn(move || {
                // `PRAGMA data_version` right after this thread restarted the WAL: while it
                // reads the same, nothing else was committed since.
                let mut quiet: Option<i64> = None;
                loop {
                    let last = match stopped.recv_timeout(CHECKPOINT_EVERY) {
                        Err(RecvTimeoutError::Timeout) => false,
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => true,
                    };
                    if !last && quiet.is_some() && data_version(&conn) == quiet {
                        continue;
                    }
                    quiet = None;
                    if checkpoint(&conn, &s) && !last {
                        quiet = restart(&conn, &writer, &s);
                    }
                    if last {
                        return;
                    }
                }
            });
        match thread {
            Ok(thread) => Ok(Some(Self {
                stop: Some(stop),
                thread: Some(thread),
                stats,
            })),
            Err(e) => {
                eprintln!("hangar-store: no WAL checkpoint thread ({e}): commits checkpoint");
                Ok(None)
            }
        }
    }
}

fn data_version(conn: &Connection) -> Option<i64> {
    conn.query_row("PRAGMA data_version", [], |r| r.get(0)).ok()
}

/// The first write into a WAL that a checkpoint copied completely: SQLite starts the WAL
/// over (a new header, synced), here rather than in the next writer's commit. Returns the
/// checkpoint connection's `data_version` just after, read while the writer's lock is still
/// held (so no other commit comes between); `None` when it did not happen (the store is
/// going away, or the write failed).
fn restart(conn: &Connection, writer: &Weak<Mutex<Connection>>, stats: &WalStats) -> Option<i64> {
    let writer = writer.upgrade()?;
    let w = writer.lock().unwrap_or_else(|p| p.into_inner());
    w.exec(
        "INSERT INTO wal_restarts (id, n) VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET n = n + 1",
        [],
    )
    .ok()?;
    stats.restarts.fetch_add(1, Ordering::Relaxed);
    data_version(conn)
}

/// One passive checkpoint; whether it copied the whole WAL (and there was one).
fn checkpoint(conn: &Connection, stats: &WalStats) -> bool {
    let r = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    });
    match r {
        // SQLITE_BUSY comes as a row (busy = 1, the counts -1), not as an error.
        Ok((busy, log, _)) if busy != 0 || log < 0 => {
            stats.busy.fetch_add(1, Ordering::Relaxed);
            false
        }
        Ok((_, log, copied)) => {
            stats.checkpoints.fetch_add(1, Ordering::Relaxed);
            stats.wal_pages.store(log.max(0), Ordering::Relaxed);
            stats
                .pending_pages
                .store((log - copied).max(0), Ordering::Relaxed);
            log > 0 && copied == log
        }
        Err(_) => {
            stats.failures.fetch_add(1, Ordering::Relaxed);
            false
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
