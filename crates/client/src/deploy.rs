//! Deploys (PLATFORM.md §1.5): a fly.toml's process groups become machines, and a new
//! release replaces the old one with a strategy that keeps the app serving.
//!
//! - First deploy of a group: `count` machines (2 for groups with services when `ha`, else 1),
//!   spread over `regions`; waited for until started and passing their checks.
//! - `immediate`: every machine updated at once, nothing waited for.
//! - `rolling`: batches of `max_unavailable` (a fraction of the group, or a count); each
//!   machine is cordoned (the proxy stops routing to it), updated, waited for until started
//!   and healthy, and uncordoned. A machine that exits or fails its checks fails the deploy
//!   at once (not after the timeout), and every machine updated so far is rolled back to its
//!   previous config.
//! - `canary`: one extra machine with the new config must become healthy (then it goes), then
//!   `rolling`.
//! - `bluegreen`: a full new set (green) is made cordoned, waited for until healthy, then
//!   uncordoned while the old set (blue) is cordoned and destroyed; a failing green set is
//!   destroyed and blue keeps serving.
//! - `release_command` runs first in a temporary machine; a non-zero exit aborts the deploy
//!   before any machine changes, with the command's output.
//!
//! Stopped machines are updated without being started unless `start_stopped`. Each changed
//! machine is leased for the duration of its change.
//!
//! `[mounts]`: each machine of the group mounts a volume of its own named `source`: a free one
//! in its region, else one made for it (`initial_size`, `snapshot_retention`,
//! `scheduled_snapshots`). Updates keep a machine's volume. canary and bluegreen are refused
//! for such groups and the release command runs without volumes.

use std::collections::BTreeMap;
use std::time::Duration;

use hangar_api_types::{CreateMachineRequest, Machine, MachineConfig, MachineState, StopConfig};
use hangar_manifest::{Config, ConvertOptions};

use crate::api::{Client, ClientError};

/// How a release replaces the running one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Update everything at once.
    Immediate,
    /// In batches, each healthy before the next.
    Rolling,
    /// One healthy canary first, then rolling.
    Canary,
    /// A healthy new set, then the switch.
    Bluegreen,
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "immediate" => Ok(Strategy::Immediate),
            "" | "rolling" => Ok(Strategy::Rolling),
            "canary" => Ok(Strategy::Canary),
            "bluegreen" => Ok(Strategy::Bluegreen),
            other => Err(format!(
                "unknown strategy '{other}' (immediate, rolling, canary, bluegreen)"
            )),
        }
    }
}

/// What to deploy and how.
#[derive(Debug, Clone)]
pub struct DeployOptions {
    /// App name.
    pub app: String,
    /// Org to create the app in when it does not exist.
    pub org: String,
    /// Image reference machines run.
    pub image: String,
    /// Strategy.
    pub strategy: Strategy,
    /// Batch size of rolling updates: a fraction (< 1) of the group or a count (≥ 1).
    pub max_unavailable: f64,
    /// How long one machine may take to become healthy.
    pub wait_timeout: Duration,
    /// Extra env for every machine (`--env`).
    pub env: BTreeMap<String, String>,
    /// Regions for new machines (round robin); empty: the API's default.
    pub regions: Vec<String>,
    /// Two machines for groups with services on a first deploy.
    pub ha: bool,
    /// Start stopped machines after updating them.
    pub start_stopped: bool,
    /// Do not wait for machines (only `immediate`-like changes are made).
    pub detach: bool,
    /// Machines are created and updated only once the app's secrets are at least this
    /// version (§2.10 `min_secrets_version`): a deploy that follows `secrets set` passes the
    /// version that write returned, so no machine starts with older secrets.
    pub min_secrets_version: Option<u64>,
}

/// Something worth telling the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A step started.
    Step(String),
    /// A machine changed.
    Machine {
        /// Its id.
        id: String,
        /// What happened.
        what: String,
    },
    /// Output of the release command.
    ReleaseOutput(String),
}

