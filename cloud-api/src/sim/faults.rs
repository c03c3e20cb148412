//! Fault injection: rules that make chosen calls fail, slow down, lose their response, or
//! answer garbage, decided by the simulator's seeded generator.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::config::millis;
use crate::ecs::Action;

/// What a rule does to a call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum Fault {
    /// Answer this error instead of doing the call (no effect).
    Error {
        /// The error code, e.g. `InternalError`.
        code: String,
        /// The message (a generic one when absent).
        #[serde(default)]
        message: Option<String>,
        /// The HTTP status (default 500 for 5xx-ish codes, 400 otherwise).
        #[serde(default)]
        http_status: Option<u16>,
    },
    /// Delay the call by this much, then do it normally.
    Latency {
        /// The extra delay.
        #[serde(rename = "delay_ms", with = "millis")]
        delay: Duration,
    },
    /// Do the call (the effect is committed), then lose the response: over HTTP the connection
    /// closes without an answer; in process the call returns a transport error.
    DropResponse,
    /// Lose the request: no effect, and no answer.
    DropRequest,
    /// Answer a body that is not a valid response (no effect).
    Garbage {
        /// Which garbage.
        body: GarbageKind,
    },
    /// Accept an attach, then let it fail asynchronously (`Attaching` falls back to
    /// `Available`). Only meaningful for `AttachNetworkInterface`.
    FailAsync,
}

/// Kinds of garbage bodies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum GarbageKind {
    /// An HTML error page with HTTP 502 (a proxy in the way).
    Html,
    /// The real JSON, cut in half.
    TruncatedJson,
    /// JSON whose fields have the wrong types.
    WrongTypes,
    /// JSON without the expected fields.
    MissingFields,
    /// A 64 MiB body.
    Huge,
    /// An empty 200 response.
    Empty,
}

/// A fault injection rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct FaultRule {
    /// The action it applies to (by name); `None` = every action.
    #[serde(default)]
    pub action: Option<String>,
    /// Chance that a matching call is hit, in `[0, 1]`.
    #[serde(default = "one")]
    pub probability: f64,
    /// Matching calls to let through before the rule can fire.
    #[serde(default)]
    pub skip: u64,
    /// Fire at most this many times; `None` = unbounded.
    #[serde(default)]
    pub max_hits: Option<u64>,
    /// What happens.
    pub fault: Fault,
}

fn one() -> f64 {
    1.0
}

impl FaultRule {
    /// A rule firing on every call of `action` (every action when `None`).
    #[must_use]
    pub fn new(action: Option<Action>, fault: Fault) -> Self {
        Self {
            action: action.map(|a| a.as_str().to_owned()),
            probability: 1.0,
            skip: 0,
            max_hits: None,
            fault,
        }
    }

    /// Fires `n` times, then never again.
    #[must_use]
    pub fn times(mut self, n: u64) -> Self {
        self.max_hits = Some(n);
        self
    }

    /// Fires with probability `p`.
    #[must_use]
    pub fn with_probability(mut self, p: f64) -> Self {
        self.probability = p;
        self
    }

    /// Lets the first `n` matching calls through.
    #[must_use]
    pub fn after(mut self, n: u64) -> Self {
        self.skip = n;
        self
    }

    /// An error fault with a code (generic message, status from the code).
    #[must_use]
    pub fn error(action: Option<Action>, code: &str) -> Self {
        Self::new(
            action,
            Fault::Error {
                code: code.to_owned(),
                message: None,
                http_status: None,
            },
        )
    }

    pub(crate) fn applies_to(&self, action: Action) -> bool {
        self.action.as_deref().is_none_or(|a| a == action.as_str())
    }
}

/// A rule with its counters.
#[derive(Clone, Debug)]
pub(crate) struct ArmedRule {
    pub(crate) rule: FaultRule,
    pub(crate) matched: u64,
    pub(crate) hits: u64,
}

impl ArmedRule {
    pub(crate) fn new(rule: FaultRule) -> Self {
        Self {
            rule,
            matched: 0,
            hits: 0,
        }
    }
}
