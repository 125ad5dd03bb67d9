//! `hangar`: the command-line client. `main` only parses flags and maps results to exit codes;
//! each command lives in `commands/<noun>.rs`.

mod commands;

use std::process::ExitCode;

use clap::Parser;

/// Exit codes shared by every command.
pub(crate) mod exit {
    /// Success (for `config validate`: the configuration is valid).
    pub const OK: u8 = 0;
    /// The input is invalid (for `config validate`: at least one error finding).
    pub const INVALID: u8 = 1;
    /// The input could not be read, or the command line was wrong.
    pub const UNREADABLE: u8 = 2;
    /// The API could not be reached or refused the request (the message says why).
    pub const API: u8 = 3;
}

fn main() -> ExitCode {
    let cli = commands::Cli::parse();
    match commands::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("Error: {e:#}");
            let status = e
                .chain()
                .find_map(|c| c.downcast_ref::<hangar_client::ClientError>())
                .and_then(hangar_client::ClientError::status);
            if status == Some(401) {
                eprintln!(
                    "The API did not accept the token: pass a valid one with --access-token or \
                     HANGAR_API_TOKEN (`hangar tokens create -o ORG`, run with the admin token, \
                     makes one)."
                );
            }
            let api = e.chain().any(|c| c.is::<hangar_client::ClientError>())
                || e.downcast_ref::<hangar_client::deploy::DeployError>()
                    .is_some();
            ExitCode::from(if api { exit::API } else { exit::UNREADABLE })
        }
    }
}
