//! Just enough DNS wire format for the hot path, without building message objects.
//!
//! - [`parse_request`]: header, the single question and the OPT record of a query, validated;
//! - [`walk`]: the record layout of a response (where each TTL sits, the rcode, the SOA
//!   minimum), so cached answers can be served by patching bytes;
//! - [`write_error`]: FORMERR / NOTIMP / SERVFAIL / BADVERS replies echoing what could be parsed.
//!
//! Everything else (building answers, synthesis) goes through `hickory-proto` on the slow path.

use std::ops::Range;

use crate::name::{read_wire_name, skip_wire_name};

/// Size of the fixed header.
pub(crate) const HEADER_LEN: usize = 12;
/// Largest UDP payload a client without EDNS may receive (RFC 1035).
pub(crate) const PLAIN_UDP_PAYLOAD: usize = 512;
/// Size of an OPT record without options.
pub(crate) const OPT_LEN: usize = 11;

pub(crate) const RCODE_NOERROR: u8 = 0;
pub(crate) const RCODE_FORMERR: u8 = 1;
pub(crate) const RCODE_SERVFAIL: u8 = 2;
pub(crate) const RCODE_NXDOMAIN: u8 = 3;
pub(crate) const RCODE_NOTIMP: u8 = 4;
pub(crate) const RCODE_REFUSED: u8 = 5;
/// Extended rcode 16 (needs EDNS): the upper 8 bits go in the OPT record.
pub(crate) const RCODE_BADVERS: u16 = 16;

pub(crate) const TYPE_SOA: u16 = 6;
pub(crate) const TYPE_OPT: u16 = 41;

// Header flag bits (second and third bytes as one u16).
pub(crate) const FLAG_QR: u16 = 0x8000;
pub(crate) const FLAG_TC: u16 = 0x0200;
pub(crate) const FLAG_RD: u16 = 0x0100;
pub(crate) const FLAG_RA: u16 = 0x0080;
pub(crate) const FLAG_AD: u16 = 0x0020;
pub(crate) const FLAG_CD: u16 = 0x0010;

/// EDNS(0) parameters of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EdnsInfo {
    /// Advertised UDP payload size (at least 512).
    pub payload: u16,
    /// DNSSEC OK.
    pub dnssec_ok: bool,
    /// EDNS version.
    pub version: u8,
}

/// A validated standard query.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Request<'a> {
    pub bytes: &'a [u8],
    pub id: u16,
    pub flags: u16,
    /// The question name occupies `bytes[12..qname_end]` (uncompressed).
    pub qname_end: usize,
    pub qtype: u16,
    pub qclass: u16,
    pub edns: Option<EdnsInfo>,
}

impl Request<'_> {
    pub(crate) fn qname_wire(&self) -> &[u8] {
        &self.bytes[HEADER_LEN..self.qname_end]
    }

    pub(crate) fn question_end(&self) -> usize {
        self.qname_end + 4
    }

    pub(crate) fn dnssec_ok(&self) -> bool {
        self.edns.is_some_and(|e| e.dnssec_ok)
    }

    pub(crate) fn checking_disabled(&self) -> bool {
        self.flags & FLAG_CD != 0
    }

    /// The largest UDP reply this client accepts, capped at `server_max`.
    pub(crate) fn udp_limit(&self, server_max: u16) -> usize {
        match self.edns {
            Some(e) => usize::from(e.payload.clamp(512, server_max.max(512))),
            None => PLAIN_UDP_PAYLOAD,
        }
    }
}

/// Why a datagram is not answered normally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reject {
    /// Not worth an answer (too short to carry an ID, or itself a response).
    Drop,
    /// Answer with `rcode`, echoing the question when it parsed (`question_end`) and an OPT
    /// record when the request had one.
    Error {
        rcode: u16,
        question_end: Option<usize>,
        edns: Option<EdnsInfo>,
    },
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes([
        *b.get(at)?,
        *b.get(at + 1)?,
        *b.get(at + 2)?,
        *b.get(at + 3)?,
    ]))
}

