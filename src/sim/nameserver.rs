//! A simulated nameserver: authoritative DNS over UDP/TCP and the PowerDNS HTTP API shape (being written).
