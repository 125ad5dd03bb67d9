//! Fully populated values: every field set and every list/map non-empty.
//!
//! Built with exhaustive struct literals (no `..Default::default()`), so adding a field
//! to a wire type fails to compile until it is populated here too.

use std::collections::BTreeMap;

use hangar_api_types::*;
use serde_json::json;

fn s(v: &str) -> String {
    v.to_owned()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| (*x).to_owned()).collect()
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

pub fn guest() -> MachineGuest {
    MachineGuest {
        cpu_kind: Some(s("shared")),
        cpus: Some(2),
        memory_mb: Some(512),
        max_memory_mb: Some(1024),
        gpus: Some(1),
        gpu_kind: Some(s("l40s")),
        host_dedication_id: Some(s("dedication-1")),
        persist_rootfs: Some(s("restart")),
        kernel_args: strings(&["quiet"]),
    }
}

pub fn check(kind: Option<CheckKind>) -> MachineCheck {
    MachineCheck {
        r#type: Some(s("http")),
        port: Some(8080),
        interval: Some(Duration::from_secs(15)),
        timeout: Some(Duration::from_secs(2)),
        grace_period: Some(Duration::from_millis(1500)),
        method: Some(s("GET")),
        path: Some(s("/healthz")),
        protocol: Some(s("https")),
        tls_skip_verify: Some(true),
        tls_server_name: Some(s("app.example.com")),
        headers: vec![MachineHttpHeader {
            name: s("X-Check"),
            values: strings(&["1", "2"]),
        }],
        kind,
    }
}

pub fn file() -> File {
    File {
        guest_path: s("/etc/app.conf"),
        raw_value: Some(s("aGVsbG8=")),
        secret_name: Some(s("APP_CONF")),
        image_config: Some(s("registry.fly.io/app:v1")),
        mode: Some(0o644),
    }
}

pub fn restart(policy: RestartPolicy) -> MachineRestart {
    MachineRestart {
        policy: Some(policy),
        max_retries: Some(10),
    }
}

pub fn stop_config() -> StopConfig {
    StopConfig {
        signal: Some(s("SIGTERM")),
        timeout: Some(Duration::from_mins(5)),
    }
}

pub fn service(autostop: Autostop) -> MachineService {
    MachineService {
        protocol: s("tcp"),
        internal_port: 8080,
        autostop: Some(autostop),
        autostart: Some(true),
        min_machines_running: Some(1),
        ports: vec![MachinePort {
            port: Some(443),
            start_port: Some(8000),
            end_port: Some(8010),
            handlers: strings(&["tls", "http"]),
            force_https: Some(true),
            tls_options: Some(TlsOptions {
                alpn: strings(&["h2", "http/1.1"]),
                versions: strings(&["TLSv1.2", "TLSv1.3"]),
                default_self_signed: Some(false),
            }),
            http_options: Some(HttpOptions {
                compress: Some(true),
                h2_backend: Some(false),
                idle_timeout: Some(600),
                headers_read_timeout: Some(10),
                response: Some(HttpResponseOptions {
                    headers: [
                        (s("Server"), json!(false)),
                        (s("X-Frame-Options"), json!("DENY")),
                        (s("Vary"), json!(["Accept", "Origin"])),
                    ]
                    .into_iter()
                    .collect(),
                    pristine: Some(true),
                }),
                replay_cache: vec![ReplayCache {
                    path_prefix: s("/api"),
                    ttl_seconds: 300,
                    r#type: s("cookie"),
                    name: s("session"),
                    allow_bypass: Some(true),
                }],
            }),
            proxy_proto_options: Some(ProxyProtoOptions {
                version: Some(s("v2")),
            }),
        }],
        checks: vec![check(None)],
        concurrency: Some(MachineServiceConcurrency {
            r#type: Some(ConcurrencyType::Requests),
            soft_limit: Some(20),
            hard_limit: Some(25),
        }),
        force_instance_key: Some(s("01HXINSTANCEKEY")),
        force_instance_description: Some(s("bluegreen")),
    }
}

