//! Domain types and rules of the Groups resource, free of HTTP and storage concerns.
pub mod account;
pub mod clock;
pub mod conflict;
pub mod document;
pub mod filters;
pub mod group;
pub mod history;
pub mod ids;
pub mod line;
pub mod membership;
pub mod merge;
pub mod references;
pub mod start_key;
