//! The stream framers and the model splicer on arbitrary bytes, arbitrarily chunked: no
//! panic; forwarding every event's bytes reproduces the stream; splicing keeps every byte
//! outside the model value.
#![no_main]

use keyward_wire::json_stream::JsonArrayFramer;
use keyward_wire::splice::{find_model, replace_model};
use keyward_wire::sse::SseFramer;
use keyward_wire::stream::{inspect_sse, Api};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let step = usize::from(data[0]).max(1);
    let stream = &data[1..];
    let mut sse = SseFramer::new(1 << 16);
    let mut json = JsonArrayFramer::new(1 << 16);
    let mut forwarded = Vec::new();
    let mut broken = false;
    for chunk in stream.chunks(step) {
        sse.push(chunk);
        json.push(chunk);
        while let Some(ev) = sse.next_event() {
            match ev {
                Ok(ev) => {
                    for api in [Api::Messages, Api::ChatCompletions, Api::Responses, Api::Gemini] {
                        let _ = inspect_sse(api, &ev);
                    }
                    forwarded.extend_from_slice(&ev.raw);
                }
                Err(_) => {
                    broken = true;
                    break;
                }
            }
        }
        while let Some(item) = json.next_item() {
            if item.is_err() {
                break;
            }
        }
        if broken {
            break;
        }
    }
    if !broken {
        forwarded.extend(sse.finish().unwrap_or_default());
        assert!(stream.starts_with(&forwarded), "forwarded bytes differ from the stream");
        assert!(stream[forwarded.len()..].iter().all(|b| *b == b'\n' || *b == b'\r'));
    }
    let _ = json.finish();
    if let Ok(Some(range)) = find_model(stream) {
        let out = replace_model(stream, "m").ok().flatten().expect("a found model can be replaced");
        assert!(out.starts_with(&stream[..range.start]));
        assert!(out.ends_with(&stream[range.end..]));
    }
});
