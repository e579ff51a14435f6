// The demo shop's script, loaded by an absolute path. Once the page and its
// stylesheet have loaded, it checks that the stylesheet applied and calls
// /api/whoami (an absolute path, answered by the app with the identity the
// gateway sent), shows both, and tells a framing portal (pages/portal.js
// listens) what it found: nothing secret.
(function () {
  var status = document.getElementById('shop-status');
  var userLine = document.getElementById('shop-user');

  // shop.css sets this custom property on the bar; without it, it is empty.
  function stylesheetApplied() {
    var bar = document.querySelector('.shop-bar');
    return !!bar && getComputedStyle(bar).getPropertyValue('--shop-stylesheet').trim() === 'applied';
  }

  function describe(report) {
    var css = report.stylesheet ? 'stylesheet applied' : 'stylesheet NOT applied';
    if (report.error) { return css + ', whoami failed: ' + report.error; }
    return css + ', whoami: ' + (report.user || '(none)') + ', assertion ' +
      (report.verified ? 'verified' : 'NOT verified');
  }

  function check() {
    var report = { stylesheet: stylesheetApplied(), user: null, verified: false, error: null };
    fetch('/api/whoami', { headers: { 'Accept': 'application/json' } })
      .then(function (response) {
        if (!response.ok) { throw new Error('HTTP ' + response.status); }
        return response.json();
      })
      .then(function (body) {
        report.user = body.user || null;
        report.verified = !!(body.assertion && body.assertion.verified);
      })
      .catch(function (error) { report.error = error.message; })
      .then(function () {
        status.textContent = describe(report);
        userLine.textContent = report.user ? 'signed in as ' + report.user : 'not signed in';
        if (window.parent && window.parent !== window) {
          window.parent.postMessage({
            type: 'embedgate-demo:shop',
            stylesheet: report.stylesheet,
            user: report.user,
            verified: report.verified,
            error: report.error
          }, '*');
        }
      });
  }

  // `load` comes after every stylesheet has loaded (or failed to).
  if (document.readyState === 'complete') { check(); } else { window.addEventListener('load', check); }
})();
