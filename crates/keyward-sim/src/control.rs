//! The control endpoints people drive the sim with: `POST /_sim/keys/{key}`,
//! `POST /_sim/incident`, `GET /_sim/counts`.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

use crate::{Behaviour, Counts, Sim};

pub(crate) async fn control_key(
    State(sim): State<Sim>,
    Path(key): Path<String>,
    Json(b): Json<Behaviour>,
) -> StatusCode {
    sim.set(&key, b);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
pub(crate) struct IncidentBody {
    on: bool,
}

pub(crate) async fn control_incident(
    State(sim): State<Sim>,
    Json(b): Json<IncidentBody>,
) -> StatusCode {
    sim.incident(b.on);
    StatusCode::NO_CONTENT
}

pub(crate) async fn control_counts(State(sim): State<Sim>) -> Json<HashMap<String, Counts>> {
    Json(sim.all_counts())
}
