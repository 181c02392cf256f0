//! The fallback for a truncated or invalid JSON body: `"key": "value"` pairs picked by
//! key, without regard to nesting.

use std::borrow::Cow;

use super::Signals;

impl<'a> Signals<'a> {
    /// A truncated or invalid JSON body: pick `"key": "value"` pairs by key.
    pub(super) fn read_loose(&mut self, json: &'a str) {
        let mut found = false;
        for (key, value) in LoosePairs::new(json) {
            found = true;
            match key {
                "type" if value != "error" => {
                    self.ty.get_or_insert(Cow::Borrowed(value));
                }
                "code" => {
                    if let Ok(n) = value.parse::<u16>() {
                        self.num_code.get_or_insert(n);
                    }
                    self.code.get_or_insert(Cow::Borrowed(value));
                }
                "status" => match value.parse::<u16>() {
                    Ok(n) => {
                        self.num_code.get_or_insert(n);
                    }
                    Err(_) => {
                        self.gstatus.get_or_insert(Cow::Borrowed(value));
                    }
                },
                "message" | "Message" | "error_description" | "detail" => {
                    self.message.get_or_insert(Cow::Borrowed(value));
                }
                "error" => {
                    self.error_str.get_or_insert(Cow::Borrowed(value));
                }
                "reason" => {
                    self.reason.get_or_insert(Cow::Borrowed(value));
                }
                "__type" => {
                    self.aws_type.get_or_insert(Cow::Borrowed(value));
                }
                "error_code" => {
                    self.detail_code.get_or_insert(Cow::Borrowed(value));
                }
                "finish_reason" | "finishReason" | "blockReason" | "stop_reason" | "stopReason" => {
                    self.finish.get_or_insert(Cow::Borrowed(value));
                }
                _ => {}
            }
        }
        self.structured = found;
    }
}

/// Iterates `"key": "value"` (or `"key": 123`) pairs anywhere in a JSON-ish text,
/// without regard to nesting. Used only when strict parsing fails.
struct LoosePairs<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> LoosePairs<'a> {
    fn new(s: &'a str) -> Self {
        LoosePairs { s, pos: 0 }
    }

    /// Reads a JSON string starting at `at` (which is a `"`); returns its raw contents
    /// (escapes left as they are) and the index after the closing quote.
    fn string_at(&self, at: usize) -> Option<(&'a str, usize)> {
        let b = self.s.as_bytes();
        let mut i = at + 1;
        while i < b.len() {
            match b[i] {
                b'\\' => i += 2,
                b'"' => return Some((self.s.get(at + 1..i)?, i + 1)),
                _ => i += 1,
            }
        }
        None
    }
}

impl<'a> Iterator for LoosePairs<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        let b = self.s.as_bytes();
        while self.pos < b.len() {
            let q = self.s[self.pos..].find('"')? + self.pos;
            let (key, after) = self.string_at(q)?;
            self.pos = after;
            let mut i = after;
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            if i >= b.len() || b[i] != b':' {
                continue;
            }
            i += 1;
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            if i >= b.len() {
                return None;
            }
            if b[i] == b'"' {
                let (value, end) = self.string_at(i)?;
                self.pos = end;
                return Some((key, value));
            }
            let start = i;
            while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'-') {
                i += 1;
            }
            if i > start {
                self.pos = i;
                return Some((key, self.s.get(start..i)?));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::super::Signals;

    #[test]
    fn truncated_json_is_read_loosely() {
        let s = Signals::read(r#"{"error":{"type":"rate_limit_error","message":"Number of requ"#);
        assert!(s.structured);
        assert_eq!(s.ty.as_deref(), Some("rate_limit_error"));
    }
}
