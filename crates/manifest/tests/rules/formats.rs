//! TOML, JSON and YAML (PLATFORM.md §1.1): the same configuration in any of them decodes to
//! the same model, findings carry positions in every format, and `render` → `parse` gives
//! back an identical model (fixed examples and a property test over random configs).

use std::collections::BTreeMap;

use hangar_api_types::{
    ConcurrencyType, Duration, HttpOptions, HttpResponseOptions, MachinePort,
    MachineServiceConcurrency, ProxyProtoOptions, ReplayCache, TlsOptions,
};
use hangar_manifest::model::{
    AutoStop, Build, Compose, Compute, Deploy, Experimental, File, HttpCheck, HttpService,
    MachineCheck, Metrics, Mount, Restart, Service, Static, TcpCheck, TopLevelCheck,
};
use hangar_manifest::render::render;
use hangar_manifest::{Config, Format, Manifest, Report, Severity, ValidateOptions, parse};
use proptest::collection::{btree_map, vec};
use proptest::option::of;
use proptest::prelude::*;

use crate::{assert_finding, dump};

const FORMATS: [Format; 3] = [Format::Toml, Format::Json, Format::Yaml];

fn file_name(format: Format) -> &'static str {
    match format {
        Format::Toml => "fly.toml",
        Format::Json => "fly.json",
        Format::Yaml => "fly.yaml",
    }
}

fn read(text: &str, format: Format) -> Manifest {
    parse(text, format, file_name(format))
        .unwrap_or_else(|e| panic!("{} does not parse: {e}\n{text}", format.as_str()))
}

fn validate(text: &str, format: Format) -> Report {
    let r = read(text, format).validate(ValidateOptions { strict: true });
    assert!(
        r.findings.iter().all(|f| f.file == file_name(format)),
        "{}",
        dump(&r)
    );
    r
}

/// Renders `config` in `format`, parses it back and returns the model.
fn round_trip(config: &Config, format: Format) -> Result<Config, String> {
    let text = render(config, format).map_err(|e| e.to_string())?;
    let m = parse(&text, format, file_name(format)).map_err(|e| format!("{e}\n{text}"))?;
    if !m.parse_findings.is_empty() {
        return Err(format!("{:?}\n{text}", m.parse_findings));
    }
    if !m.unknown_keys().is_empty() {
        return Err(format!("unknown keys {:?}\n{text}", m.unknown_keys()));
    }
    Ok(m.config)
}

// ---- one configuration, three formats -----------------------------------------------------

const TOML: &str = r#"app = "tri"
primary_region = "ams"
kill_timeout = 10

[env]
A = "1"
N = 2

[processes]
web = "bin/web --port 8080"

[http_service]
internal_port = 8080
processes = ["web"]
auto_stop_machines = "suspend"
concurrency = "20,25"

[[http_service.checks]]
interval = 15000
path = "/"

[vm]
size = "shared-cpu-2x"
memory = 1024

[mounts]
source = "data"
destination = "/data"
initial_size = 10
processes = ["web"]

[experimental]
cmd = "serve"
"#;

const JSON: &str = r#"{
  "app": "tri",
  "primary_region": "ams",
  "kill_timeout": 10,
  "env": {"A": "1", "N": 2},
  "processes": {"web": "bin/web --port 8080"},
  "http_service": {
    "internal_port": 8080,
    "processes": ["web"],
    "auto_stop_machines": "suspend",
    "concurrency": "20,25",
    "checks": [{"interval": 15000, "path": "/"}]
  },
  "vm": {"size": "shared-cpu-2x", "memory": 1024},
  "mounts": {"source": "data", "destination": "/data", "initial_size": 10, "processes": ["web"]},
  "experimental": {"cmd": "serve"}
}
"#;

const YAML: &str = r#"app: tri
primary_region: ams
kill_timeout: 10
env:
  A: "1"
  N: 2
processes:
  web: bin/web --port 8080
