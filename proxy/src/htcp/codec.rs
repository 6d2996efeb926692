//! HTCP (RFC 2756) datagram codec, as Squid (`src/htcp.cc`) lays the messages out.
//!
//! A datagram is a 4-octet header (length, MAJOR 0, MINOR), one DATA section (its own length,
//! the opcode and response code, the flags, a message id, then the op-data) and an AUTH
//! section. Squid implements TST and CLR only, never signs (AUTH is the bare length 2) and
//! ignores AUTH on receipt; so does this codec.
//!
//! Two layouts of the DATA header's flag octets exist. MINOR 1 is the RFC's: opcode in the
//! high four bits, response in the low four, then RR = 0x01, F1 = 0x02. MINOR 0 is what Squid
//! calls `htcp=oldsquid`: opcode low, response high, RR = 0x80, F1 = 0x40, and Squid leaves
//! the message id 0 on the wire. Squid answers in the layout of the message it received.
//!
//! Strings are COUNTSTRs: a 2-octet length and that many octets, no terminator.

use std::fmt;

use thiserror::Error;

/// Octets of the overall header: length (2), MAJOR (1), MINOR (1).
pub const HEADER_LEN: usize = 4;
/// Octets of the DATA header: length (2), opcode and response (1), flags (1), message id (4).
pub const DATA_HEADER_LEN: usize = 8;
/// The AUTH section Squid sends: its own length, 2, and nothing else.
const AUTH_ABSENT: [u8; 2] = [0, 2];
/// Largest datagram Squid receives whole (`htcpRecv` keeps one octet of its 8192 for a NUL).
pub const MAX_DATAGRAM_LEN: usize = 8191;

/// The DATA header's bit layout, chosen by the MINOR version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HtcpLayout {
    /// MINOR 1: the RFC's layout, what Squid sends by default.
    Rfc,
    /// MINOR 0: Squid's pre-RFC layout (`cache_peer … htcp=oldsquid`).
    OldSquid,
}

impl HtcpLayout {
    fn minor(self) -> u8 {
        match self {
            Self::Rfc => 1,
            Self::OldSquid => 0,
        }
    }

    /// As Squid's `htcpHandleMsg`: MINOR 0 is the old layout, any other the RFC's.
    fn from_minor(minor: u8) -> Self {
        if minor == 0 {
            Self::OldSquid
        } else {
            Self::Rfc
        }
    }

    fn pack(self, opcode: HtcpOpcode, response: ResponseCode, rr: bool, f1: bool) -> [u8; 2] {
        let (opcode, response) = (opcode as u8, response.0);
        match self {
            Self::Rfc => [opcode << 4 | response, u8::from(f1) << 1 | u8::from(rr)],
            Self::OldSquid => [
                response << 4 | opcode,
                u8::from(rr) << 7 | u8::from(f1) << 6,
            ],
        }
    }

    /// Opcode, response, RR and F1 from the two flag octets; reserved bits are ignored.
    fn unpack(self, [first, second]: [u8; 2]) -> (u8, ResponseCode, bool, bool) {
        match self {
            Self::Rfc => (
                first >> 4,
                ResponseCode(first & 0x0f),
                second & 0x01 != 0,
                second & 0x02 != 0,
            ),
            Self::OldSquid => (
                first & 0x0f,
                ResponseCode(first >> 4),
                second & 0x80 != 0,
                second & 0x40 != 0,
            ),
        }
    }
}

/// Operations. Squid answers TST and CLR; NOP, MON and SET get no reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum HtcpOpcode {
    Nop = 0,
    Tst = 1,
    Mon = 2,
    Set = 3,
    Clr = 4,
}

impl TryFrom<u8> for HtcpOpcode {
    type Error = DecodeError;

    fn try_from(opcode: u8) -> Result<Self, DecodeError> {
        Ok(match opcode {
            0 => Self::Nop,
            1 => Self::Tst,
            2 => Self::Mon,
            3 => Self::Set,
            4 => Self::Clr,
            _ => return Err(DecodeError::UnknownOpcode { opcode }),
        })
    }
}

impl fmt::Display for HtcpOpcode {
    /// The RFC's name, as Squid's access log shows it after `HTCP_`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Nop => "NOP",
            Self::Tst => "TST",
            Self::Mon => "MON",
            Self::Set => "SET",
            Self::Clr => "CLR",
        })
    }
}

/// The 4-bit response code. Its meaning depends on the opcode, or, in a reply with MO set,
/// it is an error about the whole message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResponseCode(u8);

