//! A streamed answer translated event by event: the upstream's SSE events are framed,
//! read into neutral events, and written as the caller's — never buffered whole. Sans-IO:
//! bytes in, bytes out.

use serde_json::Value;

use super::ir::Event;
use super::{anthropic, chat, gemini, responses, Options};
use crate::sse::SseFramer;
use crate::stream::Api;

/// Translates one upstream stream (SSE: Gemini's with `alt=sse`) into the caller's format.
#[derive(Debug)]
pub struct StreamTranslator {
    framer: SseFramer,
    reader: Reader,
    writer: Writer,
    events: Vec<Event>,
}

#[derive(Debug)]
enum Reader {
    Messages,
    Chat(chat::Reader),
    Responses(responses::Reader),
    Gemini(gemini::Reader),
}

#[derive(Debug)]
enum Writer {
    Messages(anthropic::Writer),
    Chat(chat::Writer),
    Responses(responses::Writer),
    Gemini(gemini::Writer),
}

impl StreamTranslator {
    /// From the upstream's `from` family to the caller's `to`; `array`: the caller reads a
    /// Gemini JSON-array stream rather than SSE. Events up to `max_event` bytes.
    pub fn new(
        from: Api,
        to: Api,
        array: bool,
        max_event: usize,
        opts: &Options,
    ) -> StreamTranslator {
        let reader = match from {
            Api::Messages => Reader::Messages,
            Api::ChatCompletions => Reader::Chat(chat::Reader::default()),
            Api::Responses => Reader::Responses(responses::Reader::default()),
            Api::Gemini => Reader::Gemini(gemini::Reader::new(opts.nonce)),
        };
        let writer = match to {
            Api::Messages => Writer::Messages(anthropic::Writer::default()),
            Api::ChatCompletions => Writer::Chat(chat::Writer::new(opts.created)),
            Api::Responses => Writer::Responses(responses::Writer::new(opts.created)),
            Api::Gemini => Writer::Gemini(gemini::Writer::new(array)),
        };
        StreamTranslator {
            framer: SseFramer::new(max_event),
            reader,
            writer,
            events: Vec::new(),
        }
    }

    /// Feeds upstream bytes; returns the caller's bytes they complete (whole events only).
    /// `Err` when one upstream event exceeds the size bound (the stream is broken).
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<u8>, crate::sse::FrameError> {
        self.framer.push(chunk);
        let mut out = Vec::new();
        while let Some(ev) = self.framer.next_event() {
            let ev = ev?;
            if ev.comment_only || !ev.has_data {
                continue;
            }
            self.read(ev.event.as_deref(), &ev.data);
            self.write(&mut out);
        }
        Ok(out)
    }

    /// At the end of the upstream stream: what completes the caller's stream if the
    /// answer had stopped (an upstream that leaves out its last marker); nothing otherwise,
    /// and the gateway reports the stream as broken.
    pub fn finish(&mut self) -> Vec<u8> {
        if let Some(rest) = self.framer.finish() {
            let ev = crate::sse::parse_event(rest);
            if ev.has_data {
                self.read(ev.event.as_deref(), &ev.data);
            }
        }
        let mut out = Vec::new();
        self.write(&mut out);
        match &mut self.writer {
            Writer::Messages(w) => w.finish(&mut out),
            Writer::Chat(w) => w.finish(&mut out),
            Writer::Responses(w) => w.finish(&mut out),
            Writer::Gemini(w) => w.finish(&mut out),
        }
        out
    }

    fn read(&mut self, name: Option<&str>, data: &[u8]) {
        match &mut self.reader {
            Reader::Chat(r) => r.read(data, &mut self.events),
            Reader::Messages => match serde_json::from_slice::<Value>(data) {
                Ok(v) => anthropic::read_event(name, &v, &mut self.events),
                Err(_) if name == Some("message_stop") => self.events.push(Event::End),
                Err(_) => {}
            },
            Reader::Responses(r) => {
                if let Ok(v) = serde_json::from_slice::<Value>(data) {
                    r.read(name, &v, &mut self.events);
                }
            }
            Reader::Gemini(r) => {
                if let Ok(v) = serde_json::from_slice::<Value>(data) {
                    r.read(&v, &mut self.events);
                }
            }
        }
    }

    fn write(&mut self, out: &mut Vec<u8>) {
        for ev in self.events.drain(..) {
            match &mut self.writer {
                Writer::Messages(w) => w.write(ev, out),
                Writer::Chat(w) => w.write(ev, out),
                Writer::Responses(w) => w.write(ev, out),
                Writer::Gemini(w) => w.write(ev, out),
            }
        }
    }
}
