use super::line::*;
use super::*;
use std::net::SocketAddr;
use std::time::{Duration, UNIX_EPOCH};

fn record() -> Access {
    Access {
        started: Instant::now(),
        request_id: HeaderValue::from_static("id\"1"),
        client: IpAddr::from([127, 0, 0, 1]),
        method: Method::GET,
        uri: "/a?b=%22c%22&personal-access-token=pat_x".parse().unwrap_or_default(),
        version: Version::HTTP_2,
        received: AtomicU64::new(3),
        sent: AtomicU64::new(0),
        answer: OnceLock::new(),
    }
}

fn line(access: &Access, format: LogFormat) -> String {
    let mut out = Vec::new();
    let at = UNIX_EPOCH + Duration::from_micros(1_796_163_000_123_456);
    let len = access.write_line(format, at, &mut out);
    String::from_utf8(out[..len].to_vec()).unwrap_or_default()
}

/// What `write` writes on a line of its own.
fn written(format: LogFormat, write: impl FnOnce(&mut Line<'_>)) -> String {
    let mut buf = vec![0u8; LINE_BYTES];
    let mut line = Line {
        buf: &mut buf,
        len: 0,
        format,
    };
    write(&mut line);
    let len = line.len;
    String::from_utf8_lossy(&buf[..len]).into_owned()
}

#[test]
fn the_timestamp_reads_like_tracings() {
    let at = UNIX_EPOCH + Duration::from_micros(1_796_163_000_000_042);
    assert_eq!(timestamp_string(at), "2026-12-01T22:10:00.000042Z");
    assert_eq!(
        timestamp_string(at + Duration::from_micros(999_957)),
        "2026-12-01T22:10:00.999999Z"
    );
    assert_eq!(timestamp_string(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
}

#[test]
fn a_json_line_is_one_object_with_every_field_once() {
    let access = record();
    access.count(Direction::Sent, 10);
    access.count(Direction::Sent, 5);
    access.answered(Answered {
        route: RouteKind::Embed,
        app: Some("app-1".into()),
        status: 200,
        upstream: Some(UpstreamSeen {
            addr: Some(SocketAddr::from(([10, 0, 0, 1], 8080))),
            status: 201,
        }),
    });
    let text = line(&access, LogFormat::Json);
    assert!(text.ends_with("}\n"), "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    assert_eq!(
        v,
        serde_json::json!({
            "timestamp": "2026-12-01T22:10:00.123456Z", "level": "INFO",
            "target": "embedgate::access", "message": "request",
            "request_id": "id\"1", "client": "127.0.0.1", "method": "GET",
            "path": "/a?b=%22c%22&personal-access-token=REDACTED", "version": "HTTP/2.0", "route": "embed",
            "app": "app-1", "status": 200, "bytes_in": 3, "bytes_out": 15,
            "elapsed_us": v["elapsed_us"].as_u64().unwrap_or(u64::MAX),
            "upstream": "10.0.0.1:8080", "upstream_status": 201,
        })
    );
    assert_eq!(text.matches("\"target\"").count(), 1);
}

#[test]
fn a_request_the_client_left_logs_499_and_no_upstream() {
    let access = record();
    let text = line(&access, LogFormat::Text);
    assert!(
        text.starts_with(
            "2026-12-01T22:10:00.123456Z  INFO embedgate::access: request request_id=id\"1 client=127.0.0.1 \
             method=GET path=/a?b=%22c%22&personal-access-token=REDACTED version=HTTP/2.0 status=499 bytes_in=3 bytes_out=0 elapsed_us="
        ),
        "{text}"
    );
    assert!(!text.contains("upstream") && !text.contains("route="), "{text}");
    assert!(text.ends_with('\n'));
}

#[test]
fn ipv6_addresses_are_written_whole() {
    let mut access = record();
    access.client = "2001:db8::1".parse().unwrap_or(access.client);
    access.answered(Answered {
        route: RouteKind::Passthrough,
        app: None,
        status: 502,
        upstream: Some(UpstreamSeen {
            addr: "[::1]:8443".parse().ok(),
            status: 502,
        }),
    });
    let text = line(&access, LogFormat::Json);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    assert_eq!(
        (&v["client"], &v["upstream"]),
        (&"2001:db8::1".into(), &"[::1]:8443".into()),
        "{text}"
    );
}

/// The longest fixed parts at once (IPv6 addresses, the largest
/// numbers), and variable ones that JSON escapes six times over: the
/// buffer is made long enough, so nothing is left out.
#[test]
fn the_longest_line_is_written_whole() {
    let wild = "\u{1}\"".repeat(300);
    let mut access = record();
    access.client = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
        .parse()
        .unwrap_or(access.client);
    access.method = Method::from_bytes(b"A-VERY-LONG-EXTENSION-METHOD").unwrap_or(Method::GET);
    access.uri = format!("/{}?q={}", "%01".repeat(300), "x".repeat(500))
        .parse()
        .unwrap_or_default();
    access.request_id = HeaderValue::from_str(&"\\".repeat(200)).unwrap_or_else(|_| access.request_id.clone());
    access.received = AtomicU64::new(u64::MAX);
    access.sent = AtomicU64::new(u64::MAX);
    access.answered(Answered {
        route: RouteKind::Passthrough,
        app: Some(wild.as_str().into()),
        status: u16::MAX,
        upstream: Some(UpstreamSeen {
            addr: "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff%4294967295]:65535"
                .parse()
                .ok(),
            status: u16::MAX,
        }),
    });
    let text = line(&access, LogFormat::Json);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    assert_eq!(v["client"], access.client.to_string(), "{text}");
    assert_eq!(v["method"], "A-VERY-LONG-EXTENSION-METHOD");
    assert_eq!(v["path"].as_str().map(str::len), Some(access.uri.to_string().len()));
    assert_eq!(v["request_id"], "\\".repeat(200));
    assert_eq!(v["app"], wild);
    assert_eq!((&v["bytes_in"], &v["bytes_out"]), (&u64::MAX.into(), &u64::MAX.into()));
    assert_eq!(
        (&v["status"], &v["upstream_status"]),
        (&u16::MAX.into(), &u16::MAX.into())
    );
    assert!(v["upstream"].as_str().is_some_and(|u| u.ends_with(":65535")), "{text}");
    let text = line(&access, LogFormat::Text);
    assert!(text.contains(" upstream_status=65535\n") && text.contains(" bytes_out=18446744073709551615 "));
}

#[test]
fn route_and_version_names_read_as_their_own() {
    for route in RouteKind::ALL {
        let name = &ROUTE_NAMES[route as usize];
        assert_eq!(
            written(LogFormat::Text, |line| line.short(key!("route"), name)),
            format!(" route={}", route.name())
        );
        assert_eq!(
            written(LogFormat::Json, |line| line.short(key!("route"), name)),
            format!(",\"route\":\"{}\"", route.name())
        );
    }
    for version in [
        Version::HTTP_09,
        Version::HTTP_10,
        Version::HTTP_11,
        Version::HTTP_2,
        Version::HTTP_3,
    ] {
        let text = written(LogFormat::Text, |line| {
            line.short(key!("version"), version_name(version))
        });
        assert_eq!(text, format!(" version={version:?}"));
    }
}

#[test]
fn ipv4_addresses_read_as_display_writes_them() {
    // Every octet value in every position, and edge ports.
    let cases = (0..=255u8).flat_map(|n| {
        [
            ([n, 0, 0, 0], 0),
            ([0, n, 255, 9], 65535),
            ([9, 10, n, 100], 80),
            ([1, 20, 3, n], u16::from(n) * 257),
        ]
    });
    for (ip, port) in cases {
        let addr = SocketAddr::from((ip, port));
        for format in [LogFormat::Text, LogFormat::Json] {
            let with_port = written(format, |line| line.addr(key!("upstream"), addr));
            let without = written(format, |line| line.ip(key!("client"), addr.ip()));
            // Again: now from the thread's last text of each.
            assert_eq!(written(format, |line| line.addr(key!("upstream"), addr)), with_port);
            assert_eq!(written(format, |line| line.ip(key!("client"), addr.ip())), without);
            match format {
                LogFormat::Text => {
                    assert_eq!(with_port, format!(" upstream={addr}"));
                    assert_eq!(without, format!(" client={}", addr.ip()));
                }
                LogFormat::Json => {
                    assert_eq!(with_port, format!(",\"upstream\":\"{addr}\""));
                    assert_eq!(without, format!(",\"client\":\"{}\"", addr.ip()));
                }
            }
        }
    }
}

#[test]
fn numbers_are_written_in_decimal() {
    let edges = (0..20).flat_map(|p| {
        let power = 10u64.pow(p);
        [power - 1, power, power + 1]
    });
    for n in (0..=100_000).chain(edges).chain([u64::MAX - 1, u64::MAX]) {
        assert_eq!(
            written(LogFormat::Text, |line| line.number(key!("n"), n)),
            format!(" n={n}")
        );
    }
}

#[test]
fn json_strings_escape_only_what_they_must() {
    let cases = [
        ("", r#""""#),
        ("plain /a?b=c", r#""plain /a?b=c""#),
        ("\"", r#""\"""#),
        ("a\"b\\c\u{7f}d", r#""a\"b\\c\u007fd""#),
        ("\u{1f}é\u{1}", r#""\u001fé\u0001""#),
    ];
    for (value, expected) in cases {
        let text = written(LogFormat::Json, |line| line.json_string(value.as_bytes()));
        assert_eq!(text, expected);
        assert_eq!(serde_json::from_str::<String>(&text).ok().as_deref(), Some(value));
    }
}

#[test]
fn control_characters_are_escaped_in_json() {
    let text = written(LogFormat::Json, |line| line.json_string("a\u{1}\n\\".as_bytes()));
    assert_eq!(text, r#""a\u0001\u000a\\""#);
}
