//! End-to-end tests: every test starts the real `strongroomd` binary over
//! mutual TLS and talks to it through the generated client (or grpcurl).

mod smoke;
