//! The actix actors of a replica. Each actor's state is private; messages are the only way in.

pub mod catalog_file_watcher;
pub mod catalog_writer;
