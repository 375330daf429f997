//! One integration test binary: real servers on loopback, the real daemon in-process.
mod classify;
mod cli;
mod contracts;
mod dns;
mod dns_cutover;
mod e2e;
mod external_dns;
mod inventory;
mod notify;
mod plan;
mod rfc2136;
mod sim;
mod sim_mail;
mod ssh;
mod store;
mod support;
mod whm;
