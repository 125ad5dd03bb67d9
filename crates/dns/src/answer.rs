//! The query path: bytes of a query in, bytes of the answer out (or "forward this"), from a
//! [`View`]. Pure: no IO, no clock, so it is unit-tested and fuzzed as is.
//!
//! Names (PLATFORM.md §4.2), all relative to the asking machine's network:
//!
//! | name | type | answer |
//! |---|---|---|
//! | `<app>.internal`, `global.<app>.internal` | AAAA | started machines |
//! | `<region>.<app>.internal` | AAAA | started machines in the region |
//! | `top<N>.nearest.of.<app>.internal` | AAAA | the N started machines nearest the asker |
//! | `<machine id>.vm.<app>.internal` | AAAA | the machine if started |
//! | `<group>.process.<app>.internal` | AAAA | started machines of the process group |
//! | `<value>.<key>.kv._metadata.<app>.internal` | AAAA | started machines with metadata key = value |
//! | `_api.internal` | AAAA | the host's service address (Machines API on port 4280) |
//! | `<app>.flycast` | AAAA | the app's Flycast address, once allocated |
//! | `vms.<app>.internal`, `all.vms.…` | TXT | `<id> <region>,…` of started / all machines |
//! | `regions.<app>.internal`, `all.regions.…` | TXT | `<region>,…` with started / any machines |
//! | `_apps.internal` | TXT | the network's apps |
//! | `_instances.internal`, `all._instances.internal` | TXT | `instance=<id>,app=<app>,ip=<6pn>,region=<r>;…` |
//! | `_peer.internal` | TXT | the network's WireGuard peers (`interactive-*` ones hidden) |
//! | `<peer>._peer.internal` | AAAA | a WireGuard peer's address |
//!
//! A name exists when its app exists in the asker's network and its selector matches a
//! registered machine in any state (a region, group, id, metadata pair); AAAA answers hold
//! only started machines, so a stopped machine's name is NODATA and a destroyed one's
//! NXDOMAIN. Names that are parents of existing names (`vm.<app>.internal`, `process.…`,
//! `of.…`, `_metadata.…`) are empty non-terminals: NODATA, never NXDOMAIN (RFC 8020). Negative
//! answers carry the zone's SOA (TTL and negative TTL: the configured TTL, 5 s). Lists in TXT
//! records are split into strings of at most 255 bytes (clients concatenate them).
//!
//! Everything else is forwarded ([`Outcome::Forward`]). Malformed queries get FORMERR (with the
//! query's id when the header is readable; shorter than a header: no answer), responses sent to
//! the server are ignored, opcodes other than QUERY get NOTIMP, and an answer larger than the
//! client can take (512 bytes, or its EDNS size up to [`MAX_UDP_PAYLOAD`]) is sent truncated
//! (TC) so the client asks again over TCP.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv6Addr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{AAAA, SOA, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use crate::view::{AppEntry, MachineEntry, View};

/// Largest UDP answer sent, whatever the client's EDNS buffer (the DNS flag day 2020 value).
pub const MAX_UDP_PAYLOAD: u16 = 1232;

/// Largest N of `top<N>.nearest.of.<app>.internal`.
pub const MAX_TOP: usize = 64;

/// Who asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asker {
    /// A machine (or later a WireGuard peer) of this network, from this address.
    Network(u32, Ipv6Addr),
    /// An operator on the host (the operators' listener, a non-6PN source): every network.
    Operator,
}

impl Asker {
    fn network(&self) -> Option<u32> {
        match self {
            Asker::Network(n, _) => Some(*n),
            Asker::Operator => None,
        }
    }
}

/// What answers depend on besides the view.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This host's id (the `_api.internal` address is this host's service address).
    pub host_id: u32,
    /// This host's region (the asker's when it is not a known machine).
    pub region: String,
    /// Distances between regions for `top<N>.nearest.of` (symmetric; unknown pairs are far).
    pub distances: HashMap<(String, String), u32>,
    /// TTL of every record, and the negative TTL.
    pub ttl: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            host_id: 1,
            region: "local".into(),
            distances: HashMap::new(),
            ttl: 5,
        }
    }
}

