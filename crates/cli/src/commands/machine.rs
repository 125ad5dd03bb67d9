//! `hangar machine run|list|status|start|stop|suspend|restart|destroy|clone|update|cordon|uncordon|exec`.
//!
//! `run`, `update` and `clone` read their flags through `hangar_client::machine` (the config
//! a set of flags makes, the diff, the clone's volume); this file only maps flags and prints.

use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use hangar_api_types::{Autostop, CreateMachineRequest, ExecRequest, Machine, StopRequest};
use hangar_client::Client;
use hangar_client::machine::{self as mach, CloneVolume, ConfigChange, GuestFlags};

use super::ctx::{ApiArgs, block_on, confirm, table};
use super::target::AppArgs;
use crate::exit;

/// How long `run`, `update` and `clone` wait for a machine to start.
const START_TIMEOUT: Duration = Duration::from_secs(300);

/// `--vm-size`, `--vm-memory`, `--vm-cpus`, `--vm-cpu-kind`.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "VM size")]
pub(crate) struct VmFlags {
    /// VM size preset: shared-cpu-1x…8x, performance-1x…16x (an unknown one lists them all).
    #[arg(long)]
    vm_size: Option<String>,
    /// VM memory: a number of MB, or e.g. 512mb, 2gb.
    #[arg(long)]
    vm_memory: Option<String>,
    /// Number of CPUs.
    #[arg(long)]
    vm_cpus: Option<i64>,
    /// CPU kind: shared or performance.
    #[arg(long)]
    vm_cpu_kind: Option<String>,
}

impl VmFlags {
    fn guest(&self) -> GuestFlags {
        GuestFlags {
            size: self.vm_size.clone(),
            memory: self.vm_memory.clone(),
            cpus: self.vm_cpus,
            cpu_kind: self.vm_cpu_kind.clone(),
        }
    }
}

fn autostop(s: &str) -> Result<Autostop, String> {
    s.parse::<Autostop>()
        .map_err(|_| format!("'{s}' is not off, stop or suspend"))
}

/// The flags `machine run` and `machine update` share.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Machine config")]
pub(crate) struct ConfigFlags {
    /// Publish a port: port[:machinePort][/protocol[:handler...]] (e.g. 80:8080/tcp:http,
    /// 443:8080/tcp:tls:http; protocol tcp unless given; `-` as the handler removes a
    /// mapping). Repeatable.
    #[arg(short = 'p', long = "port", value_name = "PORT")]
    ports: Vec<String>,
    /// Environment variable NAME=VALUE. Repeatable.
    #[arg(short = 'e', long = "env", value_name = "NAME=VALUE")]
    env: Vec<String>,
    /// Metadata NAME=VALUE. Repeatable.
    #[arg(short = 'm', long = "metadata", value_name = "NAME=VALUE")]
    metadata: Vec<String>,
    /// Start the machine when a request comes and it is stopped (every service; default
    /// true).
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    autostart: Option<bool>,
    /// What to do when no requests come: off, stop or suspend (every service; default off;
    /// the flag alone means stop).
    #[arg(
        long,
        value_name = "MODE",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "stop",
        value_parser = autostop
    )]
    autostop: Option<Autostop>,
    /// Restart policy: no, always or on-failure.
    #[arg(long, value_name = "POLICY")]
    restart: Option<String>,
    /// Replace the image's ENTRYPOINT (a shell-like string).
    #[arg(long)]
    entrypoint: Option<String>,
    /// Keep the machine out of the private DNS (`.internal` names).
    #[arg(long)]
    skip_dns_registration: bool,
    /// A machine config to start from: a JSON file, or inline JSON; the other flags change
    /// it.
    #[arg(long, value_name = "FILE_OR_JSON")]
    machine_config: Option<String>,
    /// Return once the request is accepted (else wait until the machine has started).
    #[arg(long)]
    detach: bool,
    #[command(flatten)]
    vm: VmFlags,
}

impl ConfigFlags {
    fn change(&self, creating: bool) -> ConfigChange {
        ConfigChange {
            creating,
            entrypoint: self.entrypoint.clone(),
            env: self.env.clone(),
            metadata: self.metadata.clone(),
            ports: self.ports.clone(),
            autostart: self.autostart,
            autostop: self.autostop,
            restart: self.restart.clone(),
            skip_dns_registration: self.skip_dns_registration,
            guest: self.vm.guest(),
            ..ConfigChange::default()
        }
    }

