//! The cross-platform userspace API of WireGuard (wireguard.com/xplatform): a Unix socket at
//! `/var/run/wireguard/<interface>.sock` speaking `get=1` and `set=1` in `key=value` lines,
//! so Debian's `wg` and `wg-quick` drive a Hangar device exactly as they drive wireguard-go.
//!
//! A `set` request is parsed whole and checked before anything is applied, so a bad request
//! changes nothing (`errno=22`). Bounds: lines of at most [`MAX_LINE`] bytes, requests of at
//! most [`MAX_REQUEST_LINES`] lines, [`MAX_CONNECTIONS`] connections at once, each closed
//! after [`IDLE`] without a request.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::device::{Device, PeerConfig};
use crate::key::Key;
use crate::{Error, Result};

/// Where userspace WireGuard implementations put their sockets.
pub const SOCKET_DIR: &str = "/var/run/wireguard";
/// Longest line of a request.
pub const MAX_LINE: usize = 4096;
/// Most lines in one request.
pub const MAX_REQUEST_LINES: usize = 100_000;
/// Connections served at once; more are closed.
pub const MAX_CONNECTIONS: usize = 16;
/// A connection without a complete request for this long is closed.
pub const IDLE: Duration = Duration::from_secs(10);

const EINVAL: i32 = 22;
const EIO: i32 = 5;

/// The socket path of interface `name`.
pub fn socket_path(name: &str) -> PathBuf {
    Path::new(SOCKET_DIR).join(format!("{name}.sock"))
}

/// One peer section of a `set`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerSet {
    /// The peer.
    pub public_key: Option<Key>,
    /// `remove=true`.
    pub remove: bool,
    /// `update_only=true`: change it only if it exists.
    pub update_only: bool,
    /// `preshared_key=` (all zero: none).
    pub preshared_key: Option<Key>,
    /// `endpoint=`.
    pub endpoint: Option<SocketAddr>,
    /// `persistent_keepalive_interval=`.
    pub keepalive: Option<u16>,
    /// `replace_allowed_ips=true`.
    pub replace_allowed_ips: bool,
    /// `allowed_ip=` lines.
    pub allowed_ips: Vec<(IpAddr, u8)>,
}

/// A parsed `set=1` request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetRequest {
    /// `private_key=` (all zero: none).
    pub private_key: Option<Key>,
    /// `listen_port=`.
    pub listen_port: Option<u16>,
    /// `fwmark=`.
    pub fwmark: Option<u32>,
    /// `replace_peers=true`.
    pub replace_peers: bool,
    /// Peer sections, in order.
    pub peers: Vec<PeerSet>,
}

fn flag(key: &str, v: &str) -> std::result::Result<bool, String> {
    match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("{key}: expected true or false, got '{v}'")),
    }
}

/// Parses `a.b.c.d/n` or `x::y/n` (host bits cleared).
pub fn parse_prefix(v: &str) -> std::result::Result<(IpAddr, u8), String> {
    let (ip, len) = v
        .split_once('/')
        .ok_or_else(|| format!("allowed_ip '{v}': expected ADDRESS/PREFIX"))?;
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| format!("allowed_ip '{v}': bad address"))?;
    let len: u8 = len
        .parse()
        .map_err(|_| format!("allowed_ip '{v}': bad prefix length"))?;
    let masked = match ip {
        IpAddr::V4(a) if len <= 32 => {
            let mask = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len))
            };
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) if len <= 128 => {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len))
            };
            IpAddr::V6((u128::from(a) & mask).into())
        }
        _ => return Err(format!("allowed_ip '{v}': prefix length too long")),
    };
    Ok((masked, len))
}

