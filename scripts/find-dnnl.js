// Finds oneDNN for the native build (binding.gyp calls this): pkg-config's `dnnl` where a
// distribution ships one, else Debian's libdnnl-dev layout (headers in /usr/include/oneapi/dnnl,
// `-ldnnl`, no .pc file), confirmed by compiling and linking a two-line program against it.
//   node scripts/find-dnnl.js           1 or 0
//   node scripts/find-dnnl.js --libs    the link flags (oneDNN and the OpenMP runtime it runs on)
//   node scripts/find-dnnl.js --include the include folders
// SAE_NO_DNNL=1 builds without it (to test the build and the tool where it is absent).
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

// verify: compile the test program (the 1/0 query); --libs and --include are asked only after it
// said 1 (binding.gyp's condition), so they give the flags without compiling again
function find(verify) {
  if (process.env.SAE_NO_DNNL === "1") return null;
  const pc = (args) => spawnSync("pkg-config", args, { encoding: "utf8" });
  let cflags = [], libs = ["-ldnnl"];
  if (pc(["--exists", "dnnl"]).status === 0) {
    cflags = pc(["--cflags", "dnnl"]).stdout.trim().split(/\s+/).filter(Boolean);
    libs = pc(["--libs", "dnnl"]).stdout.trim().split(/\s+/).filter(Boolean);
  }
  libs.push("-lgomp"); // bf16.cc sets oneDNN's thread count through its OpenMP runtime
  const include = cflags.filter((f) => f.startsWith("-I")).map((f) => f.slice(2));
  if (!verify) return { include, libs };
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "sae-dnnl-"));
  try {
    const src = path.join(dir, "t.cc");
    fs.writeFileSync(src, "#include <oneapi/dnnl/dnnl.h>\n#include <omp.h>\nint main(void) { omp_set_num_threads(1); return dnnl_version()->major < 2; }\n");
    // the C++ compiler the addon is built with (node-gyp: $CXX, else g++)
    const cc = spawnSync(process.env.CXX || "g++", [...cflags, src, "-o", path.join(dir, "t"), ...libs], { encoding: "utf8" });
    if (cc.status !== 0) return null;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return { include, libs };
}

const query = process.argv.includes("--libs") || process.argv.includes("--include");
const found = find(!query);
if (process.argv.includes("--libs")) console.log(found ? found.libs.join(" ") : "");
else if (process.argv.includes("--include")) console.log(found ? found.include.join(" ") : "");
else console.log(found ? "1" : "0");
