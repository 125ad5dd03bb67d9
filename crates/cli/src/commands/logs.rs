//! `hangar logs`: the app's log stream (its machines' output and the platform's `runner`
//! and `proxy` lines, merged by time), as `<time> <provider>[<machine>] <region> [<level>]
//! <message>` (the reference's line format) or JSON lines; followed until interrupted.

use clap::Args;
use hangar_api_types::LogEntry;
use hangar_client::LogFilter;

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
    /// Only this region.
    #[arg(short = 'r', long)]
    region: Option<String>,
    /// Print what is there and exit instead of following.
    #[arg(short = 'n', long)]
    no_tail: bool,
    /// JSON lines.
    #[arg(short = 'j', long)]
    json: bool,
    /// Newest lines to start from.
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
    let filter = LogFilter {
        instance: a.machine.clone(),
        region: a.region.clone(),
    };
    block_on(async move {
        if a.no_tail {
            for e in client.app_logs(&app, &filter, a.lines).await? {
                println!("{}", line(&e, a.json));
            }
            return Ok(exit::OK);
        }
        // One stream for the whole app: machines started later come through it too. It ends
        // when the app is deleted or the server stops.
        client
            .follow_app_logs(&app, &filter, a.lines, |e| {
                println!("{}", line(&e, a.json));
                true
            })
            .await?;
        Ok(exit::OK)
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

    #[test]
    fn platform_lines_name_their_provider() {
        let mut e = LogEntry {
            timestamp: "2023-04-07T12:19:03Z".into(),
            message: "machine restart policy set to 'no', not restarting".into(),
            level: "info".into(),
            instance: "5683976f7d7e8e".into(),
            region: "sea".into(),
            ..LogEntry::default()
        };
        e.meta.event.provider = "runner".into();
        assert_eq!(
            line(&e, false),
            "2023-04-07T12:19:03 runner[5683976f7d7e8e] sea [info] machine restart policy set to 'no', not restarting"
        );
        // A proxy error before any machine was chosen has no machine.
        e.meta.event.provider = "proxy".into();
        e.instance = String::new();
        e.level = "error".into();
        e.message = "[PR01] no machine".into();
        assert_eq!(
            line(&e, false),
            "2023-04-07T12:19:03 proxy[] sea [error] [PR01] no machine"
        );
        let json: serde_json::Value = serde_json::from_str(&line(&e, true)).expect("json line");
        assert_eq!(json["meta"]["event"]["provider"], "proxy");
    }
}
