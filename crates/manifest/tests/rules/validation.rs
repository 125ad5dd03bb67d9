//! Every validation rule (PLATFORM.md §1.16 and the reference-derived rules of validate.rs):
//! one test per rule, asserting severity, path and 1-based line/column of the finding, and
//! that the rule fires alone.

use hangar_manifest::Severity::{Error, Warning};

use crate::{
    assert_clean, assert_errors, assert_finding, assert_no_errors, check, check_strict, dump, find,
};

// ---- top level ----------------------------------------------------------------------------

#[test]
fn missing_app_name_is_a_warning_at_the_top() {
    let r = check("primary_region = \"ams\"\n");
    assert_finding(&r, Warning, "app", (1, 1), "no app name in this file");
    assert_eq!(r.findings.len(), 1);
}

#[test]
fn invalid_app_name_is_an_error() {
    let r = check("app = \"My_App\"\n");
    assert_finding(&r, Error, "app", (1, 7), "'My_App' is not a valid app name");
    assert_errors(&r, &["not a valid app name"]);
}

#[test]
fn kill_signal_not_in_the_list_is_an_error() {
    let r = check("app = \"demo\"\nkill_signal = \"SIGFOO\"\n");
    assert_finding(
        &r,
        Error,
        "kill_signal",
        (2, 15),
        "'SIGFOO' is not a signal",
    );
    assert_errors(&r, &["SIGFOO"]);
    assert_eq!(
        find(&r, "SIGFOO").hint.as_deref(),
        Some("use one of SIGINT, SIGTERM, SIGQUIT, SIGUSR1, SIGUSR2, SIGKILL, SIGSTOP, SIGHUP")
    );
    assert_clean(&check("app = \"demo\"\nkill_signal = \"SIGHUP\"\n"));
}

#[test]
fn negative_kill_timeout_is_an_error() {
    let r = check("app = \"demo\"\nkill_timeout = \"-5s\"\n");
    assert_finding(
        &r,
        Error,
        "kill_timeout",
        (2, 16),
        "kill_timeout -5s is negative",
    );
    assert_errors(&r, &["negative"]);
}

#[test]
fn kill_timeout_over_300s_is_a_warning() {
    let r = check("app = \"demo\"\nkill_timeout = 600\n");
    assert_finding(
        &r,
        Warning,
        "kill_timeout",
        (2, 16),
        "kill_timeout 10m0s is longer than the 300s maximum",
    );
    assert_no_errors(&r);
    assert_clean(&check("app = \"demo\"\nkill_timeout = 300\n"));
}

#[test]
fn negative_swap_is_an_error() {
    let r = check("app = \"demo\"\nswap_size_mb = -1\n");
    assert_finding(
        &r,
        Error,
        "swap_size_mb",
        (2, 16),
        "swap_size_mb must not be negative",
    );
    assert_errors(&r, &["swap_size_mb"]);
}

#[test]
fn console_command_that_does_not_shell_split_is_an_error() {
    let r = check("app = \"demo\"\nconsole_command = \"bin/rails console 'oops\"\n");
    assert_finding(
        &r,
        Error,
        "console_command",
        (2, 19),
        "can't shell split console command: 'bin/rails console 'oops'",
    );
    assert_errors(&r, &["shell split"]);
    assert_clean(&check(
        "app = \"demo\"\nconsole_command = \"bin/rails console 'ok'\"\n",
    ));
}

// ---- [build] ------------------------------------------------------------------------------

#[test]
fn more_than_one_build_strategy_is_a_warning() {
    let r = check(
        "app = \"demo\"\n\n[build]\nimage = \"nginx\"\nbuilder = \"paketo\"\ndockerfile = \"Dockerfile\"\n",
    );
    assert_finding(
        &r,
        Warning,
        "build",
        (3, 1),
        "more than one build configuration found: [the \"image\" docker image, the \"builder\" buildpack builder, the \"dockerfile\" dockerfile]",
    );
    assert_no_errors(&r);
    assert_clean(&check(
        "app = \"demo\"\n[build]\nbuilder = \"paketo\"\nbuildpacks = [\"a\"]\n",
    ));
}

#[test]
fn compression_not_gzip_or_zstd_is_an_error() {
    let r = check("app = \"demo\"\n[build]\ncompression = \"brotli\"\n");
    assert_finding(
        &r,
        Error,
        "build.compression",
        (3, 15),
        "'brotli' is not a compression",
    );
    assert_errors(&r, &["compression"]);
    let r = check("app = \"demo\"\n[experimental]\ncompression = \"lz4\"\n");
    assert_finding(
        &r,
        Error,
        "experimental.compression",
        (3, 15),
        "'lz4' is not a compression",
    );
}

#[test]
fn compression_level_out_of_range_is_an_error() {
    let r = check("app = \"demo\"\n[build]\ncompression_level = 10\n");
    assert_finding(
        &r,
        Error,
        "build.compression_level",
        (3, 21),
        "compression_level 10 is out of range",
    );
    assert_eq!(
        find(&r, "out of range").hint.as_deref(),
        Some("use a level between 0 and 9")
    );
    assert_errors(&r, &["compression_level"]);
    // zstd goes to 22.
    assert_clean(&check(
        "app = \"demo\"\n[build]\ncompression = \"zstd\"\ncompression_level = 22\n",
    ));
    let r = check("app = \"demo\"\n[build]\ncompression = \"zstd\"\ncompression_level = 23\n");
    assert_finding(
        &r,
        Error,
        "build.compression_level",
        (4, 21),
        "compression_level 23 is out of range",
    );
    let r = check("app = \"demo\"\n[build]\ncompression_level = -1\n");
    assert_errors(&r, &["compression_level -1"]);
}

