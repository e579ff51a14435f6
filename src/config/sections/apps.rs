//! The readers of `[[users]]` and `[[apps]]`.

use super::super::checks::{
    check_attribute_key, check_csp_source, check_email, check_group, check_http_url, check_user_pattern, is_uuid,
};
use super::super::walk::{Cx, Section};
use super::super::{host_name, App, AppHost, User};

/// Every `[[users]]` entry; emails must be unique, case-insensitively.
pub(crate) fn users(top: &mut Section<'_>, cx: &mut Cx<'_>) -> Vec<User> {
    let mut users: Vec<User> = Vec::new();
    for mut s in top.array_of_tables(cx, "users") {
        let email = match s.required_str(cx, "email") {
            Some(f) => match check_email(f.value) {
                Ok(()) => {
                    let email = f.value.to_ascii_lowercase();
                    if let Some(first) = users.iter().position(|u| u.email == email) {
                        cx.error_at(&f, format!("duplicate of users[{first}].email"));
                    }
                    email
                }
                Err(why) => {
                    cx.error_at(&f, why);
                    String::new()
                }
            },
            None => String::new(),
        };
        let groups = s.list(cx, "groups", check_group);
        s.finish(cx);
        users.push(User { email, groups });
    }
    users
}

/// Every `[[apps]]` entry; ids must be unique, case-insensitively, and
/// app hosts unique and other than the gateway's (`main_url`).
pub(crate) fn apps(top: &mut Section<'_>, cx: &mut Cx<'_>, main_url: &str) -> Vec<App> {
    let main_host = main_url
        .parse::<http::Uri>()
        .ok()
        .and_then(|u| u.authority().map(|a| host_name(a.as_str())));
    let mut apps: Vec<App> = Vec::new();
    for mut s in top.array_of_tables(cx, "apps") {
        let id = match s.required_str(cx, "id") {
            Some(f) if is_uuid(f.value) => {
                let id = f.value.to_ascii_lowercase();
                if let Some(first) = apps.iter().position(|a| *a.id == *id) {
                    cx.error_at(&f, format!("duplicate of apps[{first}].id"));
                }
                id
            }
            Some(f) => {
                cx.error_at(
                    &f,
                    format!("expected a UUID (8-4-4-4-12 hex digits), found {:?}", f.value),
                );
                String::new()
            }
            None => String::new(),
        };
        let upstream = s.upstream(cx, "upstream");
        let allow_users = s.list(cx, "allow_users", check_user_pattern);
        let allow_groups = s.list(cx, "allow_groups", check_group);
        let frame_ancestors = s.list(cx, "frame_ancestors", check_csp_source);
        let host = s.str(cx, "public_url").and_then(|f| {
            let uri = check_http_url(f.value).map_err(|why| cx.error_at(&f, why)).ok()?;
            if !uri.path().trim_end_matches('/').is_empty() {
                cx.error_at(&f, "an app host is served at its root: no path");
                return None;
            }
            let name = host_name(uri.authority()?.as_str());
            if main_host.as_deref() == Some(name.as_str()) {
                cx.error_at(&f, "must not be the host of server.public_url");
            }
            if let Some(first) = apps
                .iter()
                .position(|a| a.host.as_ref().is_some_and(|h| h.name == name))
            {
                cx.error_at(&f, format!("host {name} is already apps[{first}].public_url's"));
            }
            Some(AppHost {
                public_url: f.value.trim_end_matches('/').to_owned(),
                name,
                line: f.line,
            })
        });
        let attribute_headers = s.list(cx, "attribute_headers", |key| {
            check_attribute_key(key)?;
            let name = http::HeaderName::try_from(format!("x-embed-attr-{}", key.to_ascii_lowercase()))
                .map_err(|_| format!("not usable in a header name: {key:?}"))?;
            Ok((key.to_owned(), name))
        });
        s.finish(cx);
        let mut app = App::new(id, upstream, allow_users, allow_groups, frame_ancestors);
        app.host = host;
        app.attribute_headers = attribute_headers;
        app.index = apps.len();
        apps.push(app);
    }
    apps
}
