//! Autostop and the open enums.

use hangar_api_types::*;
use serde_json::{Value, json};

#[test]
fn autostop_reads_every_form() {
    let cases: &[(Value, Autostop)] = &[
        (json!(false), Autostop::Off),
        (json!(true), Autostop::Stop),
        (json!("off"), Autostop::Off),
        (json!("stop"), Autostop::Stop),
        (json!("suspend"), Autostop::Suspend),
        (json!("false"), Autostop::Off),
        (json!("true"), Autostop::Stop),
    ];
    for (input, want) in cases {
        let got: Autostop =
            serde_json::from_value(input.clone()).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(got, *want, "{input}");
    }
}

#[test]
fn autostop_writes_bool_bool_string() {
    assert_eq!(
        serde_json::to_string(&Autostop::Off).ok().as_deref(),
        Some("false")
    );
    assert_eq!(
        serde_json::to_string(&Autostop::Stop).ok().as_deref(),
        Some("true")
    );
    assert_eq!(
        serde_json::to_string(&Autostop::Suspend).ok().as_deref(),
        Some("\"suspend\"")
    );
}

#[test]
fn autostop_rejects_other_values() {
    for bad in [
        json!("sometimes"),
        json!(1),
        json!(null),
        json!([]),
        json!("Suspend"),
    ] {
        let err = serde_json::from_value::<Autostop>(bad.clone()).expect_err("must fail");
        let text = err.to_string();
        assert!(
            text.contains("autostop") || text.contains("boolean or one of"),
            "{bad}: {text}"
        );
    }
    // Inside a service, `null` just means unset.
    let svc: MachineService =
        serde_json::from_value(json!({"protocol": "tcp", "internal_port": 80, "autostop": null}))
            .expect("null autostop");
    assert_eq!(svc.autostop, None);
}

#[test]
fn autostop_text_forms() {
    for (text, want) in [
        ("off", Autostop::Off),
        ("false", Autostop::Off),
        ("stop", Autostop::Stop),
        ("true", Autostop::Stop),
        ("suspend", Autostop::Suspend),
    ] {
        assert_eq!(text.parse::<Autostop>(), Ok(want));
    }
    assert_eq!(Autostop::Off.as_str(), "off");
    assert_eq!(Autostop::Stop.as_str(), "stop");
    assert_eq!(Autostop::Suspend.as_str(), "suspend");
    assert_eq!(Autostop::Suspend.to_string(), "suspend");
    assert!("maybe".parse::<Autostop>().is_err());
    assert_eq!(Autostop::default(), Autostop::Off);
    assert_eq!(Autostop::from(true), Autostop::Stop);
    assert!(!Autostop::Off.is_enabled());
}

#[test]
fn open_enums_keep_unknown_values() {
    let state: MachineState = serde_json::from_value(json!("hibernating")).expect("open");
    assert_eq!(state, MachineState::Unknown("hibernating".into()));
    assert!(!state.is_known());
    assert_eq!(
        serde_json::to_value(&state).ok(),
        Some(json!("hibernating"))
    );

    let m: Machine = serde_json::from_value(json!({"id": "1", "state": "hibernating"}))
        .expect("machine with unknown state");
    assert_eq!(m.state.as_str(), "hibernating");
    assert_eq!(
        serde_json::to_value(&m).expect("ser")["state"],
        json!("hibernating")
    );

    let host: HostStatus = serde_json::from_value(json!("degraded")).expect("open");
    assert_eq!(host, HostStatus::Other("degraded".into()));
    let host: HostStatus = serde_json::from_value(json!("unknown")).expect("known");
    assert_eq!(host, HostStatus::Unknown);

    let policy: RestartPolicy = serde_json::from_value(json!("whenever")).expect("open");
    assert_eq!(policy.to_string(), "whenever");
    let kind: CheckKind = "liveness".parse().expect("infallible");
    assert_eq!(kind, CheckKind::Unknown("liveness".into()));
}

