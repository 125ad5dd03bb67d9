//! The query path against a fixed view: two orgs, a custom network, machines in every state.

use std::collections::HashMap;

use hangar_dns::View;
use hangar_dns::answer::{self, Asker, Outcome, Settings};
use hangar_domain::{State, sixpn};
use hangar_store::NetworkRecord;
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{RData, RecordType};

use super::{HOST, aaaa, addr, app, machine, query, txt};

const ACME: u32 = 1;
const OTHER: u32 = 2;
const BLUE: u32 = 3;

fn net(org: &str, name: &str, id: u32) -> NetworkRecord {
    NetworkRecord {
        org_slug: org.into(),
        name: name.into(),
        id,
        created_at: 1,
    }
}

fn view() -> View {
    let mut skipped = machine("0000000000000d", "web", ACME, 4, "ams", State::Started, &[]);
    skipped.config.dns = Some(hangar_api_types::DnsConfig {
        skip_registration: Some(true),
        ..Default::default()
    });
    View::build(
        HOST,
        vec![
            net("acme", "default", ACME),
            net("other", "default", OTHER),
            net("acme", "blue", BLUE),
        ],
        vec![
            app("web", "acme", "default"),
            app("api", "acme", "default"),
            app("blue-app", "acme", "blue"),
            app("foreign", "other", "default"),
        ],
        &[
            machine(
                "0000000000000a",
                "web",
                ACME,
                1,
                "ams",
                State::Started,
                &[("fly_process_group", "app"), ("role", "Primary")],
            ),
            machine(
                "0000000000000b",
                "web",
                ACME,
                2,
                "fra",
                State::Started,
                &[("fly_process_group", "worker")],
            ),
            machine("0000000000000c", "web", ACME, 3, "ams", State::Stopped, &[]),
            skipped,
            machine(
                "0000000000000e",
                "web",
                ACME,
                5,
                "syd",
                State::Destroyed,
                &[],
            ),
            machine(
                "00000000000b01",
                "blue-app",
                BLUE,
                1,
                "ams",
                State::Started,
                &[],
            ),
            machine(
                "00000000000f01",
                "foreign",
                OTHER,
                1,
                "ams",
                State::Started,
                &[],
            ),
        ],
    )
}

fn settings() -> Settings {
    Settings {
        host_id: HOST,
        region: "ams".into(),
        distances: HashMap::from([
            (("ams".to_string(), "syd".to_string()), 100),
            (("ams".into(), "fra".into()), 10),
        ]),
        ttl: 5,
    }
}

/// The asking machine: web's first machine (network ACME, region ams).
fn asker() -> Asker {
    Asker::Network(ACME, addr(ACME, 1))
}

fn ask_as(who: Asker, name: &str, t: RecordType) -> Message {
    ask_bytes(who, &query(name, t, None), false)
}

fn ask(name: &str, t: RecordType) -> Message {
    ask_as(asker(), name, t)
}

fn ask_bytes(who: Asker, q: &[u8], tcp: bool) -> Message {
    match answer::handle(&view(), &settings(), who, q, tcp) {
        Outcome::Answer(a) => Message::from_vec(&a.bytes).expect("decodable answer"),
        other => panic!("expected an answer, got {other:?}"),
    }
}

fn nxdomain(m: &Message) -> bool {
    m.metadata.response_code == ResponseCode::NXDomain && m.answers.is_empty()
}

/// NOERROR, nothing of the type, the zone's SOA for negative caching.
fn nodata(m: &Message) -> bool {
    m.metadata.response_code == ResponseCode::NoError
        && m.answers.is_empty()
        && m.authorities
            .iter()
            .any(|r| matches!(r.data, RData::SOA(_)))
}

#[test]
fn app_names_answer_started_machines_with_a_5s_ttl() {
    for name in ["web.internal", "global.web.internal", "WEB.Internal."] {
        let m = ask(name, RecordType::AAAA);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{name}");
        assert!(m.metadata.authoritative);
        assert_eq!(m.metadata.message_type, MessageType::Response);
        assert_eq!(m.metadata.id, 0x4242);
        assert!(m.metadata.recursion_desired && m.metadata.recursion_available);
        assert_eq!(aaaa(&m), vec![addr(ACME, 1), addr(ACME, 2)], "{name}");
        assert!(m.answers.iter().all(|r| r.ttl == 5));
        assert_eq!(
            m.queries[0].name().to_ascii(),
            name.trim_end_matches('.').to_string() + "."
        );
    }
    // An app without machines exists: NODATA.
    assert!(nodata(&ask("api.internal", RecordType::AAAA)));
    // Other types of an existing name: NODATA (IPv6 only).
    assert!(nodata(&ask("web.internal", RecordType::A)));
    assert!(nodata(&ask("web.internal", RecordType::TXT)));
    assert!(nxdomain(&ask("nope.internal", RecordType::AAAA)));
}

