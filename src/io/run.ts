// The run folder: runs/<id>/ holds everything a run writes.
//   config.yaml            fully resolved config (every default written out)
//   status.json            running | done | failed | interrupted, progress, engine, scale, error
//   phases.json            the evaluation at the end of each phase so far
//   metrics.csv            one row per logging interval (append-only, header written once)
//   ground_truth.safetensors  true features, for synthetic data
//   checkpoints/step-NNNNNNN.safetensors + .json   resumable training state (training units)
//   final/sae_weights.safetensors + final/cfg.json  weights with the input scaling folded in
//   eval.json              the evaluation of final/
//   lock                   the process working on the run, while it does (io/lock.ts)
import fs from "node:fs";
import path from "node:path";
import crypto from "node:crypto";
import { stringify } from "csv-stringify/sync";
import { SaeError } from "../errors.ts";
import { appendFile, fsError, makeDir, removeStaleTemps, writeFileAtomic } from "./atomic.ts";
import { runHolder } from "./lock.ts";

export type RunState = "running" | "done" | "failed" | "interrupted";

export interface RunStatus {
  id: string;
  status: RunState;
  variant: string;
  started: string;
  finished?: string;
  step: number;
  steps: number;
  tokens: number;
  engine?: string;
  /** what train.precision resolved to: the GEMM operands' type (fp32 or bf16) */
  precision?: string;
  /** input scaling factor c: the SAE trained on c·x */
  scale?: number;
  error?: string;
  /**
   * position in the runs folder's training order: 1 + the largest seq there when this run's
   * training last began (train, finetune, import, resume). Ids and `started` have one-second
   * and one-millisecond resolution; this is exact. Runs written before it existed lack it.
   */
  seq?: number;
  /**
   * the sparsity setting `sae runs --wide` shows, when the config's would mislead: an imported
   * run's as its folder states it ("k=32"), or "-" when the folder states none (the config then
   * holds a default the SAE was never trained with)
   */
  knob?: string;
  /**
   * where the run began and each resume: the step, the engine and thread count it ran on, and the
   * config keys the resume changed. Runs written before it existed have only `engine`.
   */
  history?: RunStart[];
}

export interface RunStart { step: number; engine: string; threads: number; changes?: string[] }

export function newRunId(name: string, variant: string, now = new Date()): string {
  const p = (n: number, w = 2) => String(n).padStart(w, "0");
  const t = `${now.getUTCFullYear()}${p(now.getUTCMonth() + 1)}${p(now.getUTCDate())}-${p(now.getUTCHours())}${p(now.getUTCMinutes())}${p(now.getUTCSeconds())}`;
  return `${t}-${name}-${variant}-${crypto.randomBytes(2).toString("hex")}`;
}

/** ids are file names that no shell or option parser misreads: a letter, digit or '_' first, then letters, digits, '.', '_', '-' */
const RUN_ID = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}$/;

/**
 * Creates runs/<id>/ (with checkpoints/ and final/); refuses an existing run. A folder left by a
 * set-up that never wrote config.yaml (killed, or failed) holds nothing of value: it is reused.
 */
