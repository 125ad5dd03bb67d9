//! Websockets through the proxy: the two connections are spliced as bytes, but the machine's
//! direction is followed frame by frame (RFC 6455 §5.2), so that when the machine goes away
//! (stopped, suspended, replaced or destroyed, or the proxy shutting down) the client gets a
//! close frame with 1001 "going away" at a frame boundary instead of a torn connection
//! (PLATFORM.md §3.7: graceful autostop closes websockets with a close frame).

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::balance::Load;

/// The close frame the proxy sends (server → client, unmasked): 1001 "going away".
pub const GOING_AWAY: [u8; 4] = [0x88, 0x02, 0x03, 0xe9];

/// How long a frame in progress may take to finish before the connection is just closed, and
/// how long the client has to answer the close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Where a byte stream of websocket frames is: inside a header, inside a payload, or between
/// frames.
#[derive(Debug, Default, Clone)]
pub struct Frames {
    header: [u8; 14],
    have: usize,
    remaining: u64,
    /// A close frame passed.
    pub closed: bool,
}

impl Frames {
    /// Follows `data`, the next bytes of the stream.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = self.remaining.min(data.len() as u64);
                self.remaining -= n;
                data = &data[n as usize..];
                continue;
            }
            self.header[self.have] = data[0];
            self.have += 1;
            data = &data[1..];
            if self.have < 2 {
                continue;
            }
            let len7 = self.header[1] & 0x7f;
            let ext = match len7 {
                126 => 2,
                127 => 8,
                _ => 0,
            };
            let mask = if self.header[1] & 0x80 != 0 { 4 } else { 0 };
            if self.have < 2 + ext + mask {
                continue;
            }
            let len = match ext {
                0 => u64::from(len7),
                2 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
                _ => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&self.header[2..10]);
                    u64::from_be_bytes(b)
                }
            };
            if self.header[0] & 0x0f == 0x8 {
                self.closed = true;
            }
            self.remaining = len;
            self.have = 0;
        }
    }

    /// Between two frames: a frame may be inserted here.
    pub fn at_boundary(&self) -> bool {
        self.have == 0 && self.remaining == 0
    }
}

/// Splices a client's websocket with the machine's until either side closes; when the machine
/// goes away ([`Load::go_away`], before or during the splice) the client gets [`GOING_AWAY`]
/// at the next frame boundary (waited for at most a second), a second to answer, and then the
/// connection closes. The same happens when the machine's side ends without a close frame of
/// its own while it is going away. Once the machine is going away every wait is bounded: a
/// frozen machine that sent its own close frame, or a client that stopped reading, ends the
/// splice after [`CLOSE_GRACE`]. Marks activity on `load` at least every second.
pub async fn splice<C, B>(client: C, backend: B, load: &Load) -> std::io::Result<()>
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let mut away = load.away();
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut br, mut bw) = tokio::io::split(backend);
    let up = async {
        let r = tokio::io::copy(&mut cr, &mut bw).await;
        let _ = bw.shutdown().await;
        r
    };
    tokio::pin!(up);
    let mut up_done = false;
    let mut frames = Frames::default();
    let mut buf = vec![0u8; 16 * 1024];
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // Gone away before the splice began (the switch took a while): closing from the start.
    let mut closing: Option<tokio::time::Instant> =
        load.is_going_away().then(tokio::time::Instant::now);
    loop {
        if let Some(since) = closing {
            let graced = since.elapsed() >= CLOSE_GRACE;
            if !frames.closed && frames.at_boundary() {
                let sent = tokio::time::timeout(CLOSE_GRACE, async {
                    cw.write_all(&GOING_AWAY).await?;
                    cw.flush().await
                })
                .await;
                // The client's answer goes to the machine (if it still listens), bounded.
                if matches!(sent, Ok(Ok(()))) && !up_done {
                    let _ = tokio::time::timeout(CLOSE_GRACE, &mut up).await;
                }
                let _ = tokio::time::timeout(CLOSE_GRACE, cw.shutdown()).await;
                load.touch();
                return Ok(());
            }
            if graced {
                // A frame that did not finish in time, or the machine's own close frame
                // that the client has not answered: the connection just closes.
                let _ = tokio::time::timeout(CLOSE_GRACE, cw.shutdown()).await;
                load.touch();
                return Ok(());
            }
        }
        let grace_end = closing.map(|since| since + CLOSE_GRACE);
        tokio::select! {
            r = &mut up, if !up_done => {
                up_done = true;
                load.touch();
                r?;
            }
            r = br.read(&mut buf) => {
                let n = r?;
                load.touch();
                if n == 0 {
                    if load.is_going_away() && !frames.closed && frames.at_boundary() {
                        closing.get_or_insert_with(tokio::time::Instant::now);
                        continue;
                    }
                    let _ = tokio::time::timeout(CLOSE_GRACE, cw.shutdown()).await;
                    if !up_done {
                        let _ = tokio::time::timeout(CLOSE_GRACE, &mut up).await;
                    }
                    return Ok(());
                }
                frames.feed(&buf[..n]);
                // A client that stops reading holds this write; the machine going away
                // meanwhile bounds it.
                let write = cw.write_all(&buf[..n]);
                tokio::pin!(write);
                loop {
                    let grace_end = closing.map(|since| since + CLOSE_GRACE);
                    tokio::select! {
                        r = &mut write => {
                            r?;
                            break;
                        }
                        r = away.changed(), if closing.is_none() => {
                            if r.is_ok() {
                                closing = Some(tokio::time::Instant::now());
                            }
                        }
                        () = sleep_until(grace_end), if grace_end.is_some() => {
                            load.touch();
                            return Ok(());
                        }
                    }
                }
            }
            () = sleep_until(grace_end), if grace_end.is_some() => {}
            r = away.changed(), if closing.is_none() => {
                if r.is_ok() {
                    closing = Some(tokio::time::Instant::now());
                }
            }
            _ = tick.tick() => load.touch(),
        }
    }
}

