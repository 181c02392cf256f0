//! A Server-Sent Events framer (WHATWG HTML "event stream" format), sans-IO.
//!
//! Lines end with `\n`, `\r\n` or `\r`; an empty line ends an event; `:` starts a comment;
//! fields are `event`, `data` (joined with `\n` when repeated), `id` and `retry`. Each
//! event keeps its exact bytes (`raw`) so a proxy can forward it unchanged. Scanning is
//! incremental: bytes are examined once however they are chunked.

use thiserror::Error;

/// Framing errors.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// One event grew past the configured bound without ending. The stream is treated as
    /// broken (the caller gets an in-band error); raise `max_event` if providers send
    /// larger single events. Label: `event_too_large`.
    #[error("a single stream event exceeded {limit} bytes without ending")]
    EventTooLarge { limit: usize },
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The exact bytes of the event, including its terminating blank line.
    pub raw: Vec<u8>,
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: Vec<u8>,
    /// Whether the event had at least one `data:` line.
    pub has_data: bool,
    /// The `id:` field, if any.
    pub id: Option<String>,
    /// Only comments (keep-alives such as `: ping`), no fields.
    pub comment_only: bool,
}

impl SseEvent {
    /// The data as UTF-8 text (lossy).
    pub fn data_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.data)
    }
}

/// Incremental SSE framer.
#[derive(Debug)]
pub struct SseFramer {
    buf: Vec<u8>,
    /// Bytes of `buf` already scanned for the end of the current event.
    scanned: usize,
    /// Start of the current line within `buf`.
    line_start: usize,
    /// The previous byte ended a line with `\r` (a following `\n` belongs to it).
    after_cr: bool,
    /// The current event has at least one non-empty line.
    in_event: bool,
    max_event: usize,
    started: bool,
}

impl SseFramer {
    /// A framer that rejects single events larger than `max_event` bytes.
    pub fn new(max_event: usize) -> Self {
        SseFramer {
            buf: Vec::new(),
            scanned: 0,
            line_start: 0,
            after_cr: false,
            in_event: false,
            max_event: max_event.max(64),
            started: false,
        }
    }

    /// Appends bytes from the stream.
    pub fn push(&mut self, chunk: &[u8]) {
        self.started |= !chunk.is_empty();
        self.buf.extend_from_slice(chunk);
    }

    /// Bytes buffered but not yet returned as an event.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next complete event, if one has arrived.
    pub fn next_event(&mut self) -> Option<Result<SseEvent, FrameError>> {
        loop {
            let b = &self.buf;
            if self.scanned >= b.len() {
                if b.len() > self.max_event {
                    return Some(Err(FrameError::EventTooLarge {
                        limit: self.max_event,
                    }));
                }
                return None;
            }
            let i = self.scanned;
            let byte = b[i];
            if self.after_cr && byte == b'\n' {
                // The `\n` of a `\r\n` already counted as the end of the line.
                self.after_cr = false;
                self.scanned += 1;
                self.line_start = self.scanned;
                continue;
            }
            self.after_cr = false;
            match memchr::memchr2(b'\n', b'\r', &b[i..]) {
                None => {
                    self.scanned = b.len();
                    if b.len() > self.max_event {
                        return Some(Err(FrameError::EventTooLarge {
                            limit: self.max_event,
                        }));
                    }
                    return None;
                }
                Some(off) => {
                    let end = i + off;
                    let empty_line = end == self.line_start;
                    self.after_cr = b[end] == b'\r';
                    self.scanned = end + 1;
                    self.line_start = self.scanned;
                    if !empty_line {
                        self.in_event = true;
                        continue;
                    }
                    if !self.in_event {
                        // Blank lines between events stay with the next event's bytes, so
                        // that forwarding every event's `raw` reproduces the stream.
                        continue;
                    }
                    // End of an event: include a `\n` following a final `\r`.
                    let mut cut = self.scanned;
                    if self.after_cr && self.buf.get(cut) == Some(&b'\n') {
                        cut += 1;
                        self.after_cr = false;
                    }
                    let raw: Vec<u8> = self.buf.drain(..cut).collect();
                    self.scanned = 0;
                    self.line_start = 0;
                    self.in_event = false;
                    if raw.len() > self.max_event {
                        return Some(Err(FrameError::EventTooLarge {
                            limit: self.max_event,
                        }));
                    }
                    return Some(Ok(parse_event(raw)));
                }
            }
        }
    }

    /// At the end of the stream: the bytes of an event that never ended (a cut stream),
    /// if any. The framer is empty afterwards.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        let rest: Vec<u8> = std::mem::take(&mut self.buf);
        self.scanned = 0;
        self.line_start = 0;
        self.in_event = false;
        self.after_cr = false;
        let has_content = rest.iter().any(|b| !matches!(b, b'\n' | b'\r'));
        has_content.then_some(rest)
    }
}

