//! Single machines from the command line (`machine run|update|clone`): a `MachineConfig`
//! built from flags as the reference CLI reads them (`-p port[:machinePort][/proto[:handler…]]`,
//! `-e`/`-m NAME=VALUE`, `-v volume:/path`, `--vm-*`, `--autostop`, `--restart`, `--rm`…), the
//! diff `machine update` shows before it applies, a clone's config and volume, one machine
//! updated under its lease, and waits for the first of several states.
//!
//! Everything that only reads flags is pure and fails with an [`InputError`] (the CLI's exit
//! code 2) before anything is asked of the API; what talks to the API fails with a
//! [`ClientError`].

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use hangar_api_types::{
    Autostop, CreateMachineRequest, CreateVolumeRequest, DnsConfig, Machine, MachineConfig,
    MachineGuest, MachineInit, MachineMount, MachinePort, MachineRestart, MachineService,
    MachineState, RestartPolicy, Volume,
};
use serde_json::Value;

use crate::api::{Client, ClientError, enc};
use crate::deploy::free_volume;

/// A flag's value that can not be used; the message says which flag, what was wrong and
/// the form expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InputError(pub String);

fn bad(msg: impl Into<String>) -> InputError {
    InputError(msg.into())
}

/// The form of `-p/--port`, for error messages.
pub const PORT_FORM: &str =
    "port[:machinePort][/protocol[:handler...]] (e.g. 80:8080/tcp:http, 443:8080/tcp:tls:http)";

/// The proxy handlers a port may name.
pub const HANDLERS: [&str; 5] = ["tls", "http", "proxy_proto", "pg_tls", "edge_http"];

/// One `-p/--port` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    /// The port the app listens on in the machine (default: the public port, or the first
    /// port of a range).
    pub internal_port: i64,
    /// `tcp` (default) or `udp`.
    pub protocol: String,
    /// The public port (unless a range).
    pub port: Option<i64>,
    /// First port of a public range (`8000-8010:8080`).
    pub start_port: Option<i64>,
    /// Last port of a public range (inclusive).
    pub end_port: Option<i64>,
    /// Handlers in order; `["-"]` removes the service's ports.
    pub handlers: Vec<String>,
}

fn port_number(s: &str, full: &str, what: &str) -> Result<i64, InputError> {
    match s.trim().parse::<u16>() {
        Ok(n) if n > 0 => Ok(i64::from(n)),
        _ => Err(bad(format!(
            "invalid --port '{full}': {what} '{s}' is not a port number (1-65535); use {PORT_FORM}"
        ))),
    }
}

/// Reads a `-p/--port` value: `port[:machinePort][/protocol[:handler…]]`, the public side a
/// port or a range `start-end`; the protocol `tcp` unless given; handlers split on `:`
/// (`-` alone removes the mapping on update).
pub fn parse_port(s: &str) -> Result<PortSpec, InputError> {
    let full = s;
    if s.trim().is_empty() {
        return Err(bad(format!("--port needs a value: {PORT_FORM}")));
    }
    let (ports, rest) = match s.split_once('/') {
        Some((p, r)) => (p, Some(r)),
        None => (s, None),
    };
    if rest.is_some_and(|r| r.contains('/')) {
        return Err(bad(format!(
            "invalid --port '{full}': one '/' at most (ports/protocol:handlers); use {PORT_FORM}"
        )));
    }
    let (protocol, handlers) = match rest {
        None => ("tcp".to_string(), Vec::new()),
        Some(r) => {
            let mut parts = r.split(':');
            let proto = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
            (proto, parts.map(|h| h.trim().to_string()).collect())
        }
    };
    if protocol != "tcp" && protocol != "udp" {
        return Err(bad(format!(
            "invalid --port '{full}': protocol '{protocol}' is neither tcp nor udp; use {PORT_FORM}"
        )));
    }
    let remove = handlers == ["-"];
    if !remove {
        if let Some(h) = handlers.iter().find(|h| !HANDLERS.contains(&h.as_str())) {
            return Err(bad(format!(
                "invalid --port '{full}': unknown handler '{h}'; use {} (or '-' alone to remove the mapping)",
                HANDLERS.join(", ")
            )));
        }
        if protocol == "udp" && !handlers.is_empty() {
            return Err(bad(format!(
                "invalid --port '{full}': udp ports take no handlers"
            )));
        }
    }
    let parts: Vec<&str> = ports.split(':').collect();
    if parts.len() > 2 {
        return Err(bad(format!(
            "invalid --port '{full}': at most two ports (public:machine); use {PORT_FORM}"
        )));
    }
    let (mut port, mut start_port, mut end_port) = (None, None, None);
    match parts[0].split_once('-') {
        Some((a, b)) => {
            let a = port_number(a, full, "range start")?;
            let b = port_number(b, full, "range end")?;
            if b < a {
                return Err(bad(format!(
                    "invalid --port '{full}': the range ends ({b}) before it starts ({a})"
                )));
            }
            start_port = Some(a);
            end_port = Some(b);
        }
        None => port = Some(port_number(parts[0], full, "port")?),
    }
    let internal_port = match parts.get(1) {
        Some(p) => port_number(p, full, "machine port")?,
        None => port.or(start_port).unwrap_or_default(),
    };
    Ok(PortSpec {
        internal_port,
        protocol,
        port,
        start_port,
        end_port,
        handlers,
    })
}

