//! ICP (RFC 2186) datagram codec: the messages Canopy exchanges with Squid peers.
//!
//! Decoding accepts version 2 and NetCache's version 3 (which Squid answers
//! as version 2) and classifies every failure so the caller knows whether to
//! drop the datagram or answer `ICP_OP_ERR`; see [`DecodeError::reply_with_err`].

use std::fmt;
use std::net::Ipv4Addr;

use thiserror::Error;

/// Octets in the fixed ICP header.
pub const HEADER_LEN: usize = 20;
/// Largest ICP datagram, header included.
pub const MAX_DATAGRAM_LEN: usize = 16384;
/// A query's request for the object inline (HIT_OBJ); answered so only with `icp_hit_obj`
/// on, and set on our queries then.
pub const ICP_FLAG_HIT_OBJ: u32 = 0x8000_0000;
/// In a query: send RTT. In a reply: option data holds `hops << 16 | rtt_ms`.
pub const ICP_FLAG_SRC_RTT: u32 = 0x4000_0000;

/// Message types. Opcode 0 (`ICP_OP_INVALID`) and the unused numbers are
/// absent, so every value here is one a peer may legitimately send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum IcpOpcode {
    Query = 1,
    Hit = 2,
    Miss = 3,
    Err = 4,
    Secho = 10,
    Decho = 11,
    MissNofetch = 21,
    Denied = 22,
    HitObj = 23,
}

impl TryFrom<u8> for IcpOpcode {
    type Error = DecodeError;

    fn try_from(opcode: u8) -> Result<Self, DecodeError> {
        Ok(match opcode {
            1 => Self::Query,
            2 => Self::Hit,
            3 => Self::Miss,
            4 => Self::Err,
            10 => Self::Secho,
            11 => Self::Decho,
            21 => Self::MissNofetch,
            22 => Self::Denied,
            23 => Self::HitObj,
            _ => return Err(DecodeError::UnknownOpcode { opcode }),
        })
    }
}

impl fmt::Display for IcpOpcode {
    /// The RFC's name without the `ICP_OP_` prefix, as operators see it in Squid logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Query => "QUERY",
            Self::Hit => "HIT",
            Self::Miss => "MISS",
            Self::Err => "ERR",
            Self::Secho => "SECHO",
            Self::Decho => "DECHO",
            Self::MissNofetch => "MISS_NOFETCH",
            Self::Denied => "DENIED",
            Self::HitObj => "HIT_OBJ",
        })
    }
}

/// Protocol version. V3 is NetCache's variant, laid out like V2; answer it with V2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum IcpVersion {
    V2 = 2,
    V3 = 3,
}

impl TryFrom<u8> for IcpVersion {
    type Error = DecodeError;

    fn try_from(version: u8) -> Result<Self, DecodeError> {
        match version {
            2 => Ok(Self::V2),
            3 => Ok(Self::V3),
            _ => Err(DecodeError::UnsupportedVersion { version }),
        }
    }
}

/// What follows the header; its shape is fixed by the opcode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IcpPayload {
    /// `QUERY`: requester address (Squid writes 0) and URL.
    Query { requester: Ipv4Addr, url: String },
    /// Every reply except `HIT_OBJ`: the URL of the query it answers.
    Url(String),
    /// `HIT_OBJ`: the URL and the object (a whole HTTP response), sent only to a query that
    /// asked for it.
    HitObj { url: String, object: Vec<u8> },
}

impl IcpPayload {
    /// The URL every payload carries.
    pub fn url(&self) -> &str {
        match self {
            Self::Query { url, .. } | Self::Url(url) | Self::HitObj { url, .. } => url,
        }
    }
}

/// One ICP datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IcpMessage {
    pub opcode: IcpOpcode,
    pub version: IcpVersion,
    /// Chosen by the querier and echoed by the reply, to pair them.
    pub request_number: u32,
    /// `ICP_FLAG_*` bits.
    pub options: u32,
    pub option_data: u32,
    /// Squid writes 0 and ignores it on receipt.
    pub sender: Ipv4Addr,
    pub payload: IcpPayload,
}

