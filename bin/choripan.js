#!/usr/bin/env node
'use strict';
// The `choripan` command: `npx choripan serve`, `npx choripan predict photo.jpg`, from an app that
// depends on choripan as from its own folder. Every argument is checked before a model loads: a usage
// error is one line on stderr, with where to read more, and exit status 2; a failure that comes later is
// one line too, and exit status 1.

const fs = require('node:fs');
const path = require('node:path');
const { Command, CommanderError, Option } = require('commander');
const { version } = require('../package.json');
const { ChoripanError, summary } = require('../js/errors');
const config = require('../js/server/config');
const { vocabulary, serverVariables, unsetValue } = require('../js/vocabulary');

/** What a server variable comes to when unset (native/core/vocabulary.json). */
const unset = (name) => unsetValue(serverVariables().find((v) => v.variable === name));
const TOP_K_DEFAULT = vocabulary.predictOptions.find((o) => o.name === 'topK').default;

/** The exit status of a command line that cannot be run as it is: a usage error, a file that cannot be read. */
const USAGE_STATUS = 2;

/** Commander's messages ("error: unknown option '--top'\n(Did you mean --top-k?)") as one line of ours. */
function oneLine(message) {
  return message.trim().replace(/^error: /, '').replace(/\n\(Did you mean (.*)\?\)$/, ' (did you mean $1?)').replace(/\n/g, ' ').replace(/\.$/, '');
}

/**
 * Each of `command`'s usage errors, commander's and ours (usage()), in one line that says where to read
 * more; then main() sets the exit status.
 */
function reportUsageErrors(command, name) {
  return command.exitOverride()
    .configureOutput({ outputError: (message, write) => write(`choripan: ${oneLine(message)}; see \`${name} --help\`\n`) });
}

/** Stops with a usage error of `command`. */
function usage(command, message) {
  command.error(message, { code: 'choripan.usage', exitCode: USAGE_STATUS });
}

/** A flag's value through `parse(text)`, which throws with what it expected; a usage error names the flag. */
function flagValue(command, flag, text, parse) {
  try {
    return parse(text);
  } catch (error) {
    return usage(command, `${flag}: ${error.message}`);
  }
}

function positiveInteger(text) {
  if (!/^\d+$/.test(text) || Number(text) < 1) throw new Error(`expected a positive integer, got '${text}'`);
  return Number(text);
}

/** Whether every file can be read; `report(file, problem)` says why for each that cannot. */
function readable(files, report) {
  const problems = files.map((file) => [file, config.unreadable(file)]).filter(([, problem]) => problem);
  for (const [file, problem] of problems) report(file, problem);
  return problems.length === 0;
}

/** A file that cannot be read, as a line on stderr: `choripan: cannot read x.jpg: no such file`. */
const complain = (file, problem) => console.error(`choripan: ${problem}`);

/** Every value of a flag given more than once. */
const collect = (value, previous = []) => [...previous, value];

function serveCommand() {
  const command = new Command('serve')
    .summary('serve models over HTTP (and gRPC) until stopped')
    .description('Serve models over HTTP (POST /predict, the Open Inference Protocol under /v2, /metrics, a page at /) ' +
      'until SIGTERM or SIGINT, then finish the requests in hand. The port is taken first; /readyz answers 503 until ' +
      'the models have loaded. The log goes to stdout: JSON lines, or lines for a person on a terminal.')
    .addOption(new Option('--model <[NAME=]PATH>', 'an artifact written by `python -m choripan`; several --model NAME=PATH ' +
      'serve several models, the first the default (default: CHORIPAN_MODELS or CHORIPAN_MODEL, else the default model)')
      .argParser(collect))
    .option('--model-repository <DIR>', 'serve a model repository, DIR/NAME/VERSION/ holding one artifact each, ' +
      'every version under /v2/models/NAME/versions/VERSION (default: CHORIPAN_MODEL_REPOSITORY)')
    .option('--model-control <MODE>', 'how the repository\'s models change: none (loaded at start), poll ' +
      '(read again every CHORIPAN_REPOSITORY_POLL_MS), explicit (loaded and unloaded by the repository calls) ' +
      `(default: CHORIPAN_MODEL_CONTROL, else ${unset('CHORIPAN_MODEL_CONTROL')})`)
    .option('--port <N>', `port to listen on, 0 for any free one (default: PORT, else ${unset('PORT')})`)
    .option('--host <HOST>', `address to listen on (default: HOST, else ${unset('HOST')})`)
    .option('--grpc-port <N>', `also serve the Open Inference Protocol over gRPC on this port, 0 for any free one (default: CHORIPAN_GRPC_PORT, else ${unset('CHORIPAN_GRPC_PORT')})`)
    .addHelpText('after', `\nEnvironment (a flag wins over its variable):\n${config.describeVariables()}\n\n` +
      'Tracing: OTEL_EXPORTER_OTLP_ENDPOINT and OpenTelemetry\'s other OTEL_* variables send a span for each request\n' +
      'over OTLP; with none set, nothing is traced (docs/service.md#tracing).')
    .action(async (options) => {
      const port = options.port === undefined ? undefined : flagValue(command, '--port', options.port, config.VARIABLES.PORT[1]);
      if (options.model && options.modelRepository) usage(command, '--model and --model-repository: serve models or a repository, not both');
      const modelRepository = options.modelRepository === undefined ? undefined
        : flagValue(command, '--model-repository', options.modelRepository, config.VARIABLES.CHORIPAN_MODEL_REPOSITORY[1]);
      const modelControl = options.modelControl === undefined ? undefined
        : flagValue(command, '--model-control', options.modelControl, config.VARIABLES.CHORIPAN_MODEL_CONTROL[1]);
      const grpcPort = options.grpcPort === undefined ? undefined
        : flagValue(command, '--grpc-port', options.grpcPort, config.VARIABLES.CHORIPAN_GRPC_PORT[1]);
      let models;
      if (options.model) {
        const entries = flagValue(command, '--model', options.model, (list) => config.modelEntries(list, { bare: true }));
        if (!readable(entries.map((entry) => entry.path), complain)) {
          process.exitCode = USAGE_STATUS;
          return;
        }
        models = entries.map(({ name, path: file }) => ({ name, path: path.resolve(file) }));
      }
      const { serve } = require('../js/server/main');
      await serve(config.readConfig(process.env, { models, modelRepository, modelControl, port, grpcPort, host: options.host }));
    });
  return command;
}

