//! Proof of computation, the checks themselves: Freivalds' check for matrix products (with a derived fp32
//! tolerance), agreement between replicas for kernels that cannot be checked cheaply, result commitments, and the
//! adaptive spot-check policy. Pure: no IO, no clock; randomness comes in as seeds.

pub mod commitment;
pub mod freivalds;
pub mod merkle;
pub mod replicas;
pub mod spotcheck;
