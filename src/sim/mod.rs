//! The simulated cPanel host (`sim`): the one stand-in in the system.

pub mod nameserver;
