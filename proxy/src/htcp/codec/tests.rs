use super::*;
use proptest::prelude::*;

const URL: &str = "http://127.0.0.1:18080/htcp-q";

/// Squid 5.7's TST for `URL` to a `cache_peer … htcp` (captured): MINOR 1, opcode 1 in the
/// high nibble, F1, message id 1, `GET`, the URL, `1/1`, empty REQ-HDRS, AUTH length 2.
const SQUID_TST: &str = "0039000100331002000000010003474554001d687474703a2f2f3132372e302e302e\
                         313a31383038302f687463702d710003312f3100000002";

/// The same query to a `cache_peer … htcp=oldsquid`: MINOR 0, opcode low, F1 = 0x40, id 0.
const SQUID_TST_OLD: &str = "0039000000330140000000000003474554001d687474703a2f2f3132372e302e30\
                             2e313a31383038302f687463702d710003312f3100000002";

/// Squid 5.7's HIT answering a TST with message id 7 (captured): RR, response 0, `Age`,
/// `Expires` and `Last-Modified`, `Cache-to-Origin`.
const SQUID_HIT: &str = "009c0001009610010000000700094167653a2033350d0a0056457870697265733a20\
                         53756e2c203239204e6f7620323032362030323a32393a333420474d540d0a4c6173\
                         742d4d6f6469666965643a2053756e2c203239204e6f7620323032362030313a3239\
                         3a333420474d540d0a002943616368652d746f2d4f726967696e3a203132372e302e\
                         302e31203020302e30303130303020300d0a0002";

/// The HIT answering an old-layout query: response high, RR = 0x80, message id 0.
const SQUID_HIT_OLD: &str = "009c0000009601800000000000094167653a2033350d0a0056457870697265733a\
                             2053756e2c203239204e6f7620323032362030323a32393a333420474d540d0a4c\
                             6173742d4d6f6469666965643a2053756e2c203239204e6f7620323032362030313a\
                             32393a333420474d540d0a002943616368652d746f2d4f726967696e3a203132372e\
                             302e302e31203020302e30303130303020300d0a0002";

/// Squid 5.7's MISS: response 1, three empty strings.
const SQUID_MISS: &str = "00140001000e1101000000070000000000000002";
const SQUID_MISS_OLD: &str = "00140000000e1180000000000000000000000002";

/// Squid 5.7's CLR replies to CLRs with F1 set: 0 purged (id 9), 2 not held (id 10).
const SQUID_CLR_PURGED: &str = "000e000100084001000000090002";
const SQUID_CLR_NOT_FOUND: &str = "000e0001000842010000000a0002";

fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).expect("ascii"), 16).expect("hex"))
        .collect()
}

fn squid_hit_detail() -> Detail {
    Detail {
        response_headers: b"Age: 35\r\n".to_vec(),
        entity_headers: b"Expires: Sun, 29 Nov 2026 02:29:34 GMT\r\n\
                          Last-Modified: Sun, 29 Nov 2026 01:29:34 GMT\r\n"
            .to_vec(),
        cache_headers: b"Cache-to-Origin: 127.0.0.1 0 0.001000 0\r\n".to_vec(),
    }
}

#[test]
fn tst_query_matches_squid_bytes_in_both_layouts() {
    let query = HtcpMessage::tst_query(HtcpLayout::Rfc, 1, Specifier::get(URL, Vec::new()));
    assert_eq!(query.encode(), Ok(hex(SQUID_TST)));
    assert_eq!(HtcpMessage::decode(&hex(SQUID_TST)), Ok(query));

    let old = HtcpMessage::tst_query(HtcpLayout::OldSquid, 0, Specifier::get(URL, Vec::new()));
    assert_eq!(old.encode(), Ok(hex(SQUID_TST_OLD)));
    assert_eq!(HtcpMessage::decode(&hex(SQUID_TST_OLD)), Ok(old));
}

