//! The service catalog: domain model, typed commands, validation and the state machine.

pub mod command;
mod map_as_pairs;
pub mod model;
pub mod state;
pub mod validate;

pub use command::{Applied, ApplyError, BatchResponse, CatalogCommand, CommandBatch};
pub use model::*;
pub use state::{Catalog, ChangesSince};
pub use validate::InvalidField;
