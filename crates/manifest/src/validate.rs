//! Validation as the reference CLI does it (PLATFORM.md §1.16), plus the checks a platform
//! that actually runs the result needs (ports in range, known handlers, presets…).
//! Which findings are errors and which warnings follows the reference; where it is silent,
//! anything Hangar would refuse at deploy time is an error and anything it would accept but
//! probably not do what the user meant is a warning.

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::Manifest;
use crate::finding::{Finding, Report, Severity};
use crate::guest::{self, GuestError};
use crate::model::{Config, DEFAULT_GROUP, HttpCheck, Service, TcpCheck};
use crate::source::{Locator, Seg, path_string};
use crate::units;
use hangar_api_types::Duration;

/// What to validate beyond the reference's default rules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ValidateOptions {
    /// Report unknown sections and keys as errors (`--strict`).
    pub strict: bool,
}

/// Deploy strategies the reference accepts.
pub const STRATEGIES: [&str; 4] = ["rolling", "immediate", "canary", "bluegreen"];
/// Signals a machine may be stopped with.
pub const SIGNALS: [&str; 8] = [
    "SIGINT", "SIGTERM", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGKILL", "SIGSTOP", "SIGHUP",
];
/// Port handlers the proxy understands.
pub const HANDLERS: [&str; 4] = ["http", "tls", "pg_tls", "proxy_proto"];

pub(crate) fn key(k: &str) -> Seg {
    Seg::Key(k.to_string())
}

pub(crate) fn idx(i: usize) -> Seg {
    Seg::Index(i)
}

struct Ctx<'a> {
    m: &'a Manifest,
    locator: Locator<'a>,
    out: Vec<Finding>,
}

impl Ctx<'_> {
    fn push(&mut self, severity: Severity, path: Vec<Seg>, message: String, hint: Option<String>) {
        let pos = self.locator.locate(&path);
        let mut f = Finding::new(severity, &self.m.file, pos, &path_string(&path), message);
        f.hint = hint;
        self.out.push(f);
    }

    fn error(
        &mut self,
        path: Vec<Seg>,
        message: impl Into<String>,
        hint: impl Into<Option<String>>,
    ) {
        self.push(Severity::Error, path, message.into(), hint.into());
    }

    fn warn(
        &mut self,
        path: Vec<Seg>,
        message: impl Into<String>,
        hint: impl Into<Option<String>>,
    ) {
        self.push(Severity::Warning, path, message.into(), hint.into());
    }
}

fn one_of(list: &[&str]) -> String {
    list.join(", ")
}

/// Runs every rule and returns the findings in file order.
pub(crate) fn validate(m: &Manifest, opts: ValidateOptions) -> Report {
    let mut cx = Ctx {
        m,
        locator: Locator::new(&m.tree),
        out: m.parse_findings.clone(),
    };
    if opts.strict {
        for u in &m.unknown {
            let f = crate::strict::finding(&m.file, u);
            cx.out.push(f);
        }
    }
    let c = &m.config;
    app(&mut cx, c);
    top_level(&mut cx, c);
    build(&mut cx, c);
    deploy(&mut cx, c);
    env(&mut cx, c);
    processes(&mut cx, c);
    checks(&mut cx, c);
    services(&mut cx, c);
    mounts(&mut cx, c);
    restart(&mut cx, c);
    vms(&mut cx, c);
    statics(&mut cx, c);
    files(&mut cx, c);
    metrics(&mut cx, c);
    machine_checks(&mut cx, c);
    let mut report = Report { findings: cx.out };
    report.sort();
    report
}

/// Is `name` a valid app name: 1–63 of lowercase letters, digits and dashes, no dash at either end.
pub fn valid_app_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

fn app(cx: &mut Ctx<'_>, c: &Config) {
    match c.app.as_deref() {
        None | Some("") => cx.warn(
            vec![key("app")],
            "no app name in this file",
            Some("add app = \"my-app\" at the top, or pass -a/--app to every command".into()),
        ),
        Some(name) if !valid_app_name(name) => cx.error(
            vec![key("app")],
            format!("'{name}' is not a valid app name"),
            Some("app names use lowercase letters, digits and dashes (at most 63), e.g. app = \"my-app\"".into()),
        ),
        _ => {}
    }
}

