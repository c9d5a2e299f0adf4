// Row stores: activation data as N rows of D floats, read in pieces so that a file larger than
// memory is never loaded whole. Files: .npy (2-D [N, D] or 3-D [sequences, positions, D]),
// .safetensors (one named tensor), and a folder of .npy shards described by manifest.json:
//
//   { "format": "sae-activations", "version": 1, "d_in": 64, "dtype": "float32",
//     "seq_len": 128,                 // positions per sequence, when rows are whole sequences
//     "starts_with_bos": true,        // position 0 of every sequence is BOS
//     "shards": [{ "file": "acts-00000.npy", "rows": 65536 }, ...],
//     "rows": 131072,                 // optional: the total, checked against the shards
//     "tokens": "tokens.npy",         // optional: int32 token ids [sequences, seq_len]
//     "source": { ... }               // optional: how it was made (sae harvest writes model, layer, site)
//   }
//
// float16 and bfloat16 are widened to float32 as they are read. numpy has no bfloat16, so a
// bfloat16 .npy is stored as uint16 ('<u2') and read with data.file.dtype: bfloat16.
import fs from "node:fs";
import path from "node:path";
import { SaeError } from "../errors.ts";
import { openOrExplain, readNpyHeader } from "../io/npy.ts";
import { checkSafetensorsHeader, MAX_HEADER_BYTES, type TensorInfo } from "../io/safetensors.ts";
import type { FileDtype, Manifest, RowStore } from "../io/activations.ts";
import { count } from "../text.ts";
export type { FileDtype, Manifest, RowStore } from "../io/activations.ts";


const DTYPE_ALIASES: Record<string, FileDtype> = { float32: "float32", f32: "float32", float16: "float16", f16: "float16", bfloat16: "bfloat16", bf16: "bfloat16" };

/** float32/f32, float16/f16, bfloat16/bf16 → the long name; undefined for anything else */
export function fileDtype(name: string): FileDtype | undefined {
  return DTYPE_ALIASES[name];
}

const F16 = (() => {
  // float16 bit pattern → float32 value, all 65536 of them
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, m = h & 0x3ff;
    t[h] = e === 0 ? s * m * 2 ** -24 : e === 31 ? (m ? NaN : s * Infinity) : s * (1 + m / 1024) * 2 ** (e - 15);
  }
  return t;
})();

/** A contiguous little-endian array of rows inside one file. */
class RawFileStore implements RowStore {
  readonly rows: number;
  readonly D: number;
  readonly seqLen: number | null;
  readonly startsWithBos = false;
  private readonly fd: number;
  private readonly file: string;
  private readonly offset: number;
  readonly dtype: FileDtype;
  private staging = Buffer.alloc(0);

  /** exact: the rows end the file (.npy); a safetensors file's other tensors may follow them (its header is checked whole) */
  constructor(file: string, offset: number, rows: number, D: number, dtype: FileDtype, seqLen: number | null, exact = true) {
    this.file = file; this.offset = offset; this.rows = rows; this.D = D; this.dtype = dtype; this.seqLen = seqLen;
    const bytes = rows * D * (dtype === "float32" ? 4 : 2);
    const size = fs.statSync(file).size;
    if (offset + bytes > size) {
      throw new SaeError("data", `${file} is truncated: its header promises ${rows} rows of ${D} ${dtype} values (${offset + bytes} bytes), the file has ${size} bytes`, "re-create the file; a copy or a harvest may have been cut short");
    }
    if (exact && offset + bytes < size) {
      // numpy writes exactly the array; more bytes mean a header that describes only part of the file
      throw new SaeError("data", `${file}: its header describes ${rows} rows of ${D} ${dtype} values (${offset + bytes} bytes), but the file has ${size} bytes`, "the header does not match the data (edited, or data appended): re-create the file");
    }
    this.fd = openOrExplain(file);
  }

  describe(): string {
    return `${this.file}: ${this.rows} rows × ${this.D} (${this.dtype})`;
  }

