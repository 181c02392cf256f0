//! The status page's HTML: the header counts, every route's credentials with their state,
//! evidence, next check and remedy, the last hour's chart per credential, incidents, and
//! the filtered history. Server-rendered strings, every value escaped.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Transitions shown in the history table.
pub(super) const HISTORY_ROWS: usize = 100;

/// Escapes text for HTML content and attribute values.
pub(super) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct Filter {
    pub(super) credential: Option<String>,
    pub(super) state: Option<String>,
    pub(super) actor: Option<String>,
}

impl Filter {
    fn get(v: &Option<String>) -> Option<&str> {
        v.as_deref().filter(|s| !s.is_empty())
    }
}

/// A duration for people: `45s`, `12m`, `3h 5m`, `2d 4h`.
pub(super) fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
    }
}

pub(super) fn ago(now: Timestamp, t: Timestamp) -> String {
    format!(
        "<time datetime=\"{r}\" title=\"{r}\">{} ago</time>",
        human(now.since(t)),
        r = t.rfc3339()
    )
}

pub(super) fn until(now: Timestamp, t: Timestamp) -> String {
    let when = if t > now {
        format!("in {}", human(t.since(now)))
    } else {
        "due now".to_owned()
    };
    format!(
        "<time datetime=\"{r}\" title=\"{r}\">{when}</time>",
        r = t.rfc3339()
    )
}

pub(super) fn evidence(h: &Health) -> &str {
    match h {
        Health::Suspect { evidence, .. }
        | Health::Probing { evidence, .. }
        | Health::Disabled { evidence, .. } => evidence,
        Health::Healthy | Health::Cooling { .. } => "",
    }
}

/// What happens next without anyone acting.
pub(super) fn next_check(now: Timestamp, h: &Health) -> String {
    match h {
        Health::Healthy => "—".to_owned(),
        Health::Cooling { until: t, .. } => format!("trial {}", until(now, *t)),
        Health::Suspect { probe_at, .. } => format!("probe {}", until(now, *probe_at)),
        Health::Probing { trial, .. } => if *trial {
            "trial request now"
        } else {
            "probe running"
        }
        .to_owned(),
        Health::Disabled {
            recheck_at: Some(t),
            ..
        } => format!("re-check {}", until(now, *t)),
        Health::Disabled {
            recheck_at: None, ..
        } => "none: reset to return".to_owned(),
    }
}

/// What the operator should do.
pub(super) fn remedy(h: &Health) -> &'static str {
    use keyward_core::classify::Class;
    match h {
        Health::Healthy => "",
        Health::Cooling { class, .. } if *class == Class::RateLimit => {
            "none: back in rotation after the cooldown"
        }
        Health::Cooling { .. } => "none: a trial request follows the cooldown",
        Health::Suspect { .. } | Health::Probing { .. } => "none yet: a confirmation probe decides",
        Health::Disabled {
            by_operator: true, ..
        } => "reset it when it should serve again",
        Health::Disabled { class, .. } => match class {
            Class::AuthPermanent => "replace the key in the config (or reset it if it works again)",
            Class::Billing => "add credit or raise the spend limit, then reset",
            Class::ModelNotFound => "enable the model for this key, or change the route",
            _ => "fix the cause in the evidence, then reset",
        },
    }
}

/// The last hour as a small bar chart: attempts in blue, failed ones in red.
pub(super) fn chart(hour: &[Minute]) -> String {
    const W: usize = 2;
    const H: u64 = 28;
    let (att, err) = hour
        .iter()
        .fold((0, 0), |(a, e), m| (a + m.attempts, e + m.errors));
    let max = hour.iter().map(|m| m.attempts).max().unwrap_or(0).max(1);
    let mut svg = format!(
        "<svg class=\"chart\" width=\"{w}\" height=\"{H}\" viewBox=\"0 0 {w} {H}\" role=\"img\" aria-label=\"last hour: {att} attempts, {err} failed\">\
<title>last hour, per minute: {att} attempts, {err} failed</title><rect class=\"bg\" x=\"0\" y=\"0\" width=\"{w}\" height=\"{H}\"/>",
        w = W * hour.len()
    );
    for (i, m) in hour.iter().enumerate() {
        if m.attempts == 0 {
            continue;
        }
        let x = i * W;
        let h = (m.attempts * (H - 2)).div_ceil(max).max(1);
        let _ = write!(
            svg,
            "<rect class=\"ok\" x=\"{x}\" y=\"{}\" width=\"{}\" height=\"{h}\"/>",
            H - h,
            W
        );
        if m.errors > 0 {
            let e = (m.errors * (H - 2)).div_ceil(max).max(1);
            let _ = write!(
                svg,
                "<rect class=\"err\" x=\"{x}\" y=\"{}\" width=\"{}\" height=\"{e}\"/>",
                H - e,
                W
            );
        }
    }
    svg.push_str("</svg>");
    let rate = if err > 0 {
        format!("<span class=\"bad\">{err} failed</span>")
    } else {
        "0 failed".to_owned()
    };
    format!("<div class=\"rates\">{svg}<div class=\"small\">{att} attempts · {rate}</div></div>")
}

