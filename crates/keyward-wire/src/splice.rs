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

/// The byte range of the top-level `model` string value (quotes included), if present.
pub fn find_model(body: &[u8]) -> Result<Option<Range<usize>>, SpliceError> {
    let mut p = Parser { b: body, i: 0 };
    p.ws();
    if p.peek() != Some(b'{') {
        return Err(SpliceError::NotObject);
    }
    p.i += 1;
    let mut found: Option<Range<usize>> = None;
    p.ws();
    if p.peek() == Some(b'}') {
        return Ok(None);
    }
    loop {
        p.ws();
        let key = p.string()?;
        let is_model = key_is(&body[key.clone()], b"model");
        p.ws();
        if p.peek() != Some(b':') {
            return Err(SpliceError::Malformed(p.i));
        }
        p.i += 1;
        p.ws();
        let start = p.i;
        if is_model {
            if found.is_some() {
                return Err(SpliceError::DuplicateModel);
            }
            if p.peek() != Some(b'"') {
                p.value()?;
                return Err(SpliceError::ModelNotString);
            }
            let r = p.string()?;
            found = Some(r.start - 1..r.end + 1);
        } else {
            p.value()?;
        }
        let _ = start;
        p.ws();
        match p.peek() {
            Some(b',') => p.i += 1,
            Some(b'}') => return Ok(found),
            _ => return Err(SpliceError::Malformed(p.i)),
        }
    }
}

/// The top-level `model` value, decoded.
pub fn model_of(body: &[u8]) -> Result<Option<String>, SpliceError> {
    let Some(r) = find_model(body)? else {
        return Ok(None);
    };
    serde_json::from_slice::<String>(&body[r.clone()])
        .map(Some)
        .map_err(|_| SpliceError::Malformed(r.start))
}

/// `body` with its top-level `model` value replaced by `model` (JSON-escaped). Returns
/// `None` when the body has no `model`.
pub fn replace_model(body: &[u8], model: &str) -> Result<Option<Vec<u8>>, SpliceError> {
    let Some(r) = find_model(body)? else {
        return Ok(None);
    };
    let encoded = serde_json::to_string(model).map_err(|_| SpliceError::Malformed(r.start))?;
    let mut out = Vec::with_capacity(body.len() + encoded.len());
    out.extend_from_slice(&body[..r.start]);
    out.extend_from_slice(encoded.as_bytes());
    out.extend_from_slice(&body[r.end..]);
    Ok(Some(out))
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
