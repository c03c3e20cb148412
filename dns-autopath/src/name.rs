//! Domain names in canonical form.
//!
//! A [`Name`] is always absolute and lower-case (DNS comparisons are case-insensitive, RFC 4343),
//! and is stored in wire format (length-prefixed labels ending in the root label), so that suffix
//! tests, hashing and cache keys work on bytes without re-encoding. Text forms with and without
//! a trailing dot parse to the same name: on the wire every name is absolute, and whether a
//! *client* treated a name as relative is something only its stub resolver knows.

use std::{fmt, str::FromStr};

use crate::error::NameError;

/// Longest name in wire format, root label included (RFC 1035 §2.3.4).
pub const MAX_NAME_LEN: usize = 255;
/// Longest label (RFC 1035 §2.3.4).
pub const MAX_LABEL_LEN: usize = 63;

/// An absolute, lower-case domain name.
///
/// ```
/// use cnikit_dns_autopath::Name;
///
/// let name: Name = "Web.Prod.svc.cluster.local".parse().unwrap();
/// assert_eq!(name.to_string(), "web.prod.svc.cluster.local.");
/// assert_eq!(name, "web.prod.svc.cluster.local.".parse().unwrap());
/// let zone: Name = "cluster.local".parse().unwrap();
/// assert!(name.is_subdomain_of(&zone));
/// assert_eq!(name.label_count(), 5);
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name {
    /// Wire format, lower-case ASCII letters, ends with the root label (a zero byte).
    wire: Box<[u8]>,
}

impl Name {
    /// The root name, `.`.
    #[must_use]
    pub fn root() -> Self {
        Self {
            wire: Box::new([0]),
        }
    }

    /// Builds a name from labels, most specific first (`["www", "example", "com"]`).
    ///
    /// Labels are raw bytes (no escapes); ASCII letters are lower-cased.
    ///
    /// # Errors
    /// When a label is empty or longer than 63 bytes, or the name exceeds 255 bytes.
    pub fn from_labels<I, L>(labels: I) -> Result<Self, NameError>
    where
        I: IntoIterator<Item = L>,
        L: AsRef<[u8]>,
    {
        let mut wire = Vec::with_capacity(32);
        for label in labels {
            push_label(&mut wire, label.as_ref())?;
        }
        finish(wire)
    }

    /// Parses a name from wire format starting at `msg[start]`, following compression pointers
    /// within `msg`. Returns the name and the offset just after it at `start`.
    ///
    /// # Errors
    /// On truncation, bad label types, pointer loops or over-long names.
    pub fn from_wire(msg: &[u8], start: usize) -> Result<(Self, usize), NameError> {
        let mut wire = Vec::with_capacity(32);
        let end = read_wire_name(msg, start, |label| push_label(&mut wire, label))?;
        Ok((finish(wire)?, end))
    }