  read(start: number, n: number, out: Float32Array): void {
    const D = this.D, item = this.dtype === "float32" ? 4 : 2;
    const piece = Math.max(1, Math.floor((4 << 20) / (D * item))); // rows per read: 4 MiB of file
    for (let r = 0; r < n; r += piece) {
      const m = Math.min(piece, n - r), bytes = m * D * item;
      if (this.staging.length < bytes) this.staging = Buffer.alloc(bytes);
      const pos = this.offset + (start + r) * D * item;
      let got = 0;
      while (got < bytes) {
        const k = fs.readSync(this.fd, this.staging, got, bytes - got, pos + got);
        if (k === 0) throw new SaeError("data", `${this.file}: unexpected end of file at byte ${pos + got} (the file shrank while in use?)`);
        got += k;
      }
      const dst = out.subarray(r * D, (r + m) * D);
      if (this.dtype === "float32") new Uint8Array(dst.buffer, dst.byteOffset, bytes).set(this.staging.subarray(0, bytes));
      else {
        const u16 = new Uint16Array(this.staging.buffer, this.staging.byteOffset, m * D);
        if (this.dtype === "float16") for (let i = 0; i < m * D; i++) dst[i] = F16[u16[i]];
        else {
          const bits = new Uint32Array(dst.buffer, dst.byteOffset, m * D);
          for (let i = 0; i < m * D; i++) bits[i] = u16[i] << 16; // bfloat16 is the top half of a float32
        }
      }
    }
  }

  close(): void {
    fs.closeSync(this.fd);
  }
}

const NPY_KINDS: Record<string, FileDtype> = { f4: "float32", f2: "float16" };

/** A .npy file of activations. dtype "auto" takes the file's; bfloat16 must be asked for (stored as '<u2'). */
export function openNpy(file: string, dtypeName: string = "auto", expectD?: number): RawFileStore {
  const dtype = dtypeName === "auto" ? "auto" : fileDtype(dtypeName)!;
  const h = readNpyHeader(file);
  let kind: FileDtype;
  if (h.kind === "u2") {
    if (dtype !== "bfloat16") throw new SaeError("data", `${file} holds uint16 values`, "if they are bfloat16 bits, set data.file.dtype: bfloat16");
    kind = "bfloat16";
  } else {
    const k = NPY_KINDS[h.kind];
    if (!k) throw new SaeError("data", `${file} has dtype ${h.kind}; activations must be float32, float16, or bfloat16 stored as uint16`, "convert it, e.g. numpy's arr.astype(np.float32)");
    if (dtype !== "auto" && dtype !== k) throw new SaeError("data", `${file} holds ${k} values, the config says data.file.dtype: ${dtype}`, `set data.file.dtype: ${k} (or auto)`);
    kind = k;
  }
  if (h.shape.length !== 2 && h.shape.length !== 3) throw new SaeError("data", `${file} has shape (${h.shape.join(", ")}); expected 2-D [rows, D] or 3-D [sequences, positions, D]`, "reshape it before saving");
  const D = h.shape[h.shape.length - 1];
  const rows = h.shape.slice(0, -1).reduce((a, b) => a * b, 1);
  checkRows(file, h.shape, rows, D);
  if (expectD !== undefined && D !== expectD) throw new SaeError("data", `${file} has rows of ${D} values, expected D = ${expectD}`, "all shards of a dataset need the same width");
  return new RawFileStore(file, h.offset, rows, D, kind, h.shape.length === 3 ? h.shape[1] : null);
}

/** an array that holds rows to train on: D ≥ 1 and at least one row */
function checkRows(file: string, shape: number[], rows: number, D: number): void {
  if (D === 0) throw new SaeError("data", `${file} has shape (${shape.join(", ")}): rows of 0 values`, "the last dimension is the activation width D; save the activations, not an empty array");
  if (rows === 0) throw new SaeError("data", `${file} has shape (${shape.join(", ")}): no rows`, "the file holds no activations; re-create it");
  if (!Number.isSafeInteger(rows * D * 4)) throw new SaeError("data", `${file} has shape (${shape.join(", ")}), too large to address`, "check the file's header");
}

