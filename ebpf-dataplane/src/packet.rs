//! Packets as the dataplane sees them: a small IPv4 model with exact frame encoding, so the same
//! packet can be run through the kernel programs (`BPF_PROG_TEST_RUN`) and the reference model
//! and the results compared field by field.

use std::{fmt, net::Ipv4Addr};

use cnikit_ebpf_common::net::{IPPROTO_ICMP, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP};

/// TCP flag bits ([`Transport::Tcp::flags`]).
pub mod tcp_flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
}

/// Where on an endpoint's path a program sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hook {
    /// Packets leaving the endpoint (`cnikit_from_ep`): service translation, egress policy.
    FromEndpoint,
    /// Packets entering the endpoint (`cnikit_to_ep`): reply translation, ingress policy.
    ToEndpoint,
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::FromEndpoint => "from-endpoint",
            Self::ToEndpoint => "to-endpoint",
        })
    }
}

/// The IPv4 header and first 8 bytes an ICMP error quotes, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Quoted {
    /// Source of the offending packet.
    pub src: Ipv4Addr,
    /// Destination of the offending packet.
    pub dst: Ipv4Addr,
    /// Its IP protocol.
    pub protocol: u8,
    /// Its source port (first two quoted L4 bytes).
    pub sport: u16,
    /// Its destination port.
    pub dport: u16,
}

/// The transport part of a [`Packet`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// TCP with the given flags (see [`tcp_flags`]).
    Tcp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
        /// Flag bits.
        flags: u8,
    },
    /// UDP.
    Udp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
    },
    /// SCTP (common header only; the `CRC32c` checksum is left zero).
    Sctp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
    },
    /// ICMP.
    Icmp {
        /// Type.
        icmp_type: u8,
        /// Code.
        code: u8,
        /// For error messages, the packet they quote.
        quoted: Option<Quoted>,
    },
}

impl Transport {
    /// The IP protocol number.
    #[must_use]
    pub const fn protocol(&self) -> u8 {
        match self {
            Self::Tcp { .. } => IPPROTO_TCP,
            Self::Udp { .. } => IPPROTO_UDP,
            Self::Sctp { .. } => IPPROTO_SCTP,
            Self::Icmp { .. } => IPPROTO_ICMP,
        }
    }

    /// Source and destination ports (`None` for ICMP).
    #[must_use]
    pub const fn ports(&self) -> Option<(u16, u16)> {
        match *self {
            Self::Tcp { sport, dport, .. }
            | Self::Udp { sport, dport }
            | Self::Sctp { sport, dport } => Some((sport, dport)),
            Self::Icmp { .. } => None,
        }
    }
}

/// An IPv4 packet in an Ethernet frame.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Packet {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Transport header.
    pub transport: Transport,
    /// Payload after the transport header.
    pub payload: Vec<u8>,
}

/// Source MAC address of frames built by [`Packet::to_frame`].
pub(crate) const SRC_MAC: [u8; 6] = [0x02, 0xc1, 0x00, 0x00, 0x00, 0x02];
/// Destination MAC address of frames built by [`Packet::to_frame`].
pub(crate) const DST_MAC: [u8; 6] = [0x02, 0xc1, 0x00, 0x00, 0x00, 0x01];
const ETH_HLEN: usize = 14;
const IP_HLEN: usize = 20;

/// Why bytes are not a packet [`Packet::from_frame`] understands.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a valid IPv4 frame: {0}")]
pub struct FrameError(pub String);

