//! Rewrites the top-level `"model"` value of a JSON request body by splicing its bytes:
//! only that value changes, everything else goes upstream byte for byte (key order,
//! whitespace, number formatting, unknown fields, multi-megabyte images).

use std::ops::Range;

use thiserror::Error;

/// Why a body's model could not be found or replaced. Each is the caller's error (400).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SpliceError {
    /// The body is not a JSON object. Label: `not_object`.
    #[error("the request body must be a JSON object")]
    NotObject,
    /// The body is malformed JSON at this byte. Label: `malformed`.
    #[error("the request body is not valid JSON (at byte {0})")]
    Malformed(usize),
    /// `model` is present but not a string. Label: `model_type`.
    #[error("`model` must be a string")]
    ModelNotString,
    /// `model` appears more than once (ambiguous: providers disagree on which wins).
    /// Label: `duplicate_model`.
    #[error("`model` appears more than once in the request body")]
    DuplicateModel,
}

/// What the gateway reads from a request body's top level, found in one pass over the
/// body (a long conversation is hundreds of kilobytes; it is walked once, not once per
/// question).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopLevel {
    /// The byte range of the `model` string value (quotes included), if present.
    pub model: Option<Range<usize>>,
    /// `"stream": true`. Any other value, or a repeated key, is not a stream request
    /// (the provider will reject such a body itself).
    pub stream: bool,
    /// A stable hash of the conversation's beginning — its system prompt (`system`,
    /// `instructions`, `systemInstruction`) and the first turn of `messages`, `contents`
    /// or `input` — or of an explicit `prompt_cache_key`: the same for every turn of one
    /// conversation, for session affinity (prompt caches live per account). `None` when
    /// the body has none of these.
    pub conversation: Option<u64>,
    /// The conversation is past its first turn (`messages`/`contents`/`input` holds more
    /// than one), or names its cache key: its credential so far should serve it again.
    pub continued: bool,
}

/// Reads `body`'s top-level `model` and `stream`; checks the whole body is one JSON object.
pub fn top_level(body: &[u8]) -> Result<TopLevel, SpliceError> {
    let mut p = Parser { b: body, i: 0 };
    p.ws();
    if p.peek() != Some(b'{') {
        return Err(SpliceError::NotObject);
    }
    p.i += 1;
    let mut top = TopLevel::default();
    let mut streams = 0;
    let mut prefix = std::hash::DefaultHasher::new();
    let mut cache_key: Option<u64> = None;
    let mut conversation = false;
    p.ws();
    if p.peek() == Some(b'}') {
        return Ok(top);
    }
    loop {
        p.ws();
        let key = p.string()?;
        let key = &body[key];
        let is_model = key_is(key, b"model");
        let is_stream = !is_model && key_is(key, b"stream");
        p.ws();
        if p.peek() != Some(b':') {
            return Err(SpliceError::Malformed(p.i));
        }
        p.i += 1;
        p.ws();
        if is_model {
            if top.model.is_some() {
                return Err(SpliceError::DuplicateModel);
            }
            if p.peek() != Some(b'"') {
                p.value()?;
                return Err(SpliceError::ModelNotString);
            }
            let r = p.string()?;
            top.model = Some(r.start - 1..r.end + 1);
        } else if !is_stream
            && p.peek() == Some(b'[')
            && (key_is(key, b"messages") || key_is(key, b"contents") || key_is(key, b"input"))
        {
            // The first turn identifies the conversation; later turns are appended.
            p.i += 1;
            p.ws();
            if p.peek() != Some(b']') {
                let start = p.i;
                p.value()?;
                std::hash::Hasher::write(&mut prefix, &body[start..p.i]);
                conversation = true;
                loop {
                    p.ws();
                    match p.peek() {
                        Some(b',') => {
                            p.i += 1;
                            p.value()?;
                            top.continued = true;
                        }
                        Some(b']') => break,
                        _ => return Err(SpliceError::Malformed(p.i)),
                    }
                }
            }
            p.i += 1;
        } else {
            let start = p.i;
            p.value()?;
            if is_stream {
                streams += 1;
                top.stream = streams == 1 && &body[start..p.i] == b"true";
            } else if key_is(key, b"system")
                || key_is(key, b"instructions")
                || key_is(key, b"systemInstruction")
            {
                std::hash::Hasher::write(&mut prefix, &body[start..p.i]);
            } else if key_is(key, b"prompt_cache_key") {
                let mut h = std::hash::DefaultHasher::new();
                std::hash::Hasher::write(&mut h, &body[start..p.i]);
                cache_key = Some(std::hash::Hasher::finish(&h));
                top.continued = true;
            }
        }
        p.ws();
        match p.peek() {
            Some(b',') => p.i += 1,
            Some(b'}') => {
                top.conversation =
                    cache_key.or_else(|| conversation.then(|| std::hash::Hasher::finish(&prefix)));
                return Ok(top);
            }
            _ => return Err(SpliceError::Malformed(p.i)),
        }
    }
}

