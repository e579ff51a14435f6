(function () {
  var frame = document.getElementById('app-frame');
  var expired = document.getElementById('expired');
  var status = document.getElementById('embed-status');
  var gatewayOrigin = frame ? new URL(frame.src, location.href).origin : null;
  window.addEventListener('message', function (event) {
    if (!frame || event.origin !== gatewayOrigin) { return; }
    var data = event.data;
    if (data && (data.type === 'embedgate:session-expired' || data.type === 'TJ_EMBED_APP_LOGOUT')) {
      expired.hidden = false;
      status.textContent = 'the embedded app reports: session ended';
    }
    if (data && data.type === 'embedgate-demo:identity') {
      status.textContent = 'the embedded app reports: user ' + (data.user || '(none)') + ', assertion ' +
        (data.verified ? 'verified' : 'NOT verified');
    }
  });
  var form = document.getElementById('revoke');
  var result = document.getElementById('revoke-result');
  if (form && frame && window.fetch) {
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
          result.textContent = 'revoked ' + body.revokedSessions + ' session(s): the app below has lost its ' +
            'session; its next request (a link, a WebSocket message) shows it.';
        })
        .catch(function (error) { result.textContent = 'revoke failed: ' + error.message; });
    });
  }
})();
