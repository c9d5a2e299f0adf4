import { Command } from "commander";
import fs from "node:fs";
import path from "node:path";
import { loadConfig } from "../config/load.ts";
import { selectEngine } from "../engine/index.ts";
import { datasetSequences, harvestSpec, probeData } from "../data/index.ts";
import { harvestToDisk, readTokens } from "../lm/harvest.ts";
import { loadLlama } from "../lm/llama.ts";
import { Tokenizer } from "../lm/tokenizer.ts";
import { SaeError } from "../errors.ts";
import type { CliIo } from "./io.ts";
import { collect, nonNegativeInt, positiveInt } from "./common.ts";
import { count } from "../text.ts";

export function harvestCommand(io: CliIo): Command {
  return new Command("harvest")
    .description("run a llama2.c model over token sequences and write one site's activations as .npy shards with manifest.json and tokens.npy")
    .argument("[config]", "a YAML experiment whose data.model section says what to harvest (the same sequences a run of it harvests on the fly)")
    .requiredOption("--out <dir>", "output folder (must not exist, or be empty)")
    .option("--model <checkpoint>", "llama2.c checkpoint (sets data.model.checkpoint)")
    .option("--layer <n>", "block index (sets data.model.layer)", nonNegativeInt)
    .option("--site <site>", "resid_pre, attn_out, mlp_out or resid_post (sets data.model.site)")
    .option("--sequences <n>", "sequences to harvest (sets data.model.sequences)", positiveInt)
    .option("--tokens <file>", "token ids to run instead of sampling (sets data.model.tokens)")
    .option("--tokenizer <file>", "llama2.c tokenizer, for --show (sets data.model.tokenizer)")
    .option("--seed <n>", "seed of the sampled sequences (sets seed)", nonNegativeInt)
    .option("--set <key=value>", "override a config key (repeatable)", collect, [])
    .option("--shard-mb <n>", "approximate shard size in MiB", positiveInt, 256)
    .option("--show <n>", "print the first n sequences as text (needs a tokenizer)", nonNegativeInt, 0)
    .option("--threads <n>", "CPU threads (default: all cores)", positiveInt)
    .addHelpText("after", `
Train on the result with data: {source: file, file: {path: DIR}}; with the same seed and sequences
it gives exactly the run that data.source: model gives.

Examples:
  sae harvest configs/aidreams.yaml --out acts/aidreams-l2
  sae harvest --model ../shared/models/aidreams260K.bin --layer 2 --site resid_pre --sequences 4096 --out acts/l2`)
    .action((file: string | undefined, opts: { out: string; model?: string; layer?: number; site?: string; sequences?: number; tokens?: string; tokenizer?: string; seed?: number; set: string[]; shardMb: number; show: number; threads?: number }) => {
      const sets = ["data.source=model"];
      const abs = (p: string) => path.resolve(p);
      if (opts.model) sets.push(`data.model.checkpoint=${abs(opts.model)}`);
      if (opts.layer !== undefined) sets.push(`data.model.layer=${opts.layer}`);
      if (opts.site) sets.push(`data.model.site=${opts.site}`);
      if (opts.sequences) sets.push(`data.model.sequences=${opts.sequences}`);
      if (opts.tokens) sets.push(`data.model.tokens=${abs(opts.tokens)}`);
      if (opts.tokenizer) sets.push(`data.model.tokenizer=${abs(opts.tokenizer)}`);
      if (opts.seed !== undefined) sets.push(`seed=${opts.seed}`);
      sets.push(...opts.set);
      if (!file && !opts.model) throw new SaeError("usage", "say what to harvest: a config with a data.model section, or --model with --layer", "e.g. sae harvest --model aidreams260K.bin --layer 2 --out acts/l2");
      const { config } = loadConfig(file ?? null, sets, { probe: probeData });
      const m = config.data.model!;
      if (fs.existsSync(opts.out) && fs.readdirSync(opts.out).length > 0) {
        throw new SaeError("usage", `${opts.out} already exists and is not empty`, "choose a new --out folder; harvesting never overwrites data");
      }
      if (opts.show > 0 && !m.tokenizer) throw new SaeError("usage", "--show needs a tokenizer", "pass --tokenizer FILE (the model's llama2.c tokenizer) or set data.model.tokenizer");
      const engine = selectEngine(opts.threads ?? config.train.threads);
      const lm = loadLlama(m.checkpoint);
      const tok = opts.show > 0 ? new Tokenizer(m.tokenizer!, lm.config.vocab) : null; // checked before the work
      const spec = harvestSpec(config, lm, engine.engine);
      const sequences = datasetSequences(config, spec);
      const shardRows = Math.max(1, Math.floor((opts.shardMb * 2 ** 20) / (4 * lm.config.dim)));
      io.err(`harvesting ${path.basename(m.checkpoint)} layer ${m.layer} ${m.site}: ${sequences} sequences of ${spec.P} tokens (${sequences * spec.P} rows × ${lm.config.dim}) into ${opts.out}; ${engine.reason}`);
      const t0 = performance.now();
      let last = 0;
      const manifest = harvestToDisk(spec, sequences, opts.out, shardRows, {
        checkpoint: m.checkpoint, layer: m.layer, site: m.site, seed: config.seed, temperature: m.temperature, ...(m.tokens ? { tokens: m.tokens } : {}),
      }, (done) => {
        if (performance.now() - last < 2000 && done < sequences) return;
        last = performance.now();
        const rate = (done * spec.P) / ((last - t0) / 1000);
        io.err(`  ${done}/${sequences} sequences, ${Math.round(rate)} tok/s`);
      });
      io.out(`wrote ${count(manifest.shards.length, "shard")}, ${sequences * spec.P} rows, tokens.npy and manifest.json to ${opts.out}`);
      if (tok) {
        const all = readTokens(path.join(opts.out, "tokens.npy"), spec.P, lm.config.vocab).ids;
        for (let s = 0; s < Math.min(opts.show, sequences); s++) io.out(`[${s}] ${tok.decode(all.subarray(s * spec.P, (s + 1) * spec.P))}`);
      }
    });
}

