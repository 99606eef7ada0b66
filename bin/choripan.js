#!/usr/bin/env node
'use strict';
// The `choripan` command: `npx choripan serve`, `npx choripan predict photo.jpg`, from an app that
// depends on choripan as from its own folder.

const fs = require('node:fs');
const path = require('node:path');
const { parseArgs } = require('node:util');

const HELP = `Usage:
  choripan serve [--model PATH] [--port N] [--host HOST]
      Serve a model over HTTP (POST /predict, GET /healthz) until SIGTERM or SIGINT.
  choripan predict IMAGE… [--model PATH] [--topk K] [--json]
      Classify image files and print the labels (--json: one JSON object per image per line).

  --model PATH   an artifact written by \`python -m export\` (default: CHORIPAN_MODEL, else the default model)
  --port N       default: PORT, else 8080        --host HOST   default: HOST, else 127.0.0.1
Environment: CHORIPAN_MODEL, PORT, HOST, CHORIPAN_URL_ALLOWLIST (hosts GET /predict?url= may fetch).`;

function usage(message) {
  console.error(`choripan: ${message}\n\n${HELP}`);
  process.exit(2);
}

async function main(argv) {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        model: { type: 'string' }, port: { type: 'string' }, host: { type: 'string' },
        topk: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (error) {
    return usage(error.message);
  }
  const { values, positionals: [command, ...rest] } = parsed;
  if (values.help || command === 'help') return console.log(HELP);
  const choripan = require('..');
  const modelPath = values.model ? path.resolve(values.model) : choripan.DEFAULT_MODEL_PATH;
  if (command === 'serve') {
    if (rest.length) return usage(`serve takes no arguments, got ${rest.join(' ')}`);
    const port = values.port === undefined ? undefined : Number(values.port);
    if (port !== undefined && !(Number.isInteger(port) && port >= 0 && port < 65536)) return usage(`--port ${values.port} is not a port`);
    const { serve, fail } = require('../js/server/main');
    return serve({ modelPath, port, host: values.host }).catch(fail);
  }
  if (command === 'predict') {
    if (!rest.length) return usage('predict needs at least one image file');
    const options = values.topk === undefined ? {} : { topk: Number(values.topk) }; // 5, or as many labels as there are
    const model = await choripan.load(modelPath);
    let failed = false;
    for (const file of rest) {
      try {
        const result = await model.predict(fs.readFileSync(file), options);
        if (values.json) {
          console.log(JSON.stringify({ file, ...result }));
        } else {
          console.log(`${file}: ${result.label} (${result.probability.toFixed(3)})`);
          for (const entry of result.top.slice(1)) console.log(`  ${entry.label} (${entry.probability.toFixed(3)})`);
        }
      } catch (error) {
        failed = true;
        console.error(`${file}: ${error.code ?? 'error'}: ${error.message}`);
      }
    }
    await model.dispose();
    process.exitCode = failed ? 1 : 0;
    return undefined;
  }
  return usage(command ? `unknown command '${command}'` : 'a command is needed');
}

main(process.argv.slice(2)).catch((error) => {
  console.error(`choripan: ${error.code ? `${error.code}: ` : ''}${error.message}`);
  process.exit(1);
});