http_service:
  internal_port: 8080
  processes: [web]
  auto_stop_machines: suspend
  concurrency: "20,25"
  checks:
    - interval: 15000
      path: /
vm:
  size: shared-cpu-2x
  memory: 1024
mounts:
  source: data
  destination: /data
  initial_size: 10
  processes:
    - web
experimental:
  cmd: serve
"#;

#[test]
fn the_same_config_in_toml_json_and_yaml_decodes_to_the_same_model() {
    let t = read(TOML, Format::Toml);
    let j = read(JSON, Format::Json);
    let y = read(YAML, Format::Yaml);
    for m in [&t, &j, &y] {
        assert!(
            m.validate(ValidateOptions { strict: true })
                .findings
                .is_empty(),
            "{}",
            dump(&m.validate(ValidateOptions { strict: true }))
        );
    }
    assert_eq!(t.config, j.config);
    assert_eq!(t.config, y.config);
    // And the model is what the legacy shapes mean.
    let c = &t.config;
    assert_eq!(c.kill_timeout, Some(Duration::from_secs(10)));
    assert_eq!(c.env.get("N").map(String::as_str), Some("2"));
    let h = c.http_service.as_ref().expect("http_service");
    assert_eq!(h.auto_stop_machines, Some(AutoStop::Suspend));
    assert_eq!(h.checks[0].interval, Some(Duration::from_secs(15)));
    assert_eq!(h.concurrency.as_ref().and_then(|c| c.hard_limit), Some(25));
    assert_eq!(c.vm[0].memory.as_deref(), Some("1024"));
    assert_eq!(c.mounts[0].initial_size.as_deref(), Some("10"));
    assert_eq!(
        c.experimental.as_ref().map(|x| x.cmd.clone()),
        Some(vec!["serve".to_string()])
    );
}

#[test]
fn json_findings_carry_line_and_column() {
    let text = r#"{
  "app": "demo",
  "deploy": {"strategy": "blue-green"},
  "vm": [{"size": "shared-cpu-3x"}],
  "swap_size_mb": "lots",
  "servics": []
}
"#;
    let r = validate(text, Format::Json);
    assert_finding(
        &r,
        Severity::Error,
        "deploy.strategy",
        (3, 26),
        "'blue-green' is not a strategy",
    );
    assert_finding(
        &r,
        Severity::Error,
        "vm[0].size",
        (4, 19),
        "'shared-cpu-3x' is not a valid VM size",
    );
    assert_finding(
        &r,
        Severity::Error,
        "swap_size_mb",
        (5, 19),
        "invalid type: string \"lots\"",
    );
    assert_finding(
        &r,
        Severity::Error,
        "servics",
        (6, 3),
        "unrecognized section or key 'servics'",
    );
    assert_eq!(r.findings.len(), 4, "{}", dump(&r));
}

#[test]
fn yaml_findings_carry_line_and_column() {
    let text = "app: demo\ndeploy:\n  strategy: blue-green\nvm:\n  - size: shared-cpu-3x\nswap_size_mb: lots\nservics: []\nhttp_service:\n  internal_port: 8080\n  checks:\n    - nterval: 10s\n";
    let r = validate(text, Format::Yaml);
    assert_finding(
        &r,
        Severity::Error,
        "deploy.strategy",
        (3, 13),
        "'blue-green' is not a strategy",
    );
    assert_finding(
        &r,
        Severity::Error,
        "vm[0].size",
        (5, 11),
        "'shared-cpu-3x' is not a valid VM size",
    );
    assert_finding(
        &r,
        Severity::Error,
        "swap_size_mb",
        (6, 15),
        "invalid type: string \"lots\"",
    );
    assert_finding(
        &r,
        Severity::Error,
        "servics",
        (7, 1),
        "unrecognized section or key 'servics'",
    );
    assert_finding(
        &r,
        Severity::Error,
        "http_service.checks[0].nterval",
        (11, 7),
        "unrecognized key 'nterval'",
    );
    assert_eq!(r.findings.len(), 5, "{}", dump(&r));
}

