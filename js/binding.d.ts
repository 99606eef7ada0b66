// The raw native binding (build/Release/choripan.node), typed apart from the public API. js/ validates
// every argument before it gets here; the binding trusts them.

export interface NativeOptions {
  maxBatch: number;
  maxDelayMs: number;
  maxQueue: number;
  workers: number;
  intraOpThreads: number;
  device: 'cpu' | 'cuda';
  warmup: boolean;
}

export interface NativeModel {
  /** The artifact's metadata document, as stored (JSON text). */
  readonly metadata: string;
  readonly disposed: boolean;
  /**
   * Queues decoded pixels (height × width × channels bytes, row-major). `id` is null when the call was
   * refused at once (the promise is then already rejected). `timeoutMs` 0 means no deadline.
   * `announced`: this call was counted by announce(), and this ends that announcement.
   */
  predict(
    pixels: Uint8Array,
    width: number,
    height: number,
    channels: number,
    timeoutMs: number,
    announced: boolean,
  ): { id: number | null; promise: Promise<Float32Array> };
  /** One more call is on its way (decoding): a worker holding a batch open waits for it. */
  announce(): void;
  /** An announced call will not come after all. */
  retract(): void;
  /** Withdraws a queued request (its promise rejects with E_ABORTED); false once it runs or ran. */
  cancel(id: number): boolean;
  stats(): import('./index').ModelStats;
  /** Queued requests reject with E_DISPOSED; resolves once the worker threads have exited. */
  dispose(): Promise<void>;
  /** The same, blocking until a running batch ends: for process exit only. */
  disposeSync(): void;
}

export interface NativeBinding {
  load(path: string, options: NativeOptions): Promise<NativeModel>;
  cudaAvailable(): boolean;
  readonly versions: { libtorch: string };
  /** Limits the native core enforces, for js/ to check before decoding. */
  readonly limits: { maxAspectRatio: number };
}

export function native(): NativeBinding;
export const ADDON: string;