/// Parses the lines of a `set=1` request (after `set=1`, without the blank line).
pub fn parse_set(lines: &[String]) -> std::result::Result<SetRequest, String> {
    let mut req = SetRequest::default();
    let mut peer: Option<PeerSet> = None;
    for line in lines {
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| format!("'{line}': expected key=value"))?;
        let key_of = |v: &str| Key::from_hex(v).map_err(|e| format!("{k}: {e}"));
        match (k, peer.as_mut()) {
            ("public_key", _) => {
                if let Some(p) = peer.take() {
                    req.peers.push(p);
                }
                peer = Some(PeerSet {
                    public_key: Some(key_of(v)?),
                    ..PeerSet::default()
                });
            }
            ("private_key", None) => req.private_key = Some(key_of(v)?),
            ("listen_port", None) => {
                req.listen_port = Some(v.parse().map_err(|_| format!("listen_port '{v}'"))?)
            }
            ("fwmark", None) => {
                req.fwmark = Some(if v.is_empty() {
                    0
                } else {
                    v.parse().map_err(|_| format!("fwmark '{v}'"))?
                })
            }
            ("replace_peers", None) => req.replace_peers = flag(k, v)?,
            ("remove", Some(p)) => p.remove = flag(k, v)?,
            ("update_only", Some(p)) => p.update_only = flag(k, v)?,
            ("preshared_key", Some(p)) => p.preshared_key = Some(key_of(v)?),
            ("endpoint", Some(p)) => {
                p.endpoint = Some(
                    v.parse()
                        .map_err(|_| format!("endpoint '{v}': expected IP:PORT or [IPv6]:PORT"))?,
                )
            }
            ("persistent_keepalive_interval", Some(p)) => {
                p.keepalive = Some(
                    v.parse()
                        .map_err(|_| format!("persistent_keepalive_interval '{v}'"))?,
                )
            }
            ("replace_allowed_ips", Some(p)) => p.replace_allowed_ips = flag(k, v)?,
            ("allowed_ip", Some(p)) => p.allowed_ips.push(parse_prefix(v)?),
            ("protocol_version", Some(_)) if v == "1" => {}
            ("protocol_version", Some(_)) => return Err(format!("protocol_version {v}")),
            (_, _) => return Err(format!("unexpected key '{k}'")),
        }
    }
    if let Some(p) = peer.take() {
        req.peers.push(p);
    }
    Ok(req)
}

/// Applies a checked `set` to `device`.
pub fn apply(device: &Device, req: SetRequest) -> Result<()> {
    if let Some(k) = req.private_key {
        device.set_private_key(Some(k));
    }
    if let Some(p) = req.listen_port {
        device.set_listen_port(p)?;
    }
    if let Some(m) = req.fwmark {
        device.set_fwmark(m)?;
    }
    if req.replace_peers {
        device.clear_peers();
    }
    let current = device.peers();
    for p in req.peers {
        let Some(key) = p.public_key else { continue };
        if p.remove {
            device.remove_peer(&key);
            continue;
        }
        let old = current.iter().find(|s| s.config.public_key == key);
        if p.update_only && old.is_none() {
            continue;
        }
        let mut allowed = match (old, p.replace_allowed_ips) {
            (Some(o), false) => o.config.allowed_ips.clone(),
            _ => Vec::new(),
        };
        for a in p.allowed_ips {
            if !allowed.contains(&a) {
                allowed.push(a);
            }
        }
        device.set_peer(PeerConfig {
            public_key: key,
            preshared_key: match p.preshared_key {
                Some(k) if k.is_zero() => None,
                Some(k) => Some(k),
                None => old.and_then(|o| o.config.preshared_key),
            },
            endpoint: p.endpoint.or(old.and_then(|o| o.config.endpoint)),
            allowed_ips: allowed,
            keepalive: match p.keepalive {
                Some(0) => None,
                Some(k) => Some(k),
                None => old.and_then(|o| o.config.keepalive),
            },
        })?;
    }
    Ok(())
}

/// The answer to `get=1` (without the final `errno` line).
pub fn get(device: &Device) -> String {
    let mut s = String::new();
    if let Some(k) = device.private_key() {
        s.push_str(&format!("private_key={}\n", k.to_hex()));
    }
    s.push_str(&format!("listen_port={}\n", device.listen_addr().port()));
    if let Some(m) = device.fwmark() {
        s.push_str(&format!("fwmark={m}\n"));
    }
    for p in device.peers() {
        let c = &p.config;
        s.push_str(&format!("public_key={}\n", c.public_key.to_hex()));
        if let Some(k) = c.preshared_key {
            s.push_str(&format!("preshared_key={}\n", k.to_hex()));
        }
        s.push_str("protocol_version=1\n");
        if let Some(e) = c.endpoint {
            s.push_str(&format!("endpoint={e}\n"));
        }
        let (sec, nsec) = p
            .last_handshake
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or((0, 0), |d| (d.as_secs(), d.subsec_nanos()));
        s.push_str(&format!(
            "last_handshake_time_sec={sec}\nlast_handshake_time_nsec={nsec}\n"
        ));
        s.push_str(&format!(
            "tx_bytes={}\nrx_bytes={}\n",
            p.tx_bytes, p.rx_bytes
        ));
        s.push_str(&format!(
            "persistent_keepalive_interval={}\n",
            c.keepalive.unwrap_or(0)
        ));
        for (ip, len) in &c.allowed_ips {
            s.push_str(&format!("allowed_ip={ip}/{len}\n"));
        }
    }
    s
}