const ST_KINDS: Record<string, FileDtype> = { F32: "float32", F16: "float16", BF16: "bfloat16" };

/** One tensor of a .safetensors file (the only one when `tensor` is not given). */
export function openSafetensors(file: string, tensor: string | undefined): RawFileStore {
  const fd = openOrExplain(file);
  let header: Record<string, TensorInfo>;
  let hlen: number;
  const bad = (what: string) => new SaeError("data", `${file} is not a valid safetensors file: ${what}`, "the file may be truncated; re-create it");
  try {
    const head = Buffer.alloc(8);
    let size: number;
    try {
      size = fs.fstatSync(fd).size;
      if (fs.readSync(fd, head, 0, 8, 0) < 8) throw bad("shorter than its 8-byte header length");
    } catch (err) {
      if (err instanceof SaeError) throw err;
      throw new SaeError("data", `cannot read ${file}: ${(err as NodeJS.ErrnoException).code === "EISDIR" ? "it is a folder, not a file" : (err as NodeJS.ErrnoException).code}`, "give the path of a .safetensors file");
    }
    hlen = Number(head.readBigUInt64LE(0));
    if (hlen > MAX_HEADER_BYTES) throw bad(`header length ${hlen} is over the ${MAX_HEADER_BYTES}-byte limit`);
    if (8 + hlen > size) throw bad(`header length ${hlen} runs past the end of the file (${size} bytes)`);
    const text = Buffer.alloc(hlen);
    if (fs.readSync(fd, text, 0, hlen, 8) < hlen) throw bad(`header length ${hlen} runs past the end of the file`);
    header = checkSafetensorsHeader(text.toString("utf8"), size - 8 - hlen, bad).tensors;
  } finally {
    fs.closeSync(fd);
  }
  const names = Object.keys(header);
  const name = tensor ?? (names.length === 1 ? names[0] : undefined);
  if (name === undefined) throw new SaeError("data", `${file} holds ${names.length} tensors (${names.join(", ")})`, "name one with data.file.tensor");
  const t = header[name];
  if (!t) throw new SaeError("data", `${file} has no tensor "${name}"; it holds ${names.join(", ")}`, "fix data.file.tensor");
  const kind = ST_KINDS[t.dtype];
  if (!kind) throw new SaeError("data", `${file}: tensor ${name} has dtype ${t.dtype}; expected F32, F16 or BF16`, "convert the tensor to float32");
  if (t.shape.length !== 2 && t.shape.length !== 3) throw new SaeError("data", `${file}: tensor ${name} has shape [${t.shape}]; expected [rows, D] or [sequences, positions, D]`, "reshape it before saving");
  const D = t.shape[t.shape.length - 1], rows = t.shape.slice(0, -1).reduce((a, b) => a * b, 1);
  checkRows(`${file} (tensor ${name})`, t.shape, rows, D);
  const start = 8 + hlen + t.data_offsets[0];
  return new RawFileStore(file, start, rows, D, kind, t.shape.length === 3 ? t.shape[1] : null, false);
}

