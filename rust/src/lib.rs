//! podyn-fast's Rust core: DynamoDB JSON bodies to PostgreSQL binary COPY rows.
//!
//! Everything here is plain Rust except `bindings`, the only module that touches PyO3.

pub mod base64;
pub mod encoder;
pub mod error;
pub mod ident;
pub mod json;
pub mod layout;
pub mod pgcopy;
pub mod pgtext;
pub mod stream;
pub mod types;

#[cfg(feature = "python")]
mod bindings;
