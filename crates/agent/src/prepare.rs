//! Turning a machine record into a ready container: image, rootfs, network, files, spec.

use std::io::Write as _;
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};

use hangar_api_types::{ImageRef, MachineConfig};
use hangar_domain::sixpn;
use hangar_image::{Image, PullOptions, Reference};
use hangar_net::{MachineNet, Network};
use hangar_runtime::{BindMount, ContainerId, ContainerSpec, Driver, Resources};
use hangar_store::MachineRecord;

use crate::Agent;
use crate::reconcile::AgentError;

/// Default memory of a machine whose config names none (the reference's shared-cpu-1x).
const DEFAULT_MEMORY_MB: i64 = 256;

impl<D: Driver> Agent<D> {
    pub(crate) fn machine_dir(&self, id: &str) -> PathBuf {
        self.config.machines_dir.join(id)
    }

    /// The image of a machine: from the store if present, else pulled.
    pub(crate) async fn image(&self, m: &MachineRecord) -> Result<(Image, ImageRef), AgentError> {
        let reference = Reference::parse(&m.config.image).map_err(|e| {
            AgentError::Image(format!("invalid image reference '{}': {e}", m.config.image))
        })?;
        let image = match self
            .images
            .lookup(&m.config.image)
            .map_err(|e| AgentError::Image(e.to_string()))?
        {
            Some(img) => img,
            None => self
                .puller
                .ensure(&reference, &PullOptions::default(), None)
                .await
                .map_err(|e| AgentError::Image(format!("pulling {reference}: {e}")))?,
        };
        let image_ref = image.image_ref(&reference);
        Ok((image, image_ref))
    }

    /// The app's secrets, opened. A value that does not open (another key) fails the
    /// machine's preparation rather than starting it without the secret.
    pub(crate) fn app_secrets(&self, app: &str) -> Result<Vec<(String, String)>, AgentError> {
        let (records, _) = self.store.secrets(app)?;
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let Some(sealer) = &self.config.sealer else {
            return Err(AgentError::Invalid(
                "the app has secrets but this host has no key to open them".into(),
            ));
        };
        records
            .into_iter()
            .map(|r| {
                let v = sealer
                    .open(&hangar_store::secret_context(app, &r.name), &r.sealed)
                    .map_err(|e| AgentError::Host(format!("secret {}: {e}", r.name)))?;
                Ok((r.name, String::from_utf8_lossy(&v).into_owned()))
            })
            .collect()
    }

    /// Network of a machine, from its 6PN address (`fdaa:<net>:<host>:<machine>:2`).
    pub(crate) fn network_of(
        &self,
        m: &MachineRecord,
    ) -> Result<(Network, MachineNet), AgentError> {
        let addr: Ipv6Addr = m.private_ip.parse().map_err(|_| {
            AgentError::Invalid(format!("machine {} has no valid 6PN address", m.id))
        })?;
        let seg = addr.segments();
        let network_id = (u32::from(seg[1]) << 16) | u32::from(seg[2]);
        let host_id = (u32::from(seg[3]) << 16) | u32::from(seg[4]);
        Ok((
            Network::new(network_id, host_id),
            MachineNet::new(&m.id, addr).with_ipv4(self.machine_ipv4(&m.id)),
        ))
    }

    /// Removes a network's bridge and its isolation rules when no live machine of this host
    /// (other than `leaving`) and no WireGuard peer is in it: nothing of a network stays on a
    /// host after its last machine. Best effort (logged): a failure leaves an unused bridge.
    pub(crate) async fn release_network(&self, network: &Network, leaving: &str) {
        let held = self.network_lock(network.network_id);
        let _guard = held.lock().await;
        let in_use = || -> Result<bool, AgentError> {
            let host = self.config.host_id;
            let machines = self.store.all_live_machines()?.into_iter().any(|m| {
                m.id != leaving
                    && m.private_ip
                        .parse::<Ipv6Addr>()
                        .ok()
                        .and_then(hangar_domain::sixpn::parse)
                        == Some((network.network_id, host))
            });
            let peers = self
                .store
                .list_wireguard_peers(None)?
                .iter()
                .any(|p| p.network_id == network.network_id);
            Ok(machines || peers)
        };
        match in_use() {
            Ok(true) => {}
            Ok(false) => {
                if let Some(iso) = &self.config.isolation
                    && let Err(e) = iso.remove_network(network)
                {
                    eprintln!(
                        "hangar-agent: network {}: removing its rules: {e}",
                        network.network_id
                    );
                }
                if let Err(e) = network.remove() {
                    eprintln!(
                        "hangar-agent: network {}: removing its bridge: {e}",
                        network.network_id
                    );
                }
            }
            Err(e) => eprintln!("hangar-agent: network {}: {e}", network.network_id),
        }
    }

