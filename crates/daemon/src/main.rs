//! `hangard`: wires the roles of a host together. Parsing flags, checking the host, opening
//! the store and starting services is all it does; each service is a library.

mod checks;
mod metrics;
mod token;

/// The proxy's hot path allocates per request (headers, bodies, futures); mimalloc's
/// thread-local free lists make that cheaper than glibc's arenas (BENCHMARKS.md, the proxy).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Address of the Prometheus endpoint `GET /metrics`: `fly_instance_*` metrics of this
    /// host's machines, the apps' own metrics (scraped every 15 s from machines whose config
    /// has `metrics`, fly.toml `[metrics]`) and hangard's. If it can not be bound, hangard
    /// warns and runs without it.
    #[arg(long, default_value = "127.0.0.1:4281", env = "HANGAR_METRICS_LISTEN")]
    metrics_listen: SocketAddr,
    /// Region this host serves.
    #[arg(long, default_value = "local")]
    region: String,
    /// Every region of the platform (comma list; defaults to this host's region).
    #[arg(long, value_delimiter = ',')]
    regions: Vec<String>,
    /// Largest API request body, in bytes.
    #[arg(long, default_value_t = 1024 * 1024)]
    max_body_bytes: usize,
    /// Largest image archive uploaded through the API, in bytes.
    #[arg(long, default_value_t = 8 << 30)]
    max_image_bytes: u64,
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
    /// IPv4 pool for machines' outbound traffic (NATed through this host), or `none` for
    /// IPv6-only machines.
    #[arg(long, default_value = "172.19.0.0/16")]
    ipv4_pool: String,
    /// nftables tables of this host: `ip` (the IPv4 pool's NAT), `inet` and `bridge` (network
    /// isolation and anti-spoofing), all of this name.
    #[arg(long, default_value = "hangar")]
    nft_table: String,
    /// Address the edge proxy's public listeners bind.
    #[arg(long, default_value = "0.0.0.0")]
    proxy_bind: std::net::IpAddr,
    /// Listen on another port for a service port, SERVICE=LISTEN (e.g. 80=8080); repeatable
    /// or comma-separated. Other service ports listen on themselves.
    #[arg(long, value_delimiter = ',')]
    proxy_port: Vec<String>,
    /// This host's public addresses (where its proxy is reached), recorded for apps by
    /// `hangar ips allocate-v6` and `allocate-v4 --shared`; repeatable or comma-separated.
    /// Default: --proxy-bind, when that is one specific public address.
    #[arg(long, value_delimiter = ',')]
    public_ip: Vec<std::net::IpAddr>,
    /// Apps answer at <app>.<domain>.
    #[arg(long, default_value = "localhost")]
    domain: String,
    /// How long a machine must be idle before autostop stops it (Go duration, e.g. 30s).
    #[arg(long, default_value = "30s")]
    autostop_interval: String,
    /// A UDP flow (one client address) silent both ways this long ends (Go duration).
    #[arg(long, default_value = "30s")]
    udp_idle_timeout: String,
    /// Distance between two regions for routing, A:B=N (e.g. ams:fra=10); repeatable.
    #[arg(long, value_delimiter = ',')]
    region_distance: Vec<String>,
    /// Run without the edge proxy.
    #[arg(long)]
    no_proxy: bool,
    /// Public connections from these networks (your load balancers, IP/LEN, comma-separated)
    /// must start with a PROXY protocol header (v1 or v2); its source is then the client.
    #[arg(long, value_delimiter = ',')]
    proxy_protocol_from: Vec<String>,
    /// Threads serving the proxy's public ports, each with its own runtime; they share each
    /// port's listening socket and keep their connections. 0 runs them on the daemon's shared
    /// runtime. Default: one per core.
    #[arg(long)]
    proxy_workers: Option<usize>,
    /// Operators' address of the private DNS (`.internal` names of every network, other
    /// names forwarded), or `none`. Machines find it at their network's `…::3` (port 53).
    #[arg(long, default_value = "127.0.0.1:53")]
    dns_listen: String,
    /// Resolvers for names that are not Hangar's (IP or IP:PORT, comma-separated; default:
    /// the host's /etc/resolv.conf).
    #[arg(long, value_delimiter = ',')]
    dns_upstream: Vec<String>,
    /// Run without the private DNS (machines then have no resolver).
    #[arg(long)]
    no_dns: bool,
    /// UDP address of the WireGuard gateway that peers (`hangar wireguard create`) connect
    /// to (`[::]`: every address, IPv4 too; port 0: any).
    #[arg(long, default_value = "[::]:51820")]
    wireguard_listen: SocketAddr,
    /// The gateway as peers' configs name it, HOST:PORT (default: this host's name and the
    /// listen port).
    #[arg(long)]
    wireguard_endpoint: Option<String>,
    /// The gateway's interface (hgrwg…, at most 15 characters).
    #[arg(long, default_value = "hgrwg0")]
    wireguard_interface: String,
    /// Run without the WireGuard gateway (creating peers is then refused).
    #[arg(long)]
    no_wireguard: bool,
    /// A client must finish its TLS handshake within this (Go duration).
    #[arg(long, default_value = "10s")]
    tls_handshake_timeout: String,
    /// ACME directory URL for custom hostnames' certificates (e.g. Let's Encrypt's
    /// https://acme-v02.api.letsencrypt.org/directory); ACME is off without it.
    #[arg(long, env = "HANGAR_ACME_DIRECTORY")]
    acme_directory: Option<String>,
    /// Contact e-mail of the ACME account.
    #[arg(long)]
    acme_email: Option<String>,
    /// PEM file of extra CA certificates trusted when talking to the ACME directory.
    #[arg(long)]
    acme_ca_file: Option<PathBuf>,
    /// ACME challenge types in order of preference, taking turns across attempts
    /// (tls-alpn-01, http-01, dns-01). Wildcard names use dns-01 whatever this says; list
    /// dns-01 here (it needs --acme-dns-zone) for other names whose DNS can not point here.
    #[arg(long, value_delimiter = ',', default_value = "tls-alpn-01,http-01")]
    acme_challenges: Vec<String>,
    /// A DNS zone delegated (NS) to this host, for DNS-01: hangard answers it, and each
    /// custom hostname's `_acme-challenge` name is a CNAME into it (the certificates API
    /// shows the target). Needed for wildcard certificates.
    #[arg(long)]
    acme_dns_zone: Option<String>,
    /// Where the ACME DNS zone is served (UDP and TCP): the address its NS record names,
    /// port 53, e.g. `203.0.113.7:53`. Needed with --acme-dns-zone; not a wildcard address
    /// while the private DNS answers on this host's 127.0.0.1:53 (--dns-listen), which it
    /// would collide with.
    #[arg(long)]
    acme_dns_listen: Option<std::net::SocketAddr>,
    /// cgroup under which every machine's cgroup is made.
    #[arg(long, default_value = "hangar")]
    cgroup_parent: String,
}

