// The run folder: runs/<id>/ holds everything a run writes.
//   config.yaml            fully resolved config (every default written out)
//   status.json            running | done | failed | interrupted, progress, engine, scale, error
//   phases.json            the evaluation at the end of each phase so far
//   metrics.csv            one row per logging interval (append-only, header written once)
//   ground_truth.safetensors  true features, for synthetic data
//   checkpoints/step-NNNNNNN.safetensors + .json   resumable training state (training units)
//   final/sae_weights.safetensors + final/cfg.json  weights with the input scaling folded in
//   eval.json              the evaluation of final/
import fs from "node:fs";
import path from "node:path";
import crypto from "node:crypto";
import { stringify } from "csv-stringify/sync";
import { SaeError } from "../errors.ts";

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
  /** input scaling factor c: the SAE trained on c·x */
  scale?: number;
  error?: string;
}

export function newRunId(name: string, variant: string, now = new Date()): string {
  const p = (n: number, w = 2) => String(n).padStart(w, "0");
  const t = `${now.getUTCFullYear()}${p(now.getUTCMonth() + 1)}${p(now.getUTCDate())}-${p(now.getUTCHours())}${p(now.getUTCMinutes())}${p(now.getUTCSeconds())}`;
  return `${t}-${name}-${variant}-${crypto.randomBytes(2).toString("hex")}`;
}

/** Creates runs/<id>/; refuses to touch an existing folder. */
export function createRunDir(runsDir: string, id: string): string {
  if (!/^[A-Za-z0-9_.-]+$/.test(id)) throw new SaeError("usage", `run id "${id}" may only hold letters, digits, '.', '_' and '-'`);
  fs.mkdirSync(runsDir, { recursive: true });
  const dir = path.join(runsDir, id);
  try {
    fs.mkdirSync(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "EEXIST") throw new SaeError("usage", `run ${dir} already exists`, "pick another --run-id, or delete that folder first");
    throw e;
  }
  fs.mkdirSync(path.join(dir, "checkpoints"));
  fs.mkdirSync(path.join(dir, "final"));
  return dir;
}

/** Writes via a temporary file and rename, so readers never see half a file. */
export function writeFileAtomic(file: string, text: string): void {
  const tmp = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, file);
}

export function writeStatus(dir: string, s: RunStatus): void {
  writeFileAtomic(path.join(dir, "status.json"), JSON.stringify(s, null, 2) + "\n");
}

export function readStatus(dir: string): RunStatus | null {
  try {
    return JSON.parse(fs.readFileSync(path.join(dir, "status.json"), "utf8")) as RunStatus;
  } catch {
    return null;
  }
}

export class MetricsLog {
  private readonly file: string;
  private readonly columns: string[];
  constructor(dir: string, columns: string[]) {
    this.file = path.join(dir, "metrics.csv");
    this.columns = columns;
    if (!fs.existsSync(this.file)) fs.writeFileSync(this.file, stringify([columns]));
  }
  /** removes the rows logged after `step` (before a resume re-logs them) */
  dropAfter(step: number): void {
    const lines = fs.readFileSync(this.file, "utf8").split("\n").filter((l) => l.length > 0);
    // a row cut short by a killed process (fewer fields than the header) goes too
    const fields = lines[0].split(",").length;
    const kept = [lines[0], ...lines.slice(1).filter((l) => l.split(",").length === fields && Number(l.split(",")[0]) <= step)];
    writeFileAtomic(this.file, kept.join("\n") + "\n");
  }

  append(row: Record<string, number | string>): void {
    fs.appendFileSync(this.file, stringify([this.columns.map((c) => fmt(row[c]))]));
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