#[test]
fn syntax_errors_carry_line_and_column_in_every_format() {
    for (format, text, at) in [
        (Format::Toml, "app = \"x\"\n[env\nA = 1\n", (2, 5)),
        (
            Format::Json,
            "{\n  \"app\": \"x\",\n  \"env\": {]\n}\n",
            (3, 11),
        ),
        (Format::Yaml, "app: x\nenv:\n  A: [1, 2\n", (4, 1)),
    ] {
        let e = parse(text, format, file_name(format)).expect_err("syntax error");
        let f = e.finding().expect("a syntax error has a finding");
        assert_eq!((f.line, f.column), at, "{}: {f}", format.as_str());
        assert_eq!(f.file, file_name(format));
        assert!(
            f.message
                .starts_with(&format!("invalid {}", format.as_str().to_uppercase())),
            "{f}"
        );
    }
}

// ---- render → parse -----------------------------------------------------------------------

fn rich_config() -> Config {
    read(
        r#"app = "rich"
primary_region = "ams"
kill_signal = "SIGTERM"
kill_timeout = "1m30s"
swap_size_mb = 512
console_command = "bin/rails console"
host_dedication_id = "hd"

[build]
dockerfile = "Dockerfile.prod"
build-target = "prod"
args = { RUBY = "3.3" }
settings = { keep = true, n = 3, s = "x" }
compose = { file = "compose.yaml" }
compression = "zstd"
compression_level = 12

[deploy]
strategy = "rolling"
max_unavailable = 0.25
wait_timeout = "2m"
release_command = "bin/migrate"
release_command_timeout = "10m"
[deploy.release_command_vm]
size = "shared-cpu-2x"
memory = 2048

[env]
LOG = "debug"
"WITH SPACE" = "a \"quoted\" value\nover two lines"
"0o17" = "0x10"
"true" = "~"

[processes]
web = "bin/web"
worker = "bin/worker"

[http_service]
internal_port = 8080
force_https = true
auto_stop_machines = "stop"
auto_start_machines = true
min_machines_running = 1
processes = ["web"]
[http_service.concurrency]
type = "connections"
soft_limit = 20
[http_service.tls_options]
alpn = ["h2"]
default_self_signed = false
[http_service.http_options]
compress = true
headers_read_timeout = 10
[http_service.http_options.response]
pristine = true
headers = { Server = false, X-A = "1", X-B = ["2", "3"] }
[[http_service.http_options.replay_cache]]
path_prefix = "/"
ttl_seconds = 300
type = "cookie"
name = "session"
allow_bypass = true
[[http_service.checks]]
interval = "15s"
timeout = "1.5s"
grace_period = "500ms"
method = "GET"
path = "/healthz"
headers = { Host = "rich.example" }
[[http_service.machine_checks]]
command = ["curl", "-f", "http://$FLY_TEST_MACHINE_IP:8080"]
image = "curlimages/curl"
kill_timeout = "5s"

[[services]]
internal_port = 5432
protocol = "tcp"
auto_stop_machines = "off"
processes = ["worker"]
[[services.ports]]
port = 5432
handlers = ["pg_tls"]
[[services.ports]]
start_port = 6000
end_port = 6010
proxy_proto_options = { version = "v2" }
[[services.tcp_checks]]
interval = "10s"
[[services.http_checks]]
path = "/x"
protocol = "https"
tls_skip_verify = true

[checks.alive]
type = "tcp"
port = 8080
interval = "30s"
kind = "informational"
processes = ["web"]

[[files]]
guest_path = "/etc/x"
raw_value = "eA=="
processes = ["web"]

[[mounts]]
source = "data"
destination = "/data"
initial_size = "10gb"
snapshot_retention = 7
scheduled_snapshots = false
auto_extend_size_threshold = 80
auto_extend_size_increment = "1GB"
auto_extend_size_limit = "20GB"
processes = ["worker"]

[[vm]]
size = "performance-1x"
cpus = 2
kernel_args = ["quiet"]
persist_rootfs = "restart"
processes = ["worker"]

[[restart]]
policy = "on-failure"
retries = 5

[[statics]]
guest_path = "/app/public"
url_prefix = "/static"

[[metrics]]
port = 9091
path = "/metrics"
https = true

[[machine_checks]]
command = ["true"]
kill_signal = "SIGKILL"

[experimental]
entrypoint = ["/init"]
exec = ["/bin/app"]
auto_rollback = true
enable_consul = false
lazy_load_images = true
attached = { secrets = { export = true } }
machine_config = "machine.json"
"#,
        Format::Toml,
    )
    .config
}