    /// Parses wire format that must be exactly one uncompressed name (no pointers, no trailing
    /// bytes); letters are lower-cased.
    ///
    /// # Errors
    /// When `wire` is not exactly one valid name.
    pub fn from_uncompressed_wire(wire: &[u8]) -> Result<Self, NameError> {
        let mut pos = 0;
        loop {
            let Some(&len) = wire.get(pos) else {
                return Err(NameError::Truncated);
            };
            if len == 0 {
                break;
            }
            if usize::from(len) > MAX_LABEL_LEN {
                return Err(NameError::BadLabelType(len));
            }
            pos += 1 + usize::from(len);
        }
        if pos + 1 != wire.len() {
            return Err(NameError::TrailingBytes);
        }
        if wire.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong(wire.len()));
        }
        Ok(Self {
            wire: wire.iter().map(u8::to_ascii_lowercase).collect(),
        })
    }

    /// The wire form (lower-case, uncompressed, root label included).
    #[must_use]
    pub fn as_wire(&self) -> &[u8] {
        &self.wire
    }

    /// Length of the wire form.
    #[must_use]
    pub fn wire_len(&self) -> usize {
        self.wire.len()
    }

    /// True for the root name.
    #[must_use]
    pub fn is_root(&self) -> bool {
        self.wire.len() == 1
    }

    /// The labels, most specific first; the root label is not included.
    pub fn labels(&self) -> Labels<'_> {
        Labels {
            wire: &self.wire,
            pos: 0,
        }
    }

    /// Number of labels, root excluded (`www.example.com.` has 3).
    #[must_use]
    pub fn label_count(&self) -> usize {
        self.labels().count()
    }

    /// Number of dots a user would have typed for this name without a trailing dot
    /// (`label_count - 1`, 0 for the root): what a stub resolver compares with `ndots`.
    #[must_use]
    pub fn dots(&self) -> usize {
        self.label_count().saturating_sub(1)
    }

    /// The first (most specific) label, if any.
    #[must_use]
    pub fn first_label(&self) -> Option<&[u8]> {
        self.labels().next()
    }

    /// True when `self` equals `zone` or lies below it.
    #[must_use]
    pub fn is_subdomain_of(&self, zone: &Self) -> bool {
        self.suffix_start(zone).is_some()
    }

    /// True when `self` lies strictly below `zone` (at least one more label).
    #[must_use]
    pub fn is_strict_subdomain_of(&self, zone: &Self) -> bool {
        matches!(self.suffix_start(zone), Some(start) if start > 0)
    }

    /// Offset in the wire form where `zone` starts as a suffix on a label boundary.
    fn suffix_start(&self, zone: &Self) -> Option<usize> {
        wire_suffix_start(&self.wire, &zone.wire)
    }

    /// `self` with the suffix `zone` removed (`web.prod.svc.cluster.local.` minus
    /// `prod.svc.cluster.local.` is `web.`); `None` unless `self` is strictly below `zone`.
    #[must_use]
    pub fn strip_suffix(&self, zone: &Self) -> Option<Self> {
        let start = self.suffix_start(zone)?;
        if start == 0 {
            return None;
        }
        let mut wire = Vec::with_capacity(start + 1);
        wire.extend_from_slice(&self.wire[..start]);
        wire.push(0);
        Some(Self { wire: wire.into() })
    }

    /// `self` followed by `suffix` (`web.` + `svc.cluster.local.`); the root suffix returns
    /// `self` unchanged.
    ///
    /// # Errors
    /// When the result would exceed 255 bytes.
    pub fn join(&self, suffix: &Self) -> Result<Self, NameError> {
        let len = self.wire.len() - 1 + suffix.wire.len();
        if len > MAX_NAME_LEN {
            return Err(NameError::TooLong(len));
        }
        let mut wire = Vec::with_capacity(len);
        wire.extend_from_slice(&self.wire[..self.wire.len() - 1]);
        wire.extend_from_slice(&suffix.wire);
        Ok(Self { wire: wire.into() })
    }

    /// A name with `label` prepended (`prepend(b"www")` on `example.com.`).
    ///
    /// # Errors
    /// When the label is empty or too long, or the name would exceed 255 bytes.
    pub fn prepend(&self, label: &[u8]) -> Result<Self, NameError> {
        let mut wire = Vec::with_capacity(self.wire.len() + 1 + label.len());
        push_label(&mut wire, label)?;
        // `self` ends with the root label, which `finish` adds back.
        wire.extend_from_slice(&self.wire[..self.wire.len() - 1]);
        finish(wire)
    }

    /// The parent name (`example.com.` for `www.example.com.`); `None` for the root.
    #[must_use]
    pub fn parent(&self) -> Option<Self> {
        if self.is_root() {
            return None;
        }
        let skip = 1 + usize::from(self.wire[0]);
        Some(Self {
            wire: self.wire[skip..].into(),
        })
    }
}

/// Iterator over the labels of a [`Name`].
#[derive(Clone, Debug)]
pub struct Labels<'a> {
    wire: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for Labels<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<Self::Item> {
        let len = usize::from(*self.wire.get(self.pos)?);
        if len == 0 {
            return None;
        }
        let label = self.wire.get(self.pos + 1..self.pos + 1 + len)?;
        self.pos += 1 + len;
        Some(label)
    }
}

