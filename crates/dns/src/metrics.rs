//! The DNS server's metrics: queries by type and response code, forwards by result, the
//! networks it listens on, API relay connections. Label values come from small fixed sets
//! (types outside the common ones count as `other`), so the series stay few.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hangar_metrics::{Counter, Families, Gauge, Registry};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

/// Every metric of the DNS server.
#[derive(Debug)]
pub struct DnsMetrics {
    registry: Registry,
    queries: Mutex<HashMap<(&'static str, &'static str), Arc<Counter>>>,
    /// Networks listened on.
    pub networks: Arc<Gauge>,
}

impl Default for DnsMetrics {
    fn default() -> Self {
        let registry = Registry::new();
        let networks = registry.gauge(
            "hangar_dns_networks",
            "Private networks whose service address the DNS server listens on.",
            &[],
        );
        Self {
            registry,
            queries: Mutex::new(HashMap::new()),
            networks,
        }
    }
}

/// The label of a query type.
pub fn type_label(t: Option<RecordType>) -> &'static str {
    match t {
        Some(RecordType::A) => "A",
        Some(RecordType::AAAA) => "AAAA",
        Some(RecordType::TXT) => "TXT",
        Some(RecordType::SOA) => "SOA",
        Some(RecordType::ANY) => "ANY",
        Some(RecordType::PTR) => "PTR",
        Some(RecordType::SRV) => "SRV",
        Some(RecordType::MX) => "MX",
        Some(RecordType::CNAME) => "CNAME",
        Some(RecordType::NS) => "NS",
        Some(RecordType::HTTPS) => "HTTPS",
        Some(_) => "other",
        None => "none",
    }
}

/// The label of a response code.
pub fn rcode_label(r: ResponseCode) -> &'static str {
    match r {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::Refused => "REFUSED",
        _ => "other",
    }
}

impl DnsMetrics {
    /// Counts an answered query.
    pub fn query(&self, qtype: &'static str, rcode: &'static str) {
        let c = {
            let mut q = self.queries.lock().unwrap_or_else(|p| p.into_inner());
            q.entry((qtype, rcode))
                .or_insert_with(|| {
                    self.registry.counter(
                        "hangar_dns_queries_total",
                        "DNS queries answered, by query type and response code.",
                        &[("type", qtype), ("rcode", rcode)],
                    )
                })
                .clone()
        };
        c.inc();
    }

    /// Counts a forward (`answered`, `failed`: no upstream answered, `busy`: too many at once).
    pub fn forward(&self, result: &'static str) {
        self.registry
            .counter(
                "hangar_dns_forwards_total",
                "Queries for other names sent to the host's resolvers, by result.",
                &[("result", result)],
            )
            .inc();
    }

    /// Counts a connection relayed to the Machines API (`relayed`, `busy`, `failed`).
    pub fn relay(&self, result: &'static str) {
        self.registry
            .counter(
                "hangar_dns_api_relay_connections_total",
                "Connections from machines to _api.internal:4280, by result.",
                &[("result", result)],
            )
            .inc();
    }

    /// Adds every metric to `out`.
    pub fn collect(&self, out: &mut Families) {
        self.registry.collect(out);
    }
}
