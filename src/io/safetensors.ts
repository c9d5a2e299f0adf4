// safetensors reader and writer (https://github.com/huggingface/safetensors format: u64 LE header
// length, a JSON header {name: {dtype, shape, data_offsets}, __metadata__: {str: str}}, then the
// raw little-endian bytes). Writes go to a temporary file renamed into place, so a crash never
// leaves a half-written checkpoint under the final name.
import fs from "node:fs";
import { writeAtomicWith } from "./atomic.ts";
import { SaeError } from "../errors.ts";

export type Tensor =
  | { dtype: "F32"; shape: number[]; data: Float32Array }
  | { dtype: "F64"; shape: number[]; data: Float64Array }
  | { dtype: "I32"; shape: number[]; data: Int32Array };

const BYTES = { F32: 4, F64: 8, I32: 4 } as const;

export function writeSafetensors(file: string, tensors: Record<string, Tensor>, metadata: Record<string, string> = {}): void {
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
  writeAtomicWith(file, (fd) => {
    fs.writeSync(fd, head);
    fs.writeSync(fd, Buffer.from(json));
    for (const name of names) {
      const d = tensors[name].data;
      fs.writeSync(fd, new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
    }
  });
}

export function readSafetensors(file: string): { tensors: Record<string, Tensor>; metadata: Record<string, string> } {
  let buf: Buffer;
  try {
    buf = fs.readFileSync(file);
  } catch (e) {
    throw new SaeError("data", `cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  const bad = (what: string) => new SaeError("data", `${file} is not a valid safetensors file: ${what}`, "the file may be truncated or not a safetensors file; re-create it");
  if (buf.length < 8) throw bad("shorter than its 8-byte header length");
  const hlen = Number(buf.readBigUInt64LE(0));
  if (8 + hlen > buf.length) throw bad(`header length ${hlen} runs past the end of the file (${buf.length} bytes)`);
  let header: Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  try {
    header = JSON.parse(buf.subarray(8, 8 + hlen).toString("utf8"));
  } catch {
    throw bad("the JSON header does not parse");
  }
  const base = 8 + hlen;
  const tensors: Record<string, Tensor> = {};
  let metadata: Record<string, string> = {};
  for (const [name, info] of Object.entries(header)) {
    if (name === "__metadata__") {
      metadata = info as unknown as Record<string, string>;
      continue;
    }
    const [a, b] = info.data_offsets;
    if (!(info.dtype in BYTES)) throw bad(`tensor ${name} has dtype ${info.dtype}; this reader handles F32, F64, I32`);
    if (base + b > buf.length) throw bad(`tensor ${name} ends at byte ${base + b}, past the end of the file (${buf.length} bytes)`);
    const bytes = buf.subarray(base + a, base + b);
    const copy = new Uint8Array(bytes.length);
    copy.set(bytes);
    const n = info.shape.reduce((x, y) => x * y, 1);
    const dtype = info.dtype as keyof typeof BYTES;
    if (n * BYTES[dtype] !== bytes.length) throw bad(`tensor ${name}: shape [${info.shape}] needs ${n * BYTES[dtype]} bytes, has ${bytes.length}`);
    const data = dtype === "F32" ? new Float32Array(copy.buffer) : dtype === "F64" ? new Float64Array(copy.buffer) : new Int32Array(copy.buffer);
    tensors[name] = { dtype, shape: info.shape, data } as Tensor;
  }
  return { tensors, metadata };
}
