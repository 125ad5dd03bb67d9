//! `hangar-bench-httpd`: the backend of `bench/proxy.sh`.
//!
//! Listens on `[::]:$PORT` (default 8080) and answers every request with the same small
//! response, keeping the connection open (HTTP/1.1; pipelined requests are answered in
//! order). Every response carries `X-Start-Ns` and `X-Listen-Ns`: `CLOCK_MONOTONIC` when
//! `main` began and when the socket was listening, so that a client on the same host can
//! split a cold start into "before the app ran", "the app's own start" and "after it
//! listened". `X-First-Accept-Ns` is when the process accepted its first connection (after a
//! wake through Hangar's proxy, that is its probe that the port accepts). With `$REPLAY` set,
//! every response is `fly-replay: $REPLAY` with an empty body (the replaying machine of the
//! `fly-replay` row); with `$REPLAY_CACHE` too, it also asks the proxy to cache that decision
//! for an hour (`fly-replay-cache: $REPLAY_CACHE`, the cached `fly-replay` row).
//!
//! std only: one thread per connection, blocking reads and writes (one `read` and one `write`
//! per request when requests are small).

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// `CLOCK_MONOTONIC` of the first accepted connection (0 until then).
static FIRST_ACCEPT: AtomicU64 = AtomicU64::new(0);

#[repr(C)]
struct Timespec {
    sec: i64,
    nsec: i64,
}

unsafe extern "C" {
    fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
}

const CLOCK_MONOTONIC: i32 = 1;

fn mono_ns() -> u64 {
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { clock_gettime(CLOCK_MONOTONIC, &mut ts) };
    ts.sec as u64 * 1_000_000_000 + ts.nsec as u64
}

fn main() {
    let t_main = mono_ns();
    let port = std::env::var("PORT").unwrap_or_else(|_| "8080".into());
    let addr = std::env::var("LISTEN").unwrap_or_else(|_| format!("[::]:{port}"));
    let listener = match TcpListener::bind(&addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("hangar-bench-httpd: bind {addr}: {e}");
            std::process::exit(1);
        }
    };
    let t_listen = mono_ns();
    // The head up to the first-accept header; the rest of the response after it.
    let cache = match std::env::var("REPLAY_CACHE") {
        Ok(c) if !c.is_empty() => {
            format!("fly-replay-cache: {c}\r\nfly-replay-cache-ttl-secs: 3600\r\n")
        }
        _ => String::new(),
    };
    let (head, tail): (Arc<str>, Arc<str>) = match std::env::var("REPLAY") {
        Ok(r) if !r.is_empty() => (
            format!(
                "HTTP/1.1 200 OK\r\nfly-replay: {r}\r\n{cache}Content-Length: 0\r\n\
                 X-Start-Ns: {t_main}\r\nX-Listen-Ns: {t_listen}\r\n"
            )
            .into(),
            "\r\n".into(),
        ),
        _ => {
            let body = "hello from hangar-bench-httpd\n";
            (
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
                     X-Start-Ns: {t_main}\r\nX-Listen-Ns: {t_listen}\r\n",
                    body.len()
                )
                .into(),
                format!("\r\n{body}").into(),
            )
        }
    };
    eprintln!(
        "hangar-bench-httpd: listening on {addr} {} µs after main",
        (t_listen - t_main) / 1000
    );
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let _ = FIRST_ACCEPT.compare_exchange(0, mono_ns(), Ordering::AcqRel, Ordering::Acquire);
        let (head, tail) = (Arc::clone(&head), Arc::clone(&tail));
        let spawned = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || {
                let first = FIRST_ACCEPT.load(Ordering::Acquire);
                let response = format!("{head}X-First-Accept-Ns: {first}\r\n{tail}");
                serve(conn, response.as_bytes());
            });
        if let Err(e) = spawned {
            eprintln!("hangar-bench-httpd: spawn: {e}");
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// What a request head says about the connection: body length and whether to close after.
fn head_facts(head: &[u8]) -> (usize, bool) {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let first = lines.next().unwrap_or("");
    let mut close = first.ends_with("HTTP/1.0");
    let mut len = 0usize;
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        if k.eq_ignore_ascii_case("content-length") {
            len = v.parse().unwrap_or(0);
        } else if k.eq_ignore_ascii_case("connection") {
            if v.eq_ignore_ascii_case("close") {
                close = true;
            } else if v.eq_ignore_ascii_case("keep-alive") {
                close = false;
            }
        }
    }
    (len, close)
}

fn serve(mut s: TcpStream, response: &[u8]) {
    let _ = s.set_nodelay(true);
    let mut buf = vec![0u8; 16 * 1024];
    let mut len = 0usize;
    let mut out = Vec::with_capacity(response.len() * 4);
    loop {
        let mut off = 0usize;
        let mut close = false;
        while let Some(end) = find(&buf[off..len], b"\r\n\r\n") {
            let (body, c) = head_facts(&buf[off..off + end]);
            let need = end + 4 + body;
            if off + need > len {
                break;
            }
            out.extend_from_slice(response);
            off += need;
            if c {
                close = true;
                break;
            }
        }
        if !out.is_empty() {
            if s.write_all(&out).is_err() {
                return;
            }
            out.clear();
        }
        if close {
            return;
        }
        buf.copy_within(off..len, 0);
        len -= off;
        if len == buf.len() {
            let _ = s.write_all(b"HTTP/1.1 431 Request Header Fields Too Large\r\n\r\n");
            return;
        }
        match s.read(&mut buf[len..]) {
            Ok(0) => return,
            Ok(n) => len += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}