/// Parses and validates a query.
pub(crate) fn parse_request(bytes: &[u8]) -> Result<Request<'_>, Reject> {
    if bytes.len() < HEADER_LEN {
        return Err(Reject::Drop);
    }
    let id = u16::from_be_bytes([bytes[0], bytes[1]]);
    let flags = u16::from_be_bytes([bytes[2], bytes[3]]);
    if flags & FLAG_QR != 0 {
        return Err(Reject::Drop);
    }
    let formerr = |question_end| Reject::Error {
        rcode: u16::from(RCODE_FORMERR),
        question_end,
        edns: None,
    };
    let qdcount = u16::from_be_bytes([bytes[4], bytes[5]]);
    let ancount = u16::from_be_bytes([bytes[6], bytes[7]]);
    let nscount = u16::from_be_bytes([bytes[8], bytes[9]]);
    let arcount = u16::from_be_bytes([bytes[10], bytes[11]]);
    let opcode = (flags >> 11) & 0xF;
    if qdcount != 1 {
        return Err(if opcode == 0 {
            formerr(None)
        } else {
            Reject::Error {
                rcode: u16::from(RCODE_NOTIMP),
                question_end: None,
                edns: None,
            }
        });
    }
    // The question name: uncompressed (a pointer cannot point backwards from offset 12).
    let mut pos = HEADER_LEN;
    loop {
        let Some(&len) = bytes.get(pos) else {
            return Err(formerr(None));
        };
        if len == 0 {
            pos += 1;
            break;
        }
        if len & 0xC0 != 0 {
            return Err(formerr(None));
        }
        pos += 1 + usize::from(len);
        if pos - HEADER_LEN + 1 > crate::MAX_NAME_LEN {
            return Err(formerr(None));
        }
    }
    let qname_end = pos;
    let (Some(qtype), Some(qclass)) = (u16_at(bytes, pos), u16_at(bytes, pos + 2)) else {
        return Err(formerr(None));
    };
    let question_end = pos + 4;
    if opcode != 0 {
        return Err(Reject::Error {
            rcode: u16::from(RCODE_NOTIMP),
            question_end: Some(question_end),
            edns: None,
        });
    }
    if ancount != 0 || nscount != 0 {
        return Err(formerr(Some(question_end)));
    }
    // Additional section: find the OPT record; anything else is skipped.
    let mut edns = None;
    let mut pos = question_end;
    for _ in 0..arcount {
        let name_start = pos;
        let Ok(after_name) = skip_wire_name(bytes, pos) else {
            return Err(formerr(Some(question_end)));
        };
        let (Some(rtype), Some(class), Some(ttl), Some(rdlen)) = (
            u16_at(bytes, after_name),
            u16_at(bytes, after_name + 2),
            u32_at(bytes, after_name + 4),
            u16_at(bytes, after_name + 8),
        ) else {
            return Err(formerr(Some(question_end)));
        };
        let end = after_name + 10 + usize::from(rdlen);
        if end > bytes.len() {
            return Err(formerr(Some(question_end)));
        }
        if rtype == TYPE_OPT {
            // One OPT, owned by the root (RFC 6891 §6.1.1).
            if edns.is_some() || bytes[name_start] != 0 || after_name != name_start + 1 {
                return Err(formerr(Some(question_end)));
            }
            let info = EdnsInfo {
                payload: class.max(512),
                dnssec_ok: ttl & 0x8000 != 0,
                version: ((ttl >> 16) & 0xFF) as u8,
            };
            if info.version != 0 {
                return Err(Reject::Error {
                    rcode: RCODE_BADVERS,
                    question_end: Some(question_end),
                    edns: Some(info),
                });
            }
            edns = Some(info);
        }
        pos = end;
    }
    Ok(Request {
        bytes,
        id,
        flags,
        qname_end,
        qtype,
        qclass,
        edns,
    })
}

/// Appends an OPT record advertising `payload`, echoing DO, with the upper rcode bits.
pub(crate) fn push_opt(out: &mut Vec<u8>, payload: u16, dnssec_ok: bool, rcode_high: u8) {
    out.push(0); // root owner
    out.extend_from_slice(&TYPE_OPT.to_be_bytes());
    out.extend_from_slice(&payload.to_be_bytes());
    out.push(rcode_high);
    out.push(0); // version
    out.extend_from_slice(&(if dnssec_ok { 0x8000u16 } else { 0 }).to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes()); // no options
}

/// Writes an error reply for `request` into `out`.
pub(crate) fn write_error(
    request: &[u8],
    rcode: u16,
    question_end: Option<usize>,
    edns: Option<EdnsInfo>,
    server_payload: u16,
    out: &mut Vec<u8>,
) {
    out.clear();
    if request.len() < HEADER_LEN {
        return;
    }
    out.extend_from_slice(&request[..HEADER_LEN]);
    let req_flags = u16::from_be_bytes([request[2], request[3]]);
    // Keep opcode and RD; set QR and RA; the low 4 bits of the rcode.
    let flags = (req_flags & (0x7800 | FLAG_RD | FLAG_CD)) | FLAG_QR | FLAG_RA | (rcode & 0xF);
    out[2..4].copy_from_slice(&flags.to_be_bytes());
    let qd = u16::from(question_end.is_some());
    out[4..6].copy_from_slice(&qd.to_be_bytes());
    out[6..10].fill(0);
    out[10..12].copy_from_slice(&u16::from(edns.is_some()).to_be_bytes());
    if let Some(end) = question_end {
        out.extend_from_slice(&request[HEADER_LEN..end]);
    }
    if let Some(e) = edns {
        #[expect(
            clippy::cast_possible_truncation,
            reason = "extended rcodes are 12 bits: the upper 8 fit in a byte"
        )]
        push_opt(out, server_payload, e.dnssec_ok, (rcode >> 4) as u8);
    }
}

