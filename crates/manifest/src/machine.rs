//! A manifest → the machine config each process group implies (PLATFORM.md §1.7–1.15 → §2.5).
//!
//! This is what `deploy` sends to the Machines API for every machine of a group, and what
//! `hangar config machines` prints.

use std::collections::BTreeMap;

use hangar_api_types::{
    CheckKind, File as ApiFile, MachineCheck as ApiCheck, MachineConfig, MachineHttpHeader,
    MachineInit, MachineMetrics, MachineMount, MachinePort, MachineRestart, MachineService,
    RestartPolicy, Static as ApiStatic, StopConfig,
};
use thiserror::Error;

use crate::groups::{group_matches, vm_for_group};
use crate::guest::{self, GuestError};
use crate::model::{
    Config, DEFAULT_GROUP, HttpCheck, HttpService, Service, TcpCheck, TopLevelCheck,
};
use crate::units;

/// Reads a file named in the manifest (`[[files]] local_path`, `machine_config`), relative
/// to the manifest's directory. The CLI passes one that reads the disk.
pub type FileReader<'a> = &'a dyn Fn(&str) -> Result<Vec<u8>, String>;

/// Inputs of a conversion that do not come from the manifest.
#[derive(Clone, Copy, Default)]
pub struct ConvertOptions<'a> {
    /// The image to run; defaults to `[build] image`.
    pub image: Option<&'a str>,
    /// Reader for files the manifest names; without one, `local_path` files are an error.
    pub read_file: Option<FileReader<'a>>,
}

impl std::fmt::Debug for ConvertOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConvertOptions")
            .field("image", &self.image)
            .field("read_file", &self.read_file.is_some())
            .finish()
    }
}

/// Why a group's machine config can not be built.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConvertError {
    /// The group is not in `[processes]`.
    #[error("no process group named '{0}' (groups: {1})")]
    UnknownGroup(String, String),
    /// The group's command does not shell-split.
    #[error("could not parse command for '{0}' process group: {1}")]
    Command(String, String),
    /// The `[[vm]]` is invalid.
    #[error("invalid [[vm]]: {0:?}")]
    Guest(GuestError),
    /// A file named by the manifest could not be read.
    #[error("can not read '{0}': {1}")]
    ReadFile(String, String),
    /// `machine_config` is not a valid machine config.
    #[error("machine_config is not a valid machine config: {0}")]
    BaseConfig(String),
}

/// Machine configs for every process group, by group name.
pub fn machine_configs(
    c: &Config,
    opts: ConvertOptions<'_>,
) -> Result<BTreeMap<String, MachineConfig>, ConvertError> {
    c.process_names()
        .into_iter()
        .map(|g| machine_config(c, &g, opts).map(|m| (g, m)))
        .collect()
}

