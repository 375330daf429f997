//! Test harness: starts and stops real servers on loopback.
pub mod pdns;
pub mod pg;
pub mod smtp;
pub mod sshd;