#[test]
fn regions_nearest_vms_groups_and_metadata() {
    assert_eq!(
        aaaa(&ask("ams.web.internal", RecordType::AAAA)),
        vec![addr(ACME, 1)]
    );
    assert_eq!(
        aaaa(&ask("fra.web.internal", RecordType::AAAA)),
        vec![addr(ACME, 2)]
    );
    // A region without machines (its only one destroyed) does not exist.
    assert!(nxdomain(&ask("syd.web.internal", RecordType::AAAA)));
    assert!(nxdomain(&ask("lhr.web.internal", RecordType::AAAA)));

    assert_eq!(
        aaaa(&ask("top1.nearest.of.web.internal", RecordType::AAAA)),
        vec![addr(ACME, 1)]
    );
    assert_eq!(
        aaaa(&ask("top5.nearest.of.web.internal", RecordType::AAAA)),
        vec![addr(ACME, 1), addr(ACME, 2)]
    );
    // From fra the fra machine is nearest.
    let from_fra = Asker::Network(ACME, addr(ACME, 2));
    assert_eq!(
        aaaa(&ask_as(
            from_fra,
            "top1.nearest.of.web.internal",
            RecordType::AAAA
        )),
        vec![addr(ACME, 2)]
    );
    for bad in ["top0", "top65", "top", "topx", "top0001"] {
        assert!(
            nxdomain(&ask(
                &format!("{bad}.nearest.of.web.internal"),
                RecordType::AAAA
            )),
            "{bad}"
        );
    }

    assert_eq!(
        aaaa(&ask("0000000000000a.vm.web.internal", RecordType::AAAA)),
        vec![addr(ACME, 1)]
    );
    // Stopped: the name stays, the address goes. Skipped or destroyed: no name.
    assert!(nodata(&ask(
        "0000000000000c.vm.web.internal",
        RecordType::AAAA
    )));
    assert!(nxdomain(&ask(
        "0000000000000d.vm.web.internal",
        RecordType::AAAA
    )));
    assert!(nxdomain(&ask(
        "0000000000000e.vm.web.internal",
        RecordType::AAAA
    )));
    assert!(nxdomain(&ask(
        "00000000000b01.vm.web.internal",
        RecordType::AAAA
    )));

    assert_eq!(
        aaaa(&ask("worker.process.web.internal", RecordType::AAAA)),
        vec![addr(ACME, 2)]
    );
    // Machines without a group are in `app` (the stopped one gives no address).
    assert_eq!(
        aaaa(&ask("app.process.web.internal", RecordType::AAAA)),
        vec![addr(ACME, 1)]
    );
    assert!(nxdomain(&ask("db.process.web.internal", RecordType::AAAA)));

    assert_eq!(
        aaaa(&ask(
            "primary.role.kv._metadata.web.internal",
            RecordType::AAAA
        )),
        vec![addr(ACME, 1)]
    );
    assert!(nxdomain(&ask(
        "replica.role.kv._metadata.web.internal",
        RecordType::AAAA
    )));
    assert!(nxdomain(&ask(
        "x.nokey.kv._metadata.web.internal",
        RecordType::AAAA
    )));

    // Parents of existing names are empty non-terminals: NODATA, never NXDOMAIN.
    for ent in [
        "vm.web.internal",
        "process.web.internal",
        "of.web.internal",
        "nearest.of.web.internal",
        "_metadata.web.internal",
        "kv._metadata.web.internal",
        "role.kv._metadata.web.internal",
        "all.web.internal",
        "internal",
    ] {
        assert!(nodata(&ask(ent, RecordType::AAAA)), "{ent}");
    }
    assert!(nxdomain(&ask(
        "x.0000000000000a.vm.web.internal",
        RecordType::AAAA
    )));
}

