//! A steady HTTP load for "no request fails while…" tests: 100 `GET /` a second through a
//! proxy listener, each on a new connection, counting what was sent, what failed and the
//! bodies seen.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// `GET /` with `Host: host` on a new connection: status and body (10 s at most).
pub async fn get(addr: SocketAddr, host: &str) -> Result<(u16, String), String> {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    s.write_all(format!("GET / HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .map_err(|_| "timeout".to_string())?
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// What a [`Load`] saw.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Requests sent.
    pub sent: usize,
    /// Every request that did not get a 200, with what it got.
    pub failures: Vec<String>,
    /// Bodies of the 200s (trimmed), and how often each came.
    pub bodies: HashMap<String, usize>,
}

/// 100 requests a second until [`Load::finish`].
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    bodies: Arc<Mutex<HashMap<String, usize>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    /// Starts sending to `addr` with `Host: host`.
    pub fn start(addr: SocketAddr, host: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let bodies = Arc::new(Mutex::new(HashMap::new()));
        let (s, n, f, b) = (stop.clone(), sent.clone(), failures.clone(), bodies.clone());
        let host = host.to_string();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let mut inflight = tokio::task::JoinSet::new();
            while !s.load(Ordering::Acquire) {
                tick.tick().await;
                n.fetch_add(1, Ordering::Relaxed);
                let (f, b, host) = (f.clone(), b.clone(), host.clone());
                inflight.spawn(async move {
                    match get(addr, &host).await {
                        Ok((200, body)) => {
                            *b.lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .entry(body.trim().to_string())
                                .or_insert(0) += 1;
                        }
                        other => f
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(format!("{other:?}")),
                    }
                });
                while inflight.try_join_next().is_some() {}
            }
            while inflight.join_next().await.is_some() {}
        });
        Load {
            stop,
            sent,
            failures,
            bodies,
            task,
        }
    }

    /// Stops, waits for the requests in flight, and says what happened.
    pub async fn finish(self) -> LoadReport {
        self.stop.store(true, Ordering::Release);
        let _ = self.task.await;
        LoadReport {
            sent: self.sent.load(Ordering::Relaxed),
            failures: self
                .failures
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            bodies: self
                .bodies
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}
