//! siirto moves a webhosting company's customers from an old cPanel server to a new one —
//! inventory, TTL lowering, account transfers, per-domain DNS cutover, customer notices — and
//! then retires the old server in stages. This is its library; `src/main.rs` is a thin binary
//! over [`cli::run`].
//!
//! # Bird's-eye view
//!
//! A **migration** (one source host → one target host, under a **playbook**) owns accounts,
//! and accounts own domains. Each has a state machine in [`domain`]. The daemon ([`engine`])
//! reconciles what the [`store`] says: it claims due **jobs** under a row lease, asks the pure
//! core what an event does, performs the effect through an adapter ([`whm`], [`dns`],
//! [`notify`], [`ssh`]) and records the outcome, the new state, the event log entry and the
//! follow-up jobs in one transaction. The CLI ([`cli`]) plans ([`plan`]), acts ([`ops`])
//! and reports ([`status`]) on the same store. [`sim`] is a simulated cPanel host and
//! nameserver for the demo ([`demo`]) and the tests.
//!
//! # Code map
//!
//! - [`names`] — validated names from remote hosts: `AccountName`, `DomainName`, `MigrationId`.
//!   Every user or domain a WHM answer carries is parsed here before it reaches a path, URL,
//!   command or zone.
//! - [`secret`] — `Secret`, whose `Debug`/`Display` redact; the only way to read it is `expose()`.
//! - [`metrics`] — the Prometheus metrics (prometheus-client): the process-wide families the
//!   engine feeds (step durations by job kind and outcome, adapter errors by adapter and class)
//!   and `StoreGauges`, what the store counts at each scrape (`Store::gauges`), rendered together
//!   as OpenMetrics text for `GET /metrics`.
//! - [`domain`] — the pure core: migration, account and domain states, events and transition
//!   functions taking `now`. The invariants of DESIGN.md §3 are enforced here.
//! - [`store`] — sqlx over SQLite (embedded default) or PostgreSQL (several daemons), one `Any`
//!   pool, migrations in `migrations/{sqlite,postgres}`. `store/audit.rs` is the event log's
//!   hash chain (each event chained when its transaction commits; `siirto audit verify`),
//!   `store/decommission.rs` the decommission stages and what each did to each account.
//!   `store/rows.rs` holds the rows,
//!   `store/lease.rs` the leases (`Lease`: the proof of exclusivity that effectful steps take, on
//!   the database's clock, renewed while a step runs) and an account's DNS lock (held by one
//!   leased job as long as its lease, so its repoint, rollback and TTL restore never interleave).
//! - [`playbook`], [`config`] — TOML parsed once into validated types; errors carry file, line,
//!   column, field and what was expected. `config` also owns the settings types the adapters
//!   take (contract source, WHM TLS policy, SMTP security).
//! - The adapters, each named after what it talks to: [`whm`] — WHM API 1 client (reqwest, TLS
//!   verified or pinned). [`dns`] — the DNS provider trait with two implementations (PowerDNS
//!   over its HTTP API, zones optionally read by AXFR from its DNS port; RFC 2136 dynamic
//!   updates signed with TSIG, zones read by AXFR), the authoritative checker (queries built with
//!   hickory-proto and sent to each of our nameservers, so no cache stands between us and the
//!   answer), classification through resolvers (hickory-resolver, cache off), and `dns::rewrite`,
//!   the pure record rewriting (which records move, what they become, what a rollback writes,
//!   the safety threshold). [`notify`] — templates and channels (SMTP through lettre, text and
//!   HTML parts, a VERP return path; a JSON webhook signed with HMAC-SHA256; a directory
//!   outbox) and `notify::bounce`, delivery-status notifications read with mail-parser. [`ssh`] — russh with pinned host
//!   keys and quoted remote commands.
//!   [`contracts`] — contract sources (CSV, HTTP JSON; read-only) and the pure reconciliation.
//!   [`licence`] — the old server's cPanel licence: the provider trait with two implementations
//!   (cPanel's Manage2 API over HTTPS with Basic authentication: look up by IP, reactivation
//!   dry run, expire, reactivate; a JSON webhook signed like the notice webhook).
//!   [`site_check`] — a site fetched by address over HTTP and HTTPS (certificate not verified,
//!   by a client used for nothing else), status and title. [`inventory`] — the read-only
//!   inventory of one host and the checks of a target against it. [`sim`] — the simulated cPanel
//!   host (WHM API 1 JSON, real files, Host-header web serving, failures on demand) and a
//!   simulated nameserver speaking DNS and the PowerDNS API shape; `sim::setup` writes the config,
//!   secret files (0600) and playbook that point siirto at simulated hosts, for the demo and
//!   `siirto sim --write-config`.
//! - What siirto does on the hosts, composed from the adapters for the steps and the actions:
//!   [`world`] — the adapters a config names (`World`: hosts, DNS provider and checker, channel,
//!   public resolvers), built once. [`mailsync`] — mail routing switched at the repoint, the
//!   final delta sync (both sides' Maildirs listed over pinned russh sessions, exactly the
//!   messages new on the source and absent from the target's mailbox by unique name copied by
//!   rsync run on the target), and the evidence from the source's exim main log. [`transfer_control`] — telling a transfer session to pause,
//!   resume or abort; the packages a session sends first; whether an account, its domains and
//!   mailboxes exist on the target. [`dedicated_ip`] — the addresses of an account on a
//!   dedicated IP and the `setsiteip` that puts it on its assigned one. [`preflight`] — the
//!   checks before the first account moves (the target logs in to the source, SSH with pinned
//!   host keys, the mail sync's ssh hop, the DNS provider, clashes and free disk on the target).
//!   [`decommission`] — retiring the old server, on the hosts: the DNS gate (public DNS still
//!   sending an account's domain to the old server, with the evidence), the traffic gate (its
//!   web access logs and exim main log read over SSH), the account actions checked before they
//!   act (suspend, unsuspend, remove), the power-off over SSH, and which accounts a stage takes.
//! - [`engine`] — the daemon. `engine/mod.rs` is the reconcile loop only: claim due jobs under a
//!   lease, dispatch on `JobKind`, record the outcome, retry with backoff and jitter, hold an
//!   account past its budget (the rest of the migration goes on). `engine/jobs.rs` holds
//!   `JobKind` and the payloads; `engine/failure.rs` the bounded labels of a failed step's error for
//!   the metrics; `engine/context.rs` what every step shares (the store, the
//!   world, the clock, the recording helpers); `engine/steps/` one file per step family
//!   (`lower`, `transfer`, `verify`, `repoint`, `restore`, `rollback`, `notices`, `external`,
//!   `mail`, `settle`; `announce`: the notices to customers, one per customer — advance, start,
//!   completion, resellers' roll-ups, a reschedule's corrections; `staff`: customer service's
//!   briefing and the operators' held notices; `bounces`: the bounce Maildir, read by the
//!   daemon's loop; `decommission`: the old server's stages, recorded at the cutover and run at
//!   their dates, in order, once — account stages behind their gates, the licence through its
//!   provider, the power-off after a last check, manual stages as tasks with reminders), each a
//!   set of functions taking the context, the job and the `&Lease`.
//! - [`ops`] — one door per operator action: approve, pre-flight, start, pause, resume, abort,
//!   reschedule, retry, rollback, assign-ip, acknowledge a task (two different people for the
//!   disks), and the decommission's preview, postpone, skip, undo and exclude; each takes the store, the adapters it needs, the
//!   actor and `now`, and returns a typed outcome. The CLI calls only these and read-only queries; the
//!   status page will call the same ones.
//! - [`plan`] — the reviewable plan: inventory of the source, classification of every domain's
//!   DNS and mail, contract reconciliation, a decision and reasons per account and domain, the
//!   dated schedule, what changed since the last plan of the same source; it records the
//!   migration (its JSON schema is the module doc). [`status`] — where things stand, the
//!   event log in words (`siirto log`; each state machine's event describes itself in [`domain`])
//!   and what each notice became (`siirto notices list`), `status::Progress` and
//!   `status::overview`, how far a migration is (read from its counts by state), and
//!   `status::timeline`, one customer's accounts, next steps, records to change and notices.
//!   [`search`] — customer service's search over every migration: a query (domain, `www.` or
//!   sub-name, IDN, user, customer name word, contact address, contract id, reseller) becomes a
//!   few exact or prefix probes of the store's search terms, written with the accounts and
//!   domains, so every lookup is an indexed range.
//! - [`cli`], [`output`], [`demo`] — the command line, everything it prints, and `siirto demo`.
//!   [`watch`] — `siirto watch`: the progress live (indicatif bars in a terminal, a line per
//!   change otherwise) until the migration settles.
//!   [`daemon`] — `siirto daemon`: the owner name's lock file, its jobs taken back at a restart,
//!   the engine and the status page until SIGTERM or SIGINT, a graceful stop.
//!   [`web`] — the status page, the JSON API (`/api/v1/`, its OpenAPI document generated by
//!   utoipa), `/metrics`, `/healthz` and `/readyz`, served by the daemon on `listen`: the route
//!   table with one guard in front of every route (tokens and roles, sessions, CSRF), the pages
//!   (minijinja, Finnish and English), the live feed (server-sent events resumed with
//!   `Last-Event-ID`), and the operator actions, through the same [`ops`] as the CLI.
//!
//! # Layers, from the ground up
//!
//! A module imports only from its own layer and those below; `tests/it/layers.rs` reads this
//! list and fails on an import from a higher layer, on a loop between top-level modules, and on a
//! module in no layer.
//!
//! 1. `names`, `secret`, `metrics`
//! 2. `domain`
//! 3. `store`
//! 4. `config`, `playbook`
//! 5. `whm`, `dns`, `notify`, `ssh`, `contracts`, `site_check`, `inventory`, `licence`, `sim`
//! 6. `world`, `mailsync`, `transfer_control`, `dedicated_ip`, `preflight`, `decommission`
//! 7. `engine::jobs`, `engine::context`, `engine::steps`
//! 8. `engine`
//! 9. `ops`
//! 10. `plan`, `status`, `search`
//! 11. `cli`, `daemon`, `output`, `demo`, `watch`, `web`
//!
//! # Architecture invariants
//!
//! - The domain core does no I/O: `domain` imports no tokio, sqlx, reqwest, russh, hickory or
//!   axum, and never reads a clock; time is a parameter.
//! - The database is the truth. The engine keeps no state between jobs that the store does not
//!   also hold (caches of parsed playbooks excepted), so a killed daemon loses nothing and a
//!   second daemon on the same PostgreSQL database splits the work.
//! - Every effect checks before it acts, because a crash between "did it" and "recorded it"
//!   runs the job again: TTLs are observed and recorded before they are lowered (a second
//!   observation changes and logs nothing), records already at the target are not patched, a
//!   sent notice is not sent again.
//! - **A step acts only under a live lease.** A claim writes a random token and an expiry on the
//!   database's clock (never a daemon's, so clock skew between hosts cannot give one job to two
//!   daemons); the holder renews it every third of its length while the step runs, and checks it
//!   ([`store::Lease::check`]) right before every external effect: each DNS write, WHM call,
//!   rsync and SMTP hand-over. The check passes only while at least a quarter of the lease is
//!   left on the holder's monotonic clock, counted from when it sent its last successful claim
//!   or renewal, so no other daemon can have been given the job when the effect starts. A lease
//!   found lost cancels the step and counts as a failed attempt (a per-account step past the
//!   playbook's budget holds its account); "taken over by daemon X" is said only when X took it.
//!   A stopping daemon (SIGTERM, SIGINT) claims nothing more, lets its steps finish within
//!   `daemon.stop_timeout`, then cancels the rest and releases their jobs; a daemon restarted
//!   under the same owner name (one per host, by lock file) takes back that name's jobs at once.
//! - **Notices: each one is delivered once, except in one window of milliseconds.** A worker
//!   sending notices takes up to 128 due send jobs of one migration at once (each under its own
//!   lease) and sends them over one session, in the order they were written. It first commits
//!   their attempts (`outbox.delivery_started_at`, one transaction), then checks each job's
//!   lease right before its message and hands it over; as soon as the server answers 250 to a
//!   message its sent-mark joins the daemon's group commit, which commits it with the job's
//!   completion within a few milliseconds (at most 5 ms of waiting for others to share the
//!   write, then the commit), while the next message goes out — never after a QUIT or anything
//!   from the server (without the lease, alone, if the lease was lost meanwhile: the fact
//!   stands). On recovery a notice is sent again only when its sent-mark is missing; if an
//!   earlier attempt's end was never recorded, the new attempt is a resend (`outbox.resends`,
//!   event `notice_resent`) with the same Message-ID. So a second copy reaches a customer only
//!   when the daemon dies (or the database fails) between the server's 250 and that commit, a
//!   window of milliseconds; a slow QUIT, a slow server, a SIGTERM or a lost lease never cause
//!   one. `tests/it/crash.rs` counts this at a real SMTP server under random kills.
//! - A domain is repointed only after its account is verified on the target and its TTL gate
//!   has opened; a completion notice is one outbox row (unique dedupe key).
//! - With the playbook's final mail sync on, an account is done only after a delta sync whose
//!   following mail-log check shows nothing delivered on the source since it began.
//! - Changes to one zone are one PATCH and never concurrent; zone writes are bounded per DNS
//!   server. The DNS steps of one account (repoint, rollback, TTL restore, verification) plan
//!   from states read under the account's DNS lock and hold it through their write, so a
//!   rollback is never overwritten by a repoint in flight, on one daemon or several.
//! - Secrets never reach logs, events, errors or output: they live in `Secret`, and adapter
//!   calls are instrumented with `skip_all`.
//! - Only `output` writes to stdout.
//!
//! # Cross-cutting concerns
//!
//! - **Errors**: `anyhow` with context in the engine, CLI and wiring; `thiserror` enums at the
//!   adapter boundaries with `is_transient()`, which decides retry or hold.
//! - **Testing**: one integration binary (`tests/it`) against real servers on loopback
//!   (pdns_server, aiosmtpd, sshd, PostgreSQL, BIND), the real daemon in-process or as a child
//!   process killed and stopped at random (`crash.rs`), the simulated cPanel hosts as the one
//!   stand-in; table-driven unit tests for the pure core and the parsers; `layers.rs` checks the
//!   layers above. Tests that drive the engine against simulated hosts start them through one
//!   rig (`tests/it/support/rig.rs`, `SimRig` and its `RigOptions`); the benchmarks under
//!   `examples/` start pdns_server through the tests' own harness (`tests/it/support/pdns.rs`).
//! - **Observability**: `tracing` spans per job with migration, kind and subject as fields.
//! - **Persistence**: timestamps are unix milliseconds; states are stored as a name plus the
//!   JSON of the whole state value.

pub mod cli;
pub mod config;
pub mod contracts;
pub mod daemon;
pub mod decommission;
pub mod dedicated_ip;
pub mod demo;
pub mod dns;
pub mod domain;
pub mod engine;
pub mod inventory;
pub mod licence;
pub mod mailsync;
pub mod metrics;
pub mod names;
pub mod notify;
pub mod ops;
pub mod output;
pub mod plan;
pub mod playbook;
pub mod preflight;
pub mod search;
pub mod secret;
pub mod sim;
pub mod site_check;
pub mod ssh;
pub mod status;
pub mod store;
pub mod transfer_control;
pub mod watch;
pub mod web;
pub mod whm;
pub mod world;