pub(super) fn badge(state: &str) -> String {
    format!("<span class=\"badge s-{s}\">{s}</span>", s = esc(state))
}

pub(super) struct Counts {
    pub(super) total: usize,
    pub(super) healthy: usize,
    pub(super) out: usize,
    pub(super) disabled: usize,
}

/// The main part of the page (also what `/admin/live` returns).
#[allow(clippy::too_many_lines)] // the page top to bottom, one section after another
pub(super) async fn render_main(gw: &Gateway, live: &Live, filter: &Filter) -> String {
    let now = gw.engine.now();
    let snapshot = gw.engine.snapshot();
    let incidents = gw.engine.incidents();
    let health_of = |id: &str| -> (Health, Option<Timestamp>) {
        snapshot
            .iter()
            .find_map(|(k, h, since)| match k {
                ScopeKey::Credential(c) if &**c == id => Some((h.clone(), Some(*since))),
                _ => None,
            })
            .unwrap_or((Health::Healthy, None))
    };
    let mut counts = Counts {
        total: gw.cfg.credentials.len(),
        healthy: 0,
        out: 0,
        disabled: 0,
    };
    let (mut attempts, mut errors) = (0, 0);
    let mut hours = HashMap::new();
    for c in &gw.cfg.credentials {
        match health_of(&c.id).0 {
            Health::Healthy => counts.healthy += 1,
            Health::Disabled { .. } => counts.disabled += 1,
            _ => counts.out += 1,
        }
        let hour = gw.metrics.rates.last_hour(&c.id);
        for m in &hour {
            attempts += m.attempts;
            errors += m.errors;
        }
        hours.insert(c.id.clone(), hour);
    }
    let mut out = String::new();

    // The header's counts.
    let generation = live.status().generation;
    let fleet = gw.fleet.as_ref().map_or_else(String::new, |f| {
        let s = f.status();
        let (cls, word) = if !s.loaded {
            ("warn", "loading")
        } else if s.degraded_since.is_some() {
            ("bad", "degraded (serving on local state)")
        } else {
            ("good", "connected")
        };
        format!(
            "<div class=\"stat\"><div class=\"n {cls} word\">{}</div><div class=\"label\">fleet · replica {}</div></div>",
            esc(word),
            esc(&s.replica.to_string())
        )
    });
    let stat = |n: usize, label: &str, cls: &str| {
        format!("<div class=\"stat\"><div class=\"n {cls}\">{n}</div><div class=\"label\">{label}</div></div>")
    };
    let _ = write!(
        out,
        "<section class=\"stats\">{}{}{}{}{}{}<div class=\"stat\"><div class=\"n\">{attempts}</div><div class=\"label\">attempts, last hour</div></div>\
<div class=\"stat\"><div class=\"n{}\">{errors}</div><div class=\"label\">failed, last hour</div></div>{fleet}\
<div class=\"stamp small muted\">config generation {generation} · updated <time datetime=\"{t}\">{t}</time></div></section>",
        stat(counts.total, "credentials", ""),
        stat(counts.healthy, "healthy", "good"),
        stat(counts.out, "out of rotation", if counts.out > 0 { "warn" } else { "" }),
        stat(counts.disabled, "disabled", if counts.disabled > 0 { "bad" } else { "" }),
        stat(incidents.len(), "auth incidents", if incidents.is_empty() { "" } else { "warn" }),
        stat(gw.cfg.routes.len(), "routes", ""),
        if errors > 0 { " bad" } else { "" },
        t = now.rfc3339(),
    );

    // Incidents.
    if !incidents.is_empty() {
        out.push_str("<section class=\"incidents\"><h2>Active auth incidents</h2>");
        for i in &incidents {
            let _ = write!(
                out,
                "<div class=\"incident\"><strong>{}</strong>: {} credential(s) rejected at once ({}), since {}. \
Nothing is disabled while it lasts: next probe {}, its keys are disabled {} if every probe is still rejected.</div>",
                esc(&i.endpoint),
                i.credentials.len(),
                esc(&i.credentials.iter().map(|c| &**c).collect::<Vec<_>>().join(", ")),
                ago(now, i.since),
                until(now, i.next_probe),
                until(now, i.disables_at),
            );
        }
        out.push_str("</section>");
    }

    // Routes, targets, credentials.
    out.push_str("<section><h2>Routes</h2><div class=\"scroll\"><table class=\"routes\"><thead><tr><th>route / target</th><th>credential</th><th>state</th><th>evidence</th><th>since</th><th>next check</th><th>remedy</th><th>last hour</th><th>actions</th></tr></thead><tbody>");
    let mut routed = std::collections::HashSet::new();
    for (name, route) in &gw.cfg.routes {
        let _ = write!(
            out,
            "<tr class=\"route\"><th colspan=\"9\">{}</th></tr>",
            esc(name)
        );
        for (n, t) in route.targets.iter().enumerate() {
            for (j, cid) in t.credentials.iter().enumerate() {
                routed.insert(cid.clone());
                let target = if j == 0 {
                    format!(
                        "<span class=\"muted\">{}.</span> {} <span class=\"muted\">·</span> <code>{}</code>",
                        n + 1,
                        esc(&t.endpoint),
                        esc(&t.model)
                    )
                } else {
                    String::new()
                };
                credential_row(
                    &mut out, gw, now, &target, cid, &health_of, &hours, &snapshot, &incidents,
                );
            }
        }
    }
    let unrouted: Vec<_> = gw
        .cfg
        .credentials
        .iter()
        .filter(|c| !routed.contains(&c.id))
        .collect();
    if !unrouted.is_empty() {
        out.push_str("<tr class=\"route\"><th colspan=\"9\">on no route</th></tr>");
        for c in unrouted {
            credential_row(
                &mut out, gw, now, "", &c.id, &health_of, &hours, &snapshot, &incidents,
            );
        }
    }
    out.push_str("</tbody></table></div></section>");

    // Other scopes that are not healthy.
    let others: Vec<_> = snapshot
        .iter()
        .filter(|(k, h, _)| {
            !matches!(k, ScopeKey::Credential(_) | ScopeKey::CredentialModel(..))
                && *h != Health::Healthy
        })
        .collect();
    if !others.is_empty() {
        out.push_str("<section><h2>Other scopes not healthy</h2><table><thead><tr><th>scope</th><th>state</th><th>class</th><th>evidence</th><th>since</th><th>next check</th></tr></thead><tbody>");
        for (k, h, since) in others {
            let _ = write!(
                out,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td class=\"evidence\">{}</td><td>{}</td><td>{}</td></tr>",
                esc(&k.to_key()),
                badge(h.name()),
                h.class().map_or("", |c| c.as_str()),
                esc(evidence(h)),
                ago(now, *since),
                next_check(now, h),
            );
        }
        out.push_str("</tbody></table></section>");
    }

    history(&mut out, gw, filter).await;
    out
}

