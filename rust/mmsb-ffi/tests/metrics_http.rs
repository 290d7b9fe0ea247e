//! The Prometheus scrape endpoint over loopback: started on an ephemeral port, scraped with a
//! plain TcpStream, refused and bounded where it should be, stopped with its port released.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::ptr;
use std::sync::Arc;
use std::time::Duration;

use mmsb::monitoring::http::{MetricsServer, MAX_REQUEST};
use mmsb::{Delta, ErrorCode, Location, MMSBState, PageMeta};
use mmsb_ffi::state::{mmsb_state_close, mmsb_state_free, mmsb_state_open};
use mmsb_ffi::stats::{mmsb_metrics_serve, mmsb_metrics_server_port, mmsb_metrics_stop};

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Sends `request` and returns the whole response (the server closes the connection).
fn exchange(port: u16, request: &[u8]) -> String {
    let mut c = TcpStream::connect((LOCAL, port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(request).unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    out
}

fn get(port: u16, path: &str) -> String {
    exchange(port, format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
}

#[test]
fn serves_the_prometheus_text_and_releases_the_port() {
    let state = Arc::new(MMSBState::in_memory());
    let p = state.create_page(64, Location::Cpu, PageMeta::default()).unwrap();
    for i in 0..7u8 {
        state.route_delta(p, &Delta::write(0, &[i + 1]).unwrap(), None).unwrap();
    }
    let mut server = MetricsServer::start(&state, LOCAL, 0).unwrap();
    let port = server.local_addr().port();
    assert_ne!(port, 0);

    let resp = get(port, "/metrics");
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("Content-Type: text/plain; version=0.0.4"), "{head}");
    assert!(head.contains(&format!("Content-Length: {}", body.len())), "{head}");
    assert!(body.contains("# TYPE mmsb_deltas_routed_total counter"), "{body}");
    assert!(body.lines().any(|l| l == "mmsb_deltas_routed_total 7"), "{body}");
    // Live: a later write shows in the next scrape.
    state.route_delta(p, &Delta::write(0, &[9]).unwrap(), None).unwrap();
    assert!(get(port, "/metrics").lines().any(|l| l == "mmsb_deltas_routed_total 8"));

    // Anything else is refused by name, and the server keeps serving.
    assert!(get(port, "/").starts_with("HTTP/1.1 404 "));
    assert!(exchange(port, b"POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405 "));
    assert!(exchange(port, b"hello\r\n\r\n").starts_with("HTTP/1.1 400 "));
    let huge = format!("GET /metrics HTTP/1.1\r\nX-Filler: {}\r\n\r\n", "a".repeat(2 * MAX_REQUEST));
    let mut c = TcpStream::connect((LOCAL, port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = c.write_all(huge.as_bytes()); // the server may close before it has read it all
    let mut out = String::new();
    let _ = c.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 431 "), "{out}");
    assert!(get(port, "/metrics").starts_with("HTTP/1.1 200 "));

    // A closed state: 503, not stale numbers.
    state.close();
    assert!(get(port, "/metrics").starts_with("HTTP/1.1 503 "));

    server.stop();
    assert!(TcpStream::connect((LOCAL, port)).is_err(), "nothing listens after stop");
    TcpListener::bind((LOCAL, port)).expect("the port is free again");
    server.stop(); // idempotent
}

#[test]
fn only_loopback_and_a_taken_port_is_an_io_error() {
    let state = Arc::new(MMSBState::in_memory());
    let err = MetricsServer::start(&state, IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0).unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
    assert!(err.to_string().contains("loopback"), "{err}");
    let taken = TcpListener::bind((LOCAL, 0)).unwrap();
    let err = MetricsServer::start(&state, LOCAL, taken.local_addr().unwrap().port()).unwrap_err();
    assert_eq!(err.code(), ErrorCode::Io);
    assert!(err.to_string().contains("cannot serve metrics"), "{err}");
}

#[test]
fn c_abi_serve_port_stop() {
    // SAFETY: live handles throughout, each freed once; out-pointers are valid.
    unsafe {
        let mut st = ptr::null_mut();
        assert_eq!(mmsb_state_open(ptr::null(), &mut st), 0);
        let mut server = ptr::null_mut();
        let bad = "0.0.0.0";
        assert_eq!(
            mmsb_metrics_serve(st, bad.as_ptr().cast(), bad.len(), 0, &mut server),
            ErrorCode::InvalidArgument as u32
        );
        let junk = "localhost:80";
        assert_eq!(
            mmsb_metrics_serve(st, junk.as_ptr().cast(), junk.len(), 0, &mut server),
            ErrorCode::InvalidArgument as u32
        );
        assert_eq!(mmsb_metrics_serve(st, ptr::null(), 0, 0, ptr::null_mut()), ErrorCode::NullPointer as u32);
        assert_eq!(mmsb_metrics_serve(st, ptr::null(), 0, 0, &mut server), 0);
        let mut port = 0u16;
        assert_eq!(mmsb_metrics_server_port(server, &mut port), 0);
        assert!(get(port, "/metrics").contains("mmsb_pages "));
        // Freeing the state first is fine: the endpoint answers 503 until stopped.
        assert_eq!(mmsb_state_close(st), 0);
        mmsb_state_free(st);
        assert!(get(port, "/metrics").starts_with("HTTP/1.1 503 "));
        mmsb_metrics_stop(server);
        mmsb_metrics_stop(ptr::null_mut());
        TcpListener::bind((LOCAL, port)).expect("the port is free again");
    }
}
