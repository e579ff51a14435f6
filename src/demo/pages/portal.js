(function () {
  // This script runs before the frames are in the page, so that no message
  // of theirs can come before it listens: it looks them up when one comes.
  // Every framed app, with the status line it reports on.
  function frames() {
    return Array.prototype.map.call(document.querySelectorAll('iframe[data-status]'), function (frame) {
      return {
        frame: frame,
        origin: new URL(frame.src, location.href).origin,
        status: document.getElementById(frame.dataset.status)
      };
    });
  }
  var expired = document.getElementById('expired');
  // The framed app a message came from: its own window, at the origin the
  // portal framed it at; nothing else is listened to.
  function sender(event) {
    var all = frames();
    for (var i = 0; i < all.length; i++) {
      if (all[i].frame.contentWindow === event.source && all[i].origin === event.origin) {
        return all[i];
      }
    }
    return null;
  }
  window.addEventListener('message', function (event) {
    var from = sender(event);
    var data = event.data;
    if (!from || !data) { return; }
    if (data.type === 'embedgate:session-expired' || data.type === 'TJ_EMBED_APP_LOGOUT') {
      expired.hidden = false;
      from.status.textContent = 'the embedded app reports: session ended';
    }
    // The first demo app: who the gateway said the user is.
    if (data.type === 'embedgate-demo:identity') {
      from.status.textContent = 'the embedded app reports: user ' + (data.user || '(none)') + ', assertion ' +
        (data.verified ? 'verified' : 'NOT verified');
    }
    // The demo shop: whether its stylesheet and its call to /api/whoami,
    // both by absolute paths, worked.
    if (data.type === 'embedgate-demo:shop') {
      var report = 'the embedded app reports: stylesheet ' + (data.stylesheet ? 'applied' : 'NOT applied');
      if (data.error) {
        report += ', whoami failed: ' + data.error;
      } else {
        report += ', whoami: ' + (data.user || '(none)') + ', assertion ' + (data.verified ? 'verified' : 'NOT verified');
      }
      from.status.textContent = report;
    }
  });
  var form = document.getElementById('revoke');
  var result = document.getElementById('revoke-result');
  if (form && window.fetch) {
    form.addEventListener('submit', function (event) {
      event.preventDefault();
      result.textContent = 'revoking…';
      fetch('/revoke', { method: 'POST', headers: { 'Accept': 'application/json' } })
        .then(function (response) {
          return response.json().then(function (body) {
            if (!response.ok) { throw new Error(body.message || ('HTTP ' + response.status)); }
            return body;
          });
        })
        .then(function (body) {
          result.textContent = 'revoked ' + body.revokedSessions + ' session(s): the apps below have lost their ' +
            'sessions; their next request (a link, a WebSocket message) shows it.';
        })
        .catch(function (error) { result.textContent = 'revoke failed: ' + error.message; });
    });
  }
})();
