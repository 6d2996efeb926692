//! Fuzzes ICP decoding: no input may panic, and whatever decodes must survive encode→decode.
#![no_main]

use canopy_proxy::icp::codec::IcpMessage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|datagram: &[u8]| {
    if let Ok(message) = IcpMessage::decode(datagram) {
        let encoded = message.encode().expect("a decoded message must re-encode");
        assert_eq!(IcpMessage::decode(&encoded), Ok(message));
    }
});