/// Response sections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Section {
    Answer,
    Authority,
    Additional,
}

/// Where one record sits in a message.
#[derive(Clone, Debug)]
pub(crate) struct RrInfo {
    pub start: usize,
    pub section: Section,
    pub rtype: u16,
    pub ttl_offset: usize,
    pub ttl: u32,
    pub rdata: Range<usize>,
}

/// The layout of a whole message.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    #[cfg(test)]
    pub id: u16,
    pub flags: u16,
    pub qdcount: u16,
    /// End of the question section.
    pub question_end: usize,
    pub records: Vec<RrInfo>,
    /// End of the last record (trailing bytes, if any, follow).
    pub end: usize,
}

#[cfg(test)]
impl Layout {
    pub(crate) fn rcode(&self) -> u8 {
        (self.flags & 0xF) as u8
    }

    pub(crate) fn opt(&self) -> Option<&RrInfo> {
        self.records.iter().find(|r| r.rtype == TYPE_OPT)
    }
}

/// Errors of [`walk`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WireError {
    #[error("message shorter than a header")]
    Short,
    #[error("malformed name at offset {0}")]
    Name(usize),
    #[error("record truncated at offset {0}")]
    Truncated(usize),
    #[error("record data of type {0} does not match its length")]
    Rdata(u16),
}

/// Walks every section of `msg`.
pub(crate) fn walk(msg: &[u8]) -> Result<Layout, WireError> {
    if msg.len() < HEADER_LEN {
        return Err(WireError::Short);
    }
    let count = |at| u16::from_be_bytes([msg[at], msg[at + 1]]);
    let (qd, an, ns, ar) = (count(4), count(6), count(8), count(10));
    let mut pos = HEADER_LEN;
    for _ in 0..qd {
        pos = skip_wire_name(msg, pos).map_err(|_| WireError::Name(pos))? + 4;
        if pos > msg.len() {
            return Err(WireError::Truncated(pos));
        }
    }
    let question_end = pos;
    let total = usize::from(an) + usize::from(ns) + usize::from(ar);
    let mut records = Vec::with_capacity(total.min(64));
    for i in 0..total {
        let section = if i < usize::from(an) {
            Section::Answer
        } else if i < usize::from(an) + usize::from(ns) {
            Section::Authority
        } else {
            Section::Additional
        };
        let start = pos;
        let after = skip_wire_name(msg, pos).map_err(|_| WireError::Name(pos))?;
        let (Some(rtype), Some(ttl), Some(rdlen)) = (
            u16_at(msg, after),
            u32_at(msg, after + 4),
            u16_at(msg, after + 8),
        ) else {
            return Err(WireError::Truncated(after));
        };
        let rdata = after + 10..after + 10 + usize::from(rdlen);
        if rdata.end > msg.len() {
            return Err(WireError::Truncated(rdata.end));
        }
        pos = rdata.end;
        records.push(RrInfo {
            start,
            section,
            rtype,
            ttl_offset: after + 4,
            ttl,
            rdata,
        });
    }
    Ok(Layout {
        #[cfg(test)]
        id: count(0),
        flags: count(2),
        qdcount: qd,
        question_end,
        records,
        end: pos,
    })
}

