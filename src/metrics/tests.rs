use super::*;
use std::time::Duration;

fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    text.lines().find(|l| l.starts_with(prefix))
}

#[test]
fn a_request_moves_exactly_its_counter_and_histogram() {
    let ids = ["11111111-1111-4111-8111-111111111111"];
    let requests = RequestMetrics::new(ids.iter().copied());
    let before = global().encode();
    let counter =
        "embedgate_requests_total{route=\"embed\",app=\"11111111-1111-4111-8111-111111111111\",status_class=\"4xx\"}";
    let value = |text: &str| {
        line(text, counter)
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    let start = value(&before).expect("the series exists at zero");
    requests.record(
        Tag {
            route: RouteKind::Embed,
            app: Some(0),
        },
        401,
        Duration::from_millis(3),
    );
    let after = global().encode();
    assert_eq!(value(&after), Some(start + 1), "{after}");
    assert!(
        line(
            &after,
            "embedgate_request_duration_seconds_bucket{le=\"0.005\",route=\"embed\"}"
        )
        .is_some()
            || line(
                &after,
                "embedgate_request_duration_seconds_bucket{route=\"embed\",le=\"0.005\"}"
            )
            .is_some(),
        "{after}"
    );
}

#[test]
fn fixed_label_sets_are_exposed_at_zero() {
    let text = global().encode();
    for series in [
        "embedgate_upstream_errors_total{kind=\"tls\"}",
        "embedgate_exchanges_total{outcome=\"user_gone\"}",
        "embedgate_rate_limited_total{limiter=\"bad_pat\"}",
        "embedgate_config_reloads_total{outcome=\"refused\"}",
        "embedgate_sessions_live ",
        "embedgate_connections_open ",
        "embedgate_connections_idle ",
    ] {
        assert!(text.contains(series), "{series} in:\n{text}");
    }
}
