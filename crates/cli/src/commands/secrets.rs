//! `hangar secrets set|list|unset`: app secrets, injected into machines as environment
//! variables. Without `--stage`, the app's running machines are restarted one at a time to
//! take them.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::bail;
use clap::Subcommand;
use hangar_client::deploy::{self, Event};

use super::ctx::{ApiArgs, block_on, table};
use super::target::AppArgs;
use crate::exit;

#[derive(Debug, Subcommand)]
pub(crate) enum SecretsCommand {
    /// Set secrets: NAME=VALUE pairs.
    Set {
        /// NAME=VALUE (several).
        #[arg(required = true)]
        pairs: Vec<String>,
        #[command(flatten)]
        app: AppArgs,
        /// Only record them; machines take them at their next restart or deploy.
        #[arg(long)]
        stage: bool,
    },
    /// List secrets (names and digests, never values).
    #[command(alias = "ls")]
    List {
        #[command(flatten)]
        app: AppArgs,
        /// Print JSON.
        #[arg(long, short = 'j')]
        json: bool,
    },
    /// Remove secrets.
    Unset {
        /// Names.
        #[arg(required = true)]
        names: Vec<String>,
        #[command(flatten)]
        app: AppArgs,
        /// Only record it; machines drop them at their next restart or deploy.
        #[arg(long)]
        stage: bool,
    },
}

/// Started machines are updated one at a time to take secrets `version`.
async fn roll(client: &hangar_client::Client, app: &str, version: u64) -> anyhow::Result<()> {
    let mut show = |e: Event| match e {
        Event::Step(s) => eprintln!("--> {s}"),
        Event::Machine { id, what } => eprintln!("    machine {id} {what}"),
        Event::ReleaseOutput(l) => eprintln!("    | {l}"),
    };
    let updated =
        deploy::roll_secrets(client, app, version, Duration::from_secs(300), &mut show).await?;
    if !updated.is_empty() {
        eprintln!(
            "--> {} machine(s) run with secrets version {version}",
            updated.len()
        );
    }
    Ok(())
}

pub(crate) fn run(c: SecretsCommand, api: &ApiArgs) -> anyhow::Result<u8> {
    let client = api.client()?;
    block_on(async move {
        match c {
            SecretsCommand::Set { pairs, app, stage } => {
                let name = app.name()?;
                let mut values = BTreeMap::new();
                for p in &pairs {
                    let Some((k, v)) = p.split_once('=') else {
                        bail!("'{p}': expected NAME=VALUE");
                    };
                    values.insert(k.to_string(), Some(v.to_string()));
                }
                let version = client.set_secrets(&name, values).await?;
                println!("Secrets are at version {version}");
                if !stage {
                    roll(&client, &name, version).await?;
                }
            }
            SecretsCommand::Unset { names, app, stage } => {
                let name = app.name()?;
                let values = names.into_iter().map(|n| (n, None)).collect();
                let version = client.set_secrets(&name, values).await?;
                println!("Secrets are at version {version}");
                if !stage {
                    roll(&client, &name, version).await?;
                }
            }
            SecretsCommand::List { app, json } => {
                let s = client.secrets(&app.name()?).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&s.secrets)?);
                } else {
                    let rows: Vec<Vec<String>> = s
                        .secrets
                        .iter()
                        .map(|x| {
                            vec![
                                x.name.clone(),
                                x.digest.clone(),
                                x.updated_at.clone().unwrap_or_default(),
                            ]
                        })
                        .collect();
                    print!("{}", table(&["NAME", "DIGEST", "UPDATED AT"], &rows));
                }
            }
        }
        Ok(exit::OK)
    })?
}