impl Packet {
    /// A TCP packet.
    #[must_use]
    pub fn tcp(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), flags: u8) -> Self {
        Self {
            src: src.0,
            dst: dst.0,
            transport: Transport::Tcp {
                sport: src.1,
                dport: dst.1,
                flags,
            },
            payload: Vec::new(),
        }
    }

    /// A UDP packet with `payload`.
    #[must_use]
    pub fn udp(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), payload: &[u8]) -> Self {
        Self {
            src: src.0,
            dst: dst.0,
            transport: Transport::Udp {
                sport: src.1,
                dport: dst.1,
            },
            payload: payload.to_vec(),
        }
    }

    /// An ICMP echo request.
    #[must_use]
    pub fn icmp_echo(src: Ipv4Addr, dst: Ipv4Addr) -> Self {
        Self {
            src,
            dst,
            transport: Transport::Icmp {
                icmp_type: 8,
                code: 0,
                quoted: None,
            },
            payload: vec![0, 1, 0, 1],
        }
    }

    /// The same packet travelling back (addresses and ports swapped, same flags and payload).
    #[must_use]
    pub fn reversed(&self) -> Self {
        let transport = match self.transport.clone() {
            Transport::Tcp {
                sport,
                dport,
                flags,
            } => Transport::Tcp {
                sport: dport,
                dport: sport,
                flags,
            },
            Transport::Udp { sport, dport } => Transport::Udp {
                sport: dport,
                dport: sport,
            },
            Transport::Sctp { sport, dport } => Transport::Sctp {
                sport: dport,
                dport: sport,
            },
            icmp @ Transport::Icmp { .. } => icmp,
        };
        Self {
            src: self.dst,
            dst: self.src,
            transport,
            payload: self.payload.clone(),
        }
    }

    /// Length of the frame [`to_frame`](Self::to_frame) builds (what counters count as bytes).
    #[must_use]
    pub fn frame_len(&self) -> usize {
        ETH_HLEN + IP_HLEN + self.l4_header_len() + self.payload.len()
    }

    fn l4_header_len(&self) -> usize {
        match self.transport {
            Transport::Tcp { .. } => 20,
            Transport::Icmp {
                quoted: Some(_), ..
            } => 36,
            Transport::Udp { .. } | Transport::Icmp { .. } => 8,
            Transport::Sctp { .. } => 12,
        }
    }

    /// Encodes the packet as an Ethernet frame with valid IPv4, TCP, UDP and ICMP checksums.
    #[must_use]
    pub fn to_frame(&self) -> Vec<u8> {
        let mut l4 = Vec::with_capacity(self.l4_header_len() + self.payload.len());
        match &self.transport {
            Transport::Tcp {
                sport,
                dport,
                flags,
            } => {
                l4.extend_from_slice(&sport.to_be_bytes());
                l4.extend_from_slice(&dport.to_be_bytes());
                l4.extend_from_slice(&0x1000_0000_u32.to_be_bytes()); // seq
                let ack: u32 = if flags & tcp_flags::ACK != 0 { 1 } else { 0 };
                l4.extend_from_slice(&ack.to_be_bytes());
                l4.push(5 << 4); // data offset
                l4.push(*flags);
                l4.extend_from_slice(&0xfaf0_u16.to_be_bytes()); // window
                l4.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
            }
            Transport::Udp { sport, dport } => {
                l4.extend_from_slice(&sport.to_be_bytes());
                l4.extend_from_slice(&dport.to_be_bytes());
                let len = u16::try_from(8 + self.payload.len()).unwrap_or(u16::MAX);
                l4.extend_from_slice(&len.to_be_bytes());
                l4.extend_from_slice(&[0, 0]);
            }
            Transport::Sctp { sport, dport } => {
                l4.extend_from_slice(&sport.to_be_bytes());
                l4.extend_from_slice(&dport.to_be_bytes());
                l4.extend_from_slice(&[0; 8]); // verification tag, checksum
            }
            Transport::Icmp {
                icmp_type,
                code,
                quoted,
            } => {
                l4.extend_from_slice(&[*icmp_type, *code, 0, 0, 0, 0, 0, 0]);
                if let Some(q) = quoted {
                    // Only the fields Quoted carries; enough for tests, not a faithful quote.
                    let inner = Self {
                        src: q.src,
                        dst: q.dst,
                        transport: Transport::Udp {
                            sport: q.sport,
                            dport: q.dport,
                        },
                        payload: Vec::new(),
                    }
                    .to_frame();
                    let mut quoted_bytes = inner[ETH_HLEN..ETH_HLEN + 28].to_vec();
                    quoted_bytes[9] = q.protocol;
                    l4.extend_from_slice(&quoted_bytes);
                }
            }
        }
        l4.extend_from_slice(&self.payload);
        let protocol = self.transport.protocol();
        match self.transport {
            Transport::Tcp { .. } => {
                let sum = l4_checksum(self.src, self.dst, protocol, &l4);
                l4[16..18].copy_from_slice(&sum);
            }
            Transport::Udp { .. } => {
                let mut sum = l4_checksum(self.src, self.dst, protocol, &l4);
                if sum == [0, 0] {
                    sum = [0xff, 0xff];
                }
                l4[6..8].copy_from_slice(&sum);
            }
            Transport::Icmp { .. } => {
                let sum = checksum(&[&l4]);
                l4[2..4].copy_from_slice(&sum);
            }
            Transport::Sctp { .. } => {}
        }
        let total = u16::try_from(IP_HLEN + l4.len()).unwrap_or(u16::MAX);
        let mut ip = [0u8; IP_HLEN];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip[4..6].copy_from_slice(&0x4242_u16.to_be_bytes());
        ip[6] = 0x40; // DF
        ip[8] = 64;
        ip[9] = protocol;
        ip[12..16].copy_from_slice(&self.src.octets());
        ip[16..20].copy_from_slice(&self.dst.octets());
        let sum = checksum(&[&ip]);
        ip[10..12].copy_from_slice(&sum);

        let mut frame = Vec::with_capacity(ETH_HLEN + IP_HLEN + l4.len());
        frame.extend_from_slice(&DST_MAC);
        frame.extend_from_slice(&SRC_MAC);
        frame.extend_from_slice(&[0x08, 0x00]);
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&l4);
        frame
    }

    /// Decodes a frame, verifying the IPv4 header checksum and the TCP, UDP and ICMP checksums.
    ///
    /// # Errors
    /// [`FrameError`] for anything that is not a well-formed IPv4 packet of a supported protocol
    /// or has a wrong checksum.
    pub fn from_frame(frame: &[u8]) -> Result<Self, FrameError> {
        let bad = |why: &str| FrameError(why.to_owned());
        if frame.len() < ETH_HLEN + IP_HLEN || frame[12..14] != [0x08, 0x00] {
            return Err(bad("not IPv4 over Ethernet"));
        }
        let ip = &frame[ETH_HLEN..];
        if ip[0] != 0x45 {
            return Err(bad("IPv4 options or wrong version"));
        }
        if checksum(&[&ip[..IP_HLEN]]) != [0, 0] {
            return Err(bad("IPv4 header checksum"));
        }
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        if total < IP_HLEN || total > ip.len() {
            return Err(bad("IPv4 total length"));
        }
        let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
        let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
        let protocol = ip[9];
        let l4 = &ip[IP_HLEN..total];
        let port = |at: usize| u16::from_be_bytes([l4[at], l4[at + 1]]);
        let (transport, header_len) = match protocol {
            IPPROTO_TCP => {
                if l4.len() < 20 {
                    return Err(bad("short TCP header"));
                }
                if l4_checksum(src, dst, protocol, l4) != [0, 0] {
                    return Err(bad("TCP checksum"));
                }
                let transport = Transport::Tcp {
                    sport: port(0),
                    dport: port(2),
                    flags: l4[13],
                };
                (transport, usize::from(l4[12] >> 4) * 4)
            }
            IPPROTO_UDP => {
                if l4.len() < 8 {
                    return Err(bad("short UDP header"));
                }
                if l4[6..8] != [0, 0] && l4_checksum(src, dst, protocol, l4) != [0, 0] {
                    return Err(bad("UDP checksum"));
                }
                (
                    Transport::Udp {
                        sport: port(0),
                        dport: port(2),
                    },
                    8,
                )
            }
            IPPROTO_SCTP => {
                if l4.len() < 12 {
                    return Err(bad("short SCTP header"));
                }
                (
                    Transport::Sctp {
                        sport: port(0),
                        dport: port(2),
                    },
                    12,
                )
            }
            IPPROTO_ICMP => {
                if l4.len() < 8 {
                    return Err(bad("short ICMP header"));
                }
                if checksum(&[l4]) != [0, 0] {
                    return Err(bad("ICMP checksum"));
                }
                let is_error = matches!(l4[0], 3 | 11 | 12);
                if is_error {
                    if l4.len() < 8 + 28 {
                        return Err(bad("short ICMP error quote"));
                    }
                    let q = &l4[8..];
                    let quoted = Quoted {
                        src: Ipv4Addr::new(q[12], q[13], q[14], q[15]),
                        dst: Ipv4Addr::new(q[16], q[17], q[18], q[19]),
                        protocol: q[9],
                        sport: u16::from_be_bytes([q[20], q[21]]),
                        dport: u16::from_be_bytes([q[22], q[23]]),
                    };
                    let transport = Transport::Icmp {
                        icmp_type: l4[0],
                        code: l4[1],
                        quoted: Some(quoted),
                    };
                    (transport, 36)
                } else {
                    let transport = Transport::Icmp {
                        icmp_type: l4[0],
                        code: l4[1],
                        quoted: None,
                    };
                    (transport, 8)
                }
            }
            other => return Err(FrameError(format!("IP protocol {other}"))),
        };
        if header_len > l4.len() {
            return Err(bad("transport header length"));
        }
        Ok(Self {
            src,
            dst,
            transport,
            payload: l4[header_len..].to_vec(),
        })
    }
}