pub fn secret_ref() -> MachineSecret {
    MachineSecret {
        env_var: s("DATABASE_URL"),
        name: Some(s("PG_URL")),
    }
}

pub fn env_from() -> EnvFrom {
    EnvFrom {
        env_var: s("FLY_MACHINE_ID"),
        field_ref: s("id"),
    }
}

pub fn config(autostop: Autostop) -> MachineConfig {
    MachineConfig {
        image: s("registry.fly.io/my-app:deployment-01HX"),
        env: map(&[("PRIMARY_REGION", "ord"), ("PORT", "8080")]),
        init: Some(MachineInit {
            exec: strings(&["/bin/sh", "-c", "exec app"]),
            entrypoint: strings(&["/entry"]),
            cmd: strings(&["serve"]),
            tty: Some(false),
            swap_size_mb: Some(512),
            kernel_args: strings(&["console=ttyS0"]),
        }),
        guest: Some(guest()),
        size: Some(s("shared-cpu-2x")),
        metadata: map(&[
            ("fly_platform_version", "v2"),
            ("fly_process_group", "app"),
            ("fly_release_id", "Rel_123"),
            ("fly_release_version", "7"),
        ]),
        services: vec![service(autostop)],
        checks: [(s("alive"), check(Some(CheckKind::Readiness)))]
            .into_iter()
            .collect(),
        restart: Some(restart(RestartPolicy::OnFailure)),
        auto_destroy: Some(false),
        mounts: vec![MachineMount {
            volume: Some(s("vol_1234567890abcdef")),
            path: Some(s("/data")),
            name: Some(s("data")),
            encrypted: Some(true),
            size_gb: Some(3),
            extend_threshold_percent: Some(80),
            add_size_gb: Some(1),
            size_gb_limit: Some(10),
        }],
        processes: vec![MachineProcess {
            exec: strings(&["/bin/worker"]),
            entrypoint: strings(&["/entry"]),
            cmd: strings(&["work"]),
            user: Some(s("app")),
            env: map(&[("QUEUE", "default")]),
            env_from: vec![env_from()],
            secrets: vec![secret_ref()],
            ignore_app_secrets: Some(true),
        }],
        files: vec![file()],
        dns: Some(DnsConfig {
            skip_registration: Some(false),
            nameservers: strings(&["1.1.1.1"]),
            searches: strings(&["internal"]),
            options: vec![DnsOption {
                name: s("ndots"),
                value: Some(s("2")),
            }],
            dns_forward_rules: vec![DnsForwardRule {
                basename: s("corp.example"),
                addr: s("10.0.0.53"),
            }],
            hostname: Some(s("web-1")),
            hostname_fqdn: Some(s("web-1.my-app.internal")),
        }),
        stop_config: Some(stop_config()),
        schedule: Some(s("daily")),
        standbys: strings(&["148e272b7d0d89"]),
        statics: vec![Static {
            guest_path: s("/app/public"),
            url_prefix: s("/static"),
            tigris_bucket: Some(s("assets")),
            index_document: Some(s("index.html")),
        }],
        metrics: Some(MachineMetrics {
            port: Some(9091),
            path: Some(s("/metrics")),
            https: Some(false),
        }),
        containers: vec![ContainerConfig {
            name: s("sidecar"),
            image: s("nginx:1.27"),
            exec: strings(&["nginx", "-g", "daemon off;"]),
            entrypoint: strings(&["/docker-entrypoint.sh"]),
            cmd: strings(&["nginx"]),
            user: Some(s("nginx")),
            env: map(&[("MODE", "proxy")]),
            secrets: vec![secret_ref()],
            env_from: vec![env_from()],
            files: vec![file()],
            restart: Some(restart(RestartPolicy::Always)),
            stop: Some(stop_config()),
            depends_on: vec![ContainerDependency {
                name: s("app"),
                condition: DependencyCondition::Healthy,
            }],
            healthchecks: vec![ContainerHealthcheck {
                name: s("up"),
                interval: Some(10),
                grace_period: Some(5),
                success_threshold: Some(1),
                failure_threshold: Some(3),
                timeout: Some(2),
                kind: Some(s("readiness")),
                unhealthy: Some(s("stop")),
                http: Some(HttpHealthcheck {
                    port: 80,
                    method: Some(s("GET")),
                    path: Some(s("/")),
                    headers: vec![MachineHttpHeader {
                        name: s("Host"),
                        values: strings(&["localhost"]),
                    }],
                    scheme: Some(s("http")),
                    tls_skip_verify: Some(false),
                    tls_server_name: Some(s("localhost")),
                }),
                tcp: Some(TcpHealthcheck { port: 80 }),
                exec: Some(ExecHealthcheck {
                    command: strings(&["true"]),
                }),
            }],
            mounts: vec![ContainerMount {
                name: s("scratch"),
                path: s("/scratch"),
            }],
        }],
        volumes: vec![VolumeConfig {
            name: s("scratch"),
            temp_dir: Some(TempDirVolume {
                storage_type: s("memory"),
                size_mb: Some(64),
            }),
            image: Some(s("busybox")),
        }],
        rootfs: Some(MachineRootfs {
            persist: Some(s("always")),
            size_gb: Some(8),
        }),
        cache_drive: Some(CacheDrive {
            size_mb: Some(1024),
        }),
        disable_machine_autostart: Some(false),
    }
}

