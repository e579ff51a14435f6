//! HTML for the demo's pages without a template crate: markup that can only
//! be made from escaped text or from the program's own constants, and one
//! way to fill a template with it.
//!
//! The pages themselves are files under `pages/` (`include_str!`); what a
//! request contributes, header values above all, reaches them only through
//! [`Html::escape`].

/// A piece of HTML that is safe to splice into a page: escaped text, markup
/// written in this crate, or a concatenation of both. There is no way to
/// make one from a runtime `String` without escaping it.
#[derive(Clone, Debug, Default)]
pub(crate) struct Html(String);

impl Html {
    /// `text` escaped for element content and quoted attribute values
    /// (the five characters of HTML's syntax; see the HTML standard's
    /// "escaping a string").
    pub(crate) fn escape(text: &str) -> Html {
        let mut out = String::with_capacity(text.len());
        for c in text.chars() {
            match c {
                '&' => out.push_str("&amp;"),
                '<' => out.push_str("&lt;"),
                '>' => out.push_str("&gt;"),
                '"' => out.push_str("&quot;"),
                '\'' => out.push_str("&#39;"),
                c => out.push(c),
            }
        }
        Html(out)
    }

    /// Markup written in the program: `'static`, so it cannot come from a
    /// request.
    pub(crate) fn trusted(markup: &'static str) -> Html {
        Html(markup.to_owned())
    }

    /// Appends `more`.
    pub(crate) fn push(&mut self, more: Html) {
        self.0.push_str(&more.0);
    }

    /// The markup, for a response body.
    pub(crate) fn into_string(self) -> String {
        self.0
    }
}

/// `template` with every `{{name}}` replaced by the value of `name` in
/// `values`, in one pass (a value is never scanned for placeholders).
///
/// Templates are constants of the program; a name missing from `values` is
/// left as it is, so that a slip shows on the page (and fails the pages'
/// tests, which look for a leftover `{{`) instead of failing the request.
pub(crate) fn render(template: &'static str, values: &[(&str, Html)]) -> Html {
    let mut out = String::with_capacity(template.len() + values.iter().map(|(_, v)| v.0.len()).sum::<usize>());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            break;
        };
        let name = &after[..end];
        out.push_str(&rest[..start]);
        match values.iter().find(|(n, _)| *n == name) {
            Some((_, value)) => out.push_str(&value.0),
            None => out.push_str(&rest[start..start + 2 + end + 2]),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Html(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escape_html(text: &str) -> String {
        Html::escape(text).into_string()
    }

    #[test]
    fn escape_html_escapes_the_five_specials() {
        assert_eq!(escape_html("a<b>&\"'c"), "a&lt;b&gt;&amp;&quot;&#39;c");
        assert_eq!(escape_html("plain é"), "plain é");
    }

    #[test]
    fn render_fills_placeholders_once_and_keeps_the_rest() {
        let page = render(
            "<p>{{a}} and {{b}}, {{a}} again</p>\n{ single } {{",
            &[("a", Html::escape("<x>")), ("b", Html::escape("{{a}}"))],
        );
        assert_eq!(
            page.into_string(),
            "<p>&lt;x&gt; and {{a}}, &lt;x&gt; again</p>\n{ single } {{"
        );
    }

    #[test]
    fn html_concatenates_escaped_and_trusted_parts() {
        let mut html = Html::trusted("<code>");
        html.push(Html::escape("a&b"));
        html.push(Html::trusted("</code>"));
        assert_eq!(html.into_string(), "<code>a&amp;b</code>");
    }
}