impl fmt::Display for Packet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.transport {
            Transport::Tcp {
                sport,
                dport,
                flags,
            } => write!(
                f,
                "tcp {}:{sport} > {}:{dport} flags {flags:#04x}",
                self.src, self.dst
            ),
            Transport::Udp { sport, dport } => {
                write!(f, "udp {}:{sport} > {}:{dport}", self.src, self.dst)
            }
            Transport::Sctp { sport, dport } => {
                write!(f, "sctp {}:{sport} > {}:{dport}", self.src, self.dst)
            }
            Transport::Icmp {
                icmp_type, code, ..
            } => write!(
                f,
                "icmp {} > {} type {icmp_type} code {code}",
                self.src, self.dst
            ),
        }
    }
}

/// The Internet checksum over the concatenation of `parts` (each of even length except the
/// last), as written into a header.
pub(crate) fn checksum(parts: &[&[u8]]) -> [u8; 2] {
    let mut sum: u32 = 0;
    for part in parts {
        for pair in part.chunks(2) {
            let word = u16::from_be_bytes([pair[0], pair.get(1).copied().unwrap_or(0)]);
            sum += u32::from(word);
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    #[expect(clippy::cast_possible_truncation, reason = "folded to 16 bits above")]
    (!(sum as u16)).to_be_bytes()
}

fn l4_checksum(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, l4: &[u8]) -> [u8; 2] {
    let len = u16::try_from(l4.len()).unwrap_or(u16::MAX).to_be_bytes();
    let pseudo = [
        &src.octets()[..],
        &dst.octets()[..],
        &[0, protocol],
        &len[..],
    ]
    .concat();
    checksum(&[&pseudo, l4])
}

/// What a program did with a packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The packet continues, possibly rewritten (service translation or reply translation).
    Pass(Packet),
    /// The packet was dropped.
    Drop,
    /// The packet was answered: this reply (an ICMP port unreachable) goes back to the sender.
    Reject(Packet),
}

impl Verdict {
    /// Whether the packet continues.
    #[must_use]
    pub fn is_pass(&self) -> bool {
        matches!(self, Self::Pass(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    const B: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);

    #[test]
    fn frames_round_trip_with_valid_checksums() {
        let packets = [
            Packet::tcp((A, 40000), (B, 80), tcp_flags::SYN),
            Packet::tcp((A, 40000), (B, 80), tcp_flags::ACK | tcp_flags::PSH),
            Packet::udp((A, 5353), (B, 53), b"hello, odd"),
            Packet::icmp_echo(A, B),
            Packet {
                src: A,
                dst: B,
                transport: Transport::Sctp { sport: 1, dport: 2 },
                payload: Vec::new(),
            },
            Packet {
                src: B,
                dst: A,
                transport: Transport::Icmp {
                    icmp_type: 3,
                    code: 3,
                    quoted: Some(Quoted {
                        src: A,
                        dst: B,
                        protocol: 6,
                        sport: 40000,
                        dport: 80,
                    }),
                },
                payload: Vec::new(),
            },
        ];
        for packet in packets {
            let frame = packet.to_frame();
            assert_eq!(frame.len(), packet.frame_len(), "{packet}");
            assert_eq!(Packet::from_frame(&frame).unwrap(), packet);
        }
    }

    #[test]
    fn corrupted_checksums_are_rejected() {
        let frame = Packet::udp((A, 1), (B, 2), b"x").to_frame();
        let mut bad_ip = frame.clone();
        bad_ip[ETH_HLEN + 8] = 1; // TTL changed, checksum not
        assert!(Packet::from_frame(&bad_ip).is_err());
        let mut bad_udp = frame;
        let last = bad_udp.len() - 1;
        bad_udp[last] ^= 0xff;
        assert!(Packet::from_frame(&bad_udp).is_err());
        assert!(Packet::from_frame(&[0; 10]).is_err());
    }

    #[test]
    fn reversal_swaps_ends() {
        let p = Packet::tcp((A, 1), (B, 2), tcp_flags::ACK);
        assert_eq!(p.reversed().reversed(), p);
        assert_eq!(p.reversed().src, B);
        assert_eq!(p.reversed().transport.ports(), Some((2, 1)));
    }
}