/// The byte range of the top-level `model` string value (quotes included), if present.
pub fn find_model(body: &[u8]) -> Result<Option<Range<usize>>, SpliceError> {
    top_level(body).map(|t| t.model)
}

/// The model string at `range` of `body` (a range [`top_level`] found), decoded.
pub fn decode_model(body: &[u8], range: Range<usize>) -> Result<String, SpliceError> {
    let at = range.start;
    body.get(range)
        .and_then(|raw| serde_json::from_slice::<String>(raw).ok())
        .ok_or(SpliceError::Malformed(at))
}

/// The top-level `model` value, decoded.
pub fn model_of(body: &[u8]) -> Result<Option<String>, SpliceError> {
    find_model(body)?.map(|r| decode_model(body, r)).transpose()
}

/// `body` with the model value at `range` (a range [`top_level`] found) replaced by
/// `model`, JSON-escaped; every other byte unchanged.
pub fn replace_at(body: &[u8], range: Range<usize>, model: &str) -> Result<Vec<u8>, SpliceError> {
    let at = range.start;
    let (Some(before), Some(after)) = (body.get(..range.start), body.get(range.end..)) else {
        return Err(SpliceError::Malformed(at));
    };
    let mut out = Vec::with_capacity(body.len() + model.len() + 2);
    out.extend_from_slice(before);
    serde_json::to_writer(&mut out, model).map_err(|_| SpliceError::Malformed(at))?;
    out.extend_from_slice(after);
    Ok(out)
}

/// `body` with its top-level `model` value replaced by `model` (JSON-escaped). Returns
/// `None` when the body has no `model`.
pub fn replace_model(body: &[u8], model: &str) -> Result<Option<Vec<u8>>, SpliceError> {
    find_model(body)?
        .map(|r| replace_at(body, r, model))
        .transpose()
}

/// Whether `body` is one whole JSON object or array: brackets balanced, strings closed,
/// nothing after it but whitespace. A structural check in one pass (no allocation, no
/// decoding), for telling a complete answer from one cut short; it does not validate
/// literals or escapes (a full parser is the fallback for a precise error).
pub fn is_complete_container(body: &[u8]) -> bool {
    let mut p = Parser { b: body, i: 0 };
    p.ws();
    if !matches!(p.peek(), Some(b'{' | b'[')) || p.value().is_err() {
        return false;
    }
    p.ws();
    p.i == body.len()
}

/// The value ranges of the named members of the JSON object `body` (the object's own
/// members, not nested ones), found in one structural pass; `None` if `body` is not an
/// object, is cut short, or names one of `keys` twice (providers disagree on which wins).
pub(crate) fn members<const N: usize>(
    body: &[u8],
    keys: [&[u8]; N],
) -> Option<[Option<Range<usize>>; N]> {
    walk_members(body, keys, false)
}

/// [`members`] of a body that must be one whole object: `None` also when anything but
/// whitespace follows it. The same pass is the body's completeness check.
pub(crate) fn whole_object_members<const N: usize>(
    body: &[u8],
    keys: [&[u8]; N],
) -> Option<[Option<Range<usize>>; N]> {
    walk_members(body, keys, true)
}

fn walk_members<const N: usize>(
    body: &[u8],
    keys: [&[u8]; N],
    whole: bool,
) -> Option<[Option<Range<usize>>; N]> {
    let mut p = Parser { b: body, i: 0 };
    let mut found: [Option<Range<usize>>; N] = std::array::from_fn(|_| None);
    // At the object's closing brace: done, if nothing but whitespace follows (when asked).
    let end = |mut p: Parser<'_>, found| {
        p.i += 1;
        p.ws();
        (!whole || p.i == body.len()).then_some(found)
    };
    p.ws();
    if p.peek() != Some(b'{') {
        return None;
    }
    p.i += 1;
    p.ws();
    if p.peek() == Some(b'}') {
        return end(p, found);
    }
    loop {
        p.ws();
        let key = p.string().ok()?;
        p.ws();
        if p.peek() != Some(b':') {
            return None;
        }
        p.i += 1;
        p.ws();
        let start = p.i;
        p.value().ok()?;
        let raw = &body[key];
        let wanted = if raw.contains(&b'\\') {
            keys.iter().position(|k| key_is(raw, k))
        } else {
            keys.iter().position(|k| raw == *k)
        };
        if let Some(k) = wanted {
            if found[k].replace(start..p.i).is_some() {
                return None;
            }
        }
        p.ws();
        match p.peek() {
            Some(b',') => p.i += 1,
            Some(b'}') => return end(p, found),
            _ => return None,
        }
    }
}