fn top_level(cx: &mut Ctx<'_>, c: &Config) {
    if let Some(sig) = c.kill_signal.as_deref()
        && !SIGNALS.contains(&sig)
    {
        cx.error(
            vec![key("kill_signal")],
            format!("'{sig}' is not a signal a machine can be stopped with"),
            Some(format!("use one of {}", one_of(&SIGNALS))),
        );
    }
    if let Some(t) = c.kill_timeout {
        if t.0 < 0 {
            cx.error(
                vec![key("kill_timeout")],
                format!("kill_timeout {t} is negative"),
                Some("use a duration such as \"5s\"".into()),
            );
        } else if t.0 > Duration::from_secs(300).0 {
            cx.warn(
                vec![key("kill_timeout")],
                format!(
                    "kill_timeout {t} is longer than the 300s maximum; it will be capped at 5m0s"
                ),
                None,
            );
        }
    }
    if c.swap_size_mb.is_some_and(|s| s < 0) {
        cx.error(
            vec![key("swap_size_mb")],
            "swap_size_mb must not be negative",
            None,
        );
    }
    if let Some(cmd) = &c.console_command
        && shell_words::split(cmd).is_err()
    {
        cx.error(
            vec![key("console_command")],
            format!("can't shell split console command: '{cmd}'"),
            Some("balance the quotes in the command".into()),
        );
    }
}

fn build(cx: &mut Ctx<'_>, c: &Config) {
    if let Some(e) = &c.experimental {
        compression(
            cx,
            vec![key("experimental")],
            e.compression.as_deref(),
            e.compression_level,
        );
    }
    let Some(b) = &c.build else {
        return;
    };
    let mut strategies = Vec::new();
    if b.image.is_some() {
        strategies.push("the \"image\" docker image");
    }
    if b.builder.is_some() || !b.buildpacks.is_empty() {
        strategies.push("the \"builder\" buildpack builder");
    }
    if b.dockerfile.is_some() {
        strategies.push("the \"dockerfile\" dockerfile");
    }
    if b.builtin.is_some() {
        strategies.push("the \"builtin\" builtin");
    }
    if strategies.len() > 1 {
        cx.warn(
            vec![key("build")],
            format!(
                "more than one build configuration found: [{}]",
                strategies.join(", ")
            ),
            Some("keep exactly one of image, builder/buildpacks, dockerfile, builtin".into()),
        );
    }
    compression(
        cx,
        vec![key("build")],
        b.compression.as_deref(),
        b.compression_level,
    );
}

fn compression(cx: &mut Ctx<'_>, at: Vec<Seg>, kind: Option<&str>, level: Option<i64>) {
    if let Some(k) = kind
        && k != "gzip"
        && k != "zstd"
    {
        let mut p = at.clone();
        p.push(key("compression"));
        cx.error(
            p,
            format!("'{k}' is not a compression"),
            Some("use one of gzip, zstd".into()),
        );
    }
    if let Some(l) = level {
        let max = if kind == Some("zstd") { 22 } else { 9 };
        if !(0..=max).contains(&l) {
            let mut p = at;
            p.push(key("compression_level"));
            cx.error(
                p,
                format!("compression_level {l} is out of range"),
                Some(format!("use a level between 0 and {max}")),
            );
        }
    }
}

fn deploy(cx: &mut Ctx<'_>, c: &Config) {
    let Some(d) = &c.deploy else {
        return;
    };
    if let Some(cmd) = &d.release_command
        && shell_words::split(cmd).is_err()
    {
        cx.error(
            vec![key("deploy"), key("release_command")],
            format!("can't shell split release command: '{cmd}'"),
            Some("balance the quotes in the command".into()),
        );
    }
    if let Some(s) = d.strategy.as_deref() {
        if !STRATEGIES.contains(&s) {
            cx.error(
                vec![key("deploy"), key("strategy")],
                format!(
                    "'{s}' is not a strategy; use one of {}",
                    one_of(&STRATEGIES)
                ),
                Some(format!(
                    "set strategy = \"{}\"",
                    closest(s, &STRATEGIES).unwrap_or("rolling")
                )),
            );
        }
        if s == "canary" && !c.mounts.is_empty() {
            cx.error(
                vec![key("deploy"), key("strategy")],
                "canary deployment strategy is not supported when using mounted volumes",
                Some("use strategy = \"rolling\" for apps with [mounts]".into()),
            );
        }
        if s == "bluegreen" && !c.mounts.is_empty() {
            cx.warn(
                vec![key("deploy"), key("strategy")],
                "bluegreen deployments are rejected at deploy time for apps with mounted volumes",
                Some("use strategy = \"rolling\" for apps with [mounts]".into()),
            );
        }
        if s == "bluegreen" && !has_health_checks(c) {
            cx.warn(vec![key("deploy"), key("strategy")], "bluegreen needs at least one health check to know when the green machines are ready", Some("add [[http_service.checks]] or [[services.tcp_checks]]".into()));
        }
    }
    if let Some(mu) = d.max_unavailable {
        if mu <= 0.0 || !mu.is_finite() {
            cx.error(
                vec![key("deploy"), key("max_unavailable")],
                format!("max_unavailable must be greater than 0, got {mu}"),
                Some("use a count (>= 1) or a fraction such as 0.33".into()),
            );
        }
        let s = c.strategy();
        if s == "immediate" || s == "bluegreen" {
            cx.warn(
                vec![key("deploy"), key("max_unavailable")],
                format!("max_unavailable is ignored by the {s} strategy"),
                None,
            );
        }
    }
    for (name, v) in [
        ("wait_timeout", d.wait_timeout),
        ("release_command_timeout", d.release_command_timeout),
    ] {
        if v.is_some_and(|t| t.0 < 0) {
            cx.error(
                vec![key("deploy"), key(name)],
                format!("{name} must not be negative"),
                None,
            );
        }
    }
}