/// Checks every name a client will decompress: record owners, and the names inside the data
/// of the types that may be compressed (RFC 3597 §4: NS, CNAME, SOA, PTR, MX; plus SRV and
/// DNAME, which decoders accept compressed). Pointers must point backwards, names must fit
/// their record data exactly. Run on every response before it is cached or served.
pub(crate) fn check_names(msg: &[u8], layout: &Layout) -> Result<(), WireError> {
    let name_at = |at: usize| read_wire_name(msg, at, |_| Ok(())).map_err(|_| WireError::Name(at));
    for rr in &layout.records {
        name_at(rr.start)?;
        let rdata = rr.rdata.clone();
        // (offset of the first name, number of names, fixed bytes after the names)
        let shape = match rr.rtype {
            2 | 5 | 12 | 39 => Some((0, 1, 0)),
            15 => Some((2, 1, 0)),
            33 => Some((6, 1, 0)),
            TYPE_SOA => Some((0, 2, 20)),
            _ => None,
        };
        let Some((offset, names, tail)) = shape else {
            continue;
        };
        let mut pos = rdata.start + offset;
        for _ in 0..names {
            if pos >= rdata.end {
                return Err(WireError::Rdata(rr.rtype));
            }
            pos = name_at(pos)?;
        }
        if pos + tail != rdata.end {
            return Err(WireError::Rdata(rr.rtype));
        }
    }
    Ok(())
}

/// The SOA MINIMUM field of an SOA record's rdata (its last four bytes).
pub(crate) fn soa_minimum(msg: &[u8], rr: &RrInfo) -> Option<u32> {
    if rr.rtype != TYPE_SOA || rr.rdata.len() < 22 {
        return None;
    }
    u32_at(msg, rr.rdata.end - 4)
}

