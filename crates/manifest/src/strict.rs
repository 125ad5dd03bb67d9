//! `--strict`: unknown sections and keys, each with a "did you mean" when one is close.

use crate::decode::{UnknownKey, render};
use crate::finding::{Finding, Severity};
use crate::source::Seg;
use crate::validate::closest;

/// Every key the manifest understands, anywhere; used only for suggestions.
const VOCABULARY: &[&str] = &[
    "app",
    "primary_region",
    "kill_signal",
    "kill_timeout",
    "swap_size_mb",
    "console_command",
    "host_dedication_id",
    "machine_config",
    "container",
    "build",
    "deploy",
    "env",
    "processes",
    "http_service",
    "services",
    "checks",
    "files",
    "mounts",
    "vm",
    "restart",
    "statics",
    "metrics",
    "machine_checks",
    "experimental",
    "builder",
    "args",
    "buildpacks",
    "image",
    "settings",
    "builtin",
    "dockerfile",
    "ignorefile",
    "build-target",
    "compose",
    "file",
    "compression",
    "compression_level",
    "release_command",
    "release_command_timeout",
    "release_command_vm",
    "strategy",
    "max_unavailable",
    "wait_timeout",
    "seed_command",
    "internal_port",
    "force_https",
    "auto_stop_machines",
    "auto_start_machines",
    "min_machines_running",
    "concurrency",
    "tls_options",
    "http_options",
    "protocol",
    "ports",
    "tcp_checks",
    "http_checks",
    "port",
    "start_port",
    "end_port",
    "handlers",
    "proxy_proto_options",
    "version",
    "type",
    "soft_limit",
    "hard_limit",
    "interval",
    "timeout",
    "grace_period",
    "method",
    "path",
    "tls_skip_verify",
    "tls_server_name",
    "headers",
    "kind",
    "command",
    "entrypoint",
    "guest_path",
    "local_path",
    "secret_name",
    "raw_value",
    "source",
    "destination",
    "initial_size",
    "snapshot_retention",
    "scheduled_snapshots",
    "auto_extend_size_threshold",
    "auto_extend_size_increment",
    "auto_extend_size_limit",
    "size",
    "memory",
    "cpu_kind",
    "cpus",
    "memory_mb",
    "gpus",
    "gpu_kind",
    "kernel_args",
    "persist_rootfs",
    "policy",
    "retries",
    "url_prefix",
    "tigris_bucket",
    "index_document",
    "https",
    "cmd",
    "exec",
    "auto_rollback",
    "enable_consul",
    "enable_etcd",
    "lazy_load_images",
    "attached",
    "alpn",
    "versions",
    "default_self_signed",
    "compress",
    "h2_backend",
    "idle_timeout",
    "headers_read_timeout",
    "response",
    "pristine",
    "replay_cache",
];

/// The strict-mode finding for an unknown key.
pub(crate) fn finding(file: &str, u: &UnknownKey) -> Finding {
    let name = match u.path.last() {
        Some(Seg::Key(k)) => k.clone(),
        _ => render(&u.path),
    };
    let parent = render(&u.path[..u.path.len().saturating_sub(1)]);
    let (what, place) = if u.path.len() == 1 {
        ("section or key", "at the top level".to_string())
    } else {
        ("key", format!("in {parent}"))
    };
    let mut f = Finding::new(
        Severity::Error,
        file,
        u.pos,
        &render(&u.path),
        format!("unrecognized {what} '{name}' {place}"),
    );
    f.hint = Some(match closest(&name, VOCABULARY) {
        Some(s) if s != name => {
            format!("did you mean '{s}'? Otherwise remove it; Hangar ignores it")
        }
        _ => "remove it, or check the fly.toml reference for where it belongs; Hangar ignores it"
            .to_string(),
    });
    f
}