#[test]
fn render_then_parse_gives_the_same_model_in_every_format() {
    let config = rich_config();
    for format in FORMATS {
        let back =
            round_trip(&config, format).unwrap_or_else(|e| panic!("{}: {e}", format.as_str()));
        assert_eq!(back, config, "{}", format.as_str());
    }
}

#[test]
fn rendered_toml_starts_with_the_comment_header() {
    let text = render(&rich_config(), Format::Toml).expect("renders");
    assert!(
        text.starts_with("# fly.toml app configuration file generated for rich by hangar\n"),
        "{text}"
    );
}

#[test]
fn strings_that_look_like_other_yaml_types_survive_rendering() {
    let tricky = [
        "",
        " ",
        "true",
        "no",
        "~",
        "null",
        "1",
        "-1",
        "+1",
        "0x10",
        "0o17",
        "0b1",
        "1e3",
        "1.",
        ".5",
        ".inf",
        "+.inf",
        "-.inf",
        ".nan",
        "1_000",
        "12:30",
        "- a",
        "a: b",
        "# c",
        "&a",
        "*a",
        "!t",
        "%p",
        "@a",
        "`a",
        "|",
        ">",
        "?",
        "'",
        "\"",
        "\\",
        "a\nb",
        "\t",
        "\u{7}",
        "\u{8}",
        "\u{b}",
        "\u{c}",
        "\u{1b}",
        "\u{7f}",
        "\u{85}",
        "\u{a0}",
        "\u{2028}",
        "\u{feff}x",
        "é",
        "😀",
        "a #b",
        "a,b",
        "{",
        "[",
        "<<",
        "=",
        "0",
        "00",
        "01",
        "1e",
        "-",
        "--- x",
        "...",
    ];
    for s in tricky {
        let mut config = Config {
            app: Some(s.to_string()),
            ..Config::default()
        };
        config.env.insert(s.to_string(), s.to_string());
        config.processes.insert(s.to_string(), s.to_string());
        for format in FORMATS {
            let back = round_trip(&config, format)
                .unwrap_or_else(|e| panic!("{} {s:?}: {e}", format.as_str()));
            assert_eq!(back, config, "{} {s:?}", format.as_str());
        }
    }
}

// ---- property test -------------------------------------------------------------------------

/// Keys and values: plain names, printable ASCII with YAML/TOML punctuation, any non-control
/// Unicode, and words YAML would read as another type.
fn text() -> BoxedStrategy<String> {
    prop_oneof![
        4 => "[a-z][a-z0-9_-]{0,8}",
        2 => "[ -~]{0,10}",
        1 => "\\PC{0,6}",
        1 => "[\\x00-\\x1f\\x7f]{1,3}",
        1 => prop::sample::select(vec![
            "true", "no", "~", "null", "1", "0x1F", "0o17", "1e3", ".inf", "+.inf", "1_0", "", " x",
        ])
        .prop_map(str::to_string),
    ]
    .boxed()
}

fn texts(max: usize) -> impl Strategy<Value = Vec<String>> {
    vec(text(), 0..=max)
}

