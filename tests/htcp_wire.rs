//! HTCP with a real Squid (Debian's 5.7, DESIGN.md §11): Canopy's codec asks Squid's
//! `htcp_port` about objects in both of Squid's layouts and clears one, and decodes every
//! answer Squid gives.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use canopy_proxy::htcp::codec::{
    ClrReason, Detail, HtcpLayout, HtcpMessage, HtcpOpcode, OpData, ResponseCode, Role, Specifier,
};
use hyper::{Response, StatusCode};
use tokio::net::UdpSocket;

use common::squid::{free_udp_port_on, squid_binary, Squid, SQUID_IP};
use common::{full, request_via, Origin};

/// Sends `message` to Squid's HTCP port and decodes the one reply.
async fn exchange(
    socket: &UdpSocket,
    squid_htcp: SocketAddr,
    message: &HtcpMessage,
) -> HtcpMessage {
    let datagram = message.encode().expect("query encodes");
    socket.send_to(&datagram, squid_htcp).await.expect("send");
    let mut buf = [0; 9000];
    let (len, from) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
        .await
        .expect("squid answers within 5 s")
        .expect("recv");
    assert_eq!(from, squid_htcp);
    HtcpMessage::decode(&buf[..len]).expect("squid's reply decodes")
}

fn header_names(block: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(block)
        .lines()
        .filter_map(|line| line.split(':').next())
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn squid_answers_tst_in_both_layouts_and_obeys_clr() {
    let Some(binary) = squid_binary() else { return };
    let origin = Origin::start(|seen| {
        let mut response = Response::new(full(format!("object {}", seen.path)));
        response
            .headers_mut()
            .insert("cache-control", "max-age=3600".parse().unwrap());
        response
    })
    .await;
    let htcp_port = free_udp_port_on(SQUID_IP);
    let squid = Squid::start(
        &binary,
        &format!(
            "htcp_port {htcp_port}\nhtcp_access allow loopback\nhtcp_clr_access allow loopback"
        ),
    );
    let squid_htcp = SocketAddr::new(SQUID_IP, htcp_port);
    let held = origin.url("/held");
    let absent = origin.url("/absent");
    let reply = request_via(squid.http, None, "GET", &held, &[])
        .await
        .expect("squid answers");
    assert_eq!(reply.status, StatusCode::OK);

    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    for (layout, id) in [(HtcpLayout::Rfc, 41), (HtcpLayout::OldSquid, 0)] {
        let query = HtcpMessage::tst_query(layout, id, Specifier::get(&held, Vec::new()));
        let hit = exchange(&socket, squid_htcp, &query).await;
        assert_eq!(
            (hit.layout, hit.opcode, hit.response, hit.role, hit.msg_id),
            (
                layout,
                HtcpOpcode::Tst,
                ResponseCode::ZERO,
                Role::Reply {
                    message_overall: false
                },
                id
            ),
            "{layout:?} HIT"
        );
        let OpData::Detail(detail) = &hit.op_data else {
            panic!("{layout:?} HIT without detail: {hit:?}");
        };
        assert_eq!(header_names(&detail.response_headers), ["Age"]);
        assert!(
            header_names(&detail.entity_headers).contains(&"Expires".to_owned()),
            "{layout:?} entity headers: {:?}",
            String::from_utf8_lossy(&detail.entity_headers)
        );

        let query = HtcpMessage::tst_query(layout, id + 1, Specifier::get(&absent, Vec::new()));
        let miss = exchange(&socket, squid_htcp, &query).await;
        let expected_id = if layout == HtcpLayout::Rfc { id + 1 } else { 0 };
        assert_eq!(
            miss,
            HtcpMessage::tst_miss(layout, expected_id),
            "{layout:?} MISS"
        );
    }
    squid.wait_logged("UDP_HIT/", &held).await;
    squid.wait_logged("UDP_MISS/", &absent).await;

    let clear = |id| {
        HtcpMessage::clr_query(
            HtcpLayout::Rfc,
            id,
            ClrReason::Unspecified,
            Specifier::get(&held, Vec::new()),
            true,
        )
    };
    let purged = exchange(&socket, squid_htcp, &clear(50)).await;
    assert_eq!(
        purged,
        HtcpMessage::clr_reply(HtcpLayout::Rfc, 50, ResponseCode::ZERO)
    );
    let gone = exchange(&socket, squid_htcp, &clear(51)).await;
    assert_eq!(
        gone,
        HtcpMessage::clr_reply(HtcpLayout::Rfc, 51, ResponseCode::CLR_NOT_FOUND)
    );
    let query = HtcpMessage::tst_query(HtcpLayout::Rfc, 52, Specifier::get(&held, Vec::new()));
    let after = exchange(&socket, squid_htcp, &query).await;
    assert_eq!(after.response, ResponseCode::TST_NOT_FOUND);
    assert_eq!(after.op_data, OpData::Detail(Detail::default()));
}
