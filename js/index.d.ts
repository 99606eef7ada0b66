// Public types of the choripan package. The raw binding's types live apart in binding.d.ts.

import { EventEmitter } from 'node:events';
import type { KeyObject } from 'node:crypto';

/** A stable error code; the same vocabulary in C++, Python and JS (native/core/vocabulary.json). */
export type ErrorCode =
  // <vocabulary errors> (written by scripts/vocabulary.js from native/core/vocabulary.json)
  | 'E_INVALID_ARGUMENT'
  | 'E_DECODE'
  | 'E_UNSUPPORTED_FORMAT'
  | 'E_TOO_LARGE'
  | 'E_QUEUE_FULL'
  | 'E_TIMEOUT'
  | 'E_ABORTED'
  | 'E_DISPOSED'
  | 'E_MODEL_LOAD'
  | 'E_DEVICE'
  | 'E_INTERNAL'
  | 'E_ADDON'
  | 'E_URL_NOT_ALLOWED'
  | 'E_FETCH'
  | 'E_NOT_FOUND'
  | 'E_NOT_READY'
  | 'E_UNAUTHORIZED'
  | 'E_FORBIDDEN'
  | 'E_RATE_LIMITED'
  | 'E_QUANTIZATION_GATE'
  // </vocabulary errors>
  ;

/**
 * Every failure choripan raises carries a stable `code`. A bad call (an argument or option of the wrong
 * type, a misspelled option, a value out of its range) is thrown as Node's own APIs throw it: a
 * `TypeError`, or a `RangeError` for a value of the right type out of its range, with the code
 * `E_INVALID_ARGUMENT`; `instanceof ChoripanError` is true for it all the same. Every other failure is a
 * ChoripanError proper.
 */
export class ChoripanError extends Error {
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown });
  readonly code: ErrorCode;
  /** True for a ChoripanError, and for a bad call's TypeError or RangeError. */
  static [Symbol.hasInstance](value: unknown): value is ChoripanError;
}

/** Each code and what it means. */
export const codes: Readonly<Record<ErrorCode, string>>;

/** load()'s options. */
export interface LoadOptions {
  // <vocabulary options> (written by scripts/vocabulary.js from native/core/vocabulary.json)
  /** most requests merged into one forward pass (2: the best measured on a small CPU; raise it on a GPU). Default 2. */
  maxBatch?: number;
  /** longest wait for a batch to fill after its first request, while other requests are queued or on their way. Default 2. */
  maxDelayMs?: number;
  /** requests waiting (those being decoded included) beyond this reject at once, before decoding, with E_QUEUE_FULL. Default 256. */
  maxQueue?: number;
  /** inference threads; 0: for a compiled package (.pt2), the CPU cores this process may use; for TorchScript, 1, on every core; 1 on a GPU. Default 0. */
  workers?: number;
  /** libtorch threads per worker; 0: cores / workers. With one, a batch that runs alone gets every worker's thread. Default 0. */
  intraOpThreads?: number;
  /** 'cuda' rejects with E_DEVICE where CUDA is not available. Default 'cpu'. */
  device?: 'cpu' | 'cuda';
  /** run a forward pass on each worker at load, so that the first request is not the slow one. Default true. */
  warmup?: boolean;
  /** decoded pixels waiting for a worker, in bytes; past it, calls reject with E_QUEUE_FULL before decoding. Default 1073741824. */
  maxPendingBytes?: number;
  /** the file's SHA-256 in hex: any other file is refused with E_MODEL_LOAD before anything in it is read (a pinned model; trustedKeys sets it from a signature). */
  sha256?: string;
  /** elliptic-curve public keys (PEM text, Buffers or KeyObjects): the artifact must carry an OpenSSF model signing signature by one of them (docs/security.md), or it is refused with E_MODEL_LOAD. */
  trustedKeys?: Array<string | Buffer | KeyObject>;
  /** the signature file that trustedKeys checks, when it is not the artifact's path with .sig appended. */
  signature?: string;
  // </vocabulary options>
}

export interface PredictOptions {
  // <vocabulary predictOptions>
  /** how many labels `top` holds, most probable first: 1 to the model's label count, every label when there are fewer than the default. Default 5. */
  topK?: number;
  /** deadline for the whole call (decode, queue, forward), in ms, at most setTimeout's longest; past it E_TIMEOUT. */
  timeoutMs?: number;
  // </vocabulary predictOptions>
  /** @deprecated The old name of `topK` (a DeprecationWarning, CHORIPAN_DEP0001); both at once are refused. */
  topk?: number;
  /** Aborting rejects with E_ABORTED and withdraws the request if it is still queued. */
  signal?: AbortSignal;
}

export interface Prediction {
  label: string;
  probability: number;
  top: Array<{ label: string; probability: number }>;
}