/// Merges port mappings into services as the reference does: a service per (machine port,
/// protocol), a public port already there gets the new handlers, `-` removes the service's
/// ports, and services left without ports are dropped.
pub fn apply_ports(services: Vec<MachineService>, ports: &[PortSpec]) -> Vec<MachineService> {
    let mut services = services;
    for p in ports {
        let idx = match services
            .iter()
            .position(|s| s.internal_port == p.internal_port && s.protocol == p.protocol)
        {
            Some(i) => i,
            None => {
                services.push(MachineService {
                    protocol: p.protocol.clone(),
                    internal_port: p.internal_port,
                    ..MachineService::default()
                });
                services.len() - 1
            }
        };
        let svc = &mut services[idx];
        if p.handlers == ["-"] {
            svc.ports.clear();
            continue;
        }
        let mut found = false;
        for sp in &mut svc.ports {
            if sp.port.is_some() && sp.port == p.port {
                found = true;
                sp.handlers = p.handlers.clone();
            }
            if sp.start_port.is_some() && sp.start_port == p.start_port {
                found = true;
                sp.handlers = p.handlers.clone();
                sp.end_port = p.end_port;
            }
        }
        if !found {
            svc.ports.push(MachinePort {
                port: p.port,
                start_port: p.start_port,
                end_port: p.end_port,
                handlers: p.handlers.clone(),
                ..MachinePort::default()
            });
        }
    }
    services.retain(|s| !s.ports.is_empty());
    services
}

/// `NAME=VALUE` pairs of a flag (`--env`, `--metadata`); the value may hold `=`.
pub fn parse_kv(flag: &str, items: &[String]) -> Result<BTreeMap<String, String>, InputError> {
    let mut out = BTreeMap::new();
    for item in items {
        match item.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                out.insert(k.trim().to_string(), v.to_string());
            }
            _ => {
                return Err(bad(format!("invalid {flag} '{item}': use NAME=VALUE")));
            }
        }
    }
    Ok(out)
}

/// A `-v/--volume` value: `volume_id_or_name:/path/inside/machine`.
pub fn parse_volume(s: &str) -> Result<(String, String), InputError> {
    match s.split_once(':') {
        Some((v, path)) if !v.trim().is_empty() && path.starts_with('/') => {
            Ok((v.trim().to_string(), path.to_string()))
        }
        _ => Err(bad(format!(
            "invalid --volume '{s}': use <volume_id_or_name>:/path/inside/machine"
        ))),
    }
}

/// Splits a command line as a shell would (`--entrypoint`, `--command`, `--override-cmd`).
pub fn split_command(flag: &str, s: &str) -> Result<Vec<String>, InputError> {
    shell_words::split(s).map_err(|e| bad(format!("invalid {flag} '{s}': {e}")))
}

/// `--vm-size`, `--vm-memory`, `--vm-cpus`, `--vm-cpu-kind`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestFlags {
    /// A preset (`shared-cpu-2x`, `performance-1x`…).
    pub size: Option<String>,
    /// Memory: a bare number is MB, else a unit (`512mb`, `2gb`).
    pub memory: Option<String>,
    /// CPUs.
    pub cpus: Option<i64>,
    /// `shared` or `performance`.
    pub cpu_kind: Option<String>,
}

impl GuestFlags {
    /// No flag given.
    pub fn is_empty(&self) -> bool {
        *self == GuestFlags::default()
    }
}

/// The preset `size` names, or an error listing the presets.
pub fn preset(size: &str) -> Result<MachineGuest, InputError> {
    hangar_manifest::guest::preset(size).ok_or_else(|| {
        bad(format!(
            "unknown VM size '{size}'; use one of: {}",
            hangar_manifest::guest::preset_names().join(", ")
        ))
    })
}

