//! Storage: the CouchDB client and the design documents the service keeps in account databases.
pub mod couch;
pub mod views;