fn has_health_checks(c: &Config) -> bool {
    c.http_service
        .as_ref()
        .is_some_and(|h| !h.checks.is_empty())
        || c.services
            .iter()
            .any(|s| !s.tcp_checks.is_empty() || !s.http_checks.is_empty())
        || !c.checks.is_empty()
}

fn env(cx: &mut Ctx<'_>, c: &Config) {
    for name in c.env.keys() {
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            cx.error(
                vec![key("env"), key(name)],
                format!("'{name}' is not a valid environment variable name"),
                Some("names must be non-empty and contain no '=' or NUL".into()),
            );
        } else if name.starts_with("FLY_") {
            cx.warn(vec![key("env"), key(name)], format!("{name} is reserved: names starting with FLY_ are set by the platform and will be overridden"), Some("rename the variable".into()));
        }
    }
}

fn processes(cx: &mut Ctx<'_>, c: &Config) {
    for (name, cmd) in &c.processes {
        if name.is_empty() {
            cx.error(
                vec![key("processes")],
                "process group names must not be empty",
                None,
            );
        }
        if !cmd.is_empty()
            && let Err(e) = shell_words::split(cmd)
        {
            cx.error(
                vec![key("processes"), key(name)],
                format!("could not parse command for '{name}' process group: {e}"),
                Some("check the quotes in the [processes] section".into()),
            );
        }
    }
}

fn unknown_groups(cx: &mut Ctx<'_>, c: &Config, at: Vec<Seg>, what: &str, groups: &[String]) {
    for g in groups {
        if !is_group(c, g) {
            let mut p = at.clone();
            p.push(key("processes"));
            cx.error(
                p,
                format!("{what} specifies '{g}' as one of its processes, but no processes are defined with that name"),
                Some(format!("add '{g}' to [processes] or remove it from this processes list (groups: {})", group_list(c))),
            );
        }
    }
}

/// Is `name` one of the app's process groups (`app` when there is no `[processes]`)?
fn is_group(c: &Config, name: &str) -> bool {
    if c.processes.is_empty() {
        name == DEFAULT_GROUP
    } else {
        c.processes.contains_key(name)
    }
}

/// The group names for a hint, at most ten of them.
fn group_list(c: &Config) -> String {
    const SHOWN: usize = 10;
    if c.processes.is_empty() {
        return DEFAULT_GROUP.to_string();
    }
    let mut list = c
        .processes
        .keys()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if c.processes.len() > SHOWN {
        list.push_str(&format!(" and {} more", c.processes.len() - SHOWN));
    }
    list
}

/// For every group that more than one item applies to, the index of the second such item,
/// by group name. `lists` are the items' `processes`; an empty one applies to the default
/// group when `empty_is_default`, else to none. Linear in the items.
fn second_item_per_group<'c>(
    c: &Config,
    lists: impl Iterator<Item = &'c [String]>,
    empty_is_default: bool,
) -> BTreeMap<String, usize> {
    let default = c.default_group();
    // group → (items so far, index of the second)
    let mut seen: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for (i, list) in lists.enumerate() {
        let mut groups: Vec<&str> = if list.is_empty() {
            if empty_is_default {
                vec![default.as_str()]
            } else {
                Vec::new()
            }
        } else {
            list.iter()
                .map(String::as_str)
                .filter(|g| is_group(c, g))
                .collect()
        };
        groups.sort_unstable();
        groups.dedup();
        for g in groups {
            let e = seen.entry(g.to_string()).or_insert((0, 0));
            e.0 += 1;
            if e.0 == 2 {
                e.1 = i;
            }
        }
    }
    seen.into_iter()
        .filter(|(_, (n, _))| *n > 1)
        .map(|(g, (_, i))| (g, i))
        .collect()
}