    /// Replaces the isolation rules with those of the live machines of this host that have a
    /// network namespace (at start, before any machine is worked on): rules of machines that
    /// went while no agent ran vanish, those of the others are back as they should be.
    pub(crate) fn rebuild_isolation(&self) -> Result<(), AgentError> {
        let Some(iso) = &self.config.isolation else {
            return Ok(());
        };
        let namespaces: std::collections::HashSet<String> =
            hangar_net::list_machine_namespaces().into_iter().collect();
        let mut networks = Vec::new();
        let mut bridges = std::collections::HashSet::new();
        let mut machines = Vec::new();
        for m in self.store.all_live_machines()? {
            if !namespaces.contains(&m.id) {
                continue;
            }
            let Ok((network, mnet)) = self.network_of(&m) else {
                continue;
            };
            if network.host_id != self.config.host_id {
                continue;
            }
            // Bridges and MACs as this version makes them (the service address, MACs the
            // rules pin), for machines that were made before.
            if bridges.insert(network.bridge.clone()) {
                network
                    .ensure()
                    .map_err(|e| AgentError::Host(format!("network {}: {e}", network.bridge)))?;
                networks.push(network);
            }
            if let Err(e) = mnet.pin_mac() {
                eprintln!("hangar-agent: machine {}: {e}", m.id);
            }
            machines.push(mnet);
        }
        iso.rebuild(&networks, &machines)
            .map_err(|e| AgentError::Host(format!("network isolation rules: {e}")))
    }

    /// Everything up to a created (not started) container. Idempotent.
    ///
    /// The machine's links and rules (an `ip` run in the host, one in the namespace, an
    /// `nft` run: about 15 ms) are set while the rootfs is mounted and the container is
    /// made, when the namespace already exists (a stopped machine's next container: the
    /// container only joins the namespace, and the app runs after both are done).
    pub(crate) async fn prepare(&self, m: &MachineRecord) -> Result<ImageRef, AgentError> {
        let (image, image_ref) = self.image(m).await?;
        let (network, mnet) = self.network_of(m)?;
        let mnet = mnet.with_ipv4(self.assign_ipv4(&m.id)?);
        let netns = mnet.netns_path();
        let network_setup = tokio::spawn(self.network_setup(network, mnet));
        let network_setup = if netns.exists() {
            Some(network_setup)
        } else {
            joined(network_setup).await?;
            None
        };
        let dir = self.machine_dir(&m.id);
        std::fs::create_dir_all(&dir)
            .map_err(|e| AgentError::Host(format!("creating {}: {e}", dir.display())))?;
        let rootfs = self
            .images
            .mount_rootfs(&image, &dir)
            .map_err(|e| AgentError::Image(format!("mounting the rootfs: {e}")))?;
        let mut mounts = write_files(&dir, m)?;
        mounts.extend(self.volume_binds(m).await?);
        let mut spec = spec(
            m,
            &image,
            &image_ref,
            rootfs.target.clone(),
            &dir,
            netns,
            mounts,
            self.config.log_limit_bytes,
        )?;
        // App secrets as environment variables (over the config's env; the platform's
        // `FLY_*` variables stay the platform's).
        for (k, v) in self.app_secrets(&m.app)? {
            if k.starts_with("FLY_") {
                continue;
            }
            spec.env.retain(|(x, _)| *x != k);
            spec.env.push((k, v));
        }
        let driver = self.driver.clone();
        let id = spec.id.clone();
        let created = tokio::task::spawn_blocking(move || {
            // A leftover of an earlier attempt is replaced.
            if driver.state(&id).is_ok() {
                driver.delete(&id)?;
            }
            driver.create(&spec)
        })
        .await
        .map_err(|e| AgentError::Host(e.to_string()));
        if let Some(network_setup) = network_setup {
            joined(network_setup).await?;
        }
        created??;
        Ok(image_ref)
    }