/// Offset in `wire` (an uncompressed name) where `zone` (another) starts as a suffix on a label
/// boundary; both must be in the same case.
pub(crate) fn wire_suffix_start(wire: &[u8], zone: &[u8]) -> Option<usize> {
    let start = wire.len().checked_sub(zone.len())?;
    if wire[start..] != *zone {
        return None;
    }
    // `start` must be a label boundary of `wire`.
    let mut pos = 0;
    while pos < start {
        pos += 1 + usize::from(wire[pos]);
    }
    (pos == start).then_some(start)
}

/// The labels of an uncompressed wire name, with their offsets.
pub(crate) fn wire_label_offsets(wire: &[u8]) -> impl Iterator<Item = usize> + '_ {
    let mut pos = 0;
    std::iter::from_fn(move || {
        let len = usize::from(*wire.get(pos)?);
        if len == 0 {
            return None;
        }
        let at = pos;
        pos += 1 + len;
        Some(at)
    })
}

fn push_label(wire: &mut Vec<u8>, label: &[u8]) -> Result<(), NameError> {
    if label.is_empty() {
        return Err(NameError::EmptyLabel);
    }
    if label.len() > MAX_LABEL_LEN {
        return Err(NameError::LabelTooLong(label.len()));
    }
    // Checked here so that a hostile label sequence cannot grow the buffer without bound.
    if wire.len() + 1 + label.len() + 1 > MAX_NAME_LEN {
        return Err(NameError::TooLong(wire.len() + 1 + label.len() + 1));
    }
    #[expect(
        clippy::cast_possible_truncation,
        reason = "label.len() <= 63 was checked above"
    )]
    wire.push(label.len() as u8);
    wire.extend(label.iter().map(u8::to_ascii_lowercase));
    Ok(())
}

fn finish(mut wire: Vec<u8>) -> Result<Name, NameError> {
    wire.push(0);
    if wire.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong(wire.len()));
    }
    Ok(Name { wire: wire.into() })
}

/// Walks a possibly compressed wire name at `msg[start]`, calling `label` for each label, and
/// returns the offset just past the name at `start`.
///
/// Pointers must point strictly backwards (which also rules out loops), and the expanded name
/// must fit in 255 bytes.
pub(crate) fn read_wire_name(
    msg: &[u8],
    start: usize,
    mut label: impl FnMut(&[u8]) -> Result<(), NameError>,
) -> Result<usize, NameError> {
    let mut pos = start;
    let mut end = None;
    let mut expanded = 0usize;
    // Every pointer jumps strictly backwards, so the walk terminates.
    let mut lowest = start;
    loop {
        let &len = msg.get(pos).ok_or(NameError::Truncated)?;
        match len & 0xC0 {
            0x00 => {
                let len = usize::from(len);
                if len == 0 {
                    return Ok(end.unwrap_or(pos + 1));
                }
                let bytes = msg
                    .get(pos + 1..pos + 1 + len)
                    .ok_or(NameError::Truncated)?;
                expanded += 1 + len;
                if expanded + 1 > MAX_NAME_LEN {
                    return Err(NameError::TooLong(expanded + 1));
                }
                label(bytes)?;
                pos += 1 + len;
            }
            0xC0 => {
                let &low = msg.get(pos + 1).ok_or(NameError::Truncated)?;
                let target = (usize::from(len & 0x3F) << 8) | usize::from(low);
                if target >= lowest {
                    return Err(NameError::BadPointer(target));
                }
                end.get_or_insert(pos + 2);
                lowest = target;
                pos = target;
            }
            _ => return Err(NameError::BadLabelType(len)),
        }
    }
}

/// Skips a possibly compressed wire name at `msg[start]` and returns the offset after it.
pub(crate) fn skip_wire_name(msg: &[u8], start: usize) -> Result<usize, NameError> {
    let mut pos = start;
    let mut expanded = 0usize;
    loop {
        let &len = msg.get(pos).ok_or(NameError::Truncated)?;
        match len & 0xC0 {
            0x00 if len == 0 => return Ok(pos + 1),
            0x00 => {
                expanded += 1 + usize::from(len);
                if expanded + 1 > MAX_NAME_LEN {
                    return Err(NameError::TooLong(expanded + 1));
                }
                pos += 1 + usize::from(len);
            }
            // A pointer ends the name at this position; where it points is checked on use.
            0xC0 if pos + 1 < msg.len() => return Ok(pos + 2),
            0xC0 => return Err(NameError::Truncated),
            _ => return Err(NameError::BadLabelType(len)),
        }
    }
}

