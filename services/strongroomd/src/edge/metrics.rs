//! Per-call metrics, exported over OTLP when an endpoint is configured
//! (otherwise they do not exist, and no call does any metrics work):
//!
//! - `rpc.server.duration` (histogram, milliseconds): the time to the
//!   response of every call that reached its service;
//! - `strongroom.rpc.calls` (counter): every call, including those the edge
//!   refused;
//! - `strongroom.rpc.denials` (counter): calls refused for who the caller
//!   is or how much it calls (`reason`: `unauthenticated`, `rate_limited`,
//!   `permission_denied`).
//!
//! Each carries `rpc.system`, `rpc.service`, `rpc.method` and
//! `rpc.grpc.status_code`: names and codes only, never anything from a
//! request's body. The service and method are those of a method the server
//! serves (the protocol's `call_name`), `unknown` for any other path: a
//! path is free text the client chose.

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter};

use super::{CallName, Outcome, Protocol};

/// The instruments.
pub struct CallMetrics {
    duration: Histogram<f64>,
    calls: Counter<u64>,
    denials: Counter<u64>,
}

impl CallMetrics {
    /// Instruments of `meter`.
    pub fn new(meter: &Meter) -> Self {
        Self {
            duration: meter
                .f64_histogram("rpc.server.duration")
                .with_unit("ms")
                .with_description("Time from a call's arrival at its service to its response")
                .build(),
            calls: meter
                .u64_counter("strongroom.rpc.calls")
                .with_description("Calls, by outcome")
                .build(),
            denials: meter
                .u64_counter("strongroom.rpc.denials")
                .with_description(
                    "Calls refused for who the caller is or how much it calls, by reason",
                )
                .build(),
        }
    }

    /// A call that reached its service ended with `outcome` after
    /// `elapsed`.
    pub fn finished<P: Protocol>(&self, name: CallName<'_>, outcome: Outcome, elapsed: Duration) {
        let attributes = attributes::<P>(name, outcome);
        self.duration
            .record(elapsed.as_secs_f64() * 1000.0, &attributes);
        self.calls.add(1, &attributes);
        if let Some(reason) = outcome.denial {
            self.deny(attributes, reason);
        }
    }

    /// The edge refused a call with `outcome`, for `reason` (counted as a
    /// denial for that reason when `outcome` is one).
    pub fn refused<P: Protocol>(&self, name: CallName<'_>, outcome: Outcome, reason: &'static str) {
        let attributes = attributes::<P>(name, outcome);
        self.calls.add(1, &attributes);
        if outcome.denial.is_some() {
            self.deny(attributes, reason);
        }
    }

    fn deny(&self, attributes: [KeyValue; 4], reason: &'static str) {
        let [system, service, method, code] = attributes;
        self.denials.add(
            1,
            &[
                system,
                service,
                method,
                code,
                KeyValue::new("reason", reason),
            ],
        );
    }
}

fn attributes<P: Protocol>(name: CallName<'_>, outcome: Outcome) -> [KeyValue; 4] {
    [
        KeyValue::new("rpc.system", P::SYSTEM),
        KeyValue::new("rpc.service", name.service.to_owned()),
        KeyValue::new("rpc.method", name.method.to_owned()),
        KeyValue::new("rpc.grpc.status_code", i64::from(outcome.code)),
    ]
}
