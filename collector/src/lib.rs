//! telemetry-collector: collects sensor readings from serial ports and MQTT brokers, makes
//! them durable in a local journal, and writes them to time-series stores without losing any.
//!
//! ```text
//! serial port     ─┐
//! serial port     ─┤                                    ┌─> local store sink (SQLite)
//! MQTT connection ─┼─> bounded channel ─> journal ──────┤   each sink: own cursor, batch,
//! MQTT connection ─┘                        │           └─> ...     write, retry, advance
//!        ^                                  │
//!        └──────── PUBACK once on disk ─────┘
//! ```
//!
//! # Layout
//! - [`config`]: the TOML file as written, environment overrides, validation into
//!   [`Settings`](config::Settings) with every problem reported at once. A leaf: it imports
//!   no component, only [`reading`], [`payload`] and [`topic`].
//! - [`topic`]: MQTT topic templates (what a subscription reads tags from) and patterns
//!   (where the MQTT sink publishes a reading).
//! - [`mqtt`]: MQTT client connections (3.1.1 or 5) behind one interface, for the MQTT
//!   source and the MQTT sink.
//! - [`tls`]: the one rustls client configuration of every remote (brokers, InfluxDB).
//! - [`sources`]: where readings come from ([`sources::mqtt`], [`sources::serial`],
//!   [`sources::modbus`]); each source sends [`Envelope`](channel::Envelope)s into the
//!   [`channel`].
//! - [`channel`]: the one bounded channel between the sources and the journal (room
//!   counted in messages, backpressure, acks once durable).
//! - [`report`]: report by exception (deadband, on change, heartbeat), for any source.
//! - [`payload`]: parsers for JSON, line protocol and bare values, with counted rejections.
//! - [`reading`]: the [`Reading`](reading::Reading) type, its journal encoding, and the
//!   [`Precision`](reading::Precision) timestamps are written in.
//! - [`journal`]: the durable log every reading passes through (group commit, ack after
//!   sync, bounded in bytes), read by each sink from its own cursor; it takes its input
//!   from the [`channel`]'s outlet.
//! - [`batcher`]: when a sink writes (size, age of the first reading, end of input).
//! - [`sinks`]: destinations (the local store, InfluxDB, an MQTT broker), and the runner
//!   that feeds each one from the journal with retries.
//! - [`store`]: the embedded local store (one SQLite file of compressed chunks), a component
//!   of its own: the local sink writes it, `query` and the dashboard read it.
//! - [`pipeline`]: the wiring, the reconcile of sources and sinks on reload, and the
//!   orderly shutdown.
//! - [`metrics`]: counters of everything received, written, rejected and dropped; `events`:
//!   what the sources and sinks log and count together.
//! - [`http`]: the local port with Prometheus `/metrics` and `/health`, and the dashboard.
//! - [`dashboard`]: the read-only web page over the local store, and its JSON query API.
//! - [`service`]: systemd notifications (readiness, status, a progress-gated watchdog).
//! - [`backoff`]: capped, jittered exponential backoff for reconnects and retries.
//! - [`doctor`]: checks every configured broker and store, writing no readings.
//! - [`task`]: joining blocking work without mistaking a runtime shutdown for a panic.
//! - [`time`], [`sync`], [`error`]: the small helpers every layer uses (nanoseconds since the
//!   epoch, a lock that survives a panicked holder, an error printed with its causes).
//! - [`time`], [`sync`], [`error`]: the small helpers every layer uses (nanoseconds since the
//!   epoch, a lock that survives a panicked holder, an error printed with its causes).
//! - [`cli`]: the `telemetry-collector` command line, and its `query` command.

pub mod backoff;
pub mod batcher;
pub mod channel;
pub mod cli;
pub mod config;
pub mod dashboard;
pub mod doctor;
pub mod error;
mod events;
pub mod http;
pub mod journal;
pub mod metrics;
pub mod mqtt;
#[cfg(test)]
mod mutate;
pub mod payload;
pub mod pipeline;
pub mod reading;
pub mod report;
pub mod service;
pub mod sinks;
pub mod sources;
pub mod store;
pub mod sync;
pub mod task;
pub mod time;
pub mod tls;
pub mod topic;

pub use pipeline::run;