impl IcpMessage {
    /// A version 2 `QUERY` with no options, laid out as Squid sends one.
    pub fn query(request_number: u32, url: impl Into<String>) -> Self {
        Self::new(
            IcpOpcode::Query,
            request_number,
            IcpPayload::Query {
                requester: Ipv4Addr::UNSPECIFIED,
                url: url.into(),
            },
        )
    }

    /// A version 2 reply carrying only the URL; for every opcode but `QUERY` and `HIT_OBJ`.
    pub fn reply(opcode: IcpOpcode, request_number: u32, url: impl Into<String>) -> Self {
        Self::new(opcode, request_number, IcpPayload::Url(url.into()))
    }

    /// A version 2 `HIT_OBJ` reply carrying `object` inline.
    pub fn hit_obj(request_number: u32, url: impl Into<String>, object: Vec<u8>) -> Self {
        Self::new(
            IcpOpcode::HitObj,
            request_number,
            IcpPayload::HitObj {
                url: url.into(),
                object,
            },
        )
    }

    fn new(opcode: IcpOpcode, request_number: u32, payload: IcpPayload) -> Self {
        Self {
            opcode,
            version: IcpVersion::V2,
            request_number,
            options: 0,
            option_data: 0,
            sender: Ipv4Addr::UNSPECIFIED,
            payload,
        }
    }

    /// The datagram, in network byte order.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut payload = Vec::new();
        match (self.opcode, &self.payload) {
            (IcpOpcode::Query, IcpPayload::Query { requester, url }) => {
                payload.extend_from_slice(&requester.octets());
                put_url(&mut payload, url)?;
            }
            (IcpOpcode::HitObj, IcpPayload::HitObj { url, object }) => {
                put_url(&mut payload, url)?;
                let size = u16::try_from(object.len()).map_err(|_| EncodeError::TooLarge {
                    len: HEADER_LEN + payload.len() + 2 + object.len(),
                })?;
                payload.extend_from_slice(&size.to_be_bytes());
                payload.extend_from_slice(object);
            }
            (opcode, IcpPayload::Url(url))
                if !matches!(opcode, IcpOpcode::Query | IcpOpcode::HitObj) =>
            {
                put_url(&mut payload, url)?;
            }
            (opcode, _) => return Err(EncodeError::PayloadMismatch { opcode }),
        }
        let len = HEADER_LEN + payload.len();
        let length = u16::try_from(len)
            .ok()
            .filter(|_| len <= MAX_DATAGRAM_LEN)
            .ok_or(EncodeError::TooLarge { len })?;

        let mut datagram = Vec::with_capacity(len);
        datagram.push(self.opcode as u8);
        datagram.push(self.version as u8);
        datagram.extend_from_slice(&length.to_be_bytes());
        datagram.extend_from_slice(&self.request_number.to_be_bytes());
        datagram.extend_from_slice(&self.options.to_be_bytes());
        datagram.extend_from_slice(&self.option_data.to_be_bytes());
        datagram.extend_from_slice(&self.sender.octets());
        datagram.extend_from_slice(&payload);
        Ok(datagram)
    }

    /// Parses one received datagram. Octets after the payload are ignored, as Squid does.
    pub fn decode(datagram: &[u8]) -> Result<Self, DecodeError> {
        let len = datagram.len();
        let mut reader = Reader(datagram);
        let header = Header::read(&mut reader).ok_or(DecodeError::TooShort { len })?;
        if len > MAX_DATAGRAM_LEN {
            return Err(DecodeError::TooLong { len });
        }
        if usize::from(header.length) != len {
            return Err(DecodeError::LengthMismatch {
                field: header.length,
                len,
            });
        }
        let version = IcpVersion::try_from(header.version)?;
        let opcode = IcpOpcode::try_from(header.opcode)?;
        let payload =
            read_payload(opcode, reader).map_err(|problem| DecodeError::MalformedPayload {
                opcode,
                request_number: header.request_number,
                problem,
            })?;
        Ok(Self {
            opcode,
            version,
            request_number: header.request_number,
            options: header.options,
            option_data: header.option_data,
            sender: header.sender,
            payload,
        })
    }
}

fn put_url(payload: &mut Vec<u8>, url: &str) -> Result<(), EncodeError> {
    if url.contains('\0') {
        return Err(EncodeError::UrlContainsNul);
    }
    payload.extend_from_slice(url.as_bytes());
    payload.push(0);
    Ok(())
}

