//! Test harness: starts and stops real servers on loopback.
pub mod bind;
pub mod chromium;
pub mod daemon;
pub mod pdns;
pub mod pg;
pub mod public_dns;
pub mod rig;
pub mod slow_api;
pub mod smtp;
pub mod sshd;
pub mod webhook;
