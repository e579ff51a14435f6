//! The TOML walker: reads tables key by key and keeps every problem with
//! its file, line and dotted key.
//!
//! A serde derive would stop at the first error; `embedgate check` must list
//! them all, so each getter records its own problem and returns a default,
//! and [`Section::finish`] reports every key nobody asked for.

use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml_edit::{Array, Item, TableLike, Value};

use super::checks::check_http_url;
use super::{ConfigError, Upstream};

/// Upper bound on any duration key: a year is long past any sane timeout,
/// and bounding it keeps `Instant + Duration` from overflowing later.
pub(crate) const MAX_SECONDS: u64 = 365 * 24 * 60 * 60;
/// [`MAX_SECONDS`] for keys counted in minutes.
pub(crate) const MAX_MINUTES: u64 = MAX_SECONDS / 60;

/// What every check needs: the file (for messages and relative paths), its
/// text (for line numbers) and the errors found so far.
pub(crate) struct Cx<'a> {
    /// The config file, named in every error.
    pub(crate) file: &'a Path,
    /// Its whole text, to turn byte offsets into lines.
    pub(crate) text: &'a str,
    /// Where relative paths in it are resolved (see [`config_dir`]).
    pub(crate) dir: PathBuf,
    /// Every problem found so far, in the order found.
    pub(crate) errors: Vec<ConfigError>,
    /// Files that must exist, checked at the end of the walk
    /// ([`Cx::check_files`]), so a missing one is reported beside every
    /// other problem, not after they are fixed.
    pub(crate) files: Vec<NeededFile>,
}

/// A file the config names that must exist.
pub(crate) struct NeededFile {
    pub(crate) path: PathBuf,
    pub(crate) key: String,
    pub(crate) line: Option<usize>,
    /// The demo makes it at first start when missing (`[demo] enabled`).
    pub(crate) demo_makes: bool,
}

impl Cx<'_> {
    /// 1-based line of a byte offset (clamped, so any span is safe).
    pub(crate) fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
    }

    /// The line a span starts on, if it has one.
    fn line(&self, span: Option<Range<usize>>) -> Option<usize> {
        span.map(|s| self.line_of(s.start))
    }

    /// Records a problem at `line` (none: the problem has no place).
    pub(crate) fn error(&mut self, line: Option<usize>, key: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            line,
            key: key.into(),
            message: message.into(),
        });
    }

    /// A file path from the file, resolved against the file's directory.
    /// Existence is not checked here: the demo makes its files at first
    /// start, and the server reports a missing one.
    pub(crate) fn resolve(&mut self, f: &Field<&str>) -> Option<PathBuf> {
        if f.value.is_empty() {
            self.error_at(f, "must not be empty");
            return None;
        }
        // `./certs/x.pem` under `/etc/embedgate/.` reads as the file it is.
        let joined = self.dir.join(f.value);
        Some(
            joined
                .components()
                .filter(|c| !matches!(c, std::path::Component::CurDir))
                .collect(),
        )
    }

    /// [`resolve`](Self::resolve), for a file that must exist (checked at
    /// the end of the walk; the demo makes the ones it `demo_makes`).
    pub(crate) fn resolve_file(&mut self, f: &Field<&str>, demo_makes: bool) -> Option<PathBuf> {
        let path = self.resolve(f)?;
        self.files.push(NeededFile {
            path: path.clone(),
            key: f.key.clone(),
            line: f.line,
            demo_makes,
        });
        Some(path)
    }

    /// Reports every needed file that is not there (but those the demo
    /// makes, when `demo` is on), each at its key and line.
    pub(crate) fn check_files(&mut self, demo: bool) {
        let missing: Vec<(Option<usize>, String, String)> = self
            .files
            .iter()
            .filter(|f| !(f.path.exists() || demo && f.demo_makes))
            .map(|f| (f.line, f.key.clone(), format!("{}: no such file", f.path.display())))
            .collect();
        for (line, key, message) in missing {
            self.error(line, key, message);
        }
    }

    /// Records a problem with a value, at its key and line.
    pub(crate) fn error_at<T>(&mut self, field: &Field<T>, message: impl Into<String>) {
        self.error(field.line, field.key.clone(), message);
    }
}

/// A value read from the file, with where it was.
pub(crate) struct Field<T> {
    /// The value, already of the expected type.
    pub(crate) value: T,
    /// Dotted path, e.g. `apps[1].id` or `server.trusted_proxies[2]`.
    pub(crate) key: String,
    /// Where the key is written; `None` for a default nobody wrote.
    pub(crate) line: Option<usize>,
}

