//! `hangar machine list|status|start|stop|suspend|restart|destroy|cordon|uncordon|exec`.

use std::time::Duration;

use clap::Subcommand;
use hangar_api_types::{ExecRequest, StopRequest};

use super::ctx::{ApiArgs, block_on, table};
use super::target::AppArgs;
use crate::exit;

#[derive(Debug, Subcommand)]
pub(crate) enum MachineCommand {
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
