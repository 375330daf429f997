//! The record list of a customer on someone else's DNS is built from their zone on the source
//! server (WHM `parse_dns_zone`), each name looked up through public DNS: a name of their own
//! (`shop`) at the old server is listed and waited for, one at a CDN (`portal`) is not; an MX
//! whose host lies outside the domain and resolves to the old server is listed as an MX change
//! to the new server's name, and waited for.

use std::time::Duration;

use siirto::demo::{SOURCE_IP, TARGET_IP};
use siirto::dns::{DnsProvider, Rrset, RrsetChange};
use siirto::domain::DomainState;

use crate::support::rig::{Daemon, Elsewhere, Mail, RigOptions, SimRig};
use crate::support::smtp::SmtpServer;

fn awaiting<'s>(
    status: &'s siirto::status::MigrationStatus,
    domain: &str,
) -> &'s siirto::status::DomainStatus {
    status.accounts.iter().flat_map(|a| &a.domains).find(|d| d.domain == domain).expect("domain in status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_from_the_source_zone_and_an_mx_at_the_old_server_are_listed_and_waited_for() {
    let smtp = SmtpServer::start();
    let mut options = RigOptions::new("it-ext-records", 3);
    options.zones_elsewhere.insert(0, Elsewhere::TheirDns);
    options.public_dns = true;
    options.mail = Mail::Smtp(smtp.addr);
    // The customer added `shop` and `portal` to their zone on the old server.
    options.source.accounts[0].extra_hosts = vec!["shop".into(), "portal".into()];
    let rig = SimRig::start(options).await;
    let external = rig.hosts.accounts[0].clone();
    let domain = external.domain.clone();
    let apex = domain.fqdn();
    let (shop, portal) = (format!("shop.{apex}"), format!("portal.{apex}"));
    // Their MX's second host is another name at the old server, outside the domain.
    let other_mail = format!("mail.{}", rig.domain(1).fqdn());
    let rrset = |name: &str, rtype: &str, value: &str| {
        RrsetChange::Replace(Rrset {
            name: name.to_owned(),
            rtype: rtype.into(),
            ttl: 300,
            records: vec![value.to_owned()],
        })
    };
    let old = SOURCE_IP.to_string();
    let their_dns = rig.their_dns();
    their_dns
        .apply(
            &domain,
            &[
                rrset(&shop, "A", &old),
                rrset(&portal, "A", "203.0.113.80"),
                RrsetChange::Replace(Rrset {
                    name: apex.clone(),
                    rtype: "MX".into(),
                    ttl: 300,
                    records: vec![format!("10 mail.{apex}"), format!("20 {other_mail}")],
                }),
            ],
        )
        .await
        .unwrap();

    let text = include_str!("../../playbooks/demo.toml")
        .replace("external_poll_interval = \"2s\"", "external_poll_interval = \"200ms\"");
    rig.plan(&text).await;
    // The plan recorded what it saw: shop at the old server, not portal; the MX to change.
    let status = rig.status().await;
    let rows = rig.store.domains_of(rig.id.as_str(), external.user.as_str()).await.unwrap();
    let state = siirto::store::domain_state(&rows[0]).unwrap();
    let DomainState::External { seen, .. } = state else { panic!("external: {status:#?}") };
    let seen: Vec<(String, String, String)> =
        seen.iter().map(|r| (r.name.clone(), r.rtype.clone(), r.value.clone())).collect();
    assert!(seen.contains(&(shop.clone(), "A".into(), old.clone())), "{seen:?}");
    assert!(!seen.iter().any(|(name, ..)| *name == portal), "portal is at a CDN: {seen:?}");
    assert!(seen.contains(&(apex.clone(), "MX".into(), format!("20 {other_mail}"))), "{seen:?}");

    rig.approve().await;
    assert!(rig.start_migration().await.started.is_some());
    let daemon = Daemon::start(rig.engine("ext-records", 4));
    let status = rig
        .wait_for("the external domain to await its customer", Duration::from_secs(180), |s| {
            awaiting(s, domain.as_str()).state == "awaiting_customer"
        })
        .await;
    let target_name = rig.config.hosts["new"].hostname.clone().expect("the target's public name");
    let new_mx = format!("20 {target_name}.");
    let changes: Vec<(String, String, String, String)> = awaiting(&status, domain.as_str())
        .records_to_change
        .iter()
        .map(|r| (r.name.clone(), r.rtype.clone(), r.old_value.clone(), r.new_value.clone()))
        .collect();
    let target = TARGET_IP.to_string();
    assert!(changes.contains(&(shop.clone(), "A".into(), old.clone(), target.clone())), "{changes:?}");
    assert!(
        changes.contains(&(apex.clone(), "MX".into(), format!("20 {other_mail}"), new_mx.clone())),
        "{changes:?}"
    );
    assert!(!changes.iter().any(|(name, ..)| *name == portal), "{changes:?}");

    // The completion notice lists both, with their exact new values.
    let completion = smtp
        .wait_for_message(
            &format!("<completion.{}.{}@siirto>", external.user, rig.id),
            Duration::from_secs(30),
        )
        .await;
    let body = completion.body.unwrap_or_default();
    assert!(body.contains(&format!("{shop} A: change {old} to {target}")), "{body}");
    assert!(body.contains(&format!("{apex} MX: change 20 {other_mail} to {new_mx}")), "{body}");
    assert!(!body.contains(&portal), "{body}");

    // The customer changes every A record: still waiting, for the MX.
    let a_changes: Vec<RrsetChange> = changes
        .iter()
        .filter(|(_, rtype, ..)| rtype == "A")
        .map(|(name, ..)| rrset(name, "A", &target))
        .collect();
    their_dns.apply(&domain, &a_changes).await.unwrap();
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(awaiting(&rig.status().await, domain.as_str()).state, "awaiting_customer", "the MX");
    // Then the MX: propagated.
    their_dns
        .apply(
            &domain,
            &[RrsetChange::Replace(Rrset {
                name: apex.clone(),
                rtype: "MX".into(),
                ttl: 300,
                records: vec![format!("10 mail.{apex}"), new_mx.clone()],
            })],
        )
        .await
        .unwrap();
    rig.wait_for("propagation", Duration::from_secs(60), |s| {
        awaiting(s, domain.as_str()).state == "propagated"
    })
    .await;
    daemon.stop().await;
}