fn read_payload(opcode: IcpOpcode, mut reader: Reader<'_>) -> Result<IcpPayload, PayloadProblem> {
    match opcode {
        IcpOpcode::Query => {
            let len = reader.0.len();
            let requester = reader.ipv4().ok_or(PayloadProblem::QueryTooShort { len })?;
            let url = reader.url()?;
            Ok(IcpPayload::Query { requester, url })
        }
        IcpOpcode::HitObj => {
            let url = reader.url()?;
            let declared = reader.u16().ok_or(PayloadProblem::ObjectSizeMissing)?;
            let available = reader.0.len();
            let object =
                reader
                    .take(usize::from(declared))
                    .ok_or(PayloadProblem::ObjectTruncated {
                        declared,
                        available,
                    })?;
            Ok(IcpPayload::HitObj {
                url,
                object: object.to_vec(),
            })
        }
        _ => reader.url().map(IcpPayload::Url),
    }
}

/// The header fields before any of them is validated.
struct Header {
    opcode: u8,
    version: u8,
    length: u16,
    request_number: u32,
    options: u32,
    option_data: u32,
    sender: Ipv4Addr,
}

impl Header {
    fn read(reader: &mut Reader<'_>) -> Option<Self> {
        Some(Self {
            opcode: reader.u8()?,
            version: reader.u8()?,
            length: reader.u16()?,
            request_number: reader.u32()?,
            options: reader.u32()?,
            option_data: reader.u32()?,
            sender: reader.ipv4()?,
        })
    }
}

/// Consumes big-endian fields from the front of a slice; `None` when too few octets remain.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.array().map(u8::from_be_bytes)
    }

    fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_be_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_be_bytes)
    }

    fn ipv4(&mut self) -> Option<Ipv4Addr> {
        self.array().map(Ipv4Addr::from)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    /// A NUL-terminated UTF-8 string, consuming the NUL.
    fn url(&mut self) -> Result<String, PayloadProblem> {
        let mut parts = self.0.splitn(2, |&octet| octet == 0);
        let (Some(url), Some(rest)) = (parts.next(), parts.next()) else {
            return Err(PayloadProblem::UrlNotTerminated);
        };
        let url = std::str::from_utf8(url).map_err(|_| PayloadProblem::UrlNotUtf8)?;
        self.0 = rest;
        Ok(url.to_owned())
    }
}

/// Why a datagram could not be decoded; [`Self::reply_with_err`] says what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error(
        "datagram of {len} octets is shorter than the {}-octet ICP header",
        HEADER_LEN
    )]
    TooShort { len: usize },
    #[error(
        "datagram of {len} octets is larger than the {}-octet ICP maximum",
        MAX_DATAGRAM_LEN
    )]
    TooLong { len: usize },
    #[error("length field says {field} octets but the datagram has {len}")]
    LengthMismatch { field: u16, len: usize },
    #[error("ICP version {version} is not supported (only 2, and 3 answered as 2)")]
    UnsupportedVersion { version: u8 },
    #[error("opcode {opcode} is not a usable ICP opcode")]
    UnknownOpcode { opcode: u8 },
    #[error("malformed {opcode} payload for request number {request_number}: {problem}")]
    MalformedPayload {
        opcode: IcpOpcode,
        request_number: u32,
        problem: PayloadProblem,
    },
}

impl DecodeError {
    /// `Some(request number)` when a peer's `QUERY` had a sound header but a bad
    /// payload: answer a version 2 `ERR` with that number and an empty URL.
    /// `None`: drop the datagram silently and count it; replies are never answered.
    pub fn reply_with_err(&self) -> Option<u32> {
        match self {
            Self::MalformedPayload {
                opcode: IcpOpcode::Query,
                request_number,
                ..
            } => Some(*request_number),
            _ => None,
        }
    }
}

/// What is wrong with a payload whose header was sound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum PayloadProblem {
    #[error("{len} octets cannot hold the 4-octet requester address")]
    QueryTooShort { len: usize },
    #[error("URL has no NUL terminator")]
    UrlNotTerminated,
    #[error("URL is not valid UTF-8")]
    UrlNotUtf8,
    #[error("object size field is missing")]
    ObjectSizeMissing,
    #[error("object size says {declared} octets but {available} follow")]
    ObjectTruncated { declared: u16, available: usize },
}

