// Compiled by `npm test` (tsc --noEmit): the public types describe how the package is used.
import * as fs from 'node:fs';
import choripan, { ChoripanError, load, predict, type ErrorCode, type Model, type Prediction } from 'choripan';

async function main(): Promise<void> {
  const bytes = fs.readFileSync('cat.jpg');
  const first: Prediction = await predict(bytes, { topK: 3, timeoutMs: 1000, signal: AbortSignal.timeout(5000) });
  const label: string = first.top[0].label;
  const model: Model = await load('models/default.pt', { maxBatch: 8, maxDelayMs: 2, device: 'cpu' });
  const stats = model.stats();
  const batch: number = stats.meanBatchSize;
  const labels: readonly string[] = model.labels;
  const crop = model.metadata.input.shape[2];
  const rows: Float32Array[] = await model.probabilitiesMany([bytes, new Float32Array(3 * 224 * 224)], { timeoutMs: 1000 });
  const best: Array<[number, number]> = choripan.topIndices(rows[0], 3);
  const bestLabel: string = model.labels[best[0][0]];
  const workers: number = Math.max(1, Math.floor(choripan.availableCores() / 2));
  // @ts-expect-error: topIndices ranks a row of numbers, not labels
  choripan.topIndices(model.labels, 3);
  await model.dispose();
  try {
    await choripan.predict(new Uint8Array(0));
  } catch (error) {
    if (error instanceof ChoripanError && error.code === 'E_INVALID_ARGUMENT') console.log(error.message);
    // A bad call is a RangeError (an empty buffer) or a TypeError, and a ChoripanError with its code.
    if (error instanceof RangeError && error instanceof ChoripanError) {
      const code: ErrorCode = error.code;
      console.log(code, error.name);
    }
  }
  console.log(label, batch, labels.length, crop, rows.length, bestLabel, workers, choripan.codes.E_QUEUE_FULL);
  // @ts-expect-error: misspelled options are type errors too
  await predict(bytes, { top_k: 3 });
  // @ts-expect-error: probabilities() has no top
  await model.probabilities(bytes, { topK: 3 });
  // @ts-expect-error: devices are 'cpu' or 'cuda'
  await load('m.pt', { device: 'tpu' });
}

void main;

// require('choripan/server'), embedded in an app of one's own.
import express from 'express';
import { trace } from '@opentelemetry/api';
import * as http from 'node:http';
import { createApp, serverHandler, type ErrorResponse, type PredictResponse } from 'choripan/server';

async function embed(): Promise<void> {
  const model: Model = await load('models/default.pt2');
  const host = express();
  host.use('/vision', createApp({ model, timeoutMs: 5000, defaultLabel: 'unknown' }));
  const two = createApp({ models: new Map([['a', model]]), urlAllowlist: 'example.com' });
  two.locals.draining = true;
  createApp({ model, corsOrigins: 'https://app.example.com,http://localhost:3000' });
  createApp({ model, tracer: trace.getTracer('vision') });
  // @ts-expect-error: a tracer, not its provider
  createApp({ model, tracer: trace.getTracerProvider() });
  createApp({ model, apiKeys: [{ key: 'a-key-of-sixteen-characters', scope: 'admin' }], metricsAuth: true, rateLimit: '20:40' });
  // @ts-expect-error: a key's scope is infer or admin
  createApp({ model, apiKeys: [{ key: 'a-key-of-sixteen-characters', scope: 'root' }] });
  // @ts-expect-error: createApp takes options, not a model
  createApp(model);
  http.createServer(serverHandler(two)).listen(0);
}

void embed;

// What POST /predict answers, read by a client of the service.
async function client(): Promise<void> {
  const response = await fetch('http://127.0.0.1:8080/predict', { method: 'POST', body: fs.readFileSync('cat.jpg'),
    headers: { 'Content-Type': 'application/octet-stream' } });
  const body = (await response.json()) as PredictResponse | ErrorResponse;
  if ('error' in body) {
    const code: ErrorCode = body.error.code;
    console.log(code, body.error.message);
  } else if (body.default) {
    const label: string = body.label;
    // @ts-expect-error: a default answer has no probabilities
    console.log(label, body.probability);
  } else {
    const { label, probability, top, model, elapsedMs } = body;
    console.log(label, probability.toFixed(3), top[1].label, model, elapsedMs);
  }
}

void client;
