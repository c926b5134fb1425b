//! End-to-end tests: the simulator plays the devices, a real Mosquitto carries the messages,
//! the collector runs for real (in-process, or as a process where it must be killed), and
//! the local store must hold exactly what the simulator sent.

#![allow(clippy::unwrap_used)]
// The helpers are `pub` for the test modules; nothing here is a published API.
#![allow(unreachable_pub)]

mod config_files;
mod dashboard;
mod dashboards;
mod exact;
mod harness;
mod http_port;
mod influxdb;
mod modbus;
mod mqtt;
mod oversized;
mod resilience;
mod scaling;
mod serial;
mod service;
mod systemd_unit;
mod tls;
