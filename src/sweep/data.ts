// Data shared by a sweep's runs: when a run's data is a language model, its activations are
// harvested once into the sweep folder (data/<site>-layer<L>-<hash>/, the `sae harvest` layout) and
// the run trains from that folder instead, which gives the same rows bit for bit (src/lm/harvest.ts)
// without rerunning the model's forward pass for every run.
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { configFromObject, configToYaml } from "../config/load.ts";
import type { Config } from "../config/schema.ts";
import { datasetSequences, harvestSpec, probeData } from "../data/index.ts";
import { harvestToDisk } from "../lm/harvest.ts";
import { loadLlama } from "../lm/llama.ts";
import type { EngineChoice } from "../engine/index.ts";
import YAML from "yaml";

/** The harvested folder a model-data config trains from (null for other data): it depends on what selects the rows. */
export function harvestDir(sweepDir: string, c: Config): string | null {
  if (c.data.source !== "model") return null;
  const m = c.data.model!;
  const key = { checkpoint: m.checkpoint, layer: m.layer, site: m.site, sequences: m.sequences ?? null, context_size: m.context_size ?? null, temperature: m.temperature, tokens: m.tokens ?? null, seed: c.seed };
  const hash = crypto.createHash("sha256").update(JSON.stringify(key)).digest("hex").slice(0, 8);
  return path.join(sweepDir, "data", `${m.site}-layer${m.layer}-${hash}`);
}

/** the same config reading the harvested folder (data.source: file) */
export function withHarvestedData(c: Config, dir: string): Config {
  const raw = YAML.parse(configToYaml(c)) as Record<string, any>;
  const { model: _m, ...data } = raw.data;
  return configFromObject({ ...raw, data: { ...data, source: "file", file: { path: dir } } }, [], probeData).config;
}

/**
 * Harvests c's model data into dir unless it is there (its manifest.json is written last). Writes into
 * a temporary folder renamed at the end, so a killed harvest leaves nothing half-done under dir and
 * two processes harvesting at once leave one complete copy. Returns whether it harvested.
 */
export function ensureHarvested(c: Config, dir: string, engine: EngineChoice, log: (line: string) => void): boolean {
  if (fs.existsSync(path.join(dir, "manifest.json"))) return false;
  const parent = path.dirname(dir);
  fs.mkdirSync(parent, { recursive: true });
  removeStaleTemporaries(parent, path.basename(dir));
  const m = c.data.model!;
  const lm = loadLlama(m.checkpoint);
  const spec = harvestSpec(c, lm, engine.engine);
  const sequences = datasetSequences(c, spec);
  const tmp = `${dir}.tmp-${os.hostname()}-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  log(`harvesting ${path.basename(m.checkpoint)} layer ${m.layer} ${m.site}: ${sequences} sequences of ${spec.P} tokens into ${path.relative(process.cwd(), dir) || dir}; ${engine.reason}`);
  const t0 = performance.now();
  let last = t0;
  const shardRows = Math.max(1, Math.floor((256 * 2 ** 20) / (4 * lm.config.dim)));
  harvestToDisk(spec, sequences, tmp, shardRows, { checkpoint: m.checkpoint, layer: m.layer, site: m.site, seed: c.seed, temperature: m.temperature, ...(m.tokens ? { tokens: m.tokens } : {}) }, (done) => {
    if (performance.now() - last < 5000 && done < sequences) return;
    last = performance.now();
    log(`  ${done}/${sequences} sequences, ${Math.round((done * spec.P) / ((last - t0) / 1000))} tok/s`);
  });
  try {
    fs.renameSync(tmp, dir);
  } catch (e) {
    // another process finished the same harvest first: its copy holds the same rows
    if (!fs.existsSync(path.join(dir, "manifest.json"))) throw e;
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  return true;
}

/** Temporary harvest folders left by killed processes of this host. */
function removeStaleTemporaries(parent: string, base: string): void {
  const mine = new RegExp(`^${base.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}\\.tmp-(.+)-(\\d+)$`);
  for (const f of fs.readdirSync(parent)) {
    const m = mine.exec(f);
    if (m && m[1] === os.hostname() && !processAlive(Number(m[2]))) fs.rmSync(path.join(parent, f), { recursive: true, force: true });
  }
}

/** Whether a process of this host still runs (a zombie, killed but not yet reaped, does not). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return true;
  }
}