/// What to do with a query.
#[derive(Debug)]
pub enum Outcome {
    /// Send this answer.
    Answer(Answer),
    /// Not a Hangar name: ask the upstream resolvers (the query's type for metrics).
    Forward(RecordType),
    /// Send nothing (too short to answer, or not a query).
    Drop,
}

/// An answer and what it was, for metrics.
#[derive(Debug)]
pub struct Answer {
    /// The message.
    pub bytes: Vec<u8>,
    /// Its response code.
    pub rcode: ResponseCode,
    /// The type asked (`None` when the query could not be read).
    pub qtype: Option<RecordType>,
}

/// Answers `query` from `view` for `asker`; `max_size`: the transport's limit (512 or the
/// client's EDNS size for UDP, 65535 for TCP).
pub fn handle(view: &View, settings: &Settings, asker: Asker, query: &[u8], tcp: bool) -> Outcome {
    if query.len() < 12 {
        return Outcome::Drop;
    }
    let id = u16::from_be_bytes([query[0], query[1]]);
    if query[2] & 0x80 != 0 {
        // A response: never answer one (no loops between servers).
        return Outcome::Drop;
    }
    let opcode = OpCode::from_u8((query[2] >> 3) & 0x0f);
    let msg = match Message::from_vec(query) {
        Ok(m) => m,
        Err(_) => return error(id, opcode, ResponseCode::FormErr, None),
    };
    if msg.metadata.op_code != OpCode::Query {
        return error(id, msg.metadata.op_code, ResponseCode::NotImp, None);
    }
    if msg.queries.len() != 1 {
        return error(id, opcode, ResponseCode::FormErr, None);
    }
    let q = &msg.queries[0];
    let labels: Vec<String> = q
        .name()
        .iter()
        .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
        .collect();
    let zone = match labels.last().map(String::as_str) {
        Some("internal") => Zone::Internal,
        Some("flycast") => Zone::Flycast,
        _ => return Outcome::Forward(q.query_type()),
    };
    let mut resp = Message::response(id, OpCode::Query);
    resp.metadata.recursion_desired = msg.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    resp.metadata.checking_disabled = msg.metadata.checking_disabled;
    resp.metadata.authoritative = true;
    resp.add_query(q.clone());
    let limit = if tcp {
        usize::from(u16::MAX)
    } else {
        match &msg.edns {
            Some(e) => usize::from(e.max_payload().clamp(512, MAX_UDP_PAYLOAD)),
            None => 512,
        }
    };
    if msg.edns.is_some() {
        let mut e = Edns::new();
        e.set_max_payload(MAX_UDP_PAYLOAD);
        resp.set_edns(e);
    }
    let qtype = q.query_type();
    let name = q.name().clone();
    let ttl = settings.ttl;
    if q.query_class() != DNSClass::IN {
        resp.metadata.response_code = ResponseCode::Refused;
        return finish(resp, limit, Some(qtype));
    }
    let found = match zone {
        Zone::Internal => internal(view, settings, asker, &labels[..labels.len() - 1]),
        Zone::Flycast => flycast(view, asker, &labels[..labels.len() - 1]),
    };
    match found {
        Found::NxDomain => {
            resp.metadata.response_code = ResponseCode::NXDomain;
            resp.add_authority(soa(zone, view, ttl));
        }
        Found::Exists { aaaa, txt, apex } => {
            let mut any = false;
            if matches!(qtype, RecordType::AAAA | RecordType::ANY) {
                for a in aaaa {
                    resp.add_answer(Record::from_rdata(name.clone(), ttl, RData::AAAA(AAAA(a))));
                    any = true;
                }
            }
            if matches!(qtype, RecordType::TXT | RecordType::ANY)
                && let Some(t) = txt
            {
                resp.add_answer(Record::from_rdata(
                    name.clone(),
                    ttl,
                    RData::TXT(txt_of(&t)),
                ));
                any = true;
            }
            if apex && matches!(qtype, RecordType::SOA | RecordType::ANY) {
                resp.add_answer(soa(zone, view, ttl));
                any = true;
            }
            if !any {
                resp.add_authority(soa(zone, view, ttl));
            }
        }
    }
    finish(resp, limit, Some(qtype))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Zone {
    Internal,
    Flycast,
}

/// A name that does not exist, or does, with its records (an empty list: none of the type).
#[derive(Debug, PartialEq, Eq)]
enum Found {
    NxDomain,
    Exists {
        aaaa: Vec<Ipv6Addr>,
        txt: Option<String>,
        apex: bool,
    },
}

impl Found {
    fn empty() -> Self {
        Found::Exists {
            aaaa: Vec::new(),
            txt: None,
            apex: false,
        }
    }

    fn aaaa(addrs: Vec<Ipv6Addr>) -> Self {
        Found::Exists {
            aaaa: addrs,
            txt: None,
            apex: false,
        }
    }

    fn txt(items: Vec<String>, sep: &str) -> Self {
        Found::Exists {
            aaaa: Vec::new(),
            txt: (!items.is_empty()).then(|| items.join(sep)),
            apex: false,
        }
    }
}

fn started(machines: &[&MachineEntry]) -> Vec<Ipv6Addr> {
    machines
        .iter()
        .filter(|m| m.started)
        .map(|m| m.addr)
        .collect()
}

/// AAAA of the started machines among those matching; NXDOMAIN when none matches at all.
fn selected(app: &AppEntry, pick: impl Fn(&MachineEntry) -> bool) -> Found {
    let matching: Vec<&MachineEntry> = app
        .machines
        .iter()
        .map(|m| &**m)
        .filter(|m| pick(m))
        .collect();
    if matching.is_empty() {
        Found::NxDomain
    } else {
        Found::aaaa(started(&matching))
    }
}

/// `labels`: the name below `internal`, lowercased, leftmost first.
fn internal(view: &View, settings: &Settings, asker: Asker, labels: &[String]) -> Found {
    let net = asker.network();
    let l: Vec<&str> = labels.iter().map(String::as_str).collect();
    match l.as_slice() {
        [] => Found::Exists {
            aaaa: Vec::new(),
            txt: None,
            apex: true,
        },
        ["_api"] => match asker {
            Asker::Network(n, _) => Found::aaaa(vec![hangar_domain::sixpn::service_addr(
                n,
                settings.host_id,
            )]),
            Asker::Operator => Found::empty(),
        },
        ["_apps"] => Found::txt(view.apps(net).iter().map(|a| a.name.clone()).collect(), ","),
        ["_instances"] => instances(view, net, false),
        ["all", "_instances"] => instances(view, net, true),
        // Peers of the asker's network; auto-named `interactive-*` ones are in no list.
        ["_peer"] => Found::txt(
            view.peers(net)
                .iter()
                .filter(|p| !p.name.starts_with("interactive-"))
                .map(|p| p.name.clone())
                .collect(),
            ",",
        ),
        [name, "_peer"] => {
            let found: Vec<Ipv6Addr> = view
                .peers(net)
                .iter()
                .filter(|p| p.name == *name)
                .map(|p| p.addr)
                .collect();
            if found.is_empty() {
                Found::NxDomain
            } else {
                Found::aaaa(found)
            }
        }
        [app] => match view.app(app, net) {
            Some(a) => Found::aaaa(started(
                &a.machines.iter().map(|m| &**m).collect::<Vec<_>>(),
            )),
            None => Found::NxDomain,
        },
        [sel, app] => {
            let Some(a) = view.app(app, net) else {
                return Found::NxDomain;
            };
            match *sel {
                "global" => Found::aaaa(started(
                    &a.machines.iter().map(|m| &**m).collect::<Vec<_>>(),
                )),
                "vms" => Found::txt(
                    a.machines
                        .iter()
                        .filter(|m| m.started)
                        .map(|m| format!("{} {}", m.id, m.region))
                        .collect(),
                    ",",
                ),
                "regions" => Found::txt(regions(a, false), ","),
                // Parents of longer names (empty non-terminals), unless a region is so named.
                "all" | "vm" | "process" | "of" | "_metadata" => {
                    match selected(a, |m| m.region == *sel) {
                        Found::NxDomain => Found::empty(),
                        f => f,
                    }
                }
                region => selected(a, |m| m.region == region),
            }
        }
        ["all", "vms", app] => match view.app(app, net) {
            Some(a) => Found::txt(
                a.machines
                    .iter()
                    .map(|m| format!("{} {}", m.id, m.region))
                    .collect(),
                ",",
            ),
            None => Found::NxDomain,
        },
        ["all", "regions", app] => match view.app(app, net) {
            Some(a) => Found::txt(regions(a, true), ","),
            None => Found::NxDomain,
        },
        [id, "vm", app] => match view.app(app, net) {
            Some(a) => selected(a, |m| m.id == *id),
            None => Found::NxDomain,
        },
        [group, "process", app] => match view.app(app, net) {
            Some(a) => selected(a, |m| m.group == *group),
            None => Found::NxDomain,
        },
        ["nearest", "of", app] | ["kv", "_metadata", app] => match view.app(app, net) {
            Some(_) => Found::empty(),
            None => Found::NxDomain,
        },
        [top, "nearest", "of", app] => {
            let Some(a) = view.app(app, net) else {
                return Found::NxDomain;
            };
            let n = top
                .strip_prefix("top")
                .filter(|d| !d.is_empty() && d.len() <= 3 && d.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|d| d.parse::<usize>().ok())
                .filter(|n| (1..=MAX_TOP).contains(n));
            match n {
                Some(n) => Found::aaaa(nearest(view, settings, asker, a, n)),
                None => Found::NxDomain,
            }
        }
        [key, "kv", "_metadata", app] => match view.app(app, net) {
            Some(a) => match selected(a, |m| m.metadata.contains_key(*key)) {
                Found::NxDomain => Found::NxDomain,
                _ => Found::empty(),
            },
            None => Found::NxDomain,
        },
        [value, key, "kv", "_metadata", app] => match view.app(app, net) {
            Some(a) => selected(a, |m| {
                m.metadata
                    .get(*key)
                    .is_some_and(|v| v.eq_ignore_ascii_case(value))
            }),
            None => Found::NxDomain,
        },
        _ => Found::NxDomain,
    }
}

fn flycast(view: &View, asker: Asker, labels: &[String]) -> Found {
    match labels {
        [] => Found::Exists {
            aaaa: Vec::new(),
            txt: None,
            apex: true,
        },
        // Only in a network the address is allocated for (another org's, or a custom
        // network, when allocated for it; then not the app's own).
        [app] => match view.flycast(app, asker.network()) {
            addrs if addrs.is_empty() => Found::NxDomain,
            addrs => Found::aaaa(addrs),
        },
        _ => Found::NxDomain,
    }
}

fn regions(app: &AppEntry, all: bool) -> Vec<String> {
    let set: BTreeSet<&str> = app
        .machines
        .iter()
        .filter(|m| all || m.started)
        .map(|m| m.region.as_str())
        .collect();
    set.into_iter().map(str::to_string).collect()
}

fn instances(view: &View, net: Option<u32>, all: bool) -> Found {
    let mut items = Vec::new();
    for a in view.apps(net) {
        for m in a.machines.iter().filter(|m| all || m.started) {
            items.push(format!(
                "instance={},app={},ip={},region={}",
                m.id, m.app, m.addr, m.region
            ));
        }
    }
    Found::txt(items, ";")
}

/// The `n` started machines nearest the asker: its region first, then by configured distance
/// (unknown: far), region name and id.
fn nearest(
    view: &View,
    settings: &Settings,
    asker: Asker,
    app: &AppEntry,
    n: usize,
) -> Vec<Ipv6Addr> {
    let from = match asker {
        Asker::Network(_, addr) => view
            .machine_at(addr)
            .map_or(settings.region.as_str(), |m| m.region.as_str()),
        Asker::Operator => settings.region.as_str(),
    };
    let distance = |to: &str| -> u32 {
        if to == from {
            return 0;
        }
        let key = (from.to_string(), to.to_string());
        let rev = (to.to_string(), from.to_string());
        settings
            .distances
            .get(&key)
            .or_else(|| settings.distances.get(&rev))
            .copied()
            .unwrap_or(u32::MAX / 2)
    };
    let mut ms: Vec<(u32, &str, &str, Ipv6Addr)> = app
        .machines
        .iter()
        .filter(|m| m.started)
        .map(|m| {
            (
                distance(&m.region),
                m.region.as_str(),
                m.id.as_str(),
                m.addr,
            )
        })
        .collect();
    ms.sort();
    ms.into_iter().take(n).map(|(_, _, _, a)| a).collect()
}

/// A TXT record of `text`, in strings of at most 255 bytes (cut on character boundaries).
fn txt_of(text: &str) -> TXT {
    let mut parts = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = rest.len().min(255);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        parts.push(rest[..end].to_string());
        rest = &rest[end..];
    }
    if parts.is_empty() {
        parts.push(String::new());
    }
    TXT::new(parts)
}

