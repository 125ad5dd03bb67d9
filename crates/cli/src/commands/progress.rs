//! Progress on a terminal: a spinner line under the last step, with the time it has taken
//! (and, for uploads, bytes sent). Off a terminal nothing is drawn, so logs and pipes get the
//! plain step lines only.

use std::io::{IsTerminal as _, Write as _};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

#[derive(Debug)]
struct State {
    what: String,
    since: Instant,
    drawn: bool,
}

/// A spinner on stderr while steps run (drawn only when stderr is a terminal).
#[derive(Debug)]
pub(crate) struct Spinner {
    state: Option<Arc<Mutex<State>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Spinner {
    /// A spinner showing `what` (none when stderr is not a terminal).
    pub(crate) fn start(what: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        if !std::io::stderr().is_terminal() {
            return Self {
                state: None,
                stop,
                thread: None,
            };
        }
        let state = Arc::new(Mutex::new(State {
            what: what.to_string(),
            since: Instant::now(),
            drawn: false,
        }));
        let (s, st) = (state.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("hangar-spinner".into())
            .spawn(move || {
                let mut frame = 0usize;
                while !st.load(Ordering::Acquire) {
                    {
                        let mut g = lock(&s);
                        let line = render(FRAMES[frame % FRAMES.len()], &g.what, g.since.elapsed());
                        eprint!("\r\x1b[2K{line}");
                        let _ = std::io::stderr().flush();
                        g.drawn = true;
                    }
                    frame += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
            .ok();
        Self {
            state: Some(state),
            stop,
            thread,
        }
    }

    /// Prints a line above the spinner and shows `what` next to it from now on.
    pub(crate) fn line(&self, line: &str, what: Option<&str>) {
        match &self.state {
            None => eprintln!("{line}"),
            Some(s) => {
                let mut g = lock(s);
                if g.drawn {
                    eprint!("\r\x1b[2K");
                    g.drawn = false;
                }
                eprintln!("{line}");
                if let Some(w) = what {
                    g.what = w.to_string();
                    g.since = Instant::now();
                }
            }
        }
    }

    /// Shows `what` next to the spinner (nothing off a terminal).
    pub(crate) fn set(&self, what: &str) {
        if let Some(s) = &self.state {
            lock(s).what = what.to_string();
        }
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(s) = &self.state
            && lock(s).drawn
        {
            eprint!("\r\x1b[2K");
            let _ = std::io::stderr().flush();
        }
    }
}

/// One spinner line: `⠋ waiting for machine 1234 (3.2s)`.
pub(crate) fn render(frame: char, what: &str, took: Duration) -> String {
    format!("{frame} {what} ({:.1}s)", took.as_secs_f64())
}

/// Bytes sent of a total, for uploads: `12.3 MiB / 45.6 MiB (27%)`.
pub(crate) fn bytes(sent: u64, total: u64) -> String {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    if total == 0 {
        return format!("{:.1} MiB", mib(sent));
    }
    let pct = (sent.min(total) * 100) / total;
    format!("{:.1} MiB / {:.1} MiB ({pct}%)", mib(sent), mib(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_read_well() {
        assert_eq!(
            render('⠋', "waiting for machine abc", Duration::from_millis(3250)),
            "⠋ waiting for machine abc (3.2s)"
        );
        assert_eq!(bytes(0, 0), "0.0 MiB");
        assert_eq!(
            bytes(12 * 1024 * 1024 + 300 * 1024, 48 * 1024 * 1024),
            "12.3 MiB / 48.0 MiB (25%)"
        );
        assert_eq!(bytes(10, 5), "0.0 MiB / 0.0 MiB (100%)");
    }

    #[test]
    fn off_a_terminal_nothing_is_drawn() {
        // Tests run with stderr captured: no thread, and lines pass straight through.
        let s = Spinner::start("x");
        assert!(s.thread.is_none() || std::io::stderr().is_terminal());
        s.set("y");
        drop(s);
    }
}
