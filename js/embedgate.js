// Generated from embedgate.mjs by build.mjs; edit that file, then run `node build.mjs`.
(function () {
'use strict';
// embedgate's host-page helper: frames an app served through the gateway
// and keeps it framed. When the embedded session ends (revoked, idle, past
// its lifetime), the gateway's page in the frame tells the host page
// (`embedgate:session-expired`, and ToolJet's `TJ_EMBED_APP_LOGOUT`); the
// helper then asks the portal's backend for a fresh embed URL and loads it,
// with no user action. No dependencies, no framework.
//
//   const handle = EmbedGate.mount(container, {
//     getEmbedUrl: async () => redirectUrl,   // the portal's call to its backend
//     onStateChange: (state, detail) => {},   // "loading" | "ready" | "renewing" | "failed"
//     iframe: { title: "Sales app", width: "100%", height: "600px" },
//   });
//   handle.destroy();
//
// This file is the ES module; embedgate.js, the classic script that
// defines window.EmbedGate, is made from it by build.mjs.

/** The messages that say the frame's session ended. */
const ENDED = new Set(['embedgate:session-expired', 'TJ_EMBED_APP_LOGOUT']);

/** Retry defaults: 1 s, doubling, at most 60 s apart, 8 tries in all. */
const RETRY = { initialDelayMs: 1000, maxDelayMs: 60000, maxAttempts: 8 };

/**
 * Frames the app whose embed URL `options.getEmbedUrl()` gives, inside
 * `container`, and renews it whenever its session ends.
 *
 * Options: `getEmbedUrl` (required: an async function returning the
 * `redirectUrl` the portal's backend got from the gateway),
 * `onStateChange(state, detail)`, `iframe` (attributes of the frame: title,
 * width, height, allow, …), `retry` ({ initialDelayMs, maxDelayMs,
 * maxAttempts }: how a failing `getEmbedUrl` is tried again).
 *
 * Returns a handle: `state` (the last state reported), `iframe`,
 * `renew()` (fetch a fresh URL now, e.g. after "failed") and `destroy()`.
 */
function mount(container, options) {
  if (!container || typeof container.appendChild !== 'function') {
    throw new TypeError('EmbedGate.mount: the first argument must be an element to put the frame in');
  }
  if (!options || typeof options.getEmbedUrl !== 'function') {
    throw new TypeError('EmbedGate.mount: options.getEmbedUrl must be a function returning the embed URL');
  }
  const retry = { ...RETRY, ...(options.retry || {}) };
  const onStateChange = typeof options.onStateChange === 'function' ? options.onStateChange : () => {};
  const view = container.ownerDocument.defaultView || window;

  const iframe = container.ownerDocument.createElement('iframe');
  const attributes = { title: 'Embedded app', ...(options.iframe || {}) };
  for (const [name, value] of Object.entries(attributes)) {
    if (value !== undefined && value !== null) iframe.setAttribute(name, String(value));
  }
  if (!('style' in attributes)) iframe.style.border = '0';

  let state = null;
  let destroyed = false;
  /** The origin the frame's messages must come from: the embed URL's. */
  let origin = null;
  /** A `src` was set and its `load` has not come yet. */
  let loading = false;
  /** Failed tries of the current round. */
  let failures = 0;
  let timer = null;
  /** Counts rounds, so that an answer from an older round is dropped. */
  let round = 0;

  function report(next, detail) {
    state = next;
    try {
      onStateChange(next, detail || {});
    } catch (error) {
      // The page's callback must not stop the helper.
      view.setTimeout(() => { throw error; });
    }
  }

  async function load(kind) {
    const mine = ++round;
    report(kind, failures ? { attempt: failures + 1 } : {});
    let url;
    try {
      url = new URL(await options.getEmbedUrl(), view.location.href);
      if (url.protocol !== 'https:' && url.protocol !== 'http:') {
        throw new Error(`getEmbedUrl returned a ${url.protocol} URL`);
      }
    } catch (error) {
      if (!destroyed && mine === round) failed(error);
      return;
    }
    if (destroyed || mine !== round) return;
    origin = url.origin;
    loading = true;
    iframe.src = url.href;
  }

  function failed(error) {
    failures += 1;
    if (failures >= retry.maxAttempts) {
      report('failed', { error, attempts: failures });
      return;
    }
    const delay = Math.min(retry.initialDelayMs * 2 ** (failures - 1), retry.maxDelayMs);
    report('renewing', { error, attempt: failures, retryInMs: delay });
    timer = view.setTimeout(() => {
      timer = null;
      load('renewing');
    }, delay);
  }

  function renew() {
    if (destroyed) return;
    if (timer !== null) {
      view.clearTimeout(timer);
      timer = null;
    }
    failures = 0;
    loading = false;
    load('renewing');
  }

  function onLoad() {
    if (destroyed || !loading) return;
    loading = false;
    failures = 0;
    report('ready', { url: iframe.src });
  }

  function onMessage(event) {
    // Only this frame's window, and only from the gateway's origin: another
    // frame, or a page the app navigated to, cannot make it renew.
    if (destroyed || event.source !== iframe.contentWindow || event.origin !== origin) return;
    const type = event.data && typeof event.data === 'object' ? event.data.type : undefined;
    if (!ENDED.has(type)) return;
    // Once a round: the gateway's page sends both messages.
    if (state === 'renewing' || state === 'loading') return;
    renew();
  }

  iframe.addEventListener('load', onLoad);
  view.addEventListener('message', onMessage);
  container.appendChild(iframe);
  load('loading');

  return {
    get state() {
      return state;
    },
    iframe,
    renew,
    destroy() {
      if (destroyed) return;
      destroyed = true;
      if (timer !== null) view.clearTimeout(timer);
      view.removeEventListener('message', onMessage);
      iframe.removeEventListener('load', onLoad);
      iframe.remove();
    },
  };
}

window.EmbedGate = { mount: mount };
})();
