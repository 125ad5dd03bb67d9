//! `/v1/apps/{app}/machines…`: every machine verb. Handlers parse and check; the state change
//! goes through `hangar_domain::State::apply`, and the work is left to the agent as a
//! pending operation.

use std::collections::BTreeMap;
use std::time::Duration as StdDuration;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use hangar_api_types::{
    CreateMachineRequest, Duration, Machine, MachineEvent, MachineVersion, MetadataValue,
    OkResponse, SignalRequest, StartResponse, StopConfig, StopRequest,
};
use hangar_domain::{Action, MachineId, MachineName, State as MState, sixpn};
use hangar_store::{AppRecord, EventRecord, LeaseRecord, MachineRecord, PendingOp, VersionRecord};
use serde_json::json;

use super::apps::visible_app;
use crate::auth::Caller;
use crate::json::Body;
use crate::machine_view::{self, INLINE_EVENTS};
use crate::util::{nonce, now_ms, random, ulid};
use crate::{ApiError, ApiState};

/// Signals a machine may be sent or stopped with.
pub(crate) const SIGNALS: [&str; 8] = [
    "SIGINT", "SIGTERM", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGKILL", "SIGSTOP", "SIGHUP",
];
const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_STOP_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest `wait` (the reference caps it at 60 s).
const MAX_WAIT_SECS: u64 = 60;
/// Header carrying a lease nonce.
const LEASE_HEADER: &str = "fly-machine-lease-nonce";

/// Decoded query pairs (keys may repeat).
pub(crate) fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz");
                    match u8::from_str_radix(hex, 16) {
                        Ok(b) => {
                            out.push(b);
                            i += 2;
                        }
                        Err(_) => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    raw.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

pub(crate) fn first<'a>(q: &'a [(String, String)], key: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// A boolean query parameter: absent is false; Go's `strconv.ParseBool` spellings are read;
/// anything else (an empty value too) is a 400. Repeated keys must all be valid and the first
/// counts (Go's `Query().Get`).
pub(crate) fn flag(q: &[(String, String)], key: &str) -> Result<bool, ApiError> {
    let mut out = None;
    for (_, v) in q.iter().filter(|(k, _)| k == key) {
        let b = match v.as_str() {
            "1" | "t" | "T" | "true" | "TRUE" | "True" => true,
            "0" | "f" | "F" | "false" | "FALSE" | "False" => false,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "{key} must be true or false, not '{}'",
                    short(v).escape_default()
                )));
            }
        };
        out.get_or_insert(b);
    }
    Ok(out.unwrap_or(false))
}

pub(crate) fn load(
    s: &ApiState,
    c: &Caller,
    app: &str,
    id: &str,
) -> Result<(AppRecord, MachineRecord), ApiError> {
    let a = visible_app(s, c, app)?;
    MachineId::parse(id).map_err(|_| ApiError::not_found("machine"))?;
    let m = s
        .store
        .get_machine(&a.name, id)?
        .ok_or_else(|| ApiError::not_found("machine"))?;
    Ok((a, m))
}

/// A mutating call needs the lease nonce when someone holds the lease.
fn check_lease(s: &ApiState, m: &MachineRecord, headers: &HeaderMap) -> Result<(), ApiError> {
    if let Some(lease) = s.store.get_lease(&m.id, now_ms())? {
        let given = headers.get(LEASE_HEADER).and_then(|v| v.to_str().ok());
        if given != Some(lease.nonce.as_str()) {
            return Err(ApiError::lease_held(
                &lease.owner,
                lease.expires_at_ms / 1000,
            ));
        }
    }
    Ok(())
}

fn event(
    m: &MachineRecord,
    kind: &str,
    status: &str,
    source: &str,
    request: Option<serde_json::Value>,
) -> EventRecord {
    EventRecord {
        id: ulid().to_string(),
        machine_id: m.id.clone(),
        kind: kind.into(),
        status: status.into(),
        source: source.into(),
        timestamp: now_ms(),
        request,
    }
}

