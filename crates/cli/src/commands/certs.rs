//! `hangar certs add|list|show|check|remove|import`: an app's custom hostnames and their TLS
//! certificates (issued over ACME by the edge proxy, or imported).

use anyhow::{Context as _, bail};
use clap::Subcommand;
use hangar_api_types::{CertificateDetailResponse, ImportCertificateRequest};

use super::ctx::{ApiArgs, block_on, confirm, table};
use super::target::AppArgs;
use crate::exit;

#[derive(Debug, Subcommand)]
pub(crate) enum CertsCommand {
    /// Add a hostname to the app and ask for a certificate for it (ACME).
    #[command(alias = "create")]
    Add {
        /// The hostname (e.g. www.example.com).
        hostname: String,
        #[command(flatten)]
        app: AppArgs,
        /// Print JSON.
        #[arg(long, short = 'j')]
        json: bool,
    },
    /// List the app's hostnames and the state of their certificates.
    #[command(alias = "ls")]
    List {
        #[command(flatten)]
        app: AppArgs,
        /// Print JSON.
        #[arg(long, short = 'j')]
        json: bool,
    },
    /// Show a hostname's certificates and what DNS it needs.
    Show {
        /// The hostname.
        hostname: String,
        #[command(flatten)]
        app: AppArgs,
        /// Print JSON.
        #[arg(long, short = 'j')]
        json: bool,
    },
    /// Look again now: a pending or failed ACME order is retried at once.
    Check {
        /// The hostname.
        hostname: String,
        #[command(flatten)]
        app: AppArgs,
        /// Print JSON.
        #[arg(long, short = 'j')]
        json: bool,
    },
    /// Remove a hostname and its certificates from the app.
    #[command(alias = "rm", alias = "delete")]
    Remove {
        /// The hostname.
        hostname: String,
        #[command(flatten)]
        app: AppArgs,
        /// Do not ask (required when not on a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Use a certificate of your own for a hostname (PEM files).
    Import {
        /// The hostname.
        hostname: String,
        #[command(flatten)]
        app: AppArgs,
        /// The certificate chain, leaf first (PEM).
        #[arg(long, value_name = "FILE")]
        fullchain: std::path::PathBuf,
        /// Its private key (PEM).
        #[arg(long, value_name = "FILE")]
        private_key: std::path::PathBuf,
        /// Print JSON.
        #[arg(long, short = 'j')]
        json: bool,
    },
}

fn or_dash(s: Option<&str>) -> String {
    s.filter(|s| !s.is_empty()).unwrap_or("-").to_string()
}

/// The readable form of one hostname's certificates.
fn detail(d: &CertificateDetailResponse) -> String {
    let mut out = String::new();
    let issued: Vec<&hangar_api_types::CertificateDetail> = d
        .certificates
        .iter()
        .filter(|c| c.expires_at.is_some())
        .collect();
    out.push_str(&match d.status.as_str() {
        "active" => format!("The certificate for {} has been issued.\n\n", d.hostname),
        "pending_validation" => format!(
            "The certificate for {} has not been issued yet.\n\n",
            d.hostname
        ),
        "failed" => format!(
            "Issuing the certificate for {} failed; fix the cause below, then `hangar certs check {}`.\n\n",
            d.hostname, d.hostname
        ),
        _ => format!(
            "{} has no valid certificate ({}).\n\n",
            d.hostname, d.status
        ),
    });
    let sources: Vec<&str> = d.certificates.iter().map(|c| c.source.as_str()).collect();
    let rows = vec![
        vec!["Hostname".into(), d.hostname.clone()],
        vec!["Status".into(), d.status.clone()],
        vec!["Configured".into(), d.configured.to_string()],
        vec!["ACME requested".into(), d.acme_requested.to_string()],
        vec!["Validated by".into(), validated_by(&d.validation)],
        vec![
            "Sources".into(),
            if sources.is_empty() {
                "-".into()
            } else {
                sources.join(", ")
            },
        ],
        vec![
            "Issuer".into(),
            or_dash(issued.iter().find_map(|c| c.issuer.as_deref())),
        ],
        vec![
            "Expires".into(),
            or_dash(issued.iter().find_map(|c| c.expires_at.as_deref())),
        ],
        vec![
            "Rate limited until".into(),
            or_dash(d.rate_limited_until.as_deref()),
        ],
    ];
    for r in rows {
        out.push_str(&format!("  {:<19} = {}\n", r[0], r[1]));
    }
    if d.status != "active" || !d.validation_errors.is_empty() {
        out.push('\n');
        out.push_str(&how_to_validate(d));
        out.push('\n');
    }
    for e in &d.validation_errors {
        out.push_str(&format!("\nProblem: {}\n", e.message));
        if let Some(r) = &e.remediation {
            out.push_str(&format!("  what to do: {r}\n"));
        }
    }
    out
}

/// The ACME challenge that last validated the name, `-` when none has.
fn validated_by(v: &hangar_api_types::CertificateValidation) -> String {
    let methods: Vec<&str> = [
        (v.alpn_configured, "TLS-ALPN-01"),
        (v.http_configured, "HTTP-01"),
        (v.dns_configured, "DNS-01"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect();
    if methods.is_empty() {
        "-".into()
    } else {
        methods.join(", ")
    }
}

/// What the user must set up for the name's certificate: DNS pointing here, and for a
/// wildcard the DNS-01 CNAME.
fn how_to_validate(d: &CertificateDetailResponse) -> String {
    let ch = &d.dns_requirements.acme_challenge;
    let dns01 = (!ch.target.is_empty()).then(|| {
        format!(
            "a CNAME record {} -> {} (DNS-01; it stays valid for renewals)",
            ch.name, ch.target
        )
    });
    let route = format!(
        "Point {} at this platform: a CNAME record to {} (or A/AAAA records to the host)",
        d.hostname, d.dns_requirements.cname
    );
    match (d.hostname.starts_with("*."), dns01) {
        (true, Some(c)) => format!("{route}. The certificate needs {c}."),
        (true, None) => format!(
            "{route}. A wildcard certificate needs DNS-01, which this platform does not \
             serve: import one with `hangar certs import`."
        ),
        // DNS-01 for a single name only where the operator turned it on
        // (`--acme-challenges`), which the API does not say: the JSON has the record.
        (false, _) => format!("{route}, with ports 80 and 443 reaching it."),
    }
}

fn print_detail(d: &CertificateDetailResponse, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(d)?);
    } else {
        print!("{}", detail(d));
    }
    Ok(())
}

pub(crate) fn run(c: CertsCommand, api: &ApiArgs) -> anyhow::Result<u8> {
    let client = api.client()?;
    block_on(async move {
        match c {
            CertsCommand::Add {
                hostname,
                app,
                json,
            } => {
                let name = app.name()?;
                let d = client.add_certificate(&name, &hostname).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&d)?);
                } else {
                    println!("Added {} to {name}.", d.hostname);
                    println!("{}", how_to_validate(&d));
                    println!(
                        "Follow it with `hangar certs show {} -a {name}`.",
                        d.hostname
                    );
                }
            }
            CertsCommand::List { app, json } => {
                let list = client.certificates(&app.name()?).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&list.certificates)?);
                } else {
                    let rows: Vec<Vec<String>> = list
                        .certificates
                        .iter()
                        .map(|c| {
                            let source = match (c.has_custom_certificate, c.has_fly_certificate) {
                                (true, true) => "custom, acme",
                                (true, false) => "custom",
                                (false, true) => "acme",
                                (false, false) if c.acme_requested => "acme (pending)",
                                (false, false) => "-",
                            };
                            vec![
                                c.hostname.clone(),
                                c.status.clone(),
                                source.to_string(),
                                c.created_at.clone(),
                            ]
                        })
                        .collect();
                    print!(
                        "{}",
                        table(&["HOSTNAME", "STATUS", "CERTIFICATES", "ADDED"], &rows)
                    );
                }
            }
            CertsCommand::Show {
                hostname,
                app,
                json,
            } => {
                let d = client.certificate(&app.name()?, &hostname).await?;
                print_detail(&d, json)?;
            }
            CertsCommand::Check {
                hostname,
                app,
                json,
            } => {
                let d = client.check_certificate(&app.name()?, &hostname).await?;
                print_detail(&d, json)?;
            }
            CertsCommand::Remove { hostname, app, yes } => {
                let name = app.name()?;
                if !yes
                    && !confirm(
                        &format!(
                            "Remove {hostname} from {name} (it is no longer served, its certificates are deleted)?"
                        ),
                        "--yes",
                    )?
                {
                    bail!("not removed");
                }
                client.remove_certificate(&name, &hostname).await?;
                println!("Removed {hostname} from {name}");
            }
            CertsCommand::Import {
                hostname,
                app,
                fullchain,
                private_key,
                json,
            } => {
                let name = app.name()?;
                let read = |p: &std::path::Path| {
                    std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
                };
                let req = ImportCertificateRequest {
                    hostname,
                    fullchain: read(&fullchain)?,
                    private_key: read(&private_key)?,
                };
                let d = client.import_certificate(&name, &req).await?;
                print_detail(&d, json)?;
            }
        }
        Ok(exit::OK)
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_says_which_challenge_validated_the_name() {
        let mut d = CertificateDetailResponse {
            hostname: "*.example.com".into(),
            status: "active".into(),
            ..CertificateDetailResponse::default()
        };
        assert!(
            detail(&d).contains("  Validated by        = -\n"),
            "{}",
            detail(&d)
        );
        d.validation.dns_configured = true;
        assert!(
            detail(&d).contains("  Validated by        = DNS-01\n"),
            "{}",
            detail(&d)
        );
        d.validation.dns_configured = false;
        d.validation.alpn_configured = true;
        assert!(detail(&d).contains("= TLS-ALPN-01\n"), "{}", detail(&d));
    }
}
