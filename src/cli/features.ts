// sae features: what a finished run's latents respond to (docs/features.md). Loads the run as
// `sae eval` does (config, final weights, held-out data), makes one inference pass, and writes
// features.html + features.json to --out, or prints one latent's contexts (--latent N).
import { Command } from "commander";
import YAML from "yaml";
import fs from "node:fs";
import path from "node:path";
import { loadConfig } from "../config/load.ts";
import type { Config } from "../config/schema.ts";
import { selectEngine } from "../engine/index.ts";
import { readEvalFile, writeEval, writeFileAtomic } from "../io/run.ts";
import { acquireRunLock } from "../io/lock.ts";
import { finalConfig, loadFinal } from "../sae/weights.ts";
import { readSafetensors } from "../io/safetensors.ts";
import { createModel } from "../sae/index.ts";
import { createSource, probeData } from "../data/index.ts";
import { recordedSource } from "../data/store.ts";
import { StreamSource } from "../data/stream.ts";
import { mnistLabel } from "../data/mnist.ts";
import type { GroundTruth } from "../data/source.ts";
import { BOS, loadLlama, type LlamaModel } from "../lm/llama.ts";
import { Tokenizer } from "../lm/tokenizer.ts";
import { buildFeatures, DEFAULT_DETAIL, SORT_STATS, type DataKind, type ExampleOut, type FeatureDocument, type FeatureSummary, type LatentPage, type Selection, type SortStat, type TokenContext } from "../eval/features.ts";
import { renderFeaturesHtml, num } from "../report/features-html.ts";
import { SaeError } from "../errors.ts";
import type { CliIo } from "./io.ts";
import { nonNegativeInt, pickRun, positiveInt, runArgHelp } from "./common.ts";

interface Opts {
  runsDir: string; out?: string; latent?: number; latents?: string; top?: number; random?: number; sort: string;
  tokens?: number; examples: number; model?: string; tokenizer?: string; seed?: number; threads?: number;
}

