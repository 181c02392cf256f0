// Keyward status page: live updates and the operator's actions. Plain JavaScript,
// embedded in the binary; no framework, no build step.
(function () {
  'use strict';
  var meta = document.querySelector('meta[name="keyward-csrf"]');
  var csrf = meta ? meta.getAttribute('content') : '';
  var live = document.getElementById('live');
  var conn = document.getElementById('conn');
  var dialog = document.getElementById('confirm');
  var toast = document.getElementById('toast');
  var pending = null;
  var timer = null;
  var toastTimer = null;

  function say(text, bad) {
    toast.textContent = text;
    toast.className = bad ? 'bad' : '';
    toast.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(function () { toast.hidden = true; }, 8000);
  }

  function status(text, stale) {
    conn.textContent = text;
    conn.className = stale ? 'conn stale' : 'conn';
  }

  function refresh() {
    // A hidden tab does not poll; it catches up when shown again.
    if (document.hidden) { return Promise.resolve(); }
    return fetch('/admin/live' + location.search, { credentials: 'same-origin', cache: 'no-store' })
      .then(function (r) {
        if (r.status === 401 || r.status === 403) {
          status('session ended: reload to log in', true);
          clearInterval(timer);
          return null;
        }
        if (!r.ok) { status('gateway answered ' + r.status + '; retrying', true); return null; }
        return r.text();
      })
      .then(function (html) {
        if (html === null || html === undefined) { return; }
        live.innerHTML = html;
        status('live · updated ' + new Date().toLocaleTimeString(), false);
      })
      .catch(function () { status('gateway not answering; retrying every 5 s', true); });
  }

  var words = {
    probe: ['Re-check now', 'Probe {id} now with the call its confirmation probes use. Its health is left as it is; reset it if it works again.'],
    disable: ['Disable', 'Take {id} out of rotation until someone resets it. The reason is recorded in the history.'],
    reset: ['Reset', 'Put {id} back in rotation (all its scopes), and lift its fingerprint from the revoked list.']
  };

  function ask(action, id) {
    var w = words[action];
    if (!w) { return; }
    pending = { action: action, id: id };
    document.getElementById('confirm-title').textContent = w[0] + ': ' + id;
    document.getElementById('confirm-text').textContent = w[1].replace('{id}', id);
    document.getElementById('reason-row').hidden = action !== 'disable';
    document.getElementById('reason').value = '';
    document.getElementById('confirm-ok').textContent = w[0];
    dialog.showModal();
  }

  function act(p, reason) {
    var init = { method: 'POST', credentials: 'same-origin', headers: { 'x-keyward-csrf': csrf } };
    if (p.action === 'disable') {
      init.headers['content-type'] = 'application/json';
      init.body = JSON.stringify({ reason: reason });
    }
    fetch('/admin/credentials/' + encodeURIComponent(p.id) + '/' + p.action, init)
      .then(function (r) { return r.text().then(function (t) { return [r, t]; }); })
      .then(function (rt) {
        var r = rt[0], body = {};
        try { body = JSON.parse(rt[1]); } catch (e) { body = { error: { message: rt[1] } }; }
        if (!r.ok) { say(p.action + ' ' + p.id + ' failed: ' + ((body.error && body.error.message) || r.status), true); return; }
        if (p.action === 'probe') {
          say('Re-check of ' + p.id + ': ' + body.result + (body.class ? ' (' + body.class + ')' : '') + (body.detail ? ': ' + body.detail : ''), body.result !== 'ok');
        } else {
          say(p.id + ' is now ' + ((body.health && body.health.state) || 'updated'), false);
        }
        refresh();
      })
      .catch(function () { say('The gateway did not answer; nothing was confirmed.', true); });
  }

  document.addEventListener('click', function (ev) {
    var b = ev.target.closest ? ev.target.closest('button[data-action]') : null;
    if (b && !b.disabled) { ask(b.getAttribute('data-action'), b.getAttribute('data-id')); }
  });

  // The choice is read when the form is submitted (synchronously, with the button that
  // submitted it), not from the dialog's `close` event: that event comes in a later task,
  // and an operator who cancels and at once asks again would have the new request taken
  // by the old dialog's close, and the confirmation then do nothing.
  document.getElementById('confirm-form').addEventListener('submit', function (ev) {
    var p = pending;
    pending = null;
    if (!p || !ev.submitter || ev.submitter.value !== 'ok') { return; }
    var reason = document.getElementById('reason').value.trim();
    if (p.action === 'disable' && !reason) { say('A disable needs a reason.', true); return; }
    act(p, reason);
  });

  document.getElementById('logout').addEventListener('click', function () {
    fetch('/admin/logout', { method: 'POST', credentials: 'same-origin', headers: { 'x-keyward-csrf': csrf } })
      .finally(function () { location.href = '/admin/'; });
  });

  document.addEventListener('visibilitychange', function () { if (!document.hidden) { refresh(); } });
  timer = setInterval(refresh, 5000);
})();