#[test]
fn hit_matches_squid_bytes_in_both_layouts() {
    let hit = HtcpMessage::tst_hit(HtcpLayout::Rfc, 7, squid_hit_detail());
    assert_eq!(HtcpMessage::decode(&hex(SQUID_HIT)).as_ref(), Ok(&hit));
    assert_eq!(hit.encode(), Ok(hex(SQUID_HIT)));

    let old = HtcpMessage::tst_hit(HtcpLayout::OldSquid, 0, squid_hit_detail());
    assert_eq!(HtcpMessage::decode(&hex(SQUID_HIT_OLD)).as_ref(), Ok(&old));
    assert_eq!(old.encode(), Ok(hex(SQUID_HIT_OLD)));
}

#[test]
fn miss_matches_squid_bytes_in_both_layouts() {
    let miss = HtcpMessage::tst_miss(HtcpLayout::Rfc, 7);
    assert_eq!(miss.encode(), Ok(hex(SQUID_MISS)));
    assert_eq!(HtcpMessage::decode(&hex(SQUID_MISS)), Ok(miss));

    let old = HtcpMessage::tst_miss(HtcpLayout::OldSquid, 0);
    assert_eq!(old.encode(), Ok(hex(SQUID_MISS_OLD)));
    assert_eq!(HtcpMessage::decode(&hex(SQUID_MISS_OLD)), Ok(old));
}

#[test]
fn clr_replies_match_squid_bytes() {
    let purged = HtcpMessage::clr_reply(HtcpLayout::Rfc, 9, ResponseCode::ZERO);
    assert_eq!(purged.encode(), Ok(hex(SQUID_CLR_PURGED)));
    assert_eq!(HtcpMessage::decode(&hex(SQUID_CLR_PURGED)), Ok(purged));

    let not_found = HtcpMessage::clr_reply(HtcpLayout::Rfc, 10, ResponseCode::CLR_NOT_FOUND);
    assert_eq!(not_found.encode(), Ok(hex(SQUID_CLR_NOT_FOUND)));
    assert_eq!(
        HtcpMessage::decode(&hex(SQUID_CLR_NOT_FOUND)),
        Ok(not_found)
    );
}

#[test]
fn clr_query_is_laid_out_as_squid_sends_one_on_invalidation() {
    // htcpClear: F1 = 0, reason 1 in the low bits of the first 16-bit field, no headers.
    let clr = HtcpMessage::clr_query(
        HtcpLayout::Rfc,
        3,
        ClrReason::Invalidation,
        Specifier::get("http://h/", Vec::new()),
        false,
    );
    let bytes = clr.encode().expect("encodes");
    assert_eq!(&bytes[4..12], &[0, 33, 0x40, 0x00, 0, 0, 0, 3]);
    assert_eq!(&bytes[12..14], &[0, 1]);
    assert_eq!(HtcpMessage::decode(&bytes), Ok(clr));
}

#[test]
fn request_headers_travel_whole() {
    let headers = b"Host: h\r\nAccept-Language: fr\r\nUser-Agent: x\r\n".to_vec();
    let query = HtcpMessage::tst_query(HtcpLayout::Rfc, 5, Specifier::get("http://h/", headers));
    let bytes = query.encode().expect("encodes");
    assert_eq!(HtcpMessage::decode(&bytes), Ok(query));
}

#[test]
fn auth_is_ignored_and_minor_above_one_is_the_rfc_layout() {
    let mut bytes = hex(SQUID_MISS);
    bytes.extend_from_slice(&[0, 4]); // a longer AUTH section than Squid's
    bytes[1] = bytes.len() as u8;
    bytes[3] = 2;
    let message = HtcpMessage::decode(&bytes).expect("decodes");
    assert_eq!(message, HtcpMessage::tst_miss(HtcpLayout::Rfc, 7));
}

#[test]
fn nop_mon_and_set_decode_without_interpretation() {
    let mut bytes = hex(SQUID_MISS);
    bytes[6] = 0x31; // SET
    let message = HtcpMessage::decode(&bytes).expect("decodes");
    assert_eq!(message.opcode, HtcpOpcode::Set);
    assert_eq!(message.op_data, OpData::Opaque(vec![0; 6]));
    assert_eq!(message.encode(), Ok(bytes));
}