/// A guest from `base` (the default `shared-cpu-1x` when none) and the flags, as the
/// reference's `--vm-*` flags work: the preset first (CPU kind, CPUs, memory, GPUs), then
/// each explicit flag.
pub fn guest(base: Option<MachineGuest>, f: &GuestFlags) -> Result<MachineGuest, InputError> {
    let mut g = base.unwrap_or_else(hangar_manifest::guest::default_guest);
    if let Some(size) = &f.size {
        let p = preset(size)?;
        g.cpu_kind = p.cpu_kind;
        g.cpus = p.cpus;
        g.memory_mb = p.memory_mb;
        g.gpus = p.gpus;
        g.gpu_kind = p.gpu_kind;
    }
    if let Some(cpus) = f.cpus {
        if cpus < 1 {
            return Err(bad(format!("--vm-cpus must be at least 1, not {cpus}")));
        }
        g.cpus = Some(cpus);
    }
    if let Some(m) = &f.memory {
        g.memory_mb = Some(memory_mb("--vm-memory", m)?);
    }
    if let Some(kind) = &f.cpu_kind {
        if kind != "shared" && kind != "performance" {
            return Err(bad(format!(
                "--vm-cpu-kind must be 'shared' or 'performance', not '{kind}'"
            )));
        }
        g.cpu_kind = Some(kind.clone());
    }
    Ok(g)
}

/// Memory in MB from a flag: a bare number is MB, else a unit (`512mb`, `2gb`); above zero.
pub fn memory_mb(flag: &str, s: &str) -> Result<i64, InputError> {
    match hangar_manifest::units::memory_mb(s) {
        Ok(mb) if mb > 0 => Ok(mb),
        Ok(_) => Err(bad(format!("{flag} must be above zero, not '{s}'"))),
        Err(e) => Err(bad(format!(
            "{flag}: {e} (a number of MB, or e.g. 512mb, 2gb)"
        ))),
    }
}

/// The preset name a guest matches the family of (as the reference's `ToSize`).
pub fn size_name(g: &MachineGuest) -> String {
    let cpus = g.cpus.unwrap_or(1);
    match (g.gpu_kind.as_deref(), g.cpu_kind.as_deref()) {
        (Some(k), _) if !k.is_empty() => hangar_manifest::guest::preset_names()
            .into_iter()
            .find(|n| {
                hangar_manifest::guest::preset(n)
                    .and_then(|p| p.gpu_kind)
                    .as_deref()
                    == Some(k)
            })
            .unwrap_or_else(|| k.to_string()),
        (_, Some("performance")) => format!("performance-{cpus}x"),
        _ => format!("shared-cpu-{cpus}x"),
    }
}

/// `--machine-config` JSON (the text of a file, or inline) laid over `base` as the reference
/// does (Go's unmarshal into the existing config): objects merge key by key, anything else
/// (lists, values) replaces.
pub fn merge_config_json(base: &MachineConfig, text: &str) -> Result<MachineConfig, InputError> {
    fn merge(into: &mut Value, from: Value) {
        match (into, from) {
            (Value::Object(a), Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(Value::Null), v);
                }
            }
            (slot, v) => *slot = v,
        }
    }
    let given: Value = serde_json::from_str(text)
        .map_err(|e| bad(format!("invalid --machine-config JSON: {e}")))?;
    if !given.is_object() {
        return Err(bad(
            "invalid --machine-config: a JSON object (a machine config) is needed",
        ));
    }
    let mut v = serde_json::to_value(base).map_err(|e| bad(e.to_string()))?;
    merge(&mut v, given);
    serde_json::from_value(v).map_err(|e| bad(format!("invalid --machine-config: {e}")))
}

/// What `machine run` / `machine update` flags change in a config.
#[derive(Debug, Clone, Default)]
pub struct ConfigChange {
    /// A new machine (`run`): the default guest when none is set.
    pub creating: bool,
    /// `--image` (update) or the image argument (run).
    pub image: Option<String>,
    /// The command: the arguments after the image (run), `--command` (update); `Some(empty)`
    /// clears it.
    pub cmd: Option<Vec<String>>,
    /// `--entrypoint` (a shell-like string).
    pub entrypoint: Option<String>,
    /// `-e NAME=VALUE`.
    pub env: Vec<String>,
    /// `-m NAME=VALUE`.
    pub metadata: Vec<String>,
    /// `-p` values.
    pub ports: Vec<String>,
    /// `--autostart[=bool]` (every service).
    pub autostart: Option<bool>,
    /// `--autostop[=off|stop|suspend]` (every service).
    pub autostop: Option<Autostop>,
    /// `--restart no|always|on-failure`.
    pub restart: Option<String>,
    /// `--rm`: destroyed when it exits (and restart `no` unless `--restart` says otherwise).
    pub auto_destroy: Option<bool>,
    /// `--skip-dns-registration`.
    pub skip_dns_registration: bool,
    /// `--vm-*`.
    pub guest: GuestFlags,
}

/// A restart policy from `--restart` (`on-fail` as the reference's older spelling).
pub fn restart_policy(s: &str) -> Result<RestartPolicy, InputError> {
    match s {
        "no" => Ok(RestartPolicy::No),
        "always" => Ok(RestartPolicy::Always),
        "on-failure" | "on-fail" => Ok(RestartPolicy::OnFailure),
        other => Err(bad(format!(
            "invalid --restart '{other}': use no, always or on-failure"
        ))),
    }
}

