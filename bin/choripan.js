#!/usr/bin/env node
'use strict';
// The `choripan` command: `npx choripan serve`, `npx choripan predict photo.jpg`, from an app that
// depends on choripan as from its own folder.

const fs = require('node:fs');
const path = require('node:path');
const { parseArgs } = require('node:util');

const HELP = `Usage:
  choripan serve [--model [NAME=]PATH …] [--port N] [--host HOST]
      Serve models over HTTP (POST /predict, the Open Inference Protocol under /v2, /metrics, a page at /)
      until SIGTERM or SIGINT. Several --model NAME=PATH serve several models; the first is the default.
  choripan predict IMAGE… [--model PATH] [--topk K] [--json]
      Classify image files and print the labels (--json: one JSON object per image per line).

  --model PATH   an artifact written by \`python -m choripan\` (default: CHORIPAN_MODEL, else the default model)
  --port N       default: PORT, else 8080        --host HOST   default: HOST, else 127.0.0.1
Environment (serve):
${require('../js/server/config').describeVariables()}`;

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
        model: { type: 'string', multiple: true }, port: { type: 'string' }, host: { type: 'string' },
        topk: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (error) {
    return usage(error.message);
  }
  const { values, positionals: [command, ...rest] } = parsed;
  if (values.help || command === 'help') return console.log(HELP);
  const choripan = require('..');
  if (command === 'serve') {
    if (rest.length) return usage(`serve takes no arguments, got ${rest.join(' ')}`);
    const port = values.port === undefined ? undefined : Number(values.port);
    if (port !== undefined && !(Number.isInteger(port) && port >= 0 && port < 65536)) return usage(`--port ${values.port} is not a port`);
    const { serve, fail } = require('../js/server/main');
    const { readConfig } = require('../js/server/config');
    try {
      const models = values.model?.map((entry) => {
        const named = entry.match(/^([A-Za-z0-9_.-]+)=(.+)$/);
        return named ? { name: named[1], path: path.resolve(named[2]) } : { name: null, path: path.resolve(entry) };
      });
      if (models?.length > 1 && models.some((m) => m.name === null)) return usage('with several --model, name each: --model NAME=PATH');
      return serve(readConfig(process.env, { models, port, host: values.host })).catch(fail);
    } catch (error) {
      return fail(error);
    }
  }
  if (command === 'predict') {
    if (!rest.length) return usage('predict needs at least one image file');
    if ((values.model?.length ?? 0) > 1) return usage('predict takes one --model');
    const modelPath = values.model ? path.resolve(values.model[0]) : process.env.CHORIPAN_MODEL ?? choripan.DEFAULT_MODEL_PATH;
    const options = values.topk === undefined ? {} : { topK: Number(values.topk) }; // 5, or as many labels as there are
    const { readVariable, ConfigError } = require('../js/server/config');
    let trustedKeys;
    try {
      trustedKeys = readVariable(process.env, 'CHORIPAN_TRUSTED_KEYS');
    } catch (error) {
      if (error instanceof ConfigError) return usage(error.message);
      throw error;
    }
    const model = await choripan.load(modelPath, trustedKeys ? { trustedKeys } : {});
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

main(process.argv.slice(2)).catch(require('../js/server/main').fail);
