//! Fuzzes HTCP decoding: no input may panic, and whatever decodes must survive encode→decode.
#![no_main]

use canopy_proxy::htcp::codec::HtcpMessage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|datagram: &[u8]| {
    if let Ok(message) = HtcpMessage::decode(datagram) {
        let encoded = message.encode().expect("a decoded message must re-encode");
        assert_eq!(HtcpMessage::decode(&encoded), Ok(message));
    }
});
