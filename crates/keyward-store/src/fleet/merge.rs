//! The merge rules for a conflict: which evidence outranks which, a cooldown never
//! shortened, an operator's disable never overridden; and a transition's denylist change.

use keyward_core::health::{Health, ScopeKey, Transition};

/// Two states are "the same" for a transition's precondition when they are the same
/// kind of state (a renewed lease or a moved deadline does not invalidate it).
pub(super) fn same_state(a: &Health, b: &Health) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

fn severity(h: &Health) -> u8 {
    match h {
        Health::Healthy => 0,
        Health::Cooling { .. } => 1,
        Health::Suspect { .. } => 2,
        Health::Probing { .. } => 3,
        Health::Disabled { .. } => 4,
    }
}

/// A transition computed from a state the fleet has since left: new evidence is kept
/// when it outranks the fleet's state (a cooldown ending later outranks an earlier one);
/// anything else is absorbed (`None`).
pub(super) fn merge(t: &Transition, theirs: &Health) -> Option<Health> {
    if matches!(
        theirs,
        Health::Disabled {
            by_operator: true,
            ..
        }
    ) {
        return None;
    }
    let evidence = matches!(
        t.to,
        Health::Cooling { .. } | Health::Suspect { .. } | Health::Disabled { .. }
    );
    if !evidence {
        return None;
    }
    match severity(&t.to).cmp(&severity(theirs)) {
        std::cmp::Ordering::Greater => Some(t.to.clone()),
        std::cmp::Ordering::Equal => match (&t.to, theirs) {
            (Health::Cooling { until: mine, .. }, Health::Cooling { until: other, .. })
                if mine > other =>
            {
                Some(t.to.clone())
            }
            _ => None,
        },
        std::cmp::Ordering::Less => None,
    }
}

/// The denylist change a transition makes: a confirmed revocation adds the secret's
/// fingerprint, an operator's reset removes it.
pub(super) fn deny_change(t: &Transition, to: &Health) -> (&'static str, String, String) {
    let (ScopeKey::Credential(id), Some(fp)) = (&t.scope, &t.fingerprint) else {
        return ("", String::new(), String::new());
    };
    // As the engine decided (`Transition::deny`).
    match (t.deny, to) {
        (Some(true), Health::Disabled { evidence, .. }) => (
            "add",
            fp.to_string(),
            serde_json::json!({"credential": &**id, "reason": format!("revoked ({evidence})")})
                .to_string(),
        ),
        (Some(false), _) => ("del", fp.to_string(), String::new()),
        _ => ("", String::new(), String::new()),
    }
}