/// Applies a user action: legal transition, pending op for the agent, an event.
fn act(
    s: &ApiState,
    m: &MachineRecord,
    action: Action,
    pending: Option<PendingOp>,
    kind: &str,
) -> Result<MachineRecord, ApiError> {
    let next = m
        .state
        .apply(action)
        .map_err(|e| ApiError::precondition(format!("unable to {} machine: {e}", kind)))?;
    let mut rec = m.clone();
    rec.state = next;
    rec.pending = pending;
    rec.updated_at = now_ms();
    let stored = s.store.update_machine(&rec, m.revision)?;
    s.store
        .add_event(&event(&stored, kind, next.as_str(), "user", None))?;
    Ok(stored)
}

fn view(s: &ApiState, m: &MachineRecord, nonce: Option<String>) -> Result<Machine, ApiError> {
    let events = s.store.events(&m.id, INLINE_EVENTS)?;
    let checks = s.store.checks(&m.id)?;
    Ok(machine_view::machine(m, &events, &checks, nonce))
}

/// At most 64 characters of `s`, for quoting user input in a message.
fn short(s: &str) -> String {
    s.chars().take(64).collect()
}

/// An uploaded image (`registry.hangar.internal/<app>:<tag>`) may only be run by machines of
/// an app in the same org as the app it was uploaded to: a foreign or unknown one reads as
/// not found, so nothing is learnt about other orgs' apps.
fn check_upload_scope(s: &ApiState, app: &AppRecord, image: &str) -> Result<(), ApiError> {
    let Some(rest) = image
        .trim()
        .strip_prefix(super::images::UPLOAD_REGISTRY)
        .and_then(|r| r.strip_prefix('/'))
    else {
        return Ok(());
    };
    let owner = rest.split(['/', ':', '@']).next().unwrap_or_default();
    let same_org = s
        .store
        .get_app(owner)?
        .is_some_and(|o| o.org_slug == app.org_slug);
    if same_org {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "image '{}' not found: upload it to one of your apps first (POST /v1/apps/{{app}}/images)",
            short(image)
        )))
    }
}

fn validate_config(s: &ApiState, req: &CreateMachineRequest) -> Result<(), ApiError> {
    let image = req.config.image.as_str();
    if image.trim().is_empty() {
        return Err(ApiError::bad_request("config.image is required"));
    }
    if let Err(why) = hangar_domain::image_ref::check(image) {
        return Err(ApiError::bad_request(format!(
            "invalid image reference '{}': {why}",
            image.chars().take(300).collect::<String>().escape_default()
        )));
    }
    for (k, v) in &req.config.env {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(ApiError::bad_request(format!(
                "invalid env name '{}'",
                short(k).escape_default()
            )));
        }
        if v.contains('\0') {
            return Err(ApiError::bad_request(format!(
                "env {} has a NUL byte in its value",
                short(k).escape_default()
            )));
        }
    }
    if let Some(init) = &req.config.init
        && [&init.exec, &init.entrypoint, &init.cmd]
            .iter()
            .any(|argv| argv.iter().any(|a| a.contains('\0')))
    {
        return Err(ApiError::bad_request(
            "init.exec, init.entrypoint and init.cmd must not contain NUL bytes",
        ));
    }
    for (i, f) in req.config.files.iter().enumerate() {
        let p = std::path::Path::new(&f.guest_path);
        if !p.is_absolute()
            || f.guest_path.contains('\0')
            || p.components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(ApiError::bad_request(format!(
                "files[{i}].guest_path must be an absolute path without '..', not '{}'",
                short(&f.guest_path).escape_default()
            )));
        }
        let base64 = |c: u8| c.is_ascii_alphanumeric() || b"+-/_=".contains(&c);
        if f.raw_value
            .as_deref()
            .is_some_and(|r| !r.bytes().all(|c| base64(c) || c.is_ascii_whitespace()))
        {
            return Err(ApiError::bad_request(format!(
                "files[{i}].raw_value is not base64"
            )));
        }
    }
    if let Some(r) = &req.region
        && !s.config.regions.iter().any(|x| x == r)
    {
        return Err(ApiError::bad_request(format!(
            "unknown region '{}'; this platform has: {}",
            short(r).escape_default(),
            s.config.regions.join(", ")
        )));
    }
    if let Some(sc) = &req.config.stop_config
        && let Some(sig) = &sc.signal
    {
        signal_name(sig)?;
    }
    Ok(())
}

