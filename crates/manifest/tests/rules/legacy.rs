//! PLATFORM.md §1.1 "Legacy/alias shapes" (one test per row) and §1.2 units: each old shape
//! decodes to the current typed model, with no error finding.

use std::collections::BTreeMap;

use hangar_api_types::{ConcurrencyType, Duration, MachineServiceConcurrency};
use hangar_manifest::model::{AutoStop, Compute, Metrics, Mount};
use hangar_manifest::{Config, ValidateOptions, guest, units};

use crate::{assert_errors, assert_no_errors, dump, manifest};

/// Decodes `toml`, asserting that validation reports no error.
fn decoded(toml: &str) -> Config {
    let m = manifest(toml);
    assert!(
        m.parse_findings.is_empty(),
        "parse findings: {:?}",
        m.parse_findings
    );
    assert_no_errors(&m.validate(ValidateOptions::default()));
    m.config
}

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_string()).collect()
}

// ---- [env] ----------------------------------------------------------------------------

#[test]
fn env_array_of_tables_merges_into_one_map() {
    let c = decoded(
        r#"app = "demo"
[[env]]
A = "1"
B = "b"
[[env]]
C = "c"
A = "later"
"#,
    );
    assert_eq!(c.env, env(&[("A", "later"), ("B", "b"), ("C", "c")]));
}

#[test]
fn env_non_string_values_are_stringified_like_go() {
    let c = decoded(
        r#"app = "demo"
[env]
PORT = 8080
DEBUG = false
RATIO = 0.5
WHOLE = 3.0
BIG = 1e21
WHEN = 1979-05-27
"#,
    );
    assert_eq!(
        c.env,
        env(&[
            ("PORT", "8080"),
            ("DEBUG", "false"),
            ("RATIO", "0.5"),
            ("WHOLE", "3"),
            ("BIG", "1e+21"),
            ("WHEN", "1979-05-27"),
        ])
    );
}

// ---- [processes] ------------------------------------------------------------------------

