# node-gyp builds the same addon as native/CMakeLists.txt (`npx node-gyp rebuild`), against the same
# libtorch: scripts/torch-paths.js asks the project's Python environment (or LIBTORCH) where it is.
{
  "targets": [
    {
      "target_name": "choripan",
      "sources": ["<!@(node scripts/native-sources.js)"],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "<!(node scripts/torch-paths.js include)",
        "<!(node scripts/torch-paths.js api-include)",
        "<!(node scripts/torch-paths.js json-include)"
      ],
      "defines": [
        "NAPI_VERSION=8",
        "NAPI_CPP_EXCEPTIONS",
        "NODE_ADDON_API_DISABLE_DEPRECATED",
        "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS",
        "_GLIBCXX_USE_CXX11_ABI=1"
      ],
      # libtorch's headers need C++20, exceptions and RTTI; node's common.gypi turns all three off.
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++17"],
      "cflags_cc": ["-std=c++20", "-fexceptions", "-frtti", "-Wno-unused-parameter"],
      "libraries": [
        "-L<!(node scripts/torch-paths.js lib)",
        "-ltorch_cpu",
        "-lc10",
        "-l:libgomp.so.1",
        "-ljpeg",
        "-Wl,-rpath,'$$ORIGIN/<!(node scripts/torch-paths.js lib-from-addon)'",
        "-Wl,-rpath,<!(node scripts/torch-paths.js lib)"
      ]
    }
  ]
}