// ---- [deploy] -----------------------------------------------------------------------------

#[test]
fn unknown_strategy_names_the_list_and_hints_the_closest() {
    let r = check("app = \"demo\"\n[deploy]\nstrategy = \"blue-green\"\n");
    assert_finding(
        &r,
        Error,
        "deploy.strategy",
        (3, 12),
        "'blue-green' is not a strategy; use one of rolling, immediate, canary, bluegreen",
    );
    assert_errors(&r, &["not a strategy"]);
    assert_eq!(
        find(&r, "not a strategy").hint.as_deref(),
        Some("set strategy = \"bluegreen\"")
    );
    let r = check("app = \"demo\"\n[deploy]\nstrategy = \"rollin\"\n");
    assert_eq!(
        find(&r, "not a strategy").hint.as_deref(),
        Some("set strategy = \"rolling\"")
    );
    let r = check("app = \"demo\"\n[deploy]\nstrategy = \"Immediate\"\n");
    assert_eq!(
        find(&r, "not a strategy").hint.as_deref(),
        Some("set strategy = \"immediate\"")
    );
    for s in ["rolling", "immediate", "canary"] {
        assert_clean(&check(&format!(
            "app = \"demo\"\n[deploy]\nstrategy = \"{s}\"\n"
        )));
    }
}

#[test]
fn canary_with_mounts_is_an_error() {
    let r = check(
        "app = \"demo\"\n[deploy]\nstrategy = \"canary\"\n[mounts]\nsource = \"data\"\ndestination = \"/data\"\n",
    );
    assert_finding(
        &r,
        Error,
        "deploy.strategy",
        (3, 12),
        "canary deployment strategy is not supported when using mounted volumes",
    );
    assert_errors(&r, &["canary"]);
}

#[test]
fn bluegreen_with_mounts_is_a_warning() {
    let r = check(
        r#"app = "demo"
[deploy]
strategy = "bluegreen"
[http_service]
internal_port = 8080
[[http_service.checks]]
path = "/"
[mounts]
source = "data"
destination = "/data"
"#,
    );
    assert_finding(
        &r,
        Warning,
        "deploy.strategy",
        (3, 12),
        "bluegreen deployments are rejected at deploy time for apps with mounted volumes",
    );
    assert_eq!(r.findings.len(), 1, "{}", dump(&r));
}

#[test]
fn bluegreen_without_health_checks_is_a_warning() {
    let r = check("app = \"demo\"\n[deploy]\nstrategy = \"bluegreen\"\n");
    assert_finding(
        &r,
        Warning,
        "deploy.strategy",
        (3, 12),
        "bluegreen needs at least one health check",
    );
    assert_eq!(r.findings.len(), 1, "{}", dump(&r));
}

#[test]
fn release_command_that_does_not_shell_split_is_an_error() {
    let r = check("app = \"demo\"\n[deploy]\nrelease_command = \"bin/migrate \\\"unterminated\"\n");
    assert_finding(
        &r,
        Error,
        "deploy.release_command",
        (3, 19),
        "can't shell split release command",
    );
    assert_errors(&r, &["shell split"]);
}

#[test]
fn max_unavailable_zero_or_below_is_an_error() {
    for v in ["0", "-1", "0.0", "-0.5"] {
        let r = check(&format!(
            "app = \"demo\"\n[deploy]\nmax_unavailable = {v}\n"
        ));
        assert_finding(
            &r,
            Error,
            "deploy.max_unavailable",
            (3, 19),
            "max_unavailable must be greater than 0",
        );
        assert_errors(&r, &["max_unavailable"]);
    }
    assert_clean(&check("app = \"demo\"\n[deploy]\nmax_unavailable = 0.33\n"));
    assert_clean(&check("app = \"demo\"\n[deploy]\nmax_unavailable = 2\n"));
}

#[test]
fn max_unavailable_with_immediate_is_a_warning() {
    let r = check("app = \"demo\"\n[deploy]\nstrategy = \"immediate\"\nmax_unavailable = 2\n");
    assert_finding(
        &r,
        Warning,
        "deploy.max_unavailable",
        (4, 19),
        "max_unavailable is ignored by the immediate strategy",
    );
    assert_no_errors(&r);
}

#[test]
fn negative_deploy_timeouts_are_errors() {
    let r = check(
        "app = \"demo\"\n[deploy]\nwait_timeout = \"-1s\"\nrelease_command_timeout = \"-1m\"\n",
    );
    assert_finding(
        &r,
        Error,
        "deploy.wait_timeout",
        (3, 16),
        "wait_timeout must not be negative",
    );
    assert_finding(
        &r,
        Error,
        "deploy.release_command_timeout",
        (4, 27),
        "release_command_timeout must not be negative",
    );
    assert_errors(&r, &["wait_timeout", "release_command_timeout"]);
}

// ---- [env] --------------------------------------------------------------------------------

#[test]
fn env_names_starting_with_fly_are_reserved_warnings() {
    let r = check("app = \"demo\"\n[env]\nFLY_REGION = \"ams\"\nLOG = \"info\"\n");
    assert_finding(
        &r,
        Warning,
        "env.FLY_REGION",
        (3, 14),
        "FLY_REGION is reserved",
    );
    assert_eq!(r.findings.len(), 1, "{}", dump(&r));
}

