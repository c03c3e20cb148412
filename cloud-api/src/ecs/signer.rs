//! RPC signature version 1.0 (HMAC-SHA1), byte for byte as the official SDKs compute it
//! (ecs-api.md §1).
//!
//! ```
//! use cnikit_cloud_api::ecs::signer;
//!
//! // The documented DescribeRegions example.
//! let params = [
//!     ("AccessKeyId", "testid"),
//!     ("Action", "DescribeRegions"),
//!     ("Format", "XML"),
//!     ("SignatureMethod", "HMAC-SHA1"),
//!     ("SignatureNonce", "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"),
//!     ("SignatureVersion", "1.0"),
//!     ("Timestamp", "2016-02-23T12:46:24Z"),
//!     ("Version", "2014-05-26"),
//! ];
//! let sts = signer::string_to_sign("GET", params);
//! assert_eq!(signer::sign(&sts, "testsecret"), "OLeaidS1JvxuMvnyHOwuJ+uX5qY=");
//! ```

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;

/// Appends the RFC 3986 encoding of `s` to `out`: `A–Z a–z 0–9 - _ . ~` stay, every other byte
/// of the UTF-8 encoding becomes `%XY` with uppercase hex (space is `%20`, `*` is `%2A`).
pub fn percent_encode_into(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xF)]));
        }
    }
}

/// The RFC 3986 encoding of `s` (see [`percent_encode_into`]).
#[must_use]
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 2);
    percent_encode_into(s, &mut out);
    out
}

/// The canonicalized query string: parameters (without `Signature`) sorted by the byte order of
/// their raw names, each `enc(name)=enc(value)`, joined by `&`.
#[must_use]
pub fn canonical_query<K, V>(params: impl IntoIterator<Item = (K, V)>) -> String
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    let mut pairs: Vec<(K, V)> = params
        .into_iter()
        .filter(|(k, _)| k.as_ref() != "Signature")
        .collect();
    // Stable sort by raw bytes; equal names (not produced by our encoders) keep their order.
    pairs.sort_by(|a, b| a.0.as_ref().as_bytes().cmp(b.0.as_ref().as_bytes()));
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        percent_encode_into(k.as_ref(), &mut out);
        out.push('=');
        percent_encode_into(v.as_ref(), &mut out);
    }
    out
}

/// `METHOD&%2F&enc(canonical query)`.
#[must_use]
pub fn string_to_sign<K, V>(method: &str, params: impl IntoIterator<Item = (K, V)>) -> String
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    let canonical = canonical_query(params);
    let mut out = String::with_capacity(method.len() + 4 + canonical.len() * 5 / 4);
    out.push_str(method);
    out.push_str("&%2F&");
    percent_encode_into(&canonical, &mut out);
    out
}