/// `min_secrets_version` (§2.10): refused while the app's secrets are older than asked for.
fn check_secrets_version(s: &ApiState, app: &str, min: Option<u64>) -> Result<(), ApiError> {
    let Some(min) = min.filter(|v| *v > 0) else {
        return Ok(());
    };
    let (_, have) = s.store.secrets(app)?;
    if have < min {
        return Err(ApiError::precondition(format!(
            "min_secrets_version {min} not reached: the app's secrets are at version {have}; set \
             the secrets first (POST /v1/apps/{app}/secrets), or leave min_secrets_version out"
        )));
    }
    Ok(())
}

/// A `size` preset becomes the guest it names (an explicit `guest` wins); unknown sizes are
/// refused with the list of presets.
fn resolve_size(config: &mut hangar_api_types::MachineConfig) -> Result<(), ApiError> {
    let Some(size) = config.size.as_deref().filter(|s| !s.is_empty()) else {
        return Ok(());
    };
    let preset = hangar_domain::guest::preset(size).ok_or_else(|| {
        ApiError::bad_request(format!(
            "unknown size '{}'; use one of {}",
            short(size).escape_default(),
            hangar_domain::guest::preset_names().join(", ")
        ))
    })?;
    if config.guest.is_none() {
        config.guest = Some(preset);
    }
    Ok(())
}

fn signal_name(sig: &str) -> Result<String, ApiError> {
    let up = sig.to_ascii_uppercase();
    let full = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    if SIGNALS.contains(&full.as_str()) {
        Ok(full)
    } else {
        Err(ApiError::bad_request(format!(
            "invalid signal '{}'; use one of {}",
            short(sig).escape_default(),
            SIGNALS.join(", ")
        )))
    }
}

