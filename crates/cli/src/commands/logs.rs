//! `hangar logs`: the app's machines' output, as `<time> app[<machine>] <region> [<level>]
//! <message>` (the reference's line format) or JSON lines; followed until interrupted.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use hangar_api_types::LogEntry;

use super::ctx::{ApiArgs, block_on};
use super::target::AppArgs;
use crate::exit;

/// `hangar logs` flags.
#[derive(Debug, Args)]
pub(crate) struct LogsArgs {
    #[command(flatten)]
    app: AppArgs,
    /// Only this machine.
    #[arg(short = 'm', long = "machine", alias = "instance", short_alias = 'i')]
    machine: Option<String>,
    /// Only machines in this region.
    #[arg(short = 'r', long)]
    region: Option<String>,
    /// Print what is there and exit instead of following.
    #[arg(short = 'n', long)]
    no_tail: bool,
    /// JSON lines.
    #[arg(short = 'j', long)]
    json: bool,
    /// Lines per machine to start from.
    #[arg(long, default_value_t = 100)]
    lines: usize,
}

fn line(e: &LogEntry, json: bool) -> String {
    if json {
        return serde_json::to_string(e).unwrap_or_default();
    }
    // 2023-04-07T12:19:02.661 (milliseconds, as the reference prints).
    let ts: String = match e.timestamp.split_once('.') {
        Some((head, frac)) => format!("{head}.{}", frac.chars().take(3).collect::<String>()),
        None => e.timestamp.trim_end_matches('Z').to_string(),
    };
    format!(
        "{ts} {}[{}] {} [{}] {}",
        if e.meta.event.provider.is_empty() {
            "app"
        } else {
            &e.meta.event.provider
        },
        e.instance,
        e.region,
        e.level,
        e.message
    )
}

pub(crate) fn run(a: LogsArgs, api: &ApiArgs) -> anyhow::Result<u8> {
    let app = a.app.name()?;
    let client = api.client()?;
    block_on(async move {
        let wanted = |m: &hangar_api_types::Machine| {
            a.machine.as_ref().is_none_or(|id| *id == m.id)
                && a.region.as_ref().is_none_or(|r| *r == m.region)
                && m.state.as_str() != "destroyed"
        };
        if a.no_tail {
            let mut all: Vec<LogEntry> = Vec::new();
            for m in client.machines(&app).await?.iter().filter(|m| wanted(m)) {
                all.extend(client.logs(&app, &m.id, a.lines).await?);
            }
            all.sort_by(|x, y| x.timestamp.cmp(&y.timestamp));
            for e in &all {
                println!("{}", line(e, a.json));
            }
            return Ok(exit::OK);
        }
        // Follow every machine, and machines that appear later.
        let client = Arc::new(client);
        let mut following: HashSet<String> = HashSet::new();
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            for m in client
                .machines(&app)
                .await?
                .into_iter()
                .filter(|m| wanted(m))
            {
                if following.insert(m.id.clone()) {
                    let (client, app, json, lines) = (client.clone(), app.clone(), a.json, a.lines);
                    tasks.spawn(async move {
                        let _ = client
                            .follow_logs(&app, &m.id, lines, |e| {
                                println!("{}", line(&e, json));
                                true
                            })
                            .await;
                        m.id
                    });
                }
            }
            tokio::select! {
                Some(Ok(done)) = tasks.join_next() => { following.remove(&done); }
                () = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_line_format() {
        let e = LogEntry {
            timestamp: "2023-04-07T12:19:02.661123456Z".into(),
            message: "Migrations successful!".into(),
            level: "info".into(),
            instance: "5683976f7d7e8e".into(),
            region: "sea".into(),
            ..LogEntry::default()
        };
        assert_eq!(
            line(&e, false),
            "2023-04-07T12:19:02.661 app[5683976f7d7e8e] sea [info] Migrations successful!"
        );
    }
}
