import path from "node:path";
import type { Config, RawConfig } from "../config/schema.ts";
import type { Engine } from "../engine/types.ts";
import type { DataSource, EvalSequences } from "./source.ts";
import { SyntheticSource } from "./synthetic.ts";
import { StreamSource } from "./stream.ts";
import { SkipStore, manifestPath, openManifest, openNpy, openSafetensors, readManifest, type RowStore } from "./store.ts";
import { mnistStore, MNIST_D } from "./mnist.ts";
import { llamaHeader, loadLlama, type LlamaModel } from "../lm/llama.ts";
import { allStartWithBos, HarvestStore, readTokens, sequenceLength, type HarvestSpec } from "../lm/harvest.ts";
import { SaeError } from "../errors.ts";

type DataConfig = RawConfig["data"];

export function createSource(c: Config, e?: Engine): DataSource {
  const d = c.data;
  if (d.source === "synthetic") return new SyntheticSource(d.synthetic, d.d_in, c.seed);
  const opts = { seed: c.seed, evalTokens: d.eval_tokens, bufferBytes: d.shuffle_buffer_mb * 2 ** 20 };
  if (d.source === "mnist") return new StreamSource(mnistStore(), opts);
  if (d.source === "file") {
    const store = withSkip(openFileStore(d.file!), d.skip_positions);
    return new StreamSource(store, { ...opts, evalSequences: manifestTokens(d.file!.path) ?? undefined });
  }
  if (!e) throw new Error("createSource: the model source needs an engine");
  const spec = harvestSpec(c, loadLlama(d.model!.checkpoint), e);
  const store = new HarvestStore(spec, datasetSequences(c, spec));
  return new StreamSource(withSkip(store, d.skip_positions), { ...opts, evalSequences: (first, count) => store.sequenceTokens(first, count) });
}

/** sequences in a model-harvested dataset: data.model.sequences, else all of a token file, else 1024 */
export function datasetSequences(c: Config, spec: HarvestSpec): number {
  return c.data.model!.sequences ?? (spec.tokens ? spec.tokens.count : 1024);
}

export function harvestSpec(c: Config, model: LlamaModel, e: Engine): HarvestSpec {
  const m = c.data.model!;
  const P = sequenceLength(m.context_size, model.config.seqLen, m.tokens);
  return { model, engine: e, layer: m.layer, site: m.site, P, seed: c.seed, temperature: m.temperature, tokens: m.tokens ? readTokens(m.tokens, P, model.config.vocab) : null };
}

/** Drops leading positions of each sequence: `skip` when given, else 1 when sequences start with BOS. */
function withSkip(store: RowStore, skip: number | undefined): RowStore {
  const n = skip ?? (store.startsWithBos ? 1 : 0);
  if (n === 0) return store;
  if (store.seqLen === null) throw new SaeError("config", `data.skip_positions = ${n}, but ${store.describe()} is not made of sequences`, "remove data.skip_positions (it needs 3-D data or a manifest with seq_len)");
  if (n >= store.seqLen) throw new SaeError("config", `data.skip_positions = ${n} drops every position of sequences of ${store.seqLen}`, `use fewer than ${store.seqLen}`);
  return new SkipStore(store, n);
}

/**
 * How training treated the start of the data's token sequences: whether they start with BOS, and
 * how many leading positions it dropped (as withSkip does). Never drops tokens by id. null for
 * data that is not made of sequences (synthetic, mnist, flat activation files).
 */
export function sequenceStart(c: Config): { startsWithBos: boolean; skip: number } | null {
  const d = c.data;
  let bos: boolean;
  if (d.source === "model") {
    const m = d.model!;
    if (!m.tokens) bos = true; // sampled from BOS
    else {
      const cfg = llamaHeader(m.checkpoint).config;
      bos = allStartWithBos(readTokens(m.tokens, sequenceLength(m.context_size, cfg.seqLen, m.tokens), cfg.vocab));
    }
  } else if (d.source === "file") {
    const store = openFileStore(d.file!);
    store.close?.();
    if (store.seqLen === null) return null;
    bos = store.startsWithBos;
  } else return null;
  return { startsWithBos: bos, skip: d.skip_positions ?? (bos ? 1 : 0) };
}

export function openFileStore(f: NonNullable<DataConfig["file"]>): RowStore {
  const p = f.path;
  const manifest = manifestPath(p);
  if (manifest) return openManifest(manifest);
  if (p.endsWith(".npy")) return openNpy(p, f.dtype);
  if (p.endsWith(".safetensors")) {
    if (f.dtype !== "auto") throw new SaeError("config", `data.file.dtype applies to .npy files; ${p} states its own dtype`, "remove data.file.dtype");
    return openSafetensors(p, f.tensor);
  }
  throw new SaeError("config", `data.file.path ${p}: expected a .npy or .safetensors file, or a folder with manifest.json`, "see the README (Activation files)");
}