/// Compares two uncompressed wire names case-insensitively.
pub(crate) fn names_equal_ignore_case(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.eq_ignore_ascii_case(y))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A query for `name` (text) and `qtype`, with optional EDNS (payload, DO).
    pub(crate) fn query(id: u16, name: &str, qtype: u16, edns: Option<(u16, bool)>) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&id.to_be_bytes());
        m.extend_from_slice(&FLAG_RD.to_be_bytes());
        m.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, u8::from(edns.is_some())]);
        let n: crate::Name = name.parse().unwrap();
        // Keep the caller's case: rebuild the labels from the text.
        for label in name
            .trim_end_matches('.')
            .split('.')
            .filter(|l| !l.is_empty())
        {
            m.push(u8::try_from(label.len()).unwrap());
            m.extend_from_slice(label.as_bytes());
        }
        m.push(0);
        assert_eq!(m.len() - HEADER_LEN, n.wire_len());
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&1u16.to_be_bytes());
        if let Some((payload, dnssec_ok)) = edns {
            push_opt(&mut m, payload, dnssec_ok, 0);
        }
        m
    }

    #[test]
    fn parses_a_plain_query() {
        let q = query(0x1234, "Www.Example.com", 1, None);
        let r = parse_request(&q).unwrap();
        assert_eq!(r.id, 0x1234);
        assert_eq!(r.qtype, 1);
        assert_eq!(r.qclass, 1);
        assert_eq!(r.qname_wire(), b"\x03Www\x07Example\x03com\x00");
        assert_eq!(r.edns, None);
        assert_eq!(r.udp_limit(1232), 512);
        assert_eq!(r.question_end(), q.len());
    }

    #[test]
    fn parses_edns() {
        let q = query(1, "a.b", 28, Some((4096, true)));
        let r = parse_request(&q).unwrap();
        assert_eq!(
            r.edns,
            Some(EdnsInfo {
                payload: 4096,
                dnssec_ok: true,
                version: 0
            })
        );
        assert!(r.dnssec_ok());
        assert_eq!(r.udp_limit(1232), 1232);
        let small = query(1, "a.b", 28, Some((100, false)));
        assert_eq!(parse_request(&small).unwrap().udp_limit(1232), 512);
    }

    #[test]
    fn rejects_what_is_not_a_standard_query() {
        assert_eq!(parse_request(b"short").unwrap_err(), Reject::Drop);
        let mut response = query(1, "a.b", 1, None);
        response[2] |= 0x80;
        assert_eq!(parse_request(&response).unwrap_err(), Reject::Drop);
        // Two questions.
        let mut two = query(1, "a.b", 1, None);
        two[5] = 2;
        assert!(matches!(
            parse_request(&two),
            Err(Reject::Error {
                rcode: 1,
                question_end: None,
                ..
            })
        ));
        // Opcode NOTIFY (4): NOTIMP, question echoed.
        let mut notify = query(1, "a.b", 1, None);
        notify[2] |= 4 << 3;
        assert!(matches!(
            parse_request(&notify),
            Err(Reject::Error {
                rcode: 4,
                question_end: Some(_),
                ..
            })
        ));
        // Compressed question name.
        let mut ptr = query(1, "a.b", 1, None);
        ptr.truncate(HEADER_LEN);
        ptr.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1]);
        assert!(matches!(
            parse_request(&ptr),
            Err(Reject::Error { rcode: 1, .. })
        ));
        // Truncated question.
        let q = query(1, "a.b", 1, None);
        assert!(matches!(
            parse_request(&q[..q.len() - 2]),
            Err(Reject::Error { rcode: 1, .. })
        ));
        // EDNS version 1: BADVERS with an OPT in the reply.
        let mut v1 = query(1, "a.b", 1, Some((1232, false)));
        let opt_ttl = v1.len() - 6;
        v1[opt_ttl + 1] = 1;
        assert!(matches!(
            parse_request(&v1),
            Err(Reject::Error {
                rcode: 16,
                edns: Some(_),
                ..
            })
        ));
        // Two OPT records.
        let mut two_opt = query(1, "a.b", 1, Some((1232, false)));
        push_opt(&mut two_opt, 1232, false, 0);
        two_opt[11] = 2;
        assert!(matches!(
            parse_request(&two_opt),
            Err(Reject::Error { rcode: 1, .. })
        ));
        // Over-long name.
        let mut long = query(1, "a", 1, None);
        long.truncate(HEADER_LEN);
        for _ in 0..5 {
            long.push(63);
            long.extend_from_slice(&[b'x'; 63]);
        }
        long.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert!(matches!(
            parse_request(&long),
            Err(Reject::Error { rcode: 1, .. })
        ));
    }

    #[test]
    fn error_replies_echo_id_question_and_opt() {
        let q = query(0xBEEF, "a.b", 1, Some((1232, true)));
        let mut out = Vec::new();
        let r = parse_request(&q).unwrap();
        write_error(&q, 2, Some(r.question_end()), r.edns, 1232, &mut out);
        let layout = walk(&out).unwrap();
        assert_eq!(layout.id, 0xBEEF);
        assert_eq!(layout.rcode(), 2);
        assert_ne!(layout.flags & FLAG_QR, 0);
        assert_ne!(layout.flags & FLAG_RD, 0);
        assert_eq!(layout.qdcount, 1);
        assert!(layout.opt().is_some());
        // BADVERS: rcode 16 = low 0 + high 1.
        write_error(
            &q,
            RCODE_BADVERS,
            Some(r.question_end()),
            r.edns,
            1232,
            &mut out,
        );
        let layout = walk(&out).unwrap();
        assert_eq!(layout.rcode(), 0);
        let opt = layout.opt().unwrap();
        assert_eq!(opt.ttl >> 24, 1);
    }

    #[test]
    fn walks_records_and_finds_ttls() {
        // Response: question a.b A, answer "a.b A 1.2.3.4" ttl 300 via pointer, SOA in authority.
        let mut m = query(7, "a.b", 1, None);
        m[2] |= 0x80;
        m[7] = 1; // ancount
        m[9] = 1; // nscount
        m.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 1, 44, 0, 4, 1, 2, 3, 4]);
        let soa_start = m.len();
        m.extend_from_slice(&[0xC0, 0x0E, 0, 6, 0, 1, 0, 0, 0, 60]);
        let rdata: Vec<u8> = [&[0xC0, 0x0E, 0xC0, 0x0E][..], &[0; 16], &[0, 0, 0, 30]].concat();
        m.extend_from_slice(&u16::try_from(rdata.len()).unwrap().to_be_bytes());
        m.extend_from_slice(&rdata);
        let layout = walk(&m).unwrap();
        assert_eq!(layout.records.len(), 2);
        assert_eq!(layout.records[0].ttl, 300);
        assert_eq!(layout.records[0].section, Section::Answer);
        assert_eq!(layout.records[1].start, soa_start);
        assert_eq!(layout.records[1].section, Section::Authority);
        assert_eq!(soa_minimum(&m, &layout.records[1]), Some(30));
        assert_eq!(layout.end, m.len());
        assert!(walk(&m[..m.len() - 1]).is_err());
        assert_eq!(check_names(&m, &layout), Ok(()));
        // A forward pointer in the SOA's data.
        let mut bad = m.clone();
        let mname = layout.records[1].rdata.start;
        bad[mname + 1] = 0xF0;
        assert!(matches!(
            check_names(&bad, &walk(&bad).unwrap()),
            Err(WireError::Name(_))
        ));
        // An SOA whose data is one byte longer than its names and numbers.
        let mut long = m.clone();
        long.push(0);
        let len_at = layout.records[1].rdata.start - 2;
        long[len_at + 1] += 1;
        assert_eq!(
            check_names(&long, &walk(&long).unwrap()),
            Err(WireError::Rdata(TYPE_SOA))
        );
        assert!(names_equal_ignore_case(b"\x01A\x00", b"\x01a\x00"));
        assert!(!names_equal_ignore_case(b"\x01A\x00", b"\x01b\x00"));
    }
}