impl ResponseCode {
    /// Queries carry 0; a TST reply's "found"; a CLR reply's "purged".
    pub const ZERO: Self = Self(0);
    /// TST reply: the responder does not hold the object.
    pub const TST_NOT_FOUND: Self = Self(1);
    /// CLR reply: the responder holds the object and will not clear it.
    pub const CLR_REFUSED: Self = Self(1);
    /// CLR reply: the responder did not hold the object.
    pub const CLR_NOT_FOUND: Self = Self(2);

    pub fn value(self) -> u8 {
        self.0
    }
}

impl TryFrom<u8> for ResponseCode {
    type Error = EncodeError;

    fn try_from(code: u8) -> Result<Self, EncodeError> {
        if code <= 0x0f {
            Ok(Self(code))
        } else {
            Err(EncodeError::ResponseOutOfRange { code })
        }
    }
}

/// RR and the meaning it gives F1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// RR = 0. F1 asks for a reply (Squid sets it on TST, clears it on the CLRs it sends).
    Query { response_wanted: bool },
    /// RR = 1. F1 is MO: the response code is about the message as a whole.
    Reply { message_overall: bool },
}

impl Role {
    fn from_bits(rr: bool, f1: bool) -> Self {
        if rr {
            Self::Reply {
                message_overall: f1,
            }
        } else {
            Self::Query {
                response_wanted: f1,
            }
        }
    }

    /// (RR, F1).
    fn bits(self) -> (bool, bool) {
        match self {
            Self::Query { response_wanted } => (false, response_wanted),
            Self::Reply { message_overall } => (true, message_overall),
        }
    }
}

/// Why a CLR is sent (the low four bits of its first op-data field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClrReason {
    /// Squid's reason on PURGE.
    Unspecified = 0,
    /// The content changed: Squid's reason on invalidation by an unsafe method.
    Invalidation = 1,
}

impl ClrReason {
    /// Values the RFC does not define read as [`Self::Unspecified`].
    fn from_nibble(reason: u8) -> Self {
        if reason & 0x0f == 1 {
            Self::Invalidation
        } else {
            Self::Unspecified
        }
    }
}

/// What a TST or CLR is about: a request as the querier would send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Specifier {
    pub method: String,
    pub url: String,
    /// `major/minor`; Squid writes `1/1`.
    pub version: String,
    /// Header lines, each ending in CRLF. Squid 5.7 sends none in a TST (it builds them but
    /// puts a length of 0 on the wire).
    pub request_headers: Vec<u8>,
}

impl Specifier {
    /// A GET for `url`, HTTP/1.1, with `request_headers`.
    pub fn get(url: impl Into<String>, request_headers: Vec<u8>) -> Self {
        Self {
            method: "GET".into(),
            url: url.into(),
            version: "1/1".into(),
            request_headers,
        }
    }
}

/// What a TST reply says about the object: three blocks of header lines. Squid's HIT puts
/// `Age` in the first, `Expires` / `Last-Modified` in the second and `Cache-to-Origin` (when
/// it has measured the origin) in the third; its MISS sends three empty blocks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Detail {
    pub response_headers: Vec<u8>,
    pub entity_headers: Vec<u8>,
    pub cache_headers: Vec<u8>,
}

/// The op-data, shaped by the opcode and the role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpData {
    /// TST query.
    Specifier(Specifier),
    /// CLR query.
    Clear {
        reason: ClrReason,
        specifier: Specifier,
    },
    /// TST reply without MO.
    Detail(Detail),
    /// Nothing after the DATA header: CLR replies, and others with no op-data.
    Empty,
    /// Op-data Canopy does not interpret (NOP, MON, SET, and replies that should have
    /// none), as received; never empty.
    Opaque(Vec<u8>),
}

/// One HTCP datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HtcpMessage {
    pub layout: HtcpLayout,
    pub opcode: HtcpOpcode,
    pub response: ResponseCode,
    pub role: Role,
    /// Chosen by the querier and echoed by the reply. Squid sends 0 in the old layout.
    pub msg_id: u32,
    pub op_data: OpData,
}

impl HtcpMessage {
    /// A TST query wanting a reply, as Squid's `htcpQuery` sends it.
    pub fn tst_query(layout: HtcpLayout, msg_id: u32, specifier: Specifier) -> Self {
        Self {
            layout,
            opcode: HtcpOpcode::Tst,
            response: ResponseCode::ZERO,
            role: Role::Query {
                response_wanted: true,
            },
            msg_id,
            op_data: OpData::Specifier(specifier),
        }
    }

