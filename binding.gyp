{
  "targets": [
    {
      "target_name": "sae_native",
      "sources": ["native/addon.cc", "native/kernels.cc"],
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
        "-fno-math-errno", "-fno-trapping-math", "-fopenmp-simd"
      ]
    }
  ]
}
