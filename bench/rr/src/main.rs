//! `hangar-bench-rr`: TCP and UDP round trips.
//!
//! `hangar-bench-rr serve [ADDR]` echoes every connection (default `[::]:7100`, one thread per
//! connection). `hangar-bench-rr ping ADDR SECONDS [SIZE]` sends SIZE-byte messages (64) one
//! at a time over one connection (TCP_NODELAY) for SECONDS after a one-second warm-up, and
//! prints one JSON line: the number of round trips and their p50/p99/p99.9/max in µs.
//!
//! `hangar-bench-rr userve [ADDR]` echoes every UDP datagram (default `[::]:5353`, one
//! thread). `hangar-bench-rr uping ADDR SECONDS [SIZE] [FLOWS]` runs FLOWS (1) threads, each
//! with its own socket (its own flow through a proxy), each sending SIZE-byte datagrams (64)
//! one at a time and waiting for the echo (a datagram not answered within 200 ms is counted
//! lost and the next one sent), for SECONDS after a one-second warm-up; one JSON line: round
//! trips, round trips per second, p50/p99/p99.9/max in µs, lost.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant};

fn serve(addr: &str) -> std::io::Result<()> {
    let l = TcpListener::bind(addr)?;
    for s in l.incoming() {
        let Ok(mut s) = s else { continue };
        std::thread::spawn(move || {
            let _ = s.set_nodelay(true);
            let mut buf = [0u8; 65536];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if s.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
    Ok(())
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let k = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[k - 1] as f64 / 1000.0
}

fn ping(addr: &str, secs: f64, size: usize) -> std::io::Result<()> {
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    let msg = vec![7u8; size];
    let mut back = vec![0u8; size];
    let mut samples = Vec::with_capacity(1 << 20);
    let warm = Instant::now() + Duration::from_secs(1);
    let mut end = None;
    loop {
        let t = Instant::now();
        s.write_all(&msg)?;
        s.read_exact(&mut back)?;
        let now = Instant::now();
        if now < warm {
            continue;
        }
        let end = *end.get_or_insert(now + Duration::from_secs_f64(secs));
        if now >= end {
            break;
        }
        samples.push(now.duration_since(t).as_nanos() as u64);
    }
    samples.sort_unstable();
    println!(
        "{{\"n\": {}, \"p50\": {:.1}, \"p99\": {:.1}, \"p999\": {:.1}, \"max\": {:.1}}}",
        samples.len(),
        pct(&samples, 50.0),
        pct(&samples, 99.0),
        pct(&samples, 99.9),
        samples.last().map_or(f64::NAN, |m| *m as f64 / 1000.0)
    );
    Ok(())
}

fn userve(addr: &str) -> std::io::Result<()> {
    let s = UdpSocket::bind(addr)?;
    let mut buf = [0u8; 65536];
    loop {
        let (n, from) = s.recv_from(&mut buf)?;
        let _ = s.send_to(&buf[..n], from);
    }
}

/// One flow's round trips after the warm-up (ns), and its lost datagrams.
fn uflow(
    to: SocketAddr,
    warm: Instant,
    end: Instant,
    size: usize,
) -> std::io::Result<(Vec<u64>, u64)> {
    let any: SocketAddr = if to.is_ipv6() {
        "[::]:0".parse().expect("addr")
    } else {
        "0.0.0.0:0".parse().expect("addr")
    };
    let s = UdpSocket::bind(any)?;
    s.connect(to)?;
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut msg = vec![7u8; size.max(8)];
    let mut back = vec![0u8; msg.len() + 8];
    let mut samples = Vec::with_capacity(1 << 18);
    let mut lost = 0;
    let mut seq: u64 = 0;
    loop {
        seq += 1;
        msg[..8].copy_from_slice(&seq.to_le_bytes());
        let t = Instant::now();
        s.send(&msg)?;
        // An echo of an earlier (late) datagram is skipped.
        let answered = loop {
            match s.recv(&mut back) {
                Ok(n) if n >= 8 && back[..8] == seq.to_le_bytes() => break true,
                Ok(_) => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break false;
                }
                // Refused (nothing bound yet): as lost, after the timeout's worth of waiting.
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(200));
                    break false;
                }
            }
        };
        let now = Instant::now();
        if now >= end {
            return Ok((samples, lost));
        }
        if now < warm {
            continue;
        }
        if answered {
            samples.push(now.duration_since(t).as_nanos() as u64);
        } else {
            lost += 1;
        }
    }
}

fn uping(addr: &str, secs: f64, size: usize, flows: usize) -> std::io::Result<()> {
    let to = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other("no address"))?;
    let warm = Instant::now() + Duration::from_secs(1);
    let end = warm + Duration::from_secs_f64(secs);
    let threads: Vec<_> = (0..flows.max(1))
        .map(|_| std::thread::spawn(move || uflow(to, warm, end, size)))
        .collect();
    let mut samples = Vec::new();
    let mut lost = 0;
    for t in threads {
        let (s, l) = t
            .join()
            .map_err(|_| std::io::Error::other("flow panicked"))??;
        samples.extend(s);
        lost += l;
    }
    samples.sort_unstable();
    println!(
        "{{\"n\": {}, \"rps\": {:.1}, \"p50\": {:.1}, \"p99\": {:.1}, \"p999\": {:.1}, \"max\": {:.1}, \"lost\": {}}}",
        samples.len(),
        samples.len() as f64 / secs,
        pct(&samples, 50.0),
        pct(&samples, 99.0),
        pct(&samples, 99.9),
        samples.last().map_or(f64::NAN, |m| *m as f64 / 1000.0),
        lost
    );
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["serve"] => serve("[::]:7100"),
        ["serve", addr] => serve(addr),
        ["ping", addr, secs] => ping(addr, secs.parse().unwrap_or(5.0), 64),
        ["ping", addr, secs, size] => ping(
            addr,
            secs.parse().unwrap_or(5.0),
            size.parse().unwrap_or(64).max(1),
        ),
        ["userve"] => userve("[::]:5353"),
        ["userve", addr] => userve(addr),
        ["uping", addr, secs, ref rest @ ..] if rest.len() <= 2 => uping(
            addr,
            secs.parse().unwrap_or(5.0),
            rest.first()
                .and_then(|s| s.parse().ok())
                .unwrap_or(64)
                .max(1),
            rest.get(1).and_then(|s| s.parse().ok()).unwrap_or(1),
        ),
        _ => {
            eprintln!(
                "usage: hangar-bench-rr serve [ADDR] | ping ADDR SECONDS [SIZE] | userve [ADDR] | uping ADDR SECONDS [SIZE] [FLOWS]"
            );
            std::process::exit(2);
        }
    };
    if let Err(e) = r {
        eprintln!("hangar-bench-rr: {e}");
        std::process::exit(1);
    }
}
