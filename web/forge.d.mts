// Types of the browser runtime's API (web/forge.mjs, served at /ui/forge.mjs), for TypeScript pages:
//   import { install } from "./forge.mjs";  // this file beside it (/ui/forge.d.mts)
// Every answer says where it ran (`placement`) and why (`reason`), in `ms` measured in the page.

/** Where a request ran: an in-browser accelerator, or the host. */
export type Placement = 'browser-webgpu' | 'browser-wasm' | 'host';
/** Where a request may run: `auto` (the runtime decides), `browser` (either accelerator), or one place. */
export type PlacementOverride = 'auto' | 'browser' | Placement;

export interface Settings {
  /** The host's URL (default: where this module was loaded from, e.g. `http://127.0.0.1:11434`). */
  host?: string;
  /** The host's API key (servers started with api_keys). */
  api_key?: string;
  /** Models to fetch (cache first) and verify while Pyodide boots. */
  preload?: string[];
  /** Browser first (default), the fastest measured place, or always the host. */
  prefer?: 'browser' | 'fastest' | 'host';
  /** Memory in-browser models may take, in bytes (0: from navigator.deviceMemory). */
  budget_bytes?: number;
  /** wasm threads for in-browser generation (0: as many as the page may use). */
  threads?: number;
}

/** The settings in force after `configure` (the key itself is not returned). */
export interface Configured {
  prefer: 'browser' | 'fastest' | 'host';
  api_key: boolean;
  budget_bytes: number;
  threads: number;
}

export interface Accelerator {
  name: Exclude<Placement, 'host'>;
  /** Measured by the probe (0: not measured, or failed). */
  gflops: number;
  /** A software WebGPU adapter (SwiftShader): correct, very slow. */
  software: boolean;
  features: string[];
  max_buffer: number;
  threads: number;
  error?: string;
}

export interface Capabilities {
  accelerators: Accelerator[];
  /** Usable accelerators, fastest first. */
  ranking: Array<Exclude<Placement, 'host'>>;
  device_memory_gb: number;
  /** crossOriginIsolated: wasm threads are possible. */
  isolated: boolean;
  cores: number;
  memory_budget: number;
}

/** What every answer carries besides its own fields. */
export interface Placed {
  placement: Placement;
  reason: string;
  ms: number;
  /** Why the page's own engine failed, when the host answered instead. */
  fallback?: string;
}

export interface Options {
  temperature?: number;
  top_k?: number;
  top_p?: number;
  min_p?: number;
  repeat_penalty?: number;
  seed?: number;
  stop?: string | string[];
  num_predict?: number;
  num_ctx?: number;
  [option: string]: unknown;
}

export interface EmbedRequest {
  model: string;
  input: string | string[];
  truncate?: boolean;
  dimensions?: number;
  placement?: PlacementOverride;
}
export interface EmbedResult extends Placed {
  model: string;
  /** Unit-length vectors, one per input. */
  embeddings: number[][];
  prompt_eval_count: number;
}

export interface RerankRequest {
  model: string;
  query: string;
  documents: Array<string | { text: string }>;
  top_n?: number;
  return_documents?: boolean;
  placement?: PlacementOverride;
}
export interface RerankResult extends Placed {
  model: string;
  results: Array<{ index: number; relevance_score: number; document?: { text: string } }>;
}

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant' | 'tool';
  content: string;
  images?: string[];
  thinking?: string;
  tool_calls?: Array<{ function: { name: string; arguments: Record<string, unknown> } }>;
  tool_name?: string;
}

interface GenerationFields {
  model: string;
  options?: Options;
  format?: 'json' | Record<string, unknown>;
  /** Each generated token's log-probability (and the `top_logprobs` likeliest): on the host only. */
  logprobs?: boolean;
  top_logprobs?: number;
  keep_alive?: string | number;
  placement?: PlacementOverride;
  /** Each piece of text as it is made, wherever it runs. */
  onToken?: (piece: string) => void;
  /** Aborted, the generation stops and the call rejects with the signal's reason (an AbortError). */
  signal?: AbortSignal;
}
export interface GenerateRequest extends GenerationFields {
  prompt: string;
  system?: string;
  template?: string;
  raw?: boolean;
  suffix?: string;
  images?: string[];
}
export interface ChatRequest extends GenerationFields {
  messages: ChatMessage[];
  tools?: Array<{ type: 'function'; function: { name: string; description?: string; parameters?: object } }>;
  think?: boolean | 'low' | 'medium' | 'high';
}

