//! Golden machine configs (PLATFORM.md §1.7–1.15 → §2.5): representative apps converted
//! with `machine_configs` and compared with reviewed JSON files in `golden/`.
//! `UPDATE_SNAPSHOTS=1` rewrites the files; review the diff by eye before committing.

use std::path::{Path, PathBuf};

use hangar_manifest::{
    ConvertError, ConvertOptions, ValidateOptions, machine_config, machine_configs,
};

use crate::{assert_no_errors, manifest};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rules/golden")
}

/// What the test reader knows: `config/app.conf` and `certs/ca.pem`.
fn read(path: &str) -> Result<Vec<u8>, String> {
    match path {
        "config/app.conf" => Ok(b"listen = 8080\n".to_vec()),
        "certs/ca.pem" => Ok(b"-----BEGIN CERTIFICATE-----\n".to_vec()),
        _ => Err(format!("no such file: {path}")),
    }
}

/// Converts a valid manifest and compares the pretty JSON with `golden/<name>.json`.
fn golden(name: &str, toml: &str) {
    let m = manifest(toml);
    assert_no_errors(&m.validate(ValidateOptions::default()));
    let reader = read;
    let opts = ConvertOptions {
        image: Some("img:1"),
        read_file: Some(&reader),
    };
    let configs = machine_configs(&m.config, opts).expect("a valid manifest converts");
    let actual = serde_json::to_string_pretty(&configs).expect("machine configs serialise") + "\n";
    let path = golden_dir().join(format!("{name}.json"));
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(golden_dir()).expect("create golden dir");
        std::fs::write(&path, &actual).expect("write golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "missing {} ({e}); run with UPDATE_SNAPSHOTS=1",
            path.display()
        )
    });
    assert!(
        expected == actual,
        "{name}: machine configs changed (UPDATE_SNAPSHOTS=1 rewrites {}):\n{actual}",
        path.display()
    );
}

#[test]
fn multi_process_app_with_per_group_sections() {
    golden(
        "multi_process",
        r#"app = "multi"
primary_region = "ams"

[processes]
web = "bin/server --port 8080"
worker = "bin/worker -q 'default queue'"
cron = ""

[experimental]
cmd = ["supercronic", "/app/crontab"]

[http_service]
internal_port = 8080
force_https = true
processes = ["web"]

[[services]]
internal_port = 9000
protocol = "tcp"
processes = ["worker"]
[[services.ports]]
port = 9000

[[vm]]
size = "shared-cpu-2x"

[[vm]]
size = "performance-1x"
processes = ["worker"]

[[mounts]]
source = "jobs"
destination = "/jobs"
processes = ["worker"]

[[restart]]
policy = "always"
processes = ["cron"]

[[metrics]]
port = 9091
path = "/metrics"
processes = ["web", "worker"]
"#,
    );
}

#[test]
fn http_service_and_services_together() {
    golden(
        "http_service_and_services",
        r#"app = "both"

[http_service]
internal_port = 3000
force_https = true
auto_stop_machines = "suspend"
auto_start_machines = true
min_machines_running = 1
[http_service.concurrency]
type = "requests"
soft_limit = 200
hard_limit = 250
[http_service.tls_options]
alpn = ["h2", "http/1.1"]
versions = ["TLSv1.2", "TLSv1.3"]
[http_service.http_options]
h2_backend = true
idle_timeout = 600
[http_service.http_options.response.headers]
X-Frame-Options = "DENY"
Server = false
[[http_service.checks]]
interval = "15s"
timeout = "2s"
grace_period = "10s"
method = "get"
path = "/healthz"
headers = [{name = "Host", value = "both.example"}]

[[services]]
internal_port = 5432
protocol = "tcp"
auto_stop_machines = false
concurrency = "20,25"
[[services.ports]]
port = 5432
handlers = ["pg_tls"]
[[services.tcp_checks]]
interval = 10000
timeout = 2000

[[services]]
internal_port = 5353
protocol = "udp"
auto_stop_machines = true
[[services.ports]]
start_port = 5353
end_port = 5360
[[services.ports]]
port = 25
handlers = ["proxy_proto"]
proxy_proto_options = { version = "v2" }
[[services.http_checks]]
path = "/"
protocol = "https"
tls_skip_verify = true
tls_server_name = "internal.example"
"#,
    );
}