fn soa(zone: Zone, view: &View, ttl: u32) -> Record {
    let origin = match zone {
        Zone::Internal => "internal.",
        Zone::Flycast => "flycast.",
    };
    let name = Name::from_ascii(origin).unwrap_or_else(|_| Name::root());
    let mname = Name::from_ascii(format!("ns.{origin}")).unwrap_or_else(|_| Name::root());
    let rname = Name::from_ascii(format!("hostmaster.{origin}")).unwrap_or_else(|_| Name::root());
    Record::from_rdata(
        name,
        ttl,
        RData::SOA(SOA::new(
            mname,
            rname,
            view.revision as u32,
            60,
            60,
            3600,
            ttl,
        )),
    )
}

fn error(id: u16, opcode: OpCode, rcode: ResponseCode, qtype: Option<RecordType>) -> Outcome {
    match Message::error_msg(id, opcode, rcode).to_vec() {
        Ok(bytes) => Outcome::Answer(Answer {
            bytes,
            rcode,
            qtype,
        }),
        Err(_) => Outcome::Drop,
    }
}

/// Encodes `resp`; over `limit`, the same header and question with TC set.
fn finish(resp: Message, limit: usize, qtype: Option<RecordType>) -> Outcome {
    let rcode = resp.metadata.response_code;
    let id = resp.metadata.id;
    let bytes = match resp.to_vec() {
        Ok(b) if b.len() <= limit => b,
        Ok(_) => match resp.truncate().to_vec() {
            Ok(b) => b,
            Err(_) => return error(id, OpCode::Query, ResponseCode::ServFail, qtype),
        },
        Err(_) => return error(id, OpCode::Query, ResponseCode::ServFail, qtype),
    };
    Outcome::Answer(Answer {
        bytes,
        rcode,
        qtype,
    })
}

/// A SERVFAIL answer to `query` (the forwarder's answer when no upstream answers), or
/// nothing when the query is unreadable.
pub fn servfail(query: &[u8]) -> Option<Vec<u8>> {
    reply_code(query, ResponseCode::ServFail)
}

/// An empty answer to `query` with `rcode` (its question echoed), or nothing when the query
/// is unreadable or not a query.
pub fn reply_code(query: &[u8], rcode: ResponseCode) -> Option<Vec<u8>> {
    let msg = Message::from_vec(query).ok()?;
    if msg.metadata.message_type != MessageType::Query {
        return None;
    }
    let mut resp = Message::response(msg.metadata.id, msg.metadata.op_code);
    resp.metadata.response_code = rcode;
    resp.metadata.recursion_desired = msg.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    resp.add_queries(msg.queries.iter().cloned());
    resp.to_vec().ok()
}
