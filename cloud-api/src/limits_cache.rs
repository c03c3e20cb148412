//! Instance type limits, paged out of `DescribeInstanceTypes` once and cached (both clouds).

use std::{
    collections::{BTreeSet, HashMap},
    future::Future,
    sync::{Mutex, PoisonError},
};

use crate::{
    error::{Error, Result},
    types::InstanceLimits,
};

/// Limits by instance type, filled on first use.
#[derive(Debug, Default)]
pub(crate) struct LimitsCache(Mutex<HashMap<String, InstanceLimits>>);

impl LimitsCache {
    /// The cached limits of `instance_type`, or the ones found by paging with `page` (given the
    /// next token, it answers the type's limits if that page lists it, and the next token).
    /// A missing type, or a repeating token, is [`Error::NotFound`].
    pub(crate) async fn get_or_page<Fut>(
        &self,
        instance_type: &str,
        mut page: impl FnMut(Option<String>) -> Fut,
    ) -> Result<InstanceLimits>
    where
        Fut: Future<Output = Result<(Option<InstanceLimits>, Option<String>)>>,
    {
        if let Some(l) = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(instance_type)
        {
            return Ok(l.clone());
        }
        let mut next = None;
        let mut seen = BTreeSet::new();
        loop {
            let (found, token) = page(next).await?;
            if let Some(limits) = found {
                self.0
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(instance_type.to_owned(), limits.clone());
                return Ok(limits);
            }
            match token.filter(|t| !t.is_empty()) {
                Some(t) if seen.insert(t.clone()) => next = Some(t),
                _ => {
                    return Err(Error::NotFound {
                        what: "instance type",
                        id: instance_type.to_owned(),
                    });
                }
            }
        }
    }
}