fn map<V: std::fmt::Debug>(
    v: impl Strategy<Value = V>,
) -> impl Strategy<Value = BTreeMap<String, V>> {
    btree_map(text(), v, 0..3)
}

/// Durations whose Go string form reads back as the same value.
fn duration() -> BoxedStrategy<Duration> {
    prop_oneof![
        (0i64..120_000).prop_map(Duration::from_millis),
        (0i64..100_000).prop_map(Duration::from_secs),
        any::<i64>().prop_map(Duration::from_nanos),
    ]
    .boxed()
}

fn float() -> BoxedStrategy<f64> {
    any::<f64>()
        .prop_filter("finite", |f| f.is_finite())
        .boxed()
}

fn json_scalar() -> BoxedStrategy<serde_json::Value> {
    prop_oneof![
        text().prop_map(serde_json::Value::from),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
    ]
    .boxed()
}

fn compute() -> BoxedStrategy<Compute> {
    (
        (
            of(text()),
            of(text()),
            of(text()),
            of(any::<i64>()),
            of(any::<i64>()),
            of(any::<i64>()),
        ),
        (of(text()), texts(2), of(text()), of(text()), texts(2)),
    )
        .prop_map(
            |(
                (size, memory, cpu_kind, cpus, memory_mb, gpus),
                (gpu_kind, kernel_args, host_dedication_id, persist_rootfs, processes),
            )| Compute {
                size,
                memory,
                cpu_kind,
                cpus,
                memory_mb,
                gpus,
                gpu_kind,
                kernel_args,
                host_dedication_id,
                persist_rootfs,
                processes,
            },
        )
        .boxed()
}

fn build() -> BoxedStrategy<Build> {
    (
        (
            of(text()),
            map(text()),
            texts(2),
            of(text()),
            map(json_scalar()),
            of(text()),
        ),
        (
            of(text()),
            of(text()),
            of(text()),
            of(of(text())),
            of(text()),
            of(any::<i64>()),
        ),
    )
        .prop_map(
            |(
                (builder, args, buildpacks, image, settings, builtin),
                (dockerfile, ignorefile, build_target, compose, compression, compression_level),
            )| Build {
                builder,
                args,
                buildpacks,
                image,
                settings,
                builtin,
                dockerfile,
                ignorefile,
                build_target,
                compose: compose.map(|file| Compose { file }),
                compression,
                compression_level,
            },
        )
        .boxed()
}

fn deploy() -> BoxedStrategy<Deploy> {
    (
        of(text()),
        of(duration()),
        of(compute()),
        of(text()),
        of(float()),
        of(duration()),
        of(text()),
    )
        .prop_map(
            |(
                release_command,
                release_command_timeout,
                release_command_vm,
                strategy,
                max_unavailable,
                wait_timeout,
                seed_command,
            )| Deploy {
                release_command,
                release_command_timeout,
                release_command_vm,
                strategy,
                max_unavailable,
                wait_timeout,
                seed_command,
            },
        )
        .boxed()
}

fn autostop() -> BoxedStrategy<AutoStop> {
    prop::sample::select(vec![AutoStop::Off, AutoStop::Stop, AutoStop::Suspend]).boxed()
}

fn concurrency() -> BoxedStrategy<MachineServiceConcurrency> {
    (
        of(prop::sample::select(vec![
            ConcurrencyType::Connections,
            ConcurrencyType::Requests,
        ])),
        of(any::<i64>()),
        of(any::<i64>()),
    )
        .prop_map(
            |(r#type, soft_limit, hard_limit)| MachineServiceConcurrency {
                r#type,
                soft_limit,
                hard_limit,
            },
        )
        .boxed()
}

fn tls_options() -> BoxedStrategy<TlsOptions> {
    (texts(2), texts(2), of(any::<bool>()))
        .prop_map(|(alpn, versions, default_self_signed)| TlsOptions {
            alpn,
            versions,
            default_self_signed,
        })
        .boxed()
}