#[test]
fn env_names_with_equals_are_errors() {
    let r = check("app = \"demo\"\n[env]\n\"A=B\" = \"x\"\n");
    assert_finding(
        &r,
        Error,
        "env.A=B",
        (3, 9),
        "'A=B' is not a valid environment variable name",
    );
    assert_errors(&r, &["environment variable name"]);
}

// ---- [processes] --------------------------------------------------------------------------

#[test]
fn process_command_that_does_not_shell_split_is_an_error() {
    let r =
        check("app = \"demo\"\n[processes]\nweb = \"bin/server 'x\"\nworker = \"bin/worker\"\n");
    assert_finding(
        &r,
        Error,
        "processes.web",
        (3, 7),
        "could not parse command for 'web' process group",
    );
    assert_errors(&r, &["could not parse command"]);
}

#[test]
fn empty_process_group_name_is_an_error() {
    let r = check("app = \"demo\"\n[processes]\n\"\" = \"bin/server\"\n");
    assert_finding(
        &r,
        Error,
        "processes",
        (2, 1),
        "process group names must not be empty",
    );
}

// ---- [checks] -----------------------------------------------------------------------------

#[test]
fn top_level_check_without_type_is_an_error() {
    let r = check("app = \"demo\"\n\n[checks.alive]\nport = 8080\n");
    assert_finding(
        &r,
        Error,
        "checks.alive",
        (3, 1),
        "check 'alive' has no type",
    );
    assert_errors(&r, &["has no type"]);
}

#[test]
fn top_level_check_with_invalid_type_is_an_error() {
    let r = check("app = \"demo\"\n[checks.alive]\ntype = \"grpc\"\nport = 8080\n");
    assert_finding(
        &r,
        Error,
        "checks.alive.type",
        (3, 8),
        "check 'alive' has type 'grpc'; use one of http, tcp",
    );
    assert_errors(&r, &["has type"]);
}

#[test]
fn top_level_check_interval_below_2s_is_an_error() {
    let r =
        check("app = \"demo\"\n[checks.alive]\ntype = \"tcp\"\nport = 8080\ninterval = \"1s\"\n");
    assert_finding(
        &r,
        Error,
        "checks.alive.interval",
        (5, 12),
        "check 'alive' interval is too short: 1s, minimum is 2 seconds",
    );
    assert_errors(&r, &["too short"]);
    // An integer is milliseconds: 1500 is too short, 2000 is fine.
    let r = check("app = \"demo\"\n[checks.alive]\ntype = \"tcp\"\nport = 8080\ninterval = 1500\n");
    assert_finding(
        &r,
        Error,
        "checks.alive.interval",
        (5, 12),
        "interval is too short: 1.5s",
    );
    assert_clean(&check(
        "app = \"demo\"\n[checks.alive]\ntype = \"tcp\"\nport = 8080\ninterval = 2000\n",
    ));
}

#[test]
fn top_level_check_timeout_above_60s_is_an_error() {
    let r =
        check("app = \"demo\"\n[checks.alive]\ntype = \"tcp\"\nport = 8080\ntimeout = \"61s\"\n");
    assert_finding(
        &r,
        Error,
        "checks.alive.timeout",
        (5, 11),
        "check 'alive' timeout is too long: 1m1s, maximum is 60 seconds",
    );
    assert_errors(&r, &["too long"]);
    assert_clean(&check(
        "app = \"demo\"\n[checks.alive]\ntype = \"tcp\"\nport = 8080\ntimeout = \"60s\"\n",
    ));
}

#[test]
fn top_level_check_without_port_and_http_service_is_an_error() {
    let r = check("app = \"demo\"\n[checks.alive]\ntype = \"tcp\"\n");
    assert_finding(
        &r,
        Error,
        "checks.alive",
        (2, 1),
        "check 'alive' has no port and there is no [http_service] to take it from",
    );
    assert_errors(&r, &["no port"]);
    // With an [http_service] the port comes from it.
    assert_clean(&check(
        "app = \"demo\"\n[http_service]\ninternal_port = 8080\n[checks.alive]\ntype = \"tcp\"\n",
    ));
}

#[test]
fn top_level_check_port_out_of_range_is_an_error() {
    let r = check("app = \"demo\"\n[checks.alive]\ntype = \"tcp\"\nport = 70000\n");
    assert_finding(
        &r,
        Error,
        "checks.alive.port",
        (4, 8),
        "port 70000 is out of range",
    );
    assert_errors(&r, &["out of range"]);
}

#[test]
fn top_level_check_kind_and_protocol_must_be_known() {
    let r = check(
        "app = \"demo\"\n[checks.alive]\ntype = \"http\"\nport = 8080\nkind = \"liveness\"\nprotocol = \"h2\"\n",
    );
    assert_finding(
        &r,
        Error,
        "checks.alive.kind",
        (5, 8),
        "'liveness' is not a check kind",
    );
    assert_finding(
        &r,
        Error,
        "checks.alive.protocol",
        (6, 12),
        "'h2' is not a check protocol",
    );
    assert_errors(&r, &["check kind", "check protocol"]);
}

#[test]
fn top_level_check_with_unknown_process_is_an_error() {
    let r = check(
        "app = \"demo\"\n[checks.alive]\ntype = \"tcp\"\nport = 8080\nprocesses = [\"web\"]\n",
    );
    assert_finding(
        &r,
        Error,
        "checks.alive.processes",
        (5, 13),
        "Check specifies 'web' as one of its processes, but no processes are defined with that name",
    );
}

// ---- services -----------------------------------------------------------------------------