fn duration(flag: &str, v: &str) -> anyhow::Result<std::time::Duration> {
    hangar_api_types::Duration::parse_go(v)
        .ok()
        .and_then(|d| d.to_std())
        .filter(|d| !d.is_zero())
        .with_context(|| format!("--{flag} {v}: expected a duration such as 30s"))
}

/// `--acme-dns-zone`, checked: a valid DNS name, lowercase, no trailing dot.
fn acme_dns_zone(args: &Args) -> anyhow::Result<Option<String>> {
    let Some(z) = &args.acme_dns_zone else {
        return Ok(None);
    };
    let zone = hangar_domain::tls::parse_hostname(z.trim_end_matches('.'))
        .map_err(|e| anyhow::anyhow!("--acme-dns-zone {z}: {e}"))?;
    anyhow::ensure!(
        !hangar_domain::tls::is_wildcard(&zone),
        "--acme-dns-zone {z}: a zone, not a wildcard"
    );
    Ok(Some(zone))
}

/// The ACME DNS zone and where it is served, checked: the address is free now (a clash with
/// the private DNS or a missing privilege is told at start, not at the first wildcard).
fn acme_dns(args: &Args) -> anyhow::Result<Option<hangar_proxy::acme::AcmeDns>> {
    anyhow::ensure!(
        args.acme_dns_zone.is_some() || !args.acme_challenges.iter().any(|c| c.trim() == "dns-01"),
        "--acme-challenges dns-01 needs --acme-dns-zone"
    );
    let (zone, listen) = match (acme_dns_zone(args)?, args.acme_dns_listen) {
        (Some(zone), Some(listen)) => (zone, listen),
        (Some(_), None) => anyhow::bail!(
            "--acme-dns-zone needs --acme-dns-listen (the address its NS record names, port 53)"
        ),
        (None, _) => return Ok(None),
    };
    std::net::UdpSocket::bind(listen)
        .and_then(|_| std::net::TcpListener::bind(listen))
        .with_context(|| format!("--acme-dns-listen {listen}"))?;
    Ok(Some(hangar_proxy::acme::AcmeDns { zone, listen }))
}