#[test]
fn txt_lists() {
    assert_eq!(
        txt(&ask("vms.web.internal", RecordType::TXT)),
        vec!["0000000000000a ams,0000000000000b fra"]
    );
    assert_eq!(
        txt(&ask("all.vms.web.internal", RecordType::TXT)),
        vec!["0000000000000a ams,0000000000000b fra,0000000000000c ams"]
    );
    assert_eq!(
        txt(&ask("regions.web.internal", RecordType::TXT)),
        vec!["ams,fra"]
    );
    assert_eq!(
        txt(&ask("all.regions.web.internal", RecordType::TXT)),
        vec!["ams,fra"]
    );
    // Only the asker's network's apps.
    assert_eq!(
        txt(&ask("_apps.internal", RecordType::TXT)),
        vec!["api,web"]
    );
    assert_eq!(
        txt(&ask_as(
            Asker::Network(BLUE, addr(BLUE, 1)),
            "_apps.internal",
            RecordType::TXT
        )),
        vec!["blue-app"]
    );
    assert_eq!(
        txt(&ask("_instances.internal", RecordType::TXT)),
        vec![format!(
            "instance=0000000000000a,app=web,ip={},region=ams;instance=0000000000000b,app=web,ip={},region=fra",
            addr(ACME, 1),
            addr(ACME, 2)
        )]
    );
    assert_eq!(
        txt(&ask("all._instances.internal", RecordType::TXT))[0]
            .matches("instance=")
            .count(),
        3
    );
    // No peers yet; a list with nothing in it is NODATA.
    assert!(nodata(&ask("_peer.internal", RecordType::TXT)));
    assert!(nxdomain(&ask("laptop._peer.internal", RecordType::AAAA)));
    assert!(nodata(&ask("vms.api.internal", RecordType::TXT)));
    assert!(nodata(&ask("vms.web.internal", RecordType::AAAA)));
    // ANY gives what the name has.
    assert_eq!(txt(&ask("vms.web.internal", RecordType::ANY)).len(), 1);
}

#[test]
fn long_lists_are_split_into_strings_and_truncated_over_udp() {
    let mut machines = Vec::new();
    for i in 0..100u32 {
        machines.push(machine(
            &format!("{i:014x}"),
            "big",
            ACME,
            100 + i,
            "ams",
            State::Started,
            &[],
        ));
    }
    let v = View::build(
        HOST,
        vec![net("acme", "default", ACME)],
        vec![app("big", "acme", "default")],
        &machines,
    );
    let run = |q: &[u8], tcp: bool| match answer::handle(&v, &settings(), asker(), q, tcp) {
        Outcome::Answer(a) => Message::from_vec(&a.bytes).expect("decode"),
        o => panic!("{o:?}"),
    };
    // 100 AAAA do not fit 512 bytes: TC, no records; with EDNS 1232 neither; over TCP all.
    let m = run(&query("big.internal", RecordType::AAAA, None), false);
    assert!(m.metadata.truncation && m.answers.is_empty());
    let m = run(&query("big.internal", RecordType::AAAA, Some(4096)), false);
    assert!(m.metadata.truncation, "UDP answers stay within 1232 bytes");
    let m = run(&query("big.internal", RecordType::AAAA, None), true);
    assert!(!m.metadata.truncation);
    assert_eq!(aaaa(&m).len(), 100);
    let m = run(&query("vms.big.internal", RecordType::TXT, None), true);
    let RData::TXT(t) = &m.answers[0].data else {
        panic!("txt")
    };
    assert!(t.txt_data.len() > 1 && t.txt_data.iter().all(|s| s.len() <= 255));
    assert_eq!(txt(&m)[0].split(',').count(), 100);
    // A few fit.
    let m = run(
        &query("top3.nearest.of.big.internal", RecordType::AAAA, None),
        false,
    );
    assert_eq!(aaaa(&m).len(), 3);
}

#[test]
fn other_networks_and_orgs_are_invisible() {
    // Another org's app, and an app of a custom network of the same org.
    assert!(nxdomain(&ask("foreign.internal", RecordType::AAAA)));
    assert!(nxdomain(&ask("vms.foreign.internal", RecordType::TXT)));
    assert!(nxdomain(&ask("blue-app.internal", RecordType::AAAA)));
    let blue = Asker::Network(BLUE, addr(BLUE, 1));
    assert_eq!(
        aaaa(&ask_as(blue, "blue-app.internal", RecordType::AAAA)),
        vec![addr(BLUE, 1)]
    );
    assert!(nxdomain(&ask_as(blue, "web.internal", RecordType::AAAA)));
    // The operator sees every network.
    assert_eq!(
        aaaa(&ask_as(
            Asker::Operator,
            "foreign.internal",
            RecordType::AAAA
        )),
        vec![addr(OTHER, 1)]
    );
    assert_eq!(
        txt(&ask_as(Asker::Operator, "_apps.internal", RecordType::TXT)),
        vec!["api,blue-app,foreign,web"]
    );
}