fn checks(cx: &mut Ctx<'_>, c: &Config) {
    for (name, check) in &c.checks {
        let at = vec![key("checks"), key(name)];
        match check.check_type.as_deref() {
            Some("http" | "tcp") => {}
            Some(t) => cx.error(
                at_key(&at, "type"),
                format!("check '{name}' has type '{t}'; use one of http, tcp"),
                None,
            ),
            None => cx.error(
                at.clone(),
                format!("check '{name}' has no type"),
                Some("add type = \"http\" or type = \"tcp\"".into()),
            ),
        }
        if check.port.is_none() && c.http_service.is_none() {
            cx.error(
                at.clone(),
                format!(
                    "check '{name}' has no port and there is no [http_service] to take it from"
                ),
                Some("add port = 8080 (the port your app listens on)".into()),
            );
        }
        if let Some(p) = check.port {
            port_range(cx, at_key(&at, "port"), p);
        }
        if let Some(i) = check.interval
            && i.0 < Duration::from_secs(2).0
        {
            cx.error(
                at_key(&at, "interval"),
                format!("check '{name}' interval is too short: {i}, minimum is 2 seconds"),
                Some("use interval = \"15s\"".into()),
            );
        }
        if let Some(t) = check.timeout
            && t.0 > Duration::from_secs(60).0
        {
            cx.error(
                at_key(&at, "timeout"),
                format!("check '{name}' timeout is too long: {t}, maximum is 60 seconds"),
                Some("use timeout = \"10s\"".into()),
            );
        }
        if let Some(k) = check.kind.as_deref()
            && k != "informational"
            && k != "readiness"
        {
            cx.error(
                at_key(&at, "kind"),
                format!("'{k}' is not a check kind; use informational or readiness"),
                None,
            );
        }
        if let Some(p) = check.protocol.as_deref()
            && p != "http"
            && p != "https"
        {
            cx.error(
                at_key(&at, "protocol"),
                format!("'{p}' is not a check protocol; use http or https"),
                None,
            );
        }
        unknown_groups(cx, c, at, "Check", &check.processes);
    }
}

fn at_key(at: &[Seg], k: &str) -> Vec<Seg> {
    let mut p = at.to_vec();
    p.push(key(k));
    p
}

fn port_range(cx: &mut Ctx<'_>, path: Vec<Seg>, p: i64) {
    if !(1..=65535).contains(&p) {
        cx.error(
            path,
            format!("port {p} is out of range"),
            Some("ports are between 1 and 65535".into()),
        );
    }
}