#[test]
fn bad_headers_are_reported_with_the_values_found() {
    assert_eq!(
        HtcpMessage::decode(&[0, 4, 0]),
        Err(DecodeError::TooShort { len: 3 })
    );
    let miss = hex(SQUID_MISS);
    assert_eq!(
        HtcpMessage::decode(&miss[..19]),
        Err(DecodeError::LengthMismatch { field: 20, len: 19 })
    );
    let mut major = miss.clone();
    major[2] = 1;
    assert_eq!(
        HtcpMessage::decode(&major),
        Err(DecodeError::UnsupportedMajor { major: 1 })
    );
    assert_eq!(
        HtcpMessage::decode(&[0, 8, 0, 1, 0, 4, 0x10, 0]),
        Err(DecodeError::DataHeaderMissing { available: 2 })
    );
    let mut short_data = miss.clone();
    short_data[5] = 7;
    assert_eq!(
        HtcpMessage::decode(&short_data),
        Err(DecodeError::DataLengthOutOfRange {
            field: 7,
            available: 14
        })
    );
    let mut no_auth = miss.clone();
    no_auth[5] = 16;
    assert_eq!(
        HtcpMessage::decode(&no_auth),
        Err(DecodeError::DataLengthOutOfRange {
            field: 16,
            available: 14
        })
    );
    let mut huge = vec![0; MAX_DATAGRAM_LEN + 1];
    huge[..2].copy_from_slice(&(MAX_DATAGRAM_LEN as u16 + 1).to_be_bytes());
    assert_eq!(
        HtcpMessage::decode(&huge),
        Err(DecodeError::TooLong {
            len: MAX_DATAGRAM_LEN + 1
        })
    );
    let mut opcode = miss;
    opcode[6] = 0x51;
    assert_eq!(
        HtcpMessage::decode(&opcode),
        Err(DecodeError::UnknownOpcode { opcode: 5 })
    );
}

#[test]
fn a_truncated_specifier_names_the_field() {
    let mut bytes = hex(SQUID_TST);
    bytes[12 + 2 + 3 + 1] = 0x40; // URI length 0x0040, more than follows
    assert_eq!(
        HtcpMessage::decode(&bytes),
        Err(DecodeError::MalformedOpData {
            opcode: HtcpOpcode::Tst,
            msg_id: 1,
            problem: OpDataProblem::Truncated {
                field: Field::Url,
                declared: 0x40,
                available: 36,
            },
        })
    );
    let empty_tst = [0, 14, 0, 1, 0, 8, 0x10, 0x02, 0, 0, 0, 4, 0, 2];
    assert_eq!(
        HtcpMessage::decode(&empty_tst),
        Err(DecodeError::MalformedOpData {
            opcode: HtcpOpcode::Tst,
            msg_id: 4,
            problem: OpDataProblem::LengthMissing {
                field: Field::Method
            },
        })
    );
}

#[test]
fn encode_refuses_what_it_cannot_send() {
    let huge = HtcpMessage::tst_query(
        HtcpLayout::Rfc,
        1,
        Specifier::get("http://h/", vec![b'x'; MAX_DATAGRAM_LEN]),
    );
    assert!(matches!(huge.encode(), Err(EncodeError::TooLarge { .. })));
    let mut mismatch = HtcpMessage::tst_miss(HtcpLayout::Rfc, 1);
    mismatch.opcode = HtcpOpcode::Clr;
    assert_eq!(
        mismatch.encode(),
        Err(EncodeError::OpDataMismatch {
            opcode: HtcpOpcode::Clr,
            role: Role::Reply {
                message_overall: false
            }
        })
    );
    assert_eq!(
        ResponseCode::try_from(16),
        Err(EncodeError::ResponseOutOfRange { code: 16 })
    );
}

mod properties {
    use super::*;