/// Reads one table: each getter marks its key as known, and [`finish`]
/// reports every key nobody asked for.
///
/// [`finish`]: Section::finish
pub(crate) struct Section<'a> {
    /// `server`, `apps[1]`; empty for the root.
    path: String,
    /// `None` for an absent optional section: every key reads as absent.
    table: Option<&'a dyn TableLike>,
    /// The header's line, for "missing key" errors.
    line: Option<usize>,
    /// Every key a getter asked for, present or not.
    known: Vec<&'static str>,
}

impl<'a> Section<'a> {
    /// A reader for `table` (`None`: absent, every key reads as absent)
    /// named `path` whose header is at `line`.
    pub(crate) fn new(path: impl Into<String>, table: Option<&'a dyn TableLike>, line: Option<usize>) -> Self {
        Section {
            path: path.into(),
            table,
            line,
            known: Vec::new(),
        }
    }

    /// The dotted path of `name` in this table.
    fn key(&self, name: &str) -> String {
        let name = display_key(name);
        if self.path.is_empty() {
            name
        } else {
            format!("{}.{name}", self.path)
        }
    }

    /// The item at `name`, marked as known, with its key path and line.
    pub(crate) fn entry(&mut self, cx: &Cx<'_>, name: &'static str) -> Option<Field<&'a Item>> {
        self.known.push(name);
        let (key, item) = self.table?.get_key_value(name)?;
        let line = cx.line(key.span().or_else(|| item.span())).or(self.line);
        Some(Field {
            value: item,
            key: self.key(name),
            line,
        })
    }

    /// Records `name` as a required key that is absent.
    fn missing(&self, cx: &mut Cx<'_>, name: &str) {
        cx.error(self.line, self.key(name), "required key missing");
    }

    /// Records that `f` holds `item` where `expected` was wanted.
    fn wrong_type<T>(cx: &mut Cx<'_>, f: &Field<T>, expected: &str, item: &Item) {
        cx.error_at(f, format!("expected {expected}, found {}", describe(item)));
    }

    /// A string, or `None` when absent or not a string (the latter
    /// recorded).
    pub(crate) fn str(&mut self, cx: &mut Cx<'_>, name: &'static str) -> Option<Field<&'a str>> {
        let f = self.entry(cx, name)?;
        match f.value.as_str() {
            Some(v) => Some(Field {
                value: v,
                key: f.key,
                line: f.line,
            }),
            None => {
                Self::wrong_type(cx, &f, "a string", f.value);
                None
            }
        }
    }

    /// Like [`str`](Self::str), and reports the key missing when absent.
    pub(crate) fn required_str(&mut self, cx: &mut Cx<'_>, name: &'static str) -> Option<Field<&'a str>> {
        let f = self.str(cx, name);
        if f.is_none() && !self.has(name) {
            self.missing(cx, name);
        }
        f
    }

    /// A boolean, or `None` when absent or not a boolean (the latter
    /// recorded).
    pub(crate) fn bool(&mut self, cx: &mut Cx<'_>, name: &'static str) -> Option<bool> {
        self.bool_field(cx, name).map(|f| f.value)
    }

    /// [`bool`](Self::bool), with where it was written.
    pub(crate) fn bool_field(&mut self, cx: &mut Cx<'_>, name: &'static str) -> Option<Field<bool>> {
        let f = self.entry(cx, name)?;
        match f.value.as_bool() {
            Some(v) => Some(Field {
                value: v,
                key: f.key,
                line: f.line,
            }),
            None => {
                Self::wrong_type(cx, &f, "a boolean", f.value);
                None
            }
        }
    }

    /// An integer in `min..=max`, or `default` when absent (or wrong, with
    /// the error recorded).
    pub(crate) fn uint_field(
        &mut self,
        cx: &mut Cx<'_>,
        name: &'static str,
        default: u64,
        min: u64,
        max: u64,
    ) -> Field<u64> {
        let Some(f) = self.entry(cx, name) else {
            return Field {
                value: default,
                key: self.key(name),
                line: None,
            };
        };
        let value = match f.value.as_integer() {
            None => {
                Self::wrong_type(cx, &f, "an integer", f.value);
                default
            }
            Some(n) if n < 0 => {
                cx.error_at(&f, format!("must not be negative, found {n}"));
                default
            }
            Some(n) if (n as u64) < min => {
                cx.error_at(&f, format!("must be at least {min}, found {n}"));
                default
            }
            Some(n) if (n as u64) > max => {
                cx.error_at(&f, format!("must be at most {max}, found {n}"));
                default
            }
            Some(n) => n as u64,
        };
        Field {
            value,
            key: f.key,
            line: f.line,
        }
    }

    /// The value of [`uint_field`](Self::uint_field), without its place.
    pub(crate) fn uint(&mut self, cx: &mut Cx<'_>, name: &'static str, default: u64, min: u64, max: u64) -> u64 {
        self.uint_field(cx, name, default, min, max).value
    }

    /// A duration given in whole seconds, at least `min`, at most
    /// [`MAX_SECONDS`]; `default` when absent or wrong.
    pub(crate) fn seconds(&mut self, cx: &mut Cx<'_>, name: &'static str, default: u64, min: u64) -> Duration {
        Duration::from_secs(self.uint(cx, name, default, min, MAX_SECONDS))
    }

    /// An `IP:port`, or `None` when absent or wrong (the latter recorded).
    pub(crate) fn socket_addr(&mut self, cx: &mut Cx<'_>, name: &'static str) -> Option<SocketAddr> {
        self.socket_addr_field(cx, name).map(|f| f.value)
    }

    /// Like [`socket_addr`](Self::socket_addr), with the key's place (for
    /// checks against other keys).
    pub(crate) fn socket_addr_field(&mut self, cx: &mut Cx<'_>, name: &'static str) -> Option<Field<SocketAddr>> {
        let f = self.str(cx, name)?;
        match f.value.parse() {
            Ok(addr) => Some(Field {
                value: addr,
                key: f.key,
                line: f.line,
            }),
            Err(_) => {
                cx.error_at(
                    &f,
                    format!("expected IP:port (e.g. 127.0.0.1:8443), found {:?}", f.value),
                );
                None
            }
        }
    }

    /// A required file path, resolved against the config file's
    /// directory; the file must exist unless the demo makes it.
    pub(crate) fn file(&mut self, cx: &mut Cx<'_>, name: &'static str, demo_makes: bool) -> Option<PathBuf> {
        let f = self.required_str(cx, name)?;
        cx.resolve_file(&f, demo_makes)
    }

    /// A required upstream URL (see [`check_http_url`]); a placeholder when
    /// absent or wrong (recorded).
    pub(crate) fn upstream(&mut self, cx: &mut Cx<'_>, name: &'static str) -> Upstream {
        let placeholder = Upstream::new(http::Uri::default());
        let Some(f) = self.required_str(cx, name) else {
            return placeholder;
        };
        match check_http_url(f.value) {
            Ok(uri) => Upstream::new(uri),
            Err(why) => {
                cx.error_at(&f, why);
                placeholder
            }
        }
    }

    /// Whether the table has `name` at all, whatever its type.
    pub(crate) fn has(&self, name: &str) -> bool {
        self.table.is_some_and(|t| t.contains_key(name))
    }

    /// An array, or `None` when absent or not an array (the latter
    /// recorded).
    fn array(&mut self, cx: &mut Cx<'_>, name: &'static str) -> Option<Field<&'a Array>> {
        let f = self.entry(cx, name)?;
        match f.value.as_array() {
            Some(a) => Some(Field {
                value: a,
                key: f.key,
                line: f.line,
            }),
            None => {
                Self::wrong_type(cx, &f, "an array", f.value);
                None
            }
        }
    }

    /// An array of strings, each turned into a `T` by `check` or reported
    /// (in order) at its own path and line, e.g. `apps[0].allow_users[2]`.
    pub(crate) fn list<T>(
        &mut self,
        cx: &mut Cx<'_>,
        name: &'static str,
        check: impl Fn(&str) -> Result<T, String>,
    ) -> Vec<T> {
        self.list_fields(cx, name, check)
            .unwrap_or_default()
            .into_iter()
            .map(|f| f.value)
            .collect()
    }

    /// Like [`list`](Self::list), keeping each value's place; `None` when
    /// the key is absent (or not an array, recorded).
    pub(crate) fn list_fields<T>(
        &mut self,
        cx: &mut Cx<'_>,
        name: &'static str,
        check: impl Fn(&str) -> Result<T, String>,
    ) -> Option<Vec<Field<T>>> {
        let array = self.array(cx, name)?;
        let mut out = Vec::new();
        for (i, v) in array.value.iter().enumerate() {
            let key = format!("{}[{i}]", array.key);
            let line = cx.line(v.span()).or(array.line);
            let result = match v.as_str() {
                Some(s) => check(s),
                None => Err(format!("expected a string, found {}", describe_value(v))),
            };
            match result {
                Ok(value) => out.push(Field { value, key, line }),
                Err(why) => cx.error(line, key, why),
            }
        }
        Some(out)
    }

    /// This table's dotted path and the line of its header.
    pub(crate) fn place(&self) -> (&str, Option<usize>) {
        (&self.path, self.line)
    }

    /// A sub-table such as `[server]`; `None` when absent or not a table
    /// (the latter recorded).
    pub(crate) fn section(&mut self, cx: &mut Cx<'_>, name: &'static str) -> Option<Section<'a>> {
        let f = self.entry(cx, name)?;
        match f.value.as_table_like() {
            Some(t) => {
                // A `[name]` header's table span starts at the header.
                let line = match f.value {
                    Item::Table(t) => cx.line(t.span()),
                    _ => None,
                }
                .or(f.line);
                Some(Section::new(f.key, Some(t), line))
            }
            None => {
                Self::wrong_type(cx, &f, "a table", f.value);
                None
            }
        }
    }

    /// Like [`section`](Self::section), but an absent section reads as empty
    /// so its defaults apply.
    pub(crate) fn section_or_empty(&mut self, cx: &mut Cx<'_>, name: &'static str) -> Section<'a> {
        self.section(cx, name)
            .unwrap_or_else(|| Section::new(self.key(name), None, None))
    }

    /// `[[name]]` entries (or an inline array of inline tables), as
    /// sections named `name[i]`.
    pub(crate) fn array_of_tables(&mut self, cx: &mut Cx<'_>, name: &'static str) -> Vec<Section<'a>> {
        let Some(f) = self.entry(cx, name) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        match f.value {
            Item::ArrayOfTables(aot) => {
                for (i, t) in aot.iter().enumerate() {
                    let line = cx.line(t.span()).or(f.line);
                    out.push(Section::new(format!("{}[{i}]", f.key), Some(t as &dyn TableLike), line));
                }
            }
            Item::Value(Value::Array(array)) => {
                for (i, v) in array.iter().enumerate() {
                    let key = format!("{}[{i}]", f.key);
                    let line = cx.line(v.span()).or(f.line);
                    match v.as_inline_table() {
                        Some(t) => out.push(Section::new(key, Some(t as &dyn TableLike), line)),
                        None => cx.error(line, key, format!("expected a table, found {}", describe_value(v))),
                    }
                }
            }
            other => cx.error_at(
                &f,
                format!("expected an array of tables ([[{name}]]), found {}", describe(other)),
            ),
        }
        out
    }

    /// Reports every key of the table that no getter asked for.
    pub(crate) fn finish(&self, cx: &mut Cx<'_>) {
        let Some(table) = self.table else { return };
        for (name, item) in table.iter() {
            if self.known.contains(&name) {
                continue;
            }
            let span = table
                .get_key_value(name)
                .and_then(|(k, _)| k.span())
                .or_else(|| item.span());
            let line = cx.line(span).or(self.line);
            let what = if self.path.is_empty() && item.is_table_like() {
                "unknown section"
            } else {
                "unknown key"
            };
            let message = match did_you_mean(name, &self.known) {
                Some(known) => format!("{what} (did you mean `{known}`?)"),
                None => what.to_owned(),
            };
            cx.error(line, self.key(name), message);
        }
    }
}