#[test]
fn api_and_flycast() {
    assert_eq!(
        aaaa(&ask("_api.internal", RecordType::AAAA)),
        vec![sixpn::service_addr(ACME, HOST)]
    );
    let blue = Asker::Network(BLUE, addr(BLUE, 1));
    assert_eq!(
        aaaa(&ask_as(blue, "_api.internal", RecordType::AAAA)),
        vec![sixpn::service_addr(BLUE, HOST)]
    );
    assert!(nodata(&ask_as(
        Asker::Operator,
        "_api.internal",
        RecordType::AAAA
    )));
    // No Flycast address is allocated yet.
    assert!(nxdomain(&ask("web.flycast", RecordType::AAAA)));
    assert!(nxdomain(&ask("nope.flycast", RecordType::AAAA)));
    assert!(nodata(&ask("flycast", RecordType::AAAA)));
}

fn flycast(app: &str, n: u32, network: u32) -> hangar_store::IpAssignmentRecord {
    hangar_store::IpAssignmentRecord {
        ip: sixpn::flycast_addr(network, n).to_string(),
        app: app.into(),
        kind: hangar_store::FLYCAST.into(),
        region: "global".into(),
        network_id: Some(network),
        service_name: None,
        shared: false,
        created_at: 1,
    }
}

#[test]
fn flycast_names_answer_in_the_network_each_address_is_allocated_for() {
    // web: one for its own network and one for the other org; api: one for the custom
    // network only (not its own); a public record changes nothing.
    let mut public = flycast("web", 9, ACME);
    public.kind = "shared_v4".into();
    public.ip = "192.0.2.1".into();
    public.network_id = None;
    let v = view().with_flycast(vec![
        flycast("web", 1, ACME),
        flycast("web", 2, OTHER),
        flycast("api", 3, BLUE),
        flycast("gone", 4, ACME),
        public,
    ]);
    let ask = |who: Asker, name: &str| match answer::handle(
        &v,
        &settings(),
        who,
        &query(name, RecordType::AAAA, None),
        false,
    ) {
        Outcome::Answer(a) => Message::from_vec(&a.bytes).expect("decode"),
        o => panic!("{name}: {o:?}"),
    };
    let other = Asker::Network(OTHER, addr(OTHER, 1));
    let blue = Asker::Network(BLUE, addr(BLUE, 1));
    assert_eq!(
        aaaa(&ask(asker(), "web.flycast")),
        vec![sixpn::flycast_addr(ACME, 1)]
    );
    assert_eq!(
        aaaa(&ask(asker(), "WEB.flycast.")),
        vec![sixpn::flycast_addr(ACME, 1)]
    );
    assert_eq!(
        aaaa(&ask(other, "web.flycast")),
        vec![sixpn::flycast_addr(OTHER, 2)]
    );
    assert!(nxdomain(&ask(blue, "web.flycast")));
    assert_eq!(
        aaaa(&ask(blue, "api.flycast")),
        vec![sixpn::flycast_addr(BLUE, 3)]
    );
    assert!(nxdomain(&ask(asker(), "api.flycast")), "not the app's own");
    assert!(nxdomain(&ask(asker(), "gone.flycast")), "no such app");
    assert!(nxdomain(&ask(asker(), "x.web.flycast")));
    assert_eq!(
        aaaa(&ask(Asker::Operator, "web.flycast")),
        vec![sixpn::flycast_addr(ACME, 1), sixpn::flycast_addr(OTHER, 2)]
    );
    // The app's own address, for those who read the view.
    assert_eq!(
        v.app("web", Some(ACME)).and_then(|a| a.flycast),
        Some(sixpn::flycast_addr(ACME, 1))
    );
    assert_eq!(v.app("api", Some(ACME)).and_then(|a| a.flycast), None);
}

#[test]
fn other_names_are_forwarded() {
    for name in [
        "example.com",
        "internal.example.com",
        "internal.",
        "flycast.io",
    ] {
        let q = query(name, RecordType::A, None);
        match answer::handle(&view(), &settings(), asker(), &q, false) {
            Outcome::Forward(RecordType::A) => {}
            Outcome::Answer(_) if name == "internal." => {}
            o => panic!("{name}: {o:?}"),
        }
    }
}