/// Applies the flags to `config` (a new machine's base, or the machine's current config).
/// Nothing is changed when a flag is wrong.
pub fn apply(config: &mut MachineConfig, c: &ConfigChange) -> Result<(), InputError> {
    let mut next = config.clone();
    if let Some(image) = &c.image {
        if image.trim().is_empty() {
            return Err(bad("the image must not be empty"));
        }
        next.image = image.clone();
    }
    if c.creating || !c.guest.is_empty() {
        // A `size` preset of the base (e.g. from --machine-config) is where the guest starts.
        let base = match (next.guest.take(), next.size.take()) {
            (Some(g), _) => Some(g),
            (None, Some(size)) if !size.is_empty() => Some(preset(&size)?),
            _ => None,
        };
        next.guest = Some(guest(base, &c.guest)?);
    }
    next.env.extend(parse_kv("--env", &c.env)?);
    next.metadata.extend(parse_kv("--metadata", &c.metadata)?);
    let mut init = next.init.take().unwrap_or_default();
    if let Some(cmd) = &c.cmd {
        init.cmd = cmd.clone();
    }
    if let Some(e) = &c.entrypoint {
        init.entrypoint = split_command("--entrypoint", e)?;
    }
    next.init = (init != MachineInit::default()).then_some(init);
    if c.skip_dns_registration {
        next.dns
            .get_or_insert_with(DnsConfig::default)
            .skip_registration = Some(true);
    }
    let ports = c
        .ports
        .iter()
        .map(|p| parse_port(p))
        .collect::<Result<Vec<_>, _>>()?;
    if !ports.is_empty() {
        next.services = apply_ports(std::mem::take(&mut next.services), &ports);
    }
    for s in &mut next.services {
        if let Some(a) = c.autostop {
            s.autostop = Some(a);
        }
        if let Some(a) = c.autostart {
            s.autostart = Some(a);
        }
    }
    if let Some(d) = c.auto_destroy {
        next.auto_destroy = Some(d);
    }
    match &c.restart {
        Some(r) => {
            next.restart = Some(MachineRestart {
                policy: Some(restart_policy(r)?),
                ..next.restart.take().unwrap_or_default()
            });
        }
        // Auto-destroy only happens when the machine is not restarted.
        None if c.auto_destroy == Some(true) => {
            next.restart = Some(MachineRestart {
                policy: Some(RestartPolicy::No),
                max_retries: None,
            });
        }
        None => {}
    }
    *config = next;
    Ok(())
}

/// Points the mount at `path` to `volume` (a mount of another path is added); a machine
/// mounts one volume at most.
pub fn set_mount(
    config: &mut MachineConfig,
    volume: String,
    path: String,
) -> Result<(), InputError> {
    if let Some(m) = config
        .mounts
        .iter_mut()
        .find(|m| m.path.as_deref() == Some(&path))
    {
        m.volume = Some(volume);
        m.name = None;
        return Ok(());
    }
    if !config.mounts.is_empty() {
        return Err(bad(
            "a machine mounts one volume at most (it has one already)",
        ));
    }
    config.mounts.push(MachineMount {
        volume: Some(volume),
        path: Some(path),
        ..MachineMount::default()
    });
    Ok(())
}

/// The volume a `-v` source names: a `vol_…` id as is, else an unattached volume of that
/// name (in `region` when given).
pub fn resolve_volume(
    volumes: &[Volume],
    source: &str,
    region: Option<&str>,
) -> Result<String, InputError> {
    if source.starts_with("vol_") {
        return Ok(source.to_string());
    }
    volumes
        .iter()
        .find(|v| free_volume(v, source, region))
        .map(|v| v.id.clone())
        .ok_or_else(|| {
            let r = region.map(|r| format!(" in region {r}")).unwrap_or_default();
            bad(format!(
                "no unattached volume named '{source}'{r}: create one with `hangar volumes create {source}{}`",
                region.map(|r| format!(" -r {r}")).unwrap_or_default()
            ))
        })
}