#[test]
fn services_without_processes_when_processes_exist_are_errors() {
    let r = check(
        r#"app = "demo"
[processes]
web = "bin/web"
worker = "bin/worker"

[http_service]
internal_port = 8080

[[services]]
internal_port = 9000
[[services.ports]]
port = 9000
"#,
    );
    assert_finding(
        &r,
        Error,
        "http_service",
        (6, 1),
        "service has no processes set but app has 2 processes defined",
    );
    assert_finding(
        &r,
        Error,
        "services[0]",
        (9, 1),
        "service has no processes set but app has 2 processes defined",
    );
    assert_eq!(r.errors().count(), 2, "{}", dump(&r));
}

#[test]
fn unknown_process_names_in_services_are_errors() {
    let r = check(
        r#"app = "demo"
[processes]
web = "bin/web"
[[services]]
internal_port = 8080
processes = ["web", "wrker"]
[[services.ports]]
port = 80
"#,
    );
    assert_finding(
        &r,
        Error,
        "services[0].processes",
        (6, 13),
        "Service specifies 'wrker' as one of its processes, but no processes are defined with that name",
    );
    assert_eq!(
        find(&r, "wrker").hint.as_deref(),
        Some("add 'wrker' to [processes] or remove it from this processes list (groups: web)")
    );
    assert_errors(&r, &["wrker"]);
}

#[test]
fn unknown_process_names_in_restart_mounts_vm_files_metrics_are_errors() {
    let r = check(
        r#"app = "demo"
[processes]
web = "bin/web"
[[restart]]
policy = "always"
processes = ["a"]
[[mounts]]
source = "data"
destination = "/data"
processes = ["b"]
[[vm]]
size = "shared-cpu-1x"
processes = ["c"]
[[files]]
guest_path = "/etc/x"
raw_value = "eA=="
processes = ["d"]
[[metrics]]
port = 9091
processes = ["e"]
"#,
    );
    assert_finding(
        &r,
        Error,
        "restart[0].processes",
        (6, 13),
        "Restart policy specifies 'a'",
    );
    assert_finding(
        &r,
        Error,
        "mounts[0].processes",
        (10, 13),
        "Mount specifies 'b'",
    );
    assert_finding(&r, Error, "vm[0].processes", (13, 13), "VM specifies 'c'");
    assert_finding(
        &r,
        Error,
        "files[0].processes",
        (17, 13),
        "File specifies 'd'",
    );
    assert_finding(
        &r,
        Error,
        "metrics[0].processes",
        (20, 13),
        "Metrics specifies 'e'",
    );
    assert_errors(&r, &["'a'", "'b'", "'c'", "'d'", "'e'"]);
}

#[test]
fn service_without_ports_is_only_a_warning() {
    let r = check("app = \"demo\"\n\n[[services]]\ninternal_port = 8080\nprotocol = \"tcp\"\n");
    assert_finding(
        &r,
        Warning,
        "services[0]",
        (3, 1),
        "service must expose at least one port",
    );
    assert_eq!(r.findings.len(), 1, "{}", dump(&r));
}

#[test]
fn service_protocol_must_be_tcp_or_udp() {
    let r =
        check("app = \"demo\"\n[[services]]\nprotocol = \"sctp\"\n[[services.ports]]\nport = 80\n");
    assert_finding(
        &r,
        Error,
        "services[0].protocol",
        (3, 12),
        "'sctp' is not a service protocol",
    );
    let r =
        check("app = \"demo\"\n[[services]]\nprotocol = \"UDP\"\n[[services.ports]]\nport = 80\n");
    assert_finding(
        &r,
        Warning,
        "services[0].protocol",
        (3, 12),
        "protocol 'UDP' is read as 'udp'",
    );
    assert_no_errors(&r);
}

#[test]
fn http_service_without_internal_port_is_a_warning() {
    let r = check("app = \"demo\"\n[http_service]\nforce_https = true\n");
    assert_finding(
        &r,
        Warning,
        "http_service",
        (2, 1),
        "[http_service] has no internal_port; 8080 is assumed",
    );
    assert_eq!(r.findings.len(), 1, "{}", dump(&r));
}

#[test]
fn service_ports_out_of_range_are_errors() {
    let r = check(
        r#"app = "demo"
[[services]]
internal_port = 0
[[services.ports]]
port = 65536
[[services.ports]]
start_port = 2000
end_port = 1000
[[services.ports]]
handlers = ["http"]
"#,
    );
    assert_finding(
        &r,
        Error,
        "services[0].internal_port",
        (3, 17),
        "port 0 is out of range",
    );
    assert_finding(
        &r,
        Error,
        "services[0].ports[0].port",
        (5, 8),
        "port 65536 is out of range",
    );
    assert_finding(
        &r,
        Error,
        "services[0].ports[1]",
        (6, 1),
        "start_port 2000 is greater than end_port 1000",
    );
    assert_finding(
        &r,
        Error,
        "services[0].ports[2]",
        (9, 1),
        "port needs either port or start_port and end_port",
    );
    assert_errors(
        &r,
        &["port 0", "65536", "greater than end_port", "port needs"],
    );
}

#[test]
fn unknown_handlers_are_errors_and_edge_http_a_warning() {
    let r = check(
        r#"app = "demo"
[[services]]
internal_port = 8080
[[services.ports]]
port = 443
handlers = ["tls", "http2"]
[[services.ports]]
port = 80
handlers = ["edge_http"]
proxy_proto_options = { version = "v3" }
"#,
    );
    assert_finding(
        &r,
        Error,
        "services[0].ports[0].handlers",
        (6, 12),
        "'http2' is not a handler; use any of http, tls, pg_tls, proxy_proto",
    );
    assert_finding(
        &r,
        Warning,
        "services[0].ports[1].handlers",
        (9, 12),
        "the edge_http handler is legacy",
    );
    assert_finding(
        &r,
        Error,
        "services[0].ports[1].proxy_proto_options",
        (10, 23),
        "'v3' is not a PROXY protocol version",
    );
    assert_errors(&r, &["http2", "PROXY"]);
}

