// The raw native binding (build/Release/choripan.node), typed apart from the public API. js/ checks
// types and names; the native core checks values.

/** load()'s options as the caller gave them (native/core/vocabulary.json); the core fills in the rest. */
export type NativeOptions = import('./index').LoadOptions;

/** One answer, and where its time went (the core's Outcome). */
export interface NativeAnswer {
  probabilities: Float32Array;
  /** Submission to the start of its batch, preprocessing included. */
  queueMs: number;
  forwardMs: number;
  batchSize: number;
}

export interface NativeModel {
  /** The artifact's metadata document, as stored (JSON text). */
  readonly metadata: string;
  readonly disposed: boolean;
  /**
   * Queues decoded pixels (height × width × channels bytes, row-major). `id` is null when the call was
   * refused at once (the promise is then already rejected). `timeoutMs` 0 means no deadline.
   * `announcedBytes`: this call was announced with that many bytes, and this ends the announcement.
   */
  predict(
    pixels: Uint8Array,
    width: number,
    height: number,
    channels: number,
    timeoutMs: number,
    announcedBytes: number | null,
    /** The pixels are a JPEG's CMYK samples (4 channels), converted to RGB by the core. */
    cmyk?: boolean,
  ): { id: number | null; promise: Promise<NativeAnswer> };
  /**
   * Queues a JPEG for the core to decode (one that js/decode.js `inCore` picks), with its frame's size
   * as the header says; otherwise as predict().
   */
  predictJpeg(
    bytes: Uint8Array,
    width: number,
    height: number,
    timeoutMs: number,
    announcedBytes: number | null,
  ): { id: number | null; promise: Promise<NativeAnswer> };
  /** Queues one preprocessed image: float32 [3, crop, crop]; otherwise as predict(). */
  predictTensor(input: Float32Array, timeoutMs: number, announcedBytes?: number | null): { id: number | null; promise: Promise<NativeAnswer> };
  /**
   * `count` (1) calls are decoding this many bytes of pixels between them: a worker holding a batch open
   * waits for them. They are admitted together or refused together: E_QUEUE_FULL when maxQueue calls
   * already wait (announced ones included) or the bytes would not fit in maxPendingBytes, E_TOO_LARGE when
   * they never could (more than maxQueue of them, or several over maxPendingBytes), E_DISPOSED after
   * dispose(). Each ends with predict…(…, its bytes) or retract(its bytes).
   */
  announce(bytes: number, count?: number): void;
  /** An announced call will not come after all. */
  retract(bytes: number): void;
  /** Withdraws a queued request (its promise rejects with E_ABORTED); false once it runs or ran. */
  cancel(id: number): boolean;
  stats(): import('./index').ModelStats;
  /** Queued requests reject with E_DISPOSED; resolves once the worker threads have exited. */
  dispose(): Promise<void>;
}

export interface NativeBinding {
  /** Hands over the class of every error the binding raises. */
  init(classes: { ChoripanError: typeof import('./index').ChoripanError }): void;
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