fn header_value() -> BoxedStrategy<serde_json::Value> {
    prop_oneof![
        Just(serde_json::Value::Bool(false)),
        text().prop_map(serde_json::Value::from),
        texts(2).prop_map(serde_json::Value::from),
    ]
    .boxed()
}

fn http_options() -> BoxedStrategy<HttpOptions> {
    let response = (map(header_value()), of(any::<bool>()))
        .prop_map(|(headers, pristine)| HttpResponseOptions { headers, pristine });
    let replay = (text(), any::<i64>(), text(), text(), of(any::<bool>())).prop_map(
        |(path_prefix, ttl_seconds, r#type, name, allow_bypass)| ReplayCache {
            path_prefix,
            ttl_seconds,
            r#type,
            name,
            allow_bypass,
        },
    );
    (
        of(any::<bool>()),
        of(any::<bool>()),
        of(any::<u32>()),
        of(any::<u32>()),
        of(response),
        vec(replay, 0..2),
    )
        .prop_map(
            |(compress, h2_backend, idle_timeout, headers_read_timeout, response, replay_cache)| {
                HttpOptions {
                    compress,
                    h2_backend,
                    idle_timeout,
                    headers_read_timeout,
                    response,
                    replay_cache,
                }
            },
        )
        .boxed()
}

fn port() -> BoxedStrategy<MachinePort> {
    (
        of(any::<i64>()),
        of(any::<i64>()),
        of(any::<i64>()),
        texts(2),
        of(any::<bool>()),
        of(tls_options()),
        of(http_options()),
        of(of(text()).prop_map(|version| ProxyProtoOptions { version })),
    )
        .prop_map(
            |(
                port,
                start_port,
                end_port,
                handlers,
                force_https,
                tls_options,
                http_options,
                proxy_proto_options,
            )| {
                MachinePort {
                    port,
                    start_port,
                    end_port,
                    handlers,
                    force_https,
                    tls_options,
                    http_options,
                    proxy_proto_options,
                }
            },
        )
        .boxed()
}

fn tcp_check() -> BoxedStrategy<TcpCheck> {
    (of(duration()), of(duration()), of(duration()))
        .prop_map(|(interval, timeout, grace_period)| TcpCheck {
            interval,
            timeout,
            grace_period,
        })
        .boxed()
}

fn http_check() -> BoxedStrategy<HttpCheck> {
    (
        (
            of(duration()),
            of(duration()),
            of(duration()),
            of(text()),
            of(text()),
        ),
        (of(text()), of(any::<bool>()), of(text()), map(text())),
    )
        .prop_map(
            |(
                (interval, timeout, grace_period, method, path),
                (protocol, tls_skip_verify, tls_server_name, headers),
            )| {
                HttpCheck {
                    interval,
                    timeout,
                    grace_period,
                    method,
                    path,
                    protocol,
                    tls_skip_verify,
                    tls_server_name,
                    headers,
                }
            },
        )
        .boxed()
}

fn machine_check() -> BoxedStrategy<MachineCheck> {
    (texts(3), of(text()), texts(2), of(text()), of(duration()))
        .prop_map(
            |(command, image, entrypoint, kill_signal, kill_timeout)| MachineCheck {
                command,
                image,
                entrypoint,
                kill_signal,
                kill_timeout,
            },
        )
        .boxed()
}