    /// The machine's namespace, veth pair, addresses and isolation rules (processes, on a
    /// blocking thread), under the network's lock: not while the bridge is being removed (its
    /// last machine just went).
    fn network_setup(
        &self,
        network: Network,
        mnet: MachineNet,
    ) -> impl std::future::Future<Output = Result<(), AgentError>> + Send + 'static {
        let held = self.network_lock(network.network_id);
        let isolation = self.config.isolation.clone();
        async move {
            let _guard = held.lock().await;
            tokio::task::spawn_blocking(move || {
                mnet.ensure(&network)
                    .map_err(|e| AgentError::Host(format!("machine network: {e}")))?;
                if let Some(iso) = &isolation {
                    iso.add(&network, &mnet)
                        .map_err(|e| AgentError::Host(format!("network isolation rules: {e}")))?;
                }
                Ok(())
            })
            .await
            .map_err(|e| AgentError::Host(e.to_string()))?
        }
    }
}

/// The result of a spawned step (a panic in it is an error, not a panic here).
async fn joined(task: tokio::task::JoinHandle<Result<(), AgentError>>) -> Result<(), AgentError> {
    task.await.map_err(|e| AgentError::Host(e.to_string()))?
}

fn host_err(what: &str, p: &Path, e: std::io::Error) -> AgentError {
    AgentError::Host(format!("{what} {}: {e}", p.display()))
}

fn write(path: &Path, content: &[u8]) -> Result<(), AgentError> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| host_err("writing", &tmp, e))?;
    f.write_all(content)
        .map_err(|e| host_err("writing", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| host_err("renaming", path, e))
}

/// `/etc/hosts`, `/etc/resolv.conf` and `files[]`, written in the machine dir (never through
/// the rootfs, whose symlinks the image author controls) and bind-mounted read-only.
fn write_files(dir: &Path, m: &MachineRecord) -> Result<Vec<BindMount>, AgentError> {
    let etc = dir.join("etc");
    std::fs::create_dir_all(&etc).map_err(|e| host_err("creating", &etc, e))?;
    let hosts = format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{ip}\tfly-local-6pn\n{ip}\tfly-global-services\n{ip}\t{id}\n",
        ip = m.private_ip,
        id = m.id
    );
    write(&etc.join("hosts"), hosts.as_bytes())?;
    write(&etc.join("resolv.conf"), resolv_conf(m).as_bytes())?;
    write(&etc.join("hostname"), format!("{}\n", m.id).as_bytes())?;
    let mut mounts = vec![
        bind(etc.join("hosts"), "/etc/hosts"),
        bind(etc.join("resolv.conf"), "/etc/resolv.conf"),
        bind(etc.join("hostname"), "/etc/hostname"),
    ];
    let files = dir.join("files");
    let _ = std::fs::remove_dir_all(&files);
    for (i, f) in m.config.files.iter().enumerate() {
        let Some(raw) = &f.raw_value else { continue };
        let dest = Path::new(&f.guest_path);
        if !dest.is_absolute()
            || dest
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(AgentError::Invalid(format!(
                "files[{i}].guest_path must be an absolute path without '..'"
            )));
        }
        let bytes = base64_decode(raw)
            .ok_or_else(|| AgentError::Invalid(format!("files[{i}].raw_value is not base64")))?;
        std::fs::create_dir_all(&files).map_err(|e| host_err("creating", &files, e))?;
        let src = files.join(format!("{i}"));
        write(&src, &bytes)?;
        // `mode` as the reference takes it (e.g. 0o755 for a script); no setuid/setgid/sticky.
        let mode = f.mode.map_or(0o644, |m| m & 0o777);
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&src, std::fs::Permissions::from_mode(mode))
                .map_err(|e| host_err("setting the mode of", &src, e))?;
        }
        mounts.push(bind(src, &f.guest_path));
    }
    Ok(mounts)
}

