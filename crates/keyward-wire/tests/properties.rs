#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Framers and the splicer over arbitrary input: no panic; events do not depend on how the
//! stream was chunked; forwarding every event's bytes (plus an unfinished tail) reproduces
//! the stream; splicing changes nothing but the model value.

use keyward_wire::json_stream::{JsonArrayFramer, JsonItem};
use keyward_wire::splice::{find_model, model_of, replace_model, top_level};
use keyward_wire::sse::SseFramer;
use keyward_wire::stream::{inspect_sse, Api};
use proptest::prelude::*;

fn sse_piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"event: message_start\n".to_vec()),
        Just(b"data: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"x\"}}\n".to_vec()),
        Just(b"data: [DONE]\r\n".to_vec()),
        Just(b": ping\n".to_vec()),
        Just(b"id: 1\r".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\r".to_vec()),
        prop::collection::vec(any::<u8>(), 0..40),
    ]
}

fn chunked(data: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
    points.sort_unstable();
    let mut out = Vec::new();
    let mut last = 0;
    for p in points {
        out.push(data[last..p].to_vec());
        last = p;
    }
    out.push(data[last..].to_vec());
    out
}

/// Each event's raw bytes, each event's data, and the unfinished tail.
type Framed = (Vec<Vec<u8>>, Vec<Vec<u8>>, Option<Vec<u8>>);

fn frame(chunks: &[Vec<u8>]) -> Framed {
    let mut f = SseFramer::new(1 << 20);
    let (mut raws, mut datas) = (Vec::new(), Vec::new());
    for c in chunks {
        f.push(c);
        while let Some(e) = f.next_event() {
            let e = e.unwrap();
            for api in [
                Api::Messages,
                Api::ChatCompletions,
                Api::Responses,
                Api::Gemini,
            ] {
                let _ = inspect_sse(api, &e);
            }
            datas.push(e.data.clone());
            raws.push(e.raw);
        }
    }
    (raws, datas, f.finish())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn sse_events_do_not_depend_on_chunking_and_bytes_are_preserved(
        pieces in prop::collection::vec(sse_piece(), 0..40),
        cuts in prop::collection::vec(any::<usize>(), 0..20),
    ) {
        let stream: Vec<u8> = pieces.concat();
        let (raws_whole, datas_whole, tail_whole) = frame(std::slice::from_ref(&stream));
        let (raws, datas, tail) = frame(&chunked(&stream, &cuts));
        prop_assert_eq!(&datas, &datas_whole);
        let mut joined: Vec<u8> = raws.concat();
        joined.extend(tail.clone().unwrap_or_default());
        let mut joined_whole: Vec<u8> = raws_whole.concat();
        joined_whole.extend(tail_whole.unwrap_or_default());
        // Blank-line-only tails are not returned by `finish`.
        prop_assert!(stream.starts_with(&joined));
        prop_assert!(stream[joined.len()..].iter().all(|b| *b == b'\n' || *b == b'\r'));
        prop_assert!(stream.starts_with(&joined_whole));
    }

    #[test]
    fn json_array_elements_do_not_depend_on_chunking(
        elems in prop::collection::vec("[a-z\\]\\[{}\"\\\\ ]{0,12}", 0..8),
        cuts in prop::collection::vec(any::<usize>(), 0..10),
    ) {
        let items: Vec<String> = elems.iter().map(|e| serde_json::json!({"candidates":[{"content":{"parts":[{"text": e}]}}]}).to_string()).collect();
        let stream = format!("[{}]", items.join(",\r\n"));
        let mut f = JsonArrayFramer::new(1 << 20);
        let mut got = Vec::new();
        let mut ended = false;
        for c in chunked(stream.as_bytes(), &cuts) {
            f.push(&c);
            while let Some(i) = f.next_item() {
                match i.unwrap() {
                    JsonItem::Element(e) => got.push(String::from_utf8(e).unwrap()),
                    JsonItem::End => ended = true,
                }
            }
        }
        prop_assert_eq!(got, items);
        prop_assert!(ended);
    }

    #[test]
    fn framers_never_panic_on_bytes(data in prop::collection::vec(any::<u8>(), 0..4096), cuts in prop::collection::vec(any::<usize>(), 0..10)) {
        let _ = frame(&chunked(&data, &cuts));
        let mut j = JsonArrayFramer::new(512);
        for c in chunked(&data, &cuts) {
            j.push(&c);
            while let Some(i) = j.next_item() { if i.is_err() { break; } }
        }
        let _ = j.finish();
        let _ = find_model(&data);
    }

    #[test]
    fn splicing_changes_only_the_model(
        model in "\\PC{0,30}",
        new_model in "\\PC{0,30}",
        extra in prop::collection::btree_map("[a-l]{1,6}", "\\PC{0,20}", 0..6),
        pretty in any::<bool>(),
    ) {
        let mut obj = serde_json::Map::new();
        for (k, v) in &extra { obj.insert(k.clone(), serde_json::Value::String(v.clone())); }
        obj.insert("model".into(), serde_json::Value::String(model.clone()));
        obj.insert("messages".into(), serde_json::json!([{"role":"user","content":[{"type":"text","text":"model"}]}]));
        let v = serde_json::Value::Object(obj);
        let body = if pretty { serde_json::to_vec_pretty(&v).unwrap() } else { serde_json::to_vec(&v).unwrap() };
        prop_assert_eq!(model_of(&body).unwrap(), Some(model.clone()));
        let out = replace_model(&body, &new_model).unwrap().unwrap();
        let mut expected = v.clone();
        expected["model"] = serde_json::Value::String(new_model.clone());
        prop_assert_eq!(serde_json::from_slice::<serde_json::Value>(&out).unwrap(), expected);
        // Every byte outside the model value is unchanged.
        let r = find_model(&body).unwrap().unwrap();
        prop_assert!(out.starts_with(&body[..r.start]));
        prop_assert!(out.ends_with(&body[r.end..]));
    }

    #[test]
    fn the_stream_flag_agrees_with_a_json_parser(
        stream in prop::option::of(prop_oneof![
            Just(serde_json::json!(true)),
            Just(serde_json::json!(false)),
            Just(serde_json::json!("true")),
            Just(serde_json::json!(1)),
            Just(serde_json::json!({"stream": true})),
        ]),
        nested in any::<bool>(),
        extra in prop::collection::btree_map("[a-t]{1,7}", "\\PC{0,12}", 0..5),
        pretty in any::<bool>(),
    ) {
        let mut obj = serde_json::Map::new();
        for (k, v) in &extra { obj.insert(k.clone(), serde_json::Value::String(v.clone())); }
        obj.insert("model".into(), serde_json::json!("m"));
        if nested { obj.insert("metadata".into(), serde_json::json!({"stream": true})); }
        if let Some(s) = &stream { obj.insert("stream".into(), s.clone()); }
        let v = serde_json::Value::Object(obj);
        let body = if pretty { serde_json::to_vec_pretty(&v).unwrap() } else { serde_json::to_vec(&v).unwrap() };
        let expected = v.get("stream") == Some(&serde_json::Value::Bool(true));
        prop_assert_eq!(top_level(&body).unwrap().stream, expected);
    }
}
