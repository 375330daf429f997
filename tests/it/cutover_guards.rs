//! The cutover's guards against real nameservers: an rrset bigger than BIND's
//! max-records-per-type is refused as permanent (real BIND).

use siirto::dns::{DnsError, DnsProvider, Rfc2136, Rrset, RrsetChange, TsigAlgorithm};
use siirto::names::DomainName;

use crate::support::bind::{Bind, ZoneFile};

/// BIND with `max-records-per-type 5`: an update making an rrset of 6 SERVFAILs there. The
/// provider, told the same limit, refuses such a batch before sending it with a permanent
/// error naming zone, name, type and count, and the zone stays as it was; a batch at the limit
/// is applied. A provider with a higher limit than the server's sends it and gets BIND's
/// SERVFAIL, whose message points at the rrset and the setting.
#[tokio::test]
async fn an_rrset_over_the_servers_limit_is_refused_as_permanent() {
    let zone_text = "@ NS ns1\nns1 A 127.0.0.1\nwww A 192.0.2.10\n";
    let bind = Bind::start_with_options(
        &[ZoneFile { name: "big.test", records: zone_text }],
        TsigAlgorithm::HmacSha256,
        "max-records-per-type 5;",
    )
    .await;
    let zone = DomainName::parse("big.test").unwrap();
    let provider = |max: usize| {
        Rfc2136::new(bind.dns_addr, bind.key.clone(), vec![zone.clone()])
            .unwrap()
            .with_max_records_per_type(max)
    };
    let www = |count: u8| {
        vec![RrsetChange::Replace(Rrset {
            name: "www.big.test.".into(),
            rtype: "A".into(),
            ttl: 60,
            records: (1..=count).map(|i| format!("192.0.2.{i}")).collect(),
        })]
    };
    let before = provider(5).zone(&zone).await.unwrap();

    let err = provider(5).apply(&zone, &www(6)).await.unwrap_err();
    assert!(matches!(err, DnsError::TooManyRecords { count: 6, max: 5, .. }), "{err:?}");
    assert!(!err.is_transient(), "retrying cannot help");
    let text = err.to_string();
    for part in ["zone big.test", "www.big.test. A", "6 records", "limit of 5", "max_records_per_type"] {
        assert!(text.contains(part), "{part:?} missing in {text}");
    }
    assert_eq!(provider(5).zone(&zone).await.unwrap(), before, "nothing was sent");

    // The server really has this limit: past it, BIND itself fails the update with SERVFAIL
    // (transient by its code, so the message must say what to check).
    let err = provider(100).apply(&zone, &www(6)).await.unwrap_err();
    assert!(matches!(&err, DnsError::Rcode { rcode, .. } if rcode.starts_with("SERVFAIL")), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("www.big.test. A") && text.contains("max_records_per_type"), "{text}");
    assert_eq!(provider(5).zone(&zone).await.unwrap(), before, "BIND applied none of it");

    // At the limit: applied.
    provider(5).apply(&zone, &www(5)).await.unwrap();
    let after = provider(5).zone(&zone).await.unwrap();
    assert_eq!(after.rrset("www.big.test.", "A").unwrap().records.len(), 5);
}
