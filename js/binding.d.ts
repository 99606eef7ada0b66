// The raw native binding (build/Release/choripan.node), typed apart from the public API, and checked
// against its use: the JS files that call it have `// @ts-check`, and `npm test`'s tsc stage compiles them
// (tests/types/tsconfig.json). js/ checks what only JS has (buffers, AbortSignals, trustedKeys); the native
// core reads and checks load()'s options.

/**
 * load()'s options as the caller gave them, less those js/ reads itself (trustedKeys, signature): the core
 * checks their names, types and ranges (native/core/vocabulary.json) and fills in the rest.
 */
export type NativeOptions = Omit<import('./index').LoadOptions, 'trustedKeys' | 'signature'>;

/** One answer, and where its time went (the core's Outcome). */
export interface NativeAnswer {
  probabilities: Float32Array;
  /** Submission to the start of its batch, preprocessing included. */
  queueMs: number;
  forwardMs: number;
  batchSize: number;
  /** A JPEG the core decoded (within queueMs): submission to the start of its decoding, and how long that took. */
  decodeStartMs?: number;
  decodeMs?: number;
}

/** What NativeModel.reserve() admits: `count` inputs, `bytes` of decoded pixels between them at most. */
export interface NativeReservation {
  count: number;
  bytes: number;
  /** What is left of the call's timeoutMs; absent: no deadline. A request still queued when it passes never runs. */
  timeoutMs?: number | undefined;
}

/** One input as the core takes it. */
export type NativeInput =
  /** A JPEG for the core to decode (one that js/decode.js `inCore` picks), with its frame's size as the header says. */
  | { jpeg: Uint8Array; width: number; height: number }
  /** Decoded pixels, height × width × channels bytes, row-major; `cmyk`: a JPEG's CMYK samples (4 channels), converted to RGB by the core. */
  | { pixels: Uint8Array; width: number; height: number; channels: number; cmyk?: boolean }
  /** One preprocessed image: float32 [3, crop, crop]. */
  | { tensor: Float32Array };

/**
 * The places one call reserved in the model's queue (the core's Reservation). Each input goes through
 * submit(); the call ends with release(), or cancel() when it gives up. Collected without either, it
 * releases itself.
 */
export interface NativeRequest {
  /**
   * Queues one input in one of the places; the place ends here, whatever the answer. The promise rejects
   * at once when the core refuses it (E_DISPOSED, E_ABORTED after cancel(), E_INVALID_ARGUMENT for an input
   * it cannot take); a malformed input or one with no place left throws E_INVALID_ARGUMENT.
   */
  submit(input: NativeInput): Promise<NativeAnswer>;
  /** Gives back the places not used; what was submitted still runs. */
  release(): void;
  /**
   * release(), and withdraws what was submitted and has not reached a worker (its promise rejects with
   * E_ABORTED); later submit() calls are refused. False when nothing was left to withdraw.
   */
  cancel(): boolean;
}

export interface NativeModel {
  /** The artifact's metadata document, as stored (JSON text). */
  readonly metadata: string;
  readonly disposed: boolean;
  readonly loneBatch: import('./index').LoneBatch | null;
  /**
   * Reserves places for `count` inputs that js/ is about to decode, `bytes` of pixels between them: a
   * worker holding a batch open waits for them. They are admitted together or refused together:
   * E_QUEUE_FULL when maxQueue calls already wait (reserved places included) or the bytes would not fit in
   * maxPendingBytes, E_TOO_LARGE when they never could (more than maxQueue of them, or several over
   * maxPendingBytes), E_DISPOSED after dispose().
   */
  reserve(reservation: NativeReservation): NativeRequest;
  stats(): import('./index').ModelStats;
  /** Queued requests reject with E_DISPOSED; resolves once the worker threads have exited. */
  dispose(): Promise<void>;
}

export interface NativeBinding {
  /**
   * Hands over what builds every error the binding raises (js/errors.js codedError(): a ChoripanError,
   * or a bad call's TypeError or RangeError as the core's Misuse says), and how a message shows a
   * refused JS value (js/validate.js received(): "2.5 of type number").
   */
  init(helpers: {
    codedError: (code: import('./index').ErrorCode, message: string, kind?: 'type' | 'range') => Error;
    received: (value: unknown) => string;
  }): void;
  /** Throws E_INVALID_ARGUMENT for options that load() would refuse (a name, a type or a range), in the core's words. */
  checkOptions(options: NativeOptions): void;
  /** Throws as checkOptions() does; then reads and warms the artifact on the libuv pool. */
  load(path: string, options: NativeOptions): Promise<NativeModel>;
  /** Stops every live model of this thread, waiting for running batches: for process exit. */
  disposeAll(): void;
  cudaAvailable(): boolean;
  /** The cores this process may use: its affinity and its cgroup's CPU quota (what `workers: 0` means). */
  availableCores(): number;
  /** Whether a package compiled for these vector instructions (AOTI_CPU_ISA: "AVX2", "AVX512 AVX512_VNNI") runs here. */
  cpuSupports(isa: string): boolean;
  readonly versions: { libtorch: string };
}

export function native(): NativeBinding;
/** Where the addon and the default models are: a local build, or the platform package (`from`). */
export function addonLocation(): { addon: string; models: string; from: string };
/** This machine as npm's os, cpu and libc fields name it: "linux-x64-gnu". */
export function platformName(): string;
export function platformPackage(platform?: string): string;
export const PREBUILT: string[];
export const LOCAL_ADDON: string;
