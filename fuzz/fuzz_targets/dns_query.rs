//! The DNS server's query path (`hangar_dns::answer::handle`) on untrusted bytes, over a fixed
//! view of two orgs, a custom network and machines in several states. Byte 0 picks the asker
//! (and, with its top bit, that the rest is a name to ask about rather than a raw message),
//! byte 1 the transport (bit 0: TCP) and, for names, bytes 1–2 the type. Never a panic; every
//! answer decodes, carries the query's id, is a response, and fits the transport.
#![no_main]

use std::collections::HashMap;
use std::sync::OnceLock;

use hangar_api_types::MachineConfig;
use hangar_dns::answer::{self, Asker, Outcome, Settings};
use hangar_dns::hickory_proto::op::{Edns, Message, MessageType, Query};
use hangar_dns::hickory_proto::rr::{Name, RecordType};
use hangar_dns::View;
use hangar_domain::{State, sixpn};
use hangar_store::{AppRecord, MachineRecord, NetworkRecord};
use libfuzzer_sys::fuzz_target;

const HOST: u32 = 7;

fn machine(id: &str, app: &str, net: u32, n: u32, region: &str, state: State, meta: &[(&str, &str)]) -> MachineRecord {
    MachineRecord {
        id: id.into(),
        app: app.into(),
        name: id.into(),
        region: region.into(),
        state,
        instance_id: "01HZZZZZZZZZZZZZZZZZZZZZZZ".into(),
        config: MachineConfig {
            image: "img:1".into(),
            metadata: meta.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..MachineConfig::default()
        },
        image_ref: None,
        private_ip: sixpn::machine_addr(net, HOST, n).to_string(),
        host: "h".into(),
        cordoned: false,
        pending: None,
        restart_count: 0,
        created_at: 1,
        updated_at: 1,
        revision: 0,
    }
}

fn app(name: &str, org: &str, network: &str) -> AppRecord {
    AppRecord {
        id: name.into(),
        name: name.into(),
        org_slug: org.into(),
        network: network.into(),
        created_at: 1,
    }
}

fn net(org: &str, name: &str, id: u32) -> NetworkRecord {
    NetworkRecord { org_slug: org.into(), name: name.into(), id, created_at: 1 }
}

fn view() -> &'static View {
    static V: OnceLock<View> = OnceLock::new();
    V.get_or_init(|| {
        let mut machines = vec![
            machine("0000000000000a", "web", 1, 1, "ams", State::Started, &[("fly_process_group", "worker"), ("role", "primary")]),
            machine("0000000000000b", "web", 1, 2, "fra", State::Started, &[]),
            machine("0000000000000c", "web", 1, 3, "ams", State::Stopped, &[]),
            machine("0000000000000d", "blue", 3, 1, "ams", State::Started, &[]),
            machine("0000000000000e", "rival", 2, 1, "syd", State::Started, &[]),
        ];
        for i in 0..60u32 {
            machines.push(machine(&format!("{:014x}", 0x100 + i), "big", 1, 100 + i, "ams", State::Started, &[]));
        }
        View::build(
            HOST,
            vec![net("acme", "default", 1), net("other", "default", 2), net("acme", "blue", 3)],
            vec![app("web", "acme", "default"), app("big", "acme", "default"), app("empty", "acme", "default"), app("blue", "acme", "blue"), app("rival", "other", "default")],
            &machines,
        )
    })
}

fn settings() -> &'static Settings {
    static S: OnceLock<Settings> = OnceLock::new();
    S.get_or_init(|| Settings {
        host_id: HOST,
        region: "ams".into(),
        distances: HashMap::from([(("ams".to_string(), "fra".to_string()), 10)]),
        ttl: 5,
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    let asker = match first & 0x03 {
        0 => Asker::Operator,
        1 => Asker::Network(1, sixpn::machine_addr(1, HOST, 1)),
        2 => Asker::Network(3, sixpn::machine_addr(3, HOST, 1)),
        _ => Asker::Network(9, sixpn::machine_addr(9, HOST, 9)),
    };
    let tcp = rest.first().is_some_and(|b| b & 1 == 1);
    let query: Vec<u8> = if first & 0x80 != 0 {
        // A name and a type, made into a well-formed query (with EDNS when bit 2 is set).
        let Some((t, name)) = rest.split_at_checked(2) else { return };
        let Ok(name) = std::str::from_utf8(name) else { return };
        let Ok(name) = Name::from_ascii(name) else { return };
        let mut m = Message::query();
        m.add_query(Query::query(name, RecordType::from(u16::from_be_bytes([t[0], t[1]]))));
        if first & 0x04 != 0 {
            let mut e = Edns::new();
            e.set_max_payload(u16::from(t[0]) << 4);
            m.set_edns(e);
        }
        match m.to_vec() {
            Ok(q) => q,
            Err(_) => return,
        }
    } else {
        rest.get(1..).unwrap_or_default().to_vec()
    };
    match answer::handle(view(), settings(), asker, &query, tcp) {
        Outcome::Answer(a) => {
            let m = Message::from_vec(&a.bytes).expect("every answer decodes");
            assert_eq!(m.metadata.message_type, MessageType::Response);
            assert_eq!(m.metadata.id, u16::from_be_bytes([query[0], query[1]]));
            assert!(a.bytes.len() <= if tcp { 65535 } else { 1232 });
            assert!(m.answers.iter().all(|r| r.ttl == 5));
        }
        Outcome::Forward(_) => {
            let m = Message::from_vec(&query).expect("only readable queries are forwarded");
            assert_eq!(m.queries.len(), 1);
        }
        Outcome::Drop => assert!(query.len() < 12 || query[2] & 0x80 != 0),
    }
});
