//! Mistral La Plateforme: `{"object":"error","message":…,"type":…,"param":…,"code":…}`
//! where `message` may be a validation object (422, pydantic `detail` list), `type`
//! `service_tier_capacity_exceeded` (code `3505`) is shared capacity even as a 429, and a
//! bad key is a plain `{"message":"Unauthorized"}` 401.

use super::super::{Class, Cx, Rule, Scope};
use super::{by_type, openai};

pub(crate) fn classify(cx: &Cx<'_, '_>) -> Option<Rule> {
    if cx.ty() == "service_tier_capacity_exceeded" || cx.code() == "3505" {
        return Some(by_type(cx, Class::Overloaded, Scope::ProviderModel).what(
            "the service tier's shared capacity for this model is exhausted (not this key's limit)",
        ));
    }
    if cx.is_status(422) && cx.ty() == "invalid_request_error" {
        return Some(by_type(cx, Class::BadRequest, Scope::Request));
    }
    openai::family(cx)
}