pub fn exit_event() -> ExitEvent {
    ExitEvent {
        exit_code: Some(137),
        guest_exit_code: Some(0),
        guest_signal: Some(9),
        oom_killed: Some(true),
        requested_stop: Some(false),
        restarting: Some(true),
        signal: Some(-1),
        exited_at: Some(s("2024-03-01T10:05:00.123Z")),
    }
}

pub fn machine() -> Machine {
    Machine {
        id: s("3d8d413b29d089"),
        name: s("quiet-sun-1234"),
        state: MachineState::Started,
        region: s("ord"),
        image_ref: Some(ImageRef {
            registry: s("registry.fly.io"),
            repository: s("my-app"),
            tag: s("deployment-01HX"),
            digest: s("sha256:0123456789abcdef"),
            labels: map(&[("fly.version", "7")]),
        }),
        instance_id: s("01HQZ5K6T3W1V2X3Y4Z5A6B7C8"),
        version: Some(s("01HQZ5K6T3W1V2X3Y4Z5A6B7C8")),
        private_ip: s("fdaa:0:3ec2:a7b:5adc:6068:5b85:2"),
        created_at: s("2024-03-01T10:00:00Z"),
        updated_at: s("2024-03-01T10:00:05Z"),
        config: Some(config(Autostop::Suspend)),
        incomplete_config: Some(MachineConfig {
            image: s("registry.fly.io/my-app:deployment-01HX"),
            ..MachineConfig::default()
        }),
        events: vec![MachineEvent {
            id: Some(s("01HQZ5M0000000000000000000")),
            r#type: s("exit"),
            status: s("stopped"),
            source: s("flyd"),
            timestamp: 1_709_287_500_123,
            request: Some(MachineEventRequest {
                exit_event: Some(exit_event()),
                monitor_event: Some(MonitorEvent {
                    exit_event: Some(exit_event()),
                }),
                restart_count: Some(2),
                extra: [(s("reason"), json!("oom"))].into_iter().collect(),
            }),
        }],
        checks: vec![CheckStatusEntry {
            name: s("servicecheck-00-http-8080"),
            status: CheckStatus::Passing,
            output: s("Success"),
            updated_at: Some(s("2024-03-01T10:00:20.123Z")),
        }],
        nonce: Some(s("a1b2c3d4")),
        host_status: Some(HostStatus::Ok),
        cordoned: Some(false),
        containers: vec![ContainerStatus {
            name: s("sidecar"),
            state: s("running"),
        }],
    }
}

pub fn create_request(current_version: Option<String>) -> CreateMachineRequest {
    CreateMachineRequest {
        name: Some(s("quiet-sun-1234")),
        region: Some(s("ord")),
        config: config(Autostop::Stop),
        skip_launch: Some(false),
        skip_service_registration: Some(false),
        lease_ttl: Some(30),
        lsvd: Some(false),
        skip_secrets: Some(false),
        min_secrets_version: Some(4),
        current_version,
    }
}

