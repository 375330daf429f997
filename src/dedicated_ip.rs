//! Accounts on a dedicated IP (`crate::ops::assign_ip` gives one its target address), and
//! what the engine needs to move them: the address pair of each account and the `setsiteip`
//! that puts the restored account's sites on the assigned address (check before act).
//!
//! Such an account is planned `awaiting_target_ip` with its source address recorded in the
//! `dedicated_ips` table. The engine does not send it until an address is assigned, and then
//! only when no other account still wants a transfer or is in one (it moves last). After the
//! restore the engine calls `setsiteip`, verifies the site on the assigned address against the
//! source's dedicated one, and repoints records from the source's dedicated address to the
//! assigned one (and records at the source's shared address to the target's shared one);
//! a rollback points them back. A migration is not cut over while an account waits for its
//! address: the operator either assigns one or the account stays visibly waiting.

use std::net::Ipv4Addr;

use anyhow::anyhow;
use serde::Serialize;

use crate::names::AccountName;
use crate::store::DedicatedIpRow;
use crate::whm::{WhmClient, WhmError};

/// An account's dedicated source address and, once assigned, its target address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DedicatedIp {
    /// The account's dedicated IPv4 address at the source.
    pub source_ip: Ipv4Addr,
    /// The target address an operator assigned, if one was.
    pub target_ip: Option<Ipv4Addr>,
}

impl DedicatedIp {
    /// Parses a stored row; a bad address names the account.
    pub fn from_row(row: &DedicatedIpRow) -> anyhow::Result<DedicatedIp> {
        let parse = |field: &str, text: &str| -> anyhow::Result<Ipv4Addr> {
            text.parse().map_err(|_| {
                anyhow!("account {}: stored dedicated_ips.{field} {text:?} is not an IPv4 address", row.user)
            })
        };
        Ok(DedicatedIp {
            source_ip: parse("source_ip", &row.source_ip)?,
            target_ip: row.target_ip.as_deref().map(|ip| parse("target_ip", ip)).transpose()?,
        })
    }
}

/// What [`ensure_site_ip`] found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SiteIp {
    /// The account was on the address already (an earlier run set it).
    AlreadyThere,
    /// `setsiteip` moved it there from `from`.
    Set {
        /// The address it was on.
        from: Option<Ipv4Addr>,
    },
    /// The target does not list the account.
    NotOnTarget,
}

/// Puts a restored account's sites on `ip` on the target, unless `listaccts` shows them there
/// already (check before act: a crash after the call runs the step again). `setsiteip` is
/// documented at <https://api.docs.cpanel.net/openapi/whm/operation/setsiteip> (`user`, `ip`).
pub async fn ensure_site_ip(
    target: &WhmClient,
    user: &AccountName,
    ip: Ipv4Addr,
) -> Result<SiteIp, WhmError> {
    let listing = target.list_accounts().await?;
    let Some(account) = listing.items.iter().find(|a| &a.user == user) else {
        return Ok(SiteIp::NotOnTarget);
    };
    if account.ip == Some(ip) {
        return Ok(SiteIp::AlreadyThere);
    }
    target.set_site_ip(user, ip).await?;
    Ok(SiteIp::Set { from: account.ip })
}