export function featuresCommand(io: CliIo): Command {
  return new Command("features")
    .description("what a finished run's latents respond to: features.html + features.json (top-activating examples, quantile examples, histograms, promoted tokens / decoder images / ground truth), summary statistics into eval.json")
    .argument("[run]", runArgHelp("finished"))
    .option("--out <dir>", "write features.html and features.json here")
    .option("--latent <id>", "print one latent in the terminal: its statistics and top contexts, the active token marked", nonNegativeInt)
    .option("--latents <ids>", "pages for these latents, e.g. 3,17,42")
    .option("--top <n>", "pages for the n latents with the largest --sort statistic", positiveInt)
    .option("--random <n>", "pages for n latents drawn at random among those that fire (the default, n = 50)", positiveInt)
    .option("--sort <stat>", `the index's order and --top's statistic: ${SORT_STATS.join(", ")} (cosine: synthetic data)`, "firing_rate")
    .option("--tokens <n>", "held-out tokens in the pass (default: the run's data.eval_tokens)", positiveInt)
    .option("--examples <n>", "top-activating examples per latent", positiveInt, DEFAULT_DETAIL.topExamples)
    .option("--model <checkpoint>", "the llama2.c model the run's data came from, when it has moved (default: the run's data.model.checkpoint or its manifest's source)")
    .option("--tokenizer <file>", "llama2.c tokenizer for the token texts (default: the run's data.model.tokenizer; token ids when there is none)")
    .option("--seed <n>", "seed of the random choices (latents, quantile examples); default: the run's seed", nonNegativeInt)
    .option("--runs-dir <dir>", "folder that holds runs", "runs")
    .option("--threads <n>", "CPU threads (default: all cores)", positiveInt)
    .addHelpText("after", `
Open DIR/features.html in a browser (it needs no network); DIR/features.json has every number
(docs/features.md). The summary also goes into the run's eval.json under "features".

Examples:
  sae features --out features/latest              # the latest finished run
  sae features 20261125-aidreams --out features/aidreams
  sae features 20261125-mnist --out features/mnist --top 40 --sort max_activation
  sae features 20261125-aidreams --latent 17`)
    .action((arg: string | undefined, opts: Opts) => {
      const selection = parseSelection(opts);
      if (!(SORT_STATS as readonly string[]).includes(opts.sort)) throw new SaeError("usage", `--sort ${opts.sort}: expected one of ${SORT_STATS.join(", ")}`);
      if (opts.latent === undefined && !opts.out) throw new SaeError("usage", "say where the pages go (--out DIR) or which latent to print (--latent N)", "e.g. sae features RUN --out features/RUN");
      const dir = pickRun(io, opts.runsDir, arg, "finished");
      const config = runConfig(dir, opts.model);
      const H = config.sae.d_sae;
      for (const i of opts.latent !== undefined ? [opts.latent] : selection.kind === "latents" ? selection.ids : []) {
        if (i >= H) throw new SaeError("usage", `latent ${i} does not exist: run ${path.basename(dir)} has d_sae = ${H} latents (0..${H - 1})`, `pick ids in 0..${H - 1}`);
      }
      const lmInfo = languageModel(config, opts);
      const engine = selectEngine(opts.threads ?? config.train.threads);
      const model = createModel(config);
      const p = loadFinal(dir, model);
      const data = createSource(config, engine.engine);
      const X = data.evalSet(opts.tokens ?? config.data.eval_tokens);
      const D = config.data.d_in, N = X.length / D;
      io.err(`features of ${path.basename(dir)} (${config.sae.variant}, D=${D}, H=${H}) over ${N} held-out tokens; ${engine.reason}`);

      const context = config.data.source === "model" || config.data.source === "file" ? tokenContext(config, data, N) : null;
      const kind: DataKind = lmInfo.lm || context ? "language_model" : lmInfo.kind;
      if (opts.tokenizer && !lmInfo.lm && !context) throw new SaeError("usage", `--tokenizer: run ${path.basename(dir)} has no language model and no token ids (its data is ${config.data.source}), so there is nothing to decode`, "leave out --tokenizer");
      const tok = lmInfo.tokenizer;
      const decode = tok ? (t: number, prev: number) => (t === BOS ? "<s>" : tok.piece(t, prev).toString("utf8")) : null;
      const trainRows = data instanceof StreamSource ? data.trainRows : 0;
      const built = buildFeatures({
        e: engine.engine, model, params: p, X, N, run: path.basename(dir), variant: config.sae.variant,
        data: {
          kind, describe: data.describe(),
          ...(lmInfo.lm ? { model: lmInfo.lm.file, layer: lmInfo.layer, site: lmInfo.site, tokenizer: lmInfo.tokenizerFile ?? null } : {}),
        },
        lm: kind === "language_model" ? { model: lmInfo.lm, decode, context } : undefined,
        truth: kind === "synthetic" ? groundTruth(dir, data.groundTruth(), D) : null,
        label: kind === "mnist" ? (r) => mnistLabel(trainRows + r) : undefined,
        selection: opts.latent !== undefined ? { kind: "latents", ids: [opts.latent] } : selection,
        sort: opts.sort as SortStat,
        detail: { ...DEFAULT_DETAIL, topExamples: opts.examples, seed: opts.seed ?? config.seed },
      });
      const doc = built.doc;
      if (opts.latent !== undefined) {
        printLatent(io, doc, doc.latents[0]);
        return;
      }
      const out = opts.out!;
      fs.mkdirSync(out, { recursive: true });
      const Wdec = p.get("W_dec");
      const images = kind === "mnist" ? { side: 28, decoderRow: (i: number) => Wdec.subarray(i * D, (i + 1) * D), inputRow: (r: number) => X.subarray(r * D, (r + 1) * D) } : null;
      writeFileAtomic(path.join(out, "features.json"), JSON.stringify(doc) + "\n");
      writeFileAtomic(path.join(out, "features.html"), renderFeaturesHtml(doc, images));
      // the summary joins the run's evaluation; everything else in eval.json stays as it was
      // (read and written under the run's lock, so that no other writer's change is lost)
      const lock = acquireRunLock(dir, "features", (l) => io.err(l), { readOnlyOk: true });
      try {
        writeEval(dir, { ...(readEvalFile(dir) ?? {}), features: doc.summary });
      } finally {
        lock.release();
      }
      printSummary(io, doc.summary);
      io.out(`wrote ${path.join(out, "features.html")} and features.json: ${doc.latents.length} latent pages (${doc.options.selection}), index of ${H} sorted by ${doc.options.sort}`);
    });
}

/**
 * The run's config; --model replaces data.model.checkpoint (a model that has moved), and a
 * checkpoint that cannot be read says that --model is the way out.
 */
function runConfig(dir: string, model: string | undefined): Config {
  const file = path.join(dir, "config.yaml");
  const source = (YAML.parse(fs.readFileSync(file, "utf8")) as { data?: { source?: string } } | null)?.data?.source;
  const sets = model && source === "model" ? [`data.model.checkpoint=${path.resolve(model)}`] : [];
  try {
    return finalConfig(dir, loadConfig(file, sets, { probe: probeData }).config);
  } catch (err) {
    if (err instanceof SaeError && !model && /data\.model\.checkpoint: cannot read/.test(err.message)) {
      throw new SaeError("usage", err.message, "pass --model CKPT with the llama2.c checkpoint the run's activations came from");
    }
    throw err;
  }
}

