//! `hangar-wg`: a userspace WireGuard interface for hosts without the kernel module (laptops,
//! CI), driven by Debian's `wg` and `wg-quick` through the UAPI socket:
//!
//! ```text
//! WG_QUICK_USERSPACE_IMPLEMENTATION=hangar-wg wg-quick up ./laptop.conf
//! ```
//!
//! `hangar-wg [-f|--foreground] <interface>` creates the TUN interface and
//! `/var/run/wireguard/<interface>.sock`, then (unless `--foreground`) returns once both exist,
//! leaving the device running in the background, as wireguard-go does. It stops on SIGINT or
//! SIGTERM, when its socket is removed (what `wg-quick down` does) or when its interface goes.
//! In the background it logs to the file `HANGAR_WG_LOG` names, if any.

use std::process::ExitCode;
use std::time::Duration;

use hangar_wireguard::uapi::{UapiSocket, socket_path};
use hangar_wireguard::{Device, DeviceConfig};

const FOREGROUND_ENV: &str = "HANGAR_WG_FOREGROUND";
const LOG_ENV: &str = "HANGAR_WG_LOG";

fn usage() -> ExitCode {
    eprintln!("usage: hangar-wg [-f|--foreground] <interface>");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut foreground = std::env::var_os(FOREGROUND_ENV).is_some();
    let mut name = None;
    for a in std::env::args().skip(1) {
        match a.as_str() {
            "-f" | "--foreground" => foreground = true,
            "-h" | "--help" => return usage(),
            s if s.starts_with('-') => return usage(),
            s if name.is_none() => name = Some(s.to_string()),
            _ => return usage(),
        }
    }
    let Some(name) = name else { return usage() };
    if !hangar_wireguard::device::valid_name(&name) {
        eprintln!("hangar-wg: invalid interface name '{name}'");
        return ExitCode::from(2);
    }
    if !foreground {
        return background(&name);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hangar-wg: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(&name)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hangar-wg: {e}");
            ExitCode::from(1)
        }
    }
}

/// Starts itself in the foreground in a session of its own and returns once the socket is
/// there (or the child failed).
fn background(name: &str) -> ExitCode {
    use std::os::unix::process::CommandExt as _;
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("hangar-wg: {e}");
            return ExitCode::from(1);
        }
    };
    let path = socket_path(name);
    let _ = std::fs::remove_file(&path);
    // The device must not hold its caller's output open (wg-quick's caller waits for it to
    // close): it logs to HANGAR_WG_LOG when set, else nowhere.
    let log = match std::env::var_os(LOG_ENV) {
        Some(p) => match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
        {
            Ok(f) => std::process::Stdio::from(f),
            Err(e) => {
                eprintln!("hangar-wg: {}: {e}", std::path::Path::new(&p).display());
                return ExitCode::from(1);
            }
        },
        None => std::process::Stdio::null(),
    };
    let mut child = match std::process::Command::new(exe)
        .arg(name)
        .env(FOREGROUND_ENV, "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .process_group(0)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hangar-wg: {e}");
            return ExitCode::from(1);
        }
    };
    for _ in 0..500 {
        if path.exists() {
            return ExitCode::SUCCESS;
        }
        if let Ok(Some(status)) = child.try_wait() {
            eprintln!("hangar-wg: the device exited ({status})");
            return ExitCode::from(1);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!("hangar-wg: {} did not appear within 5 s", path.display());
    let _ = child.kill();
    ExitCode::from(1)
}

async fn run(name: &str) -> Result<(), hangar_wireguard::Error> {
    use tokio::signal::unix::{SignalKind, signal};
    let device = Device::start(DeviceConfig {
        name: name.to_string(),
        listen: "[::]:0"
            .parse()
            .map_err(|_| hangar_wireguard::Error::BadName(name.into()))?,
        private_key: None,
        fwmark: None,
    })?;
    let socket = UapiSocket::bind(name)?;
    let path = socket.path().to_path_buf();
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let serve = tokio::spawn(socket.serve(device.clone(), async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    }));
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| hangar_wireguard::Error::Command(e.to_string()))?;
    let mut int = signal(SignalKind::interrupt())
        .map_err(|e| hangar_wireguard::Error::Command(e.to_string()))?;
    let mut check = tokio::time::interval(Duration::from_millis(500));
    let why = loop {
        tokio::select! {
            _ = term.recv() => break "SIGTERM".to_string(),
            _ = int.recv() => break "SIGINT".to_string(),
            reason = device.failed() => break reason,
            _ = check.tick() => {
                if !path.exists() {
                    break format!("{} was removed", path.display());
                }
            }
        }
    };
    eprintln!("hangar-wg: {name}: stopping ({why})");
    let _ = stop_tx.send(true);
    let _ = serve.await;
    device.shutdown().await;
    Ok(())
}