    /// `--machine-config` laid over `base`.
    fn base(
        &self,
        base: &hangar_api_types::MachineConfig,
    ) -> anyhow::Result<hangar_api_types::MachineConfig> {
        let Some(mc) = &self.machine_config else {
            return Ok(base.clone());
        };
        let text = if mc.trim_start().starts_with('{') {
            mc.clone()
        } else {
            std::fs::read_to_string(mc).with_context(|| format!("reading --machine-config {mc}"))?
        };
        Ok(mach::merge_config_json(base, &text)?)
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum MachineCommand {
    /// Run a new machine from an image: `hangar machine run IMAGE [COMMAND...]` (flags go
    /// before the image's command).
    Run {
        /// The image (e.g. a registry reference, or one uploaded by `hangar deploy`).
        #[arg(required_unless_present = "machine_config")]
        image: Option<String>,
        /// The command to run instead of the image's CMD.
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "COMMAND"
        )]
        cmd: Vec<String>,
        #[command(flatten)]
        app: AppArgs,
        /// Machine name (generated when omitted).
        #[arg(short = 'n', long)]
        name: Option<String>,
        /// Region (see `hangar platform regions`).
        #[arg(short = 'r', long)]
        region: Option<String>,
        /// Mount a volume: <volume_id_or_name>:/path/inside/machine (a name takes an
        /// unattached volume of that name).
        #[arg(short = 'v', long = "volume", value_name = "VOLUME:PATH")]
        volumes: Vec<String>,
        /// Destroy the machine when it exits (restart policy no unless --restart says
        /// otherwise).
        #[arg(long)]
        rm: bool,
        /// Print the machine as JSON.
        #[arg(long, short = 'j')]
        json: bool,
        #[command(flatten)]
        flags: ConfigFlags,
    },
    /// List the app's machines.
    #[command(alias = "ls")]
    List {
        #[command(flatten)]
        app: AppArgs,
        /// Print JSON.
        #[arg(long, short = 'j')]
        json: bool,
    },
    /// Show one machine.
    Status {
        /// Machine id.
        id: String,
        #[command(flatten)]
        app: AppArgs,
    },
    /// Start machines.
    Start {
        /// Machine ids.
        #[arg(required = true)]
        ids: Vec<String>,
        #[command(flatten)]
        app: AppArgs,
    },
    /// Stop machines (their stop signal, then SIGKILL after the timeout).
    Stop {
        /// Machine ids.
        #[arg(required = true)]
        ids: Vec<String>,
        #[command(flatten)]
        app: AppArgs,
        /// Signal to send (e.g. SIGTERM).
        #[arg(short = 's', long)]
        signal: Option<String>,
        /// Seconds before SIGKILL.
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// Suspend machines (frozen in place; the next start resumes them).
    Suspend {
        /// Machine ids.
        #[arg(required = true)]
        ids: Vec<String>,
        #[command(flatten)]
        app: AppArgs,
    },
    /// Restart machines.
    Restart {
        /// Machine ids.
        #[arg(required = true)]
        ids: Vec<String>,
        #[command(flatten)]
        app: AppArgs,
    },
    /// Destroy machines.
    #[command(alias = "rm")]
    Destroy {
        /// Machine ids.
        #[arg(required = true)]
        ids: Vec<String>,
        #[command(flatten)]
        app: AppArgs,
        /// Kill running machines.
        #[arg(short = 'f', long)]
        force: bool,
    },
    /// Take machines out of the proxy's routing.
    Cordon {
        /// Machine ids.
        #[arg(required = true)]
        ids: Vec<String>,
        #[command(flatten)]
        app: AppArgs,
    },
    /// Put machines back into the proxy's routing.
    Uncordon {
        /// Machine ids.
        #[arg(required = true)]
        ids: Vec<String>,
        #[command(flatten)]
        app: AppArgs,
    },
    /// Change a machine's config: shows what changes, asks, updates it and waits until it
    /// has started.
    Update {
        /// Machine id (default: the app's only machine).
        id: Option<String>,
        #[command(flatten)]
        app: AppArgs,
        /// The image to run.
        #[arg(short = 'i', long)]
        image: Option<String>,
        /// The command to run (a shell-like string; empty: the image's CMD).
        #[arg(short = 'C', long)]
        command: Option<String>,
        /// Update without starting the machine.
        #[arg(long)]
        skip_start: bool,
        /// Apply without asking (needed when not on a terminal).
        #[arg(short = 'y', long)]
        yes: bool,
        #[command(flatten)]
        flags: ConfigFlags,
    },
    /// Make a new machine with another's config. A volume the source mounts is not copied:
    /// the clone gets a new empty volume of the same name and size (or --attach-volume).
    Clone {
        /// Machine to clone (default: the app's only machine).
        id: Option<String>,
        #[command(flatten)]
        app: AppArgs,
        /// Region of the new machine (default: the source's).
        #[arg(short = 'r', long)]
        region: Option<String>,
        /// Name of the new machine (generated when omitted).
        #[arg(long)]
        name: Option<String>,
        /// Attach this unattached volume instead of a new empty one:
        /// <volume_id>[:/path/inside/machine].
        #[arg(long, value_name = "VOLUME[:PATH]")]
        attach_volume: Option<String>,
        /// The new machine's command (a shell-like string).
        #[arg(long, value_name = "COMMAND", conflicts_with = "clear_cmd")]
        override_cmd: Option<String>,
        /// Clear the command: the new machine runs the image's CMD.
        #[arg(long)]
        clear_cmd: bool,
        /// The new machine is not destroyed when it exits.
        #[arg(long)]
        clear_auto_destroy: bool,
        /// Return once the machine is created (else wait until it has started).
        #[arg(long)]
        detach: bool,
        #[command(flatten)]
        vm: VmFlags,
    },
    /// Run a command in a machine and print its output; exits with its exit code.
    Exec {
        /// Machine id.
        id: String,
        /// The command (a shell-like string, or several words).
        #[arg(required = true, num_args = 1.., trailing_var_arg = true)]
        command: Vec<String>,
        #[command(flatten)]
        app: AppArgs,
        /// Seconds before the command is killed.
        #[arg(long, default_value_t = 30)]
        timeout: i64,
    },
}

pub(crate) fn run(c: MachineCommand, api: &ApiArgs) -> anyhow::Result<u8> {
    let client = api.client()?;
    block_on(async move {
        match c {
            MachineCommand::List { app, json } => {
                let app = app.name()?;
                let ms = client.machines(&app).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&ms)?);
                    return Ok(exit::OK);
                }
                let rows: Vec<Vec<String>> = ms
                    .iter()
                    .map(|m| {
                        let group = m
                            .config
                            .as_ref()
                            .and_then(|c| c.metadata.get("fly_process_group").cloned())
                            .unwrap_or_default();
                        let checks = if m.checks.is_empty() {
                            String::new()
                        } else {
                            let ok = m
                                .checks
                                .iter()
                                .filter(|c| c.status.as_str() == "passing")
                                .count();
                            format!("{ok}/{}", m.checks.len())
                        };
                        vec![
                            m.id.clone(),
                            m.name.clone(),
                            m.state.as_str().to_string(),
                            m.region.clone(),
                            group,
                            checks,
                            m.image_ref
                                .as_ref()
                                .map(|r| format!("{}:{}", r.repository, r.tag))
                                .unwrap_or_default(),
                            m.private_ip.clone(),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table(
                        &[
                            "ID",
                            "NAME",
                            "STATE",
                            "REGION",
                            "PROCESS GROUP",
                            "CHECKS",
                            "IMAGE",
                            "IP ADDRESS"
                        ],
                        &rows
                    )
                );
            }
            MachineCommand::Status { id, app } => {
                let m = client.machine(&app.name()?, &id).await?;
                println!("{}", serde_json::to_string_pretty(&m)?);
            }
            MachineCommand::Start { ids, app } => {
                let app = app.name()?;
                for id in ids {
                    client.start(&app, &id).await?;
                    println!("{id} has been started");
                }
            }
            MachineCommand::Stop {
                ids,
                app,
                signal,
                timeout,
            } => {
                let app = app.name()?;
                let req = StopRequest {
                    signal,
                    timeout: timeout.map(|t| hangar_api_types::Duration::from_secs(t as i64)),
                };
                for id in ids {
                    client.stop(&app, &id, &req).await?;
                    println!("{id} has been stopped");
                }
            }
            MachineCommand::Suspend { ids, app } => {
                let app = app.name()?;
                for id in ids {
                    client.suspend(&app, &id).await?;
                    println!("{id} has been suspended");
                }
            }
            MachineCommand::Restart { ids, app } => {
                let app = app.name()?;
                for id in ids {
                    client.restart(&app, &id).await?;
                    client
                        .wait(&app, &id, "started", None, Duration::from_secs(60))
                        .await?;
                    println!("{id} has been restarted");
                }
            }
            MachineCommand::Destroy { ids, app, force } => {
                let app = app.name()?;
                for id in ids {
                    client.destroy(&app, &id, force).await?;
                    println!("{id} has been destroyed");
                }
            }
            MachineCommand::Cordon { ids, app } => {
                let app = app.name()?;
                for id in ids {
                    client.cordon(&app, &id, true).await?;
                    println!("{id} has been cordoned");
                }
            }
            MachineCommand::Uncordon { ids, app } => {
                let app = app.name()?;
                for id in ids {
                    client.cordon(&app, &id, false).await?;
                    println!("{id} has been uncordoned");
                }
            }
            MachineCommand::Run {
                image,
                cmd,
                app,
                name,
                region,
                volumes,
                rm,
                flags,
                json,
            } => {
                return run_machine(
                    &client,
                    RunArgs {
                        image,
                        cmd,
                        app,
                        name,
                        region,
                        volumes,
                        rm,
                        flags,
                        json,
                    },
                )
                .await;
            }
            MachineCommand::Update {
                id,
                app,
                image,
                command,
                flags,
                skip_start,
                yes,
            } => {
                let app = app.name()?;
                let mut change = flags.change(false);
                change.image = image;
                change.cmd = match command.as_deref().map(str::trim) {
                    Some("") => Some(Vec::new()),
                    Some(c) => Some(mach::split_command("--command", c)?),
                    None => None,
                };
                // Every flag is read before anything is asked of the API.
                mach::apply(&mut flags.base(&Default::default())?, &change)?;
                let m = pick(&client, &app, id.as_deref()).await?;
                let old = m.config.clone().unwrap_or_default();
                let mut new = flags.base(&old)?;
                mach::apply(&mut new, &change)?;
                let changes = mach::diff(&old, &new);
                if changes.is_empty() {
                    println!("No changes to apply to machine {}", m.id);
                    return Ok(exit::OK);
                }
                println!(
                    "Configuration changes to be applied to machine {} ({}):\n",
                    m.id, m.name
                );
                for c in &changes {
                    println!("  {c}");
                }
                println!();
                if !yes && !confirm("Apply changes?", "--yes")? {
                    bail!("nothing was changed");
                }
                let wait = (!flags.detach).then_some(START_TIMEOUT);
                if wait.is_some() && !skip_start {
                    eprintln!("Updating machine {} and waiting for it to start...", m.id);
                }
                let updated =
                    mach::update_one(&client, &app, &m, new, Some(!skip_start), wait).await?;
                println!("Machine {} has been updated", m.id);
                println!(" Instance ID: {} -> {}", m.instance_id, updated.instance_id);
                let now = client.machine(&app, &m.id).await?;
                println!(" State: {}", now.state.as_str());
            }
            MachineCommand::Clone {
                id,
                app,
                region,
                name,
                attach_volume,
                override_cmd,
                clear_cmd,
                clear_auto_destroy,
                vm,
                detach,
            } => {
                let app = app.name()?;
                let opts = mach::CloneOptions {
                    region: region.clone(),
                    cmd: match (clear_cmd, override_cmd.as_deref()) {
                        (true, _) => Some(Vec::new()),
                        (false, Some(c)) => Some(mach::split_command("--override-cmd", c)?),
                        (false, None) => None,
                    },
                    clear_auto_destroy,
                    guest: vm.guest(),
                };
                mach::guest(None, &opts.guest)?;
                if let Some((v, path)) = attach_volume.as_deref().and_then(|a| a.split_once(':'))
                    && (v.is_empty() || !path.starts_with('/'))
                {
                    bail!(
                        "invalid --attach-volume '{}': use <volume_id>[:/path/inside/machine]",
                        attach_volume.as_deref().unwrap_or_default()
                    );
                }
                let source = pick(&client, &app, id.as_deref()).await?;
                let mut config = mach::clone_config(&source, &opts)?;
                let target = region.clone().unwrap_or_else(|| source.region.clone());
                let (target, vol) = mach::clone_volume(
                    &client,
                    &app,
                    &source,
                    &mut config,
                    &target,
                    region.is_some(),
                    attach_volume.as_deref(),
                )
                .await?;
                println!("Cloning machine {} into region {target}", source.id);
                match &vol {
                    CloneVolume::Created(v) => println!(
                        "Created volume {} ({}, {} GB), empty, for the new machine",
                        v.id, v.name, v.size_gb
                    ),
                    CloneVolume::Attached(v) => println!("Attaching volume {} ({})", v.id, v.name),
                    CloneVolume::None => {}
                }
                if config.auto_destroy == Some(true) {
                    println!(
                        "Auto destroy is on: the new machine is destroyed when it exits (--clear-auto-destroy turns it off)"
                    );
                }
                let created = client
                    .create_machine(
                        &app,
                        &CreateMachineRequest {
                            config,
                            name,
                            region: Some(target),
                            ..CreateMachineRequest::default()
                        },
                    )
                    .await?;
                println!(
                    " Machine {} ({}) has been created",
                    created.id, created.name
                );
                if !detach {
                    eprintln!("Waiting for machine {} to start...", created.id);
                    let state = mach::wait_for(
                        &client,
                        &app,
                        &created.id,
                        &["started", "stopped", "destroyed"],
                        Some(&created.instance_id),
                        START_TIMEOUT,
                    )
                    .await?;
                    println!(" State: {state}");
                }
                println!(" Private IP: {}", created.private_ip);
                println!("Machine {} has been cloned as {}", source.id, created.id);
            }
            MachineCommand::Exec {
                id,
                command,
                app,
                timeout,
            } => {
                let app = app.name()?;
                let req = if command.len() == 1 {
                    ExecRequest {
                        cmd: Some(command[0].clone()),
                        timeout: Some(timeout),
                        ..ExecRequest::default()
                    }
                } else {
                    ExecRequest {
                        command,
                        timeout: Some(timeout),
                        ..ExecRequest::default()
                    }
                };
                let out = client.exec(&app, &id, &req).await?;
                print!("{}", out.stdout);
                eprint!("{}", out.stderr);
                return Ok(u8::try_from(out.exit_code.clamp(0, 255)).unwrap_or(1));
            }
        }
        Ok(exit::OK)
    })?
}

