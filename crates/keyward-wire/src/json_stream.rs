//! Gemini's `streamGenerateContent` without `alt=sse`: one JSON array whose elements
//! arrive over time (`[{…}\r\n,\r\n{…}]`). The framer yields each top-level element's exact
//! bytes as soon as it is complete, tracking strings and nesting, never re-encoding.

use crate::sse::FrameError;

/// Incremental framer for a streamed JSON array.
#[derive(Debug)]
pub struct JsonArrayFramer {
    buf: Vec<u8>,
    pos: usize,
    /// Saw the opening `[`.
    opened: bool,
    /// Saw the closing `]` of the array.
    closed: bool,
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// Start of the element being read.
    start: Option<usize>,
    max_element: usize,
}

/// What the framer found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonItem {
    /// One complete element's bytes.
    Element(Vec<u8>),
    /// The array closed: the stream is complete at the wire level.
    End,
}

impl JsonArrayFramer {
    /// A framer that rejects single elements larger than `max_element` bytes.
    pub fn new(max_element: usize) -> Self {
        JsonArrayFramer {
            buf: Vec::new(),
            pos: 0,
            opened: false,
            closed: false,
            depth: 0,
            in_string: false,
            escaped: false,
            start: None,
            max_element: max_element.max(64),
        }
    }

    /// Appends bytes.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// Whether the closing `]` has been seen.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The next complete element (or the end of the array).
    pub fn next_item(&mut self) -> Option<Result<JsonItem, FrameError>> {
        while self.pos < self.buf.len() {
            let b = self.buf[self.pos];
            self.pos += 1;
            if self.closed {
                continue;
            }
            if !self.opened {
                match b {
                    b'[' => self.opened = true,
                    // An error body instead of an array: treat it as a one-element stream.
                    b'{' => {
                        self.opened = true;
                        self.start = Some(self.pos - 1);
                        self.depth = 1;
                    }
                    _ => {}
                }
                continue;
            }
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            match b {
                b'"' => {
                    if self.start.is_none() {
                        self.start = Some(self.pos - 1);
                    }
                    self.in_string = true;
                }
                b'{' | b'[' => {
                    if self.depth == 0 {
                        self.start = Some(self.pos - 1);
                    }
                    self.depth += 1;
                }
                b'}' | b']' => {
                    if self.depth == 0 {
                        if b == b']' {
                            self.closed = true;
                            self.compact();
                            return Some(Ok(JsonItem::End));
                        }
                        continue;
                    }
                    self.depth -= 1;
                    if self.depth == 0 {
                        if let Some(s) = self.start.take() {
                            let el = self.buf[s..self.pos].to_vec();
                            self.compact();
                            return Some(Ok(JsonItem::Element(el)));
                        }
                    }
                }
                _ => {}
            }
        }
        let held = self.start.map_or(0, |s| self.buf.len() - s);
        if held > self.max_element {
            return Some(Err(FrameError::EventTooLarge {
                limit: self.max_element,
            }));
        }
        if self.start.is_none() {
            self.compact();
        }
        None
    }

    fn compact(&mut self) {
        let keep_from = self.start.unwrap_or(self.pos);
        if keep_from > 0 {
            self.buf.drain(..keep_from);
            self.pos -= keep_from;
            if let Some(s) = self.start.as_mut() {
                *s -= keep_from;
            }
        }
    }

    /// At the end of the stream: the bytes of an element that never completed, if any.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        let rest = self.start.take().map(|s| self.buf[s..].to_vec());
        self.buf.clear();
        self.pos = 0;
        rest.filter(|r| !r.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yields_elements_as_they_complete_whatever_the_chunking() {
        let input = br#"[{"candidates":[{"content":{"parts":[{"text":"a]}\"{"}]}}]}
,
{"candidates":[{"finishReason":"STOP"}],"usageMetadata":{"totalTokenCount":3}}
]"#;
        for chunk in 1..input.len() {
            let mut f = JsonArrayFramer::new(1 << 20);
            let mut items = Vec::new();
            for c in input.chunks(chunk) {
                f.push(c);
                while let Some(i) = f.next_item() {
                    items.push(i.unwrap());
                }
            }
            assert_eq!(items.len(), 3, "chunk {chunk}");
            let JsonItem::Element(first) = &items[0] else {
                panic!()
            };
            let v: serde_json::Value = serde_json::from_slice(first).unwrap();
            assert_eq!(v["candidates"][0]["content"]["parts"][0]["text"], "a]}\"{");
            assert_eq!(items[2], JsonItem::End);
            assert!(f.is_closed());
        }
    }

    #[test]
    fn a_cut_stream_leaves_its_partial_element() {
        let mut f = JsonArrayFramer::new(1 << 20);
        f.push(br#"[{"a":1},{"b":"#);
        assert!(matches!(f.next_item(), Some(Ok(JsonItem::Element(_)))));
        assert!(f.next_item().is_none());
        assert!(!f.is_closed());
        assert_eq!(f.finish().as_deref(), Some(&br#"{"b":"#[..]));
    }

    #[test]
    fn an_error_object_instead_of_an_array_is_one_element() {
        let mut f = JsonArrayFramer::new(1 << 20);
        f.push(br#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED"}}"#);
        assert!(matches!(f.next_item(), Some(Ok(JsonItem::Element(_)))));
    }

    #[test]
    fn an_element_over_the_bound_is_an_error() {
        let mut f = JsonArrayFramer::new(100);
        f.push(b"[{\"a\":\"");
        f.push(&[b'x'; 200]);
        assert!(matches!(
            f.next_item(),
            Some(Err(FrameError::EventTooLarge { .. }))
        ));
    }
}
