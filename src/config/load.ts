// YAML loading, `--set key=value` overrides and validation, with errors that name the key, the
// file and line, what was expected and what was found, and suggest a fix.
// Precedence: schema defaults < YAML file < --set.
import fs from "node:fs";
import path from "node:path";
import YAML, { LineCounter, isMap, isPair, isScalar, isSeq, type Document } from "yaml";
import type { z } from "zod";
import { ConfigSchema, resolveConfig, type Config, type RawConfig } from "./schema.ts";
import { SaeError } from "../errors.ts";
import { keyReaders, variantDef } from "../sae/index.ts";
import { freezeNames, modeNames, modeTrains } from "../sae/freeze.ts";
import { checkMemory } from "./limits.ts";

/**
 * Opens the data a config names (files, a model) to read its width D and check it; errors are
 * located with `where`. Passed in by the command (src/data probeData), so that the config layer
 * does not depend on the data stack; without one, D is data.d_in (saved runs have it resolved).
 */
export type DataProbe = (data: RawConfig["data"], where: (p: string[]) => string) => number | null;

export interface LoadedConfig {
  config: Config;
  warnings: string[];
}

/** the largest config file read: configs are a few kB, and the YAML parser holds several copies of its input */
export const MAX_CONFIG_BYTES = 1 << 20;
/** alias expansions allowed (the yaml library's default limit, named) */
const MAX_ALIASES = 100;
/** the longest string a config value may hold (paths, names) */
export const MAX_STRING = 4096;

/**
 * An override: `key.path=value` text (from --set), or a key and an already-parsed value with the
 * place it came from (a sweep file's "file:line:col"), which then names it in every error; its
 * relative paths resolve against baseDir (default: the working directory).
 */
export type Override = string | { key: string; value: unknown; origin: string; baseDir?: string };

/** probe: opens the data to read D and check it (see DataProbe) */
export function loadConfig(file: string | null, sets: Override[] = [], opts: { probe?: DataProbe } = {}): LoadedConfig {
  let raw: unknown = {};
  let doc: Document | null = null;
  let lines = new LineCounter();
  if (file !== null) {
    ({ raw, doc, lines } = readYamlFile(file, "config file", "check the path; configs/ has examples"));
    if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
      throw new SaeError("config", `${file}: the top level must be a mapping of keys (data:, sae:, train:, ...), found ${Array.isArray(raw) ? "a list" : typeof raw}`, "see configs/quickstart.yaml");
    }
  }
  return validateConfig(raw as Record<string, unknown>, sets, doc, lines, file, opts.probe ?? null);
}

