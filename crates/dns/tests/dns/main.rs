//! The DNS server: the query path against a view of records (every §4.2 name, NXDOMAIN vs
//! NODATA, malformed queries, truncation), and the server on real sockets over a real store
//! (changes answered within milliseconds, forwarding, bounds).

mod answers;
mod server;

use std::collections::BTreeMap;
use std::net::Ipv6Addr;

use hangar_api_types::MachineConfig;
use hangar_domain::{State, sixpn};
use hangar_store::{AppRecord, MachineRecord};
use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{Name, RData, RecordType};

/// This host's id in every test.
pub(crate) const HOST: u32 = 0x0a7b_0196;

pub(crate) fn app(name: &str, org: &str, network: &str) -> AppRecord {
    AppRecord {
        id: format!("id-{name}"),
        name: name.into(),
        org_slug: org.into(),
        network: network.into(),
        created_at: 1,
    }
}

/// A machine of `app` on network `net`, number `n` (its address `fdaa:<net>:<HOST>:0:<n>:2`).
pub(crate) fn machine(
    id: &str,
    app: &str,
    net: u32,
    n: u32,
    region: &str,
    state: State,
    metadata: &[(&str, &str)],
) -> MachineRecord {
    MachineRecord {
        id: id.into(),
        app: app.into(),
        name: format!("name-{id}"),
        region: region.into(),
        state,
        instance_id: "01HZZZZZZZZZZZZZZZZZZZZZZZ".into(),
        config: MachineConfig {
            image: "img:1".into(),
            metadata: metadata
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            ..MachineConfig::default()
        },
        image_ref: None,
        private_ip: addr(net, n).to_string(),
        host: "h".into(),
        cordoned: false,
        pending: None,
        restart_count: 0,
        created_at: 1,
        updated_at: 1,
        revision: 0,
    }
}

pub(crate) fn addr(net: u32, n: u32) -> Ipv6Addr {
    sixpn::machine_addr(net, HOST, n)
}

/// A query for `name`/`t`, with an EDNS buffer of `edns` bytes when given.
pub(crate) fn query(name: &str, t: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = 0x4242;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).expect("name"), t));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m.to_vec().expect("encode")
}

/// The AAAA addresses of an answer.
pub(crate) fn aaaa(m: &Message) -> Vec<Ipv6Addr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::AAAA(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

/// The TXT strings of an answer, each record's strings joined.
pub(crate) fn txt(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::TXT(t) => Some(
                t.txt_data
                    .iter()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect::<String>(),
            ),
            _ => None,
        })
        .collect()
}
