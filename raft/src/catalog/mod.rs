//! The service catalog: domain model, typed commands, validation and the state machine.

pub mod command;
mod map_as_pairs;
pub mod model;
pub mod requests;
pub mod state;
pub mod validate;

pub use command::{
    Applied, ApplyError, BatchResponse, CatalogCommand, CommandBatch, Outcome, RequestId,
};
pub use model::*;
pub use state::{Catalog, ChangesSince};
pub use validate::InvalidField;