/** Reads and parses a YAML file, keeping the document and line positions for messages; what = "config file", "sweep file". */
export function readYamlFile(file: string, what: string, hint: string): { raw: unknown; doc: Document; lines: LineCounter } {
  let text: string;
  try {
    const size = fs.statSync(file).size;
    if (size > MAX_CONFIG_BYTES) throw new SaeError("config", `${what} ${file} is ${size} bytes; a config is a few kB of keys (at most ${MAX_CONFIG_BYTES})`, "give the experiment's YAML file (data goes in files that data.file.path names)");
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    if (e instanceof SaeError) throw e;
    throw new SaeError("usage", `cannot read ${what} ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, hint);
  }
  const lines = new LineCounter();
  const doc = YAML.parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const err = doc.errors[0];
    const pos = lines.linePos(err.pos[0]);
    throw new SaeError("config", `${file}:${pos.line}:${pos.col}: invalid YAML: ${err.message.split("\n")[0].slice(0, 200)}`, "fix the YAML syntax at that line");
  }
  try {
    // aliases expand into copies: a few nested ones make billions ("billion laughs")
    return { raw: doc.toJS({ maxAliasCount: MAX_ALIASES }) ?? {}, doc, lines };
  } catch (e) {
    throw new SaeError("config", `${file}: its aliases (*name) expand to more than ${MAX_ALIASES} copies (${(e as Error).message})`, "write the values out; a config needs few aliases, if any");
  }
}

/** "file:line:col: " of the key (or list item) at path in a parsed YAML file, or of the deepest part of it that exists; "file: " when none does. */
export function yamlPosition(doc: Document, lines: LineCounter, file: string, path: (string | number)[]): string {
  const pos = locate(doc, path);
  if (pos === null) return `${file}: `;
  const lp = lines.linePos(pos);
  return `${file}:${lp.line}:${lp.col}: `;
}

/** Validates a config object (from a file, or built by a command such as finetune) with --set overrides. */
export function configFromObject(raw: Record<string, unknown>, sets: Override[] = [], probe: DataProbe | null = null): LoadedConfig {
  return validateConfig(structuredClone(raw), sets, null, new LineCounter(), null, probe);
}

function validateConfig(raw: Record<string, unknown>, sets: Override[], doc: Document | null, lines: LineCounter, file: string | null, probe: DataProbe | null): LoadedConfig {
  const setPaths: SetPaths = new Map();
  for (const s of sets) applySet(raw, s, setPaths);
  const long = longString(raw);
  if (long) throw new SaeError("config", `${origin(long.path, doc, lines, file, setPaths)}${long.path.join(".")}: a string of ${long.length} characters; config values are names and paths of at most ${MAX_STRING}`, "shorten it");

  const parsed = ConfigSchema.safeParse(raw, { reportInput: true });
  if (!parsed.success) {
    const msgs = parsed.error.issues.flatMap((issue) => describeIssue(issue, doc, lines, file, setPaths).split("\n  "));
    msgs.sort((a, b) => lineOf(a) - lineOf(b));
    throw new SaeError("config", msgs.length === 1 ? msgs[0] : `${msgs.length} problems in the config:\n  ${msgs.join("\n  ")}`);
  }
  const where = (p: string[]) => origin(p, doc, lines, file, setPaths);
  const rawPhases = (raw as { train?: { phases?: { steps?: number; tokens?: number }[]; steps?: unknown } }).train;
  if (rawPhases?.phases) {
    if (rawPhases.steps !== undefined)
      throw new SaeError("config", `${where(["train", "steps"])}train.steps: with train.phases, each phase sets its own length`, "remove train.steps (the total is the sum of the phases)");
    rawPhases.phases.forEach((ph, i) => {
      if ((ph.steps === undefined) === (ph.tokens === undefined))
        throw new SaeError("config", `${where(["train", "phases"])}train.phases[${i}]: give exactly one of steps and tokens`, "e.g. `steps: 1000`");
    });
  }
  resolvePaths(parsed.data, file, setPaths, where);
  const config = resolveConfig(parsed.data, probe ? probe(parsed.data.data, where) : null);
  crossCheck(config, where);
  checkMemory(config, where);

  const warnings: string[] = [];
  for (const [k, variants] of Object.entries(keyReaders())) {
    if (variants.includes(config.sae.variant)) continue;
    const given = (raw as { sae?: Record<string, unknown> }).sae?.[k] !== undefined;
    if (given) warnings.push(`${where(["sae", k])}sae.${k} is ignored: only ${variants.join(", ")} read${variants.length === 1 ? "s" : ""} it (this run is ${config.sae.variant})`);
  }
  return { config, warnings };
}

/** Config keys that hold paths: made absolute (so the run's config.yaml works from anywhere), env vars expanded. */
const PATH_KEYS = [["data", "file", "path"], ["data", "model", "checkpoint"], ["data", "model", "tokens"], ["data", "model", "tokenizer"]];

function resolvePaths(raw: Record<string, any>, file: string | null, setPaths: SetPaths, where: (p: string[]) => string): void {
  for (const keyPath of PATH_KEYS) {
    const parent = keyPath.slice(0, -1).reduce<Record<string, any> | undefined>((o, k) => o?.[k], raw);
    const last = keyPath[keyPath.length - 1];
    const v = parent?.[last];
    if (typeof v !== "string") continue;
    const expanded = expandEnv(v, (name) => {
      throw new SaeError("config", `${where(keyPath)}${keyPath.join(".")}: the environment variable ${name} in "${v}" is not set`, `set ${name}, write \${${name}:-default}, or give the path directly`);
    });
    // relative to the config file's folder; --set values and configs built in code: to the working directory
    const set = setPaths.get(keyPath.join("."));
    const base = set ? set.baseDir ?? process.cwd() : file ? path.dirname(path.resolve(file)) : process.cwd();
    parent![last] = path.resolve(base, expanded);
  }
}

/** $VAR, ${VAR} and ${VAR:-default} from the environment */
export function expandEnv(s: string, unset: (name: string) => string): string {
  return s.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)/g, (_m, a: string | undefined, def: string | undefined, b: string | undefined) => {
    const name = (a ?? b)!;
    const val = process.env[name];
    if (val !== undefined && val !== "") return val;
    return def !== undefined ? def : unset(name);
  });
}

/** where each overridden key came from: the label that starts its errors, and the folder its relative paths resolve against */
type SetPaths = Map<string, { label: string; baseDir?: string }>;

/** Applies one override (`key.path=value` text, value parsed as a YAML scalar, or a parsed value) to the raw config object. */
function applySet(raw: Record<string, unknown>, s: Override, setPaths: SetPaths): void {
  let key: string, value: unknown, label: string;
  if (typeof s === "string") {
    label = `--set ${s}`;
    const eq = s.indexOf("=");
    if (eq <= 0) throw new SaeError("usage", `--set ${s}: expected key=value, e.g. --set sae.k=64`);
    key = s.slice(0, eq).trim();
    const valueText = s.slice(eq + 1);
    try {
      value = valueText === "" ? "" : YAML.parse(valueText);
    } catch {
      value = valueText;
    }
  } else {
    ({ key, value } = s);
    label = s.origin;
  }
  const path = key.split(".");
  // Walk the schema alongside the path so unknown keys are caught here with a suggestion.
  let shape: Record<string, z.ZodType> | null = objectShape(ConfigSchema);
  let obj = raw;
  for (let i = 0; i < path.length; i++) {
    const part = path[i];
    if (!shape || !(part in shape)) {
      const known = shape ? Object.keys(shape) : [];
      const prefix = path.slice(0, i).join(".");
      throw new SaeError(typeof s === "string" ? "usage" : "config", `${label}: unknown key ${prefix ? prefix + "." : ""}${part}${suggest(part, known)}`, known.length ? `keys here: ${known.join(", ")}` : undefined);
    }
    if (i === path.length - 1) {
      obj[part] = value;
    } else {
      if (typeof obj[part] !== "object" || obj[part] === null) obj[part] = {};
      obj = obj[part] as Record<string, unknown>;
      shape = objectShape(shape[part]);
    }
  }
  setPaths.set(key, { label, baseDir: typeof s === "string" ? undefined : s.baseDir });
}

/** The shape of a (possibly default-wrapped / optional) zod object schema, or null. */
function objectShape(t: z.ZodType): Record<string, z.ZodType> | null {
  let cur: any = t;
  for (let i = 0; i < 4 && cur; i++) {
    if (cur.shape) return cur.shape as Record<string, z.ZodType>;
    cur = cur.def?.innerType ?? cur._zod?.def?.innerType;
  }
  return null;
}

function shapeAt(path: (string | number | symbol)[]): Record<string, z.ZodType> | null {
  let shape = objectShape(ConfigSchema);
  for (const p of path) {
    if (!shape || !(String(p) in shape)) return null;
    shape = objectShape(shape[String(p)]);
  }
  return shape;
}

function describeIssue(issue: z.core.$ZodIssue, doc: Document | null, lines: LineCounter, file: string | null, setPaths: SetPaths): string {
  const path = issue.path.map(String);
  if (issue.code === "unrecognized_keys") {
    const known = Object.keys(shapeAt(issue.path as string[]) ?? {});
    return issue.keys
      .map((k) => {
        const full = [...path, k];
        return `${origin(full, doc, lines, file, setPaths)}unknown key ${full.join(".")}${suggest(k, known)} (known keys${path.length ? " under " + path.join(".") : ""}: ${known.join(", ")})`;
      })
      .join("\n  ");
  }
  const input = (issue as { input?: unknown }).input;
  const expected = issue.message.replace(/^Invalid input: |^Invalid option: |^Too big: |^Too small: /, "").replace(/, received .*$/, "");
  return `${origin(path, doc, lines, file, setPaths)}${path.join(".") || "(top level)"}: ${expected}, but found ${show(input)}`;
}

/** "file:line:col: " for a key from the YAML file, "--set k=v: " (or the override's own origin) for an override, or "". */
function origin(path: string[], doc: Document | null, lines: LineCounter, file: string | null, setPaths: SetPaths): string {
  // the key itself or the overridden key above it (an override may set a list such as train.phases)
  for (let i = path.length; i > 0; i--) {
    const set = setPaths.get(path.slice(0, i).join("."));
    if (set !== undefined) return `${set.label}: `;
  }
  if (!doc || !file) return "";
  return yamlPosition(doc, lines, file, path);
}

/** Source offset of the key (or list item, or the deepest existing parent) at path. */
function locate(doc: Document, path: (string | number)[]): number | null {
  let node: unknown = doc.contents;
  let found: number | null = null;
  for (const part of path) {
    if (isSeq(node) && typeof part === "number") {
      const item = node.items[part];
      if (!item) break;
      found = (item as { range?: [number, number, number] }).range?.[0] ?? found;
      node = item;
      continue;
    }
    if (!isMap(node)) break;
    const pair = node.items.find((it) => isPair(it) && isScalar(it.key) && String(it.key.value) === String(part));
    if (!pair || !isPair(pair) || !isScalar(pair.key)) break;
    found = pair.key.range?.[0] ?? found;
    node = pair.value;
  }
  return found;
}

/** the line number in a "file:line:col: ..." message, for ordering (unknown lines last) */
function lineOf(msg: string): number {
  const m = /^[^:]+:(\d+):\d+: /.exec(msg);
  return m ? Number(m[1]) : Infinity;
}

/** the first string longer than MAX_STRING in a config object, with its key path */
function longString(v: unknown, p: string[] = []): { path: string[]; length: number } | null {
  if (typeof v === "string") return v.length > MAX_STRING ? { path: p, length: v.length } : null;
  if (v && typeof v === "object") {
    for (const [k, x] of Object.entries(v)) {
      const hit = longString(x, [...p, k]);
      if (hit) return hit;
    }
  }
  return null;
}

function show(v: unknown): string {
  if (v === undefined) return "nothing";
  if (v === null) return "null";
  if (typeof v === "string") return `"${v.length > 80 ? v.slice(0, 80) + "…" : v}" (a string)`;
  if (typeof v === "object") return Array.isArray(v) ? "a list" : "a mapping";
  return `${String(v)} (a ${typeof v})`;
}

export function suggest(word: string, known: string[]): string {
  let best = "", bestD = Infinity;
  for (const k of known) {
    const d = editDistance(word.toLowerCase(), k.toLowerCase());
    if (d < bestD) { bestD = d; best = k; }
  }
  return best && bestD <= Math.max(2, Math.floor(word.length / 3)) ? ` (did you mean ${best}?)` : "";
}

function editDistance(a: string, b: string): number {
  const dp = Array.from({ length: a.length + 1 }, (_, i) => [i, ...new Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) dp[0][j] = j;
  for (let i = 1; i <= a.length; i++)
    for (let j = 1; j <= b.length; j++)
      dp[i][j] = Math.min(dp[i - 1][j] + 1, dp[i][j - 1] + 1, dp[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
  return dp[a.length][b.length];
}

/** Rules that involve more than one key. */
function crossCheck(c: Config, where: (p: string[]) => string): void {
  const fail = (p: string[], msg: string, hint: string) => {
    throw new SaeError("config", `${where(p)}${p.join(".")}: ${msg}`, hint);
  };
  const v = variantDef(c.sae.variant);
  if (v.flavours && c.sae.flavour !== undefined && !v.flavours.includes(c.sae.flavour))
    fail(["sae", "flavour"], `${c.sae.variant} has no flavour "${c.sae.flavour}"`, `use one of: ${v.flavours.join(", ")}`);
  v.check?.(c.sae, (key, msg, hint) => fail(["sae", key], msg, hint));
  const specs = v.specs({ D: c.data.d_in, H: c.sae.d_sae }, c.sae);
  for (const [i, ph] of c.train.phases.entries()) {
    const at = `phase ${i + 1} (${ph.name})`;
    if (ph.mode && ph.freeze.length) fail(["train", "phases"], `${at} sets both mode and freeze`, "mode already says what trains; drop freeze");
    if (ph.mode && !modeTrains(v, specs, ph.mode))
      fail(["train", "phases"], `${at}: ${c.sae.variant} has no fine-tuning mode ${ph.mode}`, `modes of ${c.sae.variant}: ${modeNames(v).join(", ")}${v.modes ? "" : " (a standard run converts to scaled, which has more: `sae finetune --mode`)"}`);
    const known = freezeNames(specs);
    for (const g of ph.freeze) if (!known.includes(g)) fail(["train", "phases"], `${at}: freeze names "${g}", which ${c.sae.variant} does not have${suggest(g, known)}`, `freeze any of: ${known.join(", ")}`);
  }
  const syn = c.data.synthetic;
  if (syn.mean_active > syn.n_features)
    fail(["data", "synthetic", "mean_active"], `mean_active = ${syn.mean_active} exceeds n_features = ${syn.n_features}`, "lower mean_active or raise n_features");
  if (syn.magnitude_min > syn.magnitude_max)
    fail(["data", "synthetic", "magnitude_min"], `magnitude_min = ${syn.magnitude_min} exceeds magnitude_max = ${syn.magnitude_max}`, "swap them");
}

/** The resolved config as YAML. train.steps is left out: the phases carry the lengths. */
export function configToYaml(c: Config): string {
  const { steps: _total, ...train } = c.train;
  return YAML.stringify({ ...c, train }, { lineWidth: 0 });
}