    /// The TST reply for a held object (response 0 with its detail).
    pub fn tst_hit(layout: HtcpLayout, msg_id: u32, detail: Detail) -> Self {
        Self::tst_reply(layout, msg_id, ResponseCode::ZERO, detail)
    }

    /// The TST reply for an object not held, as Squid sends it: response 1, three empty strings.
    pub fn tst_miss(layout: HtcpLayout, msg_id: u32) -> Self {
        Self::tst_reply(
            layout,
            msg_id,
            ResponseCode::TST_NOT_FOUND,
            Detail::default(),
        )
    }

    fn tst_reply(layout: HtcpLayout, msg_id: u32, response: ResponseCode, detail: Detail) -> Self {
        Self {
            layout,
            opcode: HtcpOpcode::Tst,
            response,
            role: Role::Reply {
                message_overall: false,
            },
            msg_id,
            op_data: OpData::Detail(detail),
        }
    }

    /// A CLR query; Squid sends its own without asking for a reply.
    pub fn clr_query(
        layout: HtcpLayout,
        msg_id: u32,
        reason: ClrReason,
        specifier: Specifier,
        response_wanted: bool,
    ) -> Self {
        Self {
            layout,
            opcode: HtcpOpcode::Clr,
            response: ResponseCode::ZERO,
            role: Role::Query { response_wanted },
            msg_id,
            op_data: OpData::Clear { reason, specifier },
        }
    }

    /// The CLR reply: [`ResponseCode::ZERO`] purged, [`ResponseCode::CLR_NOT_FOUND`] not held.
    pub fn clr_reply(layout: HtcpLayout, msg_id: u32, response: ResponseCode) -> Self {
        Self {
            layout,
            opcode: HtcpOpcode::Clr,
            response,
            role: Role::Reply {
                message_overall: false,
            },
            msg_id,
            op_data: OpData::Empty,
        }
    }

    /// The datagram, AUTH absent.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        self.check_op_data()?;
        let mut op_data = Vec::new();
        match &self.op_data {
            OpData::Specifier(specifier) => put_specifier(&mut op_data, specifier),
            OpData::Clear { reason, specifier } => {
                op_data.extend_from_slice(&(*reason as u16).to_be_bytes());
                put_specifier(&mut op_data, specifier);
            }
            OpData::Detail(detail) => {
                put_countstr(&mut op_data, &detail.response_headers);
                put_countstr(&mut op_data, &detail.entity_headers);
                put_countstr(&mut op_data, &detail.cache_headers);
            }
            OpData::Empty => {}
            OpData::Opaque(raw) => op_data.extend_from_slice(raw),
        }
        let data_len = DATA_HEADER_LEN + op_data.len();
        let len = HEADER_LEN + data_len + AUTH_ABSENT.len();
        if len > MAX_DATAGRAM_LEN {
            return Err(EncodeError::TooLarge { len });
        }
        let (rr, f1) = self.role.bits();
        let mut datagram = Vec::with_capacity(len);
        datagram.extend_from_slice(&(len as u16).to_be_bytes());
        datagram.extend_from_slice(&[0, self.layout.minor()]);
        datagram.extend_from_slice(&(data_len as u16).to_be_bytes());
        datagram.extend_from_slice(&self.layout.pack(self.opcode, self.response, rr, f1));
        datagram.extend_from_slice(&self.msg_id.to_be_bytes());
        datagram.extend_from_slice(&op_data);
        datagram.extend_from_slice(&AUTH_ABSENT);
        Ok(datagram)
    }

    /// The op-data must be one [`Self::decode`] can give for this opcode and role.
    fn check_op_data(&self) -> Result<(), EncodeError> {
        let shape = Shape::of(self.opcode, self.role);
        let fits = match &self.op_data {
            OpData::Specifier(_) => shape == Shape::Specifier,
            OpData::Clear { .. } => shape == Shape::Clear,
            OpData::Detail(_) => shape == Shape::Detail,
            OpData::Empty => matches!(shape, Shape::Detail | Shape::Uninterpreted),
            OpData::Opaque(raw) if raw.is_empty() => return Err(EncodeError::EmptyOpaque),
            OpData::Opaque(_) => shape == Shape::Uninterpreted,
        };
        if fits {
            Ok(())
        } else {
            Err(EncodeError::OpDataMismatch {
                opcode: self.opcode,
                role: self.role,
            })
        }
    }

    /// Parses one received datagram, as Squid's `htcpHandleMsg` does: the length must be
    /// the datagram's, MAJOR must be 0, the DATA length must fit; AUTH is ignored, but its
    /// length must be there (Squid does not insist; the RFC does, and Squid always sends it).
    /// Datagrams longer than [`MAX_DATAGRAM_LEN`] are refused: Squid would get them cut.
    pub fn decode(datagram: &[u8]) -> Result<Self, DecodeError> {
        let len = datagram.len();
        let mut reader = Reader(datagram);
        let (Some(length), Some([major, minor])) = (reader.u16(), reader.array::<2>()) else {
            return Err(DecodeError::TooShort { len });
        };
        if usize::from(length) != len {
            return Err(DecodeError::LengthMismatch { field: length, len });
        }
        if major != 0 {
            return Err(DecodeError::UnsupportedMajor { major });
        }
        if len > MAX_DATAGRAM_LEN {
            return Err(DecodeError::TooLong { len });
        }
        let layout = HtcpLayout::from_minor(minor);
        // The RFC's AUTH section is at least its own length; Squid always sends one.
        let available = reader.0.len().saturating_sub(AUTH_ABSENT.len());
        if available < DATA_HEADER_LEN {
            return Err(DecodeError::DataHeaderMissing { available });
        }
        let (Some(data_len), Some(flags), Some(msg_id)) =
            (reader.u16(), reader.array::<2>(), reader.u32())
        else {
            return Err(DecodeError::DataHeaderMissing { available });
        };
        if usize::from(data_len) < DATA_HEADER_LEN || usize::from(data_len) > available {
            return Err(DecodeError::DataLengthOutOfRange {
                field: data_len,
                available,
            });
        }
        let (opcode, response, rr, f1) = layout.unpack(flags);
        let opcode = HtcpOpcode::try_from(opcode)?;
        let role = Role::from_bits(rr, f1);
        let op_data = &reader.0[..usize::from(data_len) - DATA_HEADER_LEN];
        let op_data = read_op_data(opcode, role, op_data).map_err(|problem| {
            DecodeError::MalformedOpData {
                opcode,
                msg_id,
                problem,
            }
        })?;
        Ok(Self {
            layout,
            opcode,
            response,
            role,
            msg_id,
            op_data,
        })
    }
}

