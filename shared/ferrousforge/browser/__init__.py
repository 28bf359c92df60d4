"""The browser runtime: the shared package running under Pyodide, driving JavaScript engines
(onnxruntime-web, transformers.js tokenizers, wllama) through Pyodide's FFI.

Only importable in Pyodide (the modules import ``js`` and ``pyodide``); the placement logic they use
lives in ``ferrousforge.placement`` and runs anywhere.
"""