pub fn volume() -> Volume {
    Volume {
        id: s("vol_1234567890abcdef"),
        name: s("data"),
        state: s("created"),
        size_gb: 3,
        region: s("ord"),
        zone: s("e1a2"),
        encrypted: true,
        fstype: Some(s("ext4")),
        attached_machine_id: Some(s("3d8d413b29d089")),
        attached_alloc_id: Some(s("3d8d413b29d089")),
        created_at: s("2024-03-01T09:59:00Z"),
        host_dedication_id: Some(s("dedication-1")),
        snapshot_retention: Some(5),
        auto_backup_enabled: Some(true),
        host_status: Some(HostStatus::Ok),
        block_size: Some(4096),
        blocks: Some(786_432),
        blocks_avail: Some(700_000),
        blocks_free: Some(740_000),
    }
}

pub fn create_volume_request() -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: s("data"),
        region: s("ord"),
        size_gb: Some(3),
        encrypted: Some(true),
        require_unique_zone: Some(true),
        unique_zone_app_wide: Some(false),
        snapshot_retention: Some(5),
        auto_backup_enabled: Some(true),
        fstype: Some(s("ext4")),
        snapshot_id: Some(s("vs_123")),
        source_volume_id: Some(s("vol_abc")),
        compute: Some(guest()),
        compute_image: Some(s("registry.fly.io/my-app:v1")),
        machines_only: Some(true),
    }
}

pub fn snapshot() -> VolumeSnapshot {
    VolumeSnapshot {
        id: s("vs_123"),
        size: 1_234_567,
        volume_size: Some(3_221_225_472),
        digest: s("sha256:feed"),
        created_at: s("2024-03-02T00:00:00Z"),
        status: s("created"),
        retention_days: Some(5),
    }
}

pub fn lease_data() -> LeaseData {
    LeaseData {
        nonce: s("a1b2c3d4"),
        expires_at: 1_709_287_300,
        owner: s("user@example.com"),
        description: s("deploy"),
        version: s("01HQZ5K6T3W1V2X3Y4Z5A6B7C8"),
    }
}

pub fn app() -> App {
    App {
        id: s("my-app"),
        name: s("my-app"),
        organization: Some(AppOrganization {
            name: s("Personal"),
            slug: s("personal"),
            internal_numeric_id: Some(42),
        }),
        status: Some(s("deployed")),
        network: Some(s("default")),
        internal_numeric_id: Some(1234),
        machine_count: Some(2),
        volume_count: Some(1),
        cname_target: Some(s("abc123.my-app.fly.dev")),
        app_role: Some(s("")),
    }
}

pub fn list_apps() -> ListAppsResponse {
    ListAppsResponse {
        total_apps: 1,
        apps: vec![ListApp {
            id: s("my-app"),
            name: s("my-app"),
            machine_count: Some(2),
            volume_count: Some(1),
            network: Some(s("default")),
        }],
    }
}

pub fn create_app_request() -> CreateAppRequest {
    CreateAppRequest {
        app_name: Some(s("my-app")),
        org_slug: s("personal"),
        network: Some(s("")),
        name: Some(s("my-app")),
        app_role_id: Some(s("")),
    }
}

pub fn exec_request() -> ExecRequest {
    ExecRequest {
        cmd: Some(s("ls -la")),
        command: strings(&["ls", "-la"]),
        container: Some(s("sidecar")),
        stdin: Some(s("input")),
        timeout: Some(30),
    }
}

pub fn process_stat() -> ProcessStat {
    ProcessStat {
        pid: 1,
        stime: 10,
        rtime: 20,
        command: s("/bin/app serve"),
        directory: s("/app"),
        cpu: 3,
        rss: 1_048_576,
        listen_sockets: vec![ListenSocket {
            proto: s("tcp"),
            address: s("0.0.0.0:8080"),
        }],
    }
}