/// The machine config of one process group.
pub fn machine_config(
    c: &Config,
    group: &str,
    opts: ConvertOptions<'_>,
) -> Result<MachineConfig, ConvertError> {
    let known = if c.processes.is_empty() {
        group == DEFAULT_GROUP
    } else {
        c.processes.contains_key(group)
    };
    if !known {
        let names = c.process_names().join(", ");
        return Err(ConvertError::UnknownGroup(group.into(), names));
    }
    let mut m = base_config(c, opts)?;
    if let Some(image) = opts
        .image
        .or(c.build.as_ref().and_then(|b| b.image.as_deref()))
    {
        m.image = image.to_string();
    }

    // init: the group's command (else `[experimental] cmd`, as the reference), entrypoint
    // and exec overrides, swap.
    let mut init = m.init.take().unwrap_or_default();
    let experimental_cmd = c
        .experimental
        .as_ref()
        .map(|x| &x.cmd)
        .filter(|c| !c.is_empty());
    if let Some(cmd) = c.processes.get(group).filter(|s| !s.is_empty()) {
        init.cmd = shell_words::split(cmd)
            .map_err(|e| ConvertError::Command(group.into(), e.to_string()))?;
    } else if let Some(cmd) = experimental_cmd {
        init.cmd = cmd.clone();
    }
    if let Some(x) = &c.experimental {
        if !x.entrypoint.is_empty() {
            init.entrypoint = x.entrypoint.clone();
        }
        if !x.exec.is_empty() {
            init.exec = x.exec.clone();
        }
    }
    if c.swap_size_mb.is_some() {
        init.swap_size_mb = c.swap_size_mb;
    }
    m.init = (init != MachineInit::default()).then_some(init);

    m.env.extend(c.env.clone());
    if let Some(r) = &c.primary_region {
        m.env.insert("PRIMARY_REGION".into(), r.clone());
    }
    m.env.insert("FLY_PROCESS_GROUP".into(), group.into());
    m.metadata
        .insert("fly_platform_version".into(), "v2".into());
    m.metadata.insert("fly_process_group".into(), group.into());

    m.services = c
        .http_service
        .iter()
        .map(http_service_as_service)
        .chain(c.services.iter().cloned())
        .filter(|s| group_matches(c, &s.processes, group))
        .map(|s| machine_service(&s))
        .collect();

    for (name, check) in &c.checks {
        if group_matches(c, &check.processes, group) {
            m.checks.insert(name.clone(), top_level_check(c, check));
        }
    }

    // The last matching [[restart]] wins, as in the reference.
    if let Some(r) = c
        .restart
        .iter()
        .rev()
        .find(|r| group_matches(c, &r.processes, group))
    {
        m.restart = Some(MachineRestart {
            policy: r.policy.as_deref().map(|p| match p {
                "never" => RestartPolicy::No,
                "always" => RestartPolicy::Always,
                _ => RestartPolicy::OnFailure,
            }),
            max_retries: r.retries,
        });
    }

    if let Some(mount) = c
        .mounts
        .iter()
        .find(|x| group_matches(c, &x.processes, group))
    {
        let gb = |s: &Option<String>| s.as_deref().and_then(|s| units::volume_gb(s).ok());
        m.mounts = vec![MachineMount {
            path: mount.destination.clone(),
            name: mount.source.clone(),
            extend_threshold_percent: mount.auto_extend_size_threshold,
            add_size_gb: gb(&mount.auto_extend_size_increment),
            size_gb_limit: gb(&mount.auto_extend_size_limit),
            ..MachineMount::default()
        }];
    }

    let mut g = match vm_for_group(c, group) {
        Some(vm) => guest::guest_for(vm).map_err(ConvertError::Guest)?,
        None => m.guest.take().unwrap_or_else(guest::default_guest),
    };
    if g.host_dedication_id.is_none() && c.host_dedication_id.is_some() {
        // A [[vm]]'s own host_dedication_id wins over the top-level one.
        g.host_dedication_id = c.host_dedication_id.clone();
    }
    m.guest = Some(g);

    if c.kill_signal.is_some() || c.kill_timeout.is_some() {
        m.stop_config = Some(StopConfig {
            signal: c.kill_signal.clone(),
            timeout: c.kill_timeout,
        });
    }

    // `[[statics]]` has no `processes` key: every group gets them, as in the reference (the
    // group serving HTTP need not be the default one).
    m.statics = c
        .statics
        .iter()
        .map(|s| ApiStatic {
            guest_path: s.guest_path.clone().unwrap_or_default(),
            url_prefix: s.url_prefix.clone().unwrap_or_default(),
            tigris_bucket: s.tigris_bucket.clone(),
            index_document: s.index_document.clone(),
        })
        .collect();

    if let Some(x) = c
        .metrics
        .iter()
        .find(|x| group_matches(c, &x.processes, group))
    {
        m.metrics = Some(MachineMetrics {
            port: x.port,
            path: x.path.clone(),
            https: x.https,
        });
    }

    for f in c
        .files
        .iter()
        .filter(|f| group_matches(c, &f.processes, group))
    {
        let mut file = ApiFile {
            guest_path: f.guest_path.clone().unwrap_or_default(),
            raw_value: f.raw_value.clone(),
            secret_name: f.secret_name.clone(),
            ..ApiFile::default()
        };
        if let Some(path) = &f.local_path {
            let read = opts.read_file.ok_or_else(|| {
                ConvertError::ReadFile(path.clone(), "no file reader given".into())
            })?;
            let bytes = read(path).map_err(|e| ConvertError::ReadFile(path.clone(), e))?;
            file.raw_value = Some(base64(&bytes));
        }
        m.files.push(file);
    }
    Ok(m)
}

