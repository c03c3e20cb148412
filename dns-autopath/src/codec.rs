//! Conversions to and from `hickory-proto` (slow path only; never in the public API).

use hickory_proto::{
    op::{Message, MessageType, OpCode, Query, ResponseCode},
    rr::{
        self as h, DNSClass as HClass, RData, RecordType as HType,
        rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT},
    },
};

use crate::{Name, Record, RecordData, RecordType};

/// Our name as a hickory name.
pub(crate) fn name(n: &Name) -> h::Name {
    // Our names are valid by construction (label and length limits checked), so hickory
    // accepts their labels as raw bytes.
    h::Name::from_labels(n.labels()).unwrap_or_else(|_| h::Name::root())
}

/// A hickory name as ours (lower-cased).
#[cfg(test)]
pub(crate) fn from_name(n: &h::Name) -> Option<Name> {
    Name::from_labels(n.iter()).ok()
}

fn i32_of(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

/// Our record as a hickory record of class IN.
pub(crate) fn record(r: &Record) -> h::Record {
    let data = match &r.data {
        RecordData::A(ip) => RData::A(A(*ip)),
        RecordData::Aaaa(ip) => RData::AAAA(AAAA(*ip)),
        RecordData::Cname(n) => RData::CNAME(CNAME(name(n))),
        RecordData::Ptr(n) => RData::PTR(PTR(name(n))),
        RecordData::Ns(n) => RData::NS(NS(name(n))),
        RecordData::Srv {
            priority,
            weight,
            port,
            target,
        } => RData::SRV(SRV::new(*priority, *weight, *port, name(target))),
        RecordData::Txt(strings) => RData::TXT(TXT::new(strings.clone())),
        RecordData::Soa {
            mname,
            rname,
            serial,
            refresh,
            retry,
            expire,
            minimum,
        } => RData::SOA(SOA::new(
            name(mname),
            name(rname),
            *serial,
            i32_of(*refresh),
            i32_of(*retry),
            i32_of(*expire),
            *minimum,
        )),
    };
    h::Record::from_rdata(name(&r.name), r.ttl, data)
}

/// An empty response for one question.
pub(crate) fn response(qname: &Name, qtype: RecordType, qclass: u16, rcode: u8) -> Message {
    let mut m = Message::new(0, MessageType::Response, OpCode::Query);
    m.metadata.recursion_available = true;
    m.metadata.response_code = ResponseCode::from(0, rcode);
    let mut q = Query::query(name(qname), HType::from(qtype.0));
    q.set_query_class(HClass::from(qclass));
    m.add_query(q);
    m
}

/// Encodes a message; `None` only if hickory refuses (over-long message).
pub(crate) fn encode(m: &Message) -> Option<Vec<u8>> {
    m.to_vec().ok()
}

/// Decodes a message.
pub(crate) fn decode(wire: &[u8]) -> Option<Message> {
    Message::from_vec(wire).ok()
}

/// The AutoPath answer: `found` (the response for `found_name`) re-addressed to `asked`.
///
/// The question becomes `asked`; a CNAME `asked -> <owner of the first answer record not named
/// asked>` goes first, then `found`'s records, with TTLs decremented by `age` seconds. For a
/// NODATA `found`, the CNAME points at `found_name` and takes the negative TTL (`nodata_ttl`),
/// so the client learns where the search ended (CoreDNS returns the NODATA under the asked name
/// instead, which A/AAAA clients can read as "the first search step exists").
pub(crate) fn synthesize(
    asked: &Name,
    qtype: RecordType,
    qclass: u16,
    found_name: &Name,
    found: &[u8],
    age: u32,
    nodata_ttl: u32,
) -> Option<Vec<u8>> {
    let mut found = decode(found)?;
    let rcode = found.metadata.response_code;
    let mut m = response(asked, qtype, qclass, 0);
    m.metadata.response_code = rcode;
    m.metadata.authoritative = false;
    m.metadata.authentic_data = found.metadata.authentic_data;
    let decrement = |r: &mut h::Record| r.ttl = r.ttl.saturating_sub(age);
    found.answers.iter_mut().for_each(decrement);
    found.authorities.iter_mut().for_each(decrement);
    found.additionals.iter_mut().for_each(decrement);
    let asked_h = name(asked);
    let (target, ttl) = match found.answers.iter().find(|r| r.name != asked_h) {
        Some(r) => (r.name.clone(), r.ttl),
        None => (name(found_name), nodata_ttl.saturating_sub(age)),
    };
    let cname = h::Record::from_rdata(asked_h, ttl, RData::CNAME(CNAME(target)));
    m.add_answer(cname);
    m.add_answers(found.answers);
    m.add_authorities(found.authorities);
    m.add_additionals(found.additionals);
    encode(&m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Name {
        s.parse().unwrap()
    }

    #[test]
    fn records_round_trip_through_hickory() {
        let srv = Record::new(
            n("_http._tcp.web.prod.svc.cluster.local"),
            5,
            RecordData::Srv {
                priority: 0,
                weight: 100,
                port: 80,
                target: n("web.prod.svc.cluster.local"),
            },
        );
        let mut m = response(&srv.name, RecordType::SRV, 1, 0);
        m.add_answer(record(&srv));
        let wire = encode(&m).unwrap();
        let back = decode(&wire).unwrap();
        assert_eq!(back.answers.len(), 1);
        assert_eq!(back.answers[0].ttl, 5);
        assert_eq!(from_name(&back.answers[0].name), Some(srv.name.clone()));
        assert_eq!(back.queries[0].query_type(), HType::SRV);
    }

    #[test]
    fn synthesis_prepends_a_cname_and_keeps_the_asked_question() {
        let found_name = n("www.example.test");
        let mut found = response(&found_name, RecordType::A, 1, 0);
        found.add_answer(record(&Record::new(
            found_name.clone(),
            300,
            RecordData::A("198.18.100.1".parse().unwrap()),
        )));
        let found_wire = encode(&found).unwrap();
        let asked = n("www.example.test.prod.svc.cluster.local");
        let wire = synthesize(&asked, RecordType::A, 1, &found_name, &found_wire, 10, 5).unwrap();
        let m = decode(&wire).unwrap();
        assert_eq!(from_name(m.queries[0].name()), Some(asked.clone()));
        assert_eq!(m.answers.len(), 2);
        assert_eq!(from_name(&m.answers[0].name), Some(asked));
        assert_eq!(m.answers[0].data, RData::CNAME(CNAME(name(&found_name))));
        assert_eq!(m.answers[0].ttl, 290);
        assert_eq!(m.answers[1].ttl, 290);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    }

    #[test]
    fn synthesis_of_nodata_points_at_the_found_name() {
        let found_name = n("www.example.test");
        let found = encode(&response(&found_name, RecordType::AAAA, 1, 0)).unwrap();
        let asked = n("www.example.test.prod.svc.cluster.local");
        let wire = synthesize(&asked, RecordType::AAAA, 1, &found_name, &found, 1, 5).unwrap();
        let m = decode(&wire).unwrap();
        assert_eq!(m.answers.len(), 1);
        assert_eq!(m.answers[0].data, RData::CNAME(CNAME(name(&found_name))));
        assert_eq!(m.answers[0].ttl, 4);
        assert!(synthesize(&asked, RecordType::A, 1, &found_name, b"junk", 0, 5).is_none());
    }
}