fn services(cx: &mut Ctx<'_>, c: &Config) {
    let process_count = c.processes.len();
    let mut all: Vec<(Vec<Seg>, Service)> = Vec::new();
    if let Some(h) = &c.http_service {
        all.push((
            vec![key("http_service")],
            crate::machine::http_service_as_service(h),
        ));
    }
    for (i, s) in c.services.iter().enumerate() {
        all.push((vec![key("services"), idx(i)], s.clone()));
    }
    for (at, s) in &all {
        let is_http_service = matches!(at.first(), Some(Seg::Key(k)) if k == "http_service");
        if s.processes.is_empty() && process_count > 0 {
            cx.error(
                at.clone(),
                format!(
                    "service has no processes set but app has {process_count} processes defined"
                ),
                Some(format!(
                    "add processes = [\"{}\"] to this service",
                    c.default_group()
                )),
            );
        }
        unknown_groups(cx, c, at.clone(), "Service", &s.processes);
        if let Some(p) = s.protocol.as_deref() {
            let lower = p.to_ascii_lowercase();
            if lower != "tcp" && lower != "udp" {
                cx.error(
                    at_key(at, "protocol"),
                    format!("'{p}' is not a service protocol; use tcp or udp"),
                    None,
                );
            } else if lower != p {
                cx.warn(
                    at_key(at, "protocol"),
                    format!("protocol '{p}' is read as '{lower}'"),
                    Some(format!("write protocol = \"{lower}\"")),
                );
            }
        }
        match s.internal_port {
            Some(p) => port_range(cx, at_key(at, "internal_port"), p),
            None if is_http_service => cx.warn(
                at.clone(),
                "[http_service] has no internal_port; 8080 is assumed",
                Some("add internal_port = 8080 (the port your app listens on)".into()),
            ),
            None => {}
        }
        if s.ports.is_empty() && !is_http_service {
            cx.warn(
                at.clone(),
                "service must expose at least one port",
                Some("add a [[services.ports]] section, e.g. port = 443 with handlers = [\"tls\", \"http\"]".into()),
            );
        }
        if !is_http_service {
            for (j, port) in s.ports.iter().enumerate() {
                let pp = vec![at[0].clone(), at[1].clone(), key("ports"), idx(j)];
                match (port.port, port.start_port, port.end_port) {
                    (Some(p), _, _) => port_range(cx, at_key(&pp, "port"), p),
                    (None, Some(a), Some(b)) => {
                        port_range(cx, at_key(&pp, "start_port"), a);
                        port_range(cx, at_key(&pp, "end_port"), b);
                        if a > b {
                            cx.error(
                                pp.clone(),
                                format!("start_port {a} is greater than end_port {b}"),
                                None,
                            );
                        }
                    }
                    _ => cx.error(
                        pp.clone(),
                        "port needs either port or start_port and end_port",
                        Some("add port = 443".into()),
                    ),
                }
                for h in &port.handlers {
                    if h == "edge_http" {
                        cx.warn(
                            at_key(&pp, "handlers"),
                            "the edge_http handler is legacy and unsupported; it is ignored",
                            Some("use handlers = [\"http\"]".into()),
                        );
                    } else if !HANDLERS.contains(&h.as_str()) {
                        cx.error(
                            at_key(&pp, "handlers"),
                            format!("'{h}' is not a handler; use any of {}", one_of(&HANDLERS)),
                            None,
                        );
                    }
                }
                if let Some(v) = port
                    .proxy_proto_options
                    .as_ref()
                    .and_then(|o| o.version.as_deref())
                    && v != "v1"
                    && v != "v2"
                {
                    cx.error(
                        at_key(&pp, "proxy_proto_options"),
                        format!("'{v}' is not a PROXY protocol version; use v1 or v2"),
                        None,
                    );
                }
            }
        }
        if s.min_machines_running.is_some_and(|n| n < 0) {
            cx.error(
                at_key(at, "min_machines_running"),
                "min_machines_running must not be negative",
                None,
            );
        }
        if let Some(conc) = &s.concurrency {
            let cp = at_key(at, "concurrency");
            if let Some(t) = &conc.r#type {
                let t = t.as_str();
                if t != "connections" && t != "requests" {
                    cx.error(
                        cp.clone(),
                        format!("'{t}' is not a concurrency type; use connections or requests"),
                        None,
                    );
                }
            }
            if conc.soft_limit.is_some_and(|n| n < 0) || conc.hard_limit.is_some_and(|n| n < 0) {
                cx.error(cp.clone(), "concurrency limits must not be negative", None);
            }
            if let (Some(soft), Some(hard)) = (conc.soft_limit, conc.hard_limit)
                && soft > hard
            {
                cx.warn(cp, format!("soft_limit {soft} is above hard_limit {hard}; the soft limit will never apply"), Some("set soft_limit below hard_limit".into()));
            }
        }
        let check_key = if is_http_service {
            "checks"
        } else {
            "tcp_checks"
        };
        for (j, chk) in s.tcp_checks.iter().enumerate() {
            let TcpCheck {
                interval,
                timeout,
                grace_period,
            } = chk;
            service_check_durations(
                cx,
                vec![at[0].clone(), at[1].clone(), key(check_key), idx(j)],
                "TCP",
                *interval,
                *timeout,
                *grace_period,
            );
        }
        let check_key = if is_http_service {
            "checks"
        } else {
            "http_checks"
        };
        for (j, chk) in s.http_checks.iter().enumerate() {
            let HttpCheck {
                interval,
                timeout,
                grace_period,
                ..
            } = chk;
            let cp = if is_http_service {
                vec![key("http_service"), key(check_key), idx(j)]
            } else {
                vec![at[0].clone(), at[1].clone(), key(check_key), idx(j)]
            };
            service_check_durations(cx, cp, "HTTP", *interval, *timeout, *grace_period);
        }
    }
}

fn service_check_durations(
    cx: &mut Ctx<'_>,
    at: Vec<Seg>,
    proto: &str,
    interval: Option<Duration>,
    timeout: Option<Duration>,
    grace: Option<Duration>,
) {
    let second = Duration::from_secs(1).0;
    let minute = Duration::from_secs(60).0;
    for (name, d, zero_ok, what) in [
        ("interval", interval, false, "an interval"),
        ("timeout", timeout, false, "a timeout"),
        ("grace_period", grace, true, "a grace period"),
    ] {
        let Some(d) = d else { continue };
        let p = at_key(&at, name);
        if zero_ok && d.0 != 0 && d.0 < second {
            cx.warn(p, format!("service {proto} check has {what} that is non-zero and less than 1 second ({d}); this will be raised to 1 second"), None);
        } else if !zero_ok && d.0 < second {
            cx.warn(p, format!("service {proto} check has {what} less than 1 second ({d}); this will be raised to 1 second"), Some(format!("write {name} as a duration such as \"15s\"; a bare number means milliseconds")));
        } else if d.0 > minute {
            cx.warn(p, format!("service {proto} check has {what} greater than 1 minute ({d}); this will be lowered to 1 minute"), None);
        }
    }
}

