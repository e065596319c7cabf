//! The stages of Crossbar's request pipeline (groups-contract §0), each a function from what the
//! previous stage produced to what the next consumes: `Parsed` (stages 1-2), `Caller` (3),
//! `AccountScope` (4), `Authenticated`/`Authorised` (5-6), then the route's own request type; a
//! [`reply::Stop`] ends a request early. The order itself is written once, in
//! `routes::answer`. The answer is rendered once, by [`reply::Reply::render`].
pub mod caller;
pub mod limiter;
pub mod media;
pub mod memory;
pub mod parse;
pub mod reply;
pub mod request;
pub mod scope;
pub mod state;

pub use reply::{staged, Reply, Stop};
pub use state::AppState;
