//! Counters, connection-tracking dumps, and single packets through the programs.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    time::Duration,
};

use aya::programs::{TestRun, TestRunOptions};
use cnikit_ebpf_common::{
    conntrack::{
        CT_CLOSING, CT_EGRESS_ALLOWED, CT_INGRESS_ALLOWED, CT_KIND_SERVICE, CT_MAP, CT_REV_NAT,
        CtKey, CtValue,
    },
    net::{IPPROTO_TCP, ipv4_octets, port_host},
    stats::{ENDPOINT_STATS_MAP, EndpointStats, SERVICE_STATS_MAP, ServiceStats},
};

use super::{Dataplane, maps::map_error};
use crate::{
    ConntrackEntry, EndpointCounters, Error, Hook, Packet, PacketPath, Result, ServiceCounters,
    ServiceKey, Statistics, Verdict, model::monotonic_ns,
};

/// tc verdicts a program returns.
const TC_ACT_UNSPEC: u32 = u32::MAX;
const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;

fn sum_services(values: &[ServiceStats]) -> ServiceStats {
    values
        .iter()
        .fold(ServiceStats::default(), |a, v| ServiceStats {
            packets: a.packets + v.packets,
            bytes: a.bytes + v.bytes,
            reply_packets: a.reply_packets + v.reply_packets,
            reply_bytes: a.reply_bytes + v.reply_bytes,
            connections: a.connections + v.connections,
            rejected: a.rejected + v.rejected,
        })
}

fn sum_endpoints(values: &[EndpointStats]) -> EndpointStats {
    values.iter().fold(EndpointStats::default(), |mut a, v| {
        a.tx_packets += v.tx_packets;
        a.tx_bytes += v.tx_bytes;
        a.rx_packets += v.rx_packets;
        a.rx_bytes += v.rx_bytes;
        for (total, drop) in a.drops.iter_mut().zip(v.drops) {
            *total += drop;
        }
        a
    })
}

fn socket(addr: u32, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(ipv4_octets(addr)), port_host(port))
}

impl Dataplane {
    fn fresh(&self, key: &CtKey, value: &CtValue, now: u64) -> bool {
        let timeout = if key.proto != IPPROTO_TCP {
            self.timeouts.other
        } else if value.flags & CT_CLOSING != 0 {
            self.timeouts.tcp_closing
        } else {
            self.timeouts.tcp
        };
        Duration::from_nanos(now.saturating_sub(value.last_seen_ns)) < timeout
    }