#[test]
fn open_enums_known_spellings() {
    fn check<T>(pairs: &[(T, &str)])
    where
        T: serde::Serialize
            + serde::de::DeserializeOwned
            + PartialEq
            + std::fmt::Debug
            + std::fmt::Display,
    {
        for (v, s) in pairs {
            assert_eq!(serde_json::to_value(v).ok(), Some(json!(s)));
            assert_eq!(serde_json::from_value::<T>(json!(s)).ok().as_ref(), Some(v));
            assert_eq!(v.to_string(), *s);
        }
    }
    check(&[
        (MachineState::Created, "created"),
        (MachineState::Starting, "starting"),
        (MachineState::Started, "started"),
        (MachineState::Stopping, "stopping"),
        (MachineState::Stopped, "stopped"),
        (MachineState::Suspending, "suspending"),
        (MachineState::Suspended, "suspended"),
        (MachineState::Replacing, "replacing"),
        (MachineState::Restarting, "restarting"),
        (MachineState::Destroying, "destroying"),
        (MachineState::Destroyed, "destroyed"),
        (MachineState::Updating, "updating"),
        (MachineState::Replaced, "replaced"),
        (MachineState::Migrated, "migrated"),
        (MachineState::LaunchFailed, "launch_failed"),
        (MachineState::Failed, "failed"),
        (MachineState::Creating, "creating"),
    ]);
    check(&[
        (RestartPolicy::No, "no"),
        (RestartPolicy::Always, "always"),
        (RestartPolicy::OnFailure, "on-failure"),
        (RestartPolicy::SpotPrice, "spot-price"),
    ]);
    check(&[
        (ConcurrencyType::Connections, "connections"),
        (ConcurrencyType::Requests, "requests"),
    ]);
    check(&[(CheckType::Tcp, "tcp"), (CheckType::Http, "http")]);
    check(&[
        (CheckKind::Informational, "informational"),
        (CheckKind::Readiness, "readiness"),
    ]);
    check(&[
        (CheckStatus::Passing, "passing"),
        (CheckStatus::Warning, "warning"),
        (CheckStatus::Critical, "critical"),
    ]);
    check(&[
        (HostStatus::Ok, "ok"),
        (HostStatus::Unknown, "unknown"),
        (HostStatus::Unreachable, "unreachable"),
    ]);
    check(&[
        (PersistRootfs::Never, "never"),
        (PersistRootfs::Restart, "restart"),
        (PersistRootfs::Always, "always"),
    ]);
    check(&[
        (
            DependencyCondition::ExitedSuccessfully,
            "exited_successfully",
        ),
        (DependencyCondition::Healthy, "healthy"),
        (DependencyCondition::Started, "started"),
    ]);
    assert_eq!(MachineState::KNOWN.len(), 17);
    assert_eq!(MachineState::default(), MachineState::Created);
    assert_eq!(RestartPolicy::default(), RestartPolicy::No);
    assert!(MachineState::Destroyed.is_terminal());
    assert!(MachineState::Suspended.is_persistent());
    assert!(!MachineState::Starting.is_persistent());
}

#[test]
fn open_enums_reject_non_strings() {
    for bad in [json!(1), json!(true), json!(null), json!({})] {
        assert!(
            serde_json::from_value::<MachineState>(bad.clone()).is_err(),
            "{bad}"
        );
    }
}

hangar_api_types::wire_enum! {
    /// An enum defined outside the crate with the exported macro.
    pub enum Flavour {
        /// Vanilla.
        Vanilla = "vanilla",
        /// Mint.
        Mint = "mint",
    }
}

#[test]
fn wire_enum_macro_is_usable_downstream() {
    assert_eq!(Flavour::default(), Flavour::Vanilla);
    assert_eq!(Flavour::from("mint"), Flavour::Mint);
    assert_eq!(
        Flavour::from("lemon".to_owned()),
        Flavour::Unknown("lemon".into())
    );
    assert_eq!(
        serde_json::to_value(Flavour::Mint).ok(),
        Some(json!("mint"))
    );
    assert_eq!(Flavour::KNOWN, &[Flavour::Vanilla, Flavour::Mint]);
}

#[test]
fn suspend_eligibility_follows_the_reference() {
    let config = |v: serde_json::Value| -> hangar_api_types::MachineConfig {
        serde_json::from_value(v).expect("config")
    };
    let yes = [
        json!({"image": "i"}),
        json!({"image": "i", "guest": {"memory_mb": 2048}}),
        json!({"image": "i", "init": {"swap_size_mb": 0}, "schedule": ""}),
    ];
    let no = [
        json!({"image": "i", "guest": {"memory_mb": 2304}}),
        json!({"image": "i", "guest": {"gpus": 1}}),
        json!({"image": "i", "guest": {"gpu_kind": "l40s"}}),
        json!({"image": "i", "init": {"swap_size_mb": 512}}),
        json!({"image": "i", "schedule": "hourly"}),
    ];
    for v in yes {
        assert!(config(v.clone()).suspendable(), "{v}");
    }
    for v in no {
        assert!(!config(v.clone()).suspendable(), "{v}");
    }
}
