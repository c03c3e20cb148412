//! The HTTP exchange under the EC2 client: reqwest over rustls by default, or any other
//! [`Ec2Transport`] (the simulator's in-process EC2 front, a recording proxy, ...).

use std::{fmt, time::Duration};

use async_trait::async_trait;

use crate::{
    error::{Error, Result},
    http::{BodyError, build_client, read_capped},
};

/// A signed request, ready to send.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Ec2HttpRequest {
    /// The action (for errors and logs).
    pub action: String,
    /// The endpoint URL.
    pub url: String,
    /// Headers, the signature's included.
    pub headers: Vec<(String, String)>,
    /// The form-encoded body (`Action=…&Version=…&…`).
    pub body: Vec<u8>,
    /// The request's timeout.
    pub timeout: Duration,
}

/// A response.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Ec2HttpResponse {
    /// The HTTP status.
    pub status: u16,
    /// The body.
    pub body: Vec<u8>,
}

impl Ec2HttpResponse {
    /// A response of `status` with `body`.
    #[must_use]
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            body: body.into(),
        }
    }
}

/// Sends one signed EC2 request. Failures to get an answer are [`Error::Transport`].
#[async_trait]
pub trait Ec2Transport: Send + Sync + fmt::Debug {
    /// Sends `request` and returns the answer, whatever its status.
    async fn send(&self, request: Ec2HttpRequest) -> Result<Ec2HttpResponse>;
}

/// The default transport: reqwest on rustls (ring), bodies capped.
#[derive(Debug)]
pub(crate) struct ReqwestTransport {
    http: reqwest::Client,
    max_body: usize,
}

impl ReqwestTransport {
    pub(crate) fn new(connect_timeout: Duration, max_body: usize) -> Result<Self> {
        Ok(Self {
            http: build_client(connect_timeout)?,
            max_body,
        })
    }
}

#[async_trait]
impl Ec2Transport for ReqwestTransport {
    async fn send(&self, request: Ec2HttpRequest) -> Result<Ec2HttpResponse> {
        let endpoint = request.url.clone();
        let transport = |e: reqwest::Error| Error::Transport {
            action: request.action.clone(),
            endpoint: endpoint.clone(),
            timed_out: e.is_timeout(),
            source: Box::new(e.without_url()),
        };
        let mut builder = self
            .http
            .post(&request.url)
            .timeout(request.timeout)
            .body(request.body.clone());
        for (k, v) in &request.headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        let resp = builder.send().await.map_err(transport)?;
        let status = resp.status().as_u16();
        match read_capped(resp, self.max_body).await {
            Ok(body) => Ok(Ec2HttpResponse { status, body }),
            Err(BodyError::Transport(e)) => Err(transport(e)),
            Err(BodyError::TooLarge(max)) => Err(Error::InvalidResponse {
                action: request.action.clone(),
                http_status: Some(status),
                request_id: None,
                detail: format!("body larger than {max} bytes"),
            }),
        }
    }
}
