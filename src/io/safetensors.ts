// safetensors reader and writer (https://github.com/huggingface/safetensors format: u64 LE header
// length, a JSON header {name: {dtype, shape, data_offsets}, __metadata__: {str: str}}, then the
// raw little-endian bytes). Writes go to a temporary file renamed into place, so a crash never
// leaves a half-written checkpoint under the final name.
import fs from "node:fs";
import crypto from "node:crypto";
import { writeAtomicWith } from "./atomic.ts";
import { SaeError } from "../errors.ts";

export type Tensor =
  | { dtype: "F32"; shape: number[]; data: Float32Array }
  | { dtype: "F64"; shape: number[]; data: Float64Array }
  | { dtype: "I32"; shape: number[]; data: Int32Array };

const BYTES = { F32: 4, F64: 8, I32: 4 } as const;

/** bytes per element of every safetensors dtype, for checking headers */
const ITEM_BYTES: Record<string, number> = { BOOL: 1, U8: 1, I8: 1, F8_E4M3: 1, F8_E5M2: 1, I16: 2, U16: 2, F16: 2, BF16: 2, I32: 4, U32: 4, F32: 4, I64: 8, U64: 8, F64: 8 };

/** the largest JSON header read (the reference implementation's limit) */
export const MAX_HEADER_BYTES = 100_000_000;

export interface TensorInfo { dtype: string; shape: number[]; data_offsets: [number, number] }

/**
 * Checks a safetensors JSON header against the size of the data that follows it: an object of
 * tensors {dtype, shape, data_offsets} (and an optional __metadata__ of strings), each tensor's
 * byte range inside the data and as long as its shape says, and the ranges covering the data
 * to its end (the format has no holes). `bad` makes the error naming the file.
 */
export function checkSafetensorsHeader(text: string, dataBytes: number, bad: (what: string) => Error): { tensors: Record<string, TensorInfo>; metadata: Record<string, string> } {
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch {
    throw bad("the JSON header does not parse");
  }
  if (!header || typeof header !== "object" || Array.isArray(header)) throw bad(`the JSON header is ${header === null ? "null" : Array.isArray(header) ? "a list" : typeof header}, not an object of tensors`);
  const tensors: Record<string, TensorInfo> = {};
  let metadata: Record<string, string> = {};
  let end = 0;
  for (const [name, info] of Object.entries(header as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (!info || typeof info !== "object" || Array.isArray(info) || Object.values(info).some((v) => typeof v !== "string")) throw bad("__metadata__ must be an object of strings");
      metadata = info as Record<string, string>;
      continue;
    }
    const t = info as Partial<TensorInfo> | null;
    if (!t || typeof t !== "object") throw bad(`tensor ${JSON.stringify(name)} is ${JSON.stringify(info)}, not {dtype, shape, data_offsets}`);
    if (typeof t.dtype !== "string" || !(t.dtype in ITEM_BYTES)) throw bad(`tensor ${name} has dtype ${JSON.stringify(t.dtype)}, not a safetensors dtype`);
    if (!Array.isArray(t.shape) || t.shape.some((d) => !Number.isSafeInteger(d) || d < 0)) throw bad(`tensor ${name} has shape ${JSON.stringify(t.shape)}; expected a list of non-negative integers`);
    const o = t.data_offsets;
    if (!Array.isArray(o) || o.length !== 2 || o.some((v) => !Number.isSafeInteger(v) || v < 0) || o[0] > o[1]) throw bad(`tensor ${name} has data_offsets ${JSON.stringify(o)}; expected [begin, end] with 0 <= begin <= end`);
    if (o[1] > dataBytes) throw bad(`tensor ${name} ends at byte ${o[1]} of the data, which has ${dataBytes} (truncated?)`);
    const n = t.shape.reduce((a, b) => a * b, 1);
    if (!Number.isSafeInteger(n * ITEM_BYTES[t.dtype]) || n * ITEM_BYTES[t.dtype] !== o[1] - o[0]) throw bad(`tensor ${name}: shape [${t.shape}] of ${t.dtype} needs ${n * ITEM_BYTES[t.dtype]} bytes, its data_offsets give ${o[1] - o[0]}`);
    end = Math.max(end, o[1]);
    tensors[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [o[0], o[1]] };
  }
  if (end !== dataBytes) throw bad(`the tensors describe ${end} bytes of data, the file holds ${dataBytes} after the header`);
  return { tensors, metadata };
}

/** Writes the tensors (sorted by name) atomically; returns the SHA-256 of the file's bytes (hex), which checkpoints record. */
export function writeSafetensors(file: string, tensors: Record<string, Tensor>, metadata: Record<string, string> = {}): string {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  const names = Object.keys(tensors).sort();
  for (const name of names) {
    const t = tensors[name];
    const n = t.shape.reduce((a, b) => a * b, 1);
    if (n !== t.data.length) throw new Error(`tensor ${name}: shape ${t.shape} does not match ${t.data.length} elements`);
    const bytes = n * BYTES[t.dtype];
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (json.length % 8)) % 8); // align the data to 8 bytes
  const head = Buffer.alloc(8);
  head.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  const hash = crypto.createHash("sha256");
  writeAtomicWith(file, (fd) => {
    const put = (b: Uint8Array) => {
      hash.update(b);
      let off = 0;
      while (off < b.byteLength) off += fs.writeSync(fd, b, off);
    };
    put(head);
    put(Buffer.from(json));
    for (const name of names) {
      const d = tensors[name].data;
      put(new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
    }
  });
  return hash.digest("hex");
}

/** Reads every tensor (F32, F64, I32) of a whole file; `bytes` are the file's bytes, for a checksum. */
export function readSafetensors(file: string): { tensors: Record<string, Tensor>; metadata: Record<string, string>; bytes: Buffer } {
  let buf: Buffer;
  try {
    buf = fs.readFileSync(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new SaeError("data", `cannot read ${file}: ${code === "ENOENT" ? "no such file" : code === "EISDIR" ? "it is a folder" : code ?? (e as Error).message}`);
  }
  const bad = (what: string) => new SaeError("data", `${file} is not a valid safetensors file: ${what}`, "the file may be truncated or not a safetensors file; re-create it");
  if (buf.length < 8) throw bad("shorter than its 8-byte header length");
  const hlen = Number(buf.readBigUInt64LE(0));
  if (hlen > MAX_HEADER_BYTES) throw bad(`header length ${hlen} is over the ${MAX_HEADER_BYTES}-byte limit`);
  if (8 + hlen > buf.length) throw bad(`header length ${hlen} runs past the end of the file (${buf.length} bytes)`);
  const base = 8 + hlen;
  const { tensors: infos, metadata } = checkSafetensorsHeader(buf.subarray(8, base).toString("utf8"), buf.length - base, bad);
  const tensors: Record<string, Tensor> = {};
  for (const [name, info] of Object.entries(infos)) {
    if (!(info.dtype in BYTES)) throw bad(`tensor ${name} has dtype ${info.dtype}; this reader handles F32, F64, I32`);
    const [a, b] = info.data_offsets;
    const copy = new Uint8Array(b - a);
    copy.set(buf.subarray(base + a, base + b));
    const dtype = info.dtype as keyof typeof BYTES;
    const data = dtype === "F32" ? new Float32Array(copy.buffer) : dtype === "F64" ? new Float64Array(copy.buffer) : new Int32Array(copy.buffer);
    tensors[name] = { dtype, shape: info.shape, data } as Tensor;
  }
  return { tensors, metadata, bytes: buf };
}
