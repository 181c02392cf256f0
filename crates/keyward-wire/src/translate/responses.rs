//! OpenAI Responses: not yet translated (a target of this family is skipped).

use serde_json::{Map, Value};

use super::ir::{Event, Request, Response};
use super::{Losses, TranslateError};
use crate::stream::Api;

const API: Api = Api::Responses;

fn not_yet() -> TranslateError {
    TranslateError::Unservable {
        feature: "translation of OpenAI Responses",
        target: API,
    }
}

pub(crate) fn read_request(
    _: &Map<String, Value>,
    _: &mut Losses,
) -> Result<Request, TranslateError> {
    Err(not_yet())
}

pub(crate) fn write_request(_: &Request, _: &mut Losses) -> Result<Value, TranslateError> {
    Err(not_yet())
}

pub(crate) fn read_response(_: &Map<String, Value>) -> Result<Response, TranslateError> {
    Err(not_yet())
}

pub(crate) fn write_response(_: &Response) -> Value {
    Value::Null
}

#[derive(Debug, Default)]
pub(crate) struct Reader;

impl Reader {
    pub(crate) fn read(&mut self, _: &Value, _: &mut Vec<Event>) {}
}

#[derive(Debug, Default)]
pub(crate) struct Writer;

impl Writer {
    pub(crate) fn new(_: bool) -> Writer {
        Writer
    }
    pub(crate) fn write(&mut self, _: Event, _: &mut Vec<u8>) {}
    pub(crate) fn finish(&mut self, _: &mut Vec<u8>) {}
}