export function readManifest(file: string): Manifest {
  let m: Manifest;
  try {
    m = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new SaeError("data", `cannot read manifest ${file}: ${code === "ENOENT" ? "no such file" : code === "EISDIR" ? "it is a folder" : code ?? "not valid JSON"}`, "a sharded dataset is a folder with manifest.json (see the README, Activation files)");
  }
  const bad = (what: string) => new SaeError("data", `manifest ${file}: ${what}`, "see the README (Activation files) for the manifest format");
  if (!m || typeof m !== "object" || Array.isArray(m)) throw bad(`holds ${JSON.stringify(m)?.slice(0, 40)}, not an object {format, version, d_in, dtype, shards}`);
  if (m.format !== "sae-activations") throw bad(`"format" is ${JSON.stringify(m.format)}, expected "sae-activations"`);
  if (!Number.isInteger(m.d_in) || m.d_in < 1) throw bad(`"d_in" must be a positive integer, found ${JSON.stringify(m.d_in)}`);
  const dtype = fileDtype(String(m.dtype));
  if (!dtype) throw bad(`"dtype" must be float32, float16 or bfloat16 (or f32, f16, bf16), found ${JSON.stringify(m.dtype)}`);
  m.dtype = dtype;
  if (!Array.isArray(m.shards) || m.shards.length === 0) throw bad(`"shards" must be a non-empty list of {file, rows}`);
  m.shards.forEach((s, i) => {
    if (typeof s?.file !== "string" || !Number.isInteger(s.rows) || s.rows < 1) throw bad(`shards[${i}] must be {"file": name, "rows": count}, found ${JSON.stringify(s)}`);
    const why = insideFolder(s.file);
    if (why) throw bad(`shards[${i}] is ${JSON.stringify(s.file)}: ${why}`);
  });
  if (m.tokens !== undefined) {
    const why = typeof m.tokens === "string" ? insideFolder(m.tokens) : "it must be a file name";
    if (why) throw bad(`"tokens" is ${JSON.stringify(m.tokens)}: ${why}`);
  }
  if (m.seq_len !== undefined && (!Number.isInteger(m.seq_len) || m.seq_len < 1)) throw bad(`"seq_len" must be a positive integer`);
  const total = m.shards.reduce((n, s) => n + s.rows, 0);
  if (m.rows !== undefined && m.rows !== total) throw bad(`"rows" is ${m.rows}, the shards add up to ${total}`);
  return m;
}

/** why a manifest's file name does not name a file inside the dataset folder (null when it does) */
function insideFolder(name: string): string | null {
  if (name === "" || name.includes("\0")) return "not a file name";
  if (path.isAbsolute(name)) return "an absolute path; the manifest names files inside its folder";
  const parts = name.split(/[\\/]/);
  if (parts.includes("..")) return "it points outside the dataset folder ('..'); the manifest names files inside its folder";
  if (parts.every((x) => x === "." || x === "")) return "the folder itself, not a file in it";
  return null;
}

/** The manifest a data path names: a folder's manifest.json, or a .json file; null for a plain file. */
export function manifestPath(p: string): string | null {
  if (p.endsWith(".json")) return p;
  return fs.existsSync(p) && fs.statSync(p).isDirectory() ? path.join(p, "manifest.json") : null;
}

/** What a folder's manifest says it was harvested from (sae harvest records checkpoint, layer, site), or null. */
export function recordedSource(p: string): { checkpoint?: string; layer?: number; site?: string } | null {
  const file = manifestPath(p);
  if (!file) return null;
  try {
    const src = JSON.parse(fs.readFileSync(file, "utf8")).source;
    return src && typeof src === "object" ? src : null;
  } catch {
    return null;
  }
}

/** A folder of .npy shards read as one store, in manifest order. */
class ShardedStore implements RowStore {
  readonly rows: number;
  readonly D: number;
  readonly seqLen: number | null;
  readonly startsWithBos: boolean;
  private readonly shards: RawFileStore[];
  private readonly starts: number[];
  private readonly dir: string;