#[test]
fn service_concurrency_rules() {
    let r = check(
        r#"app = "demo"
[http_service]
internal_port = 8080
min_machines_running = -1
[http_service.concurrency]
type = "bytes"
soft_limit = 50
hard_limit = 25
"#,
    );
    assert_finding(
        &r,
        Error,
        "http_service.min_machines_running",
        (4, 24),
        "min_machines_running must not be negative",
    );
    assert_finding(
        &r,
        Error,
        "http_service.concurrency",
        (5, 1),
        "'bytes' is not a concurrency type",
    );
    assert_finding(
        &r,
        Warning,
        "http_service.concurrency",
        (5, 1),
        "soft_limit 50 is above hard_limit 25",
    );
    assert_errors(&r, &["min_machines_running", "concurrency type"]);
    let r = check(
        "app = \"demo\"\n[http_service]\ninternal_port = 8080\nconcurrency = { soft_limit = -1 }\n",
    );
    assert_finding(
        &r,
        Error,
        "http_service.concurrency",
        (4, 15),
        "concurrency limits must not be negative",
    );
}

#[test]
fn bad_concurrency_string_is_an_error() {
    let r = check(
        "app = \"demo\"\n[[services]]\ninternal_port = 8080\nconcurrency = \"lots\"\n[[services.ports]]\nport = 80\n",
    );
    assert_finding(
        &r,
        Error,
        "services[0].concurrency",
        (4, 15),
        "unknown value 'lots' for concurrency limits",
    );
    assert_errors(&r, &["lots"]);
}

#[test]
fn port_strings_that_are_not_numbers_are_errors() {
    let r = check(
        "app = \"demo\"\n[[services]]\ninternal_port = \"http\"\n[[services.ports]]\nport = \"80a\"\n",
    );
    assert_finding(
        &r,
        Error,
        "services[0].internal_port",
        (3, 17),
        "can not convert 'http' to an integer",
    );
    assert_finding(
        &r,
        Error,
        "services[0].ports[0].port",
        (5, 8),
        "can not convert '80a' to an integer",
    );
}

#[test]
fn service_check_durations_outside_1s_1m_are_warnings() {
    let r = check(
        r#"app = "demo"
[[services]]
internal_port = 8080
[[services.ports]]
port = 80
[[services.tcp_checks]]
interval = "500ms"
timeout = "2m"
grace_period = "0s"
[[services.http_checks]]
interval = 500
grace_period = "200ms"
"#,
    );
    assert_finding(
        &r,
        Warning,
        "services[0].tcp_checks[0].interval",
        (7, 12),
        "service TCP check has an interval less than 1 second (500ms); this will be raised to 1 second",
    );
    assert_finding(
        &r,
        Warning,
        "services[0].tcp_checks[0].timeout",
        (8, 11),
        "service TCP check has a timeout greater than 1 minute (2m0s); this will be lowered to 1 minute",
    );
    assert_finding(
        &r,
        Warning,
        "services[0].http_checks[0].interval",
        (11, 12),
        "service HTTP check has an interval less than 1 second (500ms)",
    );
    assert_finding(
        &r,
        Warning,
        "services[0].http_checks[0].grace_period",
        (12, 16),
        "service HTTP check has a grace period that is non-zero and less than 1 second (200ms)",
    );
    assert_eq!(r.findings.len(), 4, "{}", dump(&r));
}

#[test]
fn http_service_check_durations_outside_1s_1m_are_warnings() {
    let r = check(
        "app = \"demo\"\n[http_service]\ninternal_port = 8080\n[[http_service.checks]]\ntimeout = \"90s\"\n",
    );
    assert_finding(
        &r,
        Warning,
        "http_service.checks[0].timeout",
        (5, 11),
        "service HTTP check has a timeout greater than 1 minute (1m30s)",
    );
    assert_eq!(r.findings.len(), 1, "{}", dump(&r));
}

// ---- [[mounts]] ---------------------------------------------------------------------------

#[test]
fn more_than_one_mount_per_group_is_an_error() {
    let r = check(
        "app = \"demo\"\n[[mounts]]\nsource = \"a\"\ndestination = \"/a\"\n[[mounts]]\nsource = \"b\"\ndestination = \"/b\"\n",
    );
    assert_finding(
        &r,
        Error,
        "mounts[1]",
        (5, 1),
        "group 'app' has more than one [[mounts]] section defined",
    );
    assert_errors(&r, &["more than one"]);
}

#[test]
fn mount_source_and_destination_are_required() {
    let r = check("app = \"demo\"\n[[mounts]]\ninitial_size = \"1gb\"\n");
    assert_finding(&r, Error, "mounts[0]", (2, 1), "mount has no source");
    assert_finding(
        &r,
        Error,
        "mounts[0]",
        (2, 1),
        "mount '' has no destination",
    );
    let r = check("app = \"demo\"\n[[mounts]]\nsource = \"data\"\ndestination = \"/\"\n");
    assert_finding(
        &r,
        Error,
        "mounts[0].destination",
        (4, 15),
        "mount 'data' can not be mounted at /",
    );
    let r = check("app = \"demo\"\n[[mounts]]\nsource = \"data\"\ndestination = \"data\"\n");
    assert_finding(
        &r,
        Error,
        "mounts[0].destination",
        (4, 15),
        "mount destination 'data' must be an absolute path",
    );
}