fn http_service() -> BoxedStrategy<HttpService> {
    (
        (
            of(any::<i64>()),
            of(any::<bool>()),
            of(autostop()),
            of(any::<bool>()),
            of(any::<i64>()),
            texts(2),
        ),
        (
            of(concurrency()),
            of(tls_options()),
            of(http_options()),
            vec(http_check(), 0..2),
            vec(machine_check(), 0..2),
        ),
    )
        .prop_map(
            |(
                (
                    internal_port,
                    force_https,
                    auto_stop_machines,
                    auto_start_machines,
                    min_machines_running,
                    processes,
                ),
                (concurrency, tls_options, http_options, checks, machine_checks),
            )| HttpService {
                internal_port,
                force_https,
                auto_stop_machines,
                auto_start_machines,
                min_machines_running,
                processes,
                concurrency,
                tls_options,
                http_options,
                checks,
                machine_checks,
            },
        )
        .boxed()
}

fn service() -> BoxedStrategy<Service> {
    (
        // Always set: an empty [[services]] table is dropped on reading, as in the reference.
        (
            of(text()),
            any::<i64>(),
            of(autostop()),
            of(any::<bool>()),
            of(any::<i64>()),
            vec(port(), 0..3),
        ),
        (
            of(concurrency()),
            vec(tcp_check(), 0..2),
            vec(http_check(), 0..2),
            vec(machine_check(), 0..2),
            texts(2),
        ),
    )
        .prop_map(
            |(
                (
                    protocol,
                    internal_port,
                    auto_stop_machines,
                    auto_start_machines,
                    min_machines_running,
                    ports,
                ),
                (concurrency, tcp_checks, http_checks, machine_checks, processes),
            )| Service {
                protocol,
                internal_port: Some(internal_port),
                auto_stop_machines,
                auto_start_machines,
                min_machines_running,
                ports,
                concurrency,
                tcp_checks,
                http_checks,
                machine_checks,
                processes,
            },
        )
        .boxed()
}

fn top_level_check() -> BoxedStrategy<TopLevelCheck> {
    (
        (
            of(any::<i64>()),
            of(text()),
            of(duration()),
            of(duration()),
            of(duration()),
            of(text()),
            of(text()),
        ),
        (
            of(text()),
            of(any::<bool>()),
            of(text()),
            map(text()),
            of(text()),
            texts(2),
        ),
    )
        .prop_map(
            |(
                (port, check_type, interval, timeout, grace_period, method, path),
                (protocol, tls_skip_verify, tls_server_name, headers, kind, processes),
            )| TopLevelCheck {
                port,
                check_type,
                interval,
                timeout,
                grace_period,
                method,
                path,
                protocol,
                tls_skip_verify,
                tls_server_name,
                headers,
                kind,
                processes,
            },
        )
        .boxed()
}

fn file() -> BoxedStrategy<File> {
    (of(text()), of(text()), of(text()), of(text()), texts(2))
        .prop_map(
            |(guest_path, local_path, secret_name, raw_value, processes)| File {
                guest_path,
                local_path,
                secret_name,
                raw_value,
                processes,
            },
        )
        .boxed()
}

fn mount() -> BoxedStrategy<Mount> {
    (
        (
            of(text()),
            of(text()),
            of(text()),
            of(any::<i64>()),
            of(any::<bool>()),
        ),
        (of(any::<i64>()), of(text()), of(text()), texts(2)),
    )
        .prop_map(
            |(
                (source, destination, initial_size, snapshot_retention, scheduled_snapshots),
                (
                    auto_extend_size_threshold,
                    auto_extend_size_increment,
                    auto_extend_size_limit,
                    processes,
                ),
            )| Mount {
                source,
                destination,
                initial_size,
                snapshot_retention,
                scheduled_snapshots,
                auto_extend_size_threshold,
                auto_extend_size_increment,
                auto_extend_size_limit,
                processes,
            },
        )
        .boxed()
}

fn restart() -> BoxedStrategy<Restart> {
    (of(text()), of(any::<i64>()), texts(2))
        .prop_map(|(policy, retries, processes)| Restart {
            policy,
            retries,
            processes,
        })
        .boxed()
}

fn statics() -> BoxedStrategy<Static> {
    (of(text()), of(text()), of(text()), of(text()))
        .prop_map(
            |(guest_path, url_prefix, tigris_bucket, index_document)| Static {
                guest_path,
                url_prefix,
                tigris_bucket,
                index_document,
            },
        )
        .boxed()
}