export function createRunDir(runsDir: string, id: string): string {
  if (!RUN_ID.test(id)) throw new SaeError("usage", `run id "${id}" must start with a letter, digit or '_' and hold only letters, digits, '.', '_' and '-' (at most 200)`, "pick another --run-id");
  if (id === "latest" || /^latest~\d+$/.test(id)) throw new SaeError("usage", `run id "${id}" is reserved: it names the most recent run`, "pick another --run-id");
  if (fs.existsSync(runsDir) && !fs.statSync(runsDir).isDirectory()) throw new SaeError("runtime", `cannot create runs in ${runsDir}: it is a file, not a folder`, "move that file away, or point --runs-dir at a folder");
  makeDir(runsDir);
  const dir = path.join(runsDir, id);
  try {
    fs.mkdirSync(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw fsError(e, "create the run folder", dir);
    if (!abandonedSetUp(dir)) throw new SaeError("usage", `run ${dir} already exists`, "pick another --run-id, or delete that folder first");
    removeStaleTemps(dir);
  }
  makeDir(path.join(dir, "checkpoints"));
  makeDir(path.join(dir, "final"));
  return dir;
}

/** a run folder whose set-up stopped before config.yaml: empty checkpoints/ and final/, and at most a dead process's lock and temporary files */
function abandonedSetUp(dir: string): boolean {
  let entries: string[];
  try {
    if (!fs.statSync(dir).isDirectory()) return false;
    entries = fs.readdirSync(dir);
  } catch {
    return false;
  }
  const h = runHolder(dir);
  if (h && h.state !== "dead") return false; // a set-up in progress, here or on another host
  return entries.every((f) => ((f === "checkpoints" || f === "final") && fs.readdirSync(path.join(dir, f)).length === 0) || f === "lock" || /\.tmp-\d+$/.test(f));
}

/** Removes a new run's folder after its set-up failed before anything was trained (only what set-up writes is there). */
export function removeRunDir(dir: string): void {
  fs.rmSync(dir, { recursive: true, force: true });
}

export { writeFileAtomic } from "./atomic.ts";

/**
 * The one writer of a run's eval.json: the evaluation of final/ (raw input units), with `extra`
 * (the run id, the phases' evaluations, an import's source) in front. docs/formats.md#evaljson
 */
export function writeEval(dir: string, result: object, extra: Record<string, unknown> = {}): void {
  const doc = { run: path.basename(path.resolve(dir)), units: "raw input (scale folded into the weights)", ...extra, ...result };
  writeFileAtomic(path.join(dir, "eval.json"), JSON.stringify(doc, null, 2) + "\n");
}

/**
 * The top-level entries of the run's eval.json that `doc` would lose (beyond the run and units
 * lines): a resume that redoes the final evaluation keeps an eval.json that holds more than it
 * computes (a later `sae eval --convention all`, a downstream loss the model is gone for).
 */
export function evalWouldLose(dir: string, result: object): string[] {
  const old = readEvalFile(dir);
  if (!old) return [];
  return Object.keys(old).filter((k) => !(k in result) && k !== "run" && k !== "units");
}

/** a run's eval.json, or null when it has none or it cannot be read */
export function readEvalFile(dir: string): Record<string, unknown> | null {
  try {
    const v = JSON.parse(fs.readFileSync(path.join(dir, "eval.json"), "utf8"));
    return v && typeof v === "object" && !Array.isArray(v) ? v : null;
  } catch {
    return null;
  }
}

export function writeStatus(dir: string, s: RunStatus): void {
  writeFileAtomic(path.join(dir, "status.json"), JSON.stringify(s, null, 2) + "\n");
}

/** status.json, or null when it is missing or not a status (garbled, hand-edited) */
export function readStatus(dir: string): RunStatus | null {
  try {
    const s = JSON.parse(fs.readFileSync(path.join(dir, "status.json"), "utf8"));
    return s && typeof s === "object" && typeof s.status === "string" && Number.isFinite(s.step) ? (s as RunStatus) : null;
  } catch {
    return null;
  }
}

/** a run marked running whose process is gone (killed, the machine rebooted): no live lock holder */
export function isDead(dir: string, s: RunStatus | null): boolean {
  if (s?.status !== "running") return false;
  const h = runHolder(dir);
  return h === null || h.state === "dead";
}

/** the status `sae runs` shows: status.json's, or dead for a running run whose process is gone */
export function shownStatus(dir: string, s: RunStatus | null): string {
  return isDead(dir, s) ? "dead" : s?.status ?? "unknown";
}

export class MetricsLog {
  private readonly file: string;
  private readonly columns: string[];
  constructor(dir: string, columns: string[]) {
    this.file = path.join(dir, "metrics.csv");
    this.columns = columns;
    if (!fs.existsSync(this.file)) writeFileAtomic(this.file, stringify([columns]));
  }
  /** removes the rows logged after `step` (before a resume re-logs them), and a row a crash cut short */
  dropAfter(step: number): void {
    const header = stringify([this.columns]).trimEnd();
    const lines = fs.readFileSync(this.file, "utf8").split("\n").filter((l) => l.length > 0);
    // a row cut short by a killed process (fewer fields than the header, or no step) goes too
    const whole = (l: string) => l.split(",").length === this.columns.length && /^\d+$/.test(l.split(",")[0]);
    const kept = [header, ...lines.slice(1).filter((l) => whole(l) && Number(l.split(",")[0]) <= step)];
    writeFileAtomic(this.file, kept.join("\n") + "\n");
  }

  append(row: Record<string, number | string>): void {
    appendFile(this.file, stringify([this.columns.map((c) => fmt(row[c]))]));
  }
}

function fmt(v: number | string | undefined): string {
  if (v === undefined) return "";
  if (typeof v === "string") return v;
  return Number.isInteger(v) ? String(v) : v.toPrecision(7);
}

/** Resolves a run argument: a folder path, an id under runsDir, or a unique prefix of one. */
export function findRun(runsDir: string, arg: string): string {
  if (fs.existsSync(path.join(arg, "config.yaml"))) return arg;
  const direct = path.join(runsDir, arg);
  if (fs.existsSync(path.join(direct, "config.yaml"))) return direct;
  const ids = listRunIds(runsDir).filter((id) => id.startsWith(arg));
  if (ids.length === 1) return path.join(runsDir, ids[0]);
  if (ids.length > 1) throw new SaeError("usage", `run "${arg}" is ambiguous: ${ids.length} runs start with it (${ids.slice(0, 3).join(", ")}, ...)`, "give more of the id");
  throw new SaeError("usage", `no run "${arg}" in ${runsDir}/`, "`sae runs` lists the runs; --runs-dir picks another folder");
}

export function listRunIds(runsDir: string): string[] {
  if (!fs.existsSync(runsDir)) return [];
  return fs.readdirSync(runsDir).filter((d) => fs.existsSync(path.join(runsDir, d, "config.yaml"))).sort();
}

/** 1 + the largest seq in runsDir: the next run to begin training comes after every one there. */
export function nextRunSeq(runsDir: string): number {
  let max = 0;
  for (const id of listRunIds(runsDir)) max = Math.max(max, readStatus(path.join(runsDir, id))?.seq ?? 0);
  return max + 1;
}

export interface RunEntry { id: string; dir: string; status: RunStatus | null }

/**
 * Every run in runsDir, oldest first, in the order training began: by seq, and for runs
 * without one (older, which come first) by `started`, then by id.
 */
export function runsInTrainingOrder(runsDir: string): RunEntry[] {
  const runs = listRunIds(runsDir).map((id) => ({ id, dir: path.join(runsDir, id), status: readStatus(path.join(runsDir, id)) }));
  const key = (r: RunEntry) => [r.status?.seq ?? 0, r.status?.started ?? ""] as const;
  return runs.sort((a, b) => {
    const [sa, ta] = key(a), [sb, tb] = key(b);
    if (sa !== sb) return sa - sb;
    if (ta !== tb) return ta < tb ? -1 : 1;
    return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
  });
}

/** What a command needs of a run it picks by itself: `finished` (finetune, eval, export), `resumable` (resume). */
export type RunPurpose = "finished" | "resumable";

const FITS: Record<RunPurpose, { states: RunState[]; what: string }> = {
  finished: { states: ["done"], what: "finished" },
  resumable: { states: ["interrupted", "failed"], what: "interrupted, failed or dead" },
};

export interface ResolvedRun {
  dir: string;
  /** how the run was picked, when the argument was left out or was latest / latest~N */
  picked?: string;
}

/**
 * Resolves a command's RUN argument. Left out, or `latest`, it is the run that began training
 * last among those that fit the purpose; `latest~N` is the N-th before that one. Anything else is
 * an id, a unique prefix of one or a folder (findRun), taken whatever its status (the command
 * checks what it needs).
 */
export function resolveRun(runsDir: string, arg: string | undefined, purpose: RunPurpose): ResolvedRun {
  const m = arg === undefined ? null : /^latest(?:~(\d+))?$/.exec(arg);
  if (arg !== undefined && !m) return { dir: findRun(runsDir, arg) };
  const back = m?.[1] === undefined ? 0 : Number(m[1]);
  const { states, what } = FITS[purpose];
  const all = runsInTrainingOrder(runsDir).reverse(); // newest first
  // a run whose process died while it ran can be resumed like an interrupted one
  const fit = all.filter((r) => r.status !== null && (states.includes(r.status.status) || (purpose === "resumable" && isDead(r.dir, r.status))));
  const name = back === 0 ? "latest" : `latest~${back}`;
  if (back < fit.length) {
    const r = fit[back];
    const which = back === 0 ? `the latest ${what} run` : `${name}: the ${ordinal(back + 1)} latest ${what} run`;
    return { dir: r.dir, picked: `using run ${r.id} (${which} in ${runsDir}/)` };
  }
  if (all.length === 0) {
    throw new SaeError("usage", `no runs in ${runsDir}/ to take the latest ${what} run from`, "train one first (sae train configs/quickstart.yaml), or point --runs-dir at the folder that holds your runs");
  }
  if (fit.length === 0) {
    throw new SaeError("usage", `${all.length === 1 ? `the only run in ${runsDir}/ is not ${what}` : `none of the ${all.length} runs in ${runsDir}/ is ${what}`} (${arg === undefined ? "RUN left out" : name} means the latest ${what} run); the latest runs:\n${listRuns(all.slice(0, 5))}`, purpose === "finished"
      ? "wait for a running run to finish, resume an interrupted one (sae resume), or name a run by its id"
      : "a run still running cannot be resumed; `sae runs` shows each run's status");
  }
  throw new SaeError("usage", `${name} is the ${ordinal(back + 1)} latest ${what} run, but ${runsDir}/ holds ${fit.length}:\n${listRuns(fit.slice(0, 5), true)}`, fit.length === 1 ? "latest is the only one" : `latest~${fit.length - 1} is the oldest; \`sae runs\` lists every run`);
}

/** one line per run, indented: [its latest~N name,] id, status */
function listRuns(rs: RunEntry[], named = false): string {
  const w = Math.max(...rs.map((r) => r.id.length));
  return rs.map((r, i) => `  ${named ? `${i === 0 ? "latest" : `latest~${i}`}`.padEnd(10) : ""}${r.id.padEnd(w)}  ${describeStatus(r)}`).join("\n");
}

function describeStatus(r: RunEntry): string {
  const s = r.status;
  if (!s) return "no status.json";
  const at = `step ${s.step}/${s.steps}`;
  return s.status === "failed" && s.error ? `failed at ${at}: ${s.error}` : `${shownStatus(r.dir, s)}, ${at}`;
}

function ordinal(n: number): string {
  const t = n % 100 >= 11 && n % 100 <= 13 ? "th" : ["th", "st", "nd", "rd"][n % 10] ?? "th";
  return `${n}${t}`;
}