    /// Removes every connection-tracking entry (established connections then take the path of
    /// new ones: new backend choices, new policy verdicts).
    ///
    /// # Errors
    /// A failed map operation.
    pub fn flush_conntrack(&mut self) -> Result<usize> {
        let keys: Vec<CtKey> = self
            .maps
            .ct
            .keys()
            .collect::<Result<_, _>>()
            .map_err(map_error(CT_MAP, "read"))?;
        let mut removed = 0;
        for key in keys {
            if self.maps.ct.remove(&key).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

impl Dataplane {
    /// Runs `packet` through `hook`'s program `repeat` times in the kernel (`BPF_PROG_TEST_RUN`)
    /// and returns the mean time of one run as the kernel measured it: the per-packet cost of
    /// the program. The runs have their real side effects (connection tracking, counters).
    ///
    /// # Errors
    /// [`Error::TestRun`] when the kernel refuses the run.
    pub fn time_packet(&self, hook: Hook, packet: &Packet, repeat: u32) -> Result<Duration> {
        let frame = packet.to_frame();
        let mut out = vec![0u8; frame.len() + 256];
        let result = self
            .program(hook)?
            .test_run(TestRunOptions {
                data_in: Some(&frame),
                data_out: Some(&mut out),
                repeat: repeat.max(1),
                ..TestRunOptions::default()
            })
            .map_err(|e| Error::TestRun {
                program: hook.program(),
                source: e.into(),
            })?;
        Ok(result.duration)
    }
}

impl Statistics for Dataplane {
    fn service_stats(&self, key: &ServiceKey) -> Result<Option<ServiceCounters>> {
        let Some(installed) = self.services.get(key) else {
            return Ok(None);
        };
        let values = self
            .maps
            .service_stats
            .get(&installed.id, 0)
            .map_err(map_error(SERVICE_STATS_MAP, "read"))?;
        Ok(Some(sum_services(&values).into()))
    }

    fn endpoint_stats(&self, addr: Ipv4Addr) -> Result<Option<EndpointCounters>> {
        let Some(ep) = self.endpoints.get(&addr) else {
            return Ok(None);
        };
        let values = self
            .maps
            .endpoint_stats
            .get(&ep.id, 0)
            .map_err(map_error(ENDPOINT_STATS_MAP, "read"))?;
        Ok(Some(sum_endpoints(&values).into()))
    }

    fn conntrack(&self) -> Result<Vec<ConntrackEntry>> {
        let now = monotonic_ns();
        let mut entries = Vec::new();
        for item in &self.maps.ct {
            let (key, value) = match item {
                Ok(kv) => kv,
                // Evicted between listing the key and reading it.
                Err(e) if super::maps::is_missing(&e) => continue,
                Err(e) => return Err(map_error(CT_MAP, "read")(e)),
            };
            if !self.fresh(&key, &value, now) {
                continue;
            }
            entries.push(if key.kind == CT_KIND_SERVICE {
                ConntrackEntry::Service {
                    protocol: key.proto,
                    client: socket(key.saddr, key.sport),
                    vip: socket(key.daddr, key.dport),
                    backend: socket(value.backend_addr, value.backend_port),
                }
            } else {
                ConntrackEntry::Flow {
                    protocol: key.proto,
                    src: socket(key.saddr, key.sport),
                    dst: socket(key.daddr, key.dport),
                    egress_allowed: value.flags & CT_EGRESS_ALLOWED != 0,
                    ingress_allowed: value.flags & CT_INGRESS_ALLOWED != 0,
                    closing: value.flags & CT_CLOSING != 0,
                    reply_source: (value.flags & CT_REV_NAT != 0)
                        .then(|| socket(value.rev_nat_addr, value.rev_nat_port)),
                }
            });
        }
        entries.sort_unstable();
        Ok(entries)
    }
}

impl PacketPath for Dataplane {
    /// Runs the packet through the loaded program with `BPF_PROG_TEST_RUN`: the real program,
    /// verifier-checked, against the live maps (its connection-tracking and counter updates are
    /// real too). A rejection's ICMP reply is what the program would have redirected.
    fn process(&mut self, hook: Hook, packet: &Packet) -> Result<Verdict> {
        let program_name = hook.program();
        let fail = |source: crate::error::Source| Error::TestRun {
            program: program_name,
            source,
        };
        let program = self.program(hook)?;
        let frame = packet.to_frame();
        let mut out = vec![0u8; frame.len() + 256];
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(&frame),
                data_out: Some(&mut out),
                ..TestRunOptions::default()
            })
            .map_err(|e| fail(e.into()))?;
        let size = usize::try_from(result.data_size_out).unwrap_or(usize::MAX);
        let output = || {
            let bytes = out
                .get(..size)
                .ok_or_else(|| fail("output larger than its buffer".into()))?;
            Packet::from_frame(bytes).map_err(|e| fail(e.into()))
        };
        match result.return_value {
            TC_ACT_UNSPEC | TC_ACT_OK => Ok(Verdict::Pass(output()?)),
            TC_ACT_SHOT => Ok(Verdict::Drop),
            TC_ACT_REDIRECT => Ok(Verdict::Reject(output()?)),
            other => Err(fail(format!("unexpected tc verdict {other}").into())),
        }
    }
}