function predictCommand() {
  const command = new Command('predict')
    .summary('classify image files and print their labels')
    .description('Classify image files (JPEG, PNG, WebP, GIF, TIFF, AVIF) and print the most probable labels of each.')
    .argument('<image...>', 'image files')
    .option('--model <PATH>', 'an artifact written by `python -m choripan` (default: CHORIPAN_MODEL, else the default model)', collect)
    .option('--top-k <K>', `how many labels to print for each image; more than the model has prints them all (default: ${TOP_K_DEFAULT})`)
    .addOption(new Option('--topk <K>').hideHelp()) // --top-k's old spelling
    .option('--json', 'one JSON line per image on stdout: {"file", "label", "probability", "top"}, or {"file", "error": {"code", "message"}}')
    .addHelpText('after', `
Exit status: 0 when every image was classified; 1 when one was not, or the model did not load; 2 for a
usage error or a file that cannot be read, and then nothing was run.

Environment:
${config.describeVariables(['CHORIPAN_MODEL', 'CHORIPAN_TRUSTED_KEYS'])}`)
    .action(async (images, options) => {
      if (options.model?.length > 1) usage(command, 'predict takes one --model');
      if (options.topK !== undefined && options.topk !== undefined) usage(command, '--topk is --top-k: give it once');
      const topKText = options.topK ?? options.topk;
      const topK = topKText === undefined ? undefined : flagValue(command, '--top-k', topKText, positiveInteger);
      const choripan = require('..');
      const modelPath = options.model?.[0] ?? config.readVariable(process.env, 'CHORIPAN_MODEL') ?? choripan.DEFAULT_MODEL_PATH;
      const trustedKeys = config.readVariable(process.env, 'CHORIPAN_TRUSTED_KEYS');

      // An image's answer or failure: a JSON line on stdout with --json; else its labels on stdout, or a line on stderr.
      const answered = options.json ? (file, result) => console.log(JSON.stringify({ file, ...result })) : (file, result) => {
        console.log(`${file}: ${result.label} (${result.probability.toFixed(3)})`);
        for (const entry of result.top.slice(1)) console.log(`  ${entry.label} (${entry.probability.toFixed(3)})`);
      };
      const failed = options.json
        ? (file, error) => console.log(JSON.stringify({ file, error: { code: error.code ?? 'E_INTERNAL', message: error.message } }))
        : (file, error) => console.error(`${file}: ${summary(error)}`);

      // Every file before the model loads (seconds): a file that cannot be read is the command line's error.
      const unreadableImage = options.json ? (file, problem) => failed(file, new ChoripanError('E_INVALID_ARGUMENT', problem)) : complain;
      if (![readable([modelPath], complain), readable(images, unreadableImage)].every(Boolean)) {
        process.exitCode = USAGE_STATUS;
        return;
      }
      const model = await choripan.load(modelPath, trustedKeys ? { trustedKeys } : {});
      let failures = 0;
      for (const file of images) {
        try {
          // As many labels as asked, or as the model has, as predict() cuts its default 5.
          const asked = topK === undefined ? {} : { topK: Math.min(topK, model.labels.length) };
          answered(file, await model.predict(readImage(file), asked));
        } catch (error) {
          failures++;
          failed(file, error);
        }
      }
      await model.dispose();
      process.exitCode = failures ? 1 : 0;
    });
  return command;
}

/** The file's bytes; a file that went away since it was checked fails as that image's error. */
function readImage(file) {
  try {
    return fs.readFileSync(file);
  } catch (error) {
    throw new ChoripanError('E_INVALID_ARGUMENT', `cannot read ${file}: ${config.unreadableBecause(error)}`);
  }
}

async function main(argv) {
  const program = reportUsageErrors(new Command('choripan'), 'choripan')
    .description('Serve a PyTorch image classifier exported by `python -m choripan`, or classify image files with it.')
    .version(version, '-v, --version', 'print the version');
  program.addCommand(reportUsageErrors(serveCommand(), 'choripan serve'));
  program.addCommand(reportUsageErrors(predictCommand(), 'choripan predict'));
  program.addHelpText('after', '\nEach command has its own help: choripan serve --help, choripan predict --help.');
  try {
    if (!argv.length) usage(program, 'a command is needed: serve or predict');
    await program.parseAsync(argv, { from: 'user' });
  } catch (error) {
    if (!(error instanceof CommanderError)) throw error;
    // Help and --version end here too (0); every other error of commander's is one of usage.
    process.exitCode = error.exitCode === 0 ? 0 : USAGE_STATUS;
  }
}

// A reader that stops early (`choripan predict *.jpg | head -1`) is not a failure to report: stop quietly,
// with 128 + SIGPIPE, as a command the signal stopped reports (python -m choripan does the same).
const SIGPIPE_STATUS = 128 + require('node:os').constants.signals.SIGPIPE;
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (error) => {
    if (error.code !== 'EPIPE') throw error;
    process.exit(SIGPIPE_STATUS);
  });
}

main(process.argv.slice(2)).catch((error) => require('../js/server/main').fail(error));
