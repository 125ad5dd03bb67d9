//! `hangar-bench-rr`: TCP round trips.
//!
//! `hangar-bench-rr serve [ADDR]` echoes every connection (default `[::]:7100`, one thread per
//! connection). `hangar-bench-rr ping ADDR SECONDS [SIZE]` sends SIZE-byte messages (64) one
//! at a time over one connection (TCP_NODELAY) for SECONDS after a one-second warm-up, and
//! prints one JSON line: the number of round trips and their p50/p99/p99.9/max in µs.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
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
        _ => {
            eprintln!("usage: hangar-bench-rr serve [ADDR] | ping ADDR SECONDS [SIZE]");
            std::process::exit(2);
        }
    };
    if let Err(e) = r {
        eprintln!("hangar-bench-rr: {e}");
        std::process::exit(1);
    }
}
