//! A sotto node's home directory: its name, its Ed25519 identity key, its BLS
//! signing keys, the profiles of the peers it has pinned, and a place for
//! protocol session state. Everything a person needs to see, back up or move
//! a node lives here.

pub mod clock;
pub mod error;
pub mod files;
pub mod home;
pub mod leaks;
pub mod limiter;
pub mod name;
pub mod outputs;
pub mod process;
pub mod profile;

pub use error::NodeError;
pub use home::{NodeHome, MIN_BLS_KEYS};
pub use name::NodeName;
pub use outputs::OutputRules;
pub use profile::{Profile, PublicProfile};