/// `/etc/resolv.conf`: the platform's DNS (`.internal` names, other names forwarded) at the
/// host's service address on the machine's network (PLATFORM.md §4.2), unless the config's
/// `dns.nameservers` name others; `dns.searches` and `dns.options` as given. Only addresses,
/// host names and option words are written (nothing that could add a line).
pub(crate) fn resolv_conf(m: &MachineRecord) -> String {
    let dns = m.config.dns.clone().unwrap_or_default();
    let word = |s: &str| {
        !s.is_empty()
            && s.len() <= 253
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'))
    };
    let mut servers: Vec<String> = dns
        .nameservers
        .iter()
        .filter_map(|n| n.trim().parse::<std::net::IpAddr>().ok())
        .map(|a| a.to_string())
        .collect();
    if servers.is_empty()
        && let Some((network, host)) = m.private_ip.parse().ok().and_then(sixpn::parse)
    {
        servers.push(sixpn::service_addr(network, host).to_string());
    }
    let mut out = String::new();
    for s in servers.iter().take(3) {
        out.push_str(&format!("nameserver {s}\n"));
    }
    let searches: Vec<&str> = dns
        .searches
        .iter()
        .map(|s| s.trim())
        .filter(|s| word(s))
        .collect();
    if !searches.is_empty() {
        out.push_str(&format!("search {}\n", searches.join(" ")));
    }
    let options: Vec<String> = dns
        .options
        .iter()
        .filter(|o| word(&o.name))
        .map(|o| match o.value.as_deref().map(str::trim) {
            Some(v) if word(v) => format!("{}:{v}", o.name),
            _ => o.name.clone(),
        })
        .collect();
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

fn bind(source: PathBuf, dest: &str) -> BindMount {
    BindMount {
        source,
        destination: PathBuf::from(dest),
        read_only: true,
    }
}

/// The process a machine runs: `init.exec`, else entrypoint + cmd (config over image; a
/// config entrypoint drops the image's cmd, as docker does).
pub(crate) fn argv(config: &MachineConfig, image: &Image) -> Vec<String> {
    let init = config.init.clone().unwrap_or_default();
    if !init.exec.is_empty() {
        return init.exec;
    }
    let (entrypoint, image_cmd) = if init.entrypoint.is_empty() {
        (image.config.entrypoint.clone(), image.config.cmd.clone())
    } else {
        (init.entrypoint, Vec::new())
    };
    let cmd = if init.cmd.is_empty() {
        image_cmd
    } else {
        init.cmd
    };
    entrypoint.into_iter().chain(cmd).collect()
}

/// The environment: image env, then config env, then the platform's `FLY_*` variables.
pub(crate) fn env(m: &MachineRecord, image: &Image, image_ref: &ImageRef) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = image
        .config
        .env
        .iter()
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    let mut set = |k: &str, v: String| {
        env.retain(|(x, _)| x != k);
        env.push((k.to_string(), v));
    };
    for (k, v) in &m.config.env {
        set(k, v.clone());
    }
    let memory = m
        .config
        .guest
        .as_ref()
        .and_then(|g| g.memory_mb)
        .unwrap_or(DEFAULT_MEMORY_MB);
    let group = m
        .config
        .metadata
        .get("fly_process_group")
        .cloned()
        .unwrap_or_else(|| "app".into());
    let image_name = if image_ref.repository.is_empty() {
        m.config.image.clone()
    } else {
        format!(
            "{}/{}:{}",
            image_ref.registry, image_ref.repository, image_ref.tag
        )
    };
    set("FLY_APP_NAME", m.app.clone());
    set("FLY_MACHINE_ID", m.id.clone());
    set("FLY_ALLOC_ID", m.id.clone());
    set("FLY_REGION", m.region.clone());
    set("FLY_PUBLIC_IP", String::new());
    set("FLY_IMAGE_REF", image_name);
    set("FLY_MACHINE_VERSION", m.instance_id.clone());
    set("FLY_PRIVATE_IP", m.private_ip.clone());
    set("FLY_PROCESS_GROUP", group);
    set("FLY_VM_MEMORY_MB", memory.to_string());
    if !m.config.env.contains_key("PRIMARY_REGION") {
        set("PRIMARY_REGION", m.region.clone());
    }
    env
}

/// `user[:group]` as numbers; names resolve through the image's /etc/passwd (root if unknown).
fn user(spec: &str, rootfs: &Path) -> (u32, u32) {
    let (u, g) = spec.split_once(':').unwrap_or((spec, ""));
    let passwd = rootfs.join("etc/passwd");
    // The image controls the rootfs: only read a regular file, never through a symlink.
    let table = match std::fs::symlink_metadata(&passwd) {
        Ok(md) if md.file_type().is_file() && md.len() < 1 << 20 => {
            std::fs::read_to_string(&passwd).unwrap_or_default()
        }
        _ => String::new(),
    };
    let lookup = |name: &str| -> Option<(u32, u32)> {
        table.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 3 && f[0] == name)
                .then(|| (f[2].parse().ok(), f[3].parse().ok()))
                .and_then(|(a, b)| Some((a?, b?)))
        })
    };
    let (uid, default_gid) = match u.parse::<u32>() {
        Ok(n) => (n, n),
        Err(_) if u.is_empty() => (0, 0),
        Err(_) => lookup(u).unwrap_or((0, 0)),
    };
    let gid = g.parse::<u32>().unwrap_or(default_gid);
    (uid, gid)
}

