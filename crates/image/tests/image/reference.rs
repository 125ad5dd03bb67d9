//! Reference parsing properties: total on any input, and round trips on valid ones.

use hangar_image::Reference;
use proptest::prelude::*;

fn component() -> impl Strategy<Value = String> {
    // [a-z0-9]+ (separator [a-z0-9]+)*
    let alnum = proptest::collection::vec(
        prop_oneof![Just('a'), Just('z'), Just('0'), Just('9'), Just('m')],
        1..4,
    )
    .prop_map(|v| v.into_iter().collect::<String>());
    let sep = prop_oneof![Just("."), Just("_"), Just("__"), Just("-"), Just("--")];
    (alnum.clone(), proptest::collection::vec((sep, alnum), 0..3)).prop_map(|(first, rest)| {
        let mut s = first;
        for (sep, part) in rest {
            s.push_str(sep);
            s.push_str(&part);
        }
        s
    })
}

fn valid_reference() -> impl Strategy<Value = String> {
    let registry = prop_oneof![
        Just(String::new()),
        Just("localhost/".to_owned()),
        Just("127.0.0.1:5000/".to_owned()),
        Just("registry.example.com/".to_owned()),
        Just("[::1]:5000/".to_owned()),
    ];
    let tag = prop_oneof![
        Just(String::new()),
        Just(":latest".to_owned()),
        Just(":v1.2-rc_3".to_owned()),
        Just(":_".to_owned()),
    ];
    let digest = prop_oneof![
        Just(String::new()),
        Just(format!("@sha256:{}", "ab".repeat(32))),
    ];
    (
        registry,
        proptest::collection::vec(component(), 1..4),
        tag,
        digest,
    )
        .prop_map(|(registry, path, tag, digest)| {
            // Without a registry, a first component with a '.' would be read as one.
            let registry = if registry.is_empty() {
                "user/".to_owned()
            } else {
                registry
            };
            format!("{registry}{}{tag}{digest}", path.join("/"))
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn any_string_never_panics(s in "\\PC*") {
        let _ = Reference::parse(&s);
    }

    #[test]
    fn any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let s = String::from_utf8_lossy(&bytes);
        let _ = Reference::parse(&s);
    }

    #[test]
    fn reference_alphabet_soup_never_panics(
        s in proptest::collection::vec(
            prop_oneof![Just(':'), Just('/'), Just('@'), Just('['), Just(']'), Just('.'),
                        Just('-'), Just('_'), Just('a'), Just('A'), Just('0'), Just('s'),
                        Just('h'), Just('2'), Just('5'), Just('6')],
            0..80,
        ).prop_map(|v| v.into_iter().collect::<String>())
    ) {
        if let Ok(r) = Reference::parse(&s) {
            // Whatever parses, prints to something that parses to the same thing.
            prop_assert_eq!(Reference::parse(&r.to_string()), Ok(r.clone()));
        }
    }

    #[test]
    fn valid_references_round_trip(s in valid_reference()) {
        let r = Reference::parse(&s).map_err(|e| TestCaseError::fail(format!("{s}: {e}")))?;
        prop_assert_eq!(Reference::parse(&r.to_string()), Ok(r.clone()));
        prop_assert_eq!(Reference::parse(&r.familiar()), Ok(r.clone()));
        prop_assert!(r.tag().is_some() || r.digest().is_some());
    }
}
