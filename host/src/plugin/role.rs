//! What a plugin is loaded as (an exporter or a processor): the world it must implement and
//! the names its self-metrics go by.

use super::contract::World;

/// A role and its metric names.
#[derive(Debug)]
pub struct Role {
    /// The world a plugin in this role implements.
    pub world: World,
    /// The label naming the configured plugin (`exporter`, `processor`).
    pub label: &'static str,
    /// Plugin log messages dropped by the rate limit.
    pub log_dropped: &'static str,
    /// HTTP requests refused by `allowed_hosts`.
    pub egress_denied: &'static str,
    /// Instances created.
    pub instances: &'static str,
    /// Instances discarded, by reason.
    pub faults: &'static str,
    /// The most host memory one instance held in a call.
    pub host_peak: &'static str,
    /// Duration of calls.
    pub call_duration: &'static str,
    /// 1 while the circuit breaker is open.
    pub circuit_open: &'static str,
    /// Times the circuit breaker opened.
    pub circuit_opened: &'static str,
    /// Until when it is open (Unix ms; 0 when closed).
    pub circuit_open_until: &'static str,
    /// Calls running now.
    pub in_flight: &'static str,
    /// The most linear memory one instance held.
    pub memory_peak: &'static str,
}

/// An exporter (`[exporters.NAME]`).
pub const EXPORTER: Role = Role {
    world: World::Exporter,
    label: "exporter",
    log_dropped: "ferry_exporter_log_messages_dropped_total",
    egress_denied: "ferry_exporter_egress_denied_total",
    instances: "ferry_exporter_instances_created_total",
    faults: "ferry_exporter_faults_total",
    host_peak: "ferry_exporter_host_bytes_peak",
    call_duration: "ferry_exporter_call_duration_seconds",
    circuit_open: "ferry_exporter_circuit_open",
    circuit_opened: "ferry_exporter_circuit_opened_total",
    circuit_open_until: "ferry_exporter_circuit_open_until_unix_ms",
    in_flight: "ferry_exporter_calls_in_flight",
    memory_peak: "ferry_exporter_memory_peak_bytes",
};

/// A Wasm processor (`[processors.NAME]` with `plugin`).
pub const PROCESSOR: Role = Role {
    world: World::Processor,
    label: "processor",
    log_dropped: "ferry_processor_log_messages_dropped_total",
    egress_denied: "ferry_processor_egress_denied_total",
    instances: "ferry_processor_instances_created_total",
    faults: "ferry_processor_instance_faults_total",
    host_peak: "ferry_processor_host_bytes_peak",
    call_duration: "ferry_processor_call_duration_seconds",
    circuit_open: "ferry_processor_circuit_open",
    circuit_opened: "ferry_processor_circuit_opened_total",
    circuit_open_until: "ferry_processor_circuit_open_until_unix_ms",
    in_flight: "ferry_processor_calls_in_flight",
    memory_peak: "ferry_processor_memory_peak_bytes",
};