#[allow(clippy::too_many_arguments)]
pub(super) fn credential_row(
    out: &mut String,
    gw: &Gateway,
    now: Timestamp,
    target: &str,
    id: &Arc<str>,
    health_of: &dyn Fn(&str) -> (Health, Option<Timestamp>),
    hours: &HashMap<Arc<str>, Vec<Minute>>,
    snapshot: &[(ScopeKey, Health, Timestamp)],
    incidents: &[keyward_core::health::IncidentInfo],
) {
    let (h, since) = health_of(id);
    let fingerprint = gw
        .credential(id)
        .map_or_else(|| "not configured".to_owned(), |c| gw.fingerprint(&c));
    let kind = gw.credential(id).map_or("", |c| c.kind.as_str());
    let in_incident = incidents.iter().any(|i| i.credentials.contains(id));
    let mut ev = esc(evidence(&h));
    for (k, mh, _) in snapshot {
        if let ScopeKey::CredentialModel(c, model) = k {
            if c == id && *mh != Health::Healthy {
                let _ = write!(
                    ev,
                    "<div class=\"model\">model <code>{}</code>: {} {}</div>",
                    esc(model),
                    badge(mh.name()),
                    esc(mh.class().map_or("", |c| c.as_str()))
                );
            }
        }
    }
    if in_incident {
        ev.push_str("<div class=\"model\"><span class=\"badge s-cooling\">incident</span> rejected with its endpoint's other keys</div>");
    }
    let empty = Vec::new();
    let hour = hours.get(id).unwrap_or(&empty);
    let state = h.name();
    let eid = esc(id);
    let _ = write!(
        out,
        "<tr class=\"cred row-{state}\" data-credential=\"{eid}\"><td class=\"target\">{target}</td>\
<td><strong>{eid}</strong><div class=\"small muted\">{} · <code>{}</code></div></td><td>{}<div class=\"small\">{}</div></td><td class=\"evidence\">{ev}</td>\
<td class=\"since\">{}</td><td class=\"next\">{}</td><td class=\"remedy\">{}</td><td>{}</td>\
<td class=\"actions\"><button type=\"button\" data-action=\"probe\" data-id=\"{eid}\">Re-check</button>\
<button type=\"button\" data-action=\"disable\" data-id=\"{eid}\"{}>Disable</button>\
<button type=\"button\" data-action=\"reset\" data-id=\"{eid}\"{}>Reset</button></td></tr>",
        esc(kind),
        esc(&fingerprint),
        badge(state),
        h.class().map_or("", |c| c.as_str()),
        // A scope never recorded has no meaningful time (the epoch).
        since
            .filter(|t| t.0 > 0)
            .map_or_else(|| "—".to_owned(), |t| ago(now, t)),
        next_check(now, &h),
        remedy(&h),
        chart(hour),
        if matches!(h, Health::Disabled { .. }) { " disabled" } else { "" },
        if h == Health::Healthy { " disabled" } else { "" },
    );
}