/// What the op-data of an opcode and role is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Specifier,
    Clear,
    /// A detail, or nothing at all.
    Detail,
    /// Nothing, or octets Canopy does not interpret.
    Uninterpreted,
}

impl Shape {
    fn of(opcode: HtcpOpcode, role: Role) -> Self {
        match (opcode, role) {
            (HtcpOpcode::Tst, Role::Query { .. }) => Self::Specifier,
            (HtcpOpcode::Clr, Role::Query { .. }) => Self::Clear,
            (
                HtcpOpcode::Tst,
                Role::Reply {
                    message_overall: false,
                },
            ) => Self::Detail,
            _ => Self::Uninterpreted,
        }
    }
}

fn read_op_data(opcode: HtcpOpcode, role: Role, op_data: &[u8]) -> Result<OpData, OpDataProblem> {
    let mut reader = Reader(op_data);
    Ok(match Shape::of(opcode, role) {
        Shape::Specifier => OpData::Specifier(reader.specifier()?),
        Shape::Clear => {
            let reason = reader.u16().ok_or(OpDataProblem::ClrReasonMissing {
                available: op_data.len(),
            })?;
            let reason = ClrReason::from_nibble(reason as u8);
            OpData::Clear {
                reason,
                specifier: reader.specifier()?,
            }
        }
        Shape::Detail if op_data.is_empty() => OpData::Empty,
        Shape::Detail => OpData::Detail(Detail {
            response_headers: reader.countstr(Field::ResponseHeaders)?.to_vec(),
            entity_headers: reader.countstr(Field::EntityHeaders)?.to_vec(),
            cache_headers: reader.countstr(Field::CacheHeaders)?.to_vec(),
        }),
        Shape::Uninterpreted if op_data.is_empty() => OpData::Empty,
        Shape::Uninterpreted => OpData::Opaque(op_data.to_vec()),
    })
}

fn put_countstr(out: &mut Vec<u8>, text: &[u8]) {
    // The caller bounds the whole datagram by MAX_DATAGRAM_LEN; a longer string is
    // refused there, so the truncation below never writes a wrong length.
    out.extend_from_slice(&(text.len().min(usize::from(u16::MAX)) as u16).to_be_bytes());
    out.extend_from_slice(text);
}