/// The machine a command is about when no id was given: the app's only live machine.
pub fn only_machine<'a>(machines: &'a [Machine], app: &str) -> Result<&'a Machine, InputError> {
    let live: Vec<&Machine> = machines
        .iter()
        .filter(|m| !matches!(m.state, MachineState::Destroyed | MachineState::Destroying))
        .collect();
    match live.as_slice() {
        [m] => Ok(m),
        [] => Err(bad(format!("app {app} has no machines"))),
        many => Err(bad(format!(
            "which machine? app {app} has {}: pass one of {}",
            many.len(),
            many.iter()
                .map(|m| format!("{} ({}, {})", m.id, m.name, m.state.as_str()))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// One difference between two configs: a leaf's path and its JSON values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// `env.GREETING`, `services[0].ports[1].handlers[0]`…
    pub path: String,
    /// The value before (`None`: added).
    pub old: Option<String>,
    /// The value after (`None`: removed).
    pub new: Option<String>,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.old, &self.new) {
            (Some(o), Some(n)) => write!(f, "~ {}: {o} -> {n}", self.path),
            (None, Some(n)) => write!(f, "+ {}: {n}", self.path),
            (Some(o), None) => write!(f, "- {}: {o}", self.path),
            (None, None) => write!(f, "  {}", self.path),
        }
    }
}

fn flatten(path: &str, v: &Value, out: &mut BTreeMap<String, String>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                flatten(&p, x, out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                flatten(&format!("{path}[{i}]"), x, out);
            }
        }
        Value::Null => {}
        leaf => {
            out.insert(path.to_string(), leaf.to_string());
        }
    }
}

/// What differs between two configs, leaf by leaf in path order (empty: nothing).
pub fn diff(old: &MachineConfig, new: &MachineConfig) -> Vec<Change> {
    let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
    flatten("", &serde_json::to_value(old).unwrap_or_default(), &mut a);
    flatten("", &serde_json::to_value(new).unwrap_or_default(), &mut b);
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| Change {
            path: k.clone(),
            old: a.get(k).cloned(),
            new: b.get(k).cloned(),
        })
        .collect()
}