#[test]
fn mount_initial_size_must_parse_and_be_at_least_1gb() {
    let r = check(
        "app = \"demo\"\n[[mounts]]\nsource = \"data\"\ndestination = \"/data\"\ninitial_size = \"ten gigs\"\n",
    );
    assert_finding(
        &r,
        Error,
        "mounts[0].initial_size",
        (5, 16),
        "mount 'data' with initial_size 'ten gigs' will fail because of",
    );
    assert_errors(&r, &["initial_size"]);
    let r = check(
        "app = \"demo\"\n[[mounts]]\nsource = \"data\"\ndestination = \"/data\"\ninitial_size = \"500mb\"\n",
    );
    assert_finding(
        &r,
        Error,
        "mounts[0].initial_size",
        (5, 16),
        "mount 'data' has an initial_size '500mb' value which is smaller than 1GB",
    );
    let r = check(
        "app = \"demo\"\n[[mounts]]\nsource = \"data\"\ndestination = \"/data\"\ninitial_size = 0\n",
    );
    assert_finding(
        &r,
        Error,
        "mounts[0].initial_size",
        (5, 16),
        "smaller than 1GB",
    );
}

#[test]
fn mount_snapshot_retention_must_be_1_to_60() {
    for v in [0, 61] {
        let r = check(&format!(
            "app = \"demo\"\n[[mounts]]\nsource = \"data\"\ndestination = \"/data\"\nsnapshot_retention = {v}\n"
        ));
        assert_finding(
            &r,
            Error,
            "mounts[0].snapshot_retention",
            (5, 22),
            "not between 1 and 60 days inclusive",
        );
        assert_errors(&r, &["snapshot_retention"]);
    }
}

#[test]
fn mount_auto_extend_threshold_alone_is_an_error() {
    let r = check(
        "app = \"demo\"\n[[mounts]]\nsource = \"data\"\ndestination = \"/data\"\nauto_extend_size_threshold = 80\n",
    );
    assert_finding(
        &r,
        Error,
        "mounts[0]",
        (2, 1),
        "must be all defined or none",
    );
    // As the reference: the missing increment is also reported as out of range, at the mount.
    assert_finding(
        &r,
        Error,
        "mounts[0].auto_extend_size_increment",
        (2, 1),
        "must be between 1GB and 100GB",
    );
    assert_errors(
        &r,
        &["all defined or none", "auto_extend_size_increment must be"],
    );
}

#[test]
fn mount_auto_extend_ranges() {
    let r = check(
        r#"app = "demo"
[[mounts]]
source = "data"
destination = "/data"
auto_extend_size_threshold = 40
auto_extend_size_increment = "200GB"
auto_extend_size_limit = 600
"#,
    );
    assert_finding(
        &r,
        Error,
        "mounts[0].auto_extend_size_threshold",
        (5, 30),
        "auto_extend_size_threshold must be between 50 and 99",
    );
    assert_finding(
        &r,
        Error,
        "mounts[0].auto_extend_size_increment",
        (6, 30),
        "auto_extend_size_increment must be between 1GB and 100GB",
    );
    assert_finding(
        &r,
        Error,
        "mounts[0].auto_extend_size_limit",
        (7, 26),
        "auto_extend_size_limit must be between 1GB and 500GB",
    );
    assert_errors(&r, &["threshold", "increment", "limit"]);
    assert_clean(&check(
        "app = \"demo\"\n[[mounts]]\nsource = \"d\"\ndestination = \"/d\"\nauto_extend_size_threshold = 80\nauto_extend_size_increment = \"1GB\"\nauto_extend_size_limit = \"10GB\"\n",
    ));
}

// ---- [[restart]] --------------------------------------------------------------------------

#[test]
fn restart_policy_must_be_always_never_or_on_failure() {
    let r = check("app = \"demo\"\n[[restart]]\npolicy = \"sometimes\"\n");
    assert_finding(
        &r,
        Error,
        "restart[0].policy",
        (3, 10),
        "invalid restart policy 'sometimes'; use one of always, never, on-failure",
    );
    assert_errors(&r, &["restart policy"]);
    let r = check("app = \"demo\"\n[[restart]]\nretries = -1\n");
    assert_finding(&r, Error, "restart[0]", (2, 1), "restart has no policy");
    assert_finding(
        &r,
        Error,
        "restart[0].retries",
        (3, 11),
        "retries must not be negative",
    );
    for p in ["always", "never", "on-failure"] {
        assert_clean(&check(&format!(
            "app = \"demo\"\n[[restart]]\npolicy = \"{p}\"\nretries = 3\n"
        )));
    }
}

// ---- [[vm]] -------------------------------------------------------------------------------

#[test]
fn vm_memory_zero_is_an_error() {
    let r = check("app = \"demo\"\n[[vm]]\nmemory = 0\n");
    assert_finding(
        &r,
        Error,
        "vm[0].memory",
        (3, 10),
        "memory must be greater than zero",
    );
    assert_errors(&r, &["greater than zero"]);
    let r = check("app = \"demo\"\n[[vm]]\nmemory_mb = 0\n");
    assert_finding(
        &r,
        Error,
        "vm[0].memory_mb",
        (3, 13),
        "memory must be greater than zero",
    );
    let r = check("app = \"demo\"\n[[vm]]\nmemory = \"0gb\"\n");
    assert_finding(
        &r,
        Error,
        "vm[0].memory",
        (3, 10),
        "memory must be greater than zero",
    );
}

