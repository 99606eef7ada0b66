'use strict';
// The page's script: sends the chosen, dropped or pasted image to POST /predict and shows the answer.

const $ = (id) => document.getElementById(id);

// What a visitor reads for each code the service answers; the code follows, for a report.
const TROUBLE = {
  E_DECODE: "That file isn't an image we can read",
  E_UNSUPPORTED_FORMAT: "That kind of image isn't supported here",
  E_TOO_LARGE: 'That image is too large',
  E_INVALID_ARGUMENT: "The server couldn't use that file",
  E_QUEUE_FULL: 'The server is busy: try again in a moment',
  E_TIMEOUT: 'The model took too long: try again',
  E_UNAUTHORIZED: 'This server takes requests with an API key only, which this page does not send',
  E_RATE_LIMITED: 'Too many requests from here: try again in a moment',
};

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
  busy(file, URL.createObjectURL(file));
  const started = performance.now();
  const model = $('model-choice').hidden ? '' : `?model=${encodeURIComponent($('model').value)}`;
  let response;
  let answer;
  try {
    // The bytes as they are: the server reads the format from them, whatever the file's name or type says.
    response = await fetch(`predict${model}`, { method: 'POST', body: file, signal: request.signal,
      headers: { 'Content-Type': 'application/octet-stream' } });
    answer = await response.json().catch(() => null);
  } catch (error) {
    if (request.signal.aborted) return;
    fail("The server couldn't be reached", null, error.message);
    return;
  }
  if (request.signal.aborted) return;
  if (response.ok && answer) return show(file, answer, Math.round(performance.now() - started));
  const code = answer?.error?.code;
  fail(TROUBLE[code] ?? 'Something went wrong on the server', code ?? `HTTP ${response.status}`, answer?.error?.message ?? '');
}

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
models().catch(() => {}); // without the list, the first model answers