/// The transition history, newest first, filtered.
pub(super) async fn history(out: &mut String, gw: &Gateway, filter: &Filter) {
    let cred = Filter::get(&filter.credential);
    let state = Filter::get(&filter.state);
    let actor = Filter::get(&filter.actor);
    let ids: Vec<String> = gw
        .cfg
        .credentials
        .iter()
        .map(|c| c.id.to_string())
        .filter(|id| cred.is_none_or(|c| c == id))
        .collect();
    let rows = super::super::admin::transitions_of(gw, ids, HISTORY_ROWS).await;
    let option = |value: &str, chosen: Option<&str>| {
        format!(
            "<option value=\"{v}\"{}>{}</option>",
            if chosen == Some(value) {
                " selected"
            } else {
                ""
            },
            if value.is_empty() {
                "all".to_owned()
            } else {
                esc(value)
            },
            v = esc(value)
        )
    };
    let _ = write!(
        out,
        "<section><h2>History</h2><form class=\"filters\" method=\"get\" action=\"/admin/\">\
<label>credential <select name=\"credential\">{}{}</select></label>\
<label>state <select name=\"state\">{}</select></label>\
<label>actor <select name=\"actor\">{}</select></label><button type=\"submit\">Filter</button></form>",
        option("", cred),
        gw.cfg
            .credentials
            .iter()
            .map(|c| option(&c.id, cred))
            .collect::<String>(),
        ["", "healthy", "cooling", "suspect", "probing", "disabled"]
            .iter()
            .map(|s| option(s, state))
            .collect::<String>(),
        ["", "traffic", "probe", "operator"]
            .iter()
            .map(|s| option(s, actor))
            .collect::<String>(),
    );
    let rows = match rows {
        Ok(r) => r,
        Err(e) => {
            let _ = write!(
                out,
                "<p class=\"problem\">Cannot read the history: {}</p></section>",
                esc(&e)
            );
            return;
        }
    };
    let mut all: Vec<Value> = rows.into_iter().flatten().collect();
    let name = |v: &Value| v["state"].as_str().unwrap_or("?").to_owned();
    all.retain(|t| {
        state.is_none_or(|s| name(&t["to"]) == s) && actor.is_none_or(|a| t["actor"] == a)
    });
    all.sort_by(|a, b| {
        b["at"]
            .as_str()
            .cmp(&a["at"].as_str())
            .then(b["seq"].as_i64().cmp(&a["seq"].as_i64()))
    });
    all.truncate(HISTORY_ROWS);
    if all.is_empty() {
        out.push_str("<p class=\"muted\">No transitions match.</p></section>");
        return;
    }
    out.push_str("<table class=\"history\"><thead><tr><th>at</th><th>scope</th><th>change</th><th>actor</th><th>why</th></tr></thead><tbody>");
    for t in &all {
        let _ = write!(
            out,
            "<tr><td><time>{}</time></td><td><code>{}</code></td><td>{} → {}</td><td>{}{}</td><td class=\"evidence\">{}</td></tr>",
            esc(t["at"].as_str().unwrap_or("")),
            esc(t["scope"].as_str().unwrap_or("")),
            badge(&name(&t["from"])),
            badge(&name(&t["to"])),
            esc(t["actor"].as_str().unwrap_or("")),
            t["replica"]
                .as_str()
                .map_or_else(String::new, |r| format!(" <span class=\"muted small\">({})</span>", esc(r))),
            esc(t["why"].as_str().unwrap_or("")),
        );
    }
    out.push_str("</tbody></table></section>");
}