#[test]
fn malformed_queries_get_formerr_and_responses_nothing() {
    let v = view();
    let s = settings();
    let run = |q: &[u8]| answer::handle(&v, &s, asker(), q, false);
    // Shorter than a header: nothing to answer to.
    assert!(matches!(run(&[1, 2, 3]), Outcome::Drop));
    // A header and garbage: FORMERR with the query's id.
    let mut q = query("web.internal", RecordType::AAAA, None);
    q.truncate(q.len() - 3);
    match run(&q) {
        Outcome::Answer(a) => {
            let m = Message::from_vec(&a.bytes).expect("decode");
            assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
            assert_eq!(m.metadata.id, 0x4242);
        }
        o => panic!("{o:?}"),
    }
    // Two questions: FORMERR. No question: FORMERR.
    let mut two = Message::from_vec(&query("web.internal", RecordType::AAAA, None)).expect("m");
    two.add_query(two.queries[0].clone());
    let m = ask_bytes(asker(), &two.to_vec().expect("e"), false);
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    let mut none = two.clone();
    none.queries.clear();
    let m = ask_bytes(asker(), &none.to_vec().expect("e"), false);
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    // A response is never answered.
    let mut resp = Message::from_vec(&query("web.internal", RecordType::AAAA, None)).expect("m");
    resp.metadata.message_type = MessageType::Response;
    assert!(matches!(run(&resp.to_vec().expect("e")), Outcome::Drop));
    // Other opcodes: NOTIMP.
    let mut notify = Message::from_vec(&query("web.internal", RecordType::SOA, None)).expect("m");
    notify.metadata.op_code = OpCode::Notify;
    let m = ask_bytes(asker(), &notify.to_vec().expect("e"), false);
    assert_eq!(m.metadata.response_code, ResponseCode::NotImp);
    // Another class: REFUSED.
    let mut chaos = Message::from_vec(&query("web.internal", RecordType::TXT, None)).expect("m");
    chaos.queries[0].set_query_class(hickory_proto::rr::DNSClass::CH);
    let m = ask_bytes(asker(), &chaos.to_vec().expect("e"), false);
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    // Every prefix and every single-byte change of a query: an answer or nothing, no panic.
    let q = query(
        "primary.role.kv._metadata.web.internal",
        RecordType::AAAA,
        Some(1232),
    );
    for n in 0..q.len() {
        let _ = run(&q[..n]);
        for b in [0u8, 0x3f, 0x40, 0xc0, 0xff] {
            let mut x = q.clone();
            x[n] = b;
            let _ = run(&x);
        }
    }
}

#[test]
fn peers_are_listed_and_resolved_in_their_network_only() {
    let peer = |org: &str, name: &str, network: u32, n: u32| hangar_store::WireguardPeerRecord {
        org_slug: org.into(),
        name: name.into(),
        network: "default".into(),
        network_id: network,
        region: "local".into(),
        public_key: format!("key-{name}"),
        peer_ip: sixpn::peer_addr(network, n).to_string(),
        created_at: 1,
    };
    let v = view().with_peers(&[
        peer("acme", "laptop", ACME, 1),
        peer("acme", "interactive-x", ACME, 2),
        peer("acme", "ci", ACME, 3),
        peer("other", "spy", OTHER, 4),
    ]);
    let s = Settings {
        host_id: HOST,
        ..Settings::default()
    };
    let ask = |asker: Asker, name: &str, t: RecordType| -> Message {
        match answer::handle(&v, &s, asker, &query(name, t, None), false) {
            Outcome::Answer(a) => Message::from_vec(&a.bytes).expect("answer"),
            other => panic!("{name}: {other:?}"),
        }
    };
    let acme = Asker::Network(ACME, addr(ACME, 1));
    let other = Asker::Network(OTHER, addr(OTHER, 1));
    assert_eq!(
        txt(&ask(acme, "_peer.internal", RecordType::TXT)),
        vec!["ci,laptop"]
    );
    assert_eq!(
        aaaa(&ask(acme, "laptop._peer.internal", RecordType::AAAA)),
        vec![sixpn::peer_addr(ACME, 1)]
    );
    // Hidden from the list, still resolvable.
    assert_eq!(
        aaaa(&ask(acme, "interactive-x._peer.internal", RecordType::AAAA)),
        vec![sixpn::peer_addr(ACME, 2)]
    );
    let nx = |m: &Message| m.metadata.response_code == ResponseCode::NXDomain;
    assert!(nx(&ask(acme, "spy._peer.internal", RecordType::AAAA)));
    assert!(nx(&ask(other, "laptop._peer.internal", RecordType::AAAA)));
    assert_eq!(
        txt(&ask(other, "_peer.internal", RecordType::TXT)),
        vec!["spy"]
    );
    // A peer asks as a member of its network (its address says which).
    let from_peer = Asker::Network(ACME, sixpn::peer_addr(ACME, 1));
    assert_eq!(
        aaaa(&ask(from_peer, "web.internal", RecordType::AAAA)).len(),
        2
    );
    // Peers' networks are served on this host (their gateway).
    assert!(v.hosted_networks().contains(&OTHER));
}