/// Why a deploy failed.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The fly.toml can not become machine configs.
    #[error("{0}")]
    Config(String),
    /// An API call failed.
    #[error(transparent)]
    Api(#[from] ClientError),
    /// The release command exited non-zero.
    #[error(
        "release command failed (exit code {code}); the deploy was aborted before any machine changed"
    )]
    ReleaseCommand {
        /// Its exit code.
        code: i64,
        /// Its output.
        output: String,
    },
    /// A machine did not become healthy; what was changed has been rolled back.
    #[error("machine {id} {why}; {rolled_back}")]
    Unhealthy {
        /// The machine.
        id: String,
        /// What went wrong.
        why: String,
        /// What was done about it.
        rolled_back: String,
    },
}

/// What a deploy did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Machines created.
    pub created: Vec<String>,
    /// Machines updated.
    pub updated: Vec<String>,
    /// Machines destroyed.
    pub destroyed: Vec<String>,
}

/// Machine configs per process group for `config` with `opts` applied.
pub fn group_configs(
    config: &Config,
    opts: &DeployOptions,
    read_file: Option<hangar_manifest::machine::FileReader<'_>>,
) -> Result<BTreeMap<String, MachineConfig>, DeployError> {
    let mut groups = hangar_manifest::machine_configs(
        config,
        ConvertOptions {
            image: Some(&opts.image),
            read_file,
        },
    )
    .map_err(|e| DeployError::Config(e.to_string()))?;
    for m in groups.values_mut() {
        for (k, v) in &opts.env {
            m.env.insert(k.clone(), v.clone());
        }
        m.metadata
            .insert("fly_platform_version".into(), "v2".into());
    }
    Ok(groups)
}

