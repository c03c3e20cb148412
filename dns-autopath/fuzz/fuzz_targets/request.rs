//! The request path: arbitrary bytes as a client request, and arbitrary bytes as what the
//! upstream answers, through the public handler (parsing, AutoPath, cache, synthesis).
//! Nothing may panic; every reply must at least carry a header.
#![no_main]

use std::{net::IpAddr, sync::Arc};

use cnikit_dns_autopath::{
    ServerConfig, StaticPodIndex,
    cluster::{ClusterTable, Service},
    server::{DnsHandler, Transport},
    upstream::{Upstream, UpstreamError, UpstreamQuery},
};
use libfuzzer_sys::fuzz_target;

/// Answers every question with the fuzzer's bytes.
struct Replay(Vec<u8>);

#[async_trait::async_trait]
impl Upstream for Replay {
    async fn query(&self, _q: &UpstreamQuery) -> Result<Vec<u8>, UpstreamError> {
        Ok(self.0.clone())
    }
}

fuzz_target!(|data: &[u8]| {
    // First byte: where the request ends; the rest of the input is the upstream reply.
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let cut = usize::from(split).min(rest.len());
    let (request, upstream) = rest.split_at(cut);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let table = Arc::new(ClusterTable::new("cluster.local".parse().expect("zone")));
        table
            .upsert_service(&Service::cluster_ip(
                "prod",
                "web",
                vec!["10.96.0.10".parse().expect("ip")],
            ))
            .expect("service");
        let pods = Arc::new(StaticPodIndex::new());
        let client: IpAddr = "198.18.0.10".parse().expect("ip");
        pods.insert(client, "prod");
        let handler = DnsHandler::new(
            &ServerConfig::default(),
            table,
            pods,
            Arc::new(Replay(upstream.to_vec())),
        )
        .expect("handler");
        for transport in [Transport::Udp, Transport::Tcp] {
            if let Some(reply) = handler.answer(request, client, transport).await {
                assert!(reply.len() >= 12, "a reply without a header");
            }
        }
    });
});