interface GenerationResult extends Placed {
  model: string;
  done: true;
  done_reason: string;
  total_duration: number;
  load_duration: number;
  prompt_eval_count: number;
  prompt_eval_duration: number;
  eval_count: number;
  eval_duration: number;
  /** With `logprobs`: one entry a token, as Ollama's. */
  logprobs?: Array<{ token: string; logprob: number; bytes?: number[]; top_logprobs?: Array<{ token: string; logprob: number; bytes?: number[] }> }>;
}
export interface GenerateResult extends GenerationResult {
  response: string;
}
export interface ChatResult extends GenerationResult {
  message: ChatMessage;
}

export interface TranscribeRequest {
  model: string;
  /** A recording or an audio file (any format the browser decodes), or 16 kHz samples. */
  audio: Blob | ArrayBuffer | Float32Array;
  language?: string;
  task?: 'transcribe' | 'translate';
  placement?: PlacementOverride;
}
export interface TranscribeResult extends Placed {
  model: string;
  text: string;
  language: string | null;
  /** Seconds of audio. */
  duration: number | null;
  /** Seconds taken per second of audio. */
  rtf: number;
}

export interface SpeakRequest {
  model: string;
  input: string;
  voice?: string;
  speed?: number;
  placement?: PlacementOverride;
  /** Each sentence (in the page) or piece of the host's stream, as it is made. */
  onAudio?: (samples: Float32Array, sampleRate: number) => void;
}
export interface SpeakResult extends Placed {
  model: string;
  /** Samples at `sample_rate` (22.05 kHz in the page, 24 kHz from the host): `transcribe` takes a
   * Float32Array as 16 kHz samples, so pass it `wav` instead. */
  audio: Float32Array;
  sample_rate: number;
  /** The model's voice that spoke (an OpenAI name such as 'alloy' resolved to it). */
  voice: string;
  wav: Blob;
  /** Seconds of audio. */
  duration: number;
  /** Seconds of audio made per second. */
  audio_per_s: number;
  first_audio_ms: number;
}

export interface Forge {
  capabilities(options?: { refresh?: boolean }): Promise<Capabilities>;
  embed(request: EmbedRequest): Promise<EmbedResult>;
  rerank(request: RerankRequest): Promise<RerankResult>;
  generate(request: GenerateRequest): Promise<GenerateResult>;
  chat(request: ChatRequest): Promise<ChatResult>;
  transcribe(request: TranscribeRequest): Promise<TranscribeResult>;
  speak(request: SpeakRequest): Promise<SpeakResult>;
  cacheUsage(): Promise<CacheUsage>;
  /** Empties the page's model cache; answers the usage after. */
  clearCache(): Promise<CacheUsage>;
}

/** The page's model cache (Cache Storage) and this page's use of it. */
export interface CacheUsage {
  entries: number;
  usage: number;
  quota: number;
  downloads: number;
  hits: number;
  /** Why caching is off, when it is. */
  disabled?: string;
}

/** The runtime once booted (`boot`), with the Pyodide it runs on. */
export interface BootedForge extends Forge {
  configure(settings: Omit<Settings, 'preload'>): Configured;
  pyodide: unknown;
  bootMs: number;
}

/** `install`'s runtime: usable at once, every call waits for `ready`. */
export interface InstalledForge extends Forge {
  configure(settings: Omit<Settings, 'preload'>): Promise<Configured>;
  ready: Promise<BootedForge>;
  readonly bootMs: number | undefined;
  readonly pyodide: unknown;
}

/** An error answer: `status` 400 for a bad request (the host's 4xx too), 500 otherwise. */
export class ForgeError extends Error {
  constructor(message: string, status: number);
  status: number;
}

/** Boot Pyodide and the runtime, then answer calls (`install` is the usual way). */
export function boot(settings?: Settings): Promise<BootedForge>;
/** Start booting and return the runtime at once, also as `window.forge`. */
export function install(settings?: Settings): InstalledForge;

declare global {
  interface Window {
    forge: InstalledForge;
  }
}