fn group_of(m: &Machine, default: &str) -> String {
    m.config
        .as_ref()
        .and_then(|c| {
            c.metadata
                .get("fly_process_group")
                .or_else(|| c.metadata.get("process_group"))
        })
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

fn live(m: &Machine) -> bool {
    !matches!(
        m.state,
        MachineState::Destroyed | MachineState::Destroying | MachineState::Replacing
    ) && m.state.as_str() != "replaced"
}

/// Runs a deploy.
pub async fn deploy(
    client: &Client,
    config: &Config,
    groups: BTreeMap<String, MachineConfig>,
    opts: &DeployOptions,
    on: &mut (dyn FnMut(Event) + Send),
) -> Result<Report, DeployError> {
    let mut report = Report::default();
    let new_app = client.app(&opts.app).await?.is_none();
    if new_app {
        on(Event::Step(format!("creating app {}", opts.app)));
        client.create_app(&opts.app, &opts.org, None).await?;
    }
    let default = config.default_group();
    if let Some(cmd) = config
        .deploy
        .as_ref()
        .and_then(|d| d.release_command.clone())
        .filter(|c| !c.trim().is_empty())
    {
        let base = groups
            .get(&default)
            .or_else(|| groups.values().next())
            .cloned()
            .unwrap_or_default();
        release_command(client, opts, base, &cmd, on).await?;
    }
    // A new app has no machines yet (one request less on a first deploy).
    let listed = if new_app {
        Vec::new()
    } else {
        client.machines(&opts.app).await?
    };
    let existing: Vec<Machine> = listed
        .into_iter()
        .filter(live)
        .filter(|m| {
            // Temporary machines of earlier deploys are not part of any group.
            !group_of(m, &default).starts_with("fly_app_")
        })
        .collect();
    for (group, cfg) in &groups {
        let mine: Vec<&Machine> = existing
            .iter()
            .filter(|m| group_of(m, &default) == *group)
            .collect();
        if mine.is_empty() {
            let count = if opts.ha && !cfg.services.is_empty() {
                2
            } else {
                1
            };
            on(Event::Step(format!(
                "creating {count} machine{} in group '{group}'",
                if count == 1 { "" } else { "s" }
            )));
            let regions: Vec<Option<String>> = (0..count)
                .map(|i| {
                    (!opts.regions.is_empty()).then(|| opts.regions[i % opts.regions.len()].clone())
                })
                .collect();
            ensure_volumes(client, opts, config, cfg, &regions, on).await?;
            for region in regions {
                let with_volume =
                    mount_volume(client, &opts.app, cfg.clone(), region.as_deref(), None).await?;
                let m = create(client, opts, with_volume, region, false).await?;
                on(Event::Machine {
                    id: m.id.clone(),
                    what: "created".into(),
                });
                report.created.push(m.id.clone());
                if !opts.detach
                    && let Err(why) = healthy(
                        client,
                        &opts.app,
                        &m.id,
                        None,
                        checks_of(m.config.as_ref()),
                        opts.wait_timeout,
                    )
                    .await?
                {
                    return Err(DeployError::Unhealthy {
                        id: m.id,
                        why,
                        rolled_back: "the new machines were left for inspection (first deploy: nothing to roll back to)".into(),
                    });
                }
            }
            continue;
        }
        let strategy = if opts.detach {
            Strategy::Immediate
        } else {
            opts.strategy
        };
        volumes_for_update(client, opts, config, cfg, &mine, strategy, on).await?;
        on(Event::Step(format!(
            "updating {} machine{} in group '{group}' ({})",
            mine.len(),
            if mine.len() == 1 { "" } else { "s" },
            match strategy {
                Strategy::Immediate => "immediate",
                Strategy::Rolling => "rolling",
                Strategy::Canary => "canary",
                Strategy::Bluegreen => "bluegreen",
            }
        )));
        match strategy {
            Strategy::Immediate => {
                for m in &mine {
                    update(client, opts, m, cfg.clone(), false).await?;
                    on(Event::Machine {
                        id: m.id.clone(),
                        what: "updated".into(),
                    });
                    report.updated.push(m.id.clone());
                }
            }
            Strategy::Rolling => rolling(client, opts, &mine, cfg, on, &mut report).await?,
            Strategy::Canary => {
                on(Event::Step("starting a canary machine".into()));
                let region = mine.first().map(|m| m.region.clone());
                let canary = create(client, opts, cfg.clone(), region, false).await?;
                let verdict = healthy(
                    client,
                    &opts.app,
                    &canary.id,
                    None,
                    checks_of(canary.config.as_ref()),
                    opts.wait_timeout,
                )
                .await;
                let _ = client.destroy(&opts.app, &canary.id, true).await;
                on(Event::Machine {
                    id: canary.id.clone(),
                    what: "canary destroyed".into(),
                });
                if let Err(why) = verdict? {
                    return Err(DeployError::Unhealthy {
                        id: canary.id,
                        why,
                        rolled_back: "the canary was destroyed; no machine was changed".into(),
                    });
                }
                rolling(client, opts, &mine, cfg, on, &mut report).await?;
            }
            Strategy::Bluegreen => bluegreen(client, opts, &mine, cfg, on, &mut report).await?,
        }
    }
    // Groups no longer in the config.
    for m in &existing {
        if !groups.contains_key(&group_of(m, &default)) {
            client.destroy(&opts.app, &m.id, true).await?;
            on(Event::Machine {
                id: m.id.clone(),
                what: format!("destroyed (group '{}' is gone)", group_of(m, &default)),
            });
            report.destroyed.push(m.id.clone());
        }
    }
    Ok(report)
}

/// After a secrets change (`secrets set` without `--stage`): every started machine of the app
/// is updated to its own config, one at a time, like a rolling deploy (cordoned, leased,
/// waited for until healthy, uncordoned; a failing machine is rolled back and stops the roll),
/// asking for `min_secrets_version` so none starts with older secrets. Returns the machines
/// updated.
pub async fn roll_secrets(
    client: &Client,
    app: &str,
    min_secrets_version: u64,
    wait_timeout: Duration,
    on: &mut (dyn FnMut(Event) + Send),
) -> Result<Vec<String>, DeployError> {
    let opts = DeployOptions {
        app: app.to_string(),
        org: String::new(),
        image: String::new(),
        strategy: Strategy::Rolling,
        max_unavailable: 1.0,
        wait_timeout,
        env: BTreeMap::new(),
        regions: Vec::new(),
        ha: false,
        start_stopped: false,
        detach: false,
        min_secrets_version: Some(min_secrets_version),
    };
    let mut report = Report::default();
    let machines: Vec<Machine> = client
        .machines(app)
        .await?
        .into_iter()
        .filter(|m| m.state == MachineState::Started)
        .collect();
    for m in &machines {
        let Some(cfg) = m.config.clone() else {
            continue;
        };
        rolling(client, &opts, &[m], &cfg, on, &mut report).await?;
    }
    Ok(report.updated)
}

async fn create(
    client: &Client,
    opts: &DeployOptions,
    config: MachineConfig,
    region: Option<String>,
    skip_launch: bool,
) -> Result<Machine, ClientError> {
    client
        .create_machine(
            &opts.app,
            &CreateMachineRequest {
                config,
                region,
                skip_launch: skip_launch.then_some(true),
                min_secrets_version: opts.min_secrets_version,
                ..CreateMachineRequest::default()
            },
        )
        .await
}

/// Updates one machine under a lease; returns the new instance id.
async fn update(
    client: &Client,
    opts: &DeployOptions,
    m: &Machine,
    config: MachineConfig,
    wait: bool,
) -> Result<Option<String>, DeployError> {
    // The machine keeps its volume (or gets a free one of its group's `[mounts]`).
    let current = m.config.as_ref().map(|c| c.mounts.as_slice());
    let config = mount_volume(client, &opts.app, config, Some(&m.region), current).await?;
    let stopped = matches!(
        m.state,
        MachineState::Stopped | MachineState::Suspended | MachineState::Created
    );
    let ttl = opts.wait_timeout.as_secs().max(30) + 30;
    let lease = client.lease(&opts.app, &m.id, ttl, "hangar deploy").await?;
    let nonce = lease.data.as_ref().map(|d| d.nonce.clone());
    let req = CreateMachineRequest {
        config,
        skip_launch: (stopped && !opts.start_stopped).then_some(true),
        min_secrets_version: opts.min_secrets_version,
        ..CreateMachineRequest::default()
    };
    let out = client
        .update_machine(&opts.app, &m.id, &req, nonce.as_deref())
        .await;
    if let Some(n) = &nonce {
        let _ = client.release(&opts.app, &m.id, n).await;
    }
    let updated = out?;
    if wait && (opts.start_stopped || !stopped) {
        return Ok(Some(updated.instance_id));
    }
    Ok(None)
}

/// How many check results a machine of `config` reports (`None`: not known).
fn checks_of(config: Option<&MachineConfig>) -> Option<usize> {
    config.map(|c| c.checks.len() + c.services.iter().map(|s| s.checks.len()).sum::<usize>())
}

/// Waits until the machine (of `instance`, if given) is started and every check passes
/// (`checks`: how many it has, when the caller knows; with none, started is healthy).
/// `Ok(Err(why))` when it exits, is stopped, fails or does not get there in time.
async fn healthy(
    client: &Client,
    app: &str,
    id: &str,
    instance: Option<&str>,
    checks: Option<usize>,
    timeout: Duration,
) -> Result<Result<(), String>, ClientError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut started = false;
    loop {
        if !started {
            // The API's wait returns the moment the machine is started (no polling delay on
            // every machine of a deploy); one that exits instead is seen by the look below
            // at most a second later, so failures still stop the deploy at once.
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match client
                .wait(
                    app,
                    id,
                    "started",
                    instance,
                    left.min(Duration::from_secs(1)),
                )
                .await
            {
                // Started, and nothing to check: healthy without another look.
                Ok(()) if checks == Some(0) => return Ok(Ok(())),
                Ok(()) | Err(ClientError::Api { status: 408, .. }) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let m = client.machine(app, id).await?;
        let current = instance.is_none_or(|i| m.instance_id == i);
        started = m.state == MachineState::Started && current;
        match m.state {
            MachineState::Started if current => {
                let failing: Vec<String> = m
                    .checks
                    .iter()
                    .filter(|c| c.status.as_str() != "passing")
                    .map(|c| format!("{}: {}", c.name, c.output))
                    .collect();
                let expected = checks_of(m.config.as_ref()).unwrap_or(0);
                if failing.is_empty() && m.checks.len() >= expected {
                    return Ok(Ok(()));
                }
                if tokio::time::Instant::now() >= deadline {
                    return Ok(Err(format!(
                        "did not pass its checks within {timeout:?}: {}",
                        if failing.is_empty() {
                            "no results yet".into()
                        } else {
                            failing.join("; ")
                        }
                    )));
                }
            }
            // Stopped (or worse) in the version we wait for: it exited.
            MachineState::Stopped | MachineState::Failed | MachineState::Destroyed if current => {
                let exit = client
                    .events(app, id)
                    .await
                    .unwrap_or_default()
                    .into_iter()
                    .find_map(|e| e.request.and_then(|r| r.exit_event))
                    .and_then(|x| x.exit_code);
                return Ok(Err(match exit {
                    Some(code) => format!("exited with code {code} while starting"),
                    None => format!("is {} instead of started", m.state.as_str()),
                }));
            }
            _ => {
                if tokio::time::Instant::now() >= deadline {
                    return Ok(Err(format!(
                        "is still {} after {timeout:?}",
                        m.state.as_str()
                    )));
                }
            }
        }
        if started {
            // Started, checks pending: look again shortly.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn rolling(
    client: &Client,
    opts: &DeployOptions,
    mine: &[&Machine],
    cfg: &MachineConfig,
    on: &mut (dyn FnMut(Event) + Send),
    report: &mut Report,
) -> Result<(), DeployError> {
    let n = mine.len();
    let batch = if opts.max_unavailable >= 1.0 {
        opts.max_unavailable as usize
    } else {
        ((opts.max_unavailable * n as f64).ceil() as usize).max(1)
    }
    .clamp(1, n);
    let mut done: Vec<&Machine> = Vec::new();
    for chunk in mine.chunks(batch) {
        let mut waiting = Vec::new();
        for m in chunk {
            let running = m.state == MachineState::Started;
            if running {
                // Out of routing before it goes down; in-flight requests finish.
                client.cordon(&opts.app, &m.id, true).await?;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let instance = update(client, opts, m, cfg.clone(), true).await?;
            done.push(m);
            on(Event::Machine {
                id: m.id.clone(),
                what: "updated".into(),
            });
            report.updated.push(m.id.clone());
            waiting.push((m, instance, running));
        }
        for (m, instance, running) in waiting {
            let Some(instance) = instance else { continue };
            if let Err(why) = healthy(
                client,
                &opts.app,
                &m.id,
                Some(&instance),
                checks_of(Some(cfg)),
                opts.wait_timeout,
            )
            .await?
            {
                on(Event::Step(format!("machine {} {why}; rolling back", m.id)));
                let rolled = rollback(client, opts, &done).await;
                return Err(DeployError::Unhealthy {
                    id: m.id.clone(),
                    why,
                    rolled_back: rolled,
                });
            }
            if running {
                client.cordon(&opts.app, &m.id, false).await?;
            }
            on(Event::Machine {
                id: m.id.clone(),
                what: "healthy".into(),
            });
        }
    }
    Ok(())
}

/// Puts machines back on the config they had before the deploy.
async fn rollback(client: &Client, opts: &DeployOptions, machines: &[&Machine]) -> String {
    let mut ok = 0;
    let mut failed = Vec::new();
    for m in machines {
        let Some(old) = m.config.clone() else {
            continue;
        };
        let restore = DeployOptions {
            start_stopped: false,
            ..opts.clone()
        };
        match update(client, &restore, m, old, true).await {
            Ok(instance) => {
                if let Some(i) = instance {
                    let _ =
                        healthy(client, &opts.app, &m.id, Some(&i), None, opts.wait_timeout).await;
                }
                let _ = client.cordon(&opts.app, &m.id, false).await;
                ok += 1;
            }
            Err(e) => failed.push(format!("{}: {e}", m.id)),
        }
    }
    if failed.is_empty() {
        format!("{ok} machine(s) rolled back to their previous config")
    } else {
        format!(
            "{ok} machine(s) rolled back; rolling back failed for {}",
            failed.join(", ")
        )
    }
}

async fn bluegreen(
    client: &Client,
    opts: &DeployOptions,
    blue: &[&Machine],
    cfg: &MachineConfig,
    on: &mut (dyn FnMut(Event) + Send),
    report: &mut Report,
) -> Result<(), DeployError> {
    let mut green: Vec<Machine> = Vec::new();
    let mut failure: Option<(String, String)> = None;
    for b in blue {
        let mut config = cfg.clone();
        config
            .metadata
            .insert("fly_bluegreen_deployment_tag".into(), "green".into());
        let m = create(client, opts, config, Some(b.region.clone()), true).await?;
        client.cordon(&opts.app, &m.id, true).await?;
        // Made (not launched) before it can be started.
        let deadline = tokio::time::Instant::now() + opts.wait_timeout;
        while client.machine(&opts.app, &m.id).await?.state == MachineState::Creating {
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        client.start(&opts.app, &m.id).await?;
        on(Event::Machine {
            id: m.id.clone(),
            what: "created (green)".into(),
        });
        green.push(m);
    }
    for g in &green {
        if let Err(why) = healthy(
            client,
            &opts.app,
            &g.id,
            None,
            checks_of(g.config.as_ref()),
            opts.wait_timeout,
        )
        .await?
        {
            failure = Some((g.id.clone(), why));
            break;
        }
    }
    if let Some((id, why)) = failure {
        for g in &green {
            let _ = client.destroy(&opts.app, &g.id, true).await;
        }
        return Err(DeployError::Unhealthy {
            id,
            why,
            rolled_back: "the green machines were destroyed; blue kept serving".into(),
        });
    }
    for g in &green {
        client.cordon(&opts.app, &g.id, false).await?;
        report.created.push(g.id.clone());
    }
    for b in blue {
        let _ = client.cordon(&opts.app, &b.id, true).await;
    }
    // In-flight requests on blue finish before it goes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for b in blue {
        client.destroy(&opts.app, &b.id, true).await?;
        on(Event::Machine {
            id: b.id.clone(),
            what: "destroyed (blue)".into(),
        });
        report.destroyed.push(b.id.clone());
    }
    Ok(())
}

async fn release_command(
    client: &Client,
    opts: &DeployOptions,
    mut config: MachineConfig,
    cmd: &str,
    on: &mut (dyn FnMut(Event) + Send),
) -> Result<(), DeployError> {
    on(Event::Step(format!("running release command: {cmd}")));
    let argv = shell_split(cmd).map_err(DeployError::Config)?;
    let mut init = config.init.take().unwrap_or_default();
    init.cmd = argv;
    init.exec = Vec::new();
    config.init = Some(init);
    config.services.clear();
    config.checks.clear();
    config.metrics = None;
    config.auto_destroy = Some(false);
    config.restart = Some(hangar_api_types::MachineRestart {
        policy: Some(hangar_api_types::RestartPolicy::No),
        ..Default::default()
    });
    config.env.insert("RELEASE_COMMAND".into(), "1".into());
    config
        .env
        .insert("FLY_PROCESS_GROUP".into(), "fly_app_release_command".into());
    config
        .metadata
        .insert("fly_process_group".into(), "fly_app_release_command".into());
    config.stop_config = Some(StopConfig::default());
    // The release command runs without volumes (the reference's rule).
    config.mounts.clear();
    let m = create(client, opts, config, opts.regions.first().cloned(), false).await?;
    let wait = client
        .wait(
            &opts.app,
            &m.id,
            "stopped",
            None,
            opts.wait_timeout.max(Duration::from_secs(60)),
        )
        .await;
    let output = client
        .logs(&opts.app, &m.id, 1000)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|l| l.message)
        .collect::<Vec<_>>()
        .join("\n");
    for line in output.lines() {
        on(Event::ReleaseOutput(line.to_string()));
    }
    let code = client
        .events(&opts.app, &m.id)
        .await
        .unwrap_or_default()
        .into_iter()
        .find_map(|e| {
            e.request
                .and_then(|r| r.exit_event)
                .and_then(|x| x.exit_code)
        });
    let _ = client.destroy(&opts.app, &m.id, true).await;
    wait?;
    match code {
        Some(0) => Ok(()),
        other => Err(DeployError::ReleaseCommand {
            code: other.unwrap_or(-1),
            output,
        }),
    }
}

/// What a group's `[mounts]` asks of the volumes deploys create.
#[derive(Debug, Clone, PartialEq, Eq)]
struct VolumePlan {
    /// `source`: the volumes' name.
    name: String,
    /// `initial_size` in GB (1 when unset).
    size_gb: i64,
    /// `snapshot_retention` (days).
    retention: Option<i64>,
    /// `scheduled_snapshots`.
    scheduled: Option<bool>,
}

/// The `[mounts]` entry behind a group's machine config, if it mounts one.
fn volume_plan(config: &Config, cfg: &MachineConfig) -> Option<VolumePlan> {
    let mount = cfg.mounts.first()?;
    let name = mount.name.clone().filter(|n| !n.is_empty())?;
    let entry = config
        .mounts
        .iter()
        .find(|x| x.source.as_deref() == Some(&name) && x.destination == mount.path)
        .or_else(|| {
            config
                .mounts
                .iter()
                .find(|x| x.source.as_deref() == Some(&name))
        });
    Some(VolumePlan {
        name,
        size_gb: entry
            .and_then(|e| e.initial_size.as_deref())
            .and_then(|s| hangar_manifest::units::volume_gb(s).ok())
            .unwrap_or(1)
            .max(1),
        retention: entry.and_then(|e| e.snapshot_retention),
        scheduled: entry.and_then(|e| e.scheduled_snapshots),
    })
}

/// A volume a new machine may take: the name, not attached, not going away, in `region`
/// (any region when the machine's is left to the API: it then runs where its volume is).
pub(crate) fn free_volume(v: &hangar_api_types::Volume, name: &str, region: Option<&str>) -> bool {
    v.name == name
        && v.attached_machine_id.as_deref().is_none_or(str::is_empty)
        && !matches!(
            v.state.as_str(),
            "pending_destroy" | "destroying" | "destroyed"
        )
        && region.is_none_or(|r| v.region == r)
}

/// Makes sure a free volume of the group's `[mounts]` exists for each machine about to mount
/// one (an entry of `regions` per machine), creating those missing: one volume per machine.
async fn ensure_volumes(
    client: &Client,
    opts: &DeployOptions,
    config: &Config,
    cfg: &MachineConfig,
    regions: &[Option<String>],
    on: &mut (dyn FnMut(Event) + Send),
) -> Result<(), DeployError> {
    let Some(plan) = volume_plan(config, cfg) else {
        return Ok(());
    };
    if regions.is_empty() {
        return Ok(());
    }
    let mut volumes = client.volumes(&opts.app).await?;
    let mut taken = std::collections::HashSet::new();
    for region in regions {
        if let Some(v) = volumes
            .iter()
            .find(|v| !taken.contains(&v.id) && free_volume(v, &plan.name, region.as_deref()))
        {
            taken.insert(v.id.clone());
            continue;
        }
        on(Event::Step(format!(
            "creating volume '{}' ({} GB){}",
            plan.name,
            plan.size_gb,
            region
                .as_deref()
                .map(|r| format!(" in {r}"))
                .unwrap_or_default()
        )));
        let v = client
            .create_volume(
                &opts.app,
                &hangar_api_types::CreateVolumeRequest {
                    name: plan.name.clone(),
                    region: region.clone().unwrap_or_default(),
                    size_gb: Some(plan.size_gb),
                    snapshot_retention: plan.retention,
                    auto_backup_enabled: plan.scheduled,
                    ..Default::default()
                },
            )
            .await?;
        taken.insert(v.id.clone());
        volumes.push(v);
    }
    Ok(())
}

/// Before a group's machines are updated: canary and bluegreen can not run with volumes
/// (the reference's rule: a second machine can not mount the same volume), and machines
/// that have no volume yet get one ready.
async fn volumes_for_update(
    client: &Client,
    opts: &DeployOptions,
    config: &Config,
    cfg: &MachineConfig,
    mine: &[&Machine],
    strategy: Strategy,
    on: &mut (dyn FnMut(Event) + Send),
) -> Result<(), DeployError> {
    if cfg.mounts.is_empty() {
        return Ok(());
    }
    if matches!(strategy, Strategy::Canary | Strategy::Bluegreen) {
        return Err(DeployError::Config(
            "the canary and bluegreen strategies can not be used with [mounts] (a volume is mounted by one machine); use rolling or immediate".into(),
        ));
    }
    let bare: Vec<Option<String>> = mine
        .iter()
        .filter(|m| m.config.as_ref().is_none_or(|c| c.mounts.is_empty()))
        .map(|m| Some(m.region.clone()))
        .collect();
    ensure_volumes(client, opts, config, cfg, &bare, on).await
}

/// The config a machine gets: the volume it has is kept (the mount path follows the new
/// config), else a free volume named by the config's mount is found in its region.
async fn mount_volume(
    client: &Client,
    app: &str,
    mut cfg: MachineConfig,
    region: Option<&str>,
    current: Option<&[hangar_api_types::MachineMount]>,
) -> Result<MachineConfig, DeployError> {
    if let Some(cur) = current.and_then(|c| c.first())
        && cur.volume.is_some()
    {
        match cfg.mounts.first_mut() {
            Some(new) => {
                new.volume = cur.volume.clone();
                if new.name.is_none() {
                    new.name = cur.name.clone();
                }
            }
            None => cfg.mounts = vec![cur.clone()],
        }
        cfg.mounts.truncate(1);
        return Ok(cfg);
    }
    let Some(mount) = cfg.mounts.first_mut() else {
        return Ok(cfg);
    };
    if mount.volume.as_deref().is_some_and(|v| !v.is_empty()) {
        return Ok(cfg);
    }
    let name = mount.name.clone().unwrap_or_default();
    let v = client
        .volumes(app)
        .await?
        .into_iter()
        .find(|v| free_volume(v, &name, region))
        .ok_or_else(|| {
            DeployError::Config(format!(
                "no free volume named '{name}'{} for a machine of {app}; create one with `hangar volumes create {name} -a {app}`",
                region.map(|r| format!(" in region {r}")).unwrap_or_default()
            ))
        })?;
    mount.volume = Some(v.id);
    Ok(cfg)
}

fn shell_split(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true;
            }
            (Some(q), c) if c == q => quote = None,
            (None | Some('"'), '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                    any = true;
                }
            }
            (None, c) if c.is_whitespace() => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            (_, c) => {
                cur.push(c);
                any = true;
            }
        }
    }
    if quote.is_some() {
        return Err(format!("release_command '{s}': unterminated quote"));
    }
    if any {
        out.push(cur);
    }
    if out.is_empty() {
        return Err("release_command is empty".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategies_and_shell_words() {
        assert_eq!("rolling".parse(), Ok(Strategy::Rolling));
        assert_eq!("bluegreen".parse(), Ok(Strategy::Bluegreen));
        assert!("blue".parse::<Strategy>().is_err());
        assert_eq!(
            shell_split(r#"bin/migrate --name "a b" 'c d' e\ f"#),
            Ok(vec![
                "bin/migrate".into(),
                "--name".into(),
                "a b".into(),
                "c d".into(),
                "e f".into()
            ])
        );
        assert!(shell_split("'open").is_err());
        assert!(shell_split("   ").is_err());
    }

    #[test]
    fn mounts_plan_the_volumes_deploys_make() {
        let toml = r#"
app = "a"
[processes]
web = "serve"
worker = "work"
[[mounts]]
source = "data"
destination = "/data"
initial_size = "3gb"
snapshot_retention = 7
scheduled_snapshots = false
processes = ["web"]
"#;
        let config = hangar_manifest::parse(toml, hangar_manifest::Format::Toml, "fly.toml")
            .expect("parse")
            .config;
        let opts = DeployOptions {
            app: "a".into(),
            org: "personal".into(),
            image: "img:1".into(),
            strategy: Strategy::Rolling,
            max_unavailable: 0.33,
            wait_timeout: Duration::from_secs(5),
            env: BTreeMap::new(),
            regions: Vec::new(),
            ha: true,
            start_stopped: false,
            detach: false,
            min_secrets_version: None,
        };
        let groups = group_configs(&config, &opts, None).expect("groups");
        assert_eq!(
            volume_plan(&config, &groups["web"]),
            Some(VolumePlan {
                name: "data".into(),
                size_gb: 3,
                retention: Some(7),
                scheduled: Some(false),
            })
        );
        assert_eq!(volume_plan(&config, &groups["worker"]), None);

        let v = |name: &str, region: &str, attached: Option<&str>, state: &str| {
            hangar_api_types::Volume {
                name: name.into(),
                region: region.into(),
                attached_machine_id: attached.map(str::to_string),
                state: state.into(),
                ..Default::default()
            }
        };
        for (vol, region, free) in [
            (v("data", "ams", None, "created"), Some("ams"), true),
            (v("data", "ams", None, "creating"), None, true),
            (v("data", "ams", None, "created"), Some("iad"), false),
            (v("logs", "ams", None, "created"), None, false),
            (v("data", "ams", Some("m1"), "created"), None, false),
            (v("data", "ams", None, "pending_destroy"), None, false),
        ] {
            assert_eq!(
                free_volume(&vol, "data", region),
                free,
                "{vol:?} {region:?}"
            );
        }
    }
}
