//! podyn-fast's Rust core: DynamoDB JSON bodies to PostgreSQL binary COPY rows.
//!
//! Everything here is plain Rust except `bindings`, the only module that touches PyO3. The modules
//! are private: what the bindings call is re-exported below, and that list is the core's API.

mod base64;
mod encoder;
mod error;
mod export;
mod ident;
mod json;
mod layout;
mod pgcopy;
mod pgtext;
mod stream;
mod typed;
mod types;

pub use encoder::{Encoded, Encoder, Reject, ScanPage};
pub use error::{CoreError, CoreResult, Reason};
pub use export::ExportLines;
pub use ident::fit;
pub use layout::{key_columns, quoted, Column, Layout, Mode};
pub use pgcopy::{HEADER, TRAILER};
pub use pgtext::rows_to_text;
pub use stream::{position as stream_position, StreamBatch, StreamPosition};
pub use types::{ColumnType, DynType};

#[cfg(feature = "python")]
mod bindings;