#[test]
fn processes_array_with_name_and_command_becomes_a_map() {
    let c = decoded(
        r#"app = "demo"
[[processes]]
name = "web"
command = "bin/server --port 8080"
[[processes]]
name = "worker"
command = "bin/worker"
"#,
    );
    let want: BTreeMap<String, String> =
        [("web", "bin/server --port 8080"), ("worker", "bin/worker")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    assert_eq!(c.processes, want);
    assert_eq!(c.process_names(), strings(&["web", "worker"]));
    assert_eq!(c.default_group(), "web");
}

#[test]
fn empty_processes_array_means_no_processes() {
    let c = decoded("app = \"demo\"\nprocesses = []\n");
    assert!(c.processes.is_empty());
    assert_eq!(c.process_names(), strings(&["app"]));
}

// ---- [[vm]] -----------------------------------------------------------------------------

#[test]
fn compute_table_becomes_vm_array() {
    let c = decoded("app = \"demo\"\n[compute]\nsize = \"shared-cpu-2x\"\nmemory = \"1gb\"\n");
    assert_eq!(
        c.vm,
        vec![Compute {
            size: Some("shared-cpu-2x".into()),
            memory: Some("1gb".into()),
            ..Compute::default()
        }]
    );
}

#[test]
fn computes_array_becomes_vm_array() {
    let c = decoded(
        r#"app = "demo"
[processes]
web = ""
worker = ""
[[computes]]
size = "shared-cpu-1x"
processes = ["web"]
[[computes]]
size = "performance-2x"
processes = ["worker"]
"#,
    );
    assert_eq!(c.vm.len(), 2);
    assert_eq!(c.vm[0].processes, strings(&["web"]));
    assert_eq!(c.vm[1].size.as_deref(), Some("performance-2x"));
}

#[test]
fn single_vm_table_becomes_vm_array() {
    let c =
        decoded("app = \"demo\"\n[vm]\ncpu_kind = \"performance\"\ncpus = 2\nmemory_mb = 4096\n");
    assert_eq!(
        c.vm,
        vec![Compute {
            cpu_kind: Some("performance".into()),
            cpus: Some(2),
            memory_mb: Some(4096),
            ..Compute::default()
        }]
    );
}

#[test]
fn numeric_vm_memory_is_stringified_and_means_mb() {
    let c = decoded("app = \"demo\"\n[[vm]]\nmemory = 1024\n");
    assert_eq!(c.vm[0].memory.as_deref(), Some("1024"));
    let g = guest::guest_for(&c.vm[0]).expect("valid guest");
    assert_eq!(g.memory_mb, Some(1024));
}

// ---- [[mounts]] -------------------------------------------------------------------------

#[test]
fn mount_table_becomes_mounts_array() {
    let c = decoded("app = \"demo\"\n[mount]\nsource = \"data\"\ndestination = \"/data\"\n");
    assert_eq!(
        c.mounts,
        vec![Mount {
            source: Some("data".into()),
            destination: Some("/data".into()),
            ..Mount::default()
        }]
    );
}

#[test]
fn single_mounts_table_becomes_mounts_array() {
    let c = decoded("app = \"demo\"\n[mounts]\nsource = \"data\"\ndestination = \"/data\"\n");
    assert_eq!(c.mounts.len(), 1);
    assert_eq!(c.mounts[0].destination.as_deref(), Some("/data"));
}

#[test]
fn numeric_mount_sizes_are_stringified_and_mean_gb() {
    let c = decoded(
        r#"app = "demo"
[mounts]
source = "data"
destination = "/data"
initial_size = 10
auto_extend_size_threshold = 80
auto_extend_size_increment = 1
auto_extend_size_limit = 100
"#,
    );
    let m = &c.mounts[0];
    assert_eq!(m.initial_size.as_deref(), Some("10"));
    assert_eq!(m.auto_extend_size_increment.as_deref(), Some("1"));
    assert_eq!(m.auto_extend_size_limit.as_deref(), Some("100"));
    assert_eq!(units::volume_gb("10"), Ok(10));
}

// ---- [[metrics]] ------------------------------------------------------------------------

#[test]
fn metric_table_becomes_metrics_array() {
    let c = decoded("app = \"demo\"\n[metric]\nport = 9091\npath = \"/metrics\"\n");
    assert_eq!(
        c.metrics,
        vec![Metrics {
            port: Some(9091),
            path: Some("/metrics".into()),
            ..Metrics::default()
        }]
    );
}

#[test]
fn single_metrics_table_becomes_metrics_array() {
    let c = decoded("app = \"demo\"\n[metrics]\nport = 9091\nhttps = true\n");
    assert_eq!(
        c.metrics,
        vec![Metrics {
            port: Some(9091),
            https: Some(true),
            ..Metrics::default()
        }]
    );
}

#[test]
fn experimental_metrics_port_and_path_become_metrics() {
    let c = decoded("app = \"demo\"\n[experimental]\nmetrics_port = 9091\nmetrics_path = \"/m\"\n");
    assert_eq!(
        c.metrics,
        vec![Metrics {
            port: Some(9091),
            path: Some("/m".into()),
            ..Metrics::default()
        }]
    );
    // Nothing else was in [experimental], so the section is gone.
    assert_eq!(c.experimental, None);
}

#[test]
fn experimental_metrics_do_not_replace_an_existing_metrics_section() {
    let c = decoded(
        r#"app = "demo"
[metrics]
port = 9000
path = "/real"
[experimental]
metrics_port = 9091
metrics_path = "/old"
auto_rollback = true
"#,
    );
    assert_eq!(c.metrics.len(), 1);
    assert_eq!(
        (c.metrics[0].port, c.metrics[0].path.as_deref()),
        (Some(9000), Some("/real"))
    );
    assert_eq!(
        c.experimental.as_ref().and_then(|x| x.auto_rollback),
        Some(true)
    );
}

// ---- [experimental] ---------------------------------------------------------------------

#[test]
fn experimental_kill_timeout_moves_to_the_top_level_in_seconds() {
    let c = decoded("app = \"demo\"\n[experimental]\nkill_timeout = 30\n");
    assert_eq!(c.kill_timeout, Some(Duration::from_secs(30)));
    assert_eq!(c.experimental, None);
}

#[test]
fn experimental_kill_timeout_does_not_override_the_top_level_one() {
    let c = decoded("app = \"demo\"\nkill_timeout = \"10s\"\n[experimental]\nkill_timeout = 30\n");
    assert_eq!(c.kill_timeout, Some(Duration::from_secs(10)));
}

#[test]
fn experimental_cmd_entrypoint_exec_strings_become_one_element_arrays() {
    let c = decoded(
        r#"app = "demo"
[experimental]
cmd = "bin/server --port 8080"
entrypoint = "/entry.sh"
exec = "/bin/sh"
"#,
    );
    let x = c.experimental.expect("experimental kept");
    assert_eq!(x.cmd, strings(&["bin/server --port 8080"]));
    assert_eq!(x.entrypoint, strings(&["/entry.sh"]));
    assert_eq!(x.exec, strings(&["/bin/sh"]));
    // Arrays stay arrays.
    let c = decoded("app = \"demo\"\n[experimental]\ncmd = [\"a\", \"b\"]\n");
    assert_eq!(c.experimental.expect("kept").cmd, strings(&["a", "b"]));
}

// ---- checks -------------------------------------------------------------------------------

#[test]
fn checks_array_with_name_becomes_a_named_map() {
    let c = decoded(
        r#"app = "demo"
[[checks]]
name = "alive"
type = "tcp"
port = 8080
[[checks]]
name = "ready"
type = "http"
port = 8080
path = "/ready"
"#,
    );
    assert_eq!(c.checks.keys().collect::<Vec<_>>(), ["alive", "ready"]);
    assert_eq!(c.checks["alive"].check_type.as_deref(), Some("tcp"));
    assert_eq!(c.checks["ready"].path.as_deref(), Some("/ready"));
}

#[test]
fn check_headers_as_name_value_list_become_a_map() {
    let c = decoded(
        r#"app = "demo"
[[services]]
internal_port = 8080
[[services.ports]]
port = 80
[[services.http_checks]]
path = "/"
headers = [{name = "Host", value = "example.com"}, {name = "X-Probe", value = "1"}]
[checks.alive]
type = "http"
port = 8080
headers = [{name = "Authorization", value = "Bearer x"}]
"#,
    );
    let h = &c.services[0].http_checks[0].headers;
    assert_eq!(h, &env(&[("Host", "example.com"), ("X-Probe", "1")]));
    assert_eq!(
        c.checks["alive"].headers,
        env(&[("Authorization", "Bearer x")])
    );
}

// ---- services -------------------------------------------------------------------------

#[test]
fn concurrency_string_becomes_a_requests_table() {
    let c = decoded(
        r#"app = "demo"
[[services]]
internal_port = 8080
concurrency = "20,25"
[[services.ports]]
port = 80
"#,
    );
    assert_eq!(
        c.services[0].concurrency,
        Some(MachineServiceConcurrency {
            r#type: Some(ConcurrencyType::Requests),
            soft_limit: Some(20),
            hard_limit: Some(25),
        })
    );
}

#[test]
fn port_and_internal_port_strings_become_integers() {
    let c = decoded(
        r#"app = "demo"
[[services]]
internal_port = "8080"
[[services.ports]]
port = "443"
handlers = ["tls", "http"]
[[services.ports]]
start_port = "10000"
end_port = "10010"
[http_service]
internal_port = "3000"
"#,
    );
    let s = &c.services[0];
    assert_eq!(s.internal_port, Some(8080));
    assert_eq!(s.ports[0].port, Some(443));
    assert_eq!(
        (s.ports[1].start_port, s.ports[1].end_port),
        (Some(10000), Some(10010))
    );
    assert_eq!(
        c.http_service.expect("http_service").internal_port,
        Some(3000)
    );
}

// ---- [build] ------------------------------------------------------------------------------

#[test]
fn build_target_is_renamed_build_dash_target() {
    let c = decoded("app = \"demo\"\n[build]\nbuild_target = \"prod\"\n");
    assert_eq!(
        c.build.expect("build").build_target.as_deref(),
        Some("prod")
    );
    // The dashed spelling is the current one and wins when both are written.
    let c =
        decoded("app = \"demo\"\n[build]\nbuild_target = \"old\"\n\"build-target\" = \"new\"\n");
    assert_eq!(c.build.expect("build").build_target.as_deref(), Some("new"));
}

// ---- §1.2 units -----------------------------------------------------------------------

#[test]
fn kill_timeout_integer_means_seconds() {
    let c = decoded("app = \"demo\"\nkill_timeout = 30\n");
    assert_eq!(c.kill_timeout, Some(Duration::from_secs(30)));
    let c = decoded("app = \"demo\"\nkill_timeout = \"1m30s\"\n");
    assert_eq!(c.kill_timeout, Some(Duration::from_secs(90)));
}

#[test]
fn check_timing_integers_mean_milliseconds() {
    let c = decoded(
        r#"app = "demo"
[http_service]
internal_port = 8080
[[http_service.checks]]
interval = 15000
timeout = 2000
grace_period = 5000
path = "/"
[[services]]
internal_port = 9000
[[services.ports]]
port = 9000
[[services.tcp_checks]]
interval = 10000
timeout = 1000
grace_period = 0
[checks.alive]
type = "tcp"
port = 8080
interval = 30000
timeout = 5000
grace_period = 10000
"#,
    );
    let h = &c.http_service.as_ref().expect("http_service").checks[0];
    assert_eq!(
        (h.interval, h.timeout, h.grace_period),
        (
            Some(Duration::from_secs(15)),
            Some(Duration::from_secs(2)),
            Some(Duration::from_secs(5))
        )
    );
    let t = &c.services[0].tcp_checks[0];
    assert_eq!(
        (t.interval, t.timeout, t.grace_period),
        (
            Some(Duration::from_secs(10)),
            Some(Duration::from_secs(1)),
            Some(Duration::ZERO)
        )
    );
    let k = &c.checks["alive"];
    assert_eq!(
        (k.interval, k.timeout, k.grace_period),
        (
            Some(Duration::from_secs(30)),
            Some(Duration::from_secs(5)),
            Some(Duration::from_secs(10))
        )
    );
}

#[test]
fn other_durations_are_go_strings_and_bare_integers_are_nanoseconds() {
    let c = decoded(
        r#"app = "demo"
[deploy]
wait_timeout = "2m"
release_command_timeout = "1h10m0.5s"
[[machine_checks]]
command = ["true"]
kill_timeout = "500ms"
[http_service]
internal_port = 8080
[[http_service.checks]]
interval = "1m21s"
timeout = "1500ms"
"#,
    );
    let d = c.deploy.as_ref().expect("deploy");
    assert_eq!(d.wait_timeout, Some(Duration::from_secs(120)));
    assert_eq!(
        d.release_command_timeout,
        Some(Duration::from_millis(4_200_500))
    );
    assert_eq!(
        c.machine_checks[0].kill_timeout,
        Some(Duration::from_millis(500))
    );
    let h = &c.http_service.as_ref().expect("http_service").checks[0];
    assert_eq!(
        (h.interval, h.timeout),
        (
            Some(Duration::from_secs(81)),
            Some(Duration::from_millis(1500))
        )
    );
    // The fly-go JSON rule: any other integer in a Duration field is nanoseconds.
    let c = decoded("app = \"demo\"\n[deploy]\nwait_timeout = 1000000000\n");
    assert_eq!(
        c.deploy.and_then(|d| d.wait_timeout),
        Some(Duration::from_secs(1))
    );
}

#[test]
fn invalid_duration_strings_are_errors_at_their_position() {
    let m = manifest("app = \"demo\"\nkill_timeout = \"5 seconds\"\n");
    let r = m.validate(ValidateOptions::default());
    assert_errors(&r, &["unknown unit \" seconds\" in duration \"5 seconds\""]);
    let f = r.errors().next().expect("one error");
    assert_eq!(
        (f.path.as_str(), f.line, f.column),
        ("kill_timeout", 2, 16),
        "{}",
        dump(&r)
    );
    assert_eq!(m.config.kill_timeout, None);
}

#[test]
fn auto_stop_machines_reads_booleans_and_strings() {
    for (text, want) in [
        ("true", AutoStop::Stop),
        ("false", AutoStop::Off),
        ("\"off\"", AutoStop::Off),
        ("\"stop\"", AutoStop::Stop),
        ("\"suspend\"", AutoStop::Suspend),
    ] {
        let c = decoded(&format!(
            "app = \"demo\"\n[http_service]\ninternal_port = 8080\nauto_stop_machines = {text}\n"
        ));
        assert_eq!(
            c.http_service.and_then(|h| h.auto_stop_machines),
            Some(want),
            "{text}"
        );
        let c = decoded(&format!(
            "app = \"demo\"\n[[services]]\ninternal_port = 8080\nauto_stop_machines = {text}\n[[services.ports]]\nport = 80\n"
        ));
        assert_eq!(c.services[0].auto_stop_machines, Some(want), "{text}");
    }
    let r = manifest("app = \"demo\"\n[http_service]\ninternal_port = 8080\nauto_stop_machines = \"sometimes\"\n")
        .validate(ValidateOptions::default());
    assert_errors(&r, &["sometimes"]);
    let f = r.errors().next().expect("one error");
    assert_eq!(
        (f.path.as_str(), f.line, f.column),
        ("http_service.auto_stop_machines", 4, 22)
    );
}

#[test]
fn vm_memory_is_binary_and_volume_sizes_are_decimal() {
    let c = decoded(
        r#"app = "demo"
[[vm]]
memory = "1gb"
[[mounts]]
source = "data"
destination = "/data"
initial_size = "30gb"
"#,
    );
    assert_eq!(
        guest::guest_for(&c.vm[0]).expect("guest").memory_mb,
        Some(1024)
    );
    assert_eq!(
        units::volume_gb(c.mounts[0].initial_size.as_deref().expect("size")),
        Ok(30)
    );
    for (mem, mb) in [
        ("512mb", 512),
        ("8g", 8192),
        ("2 GiB", 2048),
        ("2048", 2048),
    ] {
        let c = decoded(&format!(
            "app = \"demo\"\n[[vm]]\nmemory = \"{mem}\"\ncpus = 4\n"
        ));
        assert_eq!(
            guest::guest_for(&c.vm[0]).expect("guest").memory_mb,
            Some(mb),
            "{mem}"
        );
    }
    // Decimal: 1500mb of volume is 1 GB, not 1.46.
    assert_eq!(units::volume_gb("1500mb"), Ok(1));
    assert_eq!(units::memory_mb("1536kb"), Ok(1));
}