function parseSelection(o: Opts): Selection {
  const given = [o.latents !== undefined && "--latents", o.top !== undefined && "--top", o.random !== undefined && "--random"].filter(Boolean);
  if (given.length > 1) throw new SaeError("usage", `${given.join(" and ")} both choose latents; give one`);
  if (o.latents !== undefined) {
    const parts = o.latents.split(",").map((s) => s.trim());
    const ids = parts.map(Number);
    const bad = parts.find((s, k) => s === "" || !Number.isInteger(ids[k]) || ids[k] < 0);
    if (bad !== undefined) throw new SaeError("usage", `--latents ${o.latents}: "${bad}" is not a latent id`, "give ids >= 0 separated by commas, e.g. --latents 3,17,42");
    return { kind: "latents", ids: [...new Set(ids)] };
  }
  if (o.top !== undefined) return { kind: "top", n: o.top };
  return { kind: "random", n: o.random ?? 50 };
}

/**
 * The language model behind the run's data (data.model, or the source a harvested folder's
 * manifest records; --model overrides) and its tokenizer. Files that cannot be read are usage
 * errors: the run needs them, and the flags say where they are now.
 */
function languageModel(c: Config, o: Opts): { kind: DataKind; lm: LlamaModel | null; layer?: number; site?: string; tokenizer: Tokenizer | null; tokenizerFile?: string } {
  const d = c.data;
  if (d.source === "synthetic" || d.source === "mnist") {
    if (o.model) throw new SaeError("usage", `--model: the run's data is ${d.source}, not a language model's activations`, "leave out --model");
    if (o.tokenizer) throw new SaeError("usage", `--tokenizer: the run's data is ${d.source}; it has no tokens to decode`, "leave out --tokenizer");
    return { kind: d.source, lm: null, tokenizer: null };
  }
  const recorded = d.source === "model" ? d.model! : recordedSource(d.file!.path);
  const checkpoint = o.model ? path.resolve(o.model) : recorded?.checkpoint;
  const tokenizerFile = o.tokenizer ? path.resolve(o.tokenizer) : d.model?.tokenizer;
  let lm: LlamaModel | null = null;
  if (checkpoint) {
    try {
      lm = loadLlama(checkpoint);
    } catch (err) {
      if (!(err instanceof SaeError)) throw err;
      const whose = o.model ? "--model" : d.source === "model" ? "the run's data.model.checkpoint" : `the model recorded in ${d.file!.path}'s manifest`;
      throw new SaeError("usage", `${whose}: ${err.message}`, "pass --model CKPT with the llama2.c checkpoint the run's activations came from");
    }
    if (lm.config.dim !== d.d_in) throw new SaeError("usage", `${checkpoint} has width ${lm.config.dim}, the SAE takes D = ${d.d_in}`, "pass --model with the checkpoint the run was trained on");
  }
  let tokenizer: Tokenizer | null = null;
  if (tokenizerFile) {
    try {
      tokenizer = new Tokenizer(tokenizerFile, lm?.config.vocab);
    } catch (err) {
      if (!(err instanceof SaeError)) throw err;
      throw new SaeError("usage", `${o.tokenizer ? "--tokenizer" : "the run's data.model.tokenizer"}: ${err.message}`, "pass --tokenizer FILE with the model's llama2.c tokenizer");
    }
  }
  const site = d.source === "model" ? d.model!.site : recorded?.site;
  const layer = d.source === "model" ? d.model!.layer : recorded?.layer;
  // "activations" until the held-out token ids are known too (the caller decides)
  return { kind: lm ? "language_model" : "activations", lm, layer, site, tokenizer, tokenizerFile };
}

/** the held-out sequences' token ids, when the data knows them (model data, or a manifest with tokens) */
function tokenContext(c: Config, data: ReturnType<typeof createSource>, N: number): TokenContext | null {
  // N rows never span more than N sequences; the source stops at the end of the held-out split
  const seqs = data.evalSequences?.(N) ?? null;
  if (!seqs) return null;
  let skip = c.data.skip_positions;
  if (skip === undefined) {
    // as the data source decides it: one position skipped when every sequence starts with BOS
    skip = 1;
    for (let s = 0; s < seqs.count; s++) if (seqs.ids[s * seqs.P] !== BOS) skip = 0;
  }
  return { ids: seqs.ids, count: seqs.count, P: seqs.P, skip };
}

