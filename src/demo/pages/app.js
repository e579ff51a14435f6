(function () {
  // Tell a framing portal who the gateway said we are (nothing secret).
  if (window.parent && window.parent !== window) {
    window.parent.postMessage({
      type: 'embedgate-demo:identity',
      user: document.body.dataset.user || null,
      verified: document.body.dataset.verified === 'true'
    }, '*');
  }
  var form = document.getElementById('ws-form');
  var input = document.getElementById('ws-input');
  var log = document.getElementById('ws-log');
  var scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  var url = scheme + '//' + location.host + form.dataset.prefix + '/ws';
  function say(line) { log.textContent += line + '\n'; }
  var socket = null;
  var queue = [];
  function connect() {
    say('connecting to ' + url);
    socket = new WebSocket(url);
    socket.onopen = function () {
      say('open');
      while (queue.length) { socket.send(queue.shift()); }
    };
    socket.onmessage = function (event) { say('echo: ' + event.data); };
    socket.onclose = function (event) { say('closed (' + event.code + ')'); socket = null; };
    socket.onerror = function () { say('error'); };
  }
  form.addEventListener('submit', function (event) {
    event.preventDefault();
    var text = input.value;
    say('sent: ' + text);
    if (socket && socket.readyState === WebSocket.OPEN) {
      socket.send(text);
    } else {
      queue.push(text);
      if (!socket) { connect(); }
    }
  });
  // `?ws-echo` in the address sends the message once on load: a check
  // that needs no click (the browser tests use it).
  if (new URLSearchParams(location.search).has('ws-echo')) { form.requestSubmit(); }
})();
