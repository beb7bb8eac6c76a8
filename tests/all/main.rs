//! Integration tests of `pinowner`: one binary, one module per concept.

mod alloc;
mod allocator;
mod attribution;
mod counts;
mod discard;
mod ecosystem;
mod faults;
mod geometry;
mod idle;
mod map;
mod migrate;
mod model;
mod poison;
mod policy;
mod region;
mod reporting;
mod reserve;
mod scenarios;
mod scenarios_limits;
mod scenarios_load;
mod scenarios_modes;
mod scenarios_owners;
mod stats;
mod stress;
mod track;
mod zone;
