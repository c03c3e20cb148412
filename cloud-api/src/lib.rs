//! Cloud client for elastic network interfaces (ENIs) and secondary IPs.
//!
//! Part of [cnikit](https://github.com/cnikit/cnikit); see `docs/ARCHITECTURE.md` for where this
//! layer sits and what it may depend on.
#![deny(missing_docs)]