fn put_specifier(out: &mut Vec<u8>, specifier: &Specifier) {
    put_countstr(out, specifier.method.as_bytes());
    put_countstr(out, specifier.url.as_bytes());
    put_countstr(out, specifier.version.as_bytes());
    put_countstr(out, &specifier.request_headers);
}

/// Consumes big-endian fields from the front of a slice; `None` when too few octets remain.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_be_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_be_bytes)
    }

    fn countstr(&mut self, field: Field) -> Result<&'a [u8], OpDataProblem> {
        let declared = self.u16().ok_or(OpDataProblem::LengthMissing { field })?;
        let available = self.0.len();
        let (text, rest) =
            self.0
                .split_at_checked(usize::from(declared))
                .ok_or(OpDataProblem::Truncated {
                    field,
                    declared,
                    available,
                })?;
        self.0 = rest;
        Ok(text)
    }

    fn text(&mut self, field: Field) -> Result<String, OpDataProblem> {
        let text = self.countstr(field)?;
        String::from_utf8(text.to_vec()).map_err(|_| OpDataProblem::NotUtf8 { field })
    }

    /// Octets after the request headers are ignored, as Squid does.
    fn specifier(&mut self) -> Result<Specifier, OpDataProblem> {
        Ok(Specifier {
            method: self.text(Field::Method)?,
            url: self.text(Field::Url)?,
            version: self.text(Field::Version)?,
            request_headers: self.countstr(Field::RequestHeaders)?.to_vec(),
        })
    }
}

/// The COUNTSTR fields of a SPECIFIER and a DETAIL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Method,
    Url,
    Version,
    RequestHeaders,
    ResponseHeaders,
    EntityHeaders,
    CacheHeaders,
}

impl fmt::Display for Field {
    /// The RFC's name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Method => "METHOD",
            Self::Url => "URI",
            Self::Version => "VERSION",
            Self::RequestHeaders => "REQ-HDRS",
            Self::ResponseHeaders => "RESP-HDRS",
            Self::EntityHeaders => "ENTITY-HDRS",
            Self::CacheHeaders => "CACHE-HDRS",
        })
    }
}

/// Why a datagram could not be decoded. Squid drops every such datagram without a reply.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("datagram of {len} octets is shorter than the {HEADER_LEN}-octet HTCP header")]
    TooShort { len: usize },
    #[error(
        "datagram of {len} octets is longer than the {MAX_DATAGRAM_LEN} octets Squid receives"
    )]
    TooLong { len: usize },
    #[error("length field says {field} octets but the datagram has {len}")]
    LengthMismatch { field: u16, len: usize },
    #[error("HTCP MAJOR version {major} is not supported (only 0)")]
    UnsupportedMajor { major: u8 },
    #[error(
        "{available} octets after the header cannot hold the {DATA_HEADER_LEN}-octet DATA header"
    )]
    DataHeaderMissing { available: usize },
    #[error(
        "DATA length {field} is outside {DATA_HEADER_LEN}..={available} (the DATA header to the AUTH length)"
    )]
    DataLengthOutOfRange { field: u16, available: usize },
    #[error("opcode {opcode} is not an HTCP opcode")]
    UnknownOpcode { opcode: u8 },
    #[error("malformed {opcode} op-data in message {msg_id}: {problem}")]
    MalformedOpData {
        opcode: HtcpOpcode,
        msg_id: u32,
        problem: OpDataProblem,
    },
}

/// What is wrong with op-data whose DATA header was sound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum OpDataProblem {
    #[error("{field} length is missing")]
    LengthMissing { field: Field },
    #[error("{field} says {declared} octets but {available} follow")]
    Truncated {
        field: Field,
        declared: u16,
        available: usize,
    },
    #[error("{field} is not valid UTF-8")]
    NotUtf8 { field: Field },
    #[error("{available} octets cannot hold the CLR's 2-octet reason")]
    ClrReasonMissing { available: usize },
}

/// Why a message could not be put on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EncodeError {
    #[error("message of {len} octets is larger than the {MAX_DATAGRAM_LEN} octets Squid receives")]
    TooLarge { len: usize },
    #[error("response code {code} does not fit in 4 bits")]
    ResponseOutOfRange { code: u8 },
    #[error("{opcode} {role:?} cannot carry this op-data")]
    OpDataMismatch { opcode: HtcpOpcode, role: Role },
    #[error("opaque op-data must not be empty (use OpData::Empty)")]
    EmptyOpaque,
}

#[cfg(test)]
mod tests;
