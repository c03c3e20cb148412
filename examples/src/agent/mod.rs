//! The node agent: the pool, the records, the dataplane and DNS, served to the plugin.

pub mod catalog;
pub mod config;
pub mod endpoints;
pub mod links;