/// Parses the fields of one complete event.
pub fn parse_event(raw: Vec<u8>) -> SseEvent {
    let mut ev = SseEvent {
        comment_only: true,
        ..SseEvent::default()
    };
    let mut fields = 0usize;
    // A byte-order mark at the very start of the stream is not part of the first field.
    let body = raw.strip_prefix(&[0xEF, 0xBB, 0xBF][..]).unwrap_or(&raw);
    for line in split_lines(body) {
        if line.is_empty() {
            continue;
        }
        if line[0] == b':' {
            continue;
        }
        fields += 1;
        let (name, value) = match memchr::memchr(b':', line) {
            Some(c) => {
                let v = &line[c + 1..];
                (&line[..c], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match name {
            b"event" => ev.event = Some(String::from_utf8_lossy(value).into_owned()),
            b"data" => {
                if ev.has_data {
                    ev.data.push(b'\n');
                }
                ev.data.extend_from_slice(value);
                ev.has_data = true;
            }
            b"id" => ev.id = Some(String::from_utf8_lossy(value).into_owned()),
            _ => {}
        }
    }
    ev.comment_only = fields == 0;
    ev.raw = raw;
    ev
}

fn split_lines(raw: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = raw;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        match memchr::memchr2(b'\n', b'\r', rest) {
            None => {
                let line = rest;
                rest = &[];
                Some(line)
            }
            Some(i) => {
                let line = &rest[..i];
                let skip = if rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                rest = &rest[i + skip..];
                Some(line)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &[u8], chunk: usize) -> Vec<SseEvent> {
        let mut f = SseFramer::new(1 << 20);
        let mut out = Vec::new();
        for c in input.chunks(chunk.max(1)) {
            f.push(c);
            while let Some(e) = f.next_event() {
                out.push(e.unwrap());
            }
        }
        out
    }

    #[test]
    fn frames_events_with_every_line_ending_and_any_chunking() {
        let input = b"\xEF\xBB\xBFevent: a\ndata: 1\n\nevent: b\r\ndata: 2\r\ndata: 3\r\n\r\n: keep-alive\n\nid: 7\rdata: x\r\r";
        for chunk in 1..input.len() + 1 {
            let evs = all(input, chunk);
            assert_eq!(evs.len(), 4, "chunk {chunk}");
            assert_eq!(evs[0].event.as_deref(), Some("a"));
            assert_eq!(evs[0].data, b"1");
            assert_eq!(evs[1].data, b"2\n3");
            // Forwarding every event's bytes reproduces the stream exactly. (A `\n` that
            // completes a `\r\n` split across reads travels with the next event: an
            // event is never withheld waiting for it.)
            let joined: Vec<u8> = evs.iter().flat_map(|e| e.raw.clone()).collect();
            assert_eq!(joined, input.to_vec(), "chunk {chunk}");
            if chunk == input.len() {
                assert_eq!(evs[0].raw, b"\xEF\xBB\xBFevent: a\ndata: 1\n\n");
                assert_eq!(evs[1].raw, b"event: b\r\ndata: 2\r\ndata: 3\r\n\r\n");
            }
            assert!(evs[2].comment_only);
            assert_eq!(evs[3].id.as_deref(), Some("7"));
            assert_eq!(evs[3].data, b"x");
        }
    }

    #[test]
    fn an_unfinished_event_is_returned_by_finish() {
        let mut f = SseFramer::new(1 << 20);
        f.push(b"data: {\"a\":1}\n\ndata: {\"b\"");
        assert!(f.next_event().unwrap().is_ok());
        assert!(f.next_event().is_none());
        assert_eq!(f.finish().as_deref(), Some(&b"data: {\"b\""[..]));
        assert!(f.finish().is_none());
    }

    #[test]
    fn an_event_over_the_bound_is_an_error_not_unbounded_memory() {
        let mut f = SseFramer::new(1024);
        f.push(b"data: ");
        f.push(&vec![b'x'; 2000]);
        assert_eq!(
            f.next_event(),
            Some(Err(FrameError::EventTooLarge { limit: 1024 }))
        );
        // Several-megabyte image events fit a several-megabyte bound.
        let mut f = SseFramer::new(8 << 20);
        let mut big = b"data: ".to_vec();
        big.extend(std::iter::repeat_n(b'A', 5 << 20));
        big.extend_from_slice(b"\n\n");
        for c in big.chunks(65536) {
            f.push(c);
        }
        let ev = f.next_event().unwrap().unwrap();
        assert_eq!(ev.data.len(), 5 << 20);
    }
}
