//! telemetry-simulator: deterministic fake sensor devices for exercising telemetry-collector
//! without hardware. Same seed, same readings, byte for byte; so a test knows exactly what a
//! collector must store, and what it must reject.
//!
//! # Layout
//! - [`model`]: value models (temperature, humidity, pressure, a counter) and the tiny PRNG
//!   they draw from; pure functions of (seed, device, sample).
//! - [`fleet`]: devices, their messages in time order, payload formats (JSON, line protocol,
//!   bare values), fault injection, and the readings each message should produce. Independent
//!   of the transport.
//! - [`mqtt`]: publishes messages over several MQTT connections, paced, surviving broker
//!   restarts, and reports which ones the broker acknowledged.
//! - [`serial`]: serial devices on pseudo-terminals behind stable links, paced at their baud
//!   rate, streaming or answering commands, with bad lines and unplugs on demand.
//! - [`modbus`]: Modbus RTU slaves on a pty (several units on one bus) and Modbus TCP
//!   servers, over the same value models, with faults, unplugs and restarts on demand.
//! - [`blast`]: the benchmark's yardstick: a publisher that writes pre-encoded PUBLISH
//!   packets as fast as the broker takes them, and a subscriber that discards.
//! - [`broker`]: an in-process MQTT broker (rumqttd) for self-contained demos and tests.
//! - [`manifest`]: a JSON-lines record of what was sent, for tests to check against.
//! - [`cli`]: the `telemetry-simulator` command line.

pub mod blast;
pub mod broker;
pub mod cli;
pub mod fleet;
pub mod manifest;
pub mod modbus;
pub mod model;
pub mod mqtt;
pub mod serial;

pub use broker::{Broker, BrokerHandle};
pub use fleet::{
    ExpectedReading, ExpectedValue, Fault, FaultConfig, FaultKind, Fleet, FleetConfig, Message,
    PayloadFormat,
};
pub use manifest::{read_manifest, write_manifest, ManifestEntry};
pub use mqtt::{publish, publish_stream, PublishConfig, PublishReport};