fn key_is(raw: &[u8], want: &[u8]) -> bool {
    if !raw.contains(&b'\\') {
        return raw == want;
    }
    // An escaped key ("mod\u0065l") is still that key.
    let mut quoted = Vec::with_capacity(raw.len() + 2);
    quoted.push(b'"');
    quoted.extend_from_slice(raw);
    quoted.push(b'"');
    serde_json::from_slice::<String>(&quoted).is_ok_and(|s| s.as_bytes() == want)
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    /// A string at the cursor; returns the range of its contents (without quotes).
    fn string(&mut self) -> Result<Range<usize>, SpliceError> {
        if self.peek() != Some(b'"') {
            return Err(SpliceError::Malformed(self.i));
        }
        self.i += 1;
        let start = self.i;
        loop {
            let rest = &self.b[self.i..];
            let Some(off) = memchr::memchr2(b'"', b'\\', rest) else {
                return Err(SpliceError::Malformed(self.b.len()));
            };
            self.i += off;
            if self.b[self.i] == b'\\' {
                self.i += 2;
                if self.i > self.b.len() {
                    return Err(SpliceError::Malformed(self.b.len()));
                }
            } else {
                let end = self.i;
                self.i += 1;
                return Ok(start..end);
            }
        }
    }

    /// Skips any value at the cursor, iteratively (no recursion, whatever the nesting).
    fn value(&mut self) -> Result<(), SpliceError> {
        let mut depth = 0usize;
        loop {
            self.ws();
            match self.peek() {
                None => return Err(SpliceError::Malformed(self.i)),
                Some(b'"') => {
                    self.string()?;
                }
                Some(b'{' | b'[') => {
                    depth += 1;
                    self.i += 1;
                    continue;
                }
                Some(b'}' | b']') => {
                    if depth == 0 {
                        return Err(SpliceError::Malformed(self.i));
                    }
                    depth -= 1;
                    self.i += 1;
                }
                Some(b',' | b':') if depth > 0 => {
                    self.i += 1;
                    continue;
                }
                Some(c) if c == b'-' || c.is_ascii_alphanumeric() => {
                    while self.peek().is_some_and(|c| {
                        c == b'-' || c == b'+' || c == b'.' || c.is_ascii_alphanumeric()
                    }) {
                        self.i += 1;
                    }
                }
                Some(_) => return Err(SpliceError::Malformed(self.i)),
            }
            if depth == 0 {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_object_or_array_is_complete_and_a_cut_one_is_not() {
        let whole = br#"{"id":"m","content":[{"type":"text","text":"a } \" ] b"}],"usage":{"input_tokens":1}}"#;
        assert!(is_complete_container(whole));
        assert!(is_complete_container(b" [1, {\"a\": [2]}]\n"));
        for cut in 1..whole.len() {
            assert!(!is_complete_container(&whole[..cut]), "{cut}");
        }
        assert!(!is_complete_container(b"{\"a\":1} trailing"));
        assert!(!is_complete_container(b"\"just a string\""));
        assert!(!is_complete_container(b"<html></html>"));
        assert!(!is_complete_container(b""));
    }

    #[test]
    fn a_conversation_hashes_the_same_on_every_turn_and_differs_from_another() {
        let turn1 =
            br#"{"model":"m","system":"be brief","messages":[{"role":"user","content":"hi"}]}"#;
        let turn2 = br#"{"model":"m","system":"be brief","messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"},{"role":"user","content":"more"}],"stream":true}"#;
        let other =
            br#"{"model":"m","system":"be brief","messages":[{"role":"user","content":"bye"}]}"#;
        let other_system =
            br#"{"model":"m","system":"be long","messages":[{"role":"user","content":"hi"}]}"#;
        let c = |b: &[u8]| top_level(b).unwrap().conversation;
        assert!(c(turn1).is_some());
        assert_eq!(c(turn1), c(turn2));
        assert_ne!(c(turn1), c(other));
        assert_ne!(c(turn1), c(other_system));
        assert!(top_level(turn2).unwrap().stream);
        assert!(!top_level(turn1).unwrap().continued);
        assert!(top_level(turn2).unwrap().continued);
        // Gemini and Responses shapes; an explicit cache key wins.
        let gemini = br#"{"contents":[{"role":"user","parts":[{"text":"hi"}]}],"systemInstruction":{"parts":[{"text":"x"}]}}"#;
        assert!(c(gemini).is_some());
        let keyed1 =
            br#"{"model":"m","prompt_cache_key":"s-1","input":[{"role":"user","content":"a"}]}"#;
        let keyed2 =
            br#"{"model":"m","prompt_cache_key":"s-1","input":[{"role":"user","content":"b"}]}"#;
        assert_eq!(c(keyed1), c(keyed2));
        assert_eq!(c(br#"{"model":"m","input":"just text"}"#), None);
        // Malformed arrays are still refused.
        assert!(top_level(br#"{"model":"m","messages":[{"a":1} {"b":2}]}"#).is_err());
    }

    #[test]
    fn only_the_model_bytes_change() {
        let body = br#"{ "messages" : [{"role":"user","content":"model: \"x\""}], "model":"claude-x","max_tokens":1.50e3, "z":{"model":"inner"} }"#;
        let out = replace_model(body, "claude-sonnet-4-20250514")
            .unwrap()
            .unwrap();
        let expected = br#"{ "messages" : [{"role":"user","content":"model: \"x\""}], "model":"claude-sonnet-4-20250514","max_tokens":1.50e3, "z":{"model":"inner"} }"#;
        assert_eq!(out, expected.to_vec());
        assert_eq!(model_of(body).unwrap().as_deref(), Some("claude-x"));
    }

    #[test]
    fn the_stream_flag_is_read_in_the_same_pass() {
        let stream = |b: &[u8]| top_level(b).unwrap().stream;
        assert!(stream(br#"{"model":"m","stream":true}"#));
        assert!(stream(br#"{ "stre\u0061m" : true , "model":"m"}"#));
        assert!(!stream(br#"{"model":"m","stream":false}"#));
        assert!(!stream(br#"{"model":"m","stream":"true"}"#));
        assert!(!stream(br#"{"model":"m","stream":true,"stream":true}"#));
        assert!(!stream(br#"{"model":"m","x":{"stream":true}}"#));
        assert!(!stream(br#"{"model":"m"}"#));
        let body = br#"{"stream":true,"model":"m\u00e9"}"#;
        let top = top_level(body).unwrap();
        let at = top.model.unwrap();
        assert_eq!(decode_model(body, at.clone()).unwrap(), "m\u{e9}");
        assert_eq!(
            replace_at(body, at, "n").unwrap(),
            br#"{"stream":true,"model":"n"}"#.to_vec()
        );
    }

    #[test]
    fn escapes_and_odd_keys() {
        assert_eq!(
            model_of(br#"{"mod\u0065l":"a\"b"}"#).unwrap().as_deref(),
            Some("a\"b")
        );
        let out = replace_model(br#"{"model":"a"}"#, "we\"ird")
            .unwrap()
            .unwrap();
        assert_eq!(out, br#"{"model":"we\"ird"}"#.to_vec());
        assert_eq!(find_model(b"{}").unwrap(), None);
        assert_eq!(replace_model(br#"{"x":1}"#, "m").unwrap(), None);
    }

    #[test]
    fn bad_bodies_are_the_callers_error() {
        assert_eq!(find_model(b"[1]"), Err(SpliceError::NotObject));
        assert_eq!(
            find_model(br#"{"model":1}"#),
            Err(SpliceError::ModelNotString)
        );
        assert_eq!(
            find_model(br#"{"model":"a","model":"b"}"#),
            Err(SpliceError::DuplicateModel)
        );
        assert!(matches!(
            find_model(br#"{"model":"a""#),
            Err(SpliceError::Malformed(_))
        ));
        assert!(matches!(
            find_model(br#"{"a":[1,2}"#),
            Err(SpliceError::Malformed(_))
        ));
        assert!(matches!(
            find_model(b"{\"a\":\"\\"),
            Err(SpliceError::Malformed(_))
        ));
    }
}