pub(crate) async fn list(
    State(s): State<ApiState>,
    c: Caller,
    Path(app): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Vec<Machine>>, ApiError> {
    let a = visible_app(&s, &c, &app)?;
    let q = query_pairs(raw.as_deref());
    let include = flag(&q, "include_deleted")?;
    let region = first(&q, "region");
    let meta: Vec<(&str, &str)> = q
        .iter()
        .filter_map(|(k, v)| k.strip_prefix("metadata.").map(|k| (k, v.as_str())))
        .collect();
    let machines = s.store.list_machines(&a.name, include)?;
    // Events and checks of all of them in two queries, not two per machine.
    let mut events = s.store.app_events(&a.name, INLINE_EVENTS)?;
    let mut checks = s.store.app_checks(&a.name)?;
    let out = machines
        .iter()
        .filter(|m| region.is_none_or(|r| m.region == r))
        .filter(|m| {
            meta.iter()
                .all(|(k, v)| m.config.metadata.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|m| {
            let ev = events.remove(&m.id).unwrap_or_default();
            let ch = checks.remove(&m.id).unwrap_or_default();
            machine_view::machine(m, &ev, &ch, None)
        })
        .collect();
    Ok(Json(out))
}

pub(crate) async fn create(
    State(s): State<ApiState>,
    c: Caller,
    Path(app): Path<String>,
    Body(mut req): Body<CreateMachineRequest>,
) -> Result<Json<Machine>, ApiError> {
    let a = visible_app(&s, &c, &app)?;
    validate_config(&s, &req)?;
    check_upload_scope(&s, &a, &req.config.image)?;
    check_secrets_version(&s, &a.name, req.min_secrets_version)?;
    resolve_size(&mut req.config)?;
    let name = match &req.name {
        Some(n) if !n.is_empty() => {
            MachineName::parse(n).map_err(|e| ApiError::bad_request(e.to_string()))?
        }
        _ => MachineName::generate(u64::from_le_bytes(random::<8>())),
    };
    // A mounted volume: checked, and the machine goes where the volume is.
    let volume = super::volumes::mount_target(&s, &a, &req.config, req.region.as_deref(), None)?;
    if let (Some(v), Some(m)) = (&volume, req.config.mounts.first_mut())
        && m.name.as_deref().is_none_or(str::is_empty)
    {
        m.name = Some(v.name.clone());
    }
    let now = now_ms();
    // The app's network: its org's own, or the custom one it was created in (§4.4).
    let network_id = s.store.network_id(&a.org_slug, &a.network, now)?;
    let id = MachineId::from_bytes(random::<7>());
    let instance = ulid();
    let skip_launch = req.skip_launch.unwrap_or(false);
    let rec = MachineRecord {
        id: id.to_string(),
        app: a.name.clone(),
        name: name.to_string(),
        region: req
            .region
            .clone()
            .or_else(|| volume.as_ref().map(|v| v.region.clone()))
            .unwrap_or_else(|| s.config.region.clone()),
        state: MState::Creating,
        instance_id: instance.to_string(),
        config: req.config.clone(),
        image_ref: None,
        private_ip: sixpn::machine_addr(
            network_id,
            s.config.host_id,
            u32::from_le_bytes(random::<4>()),
        )
        .to_string(),
        host: volume
            .as_ref()
            .map_or_else(|| s.config.host_name.clone(), |v| v.host.clone()),
        cordoned: req.skip_service_registration.unwrap_or(false),
        pending: (!skip_launch).then_some(PendingOp::Start),
        restart_count: 0,
        created_at: now,
        updated_at: now,
        revision: 0,
    };
    if let Some(v) = &volume {
        super::volumes::attach(&s, v, &rec.id)?;
    }
    if let Err(e) = s.store.insert_machine(&rec) {
        if let Some(v) = &volume {
            super::volumes::detach(&s, &v.id, &rec.id);
        }
        return Err(e.into());
    }
    s.store
        .add_event(&event(&rec, "launch", "created", "user", None))?;
    let mut nonce_out = None;
    if let Some(ttl) = req.lease_ttl.filter(|t| *t > 0) {
        let lease = new_lease(&c, &rec, ttl, "created with lease".into());
        nonce_out = Some(s.store.acquire_lease(&lease, None, now)?.nonce);
    }
    let stored = s
        .store
        .get_machine(&a.name, &rec.id)?
        .ok_or_else(|| ApiError::not_found("machine"))?;
    Ok(Json(view(&s, &stored, nonce_out)?))
}

pub(crate) fn new_lease(
    c: &Caller,
    m: &MachineRecord,
    ttl_secs: i64,
    description: String,
) -> LeaseRecord {
    LeaseRecord {
        machine_id: m.id.clone(),
        nonce: nonce(),
        owner: c.owner(),
        description,
        expires_at_ms: now_ms() + ttl_secs.clamp(1, 3600) * 1000,
        version: m.instance_id.clone(),
    }
}

pub(crate) async fn get(
    State(s): State<ApiState>,
    c: Caller,
    Path((app, id)): Path<(String, String)>,
) -> Result<Json<Machine>, ApiError> {
    let (_, m) = load(&s, &c, &app, &id)?;
    Ok(Json(view(&s, &m, None)?))
}

pub(crate) async fn update(
    State(s): State<ApiState>,
    c: Caller,
    headers: HeaderMap,
    Path((app, id)): Path<(String, String)>,
    Body(mut req): Body<CreateMachineRequest>,
) -> Result<Json<Machine>, ApiError> {
    let (a, m) = load(&s, &c, &app, &id)?;
    check_lease(&s, &m, &headers)?;
    validate_config(&s, &req)?;
    check_upload_scope(&s, &a, &req.config.image)?;
    check_secrets_version(&s, &a.name, req.min_secrets_version)?;
    resolve_size(&mut req.config)?;
    if let Some(v) = &req.current_version
        && !v.is_empty()
        && v != &m.instance_id
    {
        return Err(ApiError::precondition(format!(
            "current_version {} does not match the machine's version {}",
            short(v).escape_default(),
            m.instance_id
        )));
    }
    // The volume of a machine stays (its mount path may change); one without a volume may
    // get one.
    let mut attach = None;
    let several = req.config.mounts.len() > 1;
    match (m.config.mounts.first(), req.config.mounts.first_mut()) {
        (Some(old), Some(new)) => {
            if new.volume.as_deref().is_none_or(str::is_empty) {
                new.volume = old.volume.clone();
            }
            if new.volume != old.volume || several {
                return Err(ApiError::bad_request(
                    "a machine's volume can not be changed by an update; destroy and recreate the machine",
                ));
            }
            if new.name.as_deref().is_none_or(str::is_empty) {
                new.name = old.name.clone();
            }
            super::volumes::mount_target(&s, &a, &req.config, Some(&m.region), Some(&m.id))?;
        }
        (Some(_), None) => {
            return Err(ApiError::bad_request(
                "a machine's volume can not be removed by an update; destroy and recreate the machine",
            ));
        }
        (None, Some(_)) => {
            attach =
                super::volumes::mount_target(&s, &a, &req.config, Some(&m.region), Some(&m.id))?;
            if let (Some(v), Some(new)) = (&attach, req.config.mounts.first_mut())
                && new.name.as_deref().is_none_or(str::is_empty)
            {
                new.name = Some(v.name.clone());
            }
        }
        (None, None) => {}
    }
    let launch = !req.skip_launch.unwrap_or(false);
    let next = m
        .state
        .apply(Action::Update)
        .map_err(|e| ApiError::precondition(format!("unable to update machine: {e}")))?;
    let instance = ulid();
    let mut rec = m.clone();
    rec.state = next;
    rec.config = req.config.clone();
    rec.instance_id = instance.to_string();
    rec.pending = Some(PendingOp::Update { launch });
    rec.updated_at = now_ms();
    if let Some(n) = req.name.as_deref().filter(|n| !n.is_empty()) {
        rec.name = MachineName::parse(n)
            .map_err(|e| ApiError::bad_request(e.to_string()))?
            .to_string();
    }
    if let Some(r) = &req.region
        && r != &m.region
    {
        return Err(ApiError::bad_request(
            "region can not be changed by an update",
        ));
    }
    if let Some(v) = &attach {
        if v.host != m.host {
            return Err(ApiError::unprocessable(format!(
                "volume {} lives on host {}; machine {} runs on {}",
                v.id, v.host, m.id, m.host
            )));
        }
        super::volumes::attach(&s, v, &m.id)?;
    }
    let stored = match s.store.update_machine(&rec, m.revision) {
        Ok(stored) => stored,
        Err(e) => {
            if let Some(v) = &attach {
                super::volumes::detach(&s, &v.id, &m.id);
            }
            return Err(e.into());
        }
    };
    s.store.add_version(&VersionRecord {
        machine_id: m.id.clone(),
        instance_id: stored.instance_id.clone(),
        config: stored.config.clone(),
        created_at: stored.updated_at,
    })?;
    s.store
        .add_event(&event(&stored, "update", next.as_str(), "user", None))?;
    Ok(Json(view(&s, &stored, None)?))
}

pub(crate) async fn start(
    State(s): State<ApiState>,
    c: Caller,
    headers: HeaderMap,
    Path((app, id)): Path<(String, String)>,
) -> Result<Json<StartResponse>, ApiError> {
    let (_, m) = load(&s, &c, &app, &id)?;
    check_lease(&s, &m, &headers)?;
    let previous = m.state;
    act(&s, &m, Action::Start, Some(PendingOp::Start), "start")?;
    Ok(Json(StartResponse {
        previous_state: Some(previous.to_api()),
        migrated: Some(false),
        new_host: Some(String::new()),
    }))
}

fn stop_config(
    m: &MachineRecord,
    signal: Option<&str>,
    timeout: Option<Duration>,
) -> Result<StopConfig, ApiError> {
    let base = m.config.stop_config.clone().unwrap_or_default();
    let signal = match signal.or(base.signal.as_deref()) {
        Some(sig) if !sig.is_empty() => signal_name(sig)?,
        _ => "SIGINT".to_string(),
    };
    let timeout = timeout.or(base.timeout).unwrap_or(DEFAULT_STOP_TIMEOUT);
    if timeout.0 < 0 {
        return Err(ApiError::bad_request("timeout must not be negative"));
    }
    Ok(StopConfig {
        signal: Some(signal),
        timeout: Some(Duration(timeout.0.min(MAX_STOP_TIMEOUT.0))),
    })
}

pub(crate) async fn stop(
    State(s): State<ApiState>,
    c: Caller,
    headers: HeaderMap,
    Path((app, id)): Path<(String, String)>,
    Body(req): Body<StopRequest>,
) -> Result<Json<OkResponse>, ApiError> {
    let (_, m) = load(&s, &c, &app, &id)?;
    check_lease(&s, &m, &headers)?;
    let stop = stop_config(&m, req.signal.as_deref(), req.timeout)?;
    act(&s, &m, Action::Stop, Some(PendingOp::Stop { stop }), "stop")?;
    Ok(Json(OkResponse { ok: true }))
}

pub(crate) async fn suspend(
    State(s): State<ApiState>,
    c: Caller,
    headers: HeaderMap,
    Path((app, id)): Path<(String, String)>,
) -> Result<Json<OkResponse>, ApiError> {
    let (_, m) = load(&s, &c, &app, &id)?;
    check_lease(&s, &m, &headers)?;
    act(&s, &m, Action::Suspend, Some(PendingOp::Suspend), "suspend")?;
    Ok(Json(OkResponse { ok: true }))
}

pub(crate) async fn restart(
    State(s): State<ApiState>,
    c: Caller,
    headers: HeaderMap,
    Path((app, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Json<OkResponse>, ApiError> {
    let (_, m) = load(&s, &c, &app, &id)?;
    check_lease(&s, &m, &headers)?;
    let q = query_pairs(raw.as_deref());
    let timeout = match first(&q, "timeout") {
        Some(t) if !t.is_empty() => Some(parse_duration_param(t)?),
        _ => None,
    };
    let mut stop = stop_config(&m, first(&q, "signal"), timeout)?;
    if flag(&q, "force_stop")? {
        stop.signal = Some("SIGKILL".into());
    }
    act(
        &s,
        &m,
        Action::Restart,
        Some(PendingOp::Restart { stop }),
        "restart",
    )?;
    Ok(Json(OkResponse { ok: true }))
}

/// A duration parameter: Go syntax, or a bare number of seconds.
fn parse_duration_param(t: &str) -> Result<Duration, ApiError> {
    if let Ok(secs) = t.parse::<i64>() {
        return Ok(Duration::from_secs(secs.clamp(0, 300)));
    }
    Duration::parse_go(t).map_err(|e| ApiError::bad_request(format!("invalid timeout: {e}")))
}

pub(crate) async fn signal(
    State(s): State<ApiState>,
    c: Caller,
    headers: HeaderMap,
    Path((app, id)): Path<(String, String)>,
    Body(req): Body<SignalRequest>,
) -> Result<Json<OkResponse>, ApiError> {
    let (_, m) = load(&s, &c, &app, &id)?;
    check_lease(&s, &m, &headers)?;
    let signal = signal_name(&req.signal)?;
    if m.state != MState::Started {
        return Err(ApiError::precondition(format!(
            "machine is {}; only a started machine can be signalled",
            m.state
        )));
    }
    if m.pending.is_some() {
        return Err(ApiError::precondition(
            "machine has an operation in progress; retry",
        ));
    }
    let mut rec = m.clone();
    rec.pending = Some(PendingOp::Signal { signal });
    rec.updated_at = now_ms();
    s.store.update_machine(&rec, m.revision)?;
    Ok(Json(OkResponse { ok: true }))
}

pub(crate) async fn destroy(
    State(s): State<ApiState>,
    c: Caller,
    headers: HeaderMap,
    Path((app, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Json<OkResponse>, ApiError> {
    let (_, m) = load(&s, &c, &app, &id)?;
    check_lease(&s, &m, &headers)?;
    let q = query_pairs(raw.as_deref());
    let force = flag(&q, "force")? || flag(&q, "kill")?;
    act(
        &s,
        &m,
        Action::Destroy { force },
        Some(PendingOp::Destroy { force }),
        "destroy",
    )?;
    Ok(Json(OkResponse { ok: true }))
}

async fn set_cordon(
    s: &ApiState,
    c: &Caller,
    headers: &HeaderMap,
    app: &str,
    id: &str,
    on: bool,
) -> Result<Json<OkResponse>, ApiError> {
    let (_, m) = load(s, c, app, id)?;
    check_lease(s, &m, headers)?;
    if m.cordoned != on {
        let mut rec = m.clone();
        rec.cordoned = on;
        rec.updated_at = now_ms();
        s.store.update_machine(&rec, m.revision)?;
    }
    Ok(Json(OkResponse { ok: true }))
}

pub(crate) async fn cordon(
    State(s): State<ApiState>,
    c: Caller,
    headers: HeaderMap,
    Path((app, id)): Path<(String, String)>,
) -> Result<Json<OkResponse>, ApiError> {
    set_cordon(&s, &c, &headers, &app, &id, true).await
}

pub(crate) async fn uncordon(
    State(s): State<ApiState>,
    c: Caller,
    headers: HeaderMap,
    Path((app, id)): Path<(String, String)>,
) -> Result<Json<OkResponse>, ApiError> {
    set_cordon(&s, &c, &headers, &app, &id, false).await
}

pub(crate) async fn wait(
    State(s): State<ApiState>,
    c: Caller,
    Path((app, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Json<serde_json::Value>, ApiError> {
    // Subscribed before the machine is read: a change committed between the read and the
    // subscription would otherwise be seen as already known, and the wait would sleep
    // through the very state it waits for.
    let mut rx = s.store.subscribe();
    let (a, m) = load(&s, &c, &app, &id)?;
    let q = query_pairs(raw.as_deref());
    let wanted: Vec<MState> = q
        .iter()
        .filter(|(k, _)| k == "state")
        .map(|(_, v)| {
            MState::parse(v).ok_or_else(|| {
                ApiError::bad_request(format!("invalid state '{}'", short(v).escape_default()))
            })
        })
        .collect::<Result<_, _>>()?;
    let wanted = if wanted.is_empty() {
        vec![MState::Started]
    } else {
        wanted
    };
    if let Some(bad) = wanted.iter().find(|w| {
        !matches!(
            w,
            MState::Started
                | MState::Stopped
                | MState::Suspended
                | MState::Destroyed
                | MState::Created
                | MState::Failed
        )
    }) {
        return Err(ApiError::bad_request(format!(
            "can not wait for state '{bad}'; use started, stopped, suspended, destroyed"
        )));
    }
    let secs = match first(&q, "timeout") {
        Some(t) if !t.is_empty() => t
            .trim_end_matches('s')
            .parse::<u64>()
            .map_err(|_| ApiError::bad_request("timeout must be a number of seconds"))?,
        _ => MAX_WAIT_SECS,
    }
    .clamp(1, MAX_WAIT_SECS);
    let version = first(&q, "instance_id")
        .or(first(&q, "version"))
        .filter(|v| !v.is_empty());
    let deadline = tokio::time::Instant::now() + StdDuration::from_secs(secs);
    let mut current = m;
    loop {
        let version_ok = version.is_none_or(|v| v == current.instance_id);
        if wanted.contains(&current.state) && version_ok && current.pending.is_none() {
            return Ok(Json(json!({"ok": true, "state": current.state.as_str()})));
        }
        if matches!(current.state, MState::Destroyed) && !wanted.contains(&MState::Destroyed) {
            return Err(ApiError::precondition(format!(
                "machine {} was destroyed while waiting for it to be {}",
                current.id,
                wanted
                    .iter()
                    .map(|w| w.as_str())
                    .collect::<Vec<_>>()
                    .join(" or ")
            )));
        }
        if version.is_some() && !version_ok && wanted.contains(&MState::Stopped) {
            // The version waited on was replaced: it is as stopped as it will ever be.
            return Ok(Json(json!({"ok": true, "state": "replaced"})));
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(ApiError::internal("store closed")),
            Err(_) => {
                let names: Vec<&str> = wanted.iter().map(|w| w.as_str()).collect();
                return Err(ApiError::timeout(format!(
                    "timed out after {secs}s waiting for machine {} to be {} (it is {})",
                    current.id,
                    names.join(" or "),
                    current.state
                )));
            }
        }
        current = match s.store.get_machine(&a.name, &current.id)? {
            Some(m) => m,
            None => return Err(ApiError::not_found("machine")),
        };
    }
}

pub(crate) async fn events(
    State(s): State<ApiState>,
    c: Caller,
    Path((app, id)): Path<(String, String)>,
) -> Result<Json<Vec<MachineEvent>>, ApiError> {
    let (_, m) = load(&s, &c, &app, &id)?;
    let events = s.store.events(&m.id, 100)?;
    Ok(Json(events.iter().map(machine_view::event).collect()))
}

pub(crate) async fn versions(
    State(s): State<ApiState>,
    c: Caller,
    Path((app, id)): Path<(String, String)>,
) -> Result<Json<Vec<MachineVersion>>, ApiError> {
    let (_, m) = load(&s, &c, &app, &id)?;
    let versions = s.store.versions(&m.id)?;
    Ok(Json(
        versions
            .into_iter()
            .map(|v| MachineVersion {
                version: v.instance_id,
                user_config: Some(v.config),
            })
            .collect(),
    ))
}

pub(crate) async fn metadata(
    State(s): State<ApiState>,
    c: Caller,
    Path((app, id)): Path<(String, String)>,
) -> Result<Json<BTreeMap<String, String>>, ApiError> {
    let (_, m) = load(&s, &c, &app, &id)?;
    Ok(Json(m.config.metadata))
}

fn valid_meta_key(k: &str) -> bool {
    (1..=256).contains(&k.len())
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

pub(crate) async fn set_metadata(
    State(s): State<ApiState>,
    c: Caller,
    headers: HeaderMap,
    Path((app, id, key)): Path<(String, String, String)>,
    Body(req): Body<MetadataValue>,
) -> Result<StatusCode, ApiError> {
    let (_, m) = load(&s, &c, &app, &id)?;
    check_lease(&s, &m, &headers)?;
    if !valid_meta_key(&key) {
        return Err(ApiError::bad_request(
            "metadata keys use letters, digits, '_', '-' and '.'",
        ));
    }
    let mut rec = m.clone();
    rec.config.metadata.insert(key, req.value);
    rec.updated_at = now_ms();
    s.store.update_machine(&rec, m.revision)?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn delete_metadata(
    State(s): State<ApiState>,
    c: Caller,
    headers: HeaderMap,
    Path((app, id, key)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let (_, m) = load(&s, &c, &app, &id)?;
    check_lease(&s, &m, &headers)?;
    let mut rec = m.clone();
    if rec.config.metadata.remove(&key).is_some() {
        rec.updated_at = now_ms();
        s.store.update_machine(&rec, m.revision)?;
    }
    Ok(StatusCode::NO_CONTENT)
}
