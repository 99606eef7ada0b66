'use strict';
// The page's script: sends the chosen, dropped or pasted image to POST /predict and shows the answer.

const $ = (id) => document.getElementById(id);

async function models() {
  const answer = await fetch('healthz').then((r) => r.json());
  const names = Object.keys(answer.models ?? {});
  if (names.length > 1) {
    $('model').replaceChildren(...names.map((name) => new Option(name, name)));
    $('model-choice').hidden = false;
  }
}

function show(file, answer, ms) {
  $('preview').src = URL.createObjectURL(file);
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
  $('meta').textContent = `${answer.model}, ${ms} ms`;
  $('result').hidden = false;
}

async function send(file) {
  $('error').hidden = true;
  const started = performance.now();
  try {
    const model = $('model-choice').hidden ? '' : `?model=${encodeURIComponent($('model').value)}`;
    const response = await fetch(`predict${model}`, {
      method: 'POST', body: file, headers: { 'Content-Type': file.type || 'application/octet-stream' },
    });
    const answer = await response.json();
    if (!response.ok) throw new Error(answer.error?.message ?? `the server answered ${response.status}`);
    show(file, answer, Math.round(performance.now() - started));
  } catch (error) {
    $('result').hidden = true;
    $('error').textContent = `That did not work: ${error.message}`;
    $('error').hidden = false;
  }
}

$('file').addEventListener('change', () => $('file').files[0] && send($('file').files[0]));
const drop = $('drop');
drop.addEventListener('dragover', (event) => { event.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (event) => {
  event.preventDefault();
  drop.classList.remove('over');
  const [file] = event.dataTransfer.files;
  if (file) send(file);
});
document.addEventListener('paste', (event) => {
  const file = [...event.clipboardData.items].find((item) => item.kind === 'file')?.getAsFile();
  if (file) send(file);
});
models();