#[allow(clippy::too_many_arguments)]
fn spec(
    m: &MachineRecord,
    image: &Image,
    image_ref: &ImageRef,
    rootfs: PathBuf,
    dir: &Path,
    netns: PathBuf,
    mounts: Vec<BindMount>,
    log_limit: u64,
) -> Result<ContainerSpec, AgentError> {
    let args = argv(&m.config, image);
    if args.is_empty() {
        return Err(AgentError::Invalid(
            "the image has no command and the config gives none (set init.cmd or init.exec)".into(),
        ));
    }
    let id = ContainerId::parse(&m.id).map_err(|e| AgentError::Invalid(e.to_string()))?;
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| host_err("creating", &logs, e))?;
    let mut spec = ContainerSpec::new(id, rootfs.clone(), args, logs.join("machine.log"));
    spec.env = env(m, image, image_ref);
    if !spec.env.iter().any(|(k, _)| k == "PATH") {
        spec.env.insert(
            0,
            (
                "PATH".into(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            ),
        );
    }
    spec.cwd = match image.config.working_dir.as_deref() {
        Some(w) if w.starts_with('/') => PathBuf::from(w),
        _ => PathBuf::from("/"),
    };
    let (uid, gid) = user(image.config.user.as_deref().unwrap_or(""), &rootfs);
    spec.uid = uid;
    spec.gid = gid;
    spec.hostname = m.id.clone();
    let guest = m.config.guest.clone().unwrap_or_default();
    spec.resources = Resources {
        cpus: Some(guest.cpus.unwrap_or(1).max(1) as f64),
        memory_mb: Some(guest.memory_mb.unwrap_or(DEFAULT_MEMORY_MB).max(16) as u64),
        pids_limit: Some(4096),
    };
    spec.netns = Some(netns);
    spec.mounts = mounts;
    spec.log_limit_bytes = log_limit;
    Ok(spec)
}

/// Standard base64 (padding optional); `None` on anything else.
pub(crate) fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes().filter(|c| !c.is_ascii_whitespace()) {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_names_the_platform_dns_or_the_configs() {
        let mut m = MachineRecord {
            id: "3d8d413b29d089".into(),
            app: "web".into(),
            name: "m".into(),
            region: "local".into(),
            state: hangar_domain::State::Created,
            instance_id: "01HZZZZZZZZZZZZZZZZZZZZZZZ".into(),
            config: MachineConfig::default(),
            image_ref: None,
            private_ip: "fdaa:0:18:a7b:196:e274:9ce1:2".into(),
            host: "h".into(),
            cordoned: false,
            pending: None,
            restart_count: 0,
            created_at: 0,
            updated_at: 0,
            revision: 0,
        };
        assert_eq!(resolv_conf(&m), "nameserver fdaa:0:18:a7b:196::3\n");
        // The address the net crate puts on the bridge is the one DNS listens on.
        assert_eq!(
            Network::new(0x18, 0x0a7b_0196).service_addr(),
            sixpn::service_addr(0x18, 0x0a7b_0196)
        );
        m.config.dns = Some(hangar_api_types::DnsConfig {
            nameservers: vec!["1.1.1.1".into(), "evil\nnameserver 6.6.6.6".into()],
            searches: vec!["example.com".into(), "x y".into()],
            options: vec![hangar_api_types::DnsOption {
                name: "ndots".into(),
                value: Some("2".into()),
            }],
            ..Default::default()
        });
        assert_eq!(
            resolv_conf(&m),
            "nameserver 1.1.1.1\nsearch example.com\noptions ndots:2\n"
        );
    }

    #[test]
    fn base64_round_trip() {
        assert_eq!(base64_decode("aGVsbG8="), Some(b"hello".to_vec()));
        assert_eq!(base64_decode("aGVsbG8"), Some(b"hello".to_vec()));
        assert_eq!(base64_decode("!!"), None);
    }
}
