//! Public DNS on loopback, as the world sees a customer's domain: a root server delegating each
//! zone to our nameserver or to a third party's (both real pdns_server instances, at port 53 of
//! addresses of their own), and two recursive resolvers that keep answers for different times.
//!
//! Port 53 of [`ROOT_IP`], [`OURS_IP`] and [`THEIRS_IP`] can be had by one server each, and the
//! tests run as threads of one process: whoever starts servers there holds [`lock`] until they
//! are stopped (the guard is dropped after them, also when the test panics).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, LazyLock};

use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::support::bind::Bind;

/// The root server's address (named listens only on an interface's own address).
pub const ROOT_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
/// Our nameserver's address (a pdns_server at port 53).
pub const OURS_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 20);
/// The third party's nameserver's address (a pdns_server at port 53).
pub const THEIRS_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 21);
/// How long the fast resolver keeps an answer, in seconds.
pub const FAST_CACHE_SECS: u32 = 1;
/// How long the slow resolver keeps an answer, in seconds: less than the zones' TTLs (an hour,
/// five minutes once repointed), so a test sees it change, but long enough that a test sees
/// it answer the old records well after the fast one answers the new.
pub const SLOW_CACHE_SECS: u32 = 5;

/// Who may use port 53 of the addresses above.
static PUBLIC_DNS: LazyLock<Arc<Mutex<()>>> = LazyLock::new(|| Arc::new(Mutex::new(())));

/// Waits until no other test runs servers on the addresses above, and keeps them for the
/// caller until the guard is dropped: drop it after the servers.
pub async fn lock() -> OwnedMutexGuard<()> {
    Arc::clone(&PUBLIC_DNS).lock_owned().await
}

/// A nameserver the root delegates zones to: its name, which the zones' NS records carry, and
/// its address (the root's glue).
pub struct Nameserver<'a> {
    /// Fully qualified, e.g. `ns1.siirto-demo.test.`.
    pub name: &'a str,
    pub ip: Ipv4Addr,
}

/// The root and the two resolvers that ask it; stopped on drop. Start the nameservers it
/// delegates to at port 53 of their address, and hold [`lock`] meanwhile.
pub struct Resolvers {
    /// Keeps answers [`FAST_CACHE_SECS`].
    pub fast: Bind,
    /// Keeps answers [`SLOW_CACHE_SECS`].
    pub slow: Bind,
    pub root: Bind,
}

impl Resolvers {
    /// Starts the root at [`ROOT_IP`] with `delegations` (each zone, without the trailing dot,
    /// and the nameserver serving it), then the resolvers.
    pub async fn start(delegations: &[(String, &Nameserver<'_>)]) -> Resolvers {
        let mut records = String::new();
        let mut glue: Vec<String> = Vec::new();
        for (zone, ns) in delegations {
            records.push_str(&format!("{zone}. NS {}\n", ns.name));
            let line = format!("{} A {}\n", ns.name, ns.ip);
            if !glue.contains(&line) {
                glue.push(line);
            }
        }
        records.extend(glue);
        let root = Bind::start_root(ROOT_IP, &records).await;
        let (fast, slow) = tokio::join!(
            Bind::start_recursive_caching(ROOT_IP, Some(FAST_CACHE_SECS)),
            Bind::start_recursive_caching(ROOT_IP, Some(SLOW_CACHE_SECS)),
        );
        Resolvers { fast, slow, root }
    }

    /// The fast resolver's address, then the slow one's.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        vec![self.fast.dns_addr, self.slow.dns_addr]
    }

    /// The three named's logs, for a failing test's message.
    pub fn logs(&self) -> String {
        format!(
            "root:\n{}\nfast resolver:\n{}\nslow resolver:\n{}",
            self.root.log(),
            self.fast.log(),
            self.slow.log()
        )
    }
}