#[test]
fn vm_memory_unparseable_is_an_error() {
    let r = check("app = \"demo\"\n[[vm]]\nmemory = \"lots\"\n");
    assert_finding(
        &r,
        Error,
        "vm[0].memory",
        (3, 10),
        "invalid memory size: invalid size 'lots'",
    );
    assert_errors(&r, &["invalid memory size"]);
    let r = check("app = \"demo\"\n[[vm]]\nmemory = \"1xb\"\n");
    assert_finding(&r, Error, "vm[0].memory", (3, 10), "unknown unit");
}

#[test]
fn unknown_size_preset_lists_its_family() {
    let r = check("app = \"demo\"\n[[vm]]\nsize = \"shared-cpu-3x\"\n");
    assert_finding(
        &r,
        Error,
        "vm[0].size",
        (3, 8),
        "'shared-cpu-3x' is not a valid VM size",
    );
    assert_eq!(
        find(&r, "not a valid VM size").hint.as_deref(),
        Some(
            "use one of shared-cpu-1x, shared-cpu-2x, shared-cpu-4x, shared-cpu-6x, shared-cpu-8x"
        )
    );
    let r = check("app = \"demo\"\n[[vm]]\nsize = \"performance-3x\"\n");
    assert_eq!(
        find(&r, "not a valid VM size").hint.as_deref(),
        Some(
            "use one of performance-1x, performance-2x, performance-4x, performance-6x, performance-8x, performance-10x, performance-12x, performance-14x, performance-16x"
        )
    );
    let r = check("app = \"demo\"\n[[vm]]\nsize = \"a100-20gb\"\n");
    assert_eq!(
        find(&r, "not a valid VM size").hint.as_deref(),
        Some("use one of a100-40gb, a100-80gb, l40s, a10")
    );
    let r = check("app = \"demo\"\n[[vm]]\nsize = \"huge\"\n");
    let hint = find(&r, "not a valid VM size")
        .hint
        .clone()
        .unwrap_or_default();
    assert!(
        hint.contains("shared-cpu-1x") && hint.contains("performance-16x") && hint.contains("l40s"),
        "{hint}"
    );
}

#[test]
fn vm_cpu_kind_cpus_and_persist_rootfs_must_be_valid() {
    let r = check("app = \"demo\"\n[[vm]]\ncpu_kind = \"turbo\"\n");
    assert_finding(
        &r,
        Error,
        "vm[0].cpu_kind",
        (3, 12),
        "'turbo' is not a CPU kind",
    );
    let r = check("app = \"demo\"\n[[vm]]\ncpus = 0\n");
    assert_finding(
        &r,
        Error,
        "vm[0].cpus",
        (3, 8),
        "cpus must be at least 1, got 0",
    );
    let r = check("app = \"demo\"\n[[vm]]\npersist_rootfs = \"sometimes\"\n");
    assert_finding(
        &r,
        Error,
        "vm[0].persist_rootfs",
        (3, 18),
        "'sometimes' is not a persist_rootfs value",
    );
}

#[test]
fn vm_memory_outside_the_per_cpu_bounds_is_a_warning() {
    let r = check("app = \"demo\"\n[[vm]]\nsize = \"shared-cpu-1x\"\nmemory = \"4gb\"\n");
    assert_finding(
        &r,
        Warning,
        "vm[0]",
        (2, 1),
        "4096 MB for 1 shared CPU(s) is outside 256–2048 MB",
    );
    assert_no_errors(&r);
}

#[test]
fn second_vm_for_a_group_is_a_warning() {
    let r = check(
        "app = \"demo\"\n[processes]\nweb = \"\"\n[[vm]]\nsize = \"shared-cpu-1x\"\nprocesses = [\"web\"]\n[[vm]]\nsize = \"shared-cpu-2x\"\nprocesses = [\"web\"]\n",
    );
    assert_finding(
        &r,
        Warning,
        "vm[1]",
        (7, 1),
        "group 'web' has more than one [[vm]]; only the last applies",
    );
    assert_no_errors(&r);
}

// ---- [[statics]], [[files]], [[metrics]], [[machine_checks]] ------------------------------

#[test]
fn overlapping_statics_prefixes_are_errors() {
    let r = check(
        r#"app = "demo"
[[statics]]
guest_path = "/app/public"
url_prefix = "/static"
[[statics]]
guest_path = "/app/css"
url_prefix = "/static/css"
[[statics]]
guest_path = "/app/other"
url_prefix = "/staticfiles"
"#,
    );
    assert_finding(
        &r,
        Error,
        "statics[1].url_prefix",
        (7, 14),
        "url_prefix '/static/css' overlaps the one of statics[0]",
    );
    assert_errors(&r, &["overlaps"]);
    // One error per static, naming the first earlier static it overlaps.
    let r = check(
        "app = \"demo\"\n[[statics]]\nguest_path = \"/a\"\nurl_prefix = \"/a/b\"\n[[statics]]\nguest_path = \"/b\"\nurl_prefix = \"/a/\"\n[[statics]]\nguest_path = \"/c\"\nurl_prefix = \"/\"\n",
    );
    assert_finding(
        &r,
        Error,
        "statics[1].url_prefix",
        (7, 14),
        "url_prefix '/a/' overlaps the one of statics[0]",
    );
    assert_finding(
        &r,
        Error,
        "statics[2].url_prefix",
        (10, 14),
        "url_prefix '/' overlaps the one of statics[0]",
    );
    assert_eq!(r.errors().count(), 2, "{}", dump(&r));
}