/// The machine an `update` or `clone` is about: the id given, else the app's only one.
async fn pick(client: &Client, app: &str, id: Option<&str>) -> anyhow::Result<Machine> {
    match id {
        Some(id) => Ok(client.machine(app, id).await?),
        None => {
            let ms = client.machines(app).await?;
            Ok(mach::only_machine(&ms, app)?.clone())
        }
    }
}

/// `machine run`'s flags.
struct RunArgs {
    image: Option<String>,
    cmd: Vec<String>,
    app: AppArgs,
    name: Option<String>,
    region: Option<String>,
    volumes: Vec<String>,
    rm: bool,
    flags: ConfigFlags,
    json: bool,
}

async fn run_machine(client: &Client, a: RunArgs) -> anyhow::Result<u8> {
    let app = a.app.name()?;
    // Every flag is read before anything is asked of the API.
    let mut config = a.flags.base(&hangar_api_types::MachineConfig::default())?;
    let mut change = a.flags.change(true);
    change.image = a.image.clone();
    change.cmd = (!a.cmd.is_empty()).then(|| a.cmd.clone());
    change.auto_destroy = a.rm.then_some(true);
    mach::apply(&mut config, &change)?;
    if config.image.trim().is_empty() {
        bail!(
            "which image? give one (`hangar machine run IMAGE`) or set \"image\" in --machine-config"
        );
    }
    let mounts = a
        .volumes
        .iter()
        .map(|v| mach::parse_volume(v))
        .collect::<Result<Vec<_>, _>>()?;
    if mounts.len() > 1 {
        bail!("a machine mounts one volume at most; give one --volume");
    }
    if client.app(&app).await?.is_none() {
        bail!("app {app} does not exist: create it with `hangar apps create {app}`");
    }
    if let Some((source, path)) = mounts.into_iter().next() {
        let vols = if source.starts_with("vol_") {
            Vec::new()
        } else {
            client.volumes(&app).await?
        };
        let id = mach::resolve_volume(&vols, &source, a.region.as_deref())?;
        mach::set_mount(&mut config, id, path)?;
    }
    let m = client
        .create_machine(
            &app,
            &CreateMachineRequest {
                config,
                name: a.name.clone(),
                region: a.region.clone(),
                ..CreateMachineRequest::default()
            },
        )
        .await?;
    let mut state = m.state.as_str().to_string();
    if !a.flags.detach {
        eprintln!("Waiting for machine {} to start...", m.id);
        state = mach::wait_for(
            client,
            &app,
            &m.id,
            &["started", "stopped", "destroyed"],
            Some(&m.instance_id),
            START_TIMEOUT,
        )
        .await?;
    }
    if a.json {
        let now = match client.machine(&app, &m.id).await {
            Ok(now) => now,
            // `--rm`: it may be gone already.
            Err(_) if state == "destroyed" => m,
            Err(e) => return Err(e.into()),
        };
        println!("{}", serde_json::to_string_pretty(&now)?);
        return Ok(exit::OK);
    }
    println!("Machine {} has been launched in app {app}", m.id);
    println!(" Name: {}", m.name);
    println!(" Region: {}", m.region);
    println!(" Instance ID: {}", m.instance_id);
    println!(" State: {state}");
    println!(" Private IP: {}", m.private_ip);
    if state != "started" && !a.flags.detach {
        eprintln!("Its command exited; see `hangar logs -a {app} -m {}`", m.id);
    }
    Ok(exit::OK)
}
