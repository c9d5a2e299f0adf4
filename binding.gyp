{
  "targets": [
    {
      "target_name": "sae_native",
      "variables": {"have_dnnl": "<!(node scripts/find-dnnl.js)"},
      "sources": ["native/addon.cc", "native/kernels.cc", "native/bf16.cc"],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "<!@(pkg-config --cflags-only-I openblas | sed 's/-I//g')"
      ],
      "libraries": ["<!@(pkg-config --libs openblas)"],
      "defines": ["NAPI_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-O2", "-O0"],
      "cflags_cc": [
        "-std=c++17", "-fexceptions", "-O3", "-march=native",
        "-fno-math-errno", "-fno-trapping-math", "-fopenmp-simd", "-mprefer-vector-width=512"
      ],
      "conditions": [
        ["have_dnnl==1", {
          "defines": ["SAE_HAVE_DNNL"],
          "include_dirs": ["<!@(node scripts/find-dnnl.js --include)"],
          "libraries": ["<!@(node scripts/find-dnnl.js --libs)"]
        }]
      ]
    }
  ]
}