#[test]
fn vm_presets_and_explicit_keys() {
    golden(
        "vm_presets",
        r#"app = "sizes"
host_dedication_id = "hd-1"

[processes]
a = ""
b = ""
c = ""
d = ""
e = ""
f = ""

[[vm]]
gpu_kind = "a10"
processes = ["f"]

[[vm]]
size = "performance-2x"
memory = "8gb"
processes = ["a"]

[[vm]]
size = "shared-cpu-1x"
cpus = 2
memory_mb = 1024
processes = ["b"]

[[vm]]
size = "l40s"
kernel_args = ["mitigations=off"]
processes = ["c"]

[[vm]]
cpu_kind = "performance"
cpus = 4
memory = 16384
persist_rootfs = "always"
processes = ["d"]

[[vm]]
memory = "1gb"
"#,
    );
}

#[test]
fn mounts_with_auto_extend() {
    golden(
        "mounts",
        r#"app = "data"

[[mounts]]
source = "pgdata"
destination = "/var/lib/postgresql"
initial_size = "10gb"
snapshot_retention = 14
auto_extend_size_threshold = 80
auto_extend_size_increment = "1GB"
auto_extend_size_limit = "50gb"
"#,
    );
}

#[test]
fn top_level_checks_take_the_port_from_http_service() {
    golden(
        "top_level_checks",
        r#"app = "checks"

[http_service]
internal_port = 4000

[checks.alive]
type = "tcp"
interval = "30s"
timeout = "5s"
grace_period = "10s"

[checks.ready]
type = "http"
port = 4001
interval = 15000
timeout = 2000
method = "head"
path = "/ready"
protocol = "http"
kind = "readiness"
headers = { Authorization = "Bearer probe" }
"#,
    );
}

#[test]
fn files_from_local_path_raw_value_and_secret() {
    golden(
        "files",
        r#"app = "files"

[processes]
app = ""
sidecar = "bin/sidecar"

[[files]]
guest_path = "/etc/app/app.conf"
local_path = "config/app.conf"

[[files]]
guest_path = "/etc/app/motd"
raw_value = "aGVsbG8K"
processes = ["app", "sidecar"]

[[files]]
guest_path = "/etc/ssl/ca.pem"
local_path = "certs/ca.pem"
processes = ["sidecar"]

[[files]]
guest_path = "/etc/app/token"
secret_name = "API_TOKEN"
"#,
    );
}

#[test]
fn runtime_settings() {
    golden(
        "runtime",
        r#"app = "runtime"
primary_region = "fra"
kill_signal = "SIGTERM"
kill_timeout = 30
swap_size_mb = 512

[env]
LOG_LEVEL = "debug"
PRIMARY_REGION = "ignored"
PORT = 8080

[experimental]
entrypoint = "/docker-entrypoint.sh"
exec = ["/bin/app", "serve"]
cmd = "serve"

[[restart]]
policy = "never"

[[metrics]]
port = 9091
path = "/metrics"
https = false

[[statics]]
guest_path = "/app/public"
url_prefix = "/static/"

[[statics]]
guest_path = "/"
url_prefix = "/site"
tigris_bucket = "site-bucket"
index_document = "index.html"
"#,
    );
}

#[test]
fn restart_on_failure_with_retries_and_autostop_off() {
    golden(
        "restart_autostop",
        r#"app = "restart"

[http_service]
internal_port = 8080
auto_stop_machines = "off"
auto_start_machines = false

[[restart]]
policy = "on-failure"
retries = 3
"#,
    );
}

// ---- conversion errors ------------------------------------------------------------------