/// The known name closest to a mistyped `name`, when one is close enough
/// to be what was meant: at most two edits (insert, delete, change, swap
/// two neighbours), or one for a name of four letters or fewer.
fn did_you_mean(name: &str, known: &[&'static str]) -> Option<&'static str> {
    let limit = if name.len() <= 4 { 1 } else { 2 };
    known
        .iter()
        .map(|k| (edits(name, k), *k))
        .filter(|&(d, _)| d <= limit)
        .min_by_key(|&(d, _)| d)
        .map(|(_, k)| k)
}

/// The optimal string alignment distance between `a` and `b` (Levenshtein
/// with transpositions of neighbours), ignoring ASCII case.
fn edits(a: &str, b: &str) -> usize {
    let a: Vec<u8> = a.bytes().map(|c| c.to_ascii_lowercase()).collect();
    let b: Vec<u8> = b.bytes().map(|c| c.to_ascii_lowercase()).collect();
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for i in 0..=a.len() {
        d[i * width] = i;
    }
    for (j, cell) in d.iter_mut().take(width).enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[(i - 1) * width + j] + 1)
                .min(d[i * width + j - 1] + 1)
                .min(d[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[(i - 2) * width + j - 2] + 1);
            }
            d[i * width + j] = best;
        }
    }
    d[a.len() * width + b.len()]
}

/// "a string", "an integer", … for type errors.
fn describe(item: &Item) -> &'static str {
    match item {
        Item::None => "nothing",
        Item::Value(v) => describe_value(v),
        Item::Table(_) => "a table",
        Item::ArrayOfTables(_) => "an array of tables",
    }
}

/// [`describe`] for a value.
fn describe_value(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a datetime",
        Value::Array(_) => "an array",
        Value::InlineTable(_) => "an inline table",
    }
}

/// A key as TOML would write it: bare when it can be, quoted otherwise (so a
/// key with odd characters cannot garble the message).
fn display_key(name: &str) -> String {
    if !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        name.to_string()
    } else {
        format!("{name:?}")
    }
}

/// The directory relative paths in the file are resolved against: the
/// file's own, made absolute with the working directory when it can be.
pub(crate) fn config_dir(path: &Path) -> PathBuf {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if dir.is_absolute() {
        return dir;
    }
    match std::env::current_dir() {
        Ok(cwd) => cwd.join(dir),
        Err(_) => dir,
    }
}