/// Why a message could not be put on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EncodeError {
    #[error(
        "message of {len} octets is larger than the {}-octet ICP maximum",
        MAX_DATAGRAM_LEN
    )]
    TooLarge { len: usize },
    #[error("URL contains a NUL octet, which would end it early on the wire")]
    UrlContainsNul,
    #[error("{opcode} message has the payload of another opcode")]
    PayloadMismatch { opcode: IcpOpcode },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RTT data a peer put in a reply's option data because the query set
    /// [`ICP_FLAG_SRC_RTT`]; Canopy reads it only here, to check the layout.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct SrcRtt {
        hops: u16,
        rtt_ms: u16,
    }

    /// The hop count and RTT in a reply, if the peer flagged them as present.
    fn src_rtt(message: &IcpMessage) -> Option<SrcRtt> {
        (message.options & ICP_FLAG_SRC_RTT != 0).then(|| {
            let [h1, h0, r1, r0] = message.option_data.to_be_bytes();
            SrcRtt {
                hops: u16::from_be_bytes([h1, h0]),
                rtt_ms: u16::from_be_bytes([r1, r0]),
            }
        })
    }
    use proptest::prelude::*;

    const OPCODES: [IcpOpcode; 9] = [
        IcpOpcode::Query,
        IcpOpcode::Hit,
        IcpOpcode::Miss,
        IcpOpcode::Err,
        IcpOpcode::Secho,
        IcpOpcode::Decho,
        IcpOpcode::MissNofetch,
        IcpOpcode::Denied,
        IcpOpcode::HitObj,
    ];

    const URL: &str = "http://example.com/";

    /// A QUERY as Squid's icpCreateMessage lays it out: 20 + 4 + 19 + 1 = 44 octets.
    const SQUID_QUERY: [u8; 44] = [
        1, 2, 0x00, 0x2c, // opcode QUERY, version 2, length 44
        0x12, 0x34, 0x56, 0x78, // request number
        0, 0, 0, 0, // options
        0, 0, 0, 0, // option data
        0, 0, 0, 0, // sender host address
        0, 0, 0, 0, // requester host address
        b'h', b't', b't', b'p', b':', b'/', b'/', b'e', b'x', b'a', b'm', b'p', b'l', b'e', b'.',
        b'c', b'o', b'm', b'/', 0,
    ];

    /// The HIT answering it, with SRC_RTT data (3 hops, 25 ms): 20 + 19 + 1 = 40 octets.
    const SQUID_HIT: [u8; 40] = [
        2, 2, 0x00, 0x28, // opcode HIT, version 2, length 40
        0x12, 0x34, 0x56, 0x78, // echoed request number
        0x40, 0, 0, 0, // options: ICP_FLAG_SRC_RTT
        0, 3, 0, 25, // option data: hops << 16 | rtt_ms
        0, 0, 0, 0, // sender host address
        b'h', b't', b't', b'p', b':', b'/', b'/', b'e', b'x', b'a', b'm', b'p', b'l', b'e', b'.',
        b'c', b'o', b'm', b'/', 0,
    ];

    /// A header with a correct length field followed by `payload`.
    fn datagram(opcode: u8, version: u8, payload: &[u8]) -> Vec<u8> {
        let len = u16::try_from(HEADER_LEN + payload.len()).expect("test payload fits");
        let mut bytes = vec![opcode, version];
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend_from_slice(&0xdead_beef_u32.to_be_bytes());
        bytes.extend_from_slice(&[0; 12]);
        bytes.extend_from_slice(payload);
        bytes
    }

    fn round_trip(message: &IcpMessage) {
        let bytes = message.encode().expect("valid message encodes");
        assert_eq!(
            bytes.len(),
            usize::from(u16::from_be_bytes([bytes[2], bytes[3]]))
        );
        assert_eq!(IcpMessage::decode(&bytes).as_ref(), Ok(message));
    }

    #[test]
    fn query_matches_squid_bytes() {
        let query = IcpMessage::query(0x1234_5678, URL);
        assert_eq!(query.encode(), Ok(SQUID_QUERY.to_vec()));
        assert_eq!(IcpMessage::decode(&SQUID_QUERY), Ok(query));
    }

    #[test]
    fn hit_matches_squid_bytes() {
        let mut hit = IcpMessage::reply(IcpOpcode::Hit, 0x1234_5678, URL);
        hit.options = ICP_FLAG_SRC_RTT;
        hit.option_data = 3 << 16 | 25;
        assert_eq!(hit.encode(), Ok(SQUID_HIT.to_vec()));
        let decoded = IcpMessage::decode(&SQUID_HIT).expect("Squid's HIT decodes");
        assert_eq!(decoded.payload.url(), URL);
        assert_eq!(
            src_rtt(&decoded),
            Some(SrcRtt {
                hops: 3,
                rtt_ms: 25
            })
        );
        assert_eq!(decoded, hit);
    }

    #[test]
    fn src_rtt_absent_without_flag() {
        let mut miss = IcpMessage::reply(IcpOpcode::Miss, 1, URL);
        miss.option_data = 3 << 16 | 25;
        assert_eq!(src_rtt(&miss), None);
    }

    #[test]
    fn opcode_numbers_follow_rfc() {
        let numbers = [1, 2, 3, 4, 10, 11, 21, 22, 23];
        for (opcode, number) in OPCODES.into_iter().zip(numbers) {
            assert_eq!(opcode as u8, number);
            assert_eq!(IcpOpcode::try_from(number), Ok(opcode));
        }
    }

    #[test]
    fn every_opcode_round_trips() {
        for opcode in OPCODES {
            let payload = match opcode {
                IcpOpcode::Query => IcpPayload::Query {
                    requester: Ipv4Addr::new(192, 0, 2, 1),
                    url: URL.into(),
                },
                IcpOpcode::HitObj => IcpPayload::HitObj {
                    url: URL.into(),
                    object: b"HTTP/1.0 200 OK\r\n\r\nhi".to_vec(),
                },
                _ => IcpPayload::Url(URL.into()),
            };
            for version in [IcpVersion::V2, IcpVersion::V3] {
                round_trip(&IcpMessage {
                    opcode,
                    version,
                    request_number: 7,
                    options: ICP_FLAG_HIT_OBJ | ICP_FLAG_SRC_RTT,
                    option_data: 0x0001_0002,
                    sender: Ipv4Addr::new(198, 51, 100, 2),
                    payload: payload.clone(),
                });
            }
        }
    }

    #[test]
    fn trailing_octets_are_ignored() {
        let mut bytes = SQUID_HIT.to_vec();
        bytes.extend_from_slice(b"pad");
        bytes[3] += 3;
        let hit = IcpMessage::decode(&bytes).expect("padded HIT decodes");
        assert_eq!(hit.payload, IcpPayload::Url(URL.into()));
    }

    #[test]
    fn short_datagram_is_dropped() {
        let err = IcpMessage::decode(&SQUID_QUERY[..12]).unwrap_err();
        assert_eq!(err, DecodeError::TooShort { len: 12 });
        assert_eq!(
            err.to_string(),
            "datagram of 12 octets is shorter than the 20-octet ICP header"
        );
        assert_eq!(err.reply_with_err(), None);
        assert_eq!(
            IcpMessage::decode(&[]),
            Err(DecodeError::TooShort { len: 0 })
        );
    }

    #[test]
    fn length_mismatch_is_dropped() {
        let err = IcpMessage::decode(&SQUID_HIT[..36]).unwrap_err();
        assert_eq!(err, DecodeError::LengthMismatch { field: 40, len: 36 });
        assert_eq!(
            err.to_string(),
            "length field says 40 octets but the datagram has 36"
        );
        assert_eq!(err.reply_with_err(), None);
    }

    #[test]
    fn oversized_datagram_is_dropped() {
        let url = "u".repeat(MAX_DATAGRAM_LEN - HEADER_LEN);
        let bytes = datagram(IcpOpcode::Hit as u8, 2, format!("{url}\0").as_bytes());
        let err = IcpMessage::decode(&bytes).unwrap_err();
        assert_eq!(err, DecodeError::TooLong { len: 16385 });
        assert_eq!(err.reply_with_err(), None);
        assert_eq!(
            IcpMessage::decode(&bytes[..MAX_DATAGRAM_LEN]),
            Err(DecodeError::LengthMismatch {
                field: 16385,
                len: 16384
            })
        );
    }

    #[test]
    fn unknown_versions_are_dropped() {
        for version in [0, 1, 4, 255] {
            let err = IcpMessage::decode(&datagram(1, version, b"\0\0\0\0x\0")).unwrap_err();
            assert_eq!(err, DecodeError::UnsupportedVersion { version });
            assert_eq!(err.reply_with_err(), None);
        }
    }

    #[test]
    fn unused_opcodes_are_dropped() {
        let unused = [0].into_iter().chain(5..=9).chain(12..=20).chain(24..=255);
        for opcode in unused {
            let err = IcpMessage::decode(&datagram(opcode, 2, b"x\0")).unwrap_err();
            assert_eq!(err, DecodeError::UnknownOpcode { opcode });
            assert_eq!(err.reply_with_err(), None);
        }
    }

    #[test]
    fn version_3_query_reports_version_3() {
        let mut bytes = SQUID_QUERY;
        bytes[1] = 3;
        let query = IcpMessage::decode(&bytes).expect("v3 query decodes");
        assert_eq!(query.version, IcpVersion::V3);
        assert_eq!(query.opcode, IcpOpcode::Query);
        assert_eq!(query.payload.url(), URL);
    }

    fn query_error(payload: &[u8]) -> DecodeError {
        IcpMessage::decode(&datagram(IcpOpcode::Query as u8, 2, payload)).unwrap_err()
    }

    #[test]
    fn unterminated_query_url_is_answered_err() {
        let err = query_error(b"\0\0\0\0http://example.com/");
        assert_eq!(
            err,
            DecodeError::MalformedPayload {
                opcode: IcpOpcode::Query,
                request_number: 0xdead_beef,
                problem: PayloadProblem::UrlNotTerminated,
            }
        );
        assert_eq!(err.reply_with_err(), Some(0xdead_beef));
    }

    #[test]
    fn non_utf8_query_url_is_answered_err() {
        let err = query_error(b"\0\0\0\0http://\xff/\0");
        assert!(matches!(
            err,
            DecodeError::MalformedPayload {
                problem: PayloadProblem::UrlNotUtf8,
                ..
            }
        ));
        assert_eq!(err.reply_with_err(), Some(0xdead_beef));
    }

    #[test]
    fn short_query_payload_is_answered_err() {
        let err = query_error(b"\0\0\0");
        assert!(matches!(
            err,
            DecodeError::MalformedPayload {
                problem: PayloadProblem::QueryTooShort { len: 3 },
                ..
            }
        ));
        assert_eq!(err.reply_with_err(), Some(0xdead_beef));
    }

    #[test]
    fn malformed_replies_are_dropped() {
        for opcode in OPCODES.into_iter().filter(|&op| op != IcpOpcode::Query) {
            let err = IcpMessage::decode(&datagram(opcode as u8, 2, b"no-nul")).unwrap_err();
            assert!(matches!(
                err,
                DecodeError::MalformedPayload {
                    problem: PayloadProblem::UrlNotTerminated,
                    ..
                }
            ));
            assert_eq!(err.reply_with_err(), None);
        }
    }

    #[test]
    fn hit_obj_is_decoded() {
        let hit_obj = IcpMessage::decode(&datagram(23, 2, b"u\0\x00\x03abcde")).expect("decodes");
        assert_eq!(
            hit_obj.payload,
            IcpPayload::HitObj {
                url: "u".into(),
                object: b"abc".to_vec(),
            }
        );
    }

    #[test]
    fn truncated_hit_obj_is_dropped() {
        let missing = IcpMessage::decode(&datagram(23, 2, b"u\0\x00")).unwrap_err();
        assert!(matches!(
            missing,
            DecodeError::MalformedPayload {
                problem: PayloadProblem::ObjectSizeMissing,
                ..
            }
        ));
        let short = IcpMessage::decode(&datagram(23, 2, b"u\0\x00\x05ab")).unwrap_err();
        assert!(matches!(
            short,
            DecodeError::MalformedPayload {
                problem: PayloadProblem::ObjectTruncated {
                    declared: 5,
                    available: 2
                },
                ..
            }
        ));
        assert_eq!(short.reply_with_err(), None);
    }

    #[test]
    fn encode_rejects_nul_in_url() {
        let miss = IcpMessage::reply(IcpOpcode::Miss, 1, "http://a/\0b");
        assert_eq!(miss.encode(), Err(EncodeError::UrlContainsNul));
    }

    #[test]
    fn encode_enforces_maximum_size() {
        let fits = "u".repeat(MAX_DATAGRAM_LEN - HEADER_LEN - 1);
        let hit = IcpMessage::reply(IcpOpcode::Hit, 1, fits.clone());
        assert_eq!(hit.encode().map(|bytes| bytes.len()), Ok(MAX_DATAGRAM_LEN));
        round_trip(&hit);
        let too_big = IcpMessage::reply(IcpOpcode::Hit, 1, fits + "u");
        assert_eq!(too_big.encode(), Err(EncodeError::TooLarge { len: 16385 }));
        let huge_object = IcpMessage {
            opcode: IcpOpcode::HitObj,
            payload: IcpPayload::HitObj {
                url: "u".into(),
                object: vec![0; 70_000],
            },
            ..hit
        };
        assert_eq!(
            huge_object.encode(),
            Err(EncodeError::TooLarge { len: 70_024 })
        );
    }

    #[test]
    fn encode_rejects_payload_of_another_opcode() {
        for opcode in [IcpOpcode::Query, IcpOpcode::HitObj] {
            let message = IcpMessage::reply(opcode, 1, URL);
            assert_eq!(
                message.encode(),
                Err(EncodeError::PayloadMismatch { opcode })
            );
        }
        let mut query_as_hit = IcpMessage::query(1, URL);
        query_as_hit.opcode = IcpOpcode::Hit;
        assert_eq!(
            query_as_hit.encode(),
            Err(EncodeError::PayloadMismatch {
                opcode: IcpOpcode::Hit
            })
        );
    }

    fn url() -> impl Strategy<Value = String> {
        "[^\0]{0,200}"
    }

    fn message() -> impl Strategy<Value = IcpMessage> {
        let payload = prop::sample::select(OPCODES.to_vec()).prop_flat_map(|opcode| {
            let payload = match opcode {
                IcpOpcode::Query => (any::<u32>(), url())
                    .prop_map(|(requester, url)| IcpPayload::Query {
                        requester: requester.into(),
                        url,
                    })
                    .boxed(),
                IcpOpcode::HitObj => (url(), prop::collection::vec(any::<u8>(), 0..2000))
                    .prop_map(|(url, object)| IcpPayload::HitObj { url, object })
                    .boxed(),
                _ => url().prop_map(IcpPayload::Url).boxed(),
            };
            (Just(opcode), payload)
        });
        (
            payload,
            prop::sample::select(vec![IcpVersion::V2, IcpVersion::V3]),
            any::<[u32; 4]>(),
        )
            .prop_map(
                |((opcode, payload), version, [request_number, options, option_data, sender])| {
                    IcpMessage {
                        opcode,
                        version,
                        request_number,
                        options,
                        option_data,
                        sender: sender.into(),
                        payload,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn valid_messages_round_trip(message in message()) {
            round_trip(&message);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..17000)) {
            let _ = IcpMessage::decode(&bytes);
        }

        /// Random payloads behind a sound header reach the payload parser,
        /// and whatever it accepts must survive a round trip.
        #[test]
        fn framed_garbage_decodes_or_errs_cleanly(
            opcode in prop::sample::select(OPCODES.to_vec()),
            version in 2u8..=3,
            payload in prop::collection::vec(any::<u8>(), 0..300),
        ) {
            let bytes = datagram(opcode as u8, version, &payload);
            match IcpMessage::decode(&bytes) {
                Ok(message) => round_trip(&message),
                Err(err) => prop_assert!(
                    matches!(err, DecodeError::MalformedPayload { .. }),
                    "header was sound, yet: {}",
                    err
                ),
            }
        }
    }
}