/// `dns`: [`acme_dns`]'s answer, checked once at start.
fn tls_config(
    args: &Args,
    sealer: Arc<hangar_store::Sealer>,
    dns: Option<hangar_proxy::acme::AcmeDns>,
) -> anyhow::Result<hangar_proxy::tls::TlsConfig> {
    use hangar_proxy::acme::{AcmeConfig, Challenge};
    let acme = match &args.acme_directory {
        None => None,
        Some(directory) => Some(AcmeConfig {
            directory: directory.clone(),
            contact: args
                .acme_email
                .iter()
                .map(|e| format!("mailto:{e}"))
                .collect(),
            trust_pem: args
                .acme_ca_file
                .as_ref()
                .map(|p| {
                    std::fs::read_to_string(p)
                        .with_context(|| format!("--acme-ca-file {}", p.display()))
                })
                .transpose()?,
            challenges: args
                .acme_challenges
                .iter()
                .map(|c| {
                    Challenge::parse(c).with_context(|| {
                        format!("--acme-challenges {c}: expected tls-alpn-01, http-01 or dns-01")
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?,
            dns,
            ..AcmeConfig::default()
        }),
    };
    Ok(hangar_proxy::tls::TlsConfig {
        ca_dir: Some(args.data_dir.join("tls")),
        sealer: Some(sealer),
        handshake_timeout: duration("tls-handshake-timeout", &args.tls_handshake_timeout)?,
        acme,
    })
}

fn proxy_config(
    args: &Args,
    sealer: Arc<hangar_store::Sealer>,
    acme_dns: Option<hangar_proxy::acme::AcmeDns>,
) -> anyhow::Result<hangar_proxy::ProxyConfig> {
    let mut port_map = std::collections::HashMap::new();
    for p in &args.proxy_port {
        let (a, b) = p
            .split_once('=')
            .with_context(|| format!("--proxy-port {p}: expected SERVICE=LISTEN, e.g. 80=8080"))?;
        port_map.insert(
            a.trim()
                .parse::<u16>()
                .with_context(|| format!("--proxy-port {p}"))?,
            b.trim()
                .parse::<u16>()
                .with_context(|| format!("--proxy-port {p}"))?,
        );
    }
    let distances = region_distances(args)?;
    let interval = duration("autostop-interval", &args.autostop_interval)?;
    Ok(hangar_proxy::ProxyConfig {
        region: args.region.clone(),
        bind: args.proxy_bind,
        port_map,
        domain: args.domain.trim_matches('.').to_ascii_lowercase(),
        distances,
        autostop_interval: interval,
        udp_idle_timeout: duration("udp-idle-timeout", &args.udp_idle_timeout)?,
        tls: tls_config(args, sealer, acme_dns)?,
        proxy_protocol_from: args
            .proxy_protocol_from
            .iter()
            .map(|c| {
                c.parse()
                    .map_err(|e| anyhow::anyhow!("--proxy-protocol-from {e}"))
            })
            .collect::<anyhow::Result<_>>()?,
        workers: args
            .proxy_workers
            .unwrap_or_else(|| hangar_proxy::ProxyConfig::default().workers),
        ..hangar_proxy::ProxyConfig::default()
    })
}

fn region_distances(
    args: &Args,
) -> anyhow::Result<std::collections::HashMap<(String, String), u32>> {
    let mut distances = std::collections::HashMap::new();
    for d in &args.region_distance {
        let parsed = d.split_once('=').and_then(|(pair, n)| {
            let (a, b) = pair.split_once(':')?;
            Some((
                (a.trim().to_string(), b.trim().to_string()),
                n.trim().parse::<u32>().ok()?,
            ))
        });
        let (k, v) = parsed
            .with_context(|| format!("--region-distance {d}: expected A:B=N, e.g. ams:fra=10"))?;
        distances.insert(k, v);
    }
    Ok(distances)
}

/// The DNS role's settings; `api` is where the Machines API listens (machines reach it through
/// the relay on their network's service address, `_api.internal:4280`).
fn dns_config(args: &Args, api: SocketAddr) -> anyhow::Result<hangar_dns::DnsConfig> {
    let operator_listen = match args.dns_listen.as_str() {
        "none" | "" => None,
        a => Some(
            a.parse::<SocketAddr>()
                .with_context(|| format!("--dns-listen {a}: expected IP:PORT or none"))?,
        ),
    };
    let mut upstreams = Vec::new();
    for u in &args.dns_upstream {
        let a = u
            .parse::<SocketAddr>()
            .or_else(|_| {
                u.parse::<std::net::IpAddr>()
                    .map(|ip| SocketAddr::new(ip, 53))
            })
            .with_context(|| format!("--dns-upstream {u}: expected IP or IP:PORT"))?;
        upstreams.push(a);
    }
    let api_ip = match api.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => std::net::Ipv4Addr::LOCALHOST.into(),
        ip if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    Ok(hangar_dns::DnsConfig {
        host_id: args.host_id,
        region: args.region.clone(),
        distances: region_distances(args)?,
        operator_listen,
        upstreams: if upstreams.is_empty() {
            hangar_dns::host_resolvers()
        } else {
            upstreams
        },
        api_upstream: Some(SocketAddr::new(api_ip, api.port())),
        ..hangar_dns::DnsConfig::default()
    })
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

/// `--public-ip`, or the proxy's bind address when it is a public one.
fn public_ips(args: &Args) -> Vec<std::net::IpAddr> {
    if !args.public_ip.is_empty() {
        return args.public_ip.clone();
    }
    let b = args.proxy_bind;
    let private = match b {
        std::net::IpAddr::V4(a) => a.is_private() || a.is_link_local(),
        std::net::IpAddr::V6(a) => a.is_unique_local() || a.is_unicast_link_local(),
    };
    if b.is_unspecified() || b.is_loopback() || private || args.no_proxy {
        Vec::new()
    } else {
        vec![b]
    }
}

/// The WireGuard gateway (PLATFORM.md §4.5), unless `--no-wireguard`. A host that can not
/// run one (no /dev/net/tun, the port taken) runs without it and says why.
fn wireguard(args: &Args) -> Option<Arc<hangar_wireguard::Gateway>> {
    if args.no_wireguard {
        return None;
    }
    let mut config = hangar_wireguard::GatewayConfig::new(
        &args.wireguard_interface,
        args.wireguard_listen,
        args.data_dir.join("wireguard/private.key"),
        args.host_id,
    );
    config.nft_table = Some(args.nft_table.clone());
    match hangar_wireguard::Gateway::start(config) {
        Ok(g) => {
            eprintln!(
                "hangard: wireguard gateway {} ({}) on udp {}, public key {}",
                g.iface(),
                if g.is_kernel() { "kernel" } else { "userspace" },
                g.listen_addr(),
                g.public_key().to_base64()
            );
            Some(g)
        }
        Err(e) => {
            eprintln!("hangard: warning: no WireGuard gateway: {e}");
            None
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    // Flycast addresses (and WireGuard peers) have host field 0: no host may have that id.
    anyhow::ensure!(
        args.host_id != 0,
        "--host-id 0 is reserved (the host field of Flycast and WireGuard peer addresses); \
         use any other 32-bit number"
    );
    // ACME settings are checked before anything is made on the host.
    let acme_dns = acme_dns(&args)?;
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
    let gateway = wireguard(&args);
    let config = ApiConfig {
        wireguard: gateway.as_ref().map(|g| hangar_api::WireguardGateway {
            endpoint: args
                .wireguard_endpoint
                .clone()
                .unwrap_or_else(|| format!("{}:{}", hostname(), g.listen_addr().port())),
            public_key: g.public_key().to_base64(),
        }),
        region: args.region.clone(),
        regions,
        host_id: args.host_id,
        host_name: hostname(),
        max_body_bytes: args.max_body_bytes,
        max_image_bytes: args.max_image_bytes,
        rate_limit: args.rate_limit.as_deref().map(parse_rate).transpose()?,
        domain: args.domain.trim_matches('.').to_ascii_lowercase(),
        acme_enabled: args.acme_directory.is_some() && !args.no_proxy,
        // Shown to users only where this host's proxy answers the zone.
        acme_dns_zone: if args.acme_directory.is_some() && !args.no_proxy {
            acme_dns_zone(&args)?
        } else {
            None
        },
        public_ips: public_ips(&args),
    };
    // Private keys of certificates and ACME accounts are stored sealed with this key.
    let sealer = Arc::new(
        hangar_store::Sealer::load_or_create(&args.data_dir.join("tls/seal.key"))
            .context("the certificate key file DATA/tls/seal.key")?,
    );
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
    let egress = match args.ipv4_pool.as_str() {
        "none" | "" => None,
        pool => Some(
            hangar_net::egress::Egress::new(pool, &args.nft_table)
                .with_context(|| format!("--ipv4-pool {pool} / --nft-table"))?,
        ),
    };
    let dyn_store: Arc<dyn Store> = store.clone();
    // Apps' platform lines (runner, proxy): per app, rotated, under DATA/logs.
    let platform_logs = hangar_agent::PlatformLogs::open(
        args.data_dir.join("logs"),
        hangar_agent::PLATFORM_LOG_FILE_LIMIT,
    )
    .context("opening DATA/logs")?;
    let agent = Agent::new(
        dyn_store.clone(),
        driver,
        images,
        puller,
        AgentConfig {
            machines_dir: args.data_dir.join("machines"),
            volumes_dir: args.data_dir.join("volumes"),
            host_id: args.host_id,
            log_limit_bytes: 8 << 20,
            egress,
            isolation: Some(
                hangar_net::isolation::Isolation::new(&args.nft_table).context("--nft-table")?,
            ),
            sealer: Some(sealer.clone()),
            platform_logs: Some(platform_logs.clone()),
        },
    );
    let listener = tokio::net::TcpListener::bind(args.api_listen)
        .await
        .with_context(|| format!("binding the API to {}", args.api_listen))?;
    let api_addr = listener.local_addr()?;
    eprintln!(
        "hangard {} listening: api=http://{} data_dir={} region={}",
        env!("CARGO_PKG_VERSION"),
        api_addr,
        args.data_dir.display(),
        args.region
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let api = tokio::spawn(hangar_api::run(
        listener,
        ApiState::new(dyn_store, config)
            .with_host(agent.clone())
            .with_sealer(sealer.clone()),
        stopped(stop_rx.clone()),
    ));
    let proxy = if args.no_proxy {
        None
    } else {
        Some(hangar_proxy::Proxy::new(
            store.clone(),
            hangar_proxy::ProxyConfig {
                platform_log: Some(platform_logs.clone()),
                resumer: Some(agent.clone()),
                ..proxy_config(&args, sealer, acme_dns)?
            },
        ))
    };
    let proxy_task = proxy
        .clone()
        .map(|p| tokio::spawn(hangar_proxy::run(p, stopped(stop_rx.clone()))));
    let dns = if args.no_dns {
        None
    } else {
        Some(hangar_dns::Dns::new(
            store.clone(),
            dns_config(&args, api_addr)?,
        ))
    };
    let dns_task = dns
        .clone()
        .map(|d| tokio::spawn(hangar_dns::run(d, stopped(stop_rx.clone()))));
    let wireguard_task = gateway
        .clone()
        .map(|g| tokio::spawn(g.run(store.clone(), stopped(stop_rx.clone()))));
    let metrics_task = metrics::bind(args.metrics_listen).await.map(|l| {
        tokio::spawn(metrics::serve(
            l,
            agent.clone(),
            store.clone(),
            proxy.clone(),
            dns.clone(),
            gateway.clone(),
            stopped(stop_rx.clone()),
        ))
    });
    let scraper = tokio::spawn(hangar_agent::run_scraper(
        agent.clone(),
        hangar_agent::ScraperConfig::default(),
        stopped(stop_rx.clone()),
    ));
    let agent_task = tokio::spawn(hangar_agent::run(agent, stopped(stop_rx)));
    shutdown_signal().await;
    let _ = stop_tx.send(true);
    api.await.context("api task")??;
    agent_task.await.context("agent task")??;
    if let Some(t) = metrics_task {
        t.await.context("metrics task")??;
    }
    scraper.await.context("scraper task")?;
    if let Some(t) = proxy_task {
        t.await.context("proxy task")??;
    }
    if let Some(t) = dns_task {
        t.await.context("dns task")??;
    }
    if let Some(t) = wireguard_task {
        t.await.context("wireguard task")?;
    }
    // Platform lines still queued reach their files.
    platform_logs.flush();
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