    fn layout() -> impl Strategy<Value = HtcpLayout> {
        prop_oneof![Just(HtcpLayout::Rfc), Just(HtcpLayout::OldSquid)]
    }

    fn specifier() -> impl Strategy<Value = Specifier> {
        (
            "[A-Z]{0,8}",
            "\\PC{0,64}",
            "[0-9]/[0-9]",
            proptest::collection::vec(any::<u8>(), 0..128),
        )
            .prop_map(|(method, url, version, request_headers)| Specifier {
                method,
                url,
                version,
                request_headers,
            })
    }

    fn bytes() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..96)
    }

    fn message() -> impl Strategy<Value = HtcpMessage> {
        let response = (0u8..16).prop_map(|code| ResponseCode::try_from(code).expect("4 bits"));
        let reason = prop_oneof![Just(ClrReason::Unspecified), Just(ClrReason::Invalidation)];
        let opaque_opcode = prop_oneof![
            Just(HtcpOpcode::Nop),
            Just(HtcpOpcode::Mon),
            Just(HtcpOpcode::Set)
        ];
        (
            layout(),
            any::<u32>(),
            response,
            any::<bool>(),
            prop_oneof![
                specifier().prop_map(|s| (HtcpOpcode::Tst, false, OpData::Specifier(s))),
                (reason, specifier()).prop_map(|(reason, specifier)| (
                    HtcpOpcode::Clr,
                    false,
                    OpData::Clear { reason, specifier }
                )),
                (bytes(), bytes(), bytes()).prop_map(|(r, e, c)| (
                    HtcpOpcode::Tst,
                    true,
                    OpData::Detail(Detail {
                        response_headers: r,
                        entity_headers: e,
                        cache_headers: c,
                    })
                )),
                Just((HtcpOpcode::Clr, true, OpData::Empty)),
                (
                    opaque_opcode,
                    bytes().prop_filter("non-empty", |b| !b.is_empty())
                )
                    .prop_map(|(opcode, raw)| (opcode, false, OpData::Opaque(raw))),
            ],
        )
            .prop_map(|(layout, msg_id, response, f1, (opcode, reply, op_data))| {
                let role = match (reply, &op_data) {
                    (true, OpData::Detail(_)) => Role::Reply {
                        message_overall: false,
                    },
                    (true, _) => Role::Reply {
                        message_overall: f1,
                    },
                    (false, _) => Role::Query {
                        response_wanted: f1,
                    },
                };
                HtcpMessage {
                    layout,
                    opcode,
                    response,
                    role,
                    msg_id,
                    op_data,
                }
            })
    }

    proptest! {
        #[test]
        fn encode_then_decode_gives_the_message_back(message in message()) {
            let bytes = message.encode().expect("generated messages encode");
            prop_assert_eq!(HtcpMessage::decode(&bytes), Ok(message));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(message) = HtcpMessage::decode(&bytes) {
                let again = message.encode().expect("a decoded message re-encodes");
                prop_assert_eq!(HtcpMessage::decode(&again), Ok(message));
            }
        }

        #[test]
        fn a_sound_header_over_arbitrary_op_data_never_panics(
            layout in layout(),
            flags in any::<[u8; 2]>(),
            op_data in proptest::collection::vec(any::<u8>(), 0..128),
        ) {
            let data_len = (DATA_HEADER_LEN + op_data.len()) as u16;
            let len = (HEADER_LEN + usize::from(data_len) + 2) as u16;
            let mut bytes = len.to_be_bytes().to_vec();
            bytes.extend_from_slice(&[0, layout.minor()]);
            bytes.extend_from_slice(&data_len.to_be_bytes());
            bytes.extend_from_slice(&flags);
            bytes.extend_from_slice(&[0, 0, 0, 1]);
            bytes.extend_from_slice(&op_data);
            bytes.extend_from_slice(&[0, 2]);
            if let Ok(message) = HtcpMessage::decode(&bytes) {
                let again = message.encode().expect("a decoded message re-encodes");
                prop_assert_eq!(HtcpMessage::decode(&again), Ok(message));
            }
        }
    }
}