fn metrics() -> BoxedStrategy<Metrics> {
    (of(any::<i64>()), of(text()), of(any::<bool>()), texts(2))
        .prop_map(|(port, path, https, processes)| Metrics {
            port,
            path,
            https,
            processes,
        })
        .boxed()
}

fn experimental() -> BoxedStrategy<Experimental> {
    let attached = of(any::<bool>().prop_map(|b| serde_json::json!({"secrets": {"export": b}})));
    (
        (
            texts(2),
            texts(2),
            texts(2),
            of(any::<bool>()),
            of(any::<bool>()),
            of(any::<bool>()),
        ),
        (
            of(any::<bool>()),
            attached,
            of(text()),
            of(text()),
            of(any::<i64>()),
        ),
    )
        .prop_map(
            |(
                (cmd, entrypoint, exec, auto_rollback, enable_consul, enable_etcd),
                (lazy_load_images, attached, machine_config, compression, compression_level),
            )| Experimental {
                cmd,
                entrypoint,
                exec,
                auto_rollback,
                enable_consul,
                enable_etcd,
                lazy_load_images,
                attached,
                machine_config,
                compression,
                compression_level,
            },
        )
        .boxed()
}

fn config() -> BoxedStrategy<Config> {
    (
        (
            of(text()),
            of(text()),
            of(text()),
            of(duration()),
            of(any::<i64>()),
            of(text()),
            of(text()),
            of(text()),
        ),
        (
            of(text()),
            of(build()),
            of(deploy()),
            map(text()),
            map(text()),
            of(http_service()),
        ),
        (
            vec(service(), 0..3),
            map(top_level_check()),
            vec(file(), 0..2),
            vec(mount(), 0..2),
            vec(compute(), 0..2),
        ),
        (
            vec(restart(), 0..2),
            vec(statics(), 0..2),
            vec(metrics(), 0..2),
            vec(machine_check(), 0..2),
            of(experimental()),
        ),
    )
        .prop_map(
            |(
                (
                    app,
                    primary_region,
                    kill_signal,
                    kill_timeout,
                    swap_size_mb,
                    console_command,
                    host_dedication_id,
                    machine_config,
                ),
                (container, build, deploy, env, processes, http_service),
                (services, checks, files, mounts, vm),
                (restart, statics, metrics, machine_checks, experimental),
            )| Config {
                app,
                primary_region,
                kill_signal,
                kill_timeout,
                swap_size_mb,
                console_command,
                host_dedication_id,
                machine_config,
                container,
                build,
                deploy,
                env,
                processes,
                http_service,
                services,
                checks,
                files,
                mounts,
                vm,
                restart,
                statics,
                metrics,
                machine_checks,
                // An empty [experimental] table means nothing and is dropped on reading.
                experimental: experimental.filter(|x| *x != Experimental::default()),
            },
        )
        .boxed()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_config_survives_render_and_parse_in_every_format(config in config()) {
        for format in FORMATS {
            let back = round_trip(&config, format);
            prop_assert_eq!(back.as_ref(), Ok(&config), "{}", format.as_str());
        }
    }
}

#[test]
fn yaml_output_quotes_what_yaml_1_1_readers_would_misread() {
    let mut config = Config::default();
    for (k, v) in [
        ("A", "off"),
        ("B", "1_000"),
        ("C", "Yes"),
        ("D", "plain text"),
    ] {
        config.env.insert(k.to_string(), v.to_string());
    }
    let text = render(&config, Format::Yaml).expect("renders");
    assert_eq!(
        text,
        "---\nenv:\n  A: \"off\"\n  B: \"1_000\"\n  C: \"Yes\"\n  D: plain text\n"
    );
    assert_eq!(round_trip(&config, Format::Yaml), Ok(config));
}