/** Counters and latency figures of a model's queue and workers. */
export interface ModelStats {
  // <vocabulary stats> (written by scripts/vocabulary.js from native/core/vocabulary.json)
  /** requests the queue accepted. */
  requests: number;
  /** requests answered with probabilities. */
  completed: number;
  /** accepted requests answered with an error (timeouts, aborts, disposal, …). */
  failed: number;
  /** requests refused at once because the queue was full. */
  rejected: number;
  /** forward passes run. */
  batches: number;
  /** requests waiting now. */
  queued: number;
  /** requests a worker holds now. */
  inflight: number;
  /** decoded pixels announced, queued or running, in bytes. */
  pendingBytes: number;
  /** requests per forward pass, on average. */
  meanBatchSize: number;
  /** time of a forward pass, on average. */
  meanForwardMs: number;
  /** median time from submission to answer, over the last 2048 answers. */
  latencyP50Ms: number;
  /** 99th percentile of the same. */
  latencyP99Ms: number;
  /** longest of the same. */
  latencyMaxMs: number;
  /** requests answered with probabilities per second, over the last 10 seconds. */
  drainPerSecond: number;
  /** inference threads. */
  workers: number;
  /** libtorch threads per worker under load. */
  intraOpThreads: number;
  // </vocabulary stats>
}

/** The artifact's metadata document (format choripan.artifact). */
export interface ArtifactMetadata {
  format: 'choripan.artifact';
  format_version: number;
  name: string;
  labels: string[];
  input: { shape: Array<number | null>; dtype: string; layout: string; colors: string };
  output: { kind: 'probabilities'; activation: string; shape: Array<number | null> };
  preprocessing: Record<string, unknown>;
  source: Record<string, unknown>;
  versions: Record<string, string>;
  exported_at: string;
  checksum: { algorithm: string; scope: string; value: string };
  [key: string]: unknown;
}

/** Where one prediction's time went: `model.on('prediction', (timing) => …)`. */
export interface PredictionTiming {
  /** The whole call: checks, decode, queue, forward. */
  totalMs: number;
  /** From submission to the start of its batch, preprocessing included. */
  queueMs: number;
  /** The forward pass of its batch. */
  forwardMs: number;
  /** The requests in that batch. */
  batchSize: number;
  /** Who decoded the image: the core (libjpeg-turbo, for the common JPEG) or sharp (the others); absent for a preprocessed tensor. */
  decoder?: 'core-jpeg' | 'sharp';
  /**
   * From submission to the start of decoding: within queueMs for the core, negative for sharp, which
   * decodes before the pixels are submitted.
   */
  decodeStartMs?: number;
  /** How long decoding took, as the core timed it, or this thread timed sharp's work. */
  decodeMs?: number;
}

/**
 * Which compiled model of an AOTInductor package runs a batch of one on the CPU, as the warm-up timed
 * them: the batch-1 model (its weights packed for the exporting CPU's kernels; `'batch1_avx2'` where the
 * package also has one packed for oneDNN's AVX2 kernels and this CPU runs those) or, where it runs more than
 * 1.5 times slower here, the any-batch model (docs/runtime.md#one-package-on-other-cpus). A batch of two
 * follows: the batch-2 model packed alike where `model` is not `'model'` (in packages that have one), else
 * the any-batch model.
 */
export interface LoneBatch {
  readonly model: 'batch1' | 'batch1_avx2' | 'model';
  /** The best of the batch-1 model's timed passes, in milliseconds. */
  readonly singleMs: number;
  /** The best of the any-batch model's, at batch 1. */
  readonly batchedMs: number;
}

export class Model extends EventEmitter {
  private constructor();
  readonly name: string;
  readonly path: string;
  readonly labels: readonly string[];
  readonly metadata: Readonly<ArtifactMetadata>;
  /** Null for TorchScript, on a GPU, for a package without a batch-1 model, or with `warmup: false`. */
  readonly loneBatch: LoneBatch | null;
  readonly disposed: boolean;
  predict(image: Uint8Array, options?: PredictOptions): Promise<Prediction>;
  /**
   * Every label's probability, in label order, for encoded image bytes or one preprocessed image
   * (3 × crop × crop floats, normalised as `metadata.preprocessing` says).
   */
  probabilities(input: Uint8Array | Float32Array, options?: Omit<PredictOptions, 'topK' | 'topk'>): Promise<Float32Array>;
  /**
   * probabilities() of several inputs, in order, as one call: admitted together or refused together
   * (E_QUEUE_FULL, or E_TOO_LARGE when they could never fit) before any is decoded; the first to fail
   * withdraws the others.
   */
  probabilitiesMany(inputs: Array<Uint8Array | Float32Array>, options?: Omit<PredictOptions, 'topK' | 'topk'>): Promise<Float32Array[]>;
  on(event: 'prediction', listener: (timing: PredictionTiming) => void): this;
  stats(): ModelStats;
  /** Queued requests reject with E_DISPOSED; running ones answer. Resolves once the workers have exited. */
  dispose(): Promise<void>;
}

/** Load an artifact written by `python -m choripan`. */
export function load(path: string, options?: LoadOptions): Promise<Model>;

/** Classify with the default model, loaded once on first use. */
export function predict(image: Uint8Array, options?: PredictOptions): Promise<Prediction>;

export function getDefaultModel(): Promise<Model>;

/**
 * The `k` most probable `[index, probability]` pairs of a row of probabilities (as `probabilities()`
 * answers it), most probable first, ties to the lower index; every entry when the row has fewer.
 * `model.labels[index]` names each.
 */
export function topIndices(probabilities: Float32Array | readonly number[], k: number): Array<[index: number, probability: number]>;

/**
 * The CPU cores this process may use (its affinity mask and cgroup CPU quota): what `workers: 0` and
 * `intraOpThreads: 0` count. Loads the addon (E_ADDON where there is none).
 */
export function availableCores(): number;

/** The default model's file: its AOTInductor package where this CPU runs it, else its TorchScript twin. */
export const DEFAULT_MODEL_PATH: string;