/// Answers one request (its lines, the first being `get=1` or `set=1`).
pub fn handle(device: &Device, lines: &[String]) -> String {
    match lines.first().map(String::as_str) {
        Some("get=1") if lines.len() == 1 => format!("{}errno=0\n\n", get(device)),
        Some("set=1") => match parse_set(&lines[1..]) {
            Ok(req) => match apply(device, req) {
                Ok(()) => "errno=0\n\n".into(),
                Err(e) => {
                    eprintln!("{}: uapi set: {e}", device.name());
                    format!("errno={EIO}\n\n")
                }
            },
            Err(e) => {
                eprintln!("{}: uapi set: {e}", device.name());
                format!("errno={EINVAL}\n\n")
            }
        },
        _ => format!("errno={EINVAL}\n\n"),
    }
}

/// The socket of a device; removed when dropped.
#[derive(Debug)]
pub struct UapiSocket {
    path: PathBuf,
    listener: Option<UnixListener>,
}

impl UapiSocket {
    /// Binds `/var/run/wireguard/<name>.sock` (replacing a stale one), mode 0600.
    pub fn bind(name: &str) -> Result<Self> {
        Self::bind_at(&socket_path(name))
    }

    /// Binds at `path`.
    pub fn bind_at(path: &Path) -> Result<Self> {
        use std::os::unix::fs::PermissionsExt as _;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).map_err(|e| Error::io(path, e))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::io(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            listener: Some(listener),
        })
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves `device` until `shutdown` resolves (then removes the socket).
    pub async fn serve(
        mut self,
        device: Arc<Device>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let Some(listener) = self.listener.take() else {
            return;
        };
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        let mut conns = tokio::task::JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                a = listener.accept() => {
                    let Ok((stream, _)) = a else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        drop(stream);
                        continue;
                    };
                    let device = device.clone();
                    conns.spawn(async move {
                        let _permit = permit;
                        let _ = connection(&device, stream).await;
                    });
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
        conns.shutdown().await;
    }
}

impl Drop for UapiSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Reads one line of at most [`MAX_LINE`] bytes (without its newline); `None` at EOF.
async fn read_line(r: &mut BufReader<UnixStream>) -> std::io::Result<Option<String>> {
    let mut buf = Vec::new();
    let n = (&mut *r)
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut buf)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "line too long or cut",
        ));
    }
    buf.pop();
    String::from_utf8(buf)
        .map(Some)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8"))
}

async fn connection(device: &Device, stream: UnixStream) -> std::io::Result<()> {
    let mut r = BufReader::new(stream);
    loop {
        let mut lines = Vec::new();
        loop {
            let line = match tokio::time::timeout(IDLE, read_line(&mut r)).await {
                Ok(l) => l?,
                Err(_) => return Ok(()),
            };
            match line {
                None => return Ok(()),
                Some(l) if l.is_empty() => break,
                Some(l) => {
                    if lines.len() >= MAX_REQUEST_LINES {
                        r.get_mut()
                            .write_all(format!("errno={EINVAL}\n\n").as_bytes())
                            .await?;
                        return Ok(());
                    }
                    lines.push(l);
                }
            }
        }
        if lines.is_empty() {
            continue;
        }
        let answer = handle(device, &lines);
        r.get_mut().write_all(answer.as_bytes()).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(s: &str) -> Vec<String> {
        s.lines().map(str::to_string).collect()
    }

    #[test]
    fn set_requests_parse_whole_or_not_at_all() {
        let k = Key::generate().expect("key").public();
        let req = parse_set(&lines(&format!(
            "private_key={}\nlisten_port=51820\nreplace_peers=true\npublic_key={}\n\
             endpoint=[fd00::1]:51820\npersistent_keepalive_interval=15\nreplace_allowed_ips=true\n\
             allowed_ip=fdaa:0:1::5/48\nallowed_ip=10.0.0.0/8\nprotocol_version=1",
            k.to_hex(),
            k.to_hex()
        )))
        .expect("parse");
        assert_eq!(req.listen_port, Some(51820));
        assert!(req.replace_peers);
        assert_eq!(req.peers.len(), 1);
        let p = &req.peers[0];
        assert_eq!(p.keepalive, Some(15));
        assert_eq!(
            p.allowed_ips,
            vec![
                ("fdaa:0:1::".parse().expect("ip"), 48),
                ("10.0.0.0".parse().expect("ip"), 8)
            ]
        );
        assert_eq!(p.endpoint, Some("[fd00::1]:51820".parse().expect("addr")));
        for bad in [
            "listen_port=x",
            "private_key=zz",
            "endpoint=1.2.3.4:5",
            "allowed_ip=fdaa::/48",
            &format!("public_key={}\nallowed_ip=fdaa::/129", k.to_hex()),
            &format!("public_key={}\nallowed_ip=fdaa::", k.to_hex()),
            &format!("public_key={}\nremove=yes", k.to_hex()),
            &format!("public_key={}\nprotocol_version=2", k.to_hex()),
            "nonsense",
            "what=1",
        ] {
            assert!(parse_set(&lines(bad)).is_err(), "{bad}");
        }
    }
}