fn mounts(cx: &mut Ctx<'_>, c: &Config) {
    let lists = c.mounts.iter().map(|m| m.processes.as_slice());
    for (group, second) in second_item_per_group(c, lists, true) {
        cx.error(
            vec![key("mounts"), idx(second)],
            format!("group '{group}' has more than one [[mounts]] section defined"),
            Some("a machine mounts one volume; give each mount its own processes list".into()),
        );
    }
    for (i, m) in c.mounts.iter().enumerate() {
        let at = vec![key("mounts"), idx(i)];
        let src = m.source.clone().unwrap_or_default();
        if src.is_empty() {
            cx.error(
                at.clone(),
                "mount has no source (the volume name)",
                Some("add source = \"data\"".into()),
            );
        }
        match m.destination.as_deref() {
            None | Some("") => cx.error(
                at.clone(),
                format!("mount '{src}' has no destination"),
                Some("add destination = \"/data\"".into()),
            ),
            Some("/") => cx.error(
                at_key(&at, "destination"),
                format!("mount '{src}' can not be mounted at /"),
                Some("mount it at a directory such as /data".into()),
            ),
            Some(d) if !d.starts_with('/') => cx.error(
                at_key(&at, "destination"),
                format!("mount destination '{d}' must be an absolute path"),
                None,
            ),
            _ => {}
        }
        if let Some(s) = &m.initial_size {
            match units::volume_gb(s) {
                Err(e) => cx.error(
                    at_key(&at, "initial_size"),
                    format!("mount '{src}' with initial_size '{s}' will fail because of: {e}"),
                    Some("write a size such as \"10gb\" or a number of GB".into()),
                ),
                Ok(v) if v < 1 => cx.error(
                    at_key(&at, "initial_size"),
                    format!(
                        "mount '{src}' has an initial_size '{s}' value which is smaller than 1GB"
                    ),
                    None,
                ),
                _ => {}
            }
        }
        if m.snapshot_retention.is_some_and(|r| !(1..=60).contains(&r)) {
            cx.error(at_key(&at, "snapshot_retention"), format!("mount '{src}' has a snapshot_retention value which is not between 1 and 60 days inclusive"), None);
        }
        let mut inc = 0;
        let mut limit = 0;
        for (name, v, slot) in [
            (
                "auto_extend_size_increment",
                &m.auto_extend_size_increment,
                &mut inc,
            ),
            (
                "auto_extend_size_limit",
                &m.auto_extend_size_limit,
                &mut limit,
            ),
        ] {
            if let Some(s) = v {
                match units::volume_gb(s) {
                    Err(e) => cx.error(
                        at_key(&at, name),
                        format!("mount '{src}' with {name} '{s}' will fail because of: {e}"),
                        None,
                    ),
                    Ok(v) if v < 1 => cx.error(
                        at_key(&at, name),
                        format!(
                            "mount '{src}' has an {name} '{s}' value which is smaller than 1GB"
                        ),
                        None,
                    ),
                    Ok(v) => *slot = v,
                }
            }
        }
        let threshold = m.auto_extend_size_threshold.unwrap_or(0);
        if threshold != 0 || inc != 0 || limit != 0 {
            // As the reference: a threshold alone, with neither increment nor limit, is an error.
            if threshold != 0 && inc == 0 && limit == 0 {
                cx.error(at.clone(), format!("mount '{src}' auto_extend_size_threshold, auto_extend_size_increment and auto_extend_size_limit must be all defined or none"), None);
            }
            if !(50..=99).contains(&threshold) {
                cx.error(
                    at_key(&at, "auto_extend_size_threshold"),
                    format!("mount '{src}' auto_extend_size_threshold must be between 50 and 99"),
                    None,
                );
            }
            if !(1..=100).contains(&inc) {
                cx.error(
                    at_key(&at, "auto_extend_size_increment"),
                    format!(
                        "mount '{src}' auto_extend_size_increment must be between 1GB and 100GB"
                    ),
                    None,
                );
            }
            if limit != 0 && !(1..=500).contains(&limit) {
                cx.error(
                    at_key(&at, "auto_extend_size_limit"),
                    format!("mount '{src}' auto_extend_size_limit must be between 1GB and 500GB"),
                    None,
                );
            }
        }
        unknown_groups(cx, c, at, "Mount", &m.processes);
    }
}

fn restart(cx: &mut Ctx<'_>, c: &Config) {
    for (i, r) in c.restart.iter().enumerate() {
        let at = vec![key("restart"), idx(i)];
        unknown_groups(cx, c, at.clone(), "Restart policy", &r.processes);
        match r.policy.as_deref() {
            Some("always" | "never" | "on-failure") => {}
            Some(p) => cx.error(
                at_key(&at, "policy"),
                format!("invalid restart policy '{p}'; use one of always, never, on-failure"),
                None,
            ),
            None => cx.error(
                at.clone(),
                "restart has no policy",
                Some("add policy = \"on-failure\"".into()),
            ),
        }
        if r.retries.is_some_and(|n| n < 0) {
            cx.error(at_key(&at, "retries"), "retries must not be negative", None);
        }
    }
}