/// `Base64(HMAC-SHA1(secret + "&", string_to_sign))`.
#[must_use]
pub fn sign(string_to_sign: &str, access_key_secret: &str) -> String {
    let mut key = Vec::with_capacity(access_key_secret.len() + 1);
    key.extend_from_slice(access_key_secret.as_bytes());
    key.push(b'&');
    let mut mac =
        <Hmac<Sha1> as KeyInit>::new_from_slice(&key).expect("HMAC accepts keys of any length");
    mac.update(string_to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Formats a `Timestamp` parameter: UTC, `yyyy-MM-ddTHH:mm:ssZ`.
#[must_use]
pub fn format_timestamp(t: std::time::SystemTime) -> String {
    crate::timefmt::format_utc(t)
}

/// Compares two signatures in time independent of where they differ.
#[must_use]
pub fn signatures_equal(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Decodes `%XY` escapes (and `+` as space when `plus_is_space`); `None` on a malformed escape
/// or invalid UTF-8.
#[must_use]
pub fn percent_decode(s: &str, plus_is_space: bool) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = |c: u8| char::from(c).to_digit(16);
                let hi = hex(*bytes.get(i + 1)?)?;
                let lo = hex(*bytes.get(i + 2)?)?;
                out.push(u8::try_from(hi * 16 + lo).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Parses `a=b&c=d` (form or query syntax, `+` is a space) into pairs; `None` when malformed.
#[must_use]
pub fn parse_form(s: &str) -> Option<Vec<(String, String)>> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((percent_decode(k, true)?, percent_decode(v, true)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector(method: &str, secret: &str, params: &[(&str, &str)], sts: &str, sig: &str) {
        let got = string_to_sign(method, params.iter().copied());
        assert_eq!(got, sts);
        assert_eq!(sign(&got, secret), sig);
    }

    #[test]
    fn documented_describe_regions_example() {
        let params = [
            ("AccessKeyId", "testid"),
            ("Action", "DescribeRegions"),
            ("Format", "XML"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"),
            ("SignatureVersion", "1.0"),
            ("Timestamp", "2016-02-23T12:46:24Z"),
            ("Version", "2014-05-26"),
        ];
        vector(
            "GET",
            "testsecret",
            &params,
            "GET&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeRegions%26Format%3DXML%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf%26SignatureVersion%3D1.0%26Timestamp%3D2016-02-23T12%253A46%253A24Z%26Version%3D2014-05-26",
            "OLeaidS1JvxuMvnyHOwuJ+uX5qY=",
        );
        // The historical `TimeStamp` spelling signs differently.
        let mut old = params;
        old[6].0 = "TimeStamp";
        assert_eq!(
            sign(&string_to_sign("GET", old), "testsecret"),
            "CT9X0VtwR86fNWSnsc6v8YGOjuE="
        );
    }

    #[test]
    fn vector_a_sts_token_repeated_params_paging() {
        let params = [
            ("AccessKeyId", "testid"),
            ("Action", "DescribeNetworkInterfaces"),
            ("Format", "JSON"),
            ("MaxResults", "100"),
            ("NetworkInterfaceId.1", "eni-bp1aaaaaaaaaaaaaaaaa"),
            ("NetworkInterfaceId.2", "eni-bp1bbbbbbbbbbbbbbbbb"),
            ("NextToken", "caeba0bbb2be03f84eb48b699f0a4883"),
            ("RegionId", "cn-hangzhou"),
            ("SecurityToken", "CAIS+token/with=special+chars"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", "c0ffee00-0000-4000-8000-000000000001"),
            ("SignatureVersion", "1.0"),
            ("Timestamp", "2024-01-02T03:04:05Z"),
            ("Version", "2014-05-26"),
        ];
        assert_eq!(
            canonical_query(params.iter().rev().copied()),
            "AccessKeyId=testid&Action=DescribeNetworkInterfaces&Format=JSON&MaxResults=100&NetworkInterfaceId.1=eni-bp1aaaaaaaaaaaaaaaaa&NetworkInterfaceId.2=eni-bp1bbbbbbbbbbbbbbbbb&NextToken=caeba0bbb2be03f84eb48b699f0a4883&RegionId=cn-hangzhou&SecurityToken=CAIS%2Btoken%2Fwith%3Dspecial%2Bchars&SignatureMethod=HMAC-SHA1&SignatureNonce=c0ffee00-0000-4000-8000-000000000001&SignatureVersion=1.0&Timestamp=2024-01-02T03%3A04%3A05Z&Version=2014-05-26"
        );
        vector(
            "GET",
            "testsecret",
            &params,
            "GET&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeNetworkInterfaces%26Format%3DJSON%26MaxResults%3D100%26NetworkInterfaceId.1%3Deni-bp1aaaaaaaaaaaaaaaaa%26NetworkInterfaceId.2%3Deni-bp1bbbbbbbbbbbbbbbbb%26NextToken%3Dcaeba0bbb2be03f84eb48b699f0a4883%26RegionId%3Dcn-hangzhou%26SecurityToken%3DCAIS%252Btoken%252Fwith%253Dspecial%252Bchars%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3Dc0ffee00-0000-4000-8000-000000000001%26SignatureVersion%3D1.0%26Timestamp%3D2024-01-02T03%253A04%253A05Z%26Version%3D2014-05-26",
            "lsUbR70/wNpvFBfuWT9rx2SbnSg=",
        );
    }

    #[test]
    fn vector_b_post_secret_with_special_chars() {
        let params = [
            ("AccessKeyId", "testid"),
            ("Action", "AssignPrivateIpAddresses"),
            ("ClientToken", "0c593ea1-3bea-11e9-b96b-88e9fe637760"),
            ("Format", "JSON"),
            ("NetworkInterfaceId", "eni-2zeaaaaaaaaaaaaaaaaa"),
            ("RegionId", "cn-beijing"),
            ("SecondaryPrivateIpAddressCount", "10"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", "5f6c3b0e9a7d4e21b3a2c1d0e9f8a7b6"),
            ("SignatureVersion", "1.0"),
            ("Timestamp", "2024-05-06T07:08:09Z"),
            ("Version", "2014-05-26"),
        ];
        vector(
            "POST",
            "my/secret+key=",
            &params,
            "POST&%2F&AccessKeyId%3Dtestid%26Action%3DAssignPrivateIpAddresses%26ClientToken%3D0c593ea1-3bea-11e9-b96b-88e9fe637760%26Format%3DJSON%26NetworkInterfaceId%3Deni-2zeaaaaaaaaaaaaaaaaa%26RegionId%3Dcn-beijing%26SecondaryPrivateIpAddressCount%3D10%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D5f6c3b0e9a7d4e21b3a2c1d0e9f8a7b6%26SignatureVersion%3D1.0%26Timestamp%3D2024-05-06T07%253A08%253A09Z%26Version%3D2014-05-26",
            "+MCfG0qc7TLr0fNJeNG3Sa2VHEc=",
        );
    }

    #[test]
    fn vector_c_sdk_path_with_empty_signature_type() {
        let params = [
            ("InstanceTypes.1", "ecs.g7.large"),
            ("MaxResults", "100"),
            ("Version", "2014-05-26"),
            ("Action", "DescribeInstanceTypes"),
            ("Format", "JSON"),
            ("RegionId", "cn-hangzhou"),
            ("Timestamp", "2024-03-04T05:06:07Z"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureType", ""),
            ("SignatureVersion", "1.0"),
            ("SignatureNonce", "d41d8cd98f00b204e9800998ecf8427e"),
            ("AccessKeyId", "testid"),
        ];
        vector(
            "GET",
            "testsecret",
            &params,
            "GET&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeInstanceTypes%26Format%3DJSON%26InstanceTypes.1%3Decs.g7.large%26MaxResults%3D100%26RegionId%3Dcn-hangzhou%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3Dd41d8cd98f00b204e9800998ecf8427e%26SignatureType%3D%26SignatureVersion%3D1.0%26Timestamp%3D2024-03-04T05%253A06%253A07Z%26Version%3D2014-05-26",
            "Cc6L6scITBbueFurZ2mIZ/u3M8w=",
        );
    }

    #[test]
    fn vector_d_post_with_body_params() {
        // Union of the SDK's URL query and form body.
        let query = parse_form("Version=2014-05-26&Action=UnassignPrivateIpAddresses&Format=JSON&RegionId=cn-hangzhou&Timestamp=2024-03-04T05%3A06%3A07Z&SignatureMethod=HMAC-SHA1&SignatureType=&SignatureVersion=1.0&SignatureNonce=d41d8cd98f00b204e9800998ecf8427e&AccessKeyId=testid&Signature=EASS8d1dAfyX1XAXrjRNpY8Gfa4%3D").unwrap();
        let body = parse_form("NetworkInterfaceId=eni-bp1aaaaaaaaaaaaaaaaa&PrivateIpAddress.1=192.168.0.10&PrivateIpAddress.2=192.168.0.11").unwrap();
        let signature = query
            .iter()
            .find(|(k, _)| k == "Signature")
            .unwrap()
            .1
            .clone();
        let all: Vec<_> = query.into_iter().chain(body).collect();
        let sts = string_to_sign("POST", all.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        assert_eq!(
            sts,
            "POST&%2F&AccessKeyId%3Dtestid%26Action%3DUnassignPrivateIpAddresses%26Format%3DJSON%26NetworkInterfaceId%3Deni-bp1aaaaaaaaaaaaaaaaa%26PrivateIpAddress.1%3D192.168.0.10%26PrivateIpAddress.2%3D192.168.0.11%26RegionId%3Dcn-hangzhou%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3Dd41d8cd98f00b204e9800998ecf8427e%26SignatureType%3D%26SignatureVersion%3D1.0%26Timestamp%3D2024-03-04T05%253A06%253A07Z%26Version%3D2014-05-26"
        );
        assert_eq!(sign(&sts, "testsecret"), "EASS8d1dAfyX1XAXrjRNpY8Gfa4=");
        assert!(signatures_equal(&signature, "EASS8d1dAfyX1XAXrjRNpY8Gfa4="));
        assert!(!signatures_equal(
            &signature,
            "EASS8d1dAfyX1XAXrjRNpY8Gfa5="
        ));
    }

    #[test]
    fn encoding_rules() {
        assert_eq!(percent_encode("a b*c~d"), "a%20b%2Ac~d");
        assert_eq!(percent_encode("é\"/:+="), "%C3%A9%22%2F%3A%2B%3D");
        assert_eq!(percent_encode("!'()"), "%21%27%28%29");
        assert_eq!(percent_encode("AZaz09-_.~"), "AZaz09-_.~");
        // Byte order: uppercase before lowercase, '.' before digits.
        assert_eq!(
            canonical_query([
                ("b", "1"),
                ("a", "2"),
                ("B", "3"),
                ("A.1", "4"),
                ("A1", "5")
            ]),
            "A.1=4&A1=5&B=3&a=2&b=1"
        );
        assert_eq!(canonical_query([("Signature", "x"), ("A", "")]), "A=");
    }

    #[test]
    fn decoding_round_trips_and_rejects_garbage() {
        for s in ["a b*c~d", "é\"/:+=", "", "%", "日本語 ✓"] {
            assert_eq!(
                percent_decode(&percent_encode(s), false).as_deref(),
                Some(s)
            );
        }
        assert_eq!(percent_decode("a+b", true).as_deref(), Some("a b"));
        assert_eq!(percent_decode("a+b", false).as_deref(), Some("a+b"));
        assert_eq!(percent_decode("%zz", false), None);
        assert_eq!(percent_decode("%4", false), None);
        assert_eq!(percent_decode("%FF", false), None, "invalid UTF-8");
        assert_eq!(
            parse_form("a=1&b=&c&d=x%20y").unwrap(),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), String::new()),
                ("c".into(), String::new()),
                ("d".into(), "x y".into())
            ]
        );
    }
}