fn base_config(c: &Config, opts: ConvertOptions<'_>) -> Result<MachineConfig, ConvertError> {
    let src = c.machine_config.as_deref().or(c
        .experimental
        .as_ref()
        .and_then(|x| x.machine_config.as_deref()));
    let Some(src) = src else {
        return Ok(MachineConfig::default());
    };
    let text = if src.trim_start().starts_with('{') {
        src.as_bytes().to_vec()
    } else {
        let read = opts.read_file.ok_or_else(|| {
            ConvertError::ReadFile(src.to_string(), "no file reader given".into())
        })?;
        read(src).map_err(|e| ConvertError::ReadFile(src.to_string(), e))?
    };
    serde_json::from_slice(&text).map_err(|e| ConvertError::BaseConfig(e.to_string()))
}

/// `[http_service]` as the `[[services]]` entry it stands for: ports 80 (`http`) and 443
/// (`http`, `tls`).
pub fn http_service_as_service(h: &HttpService) -> Service {
    let port80 = MachinePort {
        port: Some(80),
        handlers: vec!["http".into()],
        force_https: h.force_https.filter(|b| *b),
        http_options: h.http_options.clone(),
        ..MachinePort::default()
    };
    let port443 = MachinePort {
        port: Some(443),
        handlers: vec!["http".into(), "tls".into()],
        http_options: h.http_options.clone(),
        tls_options: h.tls_options.clone(),
        ..MachinePort::default()
    };
    Service {
        protocol: Some("tcp".into()),
        internal_port: h.internal_port,
        auto_stop_machines: h.auto_stop_machines,
        auto_start_machines: h.auto_start_machines,
        min_machines_running: h.min_machines_running,
        ports: vec![port80, port443],
        concurrency: h.concurrency.clone(),
        tcp_checks: Vec::new(),
        http_checks: h.checks.clone(),
        machine_checks: h.machine_checks.clone(),
        processes: h.processes.clone(),
    }
}

fn machine_service(s: &Service) -> MachineService {
    let mut checks: Vec<ApiCheck> = s.tcp_checks.iter().map(tcp_check).collect();
    checks.extend(s.http_checks.iter().map(http_check));
    MachineService {
        protocol: s
            .protocol
            .as_deref()
            .map_or_else(|| "tcp".into(), str::to_ascii_lowercase),
        internal_port: s.internal_port.unwrap_or(8080),
        autostop: s.auto_stop_machines.map(|a| a.to_api()),
        autostart: s.auto_start_machines,
        min_machines_running: s.min_machines_running,
        ports: s.ports.clone(),
        checks,
        concurrency: s.concurrency.clone(),
        ..MachineService::default()
    }
}

fn tcp_check(c: &TcpCheck) -> ApiCheck {
    ApiCheck {
        r#type: Some("tcp".into()),
        interval: c.interval,
        timeout: c.timeout,
        grace_period: c.grace_period,
        ..ApiCheck::default()
    }
}

fn headers(h: &BTreeMap<String, String>) -> Vec<MachineHttpHeader> {
    h.iter()
        .map(|(name, value)| MachineHttpHeader {
            name: name.clone(),
            values: vec![value.clone()],
        })
        .collect()
}

fn http_check(c: &HttpCheck) -> ApiCheck {
    ApiCheck {
        r#type: Some("http".into()),
        interval: c.interval,
        timeout: c.timeout,
        grace_period: c.grace_period,
        method: c.method.as_ref().map(|m| m.to_ascii_uppercase()),
        path: c.path.clone(),
        protocol: c.protocol.clone(),
        tls_skip_verify: c.tls_skip_verify,
        tls_server_name: c.tls_server_name.clone(),
        headers: headers(&c.headers),
        ..ApiCheck::default()
    }
}

fn top_level_check(c: &Config, t: &TopLevelCheck) -> ApiCheck {
    ApiCheck {
        r#type: t.check_type.clone(),
        port: t.port.or_else(|| {
            c.http_service
                .as_ref()
                .map(|h| h.internal_port.unwrap_or(8080))
        }),
        interval: t.interval,
        timeout: t.timeout,
        grace_period: t.grace_period,
        method: t.method.as_ref().map(|m| m.to_ascii_uppercase()),
        path: t.path.clone(),
        protocol: t.protocol.clone(),
        tls_skip_verify: t.tls_skip_verify,
        tls_server_name: t.tls_server_name.clone(),
        headers: headers(&t.headers),
        kind: t
            .kind
            .as_deref()
            .map(|k| k.parse::<CheckKind>().unwrap_or_default()),
    }
}

/// Standard base64 with padding.
pub(crate) fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].iter().enumerate() {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }
}