/** ground_truth.safetensors of the run (what it trained against), else the source's own */
function groundTruth(dir: string, fallback: GroundTruth | null, D: number): GroundTruth | null {
  const file = path.join(dir, "ground_truth.safetensors");
  if (!fs.existsSync(file)) return fallback;
  const t = readSafetensors(file).tensors.features;
  if (!t || t.shape.length !== 2 || t.shape[1] !== D) throw new SaeError("data", `${file}: expected a tensor "features" [G, ${D}]`, "the file is damaged; sae features falls back to the config's synthetic data when it is removed");
  return { features: Float32Array.from(t.data), G: t.shape[0] };
}

export function printSummary(io: CliIo, s: FeatureSummary): void {
  const m = s.max_activation;
  const p = (v: number) => `${(100 * v).toFixed(2)}%`;
  io.out(`features over ${s.tokens} tokens, ${s.latents} latents:`);
  io.out(`  dead                     ${p(s.dead_frac)}`);
  io.out(`  firing on > 10% tokens   ${p(s.frac_firing_gt_10pct)}`);
  io.out(`  firing on > 1% tokens    ${p(s.frac_firing_gt_1pct)}`);
  io.out(`  max activation           min ${num(m.min)}, p10 ${num(m.p10)}, median ${num(m.p50)}, p90 ${num(m.p90)}, max ${num(m.max)}`);
  io.out(`  max activation per decade ${Object.entries(m.per_decade).map(([k, n]) => `${k} ${n}`).join(", ")}`);
  if (s.ground_truth) {
    io.out(`  one true feature (> 0.9) ${p(s.ground_truth.frac_matched_0_9)}`);
    io.out(`  mixtures of two          ${p(s.ground_truth.frac_mixture)}`);
  }
}

/** one example as a line: activation, then the context with the active token in ⟦ ⟧ */
function exampleText(x: ExampleOut): string {
  const v = num(x.activation).padStart(9);
  if (x.context) {
    const c = x.context;
    const parts = c.tokens.map((t, k) => {
      const s = (c.text ? c.text[k] : `#${t} `).replace(/\n/g, "↵");
      return k === c.target ? `⟦${s}⟧` : s;
    });
    return `${v}  ${parts.join("")}`;
  }
  return `${v}  row ${x.row}${x.label !== undefined ? `, digit ${x.label}` : ""}`;
}

function printLatent(io: CliIo, doc: FeatureDocument, p: LatentPage): void {
  io.out(`latent ${p.id} of ${doc.run}: fires on ${(100 * p.firing_rate).toFixed(3)}% of ${doc.summary.tokens} tokens, mean activation ${num(p.mean_activation)}, max ${num(p.max_activation)}`);
  if (p.fires === 0) {
    io.out("  it never fires on these tokens (dead here); more --tokens may find some");
    return;
  }
  const tok = (t: { token: number; text?: string; value: number }) => `${JSON.stringify(t.text ?? `#${t.token}`)} ${num(t.value)}`;
  if (p.logits) {
    io.out(`  promotes:   ${p.logits.promoted.map(tok).join(", ")}`);
    io.out(`  suppresses: ${p.logits.suppressed.map(tok).join(", ")}`);
  }
  if (p.ground_truth) {
    const g = p.ground_truth;
    io.out(`  ground truth: feature ${g.feature} at cosine ${num(g.cosine)} (second: ${g.second} at ${num(g.second_cosine)}; the two together ${num(g.span_cosine)}): ${g.kind}`);
  }
  if (p.top[0]?.label !== undefined) {
    const counts = new Map<number, number>();
    for (const x of p.top) counts.set(x.label!, (counts.get(x.label!) ?? 0) + 1);
    io.out(`  digits among the top ${p.top.length}: ${[...counts].sort((a, b) => b[1] - a[1]).map(([d, n]) => `${d}×${n}`).join(", ")}`);
  }
  io.out(`top ${p.top.length} activations${p.top[0]?.context ? " (the active token in ⟦ ⟧)" : ""}:`);
  for (const x of p.top) io.out(exampleText(x));
  for (const q of p.quantiles) {
    io.out(`quantile ${Math.round(100 * q.q_lo)}–${Math.round(100 * q.q_hi)}% (${q.count} tokens, activations ${num(q.lo)}–${num(q.hi)}):`);
    for (const x of q.examples) io.out(exampleText(x));
  }
}