impl FromStr for Name {
    type Err = NameError;

    /// Parses presentation format: dot-separated labels, an optional trailing dot, `\.` and
    /// `\DDD` escapes. `.` alone is the root.
    fn from_str(text: &str) -> Result<Self, NameError> {
        if text == "." {
            return Ok(Self::root());
        }
        if text.is_empty() {
            return Err(NameError::EmptyLabel);
        }
        let bytes = text.as_bytes();
        let mut wire = Vec::with_capacity(bytes.len() + 2);
        let mut label = Vec::with_capacity(MAX_LABEL_LEN);
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'.' => {
                    push_label(&mut wire, &label)?;
                    label.clear();
                    i += 1;
                }
                b'\\' => {
                    let digits = bytes.get(i + 1..i + 4);
                    if let Some(d) = digits.filter(|d| d.iter().all(u8::is_ascii_digit)) {
                        let value = d.iter().fold(0u32, |acc, c| acc * 10 + u32::from(c - b'0'));
                        let byte =
                            u8::try_from(value).map_err(|_| NameError::BadEscape(text.into()))?;
                        label.push(byte);
                        i += 4;
                    } else if let Some(&c) = bytes.get(i + 1) {
                        label.push(c);
                        i += 2;
                    } else {
                        return Err(NameError::BadEscape(text.into()));
                    }
                }
                c => {
                    label.push(c);
                    i += 1;
                }
            }
            if label.len() > MAX_LABEL_LEN {
                return Err(NameError::LabelTooLong(label.len()));
            }
        }
        if !label.is_empty() {
            push_label(&mut wire, &label)?;
        }
        finish(wire)
    }
}

impl TryFrom<&str> for Name {
    type Error = NameError;

    fn try_from(text: &str) -> Result<Self, NameError> {
        text.parse()
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_root() {
            return f.write_str(".");
        }
        for label in self.labels() {
            for &b in label {
                match b {
                    b'.' | b'\\' | b'"' | b'(' | b')' | b';' | b'@' | b'$' => {
                        write!(f, "\\{}", char::from(b))?;
                    }
                    0x21..=0x7E => write!(f, "{}", char::from(b))?,
                    _ => write!(f, "\\{b:03}")?,
                }
            }
            f.write_str(".")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Name({self})")
    }
}

impl serde::Serialize for Name {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Name {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Name {
        s.parse().unwrap()
    }

    #[test]
    fn trailing_dot_and_case_do_not_matter() {
        assert_eq!(n("WWW.Example.COM"), n("www.example.com."));
        assert_eq!(
            n("www.example.com").as_wire(),
            b"\x03www\x07example\x03com\x00"
        );
        assert_eq!(n(".").as_wire(), b"\x00");
        assert!(n(".").is_root());
        assert_eq!(n(".").to_string(), ".");
    }

    #[test]
    fn rejects_empty_labels_and_long_names() {
        assert_eq!("a..b".parse::<Name>(), Err(NameError::EmptyLabel));
        assert_eq!("".parse::<Name>(), Err(NameError::EmptyLabel));
        assert_eq!("..".parse::<Name>(), Err(NameError::EmptyLabel));
        let long_label = "a".repeat(64);
        assert_eq!(long_label.parse::<Name>(), Err(NameError::LabelTooLong(64)));
        // 4 labels of 63 = 4*64 + 1 = 257 bytes.
        let label = "a".repeat(63);
        let long = [label.as_str(); 4].join(".");
        assert!(matches!(long.parse::<Name>(), Err(NameError::TooLong(_))));
        // 3 labels of 63 + one of 61 = 255 bytes: the longest legal name.
        let longest = format!("{}.{}", [label.as_str(); 3].join("."), "b".repeat(61));
        assert_eq!(longest.parse::<Name>().unwrap().wire_len(), 255);
    }