#[test]
fn statics_need_guest_path_and_url_prefix_and_at_most_ten() {
    let r = check("app = \"demo\"\n[[statics]]\nindex_document = \"index.html\"\n");
    assert_finding(&r, Error, "statics[0]", (2, 1), "static has no guest_path");
    assert_finding(&r, Error, "statics[0]", (2, 1), "static has no url_prefix");
    assert_finding(
        &r,
        Warning,
        "statics[0].index_document",
        (3, 18),
        "index_document only applies to Tigris statics",
    );
    let mut text = String::from("app = \"demo\"\n");
    for i in 0..11 {
        text.push_str(&format!(
            "[[statics]]\nguest_path = \"/p{i}\"\nurl_prefix = \"/p{i}\"\n"
        ));
    }
    let r = check(&text);
    assert_finding(
        &r,
        Error,
        "statics[10]",
        (32, 1),
        "11 [[statics]] sections; at most 10 are allowed",
    );
    assert_errors(&r, &["at most 10"]);
}

#[test]
fn file_with_two_sources_is_an_error() {
    let r = check(
        "app = \"demo\"\n[[files]]\nguest_path = \"/etc/app.conf\"\nraw_value = \"eA==\"\nsecret_name = \"CONF\"\n",
    );
    assert_finding(
        &r,
        Error,
        "files[0]",
        (2, 1),
        "file sets more than one of raw_value, local_path and secret_name",
    );
    assert_errors(&r, &["more than one"]);
}

#[test]
fn file_guest_path_is_required_and_absolute() {
    let r = check("app = \"demo\"\n[[files]]\nraw_value = \"eA==\"\n");
    assert_finding(&r, Error, "files[0]", (2, 1), "file has no guest_path");
    let r = check("app = \"demo\"\n[[files]]\nguest_path = \"etc/x\"\nraw_value = \"eA==\"\n");
    assert_finding(
        &r,
        Error,
        "files[0].guest_path",
        (3, 14),
        "guest_path 'etc/x' must be absolute",
    );
}

#[test]
fn metrics_need_a_port_and_one_per_group() {
    let r = check("app = \"demo\"\n[[metrics]]\npath = \"/metrics\"\n[[metrics]]\nport = 9091\n");
    assert_finding(&r, Error, "metrics[0]", (2, 1), "metrics has no port");
    assert_finding(
        &r,
        Warning,
        "metrics[1]",
        (4, 1),
        "group 'app' has more than one [[metrics]]; only the first is scraped",
    );
    assert_errors(&r, &["no port"]);
}

#[test]
fn machine_checks_need_a_command_and_a_valid_signal() {
    let r = check(
        "app = \"demo\"\n[[machine_checks]]\nimage = \"curl\"\n[http_service]\ninternal_port = 8080\n[[http_service.machine_checks]]\ncommand = [\"true\"]\nkill_signal = \"SIGNOPE\"\n",
    );
    assert_finding(
        &r,
        Error,
        "machine_checks[0]",
        (2, 1),
        "machine check has no command",
    );
    assert_finding(
        &r,
        Error,
        "http_service.machine_checks[0].kill_signal",
        (8, 15),
        "'SIGNOPE' is not a signal",
    );
    assert_errors(&r, &["no command", "SIGNOPE"]);
}

// ---- type errors --------------------------------------------------------------------------

#[test]
fn wrong_value_types_are_errors_at_the_value() {
    let r = check(
        "app = \"demo\"\nswap_size_mb = \"lots\"\n[http_service]\nforce_https = \"yes\"\ninternal_port = 8080\n",
    );
    assert_finding(
        &r,
        Error,
        "swap_size_mb",
        (2, 16),
        "invalid type: string \"lots\", expected an integer",
    );
    assert_finding(
        &r,
        Error,
        "http_service.force_https",
        (4, 15),
        "invalid type: string \"yes\", expected a boolean",
    );
    assert_errors(&r, &["lots", "yes"]);
}

// ---- --strict -----------------------------------------------------------------------------

#[test]
fn strict_reports_unknown_keys_with_did_you_mean() {
    let text = r#"app = "demo"
[http_service]
internal_port = 8080
[[http_service.checks]]
nterval = "10s"
[servics]
x = 1
[env]
FOO = "bar"
"#;
    // Not strict: unknown keys are ignored.
    assert_clean(&check(text));
    let r = check_strict(text);
    assert_finding(
        &r,
        Error,
        "http_service.checks[0].nterval",
        (5, 1),
        "unrecognized key 'nterval' in http_service.checks[0]",
    );
    assert_eq!(
        find(&r, "nterval").hint.as_deref(),
        Some("did you mean 'interval'? Otherwise remove it; Hangar ignores it")
    );
    assert_finding(
        &r,
        Error,
        "servics",
        (6, 2),
        "unrecognized section or key 'servics' at the top level",
    );
    assert_eq!(
        find(&r, "servics").hint.as_deref(),
        Some("did you mean 'services'? Otherwise remove it; Hangar ignores it")
    );
    assert_errors(&r, &["nterval", "servics"]);
}

#[test]
fn strict_unknown_key_without_a_close_match_gets_a_plain_hint() {
    let r = check_strict("app = \"demo\"\n[deploy]\nzzzzzzzzzzzz = 1\n");
    assert_finding(
        &r,
        Error,
        "deploy.zzzzzzzzzzzz",
        (3, 1),
        "unrecognized key 'zzzzzzzzzzzz' in deploy",
    );
    assert_eq!(
        find(&r, "zzzz").hint.as_deref(),
        Some("remove it, or check the fly.toml reference for where it belongs; Hangar ignores it")
    );
}
