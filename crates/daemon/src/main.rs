//! `hangard`: wires the roles of a host together. Parsing flags, checking the host, opening
//! the store and starting services is all it does; each service is a library.

mod checks;
mod token;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use hangar_agent::{Agent, AgentConfig};
use hangar_api::{ApiConfig, ApiState};
use hangar_image::{ImageStore, Puller, PullerConfig};
use hangar_runtime::{LinuxDriver, LinuxDriverConfig};
use hangar_store::{SqliteStore, Store};

/// Hangar host daemon: the Machines API and (as they land) the agent, proxy and DNS roles.
#[derive(Debug, Parser)]
#[command(name = "hangard", version, about)]
struct Args {
    /// Where state, images and machines live.
    #[arg(long, default_value = "/var/lib/hangar", env = "HANGAR_DATA_DIR")]
    data_dir: PathBuf,
    /// Address of the Machines API.
    #[arg(long, default_value = "127.0.0.1:4280", env = "HANGAR_API_LISTEN")]
    api_listen: SocketAddr,
    /// Region this host serves.
    #[arg(long, default_value = "local")]
    region: String,
    /// Every region of the platform (comma list; defaults to this host's region).
    #[arg(long, value_delimiter = ',')]
    regions: Vec<String>,
    /// Largest API request body, in bytes.
    #[arg(long, default_value_t = 1024 * 1024)]
    max_body_bytes: usize,
    /// Per-token API rate limit as RATE/BURST (e.g. 50/100); off by default.
    #[arg(long)]
    rate_limit: Option<String>,
    /// The static `hangar-init` binary run as PID 1 in machines (default: beside hangard).
    #[arg(long, env = "HANGAR_INIT_BINARY")]
    init_binary: Option<PathBuf>,
    /// Registries (host[:port]) pulled from over plain http, e.g. 127.0.0.1:5000.
    #[arg(long, value_delimiter = ',')]
    insecure_registry: Vec<String>,
    /// This host's 32-bit id in 6PN addresses.
    #[arg(long, default_value_t = 1)]
    host_id: u32,
    /// cgroup under which every machine's cgroup is made.
    #[arg(long, default_value = "hangar")]
    cgroup_parent: String,
}

fn parse_rate(s: &str) -> anyhow::Result<(u32, u32)> {
    let (r, b) = s
        .split_once('/')
        .context("expected RATE/BURST, e.g. 50/100")?;
    Ok((r.trim().parse()?, b.trim().parse()?))
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if let Err(problems) = checks::host() {
        eprintln!("hangard: this host can not run machines:");
        for p in problems {
            eprintln!("  - {p}");
        }
        return std::process::ExitCode::from(2);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hangard: can not start the runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hangard: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating data dir {}", args.data_dir.display()))?;
    let store = Arc::new(
        SqliteStore::open(&args.data_dir.join("state.db")).context("opening the state store")?,
    );
    if let Some(path) = token::ensure_admin(store.as_ref(), &args.data_dir)? {
        eprintln!(
            "hangard: created the admin token in {} (mode 0600)",
            path.display()
        );
    }
    let regions = if args.regions.is_empty() {
        vec![args.region.clone()]
    } else {
        args.regions.clone()
    };
    let config = ApiConfig {
        region: args.region.clone(),
        regions,
        host_id: args.host_id,
        host_name: hostname(),
        max_body_bytes: args.max_body_bytes,
        rate_limit: args.rate_limit.as_deref().map(parse_rate).transpose()?,
    };
    let init_binary = match &args.init_binary {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .context("locating hangard")?
            .with_file_name("hangar-init"),
    };
    let driver = Arc::new(
        LinuxDriver::new(LinuxDriverConfig {
            state_dir: args.data_dir.join("runtime"),
            init_binary,
            cgroup_parent: args.cgroup_parent.clone(),
        })
        .context("starting the container driver")?,
    );
    let images =
        ImageStore::open(args.data_dir.join("images")).context("opening the image store")?;
    let puller = Puller::new(
        images.clone(),
        PullerConfig {
            insecure_registries: args.insecure_registry.clone(),
            ..PullerConfig::default()
        },
    )
    .context("starting the image puller")?;
    let dyn_store: Arc<dyn Store> = store.clone();
    let agent = Agent::new(
        dyn_store.clone(),
        driver,
        images,
        puller,
        AgentConfig {
            machines_dir: args.data_dir.join("machines"),
            host_id: args.host_id,
            log_limit_bytes: 8 << 20,
        },
    );
    let listener = tokio::net::TcpListener::bind(args.api_listen)
        .await
        .with_context(|| format!("binding the API to {}", args.api_listen))?;
    eprintln!(
        "hangard {} listening: api=http://{} data_dir={} region={}",
        env!("CARGO_PKG_VERSION"),
        listener.local_addr()?,
        args.data_dir.display(),
        args.region
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let api = tokio::spawn(hangar_api::run(
        listener,
        ApiState::new(dyn_store, config),
        stopped(stop_rx.clone()),
    ));
    let agent_task = tokio::spawn(hangar_agent::run(agent, stopped(stop_rx)));
    shutdown_signal().await;
    let _ = stop_tx.send(true);
    api.await.context("api task")??;
    agent_task.await.context("agent task")??;
    eprintln!("hangard: stopped (machines keep running; they are re-adopted on the next start)");
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    eprintln!("hangard: shutting down");
}