fn vms(cx: &mut Ctx<'_>, c: &Config) {
    for (i, vm) in c.vm.iter().enumerate() {
        let at = vec![key("vm"), idx(i)];
        unknown_groups(cx, c, at.clone(), "VM", &vm.processes);
        match guest::guest_for(vm) {
            Err(GuestError::UnknownSize { size, valid }) => cx.error(
                at_key(&at, "size"),
                format!("'{size}' is not a valid VM size"),
                Some(format!("use one of {}", valid.join(", "))),
            ),
            Err(GuestError::Memory(e)) => cx.error(
                at_key(&at, "memory"),
                format!("invalid memory size: {e}"),
                Some("write memory as \"1gb\", \"512mb\" or a number of MB".into()),
            ),
            Err(GuestError::ZeroMemory) => cx.error(
                at_key(
                    &at,
                    if vm.memory.is_some() {
                        "memory"
                    } else {
                        "memory_mb"
                    },
                ),
                "memory must be greater than zero",
                None,
            ),
            Err(GuestError::CpuKind(k)) => cx.error(
                at_key(&at, "cpu_kind"),
                format!("'{k}' is not a CPU kind; use shared or performance"),
                None,
            ),
            Err(GuestError::Cpus(n)) => cx.error(
                at_key(&at, "cpus"),
                format!("cpus must be at least 1, got {n}"),
                None,
            ),
            Ok(g) => {
                if let Some(w) = guest::bounds_warning(&g) {
                    cx.warn(at.clone(), w, None);
                }
            }
        }
        if let Some(p) = vm.persist_rootfs.as_deref()
            && !["never", "restart", "always"].contains(&p)
        {
            cx.error(
                at_key(&at, "persist_rootfs"),
                format!("'{p}' is not a persist_rootfs value; use never, restart or always"),
                None,
            );
        }
    }
    // More than one [[vm]] naming a group: only the first counts.
    let lists = c.vm.iter().map(|v| v.processes.as_slice());
    for (group, second) in second_item_per_group(c, lists, false) {
        cx.warn(
            vec![key("vm"), idx(second)],
            format!("group '{group}' has more than one [[vm]]; only the last applies"),
            None,
        );
    }
}

fn statics(cx: &mut Ctx<'_>, c: &Config) {
    if c.statics.len() > 10 {
        cx.error(
            vec![key("statics"), idx(10)],
            format!(
                "{} [[statics]] sections; at most 10 are allowed",
                c.statics.len()
            ),
            None,
        );
    }
    // Normalised prefix ("/static/") → the first static using it. One error per overlapping
    // static, naming the first earlier one it overlaps, keeps this near-linear even for a
    // hostile file of thousands of identical prefixes.
    let mut earlier: BTreeMap<String, usize> = BTreeMap::new();
    for (i, s) in c.statics.iter().enumerate() {
        let at = vec![key("statics"), idx(i)];
        if s.guest_path.as_deref().is_none_or(str::is_empty) && s.tigris_bucket.is_none() {
            cx.error(
                at.clone(),
                "static has no guest_path",
                Some("add guest_path = \"/app/public\"".into()),
            );
        }
        match s.url_prefix.as_deref() {
            None | Some("") => cx.error(
                at.clone(),
                "static has no url_prefix",
                Some("add url_prefix = \"/static\"".into()),
            ),
            Some(p) => {
                let norm = format!("{}/", p.trim_end_matches('/'));
                // Earlier prefixes that this one starts with (they end at one of its '/') …
                let shorter = norm
                    .match_indices('/')
                    .filter_map(|(end, _)| earlier.get(&norm[..=end]).copied());
                // … and (some of) the earlier prefixes that start with this one.
                let after = (Bound::Excluded(norm.as_str()), Bound::Unbounded);
                let longer = earlier
                    .range::<str, _>(after)
                    .take_while(|(other, _)| other.starts_with(norm.as_str()))
                    .take(64)
                    .map(|(_, j)| *j);
                if let Some(j) = shorter.chain(longer).min() {
                    cx.error(
                        at_key(&at, "url_prefix"),
                        format!("url_prefix '{p}' overlaps the one of statics[{j}]"),
                        Some("statics prefixes must not overlap".into()),
                    );
                }
                earlier.entry(norm).or_insert(i);
            }
        }
        if s.index_document.is_some() && s.tigris_bucket.is_none() {
            cx.warn(
                at_key(&at, "index_document"),
                "index_document only applies to Tigris statics",
                None,
            );
        }
    }
}