  constructor(manifestFile: string, m: Manifest) {
    this.dir = path.dirname(manifestFile);
    this.D = m.d_in;
    this.seqLen = m.seq_len ?? null;
    this.startsWithBos = m.starts_with_bos === true;
    this.shards = m.shards.map((s, i) => {
      const f = path.resolve(this.dir, s.file);
      if (!fs.existsSync(f)) throw new SaeError("data", `manifest ${manifestFile}: shards[${i}] is ${s.file}, which does not exist`, "restore the shard, or remove it from the manifest");
      if (!fs.statSync(f).isFile()) throw new SaeError("data", `manifest ${manifestFile}: shards[${i}] is ${s.file}, which is not a file`, "name the shard's .npy file");
      let st: RawFileStore;
      try {
        st = openNpy(f, m.dtype === "bfloat16" ? "bfloat16" : "auto", m.d_in);
      } catch (err) {
        if (err instanceof SaeError) throw new SaeError(err.kind, `manifest ${manifestFile}: shards[${i}]: ${err.message}`, err.hint);
        throw err;
      }
      if (st.rows !== s.rows) throw new SaeError("data", `manifest ${manifestFile}: shards[${i}] (${s.file}) should have ${s.rows} rows, the file has ${st.rows}`, "the shard or the manifest is out of date; re-harvest");
      if (st.dtype !== m.dtype) throw new SaeError("data", `manifest ${manifestFile}: shards[${i}] (${s.file}) holds ${st.dtype}, the manifest says ${m.dtype}`, "fix the manifest's dtype");
      return st;
    });
    this.starts = [];
    let n = 0;
    for (const s of this.shards) {
      this.starts.push(n);
      n += s.rows;
    }
    this.rows = n;
    if (this.seqLen !== null && n % this.seqLen !== 0) throw new SaeError("data", `manifest ${manifestFile}: ${n} rows are not whole sequences of seq_len ${this.seqLen}`, "fix seq_len or the shards");
  }

  describe(): string {
    return `${this.dir}: ${this.shards.length} shards, ${this.rows} rows × ${this.D}`;
  }

  read(start: number, n: number, out: Float32Array): void {
    let s = 0;
    while (s + 1 < this.shards.length && this.starts[s + 1] <= start) s++;
    let done = 0;
    while (done < n) {
      const off = start + done - this.starts[s];
      const m = Math.min(n - done, this.shards[s].rows - off);
      this.shards[s].read(off, m, out.subarray(done * this.D, (done + m) * this.D));
      done += m;
      s++;
    }
  }

  close(): void {
    for (const s of this.shards) s.close();
  }
}

export function openManifest(file: string): RowStore {
  return new ShardedStore(file, readManifest(file));
}

/** Drops the first `skip` positions of every sequence: logical row r is position skip + r mod (L − skip). */
export class SkipStore implements RowStore {
  readonly rows: number;
  readonly D: number;
  readonly seqLen: number;
  readonly startsWithBos = false;
  private readonly inner: RowStore;
  private readonly skip: number;

  constructor(inner: RowStore, skip: number) {
    const L = inner.seqLen!;
    this.inner = inner; this.skip = skip; this.D = inner.D;
    this.seqLen = L - skip;
    this.rows = (inner.rows / L) * this.seqLen;
  }

  describe(): string {
    return `${this.inner.describe()}, first ${count(this.skip, "position")} of each sequence skipped`;
  }

  read(start: number, n: number, out: Float32Array): void {
    const keep = this.seqLen, L = keep + this.skip;
    let done = 0;
    while (done < n) {
      const r = start + done, seq = Math.floor(r / keep), within = r % keep;
      const m = Math.min(n - done, keep - within);
      this.inner.read(seq * L + this.skip + within, m, out.subarray(done * this.D, (done + m) * this.D));
      done += m;
    }
  }

  close(): void {
    this.inner.close?.();
  }
}

/** Rows held in memory (MNIST). */
export class MemoryStore implements RowStore {
  readonly seqLen = null;
  readonly startsWithBos = false;
  readonly rows: number;
  readonly D: number;
  private readonly data: Float32Array;
  private readonly label: string;

  constructor(data: Float32Array, D: number, label: string) {
    this.data = data; this.D = D; this.rows = data.length / D; this.label = label;
  }

  describe(): string {
    return `${this.label}: ${this.rows} rows × ${this.D}`;
  }

  read(start: number, n: number, out: Float32Array): void {
    out.set(this.data.subarray(start * this.D, (start + n) * this.D));
  }
}
