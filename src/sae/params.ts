// All parameters of an SAE live in one flat buffer with named views (llm.c style), so that Adam,
// gradient clipping and checkpoints each touch one array. Gradients and Adam's m and v share the
// layout. Float32 for training; Float64 for the gradient checks.
import type { Arr } from "../engine/types.ts";

export interface ParamSpec {
  name: string;
  /** row-major shape */
  shape: number[];
  /**
   * The freeze groups it belongs to (`--freeze encoder` freezes every parameter of the group
   * `encoder`): encoder (everything before the code), decoder, scale, threshold. docs/training.md#freezing
   */
  groups?: readonly string[];
}

export type FloatCtor = Float32ArrayConstructor | Float64ArrayConstructor;

export class ParamSet {
  readonly buf: Arr;
  readonly views: Record<string, Arr> = {};
  readonly offsets: Record<string, [number, number]> = {};

  readonly specs: ParamSpec[];

  constructor(specs: ParamSpec[], ctor: FloatCtor = Float32Array) {
    this.specs = specs;
    let n = 0;
    for (const s of specs) {
      const size = s.shape.reduce((a, b) => a * b, 1);
      this.offsets[s.name] = [n, n + size];
      n += size;
    }
    this.buf = new ctor(n);
    for (const s of specs) {
      const [a, b] = this.offsets[s.name];
      this.views[s.name] = this.buf.subarray(a, b);
    }
  }

  get(name: string): Arr {
    const v = this.views[name];
    if (!v) throw new Error(`no parameter named ${name}`);
    return v;
  }

  /** a zeroed set with the same layout (gradients, Adam moments) */
  like(): ParamSet {
    return new ParamSet(this.specs, this.buf instanceof Float64Array ? Float64Array : Float32Array);
  }

  copyFrom(other: ParamSet): void {
    this.buf.set(other.buf);
  }
}
