//! siirto (code map written at integration)

pub mod cli;
pub mod config;
pub mod demo;
pub mod dns;
pub mod domain;
pub mod engine;
pub mod names;
pub mod notify;
pub mod output;
pub mod playbook;
pub mod secret;
pub mod sim;
pub mod ssh;
pub mod store;
pub mod whm;