/// Sleeps until `at` (never, for `None`; the caller's `select!` guard keeps that branch off).
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(opcode: u8, payload: &[u8], mask: bool) -> Vec<u8> {
        let mut f = vec![0x80 | opcode];
        let m = if mask { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => f.push(m | n as u8),
            n if n <= 0xffff => {
                f.push(m | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(m | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if mask {
            f.extend_from_slice(&[1, 2, 3, 4]);
        }
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn follows_frames_of_every_length_split_anywhere() {
        let mut stream = Vec::new();
        let mut ends = Vec::new();
        for (op, len, mask) in [
            (1, 0, false),
            (2, 5, true),
            (1, 125, false),
            (2, 126, false),
            (2, 70_000, true),
            (9, 3, false),
        ] {
            stream.extend(frame(op, &vec![7u8; len], mask));
            ends.push(stream.len());
        }
        for chunk in [1, 2, 3, 7, 100, 4096, stream.len()] {
            let mut f = Frames::default();
            let mut pos = 0;
            for c in stream.chunks(chunk) {
                f.feed(c);
                pos += c.len();
                assert_eq!(
                    f.at_boundary(),
                    ends.contains(&pos),
                    "chunk {chunk} at {pos}"
                );
            }
            assert!(!f.closed);
        }
    }

    /// Runs `splice` over in-memory pipes (the machine already going away if `gone`):
    /// returns the test's ends of the client and machine connections, the machine's load and
    /// the splice's task.
    fn spliced(
        pipe: usize,
        gone: bool,
    ) -> (
        tokio::io::DuplexStream,
        tokio::io::DuplexStream,
        std::sync::Arc<Load>,
        tokio::task::JoinHandle<std::io::Result<()>>,
    ) {
        let (client, client_end) = tokio::io::duplex(pipe);
        let (machine, machine_end) = tokio::io::duplex(pipe);
        let loads = crate::balance::Loads::default();
        let load = loads.get("m");
        if gone {
            load.go_away();
        }
        let l = std::sync::Arc::clone(&load);
        let task = tokio::spawn(async move { splice(client, machine, &l).await });
        (client_end, machine_end, load, task)
    }

    async fn ends_within(task: tokio::task::JoinHandle<std::io::Result<()>>, what: &str) {
        tokio::time::timeout(Duration::from_secs(4), task)
            .await
            .unwrap_or_else(|_| panic!("{what}: the splice did not end"))
            .expect("join")
            .expect("splice");
    }

    #[tokio::test]
    async fn a_frozen_machine_that_closed_first_does_not_hold_the_splice() {
        let (mut client, mut machine, load, task) = spliced(4096, false);
        // The machine closes (its own close frame), then is frozen: its socket stays open.
        machine.write_all(&[0x88, 0x00]).await.expect("write");
        let mut got = [0u8; 2];
        client.read_exact(&mut got).await.expect("read");
        assert_eq!(got, [0x88, 0x00]);
        load.go_away();
        ends_within(task, "closed, then gone away").await;
        drop(machine);
    }

    #[tokio::test]
    async fn a_machine_gone_before_the_splice_began_still_sends_going_away() {
        let (mut client, _machine, load, task) = spliced(4096, true);
        let mut got = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(2), client.read_exact(&mut got))
            .await
            .expect("a close frame in time")
            .expect("read");
        assert_eq!(got, GOING_AWAY);
        drop(client);
        ends_within(task, "gone before").await;
        assert!(load.is_going_away());
    }

    #[tokio::test]
    async fn a_client_that_stopped_reading_does_not_hold_the_splice_once_the_machine_goes() {
        let (_client_not_reading, mut machine, load, task) = spliced(1024, false);
        // More than the pipe holds: the proxy's write to the client blocks.
        let flood = frame(2, &[7u8; 32 * 1024], false);
        let writer = tokio::spawn(async move {
            let _ = machine.write_all(&flood).await;
            machine
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!task.is_finished());
        load.go_away();
        ends_within(task, "client not reading").await;
        drop(writer);
    }

    #[test]
    fn sees_a_close_frame() {
        let mut f = Frames::default();
        f.feed(&frame(1, b"hi", false));
        assert!(!f.closed);
        f.feed(&GOING_AWAY);
        assert!(f.closed && f.at_boundary());
    }
}
