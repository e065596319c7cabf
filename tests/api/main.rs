//! The integration tests, as one test binary (zero-to-production's `tests/api/`): one link of
//! the crate and its dependencies instead of one per file, and one copy of the helpers, which
//! every module shares. `tests/json_bounds.rs` stays a binary of its own (see its header).
//!
//! Every test starts the real application against a real store: the CouchDB-compatible server
//! in `COUCHDB_URL`, or, with `KZ_TEST_BACKEND=embedded`, an embedded store of its own;
//! `scripts/test` runs the suite both ways. Groups-contract cases (`../shared/kazoo/
//! groups-contract.md` §8) and auth-contract cases are named by number in each test's comment.
mod helpers;

mod admin;
mod auth;
mod bus;
mod bus_worker;
mod caches;
mod conflicts;
mod deployment;
mod durability;
mod first_use;
mod groups;
mod history;
mod hostile;
mod lifecycle;
mod login;
mod membership_cost;
mod openapi;
mod operators;
mod recovery;
mod tls;
mod views;