/// `GET …/wait` for the first of `states` (of `instance`, when given); the state reached.
/// Loops past the API's 60 s per call until `timeout`.
pub async fn wait_for(
    client: &Client,
    app: &str,
    id: &str,
    states: &[&str],
    instance: Option<&str>,
    timeout: Duration,
) -> Result<String, ClientError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let secs = left.as_secs().clamp(1, 60);
        let mut path = format!(
            "/v1/apps/{}/machines/{}/wait?timeout={secs}",
            enc(app),
            enc(id)
        );
        for s in states {
            path.push_str(&format!("&state={}", enc(s)));
        }
        if let Some(i) = instance {
            path.push_str(&format!("&instance_id={}", enc(i)));
        }
        match client.get::<Value>(&path).await {
            Ok(v) => {
                return Ok(v
                    .get("state")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string());
            }
            Err(ClientError::Api { status: 408, .. }) if tokio::time::Instant::now() < deadline => {
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether a machine is running (or on its way there).
pub fn is_running(m: &Machine) -> bool {
    matches!(
        m.state,
        MachineState::Started | MachineState::Starting | MachineState::Restarting
    )
}

/// Updates one machine to `config` under its lease. `launch`: start the new version
/// (`Some(true)`), leave it stopped (`Some(false)`), or as the machine was (`None`: a running
/// machine is started again, a stopped one stays stopped). With `wait`, the new version is
/// waited for until started (or, not launched, until it has settled stopped). Returns the
/// updated machine (its new `instance_id`).
pub async fn update_one(
    client: &Client,
    app: &str,
    m: &Machine,
    config: MachineConfig,
    launch: Option<bool>,
    wait: Option<Duration>,
) -> Result<Machine, ClientError> {
    let ttl = wait.map_or(30, |w| w.as_secs().max(30) + 30);
    let lease = client
        .lease(app, &m.id, ttl, "hangar machine update")
        .await?;
    let nonce = lease.data.as_ref().map(|d| d.nonce.clone());
    let launch = launch.unwrap_or_else(|| is_running(m));
    let req = CreateMachineRequest {
        config,
        skip_launch: (!launch).then_some(true),
        ..CreateMachineRequest::default()
    };
    let out = client
        .update_machine(app, &m.id, &req, nonce.as_deref())
        .await;
    if let Some(n) = &nonce {
        // The lease goes with the version it was taken on; a failed release is harmless.
        let _ = client.release(app, &m.id, n).await;
    }
    let updated = out?;
    if let Some(timeout) = wait {
        let states: &[&str] = if launch {
            &["started"]
        } else {
            &["stopped", "suspended", "created"]
        };
        wait_for(
            client,
            app,
            &m.id,
            states,
            Some(&updated.instance_id),
            timeout,
        )
        .await?;
    }
    Ok(updated)
}

/// `machine clone` options.
#[derive(Debug, Clone, Default)]
pub struct CloneOptions {
    /// `-r`: the new machine's region (default: the source's, or the attached volume's).
    pub region: Option<String>,
    /// `--override-cmd` (split) or `--clear-cmd` (empty).
    pub cmd: Option<Vec<String>>,
    /// `--clear-auto-destroy`.
    pub clear_auto_destroy: bool,
    /// `--vm-*`.
    pub guest: GuestFlags,
}

/// The config of a clone of `source`: its config with the overrides; mounts are left to
/// [`clone_volume`].
pub fn clone_config(source: &Machine, o: &CloneOptions) -> Result<MachineConfig, InputError> {
    let mut config = source
        .config
        .clone()
        .ok_or_else(|| bad(format!("machine {} has no config to clone", source.id)))?;
    if !o.guest.is_empty() {
        let base = config.guest.take().or_else(|| {
            config
                .size
                .as_deref()
                .and_then(hangar_manifest::guest::preset)
        });
        config.size = None;
        config.guest = Some(guest(base, &o.guest)?);
    }
    if let Some(cmd) = &o.cmd {
        let mut init = config.init.take().unwrap_or_default();
        init.cmd = cmd.clone();
        config.init = (init != MachineInit::default()).then_some(init);
    }
    if o.clear_auto_destroy {
        config.auto_destroy = None;
    }
    config.mounts.clear();
    Ok(config)
}

/// What [`clone_volume`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloneVolume {
    /// The source mounts nothing and nothing was attached.
    None,
    /// A new, empty volume like the source's (as the reference: its name and size).
    Created(Volume),
    /// An existing unattached volume (`--attach-volume`).
    Attached(Volume),
}

/// The clone's volume, as the reference: with `attach` (`vol_id[:/path]`) that unattached
/// volume (its region is the clone's), else for a source that mounts one a new empty volume
/// of the same name and size in `region`. The mount goes into `config`; returns the region
/// the clone must run in with what was done.
pub async fn clone_volume(
    client: &Client,
    app: &str,
    source: &Machine,
    config: &mut MachineConfig,
    region: &str,
    region_given: bool,
    attach: Option<&str>,
) -> Result<(String, CloneVolume), ClientError> {
    let refuse = |status: u16, message: String| ClientError::Api {
        status,
        message,
        code: None,
    };
    let mount = source
        .config
        .as_ref()
        .and_then(|c| c.mounts.first().cloned());
    if let Some(spec) = attach {
        let (id, path) = match spec.split_once(':') {
            Some((id, p)) => (id, Some(p.to_string())),
            None => (spec, None),
        };
        let path = match (path, mount.as_ref().and_then(|m| m.path.clone())) {
            (Some(p), _) | (None, Some(p)) if p.starts_with('/') => p,
            _ => {
                return Err(refuse(
                    400,
                    format!(
                        "--attach-volume '{spec}' needs a mount path (the source mounts nothing): use <volume_id>:/path/inside/machine"
                    ),
                ));
            }
        };
        let v = client.volume(app, id).await?;
        if v.attached_machine_id
            .as_deref()
            .is_some_and(|m| !m.is_empty())
        {
            return Err(refuse(
                409,
                format!(
                    "volume {} is attached to machine {} already",
                    v.id,
                    v.attached_machine_id.as_deref().unwrap_or_default()
                ),
            ));
        }
        if region_given && v.region != region {
            return Err(refuse(
                400,
                format!(
                    "volume {} is in region {}, not {region}: leave -r out or use the volume's region",
                    v.id, v.region
                ),
            ));
        }
        config.mounts = vec![MachineMount {
            volume: Some(v.id.clone()),
            path: Some(path),
            name: Some(v.name.clone()),
            ..mount.unwrap_or_default()
        }];
        return Ok((v.region.clone(), CloneVolume::Attached(v)));
    }
    let Some(m) = mount else {
        return Ok((region.to_string(), CloneVolume::None));
    };
    let old = match m.volume.as_deref() {
        Some(id) => Some(client.volume(app, id).await?),
        None => None,
    };
    let name = m
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .or_else(|| old.as_ref().map(|v| v.name.clone()))
        .ok_or_else(|| {
            refuse(
                422,
                format!("machine {} mounts a volume without a name", source.id),
            )
        })?;
    let v = client
        .create_volume(
            app,
            &CreateVolumeRequest {
                name: name.clone(),
                region: region.to_string(),
                size_gb: old.as_ref().map(|v| v.size_gb).or(m.size_gb),
                encrypted: old.as_ref().map(|v| v.encrypted).or(m.encrypted),
                snapshot_retention: old.as_ref().and_then(|v| v.snapshot_retention),
                auto_backup_enabled: old.as_ref().and_then(|v| v.auto_backup_enabled),
                ..CreateVolumeRequest::default()
            },
        )
        .await?;
    config.mounts = vec![MachineMount {
        volume: Some(v.id.clone()),
        name: Some(name),
        path: m.path.clone(),
        extend_threshold_percent: m.extend_threshold_percent,
        add_size_gb: m.add_size_gb,
        size_gb_limit: m.size_gb_limit,
        ..MachineMount::default()
    }];
    Ok((region.to_string(), CloneVolume::Created(v)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(
        internal: i64,
        proto: &str,
        port: Option<i64>,
        range: Option<(i64, i64)>,
        handlers: &[&str],
    ) -> PortSpec {
        PortSpec {
            internal_port: internal,
            protocol: proto.into(),
            port,
            start_port: range.map(|r| r.0),
            end_port: range.map(|r| r.1),
            handlers: handlers.iter().map(|h| h.to_string()).collect(),
        }
    }

    #[test]
    fn ports_parse_as_the_reference_reads_them() {
        assert_eq!(
            parse_port("80").expect("ok"),
            spec(80, "tcp", Some(80), None, &[])
        );
        assert_eq!(
            parse_port("80:8080/tcp:http").expect("ok"),
            spec(8080, "tcp", Some(80), None, &["http"])
        );
        assert_eq!(
            parse_port("443:8080/tcp:tls:http").expect("ok"),
            spec(8080, "tcp", Some(443), None, &["tls", "http"])
        );
        assert_eq!(
            parse_port("5432/tcp:pg_tls").expect("ok"),
            spec(5432, "tcp", Some(5432), None, &["pg_tls"])
        );
        assert_eq!(
            parse_port("53/udp").expect("ok"),
            spec(53, "udp", Some(53), None, &[])
        );
        assert_eq!(
            parse_port("8000-8010:8080/tcp").expect("ok"),
            spec(8080, "tcp", None, Some((8000, 8010)), &[])
        );
        assert_eq!(
            parse_port("8000-8010").expect("ok"),
            spec(8000, "tcp", None, Some((8000, 8010)), &[])
        );
        assert_eq!(
            parse_port("80/TCP:-").expect("ok"),
            spec(80, "tcp", Some(80), None, &["-"])
        );
    }

    #[test]
    fn bad_ports_say_what_is_wrong_and_the_form() {
        for (input, says) in [
            ("", "--port needs a value"),
            ("http", "port 'http' is not a port number"),
            ("80:abc", "machine port 'abc' is not a port number"),
            ("0", "port '0' is not a port number"),
            ("70000", "port '70000' is not a port number"),
            ("80:81:82", "at most two ports"),
            ("80/sctp", "protocol 'sctp' is neither tcp nor udp"),
            ("80/", "protocol '' is neither tcp nor udp"),
            ("80/tcp/http", "one '/' at most"),
            ("80/tcp:htp", "unknown handler 'htp'"),
            ("80/tcp:http:", "unknown handler ''"),
            ("80/tcp:-:http", "unknown handler '-'"),
            ("53/udp:http", "udp ports take no handlers"),
            ("90-80:8080", "the range ends (80) before it starts (90)"),
            ("a-80", "range start 'a'"),
        ] {
            let e = parse_port(input).expect_err(input).to_string();
            assert!(e.contains(says), "{input}: {e}");
            assert!(
                e.contains(input) || input.is_empty(),
                "{input}: names the value: {e}"
            );
        }
    }

    #[test]
    fn ports_merge_into_services_by_machine_port_and_protocol() {
        let s = apply_ports(
            Vec::new(),
            &[
                parse_port("80:8080/tcp:http").expect("ok"),
                parse_port("443:8080/tcp:tls:http").expect("ok"),
                parse_port("53/udp").expect("ok"),
            ],
        );
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].internal_port, s[0].protocol.as_str()), (8080, "tcp"));
        assert_eq!(s[0].ports.len(), 2);
        assert_eq!(s[0].ports[1].handlers, vec!["tls", "http"]);
        // The same public port again: new handlers, no new port.
        let s = apply_ports(s, &[parse_port("80:8080/tcp:tls:http").expect("ok")]);
        assert_eq!(s[0].ports.len(), 2);
        assert_eq!(s[0].ports[0].handlers, vec!["tls", "http"]);
        // '-' removes the service.
        let s = apply_ports(s, &[parse_port("53/udp:-").expect("ok")]);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].internal_port, 8080);
    }

    #[test]
    fn kv_and_volume_flags() {
        let kv = parse_kv("--env", &["A=1".into(), "B=x=y".into(), "C=".into()]).expect("ok");
        assert_eq!(kv["B"], "x=y");
        assert_eq!(kv["C"], "");
        let e = parse_kv("--env", &["NOPE".into()])
            .expect_err("an error")
            .to_string();
        assert_eq!(e, "invalid --env 'NOPE': use NAME=VALUE");
        assert!(parse_kv("--metadata", &["=v".into()]).is_err());
        assert_eq!(
            parse_volume("data:/data").expect("ok"),
            ("data".to_string(), "/data".to_string())
        );
        assert!(parse_volume("data").is_err());
        assert!(parse_volume("data:rel").is_err());
    }

    #[test]
    fn run_flags_make_a_config() {
        let mut c = MachineConfig::default();
        apply(
            &mut c,
            &ConfigChange {
                creating: true,
                image: Some("img:1".into()),
                cmd: Some(vec!["sleep".into(), "1".into()]),
                env: vec!["A=1".into()],
                metadata: vec!["team=x".into()],
                ports: vec!["80:8080/tcp:http".into()],
                autostop: Some(Autostop::Stop),
                auto_destroy: Some(true),
                skip_dns_registration: true,
                ..ConfigChange::default()
            },
        )
        .expect("ok");
        assert_eq!(c.image, "img:1");
        assert_eq!(c.guest.as_ref().and_then(|g| g.memory_mb), Some(256));
        assert_eq!(c.init.as_ref().map(|i| i.cmd.len()), Some(2));
        assert_eq!(c.services[0].autostop, Some(Autostop::Stop));
        assert_eq!(c.services[0].autostart, None);
        assert_eq!(c.auto_destroy, Some(true));
        assert_eq!(
            c.restart.as_ref().and_then(|r| r.policy.clone()),
            Some(RestartPolicy::No)
        );
        assert_eq!(c.dns.as_ref().and_then(|d| d.skip_registration), Some(true));
        // A bad flag changes nothing.
        let before = c.clone();
        let e = apply(
            &mut c,
            &ConfigChange {
                env: vec!["B=2".into()],
                ports: vec!["80:x".into()],
                ..ConfigChange::default()
            },
        );
        assert!(e.is_err());
        assert_eq!(c, before);
    }

    #[test]
    fn a_size_in_the_base_config_is_where_the_guest_starts() {
        let mut c = MachineConfig {
            image: "i".into(),
            size: Some("shared-cpu-2x".into()),
            ..MachineConfig::default()
        };
        apply(
            &mut c,
            &ConfigChange {
                creating: true,
                guest: GuestFlags {
                    memory: Some("1gb".into()),
                    ..GuestFlags::default()
                },
                ..ConfigChange::default()
            },
        )
        .expect("ok");
        let g = c.guest.expect("ok");
        assert_eq!((g.cpus, g.memory_mb), (Some(2), Some(1024)));
        assert_eq!(c.size, None);
    }

    #[test]
    fn guests_follow_presets_then_flags_and_refuse_nonsense() {
        let g = guest(
            None,
            &GuestFlags {
                size: Some("performance-2x".into()),
                ..GuestFlags::default()
            },
        )
        .expect("ok");
        assert_eq!(
            (g.cpu_kind.as_deref(), g.cpus, g.memory_mb),
            (Some("performance"), Some(2), Some(4096))
        );
        assert_eq!(size_name(&g), "performance-2x");
        let e = guest(
            None,
            &GuestFlags {
                size: Some("shared-cpu-3x".into()),
                ..GuestFlags::default()
            },
        )
        .expect_err("an error")
        .to_string();
        assert!(
            e.starts_with("unknown VM size 'shared-cpu-3x'; use one of: shared-cpu-1x"),
            "{e}"
        );
        for f in [
            GuestFlags {
                memory: Some("0".into()),
                ..GuestFlags::default()
            },
            GuestFlags {
                memory: Some("lots".into()),
                ..GuestFlags::default()
            },
            GuestFlags {
                cpus: Some(0),
                ..GuestFlags::default()
            },
            GuestFlags {
                cpu_kind: Some("turbo".into()),
                ..GuestFlags::default()
            },
        ] {
            assert!(guest(None, &f).is_err(), "{f:?}");
        }
    }

    #[test]
    fn machine_config_json_merges_over_the_base() {
        let mut base = MachineConfig {
            image: "img:1".into(),
            ..MachineConfig::default()
        };
        base.env.insert("KEEP".into(), "1".into());
        let c =
            merge_config_json(&base, r#"{"env": {"NEW": "2"}, "auto_destroy": true}"#).expect("ok");
        assert_eq!(c.image, "img:1");
        assert_eq!(c.env.len(), 2);
        assert_eq!(c.auto_destroy, Some(true));
        for bad in ["{", "[]", r#"{"env": 3}"#] {
            let e = merge_config_json(&base, bad)
                .expect_err("an error")
                .to_string();
            assert!(e.starts_with("invalid --machine-config"), "{bad}: {e}");
        }
    }

    #[test]
    fn diffs_list_changed_added_and_removed_leaves() {
        let mut a = MachineConfig {
            image: "img:1".into(),
            ..MachineConfig::default()
        };
        a.env.insert("A".into(), "1".into());
        a.env.insert("GONE".into(), "x".into());
        let mut b = a.clone();
        b.env.insert("A".into(), "2".into());
        b.env.remove("GONE");
        b.metadata.insert("new".into(), "y".into());
        let d: Vec<String> = diff(&a, &b).iter().map(ToString::to_string).collect();
        assert_eq!(
            d,
            vec![
                "~ env.A: \"1\" -> \"2\"",
                "- env.GONE: \"x\"",
                "+ metadata.new: \"y\"",
            ]
        );
        assert!(diff(&a, &a).is_empty());
    }
}
