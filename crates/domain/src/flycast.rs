//! Which ports of an app its Flycast addresses serve (PLATFORM.md §4.3), agreed on by the
//! proxy (its listeners) and the host (the isolation rules that let machines reach them).
//!
//! Every TCP port an app's services declare (single ports and ranges up to 1024 ports), with
//! the proxy's handlers for internal traffic: `http` (no `force_https`), or raw TCP (with
//! `proxy_proto` when declared). Ports whose handlers include `tls` are not served on Flycast
//! (there is no certificate for `<app>.flycast`); UDP services neither. A `pg_tls` port is
//! raw TCP here: inside the private network PostgreSQL clients connect without TLS at the
//! proxy (the reference's attach strings say `sslmode=disable`), and one that asks for TLS
//! gets the server's own answer.

use std::collections::BTreeMap;

use hangar_api_types::MachineService;

/// How a Flycast port is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FlycastPort {
    /// The `http` handler (where machines disagree, `http` wins).
    Http,
    /// Raw TCP (and `proxy_proto`).
    Raw,
}

/// The ports the services serve on Flycast, each with its handler.
pub fn ports<'a>(
    services: impl IntoIterator<Item = &'a MachineService>,
) -> BTreeMap<u16, FlycastPort> {
    let mut out = BTreeMap::new();
    for s in services {
        if s.protocol.eq_ignore_ascii_case("udp") {
            continue;
        }
        for mp in &s.ports {
            if mp.handlers.iter().any(|h| h == "tls") {
                continue;
            }
            let kind = if mp.handlers.iter().any(|h| h == "http") {
                FlycastPort::Http
            } else {
                FlycastPort::Raw
            };
            let range = match (mp.port, mp.start_port, mp.end_port) {
                (Some(p), _, _) => p..=p,
                (None, Some(a), Some(b)) if b >= a && b - a < 1024 => a..=b,
                _ => continue,
            };
            for p in range {
                if let Ok(p) = u16::try_from(p)
                    && p != 0
                {
                    let e = out.entry(p).or_insert(kind);
                    *e = (*e).min(kind);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hangar_api_types::MachinePort;

    fn port(p: i64, handlers: &[&str]) -> MachinePort {
        MachinePort {
            port: Some(p),
            handlers: handlers.iter().map(|h| h.to_string()).collect(),
            ..MachinePort::default()
        }
    }

    fn range(a: i64, b: i64) -> MachinePort {
        MachinePort {
            start_port: Some(a),
            end_port: Some(b),
            ..MachinePort::default()
        }
    }

    fn service(protocol: &str, ports: Vec<MachinePort>) -> MachineService {
        MachineService {
            protocol: protocol.into(),
            ports,
            ..MachineService::default()
        }
    }

    #[test]
    fn http_and_raw_ports_are_served_tls_and_udp_not() {
        let services = [
            service(
                "tcp",
                vec![
                    port(80, &["http"]),
                    port(443, &["tls", "http"]),
                    port(5000, &["proxy_proto"]),
                    port(5432, &["pg_tls"]),
                    range(6000, 6002),
                    range(1, 65535),
                    port(70000, &[]),
                    port(0, &[]),
                ],
            ),
            service("tcp", vec![port(5000, &["http"])]),
            service("udp", vec![port(53, &[])]),
        ];
        let p = ports(&services);
        assert_eq!(
            p.into_iter().collect::<Vec<_>>(),
            [
                (80, FlycastPort::Http),
                (5000, FlycastPort::Http),
                (5432, FlycastPort::Raw),
                (6000, FlycastPort::Raw),
                (6001, FlycastPort::Raw),
                (6002, FlycastPort::Raw),
            ]
        );
    }
}
