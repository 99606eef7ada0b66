'use strict';
// The page's script: sends the chosen, dropped or pasted image to POST /predict and shows the answer;
// with the API key the visitor gives, where the server asks for one.

const $ = (id) => document.getElementById(id);

// What a visitor reads for each code the service answers; the code follows, for a report.
const TROUBLE = {
  E_DECODE: "That file isn't an image we can read",
  E_UNSUPPORTED_FORMAT: "That kind of image isn't supported here",
  E_TOO_LARGE: 'That image is too large',
  E_INVALID_ARGUMENT: "The server couldn't use that file",
  E_QUEUE_FULL: 'The server is busy: try again in a moment',
  E_TIMEOUT: 'The model took too long: try again',
  E_RATE_LIMITED: 'Too many requests from here: try again in a moment',
};

// The API key a visitor gives, once the server asks for one: kept in this tab's sessionStorage only (gone
// with the tab), and sent only as the Authorization header of the page's own requests.
const KEY_ITEM = 'choripan.apiKey';
// What a Bearer token may hold (RFC 6750), as the server's keys file does: anything else could not be
// sent in a header, and is no key of the server's.
const TOKEN = /^[A-Za-z0-9\-._~+/]+=*$/;
let apiKey = '';

/** The key for this tab, or none; where storage is turned off, for as long as the page is open. */
function keep(key) {
  apiKey = key;
  try {
    if (key) sessionStorage.setItem(KEY_ITEM, key);
    else sessionStorage.removeItem(KEY_ITEM);
  } catch {
    // No storage here (turned off, or a sandboxed frame): the key lasts as long as the page.
  }
}

function restoreKey() {
  let stored = null;
  try {
    stored = sessionStorage.getItem(KEY_ITEM);
  } catch {
    return; // no storage: nothing was kept
  }
  if (!stored) return;
  if (!TOKEN.test(stored)) return keep(''); // written by something else: not ours to send
  apiKey = stored;
  $('key').value = stored;
  $('key-form').hidden = false;
}

/** What a 401 or 403 says to a visitor: which key is wanted, and where to type it. */
function askForKey(response, code, detail) {
  $('key-form').hidden = false;
  $('key').focus();
  const text = response.status === 403 ? 'That API key may not classify images here: try another'
    : apiKey ? 'That API key was not accepted: check it and try again'
      : 'This server needs an API key: type it in the API key field';
  fail(text, code ?? `HTTP ${response.status}`, detail);
}

async function models() {
  const answer = await fetch('healthz').then((r) => r.json());
  const names = Object.keys(answer.models ?? {});
  if (names.length > 1) {
    $('model').replaceChildren(...names.map((name) => new Option(name, name)));
    $('model-choice').hidden = false;
  }
}

// The request in hand, aborted when another image comes: only the last one chosen is shown.
let current = null;
// The last image sent, sent again once a key is given.
let last = null;

/** The new image, its name and a busy note in place of the last answer, which is gone. */
function busy(file, url) {
  URL.revokeObjectURL($('preview').src);
  $('preview').src = url;
  $('preview').alt = file.name || 'the pasted image';
  $('label').textContent = '';
  $('top').replaceChildren();
  $('meta').textContent = '';
  $('busy-text').textContent = `Asking the model about ${file.name || 'the pasted image'}…`;
  $('busy').hidden = false;
  $('result').classList.add('busy');
  $('result').hidden = false;
  $('error').hidden = true;
}

function show(file, answer, ms) {
  $('busy').hidden = true;
  $('result').classList.remove('busy');
  $('label').textContent = answer.default ? `${answer.label} (a default answer: the model took too long)` : answer.label;
  $('top').replaceChildren(...(answer.top ?? []).map(({ label, probability }) => {
    const item = document.createElement('li');
    const bar = document.createElement('div');
    const fill = document.createElement('span');
    bar.className = 'bar';
    fill.style.width = `${(probability * 100).toFixed(1)}%`;
    bar.append(fill);
    item.append(`${label} — ${(probability * 100).toFixed(1)}%`, bar);
    return item;
  }));
  $('meta').textContent = [file.name, answer.model, `${ms} ms`].filter(Boolean).join(' · ');
}

function fail(text, code, detail) {
  $('result').hidden = true;
  $('busy').hidden = true;
  $('error-text').textContent = code ? `${text} (${code})` : text;
  $('error-detail').textContent = detail;
  $('error').hidden = false;
}

async function send(file) {
  current?.abort();
  const request = new AbortController();
  current = request;
  last = file;
  busy(file, URL.createObjectURL(file));
  const started = performance.now();
  const model = $('model-choice').hidden ? '' : `?model=${encodeURIComponent($('model').value)}`;
  let response;
  let answer;
  try {
    // The bytes as they are: the server reads the format from them, whatever the file's name or type says.
    response = await fetch(`predict${model}`, { method: 'POST', body: file, signal: request.signal,
      headers: { 'Content-Type': 'application/octet-stream', ...(apiKey ? { Authorization: `Bearer ${apiKey}` } : {}) } });
    answer = await response.json().catch(() => null);
  } catch (error) {
    if (request.signal.aborted) return;
    fail("The server couldn't be reached", null, error.message);
    return;
  }
  if (request.signal.aborted) return;
  if (response.ok && answer) return show(file, answer, Math.round(performance.now() - started));
  const code = answer?.error?.code;
  const detail = answer?.error?.message ?? '';
  // A server that takes API keys says so in its challenge (RFC 6750).
  const challenged = response.status === 401 && /^Bearer\b/i.test(response.headers.get('WWW-Authenticate') ?? '');
  if (challenged || response.status === 403) return askForKey(response, code, detail);
  fail(TROUBLE[code] ?? 'Something went wrong on the server', code ?? `HTTP ${response.status}`, detail);
}

$('key-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const key = $('key').value.trim();
  if (key && !TOKEN.test(key)) {
    fail('That is not an API key: a key holds only letters, digits and - . _ ~ + / (= at its end)', null,
      'Nothing was sent. Check what was typed or pasted: spaces inside, quotes or other characters.');
    return;
  }
  $('key').value = key;
  keep(key);
  if (last) send(last);
});

$('file').addEventListener('change', () => {
  const [file] = $('file').files;
  $('file').value = ''; // so that choosing the same file again sends it again
  if (file) send(file);
});

// A file dropped anywhere on the page is taken: a browser would otherwise open it in place of the page.
let dragging = 0; // dragenter and dragleave come in pairs, one per element crossed
document.addEventListener('dragenter', (event) => {
  event.preventDefault();
  dragging++;
  document.body.classList.add('dragging');
});
document.addEventListener('dragleave', () => {
  dragging = Math.max(0, dragging - 1);
  if (dragging === 0) document.body.classList.remove('dragging');
});
document.addEventListener('dragover', (event) => event.preventDefault());
document.addEventListener('drop', (event) => {
  event.preventDefault();
  dragging = 0;
  document.body.classList.remove('dragging');
  const [file] = event.dataTransfer.files;
  if (file) send(file);
  else fail('Drop an image file: that was not one', null, 'A link or text was dropped; save the image first, then drop the file.');
});

document.addEventListener('paste', (event) => {
  const file = [...event.clipboardData.items].find((item) => item.kind === 'file')?.getAsFile();
  if (file) send(file);
});
restoreKey();
models().catch(() => {}); // without the list, the first model answers