    #[test]
    fn escapes_round_trip() {
        let name = n(r"a\.b.c\065");
        assert_eq!(name.labels().collect::<Vec<_>>(), vec![&b"a.b"[..], b"ca"]);
        assert_eq!(name.to_string(), r"a\.b.ca.");
        assert_eq!(n(&name.to_string()), name);
        assert!(matches!(
            r"a\999".parse::<Name>(),
            Err(NameError::BadEscape(_))
        ));
        assert!(matches!(
            r"a\".parse::<Name>(),
            Err(NameError::BadEscape(_))
        ));
        let odd = Name::from_labels([&b"sp ace\x01"[..]]).unwrap();
        assert_eq!(odd.to_string(), r"sp\032ace\001.");
    }

    #[test]
    fn suffix_operations_respect_label_boundaries() {
        let name = n("web.prod.svc.cluster.local");
        let zone = n("cluster.local");
        assert!(name.is_subdomain_of(&zone));
        assert!(name.is_strict_subdomain_of(&zone));
        assert!(zone.is_subdomain_of(&zone));
        assert!(!zone.is_strict_subdomain_of(&zone));
        // "xcluster.local" ends with the bytes of "cluster.local" minus its length byte, and
        // "b.local" inside "ab.local" must not match either.
        assert!(!n("xcluster.local").is_subdomain_of(&zone));
        assert!(!n("ab.local").is_subdomain_of(&n("b.local")));
        assert!(name.is_subdomain_of(&Name::root()));
        assert_eq!(
            name.strip_suffix(&n("prod.svc.cluster.local")),
            Some(n("web"))
        );
        assert_eq!(name.strip_suffix(&name), None);
        assert_eq!(name.strip_suffix(&n("other.local")), None);
        assert_eq!(
            n("web").join(&n("svc.cluster.local")).unwrap(),
            n("web.svc.cluster.local")
        );
        assert_eq!(n("web").join(&Name::root()).unwrap(), n("web"));
        assert_eq!(zone.prepend(b"SVC").unwrap(), n("svc.cluster.local"));
        assert_eq!(name.parent(), Some(n("prod.svc.cluster.local")));
        assert_eq!(Name::root().parent(), None);
        assert_eq!(name.label_count(), 5);
        assert_eq!(name.dots(), 4);
        assert_eq!(Name::root().dots(), 0);
        assert_eq!(name.first_label(), Some(&b"web"[..]));
    }

    #[test]
    fn join_checks_length() {
        let label = "a".repeat(63);
        let big = n(&[label.as_str(); 3].join("."));
        assert!(matches!(big.join(&big), Err(NameError::TooLong(_))));
    }

    #[test]
    fn wire_names_with_compression() {
        // Header-less toy message: "example.com." at 0, then "www" + pointer to 0.
        let msg = b"\x07example\x03com\x00\x03WWW\xC0\x00";
        let (first, end) = Name::from_wire(msg, 0).unwrap();
        assert_eq!(first, n("example.com"));
        assert_eq!(end, 13);
        let (second, end) = Name::from_wire(msg, 13).unwrap();
        assert_eq!(second, n("www.example.com"));
        assert_eq!(end, msg.len());
        assert_eq!(skip_wire_name(msg, 13).unwrap(), msg.len());
        // A pointer to itself or forwards is rejected.
        assert_eq!(
            Name::from_wire(b"\xC0\x00", 0),
            Err(NameError::BadPointer(0))
        );
        assert_eq!(
            Name::from_wire(b"\x01a\xC0\x05\x00\x00", 0),
            Err(NameError::BadPointer(5))
        );
        assert_eq!(Name::from_wire(b"\x03ab", 0), Err(NameError::Truncated));
        assert_eq!(
            Name::from_wire(b"\x80", 0),
            Err(NameError::BadLabelType(0x80))
        );
        assert_eq!(Name::from_uncompressed_wire(b"\x01A\x00").unwrap(), n("a"));
        assert_eq!(
            Name::from_uncompressed_wire(b"\x01a\x00\x00"),
            Err(NameError::TrailingBytes)
        );
    }

    #[test]
    fn serde_uses_text() {
        let name: Name = serde_json::from_str("\"Cluster.Local\"").unwrap();
        assert_eq!(name, n("cluster.local."));
        assert_eq!(serde_json::to_string(&name).unwrap(), "\"cluster.local.\"");
    }
}