fn files(cx: &mut Ctx<'_>, c: &Config) {
    for (i, f) in c.files.iter().enumerate() {
        let at = vec![key("files"), idx(i)];
        match f.guest_path.as_deref() {
            None | Some("") => cx.error(
                at.clone(),
                "file has no guest_path",
                Some("add guest_path = \"/etc/app/config.json\"".into()),
            ),
            Some(p) if !p.starts_with('/') => cx.error(
                at_key(&at, "guest_path"),
                format!("guest_path '{p}' must be absolute"),
                None,
            ),
            _ => {}
        }
        let sources = [
            f.raw_value.is_some(),
            f.local_path.is_some(),
            f.secret_name.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if sources > 1 {
            cx.error(
                at.clone(),
                "file sets more than one of raw_value, local_path and secret_name",
                Some("keep exactly one source".into()),
            );
        }
        unknown_groups(cx, c, at, "File", &f.processes);
    }
}

fn metrics(cx: &mut Ctx<'_>, c: &Config) {
    for (i, m) in c.metrics.iter().enumerate() {
        let at = vec![key("metrics"), idx(i)];
        match m.port {
            Some(p) => port_range(cx, at_key(&at, "port"), p),
            None => cx.error(
                at.clone(),
                "metrics has no port",
                Some("add port = 9091".into()),
            ),
        }
        unknown_groups(cx, c, at, "Metrics", &m.processes);
    }
    let lists = c.metrics.iter().map(|m| m.processes.as_slice());
    for (group, second) in second_item_per_group(c, lists, true) {
        cx.warn(
            vec![key("metrics"), idx(second)],
            format!("group '{group}' has more than one [[metrics]]; only the first is scraped"),
            None,
        );
    }
}

fn machine_checks(cx: &mut Ctx<'_>, c: &Config) {
    let mut all: Vec<(Vec<Seg>, &crate::model::MachineCheck)> = c
        .machine_checks
        .iter()
        .enumerate()
        .map(|(i, m)| (vec![key("machine_checks"), idx(i)], m))
        .collect();
    if let Some(h) = &c.http_service {
        all.extend(
            h.machine_checks
                .iter()
                .enumerate()
                .map(|(i, m)| (vec![key("http_service"), key("machine_checks"), idx(i)], m)),
        );
    }
    for (si, s) in c.services.iter().enumerate() {
        all.extend(s.machine_checks.iter().enumerate().map(|(i, m)| {
            (
                vec![key("services"), idx(si), key("machine_checks"), idx(i)],
                m,
            )
        }));
    }
    for (at, m) in all {
        if m.command.is_empty() {
            cx.error(
                at.clone(),
                "machine check has no command",
                Some(
                    "add command = [\"curl\", \"-f\", \"http://$FLY_TEST_MACHINE_IP:8080\"]".into(),
                ),
            );
        }
        if let Some(sig) = m.kill_signal.as_deref()
            && !SIGNALS.contains(&sig)
        {
            cx.error(
                at_key(&at, "kill_signal"),
                format!("'{sig}' is not a signal"),
                Some(format!("use one of {}", one_of(&SIGNALS))),
            );
        }
    }
}

/// The candidate closest to `word` by edit distance, if it is close enough to be a typo.
pub fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let word: Vec<char> = word.to_ascii_lowercase().chars().collect();
    let mut rows = (Vec::new(), Vec::new());
    candidates
        .iter()
        .filter_map(|c| {
            let bound = 2.max(c.len() / 3);
            distance_within(&word, c, bound, &mut rows).map(|d| (d, *c))
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// The edit distance of `a` and `b` if it is at most `bound`, using `rows` as scratch space;
/// gives up as soon as it can not be (cheap for the many hopeless candidates of a large
/// hostile file).
fn distance_within(
    a: &[char],
    b: &str,
    bound: usize,
    (prev, cur): &mut (Vec<usize>, Vec<usize>),
) -> Option<usize> {
    let b_len = b.chars().count();
    // The length difference is a lower bound of the distance.
    if a.len().abs_diff(b_len) > bound {
        return None;
    }
    prev.clear();
    prev.extend(0..=b_len);
    cur.clear();
    cur.resize(b_len + 1, 0);
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        let mut row_min = cur[0];
        for (j, cb) in b.chars().enumerate() {
            let sub = prev[j] + usize::from(*ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
            row_min = row_min.min(cur[j + 1]);
        }
        // Row minima never decrease: once above the bound, the distance is too.
        if row_min > bound {
            return None;
        }
        std::mem::swap(prev, cur);
    }
    Some(prev[b_len]).filter(|d| *d <= bound)
}

/// Levenshtein distance.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}