/** For a sharded folder whose manifest names its token ids: a reader of sequences [first, first + count). */
function manifestTokens(p: string): ((first: number, count: number) => EvalSequences) | null {
  const file = manifestPath(p);
  if (!file) return null;
  const m = readManifest(file);
  if (!m.tokens || !m.seq_len) return null;
  const P = m.seq_len, tokens = path.resolve(path.dirname(file), m.tokens);
  return (first, count) => {
    const t = readTokens(tokens, P, Number.MAX_SAFE_INTEGER);
    return { ids: t.ids.slice(first * P, (first + count) * P), count, P };
  };
}

/**
 * The data's width D, read from the files' headers or the model (null for synthetic data), with
 * errors that name the config key. `where(keyPath)` gives "file:line:col: " for a key.
 */
export function probeData(d: DataConfig, where: (p: string[]) => string): number | null {
  const fail = (keyPath: string[], msg: string, hint?: string): never => {
    throw new SaeError("config", `${where(keyPath)}${keyPath.join(".")}: ${msg}`, hint);
  };
  const wrap = <T>(keyPath: string[], fn: () => T): T => {
    try {
      return fn();
    } catch (err) {
      // found while checking the config: a config error (exit 2), located at the key
      if (err instanceof SaeError) throw new SaeError("config", `${where(keyPath)}${keyPath.join(".")}: ${err.message}`, err.hint);
      throw err;
    }
  };
  let D: number | null = null;
  if (d.source === "mnist") D = MNIST_D;
  if (d.source === "file") {
    if (!d.file) fail(["data", "source"], "source is file, but data.file is missing", "add data.file.path: the .npy, .safetensors or sharded folder");
    const store = wrap(["data", "file", "path"], () => openFileStore(d.file!));
    D = store.D;
    const skipped = wrap(["data", "skip_positions"], () => withSkip(store, d.skip_positions));
    // the held-out rows are read now (a NaN there would surface only after training, as FVU NaN);
    // training rows are checked as the shuffle buffer reads them
    wrap(["data", "file", "path"], () => new StreamSource(skipped, { seed: 0, evalTokens: d.eval_tokens, bufferBytes: d.shuffle_buffer_mb * 2 ** 20 }).evalSet(d.eval_tokens));
    store.close?.();
  }
  if (d.source === "model") {
    if (!d.model) fail(["data", "source"], "source is model, but data.model is missing", "add data.model.checkpoint and data.model.layer");
    const m = d.model!;
    const cfg = wrap(["data", "model", "checkpoint"], () => llamaHeader(m.checkpoint)).config;
    if (m.layer >= cfg.layers) fail(["data", "model", "layer"], `layer ${m.layer} does not exist; ${path.basename(m.checkpoint)} has layers 0..${cfg.layers - 1}`, `use a layer in 0..${cfg.layers - 1}`);
    if (m.context_size !== undefined && m.context_size > cfg.seqLen) fail(["data", "model", "context_size"], `${m.context_size} exceeds the model's context length ${cfg.seqLen}`, `use at most ${cfg.seqLen}`);
    if (m.tokens) wrap(["data", "model", "tokens"], () => readTokens(m.tokens!, sequenceLength(m.context_size, cfg.seqLen, m.tokens), cfg.vocab));
    D = cfg.dim;
  }
  if (D !== null && d.d_in !== undefined && d.d_in !== D) fail(["data", "d_in"], `${d.d_in} does not match the data, whose rows have ${D} values`, "remove data.d_in (it is read from the data) or fix it");
  return D;
}

/**
 * The input scaling factor c (the SAE trains on c·x), estimated once from a sample
 * (docs/variants.md#input-normalisation): unit_mean_squared_norm → c = 1/√E‖x‖² (so E‖cx‖² = 1);
 * sqrt_d_mean_norm → c = √D/E‖x‖; none → 1.
 */
export function estimateScale(X: Float32Array, N: number, D: number, mode: Config["data"]["normalize"]): number {
  if (mode === "none") return 1;
  let sq = 0, norm = 0;
  for (let n = 0; n < N; n++) {
    let s = 0;
    for (let d = 0; d < D; d++) s += X[n * D + d] ** 2;
    sq += s;
    norm += Math.sqrt(s);
  }
  if (sq === 0) return 1;
  return mode === "unit_mean_squared_norm" ? 1 / Math.sqrt(sq / N) : Math.sqrt(D) / (norm / N);
}

export function scaleInPlace(X: Float32Array, c: number): void {
  if (c !== 1) for (let i = 0; i < X.length; i++) X[i] *= c;
}
