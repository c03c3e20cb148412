//! A complete CNI plugin, node agent and demo built from the cnikit crates.
//!
//! Today this crate holds the `cnikit-demo` binary: it creates throwaway namespaces, loads the
//! eBPF probe through the verifier, attaches it to a pod's veth, sends real packets and shows what
//! the program counted and dropped. Later layers (pool, pod wiring, Services, DNS) join the demo as
//! they land.
#![deny(missing_docs)]