#[test]
fn unknown_group_is_an_error() {
    let m = manifest("app = \"x\"\n[processes]\nweb = \"\"\n");
    let err =
        machine_config(&m.config, "worker", ConvertOptions::default()).expect_err("no worker");
    assert_eq!(
        err,
        ConvertError::UnknownGroup("worker".into(), "web".into())
    );
}

#[test]
fn local_path_without_a_reader_or_unreadable_is_an_error() {
    let m = manifest("app = \"x\"\n[[files]]\nguest_path = \"/a\"\nlocal_path = \"missing.txt\"\n");
    let err = machine_configs(&m.config, ConvertOptions::default()).expect_err("no reader");
    assert!(
        matches!(err, ConvertError::ReadFile(ref p, _) if p == "missing.txt"),
        "{err:?}"
    );
    let reader = read;
    let opts = ConvertOptions {
        image: None,
        read_file: Some(&reader),
    };
    let err = machine_configs(&m.config, opts).expect_err("unreadable");
    assert_eq!(
        err,
        ConvertError::ReadFile("missing.txt".into(), "no such file: missing.txt".into())
    );
}

#[test]
fn inline_machine_config_is_the_base() {
    let m = manifest(
        r#"app = "x"
machine_config = '{"image": "base:1", "auto_destroy": true, "dns": {"skip_registration": true}, "init": {"tty": true}}'
[processes]
app = "bin/app"
"#,
    );
    let c = machine_config(&m.config, "app", ConvertOptions::default()).expect("converts");
    assert_eq!(c.image, "base:1");
    assert_eq!(c.auto_destroy, Some(true));
    let init = c.init.expect("init");
    assert_eq!(
        (init.tty, init.cmd),
        (Some(true), vec!["bin/app".to_string()])
    );
    let m = manifest("app = \"x\"\nmachine_config = '{\"image\": 3}'\n");
    let err = machine_configs(&m.config, ConvertOptions::default()).expect_err("bad base");
    assert!(matches!(err, ConvertError::BaseConfig(_)), "{err:?}");
}

#[test]
fn image_defaults_to_build_image() {
    let m = manifest("app = \"x\"\n[build]\nimage = \"nginx:1\"\n");
    let c = machine_config(&m.config, "app", ConvertOptions::default()).expect("converts");
    assert_eq!(c.image, "nginx:1");
    let opts = ConvertOptions {
        image: Some("override:2"),
        read_file: None,
    };
    assert_eq!(
        machine_config(&m.config, "app", opts)
            .expect("converts")
            .image,
        "override:2"
    );
}

#[test]
fn statics_apply_to_every_group() {
    // The group serving HTTP is not the default one here; it must still get the statics.
    let m = manifest(
        "app = \"x\"\n[processes]\napp = \"\"\nweb = \"bin/web\"\n[http_service]\ninternal_port = 8080\nprocesses = [\"web\"]\n[[statics]]\nguest_path = \"/public\"\nurl_prefix = \"/static\"\n",
    );
    let configs = machine_configs(&m.config, ConvertOptions::default()).expect("converts");
    for (group, c) in &configs {
        assert_eq!(c.statics.len(), 1, "{group}");
        assert_eq!(c.statics[0].url_prefix, "/static");
    }
    assert!(configs["app"].services.is_empty());
    assert_eq!(configs["web"].services.len(), 1);
}

#[test]
fn experimental_cmd_applies_only_to_groups_without_a_command() {
    let m = manifest(
        "app = \"x\"\n[processes]\nweb = \"bin/web\"\nidle = \"\"\n[experimental]\ncmd = [\"sleep\", \"inf\"]\n",
    );
    let configs = machine_configs(&m.config, ConvertOptions::default()).expect("converts");
    let cmd = |g: &str| {
        configs[g]
            .init
            .as_ref()
            .map(|i| i.cmd.clone())
            .unwrap_or_default()
    };
    assert_eq!(cmd("web"), ["bin/web"]);
    assert_eq!(cmd("idle"), ["sleep", "inf"]);
}
