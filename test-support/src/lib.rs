//! Internal test harness for cnikit (not published).
//!
//! - [`netns`]: uniquely named network namespaces with a role (node, pod, vpc), code run inside
//!   them, removal on drop (including during a panic), and a [`netns::sweep`] of leftovers that
//!   killed runs left behind. Nothing here ever changes the root network namespace.
//! - [`privilege`]: gates for tests that need root or a kernel feature: under `CI=true` a missing
//!   requirement fails the test; elsewhere the test prints one `SKIP` line and returns.
//! - [`traffic`]: real UDP datagrams from one namespace, counted in another.
//! - [`process`]: external helper processes (servers on loopback) with bounded waits, killed on
//!   drop.
//! - [`state`]: snapshots of a namespace's links, addresses, routes, rules and neighbours (read
//!   with iproute2) and their differences, for leak and rollback tests.
//! - [`pods`]: a node namespace with routed pod namespaces (veth, /32 addresses, link-local
//!   gateway), the shape a CNI builds.
//! - [`bpffs`]: a private bpf filesystem instance for tests that pin BPF objects.
//! - [`moto`]: `moto_server` (a real EC2 Query API) on loopback, one per test process.
//!
//! ```no_run
//! use cnikit_test_support::{netns::{Role, TestNetns}, require_root};
//!
//! fn veth_between_node_and_pod() {
//!     require_root!("veth_between_node_and_pod");
//!     let node = TestNetns::create(Role::Node).unwrap();
//!     let pod = TestNetns::create(Role::Pod).unwrap();
//!     node.veth_to(&pod, "veth-pod", "eth0").unwrap();
//!     node.ip(&["addr", "add", "198.18.0.1/24", "dev", "veth-pod"]).unwrap();
//!     // ... both namespaces are deleted when `node` and `pod` drop.
//! }
//! ```
#![deny(missing_docs)]

pub mod bpffs;
pub mod moto;
pub mod netns;
pub mod pods;
pub mod privilege;
pub mod process;
pub mod state;
pub mod traffic;

pub use privilege::in_ci;
