//! Packet-order representations of addresses and ports, and protocol numbers.

/// IP protocol number of ICMP.
pub const IPPROTO_ICMP: u8 = 1;
/// IP protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;
/// IP protocol number of SCTP.
pub const IPPROTO_SCTP: u8 = 132;

/// An IPv4 address as stored in maps: its network-order bytes read as a native-endian `u32`.
#[must_use]
pub const fn ipv4_raw(octets: [u8; 4]) -> u32 {
    u32::from_ne_bytes(octets)
}

/// The octets of a map-stored IPv4 address, in their usual written order.
#[must_use]
pub const fn ipv4_octets(raw: u32) -> [u8; 4] {
    raw.to_ne_bytes()
}

/// A port as stored in maps: its network-order bytes read as a native-endian `u16`.
#[must_use]
pub const fn port_raw(port: u16) -> u16 {
    u16::from_ne_bytes(port.to_be_bytes())
}

/// The host-order value of a map-stored port.
#[must_use]
pub const fn port_host(raw: u16) -> u16 {
    u16::from_be_bytes(raw.to_ne_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        assert_eq!(ipv4_octets(ipv4_raw([1, 2, 3, 4])), [1, 2, 3, 4]);
        assert_eq!(port_host(port_raw(8080)), 8080);
        assert_eq!(port_raw(0x1234).to_ne_bytes(), [0x12, 0x34]);
    }
}
